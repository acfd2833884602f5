//! Every conversion between a time celador is given and the clock it
//! compares with, in one place, and none of them can panic.
//!
//! Data flow: JWT NumericDates (`exp`, `nbf`), ASN.1 validity times of
//! certificates, Envoy's `request.time`, CEL timestamps, RFC 3339 text in
//! audit records and test suites: each passes through here. Times are kept
//! between the Unix epoch and the end of year 9999 ([`latest`]); a time beyond
//! that cannot be represented by every consumer (chrono's
//! `From<SystemTime>` panics far earlier than `SystemTime` overflows), so it
//! is refused as a value or clamped as a bound, never converted blindly.
//! Durations are added with saturating arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// Seconds from the epoch to 9999-12-31T23:59:59Z, the last second an
/// RFC 3339 timestamp (and so a CEL timestamp) can name.
pub(crate) const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// The latest time celador represents: 9999-12-31T23:59:59Z.
pub(crate) fn latest() -> SystemTime {
    // Fits every platform's SystemTime; the fallback is never taken.
    UNIX_EPOCH
        .checked_add(Duration::from_secs(MAX_UNIX_SECONDS))
        .unwrap_or(UNIX_EPOCH)
}

/// A JWT NumericDate (RFC 7519: seconds since the epoch, possibly
/// fractional). `None` for a value that is not finite or lies beyond
/// [`latest`]; a time before the epoch is the epoch.
pub fn from_numeric_date(seconds: f64) -> Option<SystemTime> {
    if !seconds.is_finite() || seconds > MAX_UNIX_SECONDS as f64 {
        return None;
    }
    if seconds <= 0.0 {
        return Some(UNIX_EPOCH);
    }
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?)
}

/// A protobuf `Timestamp` (Envoy's `request.time`). `None` for a negative,
/// out-of-range or beyond-[`latest`] value.
pub fn from_timestamp(seconds: i64, nanos: i32) -> Option<SystemTime> {
    let secs = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
    if secs > MAX_UNIX_SECONDS {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// An ASN.1 validity time of a certificate, in Unix seconds, clamped into
/// the epoch..[`latest`] range: a `notBefore` before 1970 is as good as 1970,
/// and no certificate is valid past 9999 (the end of GeneralizedTime).
pub fn from_asn1_seconds(seconds: i64) -> SystemTime {
    match u64::try_from(seconds) {
        Ok(secs) => UNIX_EPOCH
            .checked_add(Duration::from_secs(secs.min(MAX_UNIX_SECONDS)))
            .unwrap_or_else(latest),
        Err(_) => UNIX_EPOCH,
    }
}

/// `time + duration`, or [`latest`] when that is later.
pub fn saturating_add(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_add(duration)
        .map_or_else(latest, |t| t.min(latest()))
}

/// `time - duration`, or the epoch when that is earlier.
pub fn saturating_sub(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_sub(duration)
        .map_or(UNIX_EPOCH, |t| t.max(UNIX_EPOCH))
}

/// The time in chrono's UTC, clamped into the epoch..[`latest`] range: never
/// the panicking `From<SystemTime>`.
pub fn to_chrono(time: SystemTime) -> DateTime<Utc> {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().min(MAX_UNIX_SECONDS);
    let nanos = if since.as_secs() > MAX_UNIX_SECONDS {
        0
    } else {
        since.subsec_nanos()
    };
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, nanos))
        .unwrap_or_default()
}

/// `time` as RFC 3339 in UTC to the second, e.g. `2026-11-25T10:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    to_chrono(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 timestamp (`2026-11-25T10:00:00Z`, any offset) no
/// earlier than the epoch.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-11-22T10:00:00Z: {e}"))?;
    let secs = u64::try_from(parsed.timestamp())
        .map_err(|_| format!("{text:?} is before 1970-01-01T00:00:00Z"))?;
    UNIX_EPOCH
        .checked_add(Duration::new(secs, parsed.timestamp_subsec_nanos()))
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_beyond_year_9999_are_refused_not_converted() {
        assert_eq!(from_numeric_date(10_000_000_000_000.0), None);
        assert_eq!(from_numeric_date(f64::INFINITY), None);
        assert_eq!(from_numeric_date(f64::NAN), None);
        assert_eq!(from_numeric_date(1e300), None);
        assert_eq!(from_numeric_date(-5.0), Some(UNIX_EPOCH));
        assert_eq!(from_numeric_date(MAX_UNIX_SECONDS as f64), Some(latest()));
        assert_eq!(
            from_numeric_date(1.5),
            Some(UNIX_EPOCH + Duration::from_millis(1500))
        );
    }

    #[test]
    fn protobuf_timestamps_out_of_range_are_none() {
        assert_eq!(from_timestamp(-1, 0), None);
        assert_eq!(from_timestamp(0, -1), None);
        assert_eq!(from_timestamp(0, 1_000_000_000), None);
        assert_eq!(from_timestamp(i64::MAX, 999_999_999), None);
        assert_eq!(from_timestamp(MAX_UNIX_SECONDS as i64 + 1, 0), None);
        assert_eq!(from_timestamp(7, 8), Some(UNIX_EPOCH + Duration::new(7, 8)));
    }

    #[test]
    fn additions_saturate_and_chrono_never_panics() {
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(saturating_add(far, Duration::from_secs(u64::MAX)), latest());
        assert_eq!(saturating_add(latest(), Duration::from_secs(1)), latest());
        assert_eq!(
            saturating_sub(UNIX_EPOCH, Duration::from_secs(1)),
            UNIX_EPOCH
        );
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(from_asn1_seconds(i64::MAX), latest());
        assert_eq!(from_asn1_seconds(i64::MIN), UNIX_EPOCH);
    }

    #[test]
    fn rfc3339_text_round_trips_and_bad_text_says_why() {
        let t = parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-25T10:00:00Z");
        assert_eq!(
            parse_rfc3339("2026-11-25T11:00:00+01:00").unwrap(),
            t,
            "offsets are honoured"
        );
        assert!(parse_rfc3339("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(
            parse_rfc3339("1969-12-31T23:59:59Z")
                .unwrap_err()
                .contains("1970")
        );
    }
}
