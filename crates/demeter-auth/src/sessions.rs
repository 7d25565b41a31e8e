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
    map: Mutex<HashMap<String, (Identity, DateTime<Utc>)>>,
}

impl Sessions {
    /// Starts a session; returns the cookie value.
    pub fn start(&self, who: Identity, now: DateTime<Utc>) -> String {
        let id = crate::random_hex();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        map.insert(id.clone(), (who, now + Duration::days(SESSION_DAYS)));
        id
    }

    pub fn get(&self, id: &str, now: DateTime<Utc>) -> Option<Identity> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|(_, expires)| *expires > now).map(|(who, _)| who.clone())
    }

    pub fn end(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
