//! FHIR R4 `date`, `dateTime`, `instant` and `time` parsing.
//!
//! A parsed date is a half-open range `[start, end)` of microseconds since the Unix
//! epoch (UTC): a partial date such as `2020-03` covers the whole month.
//! Values without a time zone (dates, and search values without an offset) are read
//! as UTC.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Microseconds in one day.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// A half-open instant range `[start, end)` in microseconds since the epoch.
///
/// `i64::MIN` and `i64::MAX` stand for an open start or end (a Period without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateRange {
    pub start: i64,
    pub end: i64,
}

impl DateRange {
    pub fn is_bounded(&self) -> bool {
        self.start != i64::MIN && self.end != i64::MAX
    }

    /// Number of UTC days the range touches, or `None` when it is open.
    pub fn day_span(&self) -> Option<i64> {
        if !self.is_bounded() || self.end <= self.start {
            return None;
        }
        let first = self.start.div_euclid(DAY_MICROS);
        let last = (self.end - 1).div_euclid(DAY_MICROS);
        Some(last - first + 1)
    }

    pub fn overlaps(&self, other: &DateRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// How much of a date was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Minute,
    Second,
    /// Fractional seconds with the given number of digits.
    Fraction(u8),
}

/// A parsed FHIR date or dateTime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FhirDateTime {
    pub precision: Precision,
    /// Whether a time zone offset (or `Z`) was written.
    pub has_offset: bool,
    pub range: DateRange,
}

/// Which lexical forms [`parse`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    Date,
    /// A date, or a date with `Thh:mm:ss[.f+]` and a required offset.
    DateTime,
    /// A full `YYYY-MM-DDThh:mm:ss[.f+]` with a required offset.
    Instant,
    /// Search values: like `DateTime` but seconds and the offset are optional.
    Search,
}

fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Some(None)` when absent, `None` when present but not two digits.
fn opt_digits(s: Option<&str>) -> Option<Option<u32>> {
    match s {
        None => Some(None),
        Some(p) => digits(p, 2).map(Some),
    }
}

fn month(m: u32) -> Option<Month> {
    Month::try_from(u8::try_from(m).ok()?).ok()
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn date_start(y: i32, m: u32, d: u32) -> Option<i64> {
    let date = Date::from_calendar_date(y, month(m)?, u8::try_from(d).ok()?).ok()?;
    Some(micros(
        PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc(),
    ))
}

/// Where the year after `year` starts; past 9999 (beyond the calendar) it is the end
/// of 9999-12-31.
fn next_year_start(year: i32) -> Option<i64> {
    date_start(year + 1, 1, 1).or_else(|| Some(date_start(year, 12, 31)? + DAY_MICROS))
}

/// Parses `s` in the given form; `None` when it is not valid.
pub fn parse(s: &str, form: Form) -> Option<FhirDateTime> {
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date_part.split('-');
    let year = digits(parts.next()?, 4)?;
    if year == 0 {
        return None;
    }
    let year = i32::try_from(year).ok()?;
    let mon = opt_digits(parts.next())?;
    let day = opt_digits(parts.next())?;
    if parts.next().is_some() || (day.is_some() && mon.is_none()) {
        return None;
    }
    let Some(time_part) = time_part else {
        if form == Form::Instant {
            return None;
        }
        let (start, end, precision) = match (mon, day) {
            (None, _) => (
                date_start(year, 1, 1)?,
                next_year_start(year)?,
                Precision::Year,
            ),
            (Some(m), None) => {
                let next = if m == 12 {
                    next_year_start(year)?
                } else {
                    date_start(year, m + 1, 1)?
                };
                (date_start(year, m, 1)?, next, Precision::Month)
            }
            (Some(m), Some(d)) => {
                let start = date_start(year, m, d)?;
                (start, start + DAY_MICROS, Precision::Day)
            }
        };
        return Some(FhirDateTime {
            precision,
            has_offset: false,
            range: DateRange { start, end },
        });
    };
    if form == Form::Date {
        return None;
    }
    let (Some(m), Some(d)) = (mon, day) else {
        return None;
    };
    let day_start = date_start(year, m, d)?;

    // Split the offset from the clock time.
    let (clock, offset) = if let Some(c) = time_part.strip_suffix('Z') {
        (c, Some(0i64))
    } else if let Some(pos) = time_part.rfind(['+', '-']) {
        let (c, off) = time_part.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        let (oh, om) = (digits(oh, 2)?, digits(om, 2)?);
        if oh > 14 || om > 59 {
            return None;
        }
        (c, Some(sign * (i64::from(oh) * 3600 + i64::from(om) * 60)))
    } else {
        (time_part, None)
    };
    if offset.is_none() && form != Form::Search {
        return None;
    }
    let (hms, frac) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    let mut hp = hms.split(':');
    let h = digits(hp.next()?, 2)?;
    let mi = digits(hp.next()?, 2)?;
    let sec = opt_digits(hp.next())?;
    if hp.next().is_some() || h > 23 || mi > 59 {
        return None;
    }
    if sec.is_none() && (form != Form::Search || frac.is_some()) {
        return None;
    }
    // A leap second (60) is accepted and read as the last microsecond of the minute.
    let leap = sec == Some(60);
    let sec = match sec {
        Some(s) if s > 60 => return None,
        Some(s) => s.min(59),
        None => 0,
    };
    let (frac_micros, precision, width) = match frac {
        None if sec_written(hms) => (0, Precision::Second, 1_000_000),
        None => (0, Precision::Minute, 60_000_000),
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n = f.len();
            let mut v: i64 = 0;
            for b in f.bytes().take(6) {
                v = v * 10 + i64::from(b - b'0');
            }
            for _ in n..6 {
                v *= 10;
            }
            let width = if n >= 6 {
                1
            } else {
                10i64.pow(u32::try_from(6 - n).ok()?)
            };
            (
                v,
                Precision::Fraction(u8::try_from(n.min(255)).ok()?),
                width,
            )
        }
    };
    let clock_micros = (i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec)) * 1_000_000;
    let leap_adjust = if leap { 999_999 } else { 0 };
    let start =
        day_start + clock_micros + frac_micros + leap_adjust - offset.unwrap_or(0) * 1_000_000;
    let width = if leap { 1 } else { width };
    Some(FhirDateTime {
        precision,
        has_offset: offset.is_some(),
        range: DateRange {
            start,
            end: start + width,
        },
    })
}

fn sec_written(hms: &str) -> bool {
    hms.matches(':').count() == 2
}

/// Checks an R4 `time` (`hh:mm:ss[.f+]`).
pub fn is_valid_time(s: &str) -> bool {
    let (hms, frac) = match s.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (s, None),
    };
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let mut p = hms.split(':');
    let ok = |x: Option<&str>, max: u32| x.and_then(|x| digits(x, 2)).is_some_and(|v| v <= max);
    ok(p.next(), 23) && ok(p.next(), 59) && ok(p.next(), 60) && p.next().is_none()
}

/// Formats microseconds since the epoch as an R4 instant in UTC with six fraction digits.
pub fn format_instant(micros: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
    let t = t.to_offset(UtcOffset::UTC);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    ))
}

/// The UTC day `YYYY-MM-DD` containing the instant.
pub fn day_key(micros: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        t.year(),
        u8::from(t.month()),
        t.day()
    ))
}

/// The UTC days `[first, last]` touched by a bounded range, as day numbers since the epoch.
pub fn day_numbers(r: &DateRange) -> Option<(i64, i64)> {
    if !r.is_bounded() || r.end <= r.start {
        return None;
    }
    Some((
        r.start.div_euclid(DAY_MICROS),
        (r.end - 1).div_euclid(DAY_MICROS),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> (String, String) {
        let r = parse(s, Form::DateTime).unwrap().range;
        (
            format_instant(r.start).unwrap(),
            format_instant(r.end).unwrap(),
        )
    }

    #[test]
    fn partial_dates_are_ranges() {
        assert_eq!(
            range("2020"),
            (
                "2020-01-01T00:00:00.000000Z".into(),
                "2021-01-01T00:00:00.000000Z".into()
            )
        );
        assert_eq!(
            range("2020-02"),
            (
                "2020-02-01T00:00:00.000000Z".into(),
                "2020-03-01T00:00:00.000000Z".into()
            )
        );
        assert_eq!(
            range("2020-12-31"),
            (
                "2020-12-31T00:00:00.000000Z".into(),
                "2021-01-01T00:00:00.000000Z".into()
            )
        );
        assert_eq!(
            range("2020-01-01T10:00:00+01:00"),
            (
                "2020-01-01T09:00:00.000000Z".into(),
                "2020-01-01T09:00:01.000000Z".into()
            )
        );
        assert_eq!(
            range("2020-01-01T10:00:00.5Z"),
            (
                "2020-01-01T10:00:00.500000Z".into(),
                "2020-01-01T10:00:00.600000Z".into()
            )
        );
    }

    #[test]
    fn rejects_bad_forms() {
        for s in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2020-1-01",
            "0000",
            "2020-01-01T10:00:00",
            "2020-01-01T25:00:00Z",
            "2020-01-01T10:00Z",
            "2020-01-01T10:00:00.Z",
            "2020-01-01T",
            "2020-01-01 10:00:00Z",
            "2020-01-01T10:00:00+1:00",
            "abcd",
        ] {
            assert!(parse(s, Form::DateTime).is_none(), "{s}");
        }
        assert!(parse("2020-01-01", Form::Instant).is_none());
        assert!(parse("2020-01-01T10:00:00Z", Form::Date).is_none());
        assert!(parse("2020-01-01T10:00", Form::Search).is_some());
        assert!(parse("2020-02-29", Form::Date).is_some());
        assert!(parse("2021-02-29", Form::Date).is_none());
    }

    #[test]
    fn times() {
        assert!(is_valid_time("23:59:60.123"));
        assert!(!is_valid_time("24:00:00"));
        assert!(!is_valid_time("10:00"));
    }

    #[test]
    fn the_last_calendar_year_and_month_end_at_its_last_day() {
        let last_day = parse("9999-12-31", Form::Date).unwrap().range;
        for s in ["9999", "9999-12"] {
            let r = parse(s, Form::Date).unwrap().range;
            assert_eq!(r.end, last_day.end, "{s}");
            assert!(r.end > r.start);
        }
        assert_eq!(
            parse("9999-11", Form::Date).unwrap().range.end,
            date_start(9999, 12, 1).unwrap()
        );
    }
}
