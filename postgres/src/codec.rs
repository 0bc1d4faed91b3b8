//! Values between the store's types and PostgreSQL's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nexus_core::Timestamp;
use uuid::Uuid;

/// PostgreSQL's earliest timestamp (4713-11-24 BC), microseconds since the Unix epoch.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

/// A time in microseconds since the epoch as a `timestamptz` value, or a
/// message naming `what` when PostgreSQL cannot hold it.
pub fn timestamp(micros: i64, what: &str) -> Result<SystemTime, String> {
    if micros < PG_MIN_MICROS {
        return Err(format!(
            "{what} = {micros} µs since 1970 is before PostgreSQL's earliest timestamp (4713 BC)"
        ));
    }
    Ok(system_time(micros))
}

/// A store time as a `timestamptz` value (the store's own clock never
/// yields times PostgreSQL cannot hold).
pub fn time(t: Timestamp) -> SystemTime {
    system_time(t.as_micros())
}

fn system_time(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// A `timestamptz` value as a store time.
pub fn from_time(t: SystemTime) -> Timestamp {
    Timestamp::from_system_time(t)
}

/// The SQL expression of a `timestamptz` expression `column` as
/// microseconds since the epoch (`int8`), the store's unit of time (exact:
/// `extract` gives a `numeric` since PostgreSQL 14).
pub fn micros(column: &str) -> String {
    format!("(extract(epoch FROM {column}) * 1000000)::int8")
}

/// A UUID in its text form, or a message naming `what`.
pub fn uuid(s: &str, what: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|_| format!("{what} {s:?} is not a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways() {
        assert_eq!(timestamp(0, "t").unwrap(), UNIX_EPOCH);
        assert_eq!(
            timestamp(-1_000_000, "t").unwrap(),
            UNIX_EPOCH - Duration::from_secs(1)
        );
        let err = timestamp(i64::MIN, "created_at").unwrap_err();
        assert!(
            err.contains("created_at") && err.contains("4713 BC"),
            "{err}"
        );
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(from_time(time(t)), t);
        assert!(uuid("nope", "path id").unwrap_err().contains("path id"));
    }
}
