//! One-time sign-in links. Pairing a phone: an admin asks for a code (shown as a QR code);
//! opening its link on the phone makes a token for it and signs it in, once, within a few
//! minutes. The desktop app signs its own window in the same way, but gets a browser session
//! only, so restarting the app does not pile up tokens.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Duration, Utc};

use crate::{Identity, Role};

/// How long a pairing code can be redeemed.
pub const PAIRING_MINUTES: i64 = 10;

/// What redeeming a code gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A new token with this role for the device (a phone), asked for by the admin `by`.
    Device { role: Role, by: String },
    /// A browser session as this identity, without a token (the desktop app's own window).
    Session(Identity),
}

#[derive(Debug, Clone)]
struct Pending {
    grant: Grant,
    expires: DateTime<Utc>,
}

/// Outstanding pairing codes (in memory: a restart voids them, which is the safe direction).
#[derive(Default)]
pub struct Pairings {
    codes: Mutex<HashMap<String, Pending>>,
}

/// Why a code cannot be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairingError {
    /// Unknown, already used, or expired: all look the same to the caller.
    Invalid,
}

impl Pairings {
    /// A new single-use code for a token with `role`, asked for by the admin `by`.
    pub fn offer(&self, role: Role, by: &str, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        self.offer_grant(Grant::Device { role, by: by.to_owned() }, now)
    }

    /// A new single-use code that signs a browser in as `who` without making a token.
    pub fn offer_session(&self, who: Identity, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        self.offer_grant(Grant::Session(who), now)
    }

    fn offer_grant(&self, grant: Grant, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let code = crate::random_hex()[..32].to_owned();
        let expires = now + Duration::minutes(PAIRING_MINUTES);
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, p| p.expires > now);
        codes.insert(code.clone(), Pending { grant, expires });
        (code, expires)
    }

    /// Takes the code (it can never be used again) and says what it grants.
    pub fn redeem(&self, code: &str, now: DateTime<Utc>) -> Result<Grant, PairingError> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        match codes.remove(code) {
            Some(p) if p.expires > now => Ok(p.grant),
            _ => Err(PairingError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_work_once_and_expire() {
        let now = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let p = Pairings::default();
        let (code, _) = p.offer(Role::Uploader, "admin", now);
        assert_eq!(p.redeem(&code, now), Ok(Grant::Device { role: Role::Uploader, by: "admin".into() }));
        assert_eq!(p.redeem(&code, now), Err(PairingError::Invalid), "single use");
        let (late, _) = p.offer(Role::Viewer, "admin", now);
        assert_eq!(p.redeem(&late, now + Duration::minutes(PAIRING_MINUTES)), Err(PairingError::Invalid));
        assert_eq!(p.redeem("guess", now), Err(PairingError::Invalid));
        let desk = Identity { name: "desktop".into(), role: Role::Admin };
        let (code, _) = p.offer_session(desk.clone(), now);
        assert_eq!(p.redeem(&code, now), Ok(Grant::Session(desk)));
        assert_eq!(p.redeem(&code, now), Err(PairingError::Invalid), "single use");
    }
}
