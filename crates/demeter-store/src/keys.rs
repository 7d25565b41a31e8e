//! Key encodings. Kept in one place so every tree agrees on byte order.

use chrono::{DateTime, Utc};

/// Which record an expiry entry points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpiryKind {
    Session = b'S' as isize,
    Job = b'J' as isize,
}

/// Milliseconds since the epoch, offset so negative times still sort before positive ones.
fn ms_key(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn expiry(at: DateTime<Utc>, kind: ExpiryKind, id: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(&ms_key(at));
    k.push(kind as u8);
    k.extend_from_slice(id);
    k
}

/// Everything due at or before `now` sorts below this key.
pub(crate) fn expiry_upper(now: DateTime<Utc>) -> Vec<u8> {
    ms_key(now + chrono::Duration::milliseconds(1)).to_vec()
}

pub(crate) fn parse_expiry(k: &[u8]) -> Option<(ExpiryKind, [u8; 16])> {
    if k.len() != 25 {
        return None;
    }
    let kind = match k[8] {
        b'S' => ExpiryKind::Session,
        b'J' => ExpiryKind::Job,
        _ => return None,
    };
    Some((kind, k[9..25].try_into().ok()?))
}

/// `archive_by_location`: a location's results in the order taken. The location id is a prefix
/// closed by a 0 byte (ids are text without NUL; results without a location have the empty id).
pub(crate) fn archive_location(location: &str, taken_at: DateTime<Utc>, result: &[u8; 16]) -> Vec<u8> {
    let mut k = archive_location_prefix(location);
    k.extend_from_slice(&ms_key(taken_at));
    k.extend_from_slice(result);
    k
}

pub(crate) fn archive_location_prefix(location: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(location.len() + 25);
    k.extend_from_slice(location.as_bytes());
    k.push(0);
    k
}

/// The first key after every `archive_by_location` key with `prefix` (from
/// [`archive_location_prefix`]): its closing 0 becomes 1.
pub(crate) fn archive_location_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("a location's prefix ends in 0") += 1;
    end
}

/// The time part of an `archive_by_location` key with `prefix`: the bound for a time range.
pub(crate) fn archive_location_at(prefix: &[u8], t: DateTime<Utc>) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&ms_key(t));
    k
}

/// The result id at the end of an archive index key.
pub(crate) fn archive_result_of(k: &[u8]) -> Option<[u8; 16]> {
    k.get(k.len().checked_sub(16)?..)?.try_into().ok()
}

pub(crate) fn session_job(session: &[u8; 16], job: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(session);
    k[16..].copy_from_slice(job);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_sort_by_time() {
        let a = DateTime::from_timestamp(-5, 0).unwrap();
        let b = DateTime::from_timestamp(5, 0).unwrap();
        let c = DateTime::from_timestamp(50_000, 0).unwrap();
        let ka = expiry(a, ExpiryKind::Session, &[9; 16]);
        let kb = expiry(b, ExpiryKind::Job, &[0; 16]);
        let kc = expiry(c, ExpiryKind::Job, &[0; 16]);
        assert!(ka < kb && kb < kc);
        assert!(kb < expiry_upper(b) && expiry_upper(b) < kc);
        assert!(expiry(b, ExpiryKind::Session, &[0xff; 16]) < expiry_upper(b), "every kind due at `now` is included");
        assert_eq!(parse_expiry(&ka), Some((ExpiryKind::Session, [9; 16])));
    }
}
