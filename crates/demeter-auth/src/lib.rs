//! Who may do what.
//!
//! This crate owns:
//! - [`Role`]s: viewer (reads everything), uploader (viewer + upload; owns what it uploads),
//!   admin (every action);
//! - [`TokenStore`]: named tokens with a role, kept in `tokens.json` in the data directory (mode
//!   0600) as SHA-256 hashes only — a token is shown once, when made, and never stored;
//! - [`Sessions`]: sign-in sessions for browsers (random ids behind an HttpOnly cookie);
//! - [`Pairings`]: one-time codes that sign a phone in by scanning a QR code.
//!
//! Tokens carry 256 random bits, so a plain SHA-256 is the right hash (no password stretching
//! is needed), and presented tokens are compared with every stored hash in constant time.

mod pairing;
mod sessions;
mod tokens;

pub use pairing::{Grant, PairingError, Pairings, PAIRING_MINUTES};
pub use sessions::{Sessions, Signed, SESSION_SECONDS};
pub use tokens::{AuthError, Identity, Role, TokenInfo, TokenStore, ADMIN_NAME};

/// 32 random bytes as 64 hex digits.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
