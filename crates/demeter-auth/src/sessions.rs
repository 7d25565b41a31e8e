//! Browser sign-in sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped to the
//! identity that signed in. Kept in memory: a restart signs browsers out, never the reverse.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Duration, Utc};

use crate::Identity;

/// How long a browser stays signed in without signing in again.
pub const SESSION_DAYS: i64 = 30;
/// The same, for the cookie's `Max-Age`.
pub const SESSION_SECONDS: i64 = SESSION_DAYS * 24 * 3600;

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Signed>>,
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub who: Identity,
    /// Signed in with a token (a password or a paired phone's): the session ends when that
    /// token is revoked. `false` for the desktop app's own window, which has no token.
    pub token_backed: bool,
    expires: DateTime<Utc>,
}

impl Sessions {
    /// Starts a session for the holder of a token; returns the cookie value.
    pub fn start(&self, who: Identity, now: DateTime<Utc>) -> String {
        self.insert(Signed { who, token_backed: true, expires: now + Duration::days(SESSION_DAYS) }, now)
    }

    /// Starts a session that no token stands behind (the desktop app's window, signed in by
    /// the app itself through a one-time link); returns the cookie value.
    pub fn start_without_token(&self, who: Identity, now: DateTime<Utc>) -> String {
        self.insert(Signed { who, token_backed: false, expires: now + Duration::days(SESSION_DAYS) }, now)
    }

    fn insert(&self, signed: Signed, now: DateTime<Utc>) -> String {
        let id = crate::random_hex();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), signed);
        id
    }

    pub fn get(&self, id: &str, now: DateTime<Utc>) -> Option<Signed> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|s| s.expires > now).cloned()
    }

    pub fn end(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
