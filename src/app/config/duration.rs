//! The one duration grammar of celador's config, its command line and the
//! Helm chart's values: Go's `time.ParseDuration`, as Kubernetes users
//! write durations (`500ms`, `1m30s`, `1.5s`, `2h45m`, `0`), unsigned.
//!
//! Data flow: a config value or flag -> [`parse`] -> a `Duration`, at
//! start-up only. The chart's `values.schema.json` holds the same grammar
//! as a pattern (`$defs/duration`); `tests/kubernetes.rs` renders every
//! duration value of the chart, valid and not, and checks that the schema
//! and this parser agree on each.
//!
//! Hand-written rather than a crate: the one crate porting Go's parser
//! (`go-parse-duration`, 0.1) returns signed nanoseconds, unwraps on its
//! input and lacks the Greek `μs`; this follows Go's code step by step and
//! is tested on Go's own table.

use std::time::Duration;

/// The units Go accepts, and their length in nanoseconds. `µ` (U+00B5,
/// the micro sign) and `μ` (U+03BC, Greek mu) both, as Go does.
const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Go's bound on each step (`1<<63`); the total is at most `i64::MAX`
/// nanoseconds (2562047h47m16.854775807s).
const BOUND: u64 = 1 << 63;

/// Parses a duration in Go's `time.ParseDuration` grammar without a sign:
/// `0`, or one or more decimal numbers, each with an optional fraction
/// and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`). The arithmetic is
/// Go's, step by step (a fraction is scaled in floating point, as Go
/// does), so a value means here what it means to Kubernetes.
pub fn parse(text: &str) -> Result<Duration, String> {
    let grammar = || {
        format!(
            "'{text}' is not a duration like 500ms, 30s, 5m or 1h (Go's time.ParseDuration grammar, unsigned: 1m30s, 1.5h and 0 too)"
        )
    };
    let too_long = || format!("'{text}' is too long: at most 2562047h (Go's limit)");
    if text.starts_with(['-', '+']) {
        return Err(format!("{}: durations take no sign", grammar()));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(grammar());
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (value, after) = component(rest).map_err(|problem| match problem {
            Problem::Grammar => grammar(),
            Problem::TooLong => too_long(),
        })?;
        total = total.saturating_add(value);
        if total > BOUND {
            return Err(too_long());
        }
        rest = after;
    }
    if total > BOUND - 1 {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(total))
}

/// Why a component of a duration cannot be read.
enum Problem {
    Grammar,
    TooLong,
}

/// One number and its unit at the start of `text`: its nanoseconds (at
/// most `1<<63`, as Go checks), and the rest.
fn component(text: &str) -> Result<(u64, &str), Problem> {
    let (whole, after) = leading_int(text).ok_or(Problem::TooLong)?;
    let pre = after.len() != text.len();
    let (fraction, scale, after, post) = match after.strip_prefix('.') {
        Some(digits) => {
            let (fraction, scale, after) = leading_fraction(digits);
            (fraction, scale, after, after.len() != digits.len())
        }
        None => (0, 1.0, after, false),
    };
    if !pre && !post {
        return Err(Problem::Grammar);
    }
    let unit_end = after
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(after.len());
    let (unit, after) = after.split_at(unit_end);
    let Some(&(_, unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(Problem::Grammar);
    };
    if whole > BOUND / unit {
        return Err(Problem::TooLong);
    }
    let mut value = whole * unit;
    if fraction > 0 {
        // Go's own float step: exact to the nanosecond for fractions of
        // hours (the product is at most 3.6e12).
        let part = (fraction as f64 * (unit as f64 / scale)) as u64;
        value = value.saturating_add(part);
        if value > BOUND {
            return Err(Problem::TooLong);
        }
    }
    Ok((value, after))
}

/// Go's `leadingInt`: the leading digits as a number (`None` past
/// `1<<63`), and the rest.
fn leading_int(text: &str) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(end);
    let mut x: u64 = 0;
    for digit in digits.bytes() {
        if x > BOUND / 10 {
            return None;
        }
        x = x * 10 + u64::from(digit - b'0');
        if x > BOUND {
            return None;
        }
    }
    Some((x, rest))
}

/// Go's `leadingFraction`: the leading digits as a number and its scale
/// (digits past what a u64 holds are read and ignored), and the rest.
fn leading_fraction(text: &str) -> (u64, f64, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(end);
    let (mut x, mut scale) = (0u64, 1.0f64);
    for digit in digits.bytes() {
        if x > (BOUND - 1) / 10 {
            break;
        }
        let y = x * 10 + u64::from(digit - b'0');
        if y > BOUND {
            break;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    /// Go's own table (src/time/time_test.go, parseDurationTests), without
    /// the signed entries, which celador refuses.
    #[test]
    fn go_parse_duration_table() {
        let ok: &[(&str, Duration)] = &[
            ("0", ns(0)),
            ("5s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(30)),
            ("1478s", Duration::from_secs(1478)),
            ("0s", ns(0)),
            ("5.0s", Duration::from_secs(5)),
            ("5.6s", Duration::from_millis(5600)),
            ("5.s", Duration::from_secs(5)),
            (".5s", Duration::from_millis(500)),
            ("1.0s", Duration::from_secs(1)),
            ("1.00s", Duration::from_secs(1)),
            ("1.004s", Duration::from_millis(1004)),
            ("1.0040s", Duration::from_millis(1004)),
            ("100.00100s", Duration::from_micros(100_001_000)),
            ("10ns", ns(10)),
            ("11us", Duration::from_micros(11)),
            ("12\u{b5}s", Duration::from_micros(12)),
            ("12\u{3bc}s", Duration::from_micros(12)),
            ("13ms", Duration::from_millis(13)),
            ("14s", Duration::from_secs(14)),
            ("15m", Duration::from_secs(15 * 60)),
            ("16h", Duration::from_secs(16 * 3600)),
            ("3h30m", Duration::from_secs(3 * 3600 + 30 * 60)),
            (
                "10.5s4m",
                Duration::from_secs(4 * 60 + 10) + Duration::from_millis(500),
            ),
            ("1h2m3s4ms5us6ns", Duration::from_secs(3723) + ns(4_005_006)),
            ("39h9m14.425s", Duration::from_millis(140_954_425)),
            ("52763797000ns", ns(52_763_797_000)),
            ("0.3333333333333333333h", Duration::from_secs(20 * 60)),
            ("9007199254740993ns", ns(9_007_199_254_740_993)),
            ("9223372036854775807ns", ns(i64::MAX as u64)),
            ("9223372036854775.807us", ns(i64::MAX as u64)),
            ("9223372036s854ms775us807ns", ns(i64::MAX as u64)),
            ("0.100000000000000000000h", Duration::from_secs(360)),
            (
                "0.830103483285477580700h",
                Duration::from_nanos(2_988_372_539_827),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(*want), "{text}");
        }
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{ffff}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775808ns",
            "+5s",
            "-5s",
            " 5s",
            "5s ",
            "5 s",
            "00",
            "5ss",
            "1hm",
            "5.5.5s",
            "1e3s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse("-1s").unwrap_err().contains("take no sign"));
        assert!(parse("3000000h").unwrap_err().contains("too long"));
    }
}
