//! Normalisation: the same value written different ways hashes the same.
//! The index and the scanner both go through these functions.

use super::index::PersonName;

/// The ASCII digits of a string.
pub(crate) fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// An SSN: exactly nine digits once separators are dropped.
pub(crate) fn ssn(text: &str) -> Option<String> {
    let d = digits(text);
    (d.len() == 9 && only_separators(text, "-. ")).then_some(d)
}

/// A phone number: a NANP number as its ten digits (a leading country code
/// 1 dropped), any other international number as its E.164 digits (11–15,
/// country code first).
pub(crate) fn phone(text: &str) -> Option<String> {
    if !only_separators(text, "()-. +") {
        return None;
    }
    phone_digits(&digits(text))
}

pub(crate) fn phone_digits(d: &str) -> Option<String> {
    match d.len() {
        10 => Some(d.to_owned()),
        11 if d.starts_with('1') => d.get(1..).map(str::to_owned),
        11..=15 => Some(d.to_owned()),
        _ => None,
    }
}

/// An email address, trimmed and lower-cased.
pub(crate) fn email(text: &str) -> Option<String> {
    let e = text.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !e.contains(char::is_whitespace))
    .then_some(e)
}

/// An MRN: its ASCII letters and digits, upper-cased.
pub(crate) fn mrn(text: &str) -> Option<String> {
    let m: String = text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (!m.is_empty()).then_some(m)
}

/// One name word: lower-case letters only (`O'Brien` → `obrien`,
/// `Garcia-Lopez` → `garcialopez`).
pub(crate) fn name_word(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The key a family name, a given name and a birth date hash under.
pub(crate) fn name_key(family: &str, given: &str, date: &str) -> String {
    format!("{family}\u{1f}{given}\u{1f}{date}")
}

/// The keys one name is indexed under with a birth date: family name with
/// the first given name, and, for a family name of several words, its first
/// word alone too (people often write `Maria Garcia` for Maria Garcia Lopez).
pub(crate) fn name_keys(name: &PersonName, date: &str) -> Vec<String> {
    let family: Vec<String> = name
        .family
        .split_whitespace()
        .map(name_word)
        .filter(|w| !w.is_empty())
        .collect();
    let given = name
        .given
        .iter()
        .flat_map(|g| g.split_whitespace())
        .map(name_word)
        .find(|w| !w.is_empty());
    let (Some(given), Some(first_family)) = (given, family.first()) else {
        return Vec::new();
    };
    let mut keys = vec![name_key(&family.join(" "), &given, date)];
    if family.len() > 1 {
        keys.push(name_key(first_family, &given, date));
    }
    keys
}

/// A strict `YYYY-MM-DD` date, validated.
pub(crate) fn iso_date(text: &str) -> Option<String> {
    let t = text.trim();
    let mut parts = t.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    ymd(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// A calendar date as `YYYY-MM-DD`, if it exists and the year is one a
/// living person's birth can have (1850–2199 keeps typos like `0970` out).
pub(crate) fn ymd(year: u32, month: u32, day: u32) -> Option<String> {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    ((1850..=2199).contains(&year) && (1..=days).contains(&day))
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

fn only_separators(text: &str, allowed: &str) -> bool {
    text.trim()
        .chars()
        .all(|c| c.is_ascii_digit() || allowed.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones() {
        for spelling in [
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "+1 555 123 4567",
            "15551234567",
        ] {
            assert_eq!(phone(spelling).as_deref(), Some("5551234567"), "{spelling}");
        }
        assert_eq!(phone("+44 20 7946 0958").as_deref(), Some("442079460958"));
        assert_eq!(phone("123-4567"), None);
        assert_eq!(phone("555-CALL-NOW"), None);
    }

    #[test]
    fn others() {
        assert_eq!(ssn("078-05-1120").as_deref(), Some("078051120"));
        assert_eq!(ssn("07805112"), None);
        assert_eq!(
            email("  Jane.Doe@Example.ORG ").as_deref(),
            Some("jane.doe@example.org")
        );
        assert_eq!(email("no-at-sign"), None);
        assert_eq!(mrn("ab-123 456").as_deref(), Some("AB123456"));
        assert_eq!(iso_date("1970-03-03").as_deref(), Some("1970-03-03"));
        assert_eq!(iso_date("1970-02-30"), None);
        assert_eq!(iso_date("2000-02-29").as_deref(), Some("2000-02-29"));
        assert_eq!(iso_date("1900-02-29"), None);
        assert_eq!(name_word("O'Brien"), "obrien");
        let keys = name_keys(
            &PersonName {
                family: "Garcia Lopez".into(),
                given: vec!["María José".into()],
            },
            "1970-03-03",
        );
        assert_eq!(keys.len(), 2);
    }
}
