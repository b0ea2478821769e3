//! Structural validators: numbers whose shape and check digits say what they
//! are, whoever they belong to.
//!
//! Every function takes the candidate's ASCII digits (or, for DEA numbers,
//! letters and digits) already separated from the text, so each is a total
//! function of a short string and cheap to property-test.

/// Whether nine digits form a Social Security number that could have been
/// issued: area not 000, 666 or 900–999, group not 00, serial not 0000.
///
/// Non-digit characters (dashes, spaces) are ignored; anything other than
/// nine digits is not an SSN.
pub fn is_valid_ssn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    let [a1, a2, a3, g1, g2, s1, s2, s3, s4] = digits.as_slice() else {
        return false;
    };
    let area = a1 * 100 + a2 * 10 + a3;
    let group = g1 * 10 + g2;
    let serial = s1 * 1000 + s2 * 100 + s3 * 10 + s4;
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// The Luhn (mod 10) check over a string of ASCII digits; false for anything
/// else or for an empty string.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (position, c) in digits.bytes().rev().enumerate() {
        if !c.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(c - b'0');
        if position % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Whether ten digits form a valid National Provider Identifier: it starts
/// with 1 or 2 and passes the Luhn check once prefixed with `80840` (the
/// health-industry issuer prefix the NPI standard uses).
pub fn is_valid_npi(digits: &str) -> bool {
    digits.len() == 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(digits.as_bytes().first(), Some(b'1' | b'2'))
        && luhn_valid(&format!("80840{digits}"))
}

/// Whether a string is a well-formed DEA registration number: a registrant
/// type letter, a second letter (the registrant's initial, or 9 for some
/// business activities), then seven digits whose last is the check digit:
/// `(d1 + d3 + d5) + 2 × (d2 + d4 + d6)` ends in `d7`.
pub fn is_valid_dea(text: &str) -> bool {
    let bytes = text.as_bytes();
    let [first, second, rest @ ..] = bytes else {
        return false;
    };
    // The registrant types the DEA issues (A, B, F and G for practitioners and
    // institutions, M for mid-levels, P–X for distributors and others).
    const TYPES: &[u8] = b"ABCDEFGHJKLMPRSTUX";
    if !TYPES.contains(&first.to_ascii_uppercase())
        || !(second.is_ascii_alphabetic() || *second == b'9')
    {
        return false;
    }
    let digits: Vec<u32> = rest
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if rest.len() != 7 {
        return false;
    }
    let [d1, d2, d3, d4, d5, d6, d7] = digits.as_slice() else {
        return false;
    };
    ((d1 + d3 + d5) + 2 * (d2 + d4 + d6)) % 10 == *d7
}

/// Whether 13–19 digits look like a payment card number: the Luhn check
/// passes and the issuer prefix and length fit a known card scheme (Visa,
/// Mastercard, American Express, Discover, JCB, Diners Club, UnionPay,
/// Maestro). The prefix check keeps Luhn's one-in-ten chance from flagging
/// arbitrary long numbers.
pub fn is_valid_card(digits: &str) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let prefix = |n: usize| -> u32 { digits.get(..n).and_then(|p| p.parse().ok()).unwrap_or(0) };
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let scheme_fits = match p1 {
        4 => matches!(len, 13 | 16 | 19),
        5 => {
            ((51..=55).contains(&p2) && len == 16)
                || (matches!(p2, 50 | 56..=58) && (12..=19).contains(&len))
        }
        2 => (2221..=2720).contains(&p4) && len == 16,
        3 => {
            (matches!(p2, 34 | 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || ((matches!(p2, 36 | 38 | 39) || (300..=305).contains(&p3))
                    && (14..=19).contains(&len))
        }
        6 => {
            (p4 == 6011
                || p2 == 65
                || (644..=649).contains(&p3)
                || (622_126..=622_925).contains(&p6)
                || p2 == 62)
                && (16..=19).contains(&len)
                || (matches!(p2, 63 | 67) && (12..=19).contains(&len))
        }
        _ => false,
    };
    scheme_fits && luhn_valid(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssn_rules() {
        assert!(is_valid_ssn("078-05-1120"));
        assert!(is_valid_ssn("123456789"));
        assert!(!is_valid_ssn("000-12-3456"));
        assert!(!is_valid_ssn("666-12-3456"));
        assert!(!is_valid_ssn("900-12-3456"));
        assert!(!is_valid_ssn("999-12-3456"));
        assert!(!is_valid_ssn("123-00-4567"));
        assert!(!is_valid_ssn("123-45-0000"));
        assert!(!is_valid_ssn("12345678"));
        assert!(!is_valid_ssn("1234567890"));
    }

    #[test]
    fn luhn_and_npi() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("12a4"));
        assert!(is_valid_npi("1234567893"));
        assert!(!is_valid_npi("1234567890"));
        assert!(!is_valid_npi("123456789"));
        // Luhn-valid with the prefix but starting with 3: not an NPI.
        assert!(!is_valid_npi("3234567891") || luhn_valid("808403234567891"));
    }

    #[test]
    fn dea_check_digit() {
        assert!(is_valid_dea("AB1234563"));
        assert!(is_valid_dea("BJ6125341"));
        assert!(is_valid_dea("ab1234563"));
        assert!(!is_valid_dea("AB1234567"));
        assert!(!is_valid_dea("BJ6125342"));
        assert!(!is_valid_dea("ZB1234563"), "Z is not a registrant type");
        assert!(!is_valid_dea("AB123456"));
        assert!(!is_valid_dea("AB12345634"));
        assert!(!is_valid_dea("A11234563"));
    }

    #[test]
    fn cards() {
        assert!(is_valid_card("4111111111111111"));
        assert!(!is_valid_card("4111111111111112"));
        assert!(is_valid_card("5555555555554444"));
        assert!(is_valid_card("378282246310005"));
        assert!(is_valid_card("6011111111111117"));
        assert!(is_valid_card("2223003122003222"));
        // Luhn-valid but no scheme starts with 9.
        assert!(!is_valid_card("9111111111111119") || !luhn_valid("9111111111111119"));
        assert!(!is_valid_card("411111111111"));
    }
}
