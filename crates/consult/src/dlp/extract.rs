//! Candidate extraction: hand-written scanners, each a single forward pass
//! with bounded look-around, so a scan is linear in the text's length
//! whatever the text holds.
//!
//! All patterns but names are ASCII. Scanners compare bytes, and an ASCII
//! byte never occurs inside a multi-byte UTF-8 character, so every span they
//! return starts and ends on a character boundary.

use super::normalize;
use super::structural;
use super::{IdentifierKind, ScanConfig, Span, StructuralKind};

/// A value to look up in the index, already normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub kind: IdentifierKind,
    pub span: Span,
    pub value: String,
}

#[derive(Debug, Default)]
pub(crate) struct Extracted {
    pub identifiers: Vec<Candidate>,
    pub structural: Vec<(StructuralKind, Span)>,
}

/// Extracts structural hits always, and index candidates when
/// `identifiers` is set (the clinician side).
pub(crate) fn extract(text: &str, config: &ScanConfig, identifiers: bool) -> Extracted {
    let mut out = Extracted::default();
    digit_runs(text.as_bytes(), config, identifiers, &mut out);
    words(text.as_bytes(), config, identifiers, &mut out);
    if identifiers {
        emails(text.as_bytes(), &mut out);
        names_near_dates(text, config, &mut out);
    }
    out
}

fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn byte_before(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| byte(b, j))
}

fn ascii(b: &[u8], span: (usize, usize)) -> String {
    b.get(span.0..span.1)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default()
}

const NUMBER_SEPARATORS: &[u8] = b"()-. +";
/// Longest digit string any pattern here needs (card numbers).
const MAX_DIGITS: usize = 19;
/// Most groups a number is written in (`+1 (212) 555 0199`, `4111 1111 1111
/// 1111 111`); it bounds the windows tried at each group.
const MAX_GROUPS: usize = 5;
/// Most groups a numeric MRN is written in (`0091 8273`).
const MAX_MRN_GROUPS: usize = 2;

/// Phone, SSN, NPI, card and numeric MRN candidates from runs of digits
/// joined by at most two separator characters at a time.
fn digit_runs(b: &[u8], config: &ScanConfig, identifiers: bool, out: &mut Extracted) {
    let mut i = 0;
    while i < b.len() {
        let c = byte(b, i);
        if c.is_ascii_alphabetic() {
            // Digits glued to letters belong to a word (`AB123456`), which
            // `words` handles.
            while byte(b, i).is_ascii_alphanumeric() {
                i += 1;
            }
            continue;
        }
        let opener = (c == b'+' || c == b'(') && byte(b, i + 1).is_ascii_digit();
        if !c.is_ascii_digit() && !opener {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut group_start = None;
        let mut separators = 0;
        let mut j = i;
        loop {
            let d = byte(b, j);
            if d.is_ascii_digit() {
                group_start.get_or_insert(j);
                separators = 0;
            } else if d != 0 && NUMBER_SEPARATORS.contains(&d) {
                if let Some(s) = group_start.take() {
                    groups.push((s, j));
                }
                separators += 1;
                if separators > 2 {
                    break;
                }
            } else {
                break;
            }
            j += 1;
        }
        if let Some(s) = group_start.take() {
            groups.push((s, j));
        }
        // A last group glued to letters (`4567abc`) is part of a word.
        // Resuming at the letters lets the word skip above pass over it.
        if let Some(&(_, end)) = groups.last()
            && byte(b, end).is_ascii_alphabetic()
        {
            groups.pop();
            j = end;
        }
        windows(b, run_start, &groups, config, identifiers, out);
        i = j.max(i + 1);
    }
}

/// Every window of consecutive groups holding at most [`MAX_DIGITS`]
/// digits: at most that many windows start at each group.
fn windows(
    b: &[u8],
    run_start: usize,
    groups: &[(usize, usize)],
    config: &ScanConfig,
    identifiers: bool,
    out: &mut Extracted,
) {
    for (first, &(start, _)) in groups.iter().enumerate() {
        let mut digits = String::new();
        let mut lens: Vec<usize> = Vec::new();
        for &(gs, ge) in groups.iter().skip(first).take(MAX_GROUPS) {
            if digits.len() + (ge - gs) > MAX_DIGITS {
                break;
            }
            digits.push_str(&ascii(b, (gs, ge)));
            lens.push(ge - gs);
            // Show the opening `+` or `(` as part of the number.
            let shown_start = if first == 0 { run_start } else { start };
            let span = Span {
                start: shown_start,
                end: ge,
            };
            classify(b, span, &digits, &lens, config, identifiers, out);
        }
    }
}

fn classify(
    b: &[u8],
    span: Span,
    digits: &str,
    lens: &[usize],
    config: &ScanConfig,
    identifiers: bool,
    out: &mut Extracted,
) {
    let total = digits.len();
    let ssn_shape = matches!(lens, [3, 2, 4]);
    if total == 9 && (ssn_shape || lens == [9]) {
        if identifiers {
            out.identifiers.push(Candidate {
                kind: IdentifierKind::Ssn,
                span,
                value: digits.to_owned(),
            });
        }
        if structural::is_valid_ssn(digits) && (ssn_shape || ssn_context(b, span.start)) {
            out.structural.push((StructuralKind::Ssn, span));
        }
    }
    if identifiers {
        if (10..=15).contains(&total)
            && let Some(value) = normalize::phone_digits(digits)
        {
            out.identifiers.push(Candidate {
                kind: IdentifierKind::Phone,
                span,
                value,
            });
        }
        if lens.len() <= MAX_MRN_GROUPS
            && (config.mrn_min_len..=config.mrn_max_len).contains(&total)
        {
            out.identifiers.push(Candidate {
                kind: IdentifierKind::Mrn,
                span,
                value: digits.to_owned(),
            });
        }
    }
    if lens == [10] && structural::is_valid_npi(digits) {
        out.structural.push((StructuralKind::Npi, span));
    }
    let card_shape = match lens {
        [_] => true,
        [4, 6, 4] | [4, 6, 5] => true,
        [init @ .., last] => init.iter().all(|l| *l == 4) && (1..=4).contains(last),
        [] => false,
    };
    if (13..=19).contains(&total) && card_shape && structural::is_valid_card(digits) {
        out.structural.push((StructuralKind::PaymentCard, span));
    }
}

/// Whether a bare nine-digit number is introduced as an SSN: nine digits
/// alone are too common (order numbers, zip+4) to flag without a word.
fn ssn_context(b: &[u8], start: usize) -> bool {
    let before = b.get(start.saturating_sub(32)..start).unwrap_or(&[]);
    let lower: Vec<u8> = before.iter().map(u8::to_ascii_lowercase).collect();
    [&b"ssn"[..], b"social security", b"ss#", b"ss #"]
        .iter()
        .any(|needle| lower.windows(needle.len()).any(|w| w == *needle))
}

/// MRN-like tokens with letters (`AB123456`, `mrn-778812`) and DEA numbers:
/// runs of ASCII letters and digits, hyphens allowed inside.
fn words(b: &[u8], config: &ScanConfig, identifiers: bool, out: &mut Extracted) {
    let mut i = 0;
    while i < b.len() {
        if !byte(b, i).is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while byte(b, i).is_ascii_alphanumeric()
            || (byte(b, i) == b'-' && byte(b, i + 1).is_ascii_alphanumeric())
        {
            i += 1;
        }
        let word = b.get(start..i).unwrap_or(&[]);
        if !word.iter().any(u8::is_ascii_alphabetic) {
            continue;
        }
        let mut parts: Vec<(usize, usize)> = Vec::new();
        let mut part_start = start;
        for (k, c) in word.iter().enumerate() {
            if *c == b'-' {
                parts.push((part_start, start + k));
                part_start = start + k + 1;
            }
        }
        parts.push((part_start, i));
        for &(ps, pe) in &parts {
            if pe - ps == 9 && structural::is_valid_dea(&ascii(b, (ps, pe))) {
                out.structural
                    .push((StructuralKind::Dea, Span { start: ps, end: pe }));
            }
        }
        if !identifiers {
            continue;
        }
        let mrn_like = |s: usize, e: usize| -> Option<String> {
            let slice = b.get(s..e)?;
            let alnum = slice.iter().filter(|c| c.is_ascii_alphanumeric()).count();
            let fits = (config.mrn_min_len..=config.mrn_max_len).contains(&alnum)
                && slice.iter().any(u8::is_ascii_digit)
                && slice.iter().any(u8::is_ascii_alphabetic);
            fits.then(|| normalize::mrn(&ascii(b, (s, e)))).flatten()
        };
        if let Some(value) = mrn_like(start, i) {
            out.identifiers.push(Candidate {
                kind: IdentifierKind::Mrn,
                span: Span { start, end: i },
                value,
            });
        }
        if parts.len() > 1 {
            for &(ps, pe) in &parts {
                if let Some(value) = mrn_like(ps, pe) {
                    out.identifiers.push(Candidate {
                        kind: IdentifierKind::Mrn,
                        span: Span { start: ps, end: pe },
                        value,
                    });
                }
            }
        }
    }
}

/// A byte of an address's local part: ASCII letters, digits and `._%+-`,
/// and any byte of a non-ASCII character (RFC 6531 allows letters such as
/// `é` there).
fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-".contains(&c) || c >= 0x80
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// Email addresses around each `@`, looking at most 64 bytes left and 253
/// right (the RFC limits), so each `@` costs bounded work.
fn emails(b: &[u8], out: &mut Extracted) {
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let mut start = at;
        while start > 0 && at - start < 64 && is_local(byte_before(b, start)) {
            start -= 1;
        }
        // The 64-byte limit may stop inside a character: move to its end.
        while start < at && (0x80..0xC0).contains(&byte(b, start)) {
            start += 1;
        }
        while start < at && byte(b, start) == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end - at <= 253 && is_domain(byte(b, end)) {
            end += 1;
        }
        while end > at + 1 && matches!(byte_before(b, end), b'.' | b'-') {
            end -= 1;
        }
        let domain = b.get(at + 1..end).unwrap_or(&[]);
        let tld_ok = domain
            .rsplit(|c| *c == b'.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic));
        if start < at
            && domain.contains(&b'.')
            && tld_ok
            && let Some(value) = normalize::email(&ascii(b, (start, end)))
        {
            out.identifiers.push(Candidate {
                kind: IdentifierKind::Email,
                span: Span { start, end },
                value,
            });
        }
    }
}

/// A date in the text and its readings as `YYYY-MM-DD` (two when the day and
/// month order is ambiguous, as in `03/04/1970`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DateHit {
    pub span: Span,
    pub readings: Vec<String>,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn month_number(word: &[u8]) -> Option<u32> {
    let w: Vec<u8> = word.iter().map(u8::to_ascii_lowercase).collect();
    if w.len() < 3 {
        return None;
    }
    let hit = MONTHS
        .iter()
        .position(|m| m.as_bytes() == w.as_slice() || m.as_bytes().get(..3) == Some(w.as_slice()))
        .or_else(|| (w == b"sept").then_some(8))?;
    u32::try_from(hit + 1).ok()
}

/// A small cursor over bytes for the date grammar.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// A number of 1..=max digits not followed by another digit.
    fn number(&mut self, max: usize) -> Option<(u32, usize)> {
        let start = self.pos;
        let mut value = 0u32;
        while byte(self.b, self.pos).is_ascii_digit() && self.pos - start < max {
            value = value * 10 + u32::from(byte(self.b, self.pos) - b'0');
            self.pos += 1;
        }
        let len = self.pos - start;
        (len > 0 && !byte(self.b, self.pos).is_ascii_digit()).then_some((value, len))
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = byte(self.b, self.pos) == c;
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// At least one and at most three spaces.
    fn spaces(&mut self) -> bool {
        let start = self.pos;
        while byte(self.b, self.pos) == b' ' && self.pos - start < 3 {
            self.pos += 1;
        }
        self.pos > start
    }

    fn letters(&mut self) -> &[u8] {
        let start = self.pos;
        while byte(self.b, self.pos).is_ascii_alphabetic() && self.pos - start < 10 {
            self.pos += 1;
        }
        self.b.get(start..self.pos).unwrap_or(&[])
    }

    fn at_boundary(&self) -> bool {
        !byte(self.b, self.pos).is_ascii_alphanumeric()
    }

    /// An ordinal suffix after a day (`3rd`).
    fn ordinal(&mut self) {
        let save = self.pos;
        let suffix = self.letters().to_ascii_lowercase();
        if !matches!(suffix.as_slice(), b"st" | b"nd" | b"rd" | b"th") {
            self.pos = save;
        }
    }
}

/// Dates: `1970-03-03`, `03/03/1970`, `3.3.1970`, `March 3, 1970`,
/// `3 March 1970`, with abbreviations and ordinals.
pub(crate) fn dates(b: &[u8]) -> Vec<DateHit> {
    let mut hits = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = byte(b, i);
        if !c.is_ascii_alphanumeric() || byte_before(b, i).is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let found = if c.is_ascii_digit() {
            numeric_date(b, i)
        } else {
            month_first_date(b, i)
        };
        match found {
            Some(hit) => {
                i = hit.span.end;
                hits.push(hit);
            }
            None => i += 1,
        }
    }
    hits
}

fn numeric_date(b: &[u8], start: usize) -> Option<DateHit> {
    let mut cur = Cursor { b, pos: start };
    let (a, a_len) = cur.number(4)?;
    let sep = byte(b, cur.pos);
    if matches!(sep, b'-' | b'/' | b'.') {
        cur.pos += 1;
        let (m, m_len) = cur.number(2)?;
        if !cur.eat(sep) {
            return None;
        }
        let (c, c_len) = cur.number(4)?;
        if !cur.at_boundary() || m_len > 2 {
            return None;
        }
        let mut readings: Vec<String> = Vec::new();
        if a_len == 4 && c_len <= 2 {
            readings.extend(normalize::ymd(a, m, c));
        } else if a_len <= 2 && c_len == 4 {
            if sep != b'.' {
                readings.extend(normalize::ymd(c, a, m));
            }
            readings.extend(normalize::ymd(c, m, a));
            readings.dedup();
        }
        return (!readings.is_empty()).then_some(DateHit {
            span: Span {
                start,
                end: cur.pos,
            },
            readings,
        });
    }
    // `3 March 1970`, `3rd of March 1970`.
    if a_len > 2 {
        return None;
    }
    cur.ordinal();
    if !cur.spaces() {
        return None;
    }
    let save = cur.pos;
    if cur.letters() == b"of" {
        if !cur.spaces() {
            return None;
        }
    } else {
        cur.pos = save;
    }
    let month = month_number(cur.letters())?;
    cur.eat(b'.');
    cur.eat(b',');
    if !cur.spaces() {
        return None;
    }
    let (year, y_len) = cur.number(4)?;
    if y_len != 4 || !cur.at_boundary() {
        return None;
    }
    let reading = normalize::ymd(year, month, a)?;
    Some(DateHit {
        span: Span {
            start,
            end: cur.pos,
        },
        readings: vec![reading],
    })
}

fn month_first_date(b: &[u8], start: usize) -> Option<DateHit> {
    let mut cur = Cursor { b, pos: start };
    let month = month_number(cur.letters())?;
    if !cur.at_boundary() && byte(b, cur.pos) != b'.' {
        return None;
    }
    cur.eat(b'.');
    if !cur.spaces() {
        return None;
    }
    let (day, d_len) = cur.number(2)?;
    if d_len > 2 {
        return None;
    }
    cur.ordinal();
    cur.eat(b',');
    if !cur.spaces() {
        return None;
    }
    let (year, y_len) = cur.number(4)?;
    if y_len != 4 || !cur.at_boundary() {
        return None;
    }
    let reading = normalize::ymd(year, month, day)?;
    Some(DateHit {
        span: Span {
            start,
            end: cur.pos,
        },
        readings: vec![reading],
    })
}

/// A capitalised word near a date.
#[derive(Debug)]
struct NameWord {
    span: Span,
    normalised: String,
    /// Follows the previous capitalised word with only spaces or a comma
    /// between them.
    joined: bool,
}

fn is_name_char(c: char) -> bool {
    c.is_alphabetic() || matches!(c, '\'' | '\u{2019}' | '-')
}

/// Name + birth date candidates: two or three consecutive capitalised words
/// within `config.name_date_window` bytes of a date, in both name orders.
fn names_near_dates(text: &str, config: &ScanConfig, out: &mut Extracted) {
    let dates = dates(text.as_bytes());
    if dates.is_empty() {
        return;
    }
    let window = config.name_date_window;
    // Only the text around dates is read for names; regions that overlap
    // are merged so no byte is read twice.
    let mut regions: Vec<(usize, usize)> = Vec::new();
    for d in &dates {
        let lo = d.span.start.saturating_sub(window + 40);
        let hi = (d.span.end + window + 40).min(text.len());
        match regions.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => regions.push((lo, hi)),
        }
    }
    for (lo, hi) in regions {
        let lo = (0..=lo)
            .rev()
            .find(|p| text.is_char_boundary(*p))
            .unwrap_or(0);
        let hi = (hi..=text.len())
            .find(|p| text.is_char_boundary(*p))
            .unwrap_or(text.len());
        let words = name_words(text, lo, hi, &dates);
        sequences(&words, &dates, window, out);
    }
}

fn name_words(text: &str, lo: usize, hi: usize, dates: &[DateHit]) -> Vec<NameWord> {
    let region = text.get(lo..hi).unwrap_or("");
    let mut words: Vec<NameWord> = Vec::new();
    let mut current: Option<usize> = None;
    let mut prev_end: Option<usize> = None;
    let mut prev_capitalised = false;
    let finish = |start: usize,
                  end: usize,
                  words: &mut Vec<NameWord>,
                  prev_end: &mut Option<usize>,
                  prev_cap: &mut bool| {
        let word = region.get(start..end).unwrap_or("");
        let capitalised = word.chars().next().is_some_and(char::is_uppercase);
        let normalised = normalize::name_word(word);
        let (abs_start, abs_end) = (lo + start, lo + end);
        // Dates are sorted and disjoint: only the first ending after the
        // word's start can overlap it.
        let first_after = dates.partition_point(|d| d.span.end <= abs_start);
        let in_date = dates
            .get(first_after)
            .is_some_and(|d| d.span.start < abs_end);
        let ok = capitalised && normalised.chars().count() >= 2 && !in_date;
        if ok {
            let gap = prev_end.and_then(|p| region.get(p..start)).unwrap_or("\n");
            let joined = *prev_cap
                && gap.len() <= 3
                && gap.chars().all(|c| c == ' ' || c == ',')
                && gap.chars().filter(|c| *c == ',').count() <= 1;
            words.push(NameWord {
                span: Span {
                    start: abs_start,
                    end: abs_end,
                },
                normalised,
                joined,
            });
        }
        *prev_cap = ok;
        *prev_end = Some(end);
    };
    for (idx, c) in region.char_indices() {
        match (is_name_char(c), current) {
            (true, None) => current = Some(idx),
            (false, Some(start)) => {
                finish(start, idx, &mut words, &mut prev_end, &mut prev_capitalised);
                current = None;
            }
            _ => {}
        }
    }
    if let Some(start) = current {
        finish(
            start,
            region.len(),
            &mut words,
            &mut prev_end,
            &mut prev_capitalised,
        );
    }
    words
}

fn sequences(words: &[NameWord], dates: &[DateHit], window: usize, out: &mut Extracted) {
    for (k, first) in words.iter().enumerate() {
        for len in 2..=3 {
            let Some(seq) = words.get(k..k + len) else {
                continue;
            };
            if !seq.iter().skip(1).all(|w| w.joined) {
                continue;
            }
            let Some(last) = seq.last() else {
                continue;
            };
            let (start, end) = (first.span.start, last.span.end);
            let from = dates.partition_point(|d| d.span.end + window < start);
            for d in dates
                .iter()
                .skip(from)
                .take_while(|d| d.span.start <= end + window)
            {
                let near = if end <= d.span.start {
                    d.span.start - end <= window
                } else if d.span.end <= start {
                    start - d.span.end <= window
                } else {
                    false
                };
                if !near {
                    continue;
                }
                let span = Span {
                    start: start.min(d.span.start),
                    end: end.max(d.span.end),
                };
                let w: Vec<&str> = seq.iter().map(|w| w.normalised.as_str()).collect();
                // (family, given) readings of the words in both orders.
                let orders: Vec<(String, String)> = match w.as_slice() {
                    [a, b] => vec![((*b).into(), (*a).into()), ((*a).into(), (*b).into())],
                    [a, b, c] => vec![
                        ((*c).into(), (*a).into()),
                        (format!("{b} {c}"), (*a).into()),
                        ((*a).into(), (*b).into()),
                        (format!("{a} {b}"), (*c).into()),
                    ],
                    _ => Vec::new(),
                };
                for date in &d.readings {
                    for (family, given) in &orders {
                        out.identifiers.push(Candidate {
                            kind: IdentifierKind::NameBirthDate,
                            span,
                            value: normalize::name_key(family, given, date),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(text: &str) -> Vec<Vec<String>> {
        dates(text.as_bytes())
            .into_iter()
            .map(|d| d.readings)
            .collect()
    }

    #[test]
    fn date_formats() {
        assert_eq!(
            readings("born 1970-03-04."),
            vec![vec!["1970-03-04".to_owned()]]
        );
        assert_eq!(readings("04.03.1970"), vec![vec!["1970-03-04".to_owned()]]);
        assert_eq!(
            readings("03/04/1970"),
            vec![vec!["1970-03-04".to_owned(), "1970-04-03".to_owned()]]
        );
        assert_eq!(readings("13/04/1970"), vec![vec!["1970-04-13".to_owned()]]);
        assert_eq!(
            readings("March 4, 1970"),
            vec![vec!["1970-03-04".to_owned()]]
        );
        assert_eq!(
            readings("Mar. 4th 1970"),
            vec![vec!["1970-03-04".to_owned()]]
        );
        assert_eq!(
            readings("4 March 1970"),
            vec![vec!["1970-03-04".to_owned()]]
        );
        assert_eq!(
            readings("4th of march, 1970"),
            vec![vec!["1970-03-04".to_owned()]]
        );
        assert!(readings("1970-13-01 and 31/02/1970 and May 2020 and 12345-01-01").is_empty());
    }

    #[test]
    fn number_windows() {
        let config = ScanConfig::default();
        let ex = extract("call +1 (555) 123-4567 now", &config, true);
        let phones: Vec<_> = ex
            .identifiers
            .iter()
            .filter(|c| c.kind == IdentifierKind::Phone)
            .collect();
        assert!(phones.iter().all(|c| c.value == "5551234567"));
        assert!(phones.iter().any(|c| c.span == Span { start: 5, end: 22 }));
        let ex = extract(
            "card 4111 1111 1111 1111 and SSN 078-05-1120, NPI 1234567893, DEA AB1234563",
            &config,
            false,
        );
        let kinds: Vec<_> = ex.structural.iter().map(|s| s.0).collect();
        assert_eq!(
            kinds,
            vec![
                StructuralKind::PaymentCard,
                StructuralKind::Ssn,
                StructuralKind::Npi,
                StructuralKind::Dea
            ]
        );
        assert!(
            ex.identifiers.is_empty(),
            "no index candidates on the patient side"
        );
    }

    #[test]
    fn emails_and_words() {
        let config = ScanConfig::default();
        let ex = extract(
            "mail <Jane.Doe+x@Example.org>. MRN ab-123456!",
            &config,
            true,
        );
        let values: Vec<_> = ex
            .identifiers
            .iter()
            .map(|c| (c.kind, c.value.as_str()))
            .collect();
        assert!(values.contains(&(IdentifierKind::Email, "jane.doe+x@example.org")));
        assert!(values.contains(&(IdentifierKind::Mrn, "AB123456")));
    }

    #[test]
    fn non_ascii_local_parts_are_addresses_too() {
        let config = ScanConfig::default();
        for (text, want) in [
            (
                "écrire à Élodie.Martin@example.org ce soir",
                "élodie.martin@example.org",
            ),
            ("mail:josé@example.com", "josé@example.com"),
        ] {
            let ex = extract(text, &config, true);
            let found = ex
                .identifiers
                .iter()
                .find(|c| c.kind == IdentifierKind::Email)
                .unwrap_or_else(|| panic!("no address in {text:?}"));
            assert_eq!(found.value, want);
            assert!(text.is_char_boundary(found.span.start));
            assert!(text.is_char_boundary(found.span.end));
        }
        // A long run of non-ASCII before the @ stops at a character boundary.
        let long = format!("{}@example.org", "é".repeat(40));
        let ex = extract(&long, &config, true);
        for c in &ex.identifiers {
            assert!(long.is_char_boundary(c.span.start), "{c:?}");
        }
    }
}
