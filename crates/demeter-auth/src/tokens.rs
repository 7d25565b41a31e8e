use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Mutex, RwLock},
    time::SystemTime,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token made on first run (or set by `DEMETER_ADMIN_TOKEN`).
pub const ADMIN_NAME: &str = "admin";
/// Prefix of every token, so one pasted in the wrong place is recognisable.
const PREFIX: &str = "dmt_";

/// What a token may do. Ordered: each role includes the ones before it... except that an
/// uploader sees only its own upload sessions (see the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Uploader,
    Admin,
}

impl Role {
    /// Whether this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "uploader" => Ok(Role::Uploader),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: expected viewer, uploader or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Uploader => "uploader",
            Role::Admin => "admin",
        })
    }
}

/// Who is asking: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// A stored token, without the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// SHA-256 of the token, hex.
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the token file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write the token file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("a token named {0:?} exists already (revoke it first)")]
    Exists(String),
    #[error("no token named {0:?}")]
    Unknown(String),
    #[error("token names are 1–64 letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("the admin token must be at least 32 characters")]
    WeakAdminToken,
}

fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.trim().as_bytes()))
}

/// Tokens and their roles, persisted as hashes in `tokens.json`.
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<Vec<TokenInfo>>,
    /// Modification time of the file as last read: `demeter token revoke` edits the file while
    /// the daemon runs, and a revoked token must stop working at once.
    loaded: Mutex<Option<SystemTime>>,
}

impl TokenStore {
    /// Opens `<data_dir>/tokens.json` (missing = no tokens yet).
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        let path = data_dir.join("tokens.json");
        let tokens = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<TokenFile>(&bytes)
                    .map_err(|source| AuthError::Parse { path: path.clone(), source })?
                    .tokens
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(AuthError::Read { path, source }),
        };
        let loaded = Mutex::new(std::fs::metadata(&path).and_then(|m| m.modified()).ok());
        Ok(Self { path, tokens: RwLock::new(tokens), loaded })
    }

    /// Re-reads the file when another process changed it.
    fn refresh(&self) {
        let now = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if now == *loaded {
            return;
        }
        match Self::open(self.path.parent().unwrap_or(Path::new("."))) {
            Ok(fresh) => {
                *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh.list();
                *loaded = now;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reload the token file; keeping the tokens in memory"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn save(&self, tokens: &[TokenInfo]) -> Result<(), AuthError> {
        let err = |source| AuthError::Write { path: self.path.clone(), source };
        let tmp = self.path.with_extension("json.part");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(err)?;
        let body = serde_json::to_vec_pretty(&TokenFile { tokens: tokens.to_vec() }).expect("serialisable");
        f.write_all(&body).and_then(|_| f.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) =
            std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        Ok(())
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes a new token; returns the secret, which is not stored anywhere.
    pub fn create(&self, name: &str, role: Role, now: DateTime<Utc>) -> Result<String, AuthError> {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(AuthError::BadName);
        }
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.iter().any(|t| t.name == name) {
            return Err(AuthError::Exists(name.to_owned()));
        }
        let secret = format!("{PREFIX}{}", crate::random_hex());
        let mut next = tokens.clone();
        next.push(TokenInfo { name: name.to_owned(), role, created_at: now, sha256: hash(&secret) });
        self.save(&next)?;
        *tokens = next;
        Ok(secret)
    }

    pub fn revoke(&self, name: &str) -> Result<(), AuthError> {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if !tokens.iter().any(|t| t.name == name) {
            return Err(AuthError::Unknown(name.to_owned()));
        }
        let next: Vec<_> = tokens.iter().filter(|t| t.name != name).cloned().collect();
        self.save(&next)?;
        *tokens = next;
        Ok(())
    }

    /// Makes sure an admin token exists. With `configured` (from `DEMETER_ADMIN_TOKEN` or
    /// `--admin-token-file`) the admin token becomes that one; otherwise a new one is made only
    /// when there is none, and returned so it can be shown once.
    pub fn ensure_admin(&self, configured: Option<&str>, now: DateTime<Utc>) -> Result<Option<String>, AuthError> {
        if let Some(token) = configured {
            if token.trim().len() < 32 {
                return Err(AuthError::WeakAdminToken);
            }
            let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
            let mut next: Vec<_> = tokens.iter().filter(|t| t.name != ADMIN_NAME).cloned().collect();
            next.push(TokenInfo { name: ADMIN_NAME.into(), role: Role::Admin, created_at: now, sha256: hash(token) });
            if *tokens != next {
                self.save(&next)?;
                *tokens = next;
            }
            return Ok(None);
        }
        if self.list().iter().any(|t| t.role == Role::Admin) {
            return Ok(None);
        }
        self.create(ADMIN_NAME, Role::Admin, now).map(Some)
    }

    /// Whether a token with this name and role still exists (re-reading the file if the CLI
    /// changed it): a browser signed in with a token must lose access when the token is revoked.
    pub fn is_current(&self, who: &Identity) -> bool {
        self.refresh();
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).iter().any(|t| t.name == who.name && t.role == who.role)
    }

    /// The identity behind a presented token. Every stored hash is compared in constant time,
    /// so neither the match nor its position leaks through timing.
    pub fn verify(&self, presented: &str) -> Option<Identity> {
        self.refresh();
        let h = hash(presented);
        let mut found = None;
        for t in self.tokens.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if bool::from(t.sha256.as_bytes().ct_eq(h.as_bytes())) {
                found = Some(Identity { name: t.name.clone(), role: t.role });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    #[test]
    fn tokens_are_stored_as_hashes_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let admin = store.ensure_admin(None, now()).unwrap().expect("made on first run");
        assert!(admin.starts_with("dmt_") && admin.len() == 4 + 64);
        assert_eq!(store.ensure_admin(None, now()).unwrap(), None, "only once");
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&admin[4..]), "the secret is never written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let reopened = TokenStore::open(dir.path()).unwrap();
        assert_eq!(reopened.verify(&admin), Some(Identity { name: "admin".into(), role: Role::Admin }));
        assert_eq!(reopened.verify("dmt_wrong"), None);
        assert_eq!(reopened.verify(""), None);
    }

    #[test]
    fn create_list_revoke_and_roles() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let phone = store.create("phone-1", Role::Uploader, now()).unwrap();
        assert!(matches!(store.create("phone-1", Role::Viewer, now()), Err(AuthError::Exists(_))));
        assert!(matches!(store.create("bad name", Role::Viewer, now()), Err(AuthError::BadName)));
        assert_eq!(store.verify(&phone).unwrap().role, Role::Uploader);
        assert_eq!(store.list().len(), 1);
        // Revoked by another process (the CLI) while this one (the daemon) runs.
        let viewer = store.create("screen", Role::Viewer, now()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        TokenStore::open(dir.path()).unwrap().revoke("screen").unwrap();
        assert_eq!(store.verify(&viewer), None, "the running store sees the revocation");
        store.revoke("phone-1").unwrap();
        assert_eq!(store.verify(&phone), None, "revoked at once");
        assert!(matches!(store.revoke("phone-1"), Err(AuthError::Unknown(_))));
        assert!(Role::Admin.allows(Role::Uploader) && Role::Uploader.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Uploader));
    }

    #[test]
    fn a_configured_admin_token_replaces_the_generated_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let generated = store.ensure_admin(None, now()).unwrap().unwrap();
        let mine = "my-automation-admin-token-0123456789abcdef";
        assert_eq!(store.ensure_admin(Some(mine), now()).unwrap(), None);
        assert_eq!(store.verify(mine).unwrap().role, Role::Admin);
        assert_eq!(store.verify(&generated), None);
        assert!(matches!(store.ensure_admin(Some("short"), now()), Err(AuthError::WeakAdminToken)));
    }
}
