//! Timestamps and dates as Unix seconds (UTC).
//!
//! The common form `YYYY-MM-DDTHH:MM:SS[.fff]Z` is parsed by hand (it is in
//! every access row, and jiff's general parser is several times slower);
//! anything else goes to jiff, which accepts every RFC 3339 offset. A unit
//! property test checks the fast path against jiff.

use crate::model::Time;

/// An RFC 3339 timestamp (any offset, converted to UTC), truncated to the
/// second.
pub(crate) fn timestamp(s: &str) -> Option<Time> {
    if let Some(t) = fast_utc(s.as_bytes()) {
        return Some(t);
    }
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(ts.as_second())
}

/// A plain date `YYYY-MM-DD`, as midnight UTC.
pub(crate) fn date(s: &str) -> Option<Time> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let y = digits(b.get(0..4)?)?;
    let m = digits(b.get(5..7)?)?;
    let d = digits(b.get(8..10)?)?;
    let days = days_from_civil(y, m, d)?;
    Some(days * 86_400)
}

/// A timestamp, or a plain date as midnight UTC.
pub(crate) fn timestamp_or_date(s: &str) -> Option<Time> {
    date(s).or_else(|| timestamp(s))
}

/// A FHIR `dateTime`: a timestamp with an offset, or a partial date
/// (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`) taken at its first instant in UTC.
pub(crate) fn fhir_date_time(s: &str) -> Option<Time> {
    match s.len() {
        4 => Some(days_from_civil(digits(s.as_bytes())?, 1, 1)? * 86_400),
        7 if s.as_bytes().get(4) == Some(&b'-') => {
            let y = digits(s.as_bytes().get(0..4)?)?;
            let m = digits(s.as_bytes().get(5..7)?)?;
            Some(days_from_civil(y, m, 1)? * 86_400)
        }
        _ => timestamp_or_date(s),
    }
}

fn fast_utc(b: &[u8]) -> Option<Time> {
    // YYYY-MM-DDTHH:MM:SS then an optional fraction then Z.
    if b.len() < 20 {
        return None;
    }
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let rest = b.get(19..)?;
    let frac = match rest.split_last() {
        Some((b'Z', frac)) => frac,
        _ => return None,
    };
    if let Some((dot, ds)) = frac.split_first()
        && (*dot != b'.' || ds.is_empty() || ds.len() > 9 || !ds.iter().all(u8::is_ascii_digit))
    {
        return None;
    }
    let y = digits(b.get(0..4)?)?;
    let mo = digits(b.get(5..7)?)?;
    let d = digits(b.get(8..10)?)?;
    let h = digits(b.get(11..13)?)?;
    let mi = digits(b.get(14..16)?)?;
    let s = digits(b.get(17..19)?)?;
    // Before 1970 truncation and flooring differ; leap seconds: let jiff
    // decide both.
    if y < 1970 || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d)?;
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s))
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// Days since 1970-01-01 of a valid proleptic Gregorian date (Howard
/// Hinnant's algorithm), or `None` if the date does not exist.
fn days_from_civil(y: u32, m: u32, d: u32) -> Option<i64> {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let len = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > len {
        return None;
    }
    let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(timestamp("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(timestamp("2024-02-29T12:34:56.789Z"), Some(1_709_210_096));
        assert_eq!(timestamp("2024-02-29T14:34:56+02:00"), Some(1_709_210_096));
        assert_eq!(timestamp("2023-02-29T12:34:56Z"), None);
        assert_eq!(timestamp("2024-02-29T12:34:56"), None);
        assert_eq!(timestamp("2024-02-29"), None);
        assert_eq!(timestamp("yesterday"), None);
        assert_eq!(date("2024-02-29"), Some(1_709_164_800));
        assert_eq!(date("2024-2-29"), None);
        assert_eq!(timestamp_or_date("2024-02-29"), Some(1_709_164_800));
        assert_eq!(fhir_date_time("2024"), Some(1_704_067_200));
        assert_eq!(fhir_date_time("2024-02"), Some(1_706_745_600));
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_jiff(
            y in 1960u32..2200, mo in 0u32..14, d in 0u32..33,
            h in 0u32..25, mi in 0u32..61, s in 0u32..61,
            frac in proptest::option::of("[0-9]{1,9}"),
        ) {
            let text = format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}Z",
                frac.map(|f| format!(".{f}")).unwrap_or_default()
            );
            let jiff = text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second());
            prop_assert_eq!(timestamp(&text), jiff);
            if let Some(fast) = fast_utc(text.as_bytes()) {
                prop_assert_eq!(Some(fast), jiff);
            }
            let day = format!("{y:04}-{mo:02}-{d:02}");
            let jiff_day = day
                .parse::<jiff::civil::Date>()
                .ok()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp().as_second());
            prop_assert_eq!(date(&day), jiff_day);
        }
    }
}
