//! Text normalisation for string and telecom search.

/// Latin-1 Supplement and Latin Extended-A letters (already lower-cased) folded to ASCII.
/// Each row: first code point, last code point (inclusive), replacement.
const FOLDS: &[(u32, u32, &str)] = &[
    (0xDF, 0xDF, "ss"),
    (0xE0, 0xE5, "a"),
    (0xE6, 0xE6, "ae"),
    (0xE7, 0xE7, "c"),
    (0xE8, 0xEB, "e"),
    (0xEC, 0xEF, "i"),
    (0xF0, 0xF0, "d"),
    (0xF1, 0xF1, "n"),
    (0xF2, 0xF6, "o"),
    (0xF8, 0xF8, "o"),
    (0xF9, 0xFC, "u"),
    (0xFD, 0xFD, "y"),
    (0xFE, 0xFE, "th"),
    (0xFF, 0xFF, "y"),
    (0x100, 0x105, "a"),
    (0x106, 0x10D, "c"),
    (0x10E, 0x111, "d"),
    (0x112, 0x11B, "e"),
    (0x11C, 0x123, "g"),
    (0x124, 0x127, "h"),
    (0x128, 0x131, "i"),
    (0x132, 0x133, "ij"),
    (0x134, 0x135, "j"),
    (0x136, 0x138, "k"),
    (0x139, 0x142, "l"),
    (0x143, 0x14B, "n"),
    (0x14C, 0x151, "o"),
    (0x152, 0x153, "oe"),
    (0x154, 0x159, "r"),
    (0x15A, 0x161, "s"),
    (0x162, 0x167, "t"),
    (0x168, 0x173, "u"),
    (0x174, 0x175, "w"),
    (0x176, 0x178, "y"),
    (0x179, 0x17E, "z"),
    (0x17F, 0x17F, "s"),
];

/// Normalises text for string search: lower case, Latin accents folded to ASCII,
/// combining marks (U+0300–U+036F) removed, whitespace trimmed and collapsed.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let cp = u32::from(c);
        if (0x300..=0x36F).contains(&cp) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        match FOLDS.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&cp)) {
            Some((_, _, rep)) => out.push_str(rep),
            None => out.push(c),
        }
    }
    out
}

/// Normalises a ContactPoint value: an email (containing `@`) is trimmed and lower-cased;
/// anything else (phones) loses spaces, `-`, `.`, `(` and `)` and is lower-cased.
pub fn normalize_telecom(s: &str) -> String {
    let t = s.trim();
    if t.contains('@') {
        t.to_lowercase()
    } else {
        t.chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')'))
            .flat_map(char::to_lowercase)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_and_case() {
        assert_eq!(fold("  José  ÁLVAREZ "), "jose alvarez");
        assert_eq!(fold("Łukasz Żółć"), "lukasz zolc");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("Ee\u{301}"), "ee");
        assert_eq!(fold("Œuvre"), "oeuvre");
    }

    #[test]
    fn normalizes_telecom() {
        assert_eq!(normalize_telecom(" (03) 5555-6473 "), "0355556473");
        assert_eq!(
            normalize_telecom("John.Doe@Example.org"),
            "john.doe@example.org"
        );
    }
}
