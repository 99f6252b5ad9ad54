//! Small helpers: deterministic hashing and P100's timestamp format.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// FNV-1a: a stable hash (unlike `std`'s randomised one) so ids and encodings are the same on
/// every run.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser: turns (seed, domain, index) into well-mixed bits for the generator.
pub fn mix(seed: u64, domain: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(domain.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A UUID-shaped (version 4 layout) id made from two hash words; deterministic.
pub fn uuid_from(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0x0fff) as u16,
        8 + ((b >> 62) & 0x3),
        ((b >> 48) & 0x0fff) as u16,
        b & 0xffff_ffff_ffff
    )
}

/// A deterministic UUID-shaped id derived from a text key.
pub fn uuid_from_key(key: &str) -> String {
    let a = fnv64(key.as_bytes());
    let b = mix(a, 7, key.len() as u64);
    uuid_from(a, b)
}

/// Milliseconds since the Unix epoch as P100 writes them: `2025-08-05T10:33:54.730Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parses an RFC 3339 timestamp; a space is read as `+` because an unencoded `+` in a query
/// string arrives as a space.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    let fixed = s.trim().replace(' ', "+");
    DateTime::parse_from_rfc3339(&fixed)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Inclusive lower bound in whole milliseconds: rows are stored at millisecond precision, so
/// a bound with a sub-millisecond fraction rounds up.
pub fn ms_ceil(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if !t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms + 1
    } else {
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(rfc3339_ms(1_754_390_034_730), "2025-08-05T10:33:54.730Z");
        let t = parse_rfc3339("2025-08-05T12:33:54.730 02:00").unwrap();
        assert_eq!(t.timestamp_millis(), 1_754_390_034_730);
    }

    #[test]
    fn generated_uuids_are_stable_and_shaped() {
        let u = uuid_from_key("x");
        assert_eq!(u, uuid_from_key("x"));
        assert_eq!(u.len(), 36);
        assert!(uuid::Uuid::parse_str(&u).is_ok());
    }
}
