//! Files shared in a consultation: what the bytes really are (content
//! sniffing, never the declared type alone), size limits, and the text the
//! data-loss prevention reads (a text file, or the text of a PDF's content
//! streams).
//!
//! PDF text is taken from the literal strings that the text-showing
//! operators (`Tj`, `TJ`, `'`, `"`) draw, in content streams stored plainly
//! or with `FlateDecode`. Inflation stops at [`MAX_INFLATED`] bytes per file
//! (a compression bomb is refused, not followed).

use miniz_oxide::inflate::decompress_to_vec_zlib_with_limit;

/// The largest file accepted by default.
pub const DEFAULT_MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// The most bytes all of a PDF's streams may inflate to.
pub const MAX_INFLATED: usize = 32 * 1024 * 1024;
/// The longest file name kept.
pub const MAX_NAME_LEN: usize = 255;

/// The kinds of file a consultation accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Pdf,
    Png,
    Jpeg,
    Text,
}

impl FileKind {
    pub fn mime(self) -> &'static str {
        match self {
            FileKind::Pdf => "application/pdf",
            FileKind::Png => "image/png",
            FileKind::Jpeg => "image/jpeg",
            FileKind::Text => "text/plain",
        }
    }

    /// The kind a declared media type names (parameters ignored).
    pub fn from_mime(mime: &str) -> Option<FileKind> {
        let base = mime.split(';').next().unwrap_or("").trim();
        match base.to_ascii_lowercase().as_str() {
            "application/pdf" => Some(FileKind::Pdf),
            "image/png" => Some(FileKind::Png),
            "image/jpeg" | "image/jpg" => Some(FileKind::Jpeg),
            "text/plain" => Some(FileKind::Text),
            _ => None,
        }
    }
}

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("only PDF, PNG, JPEG and plain-text files can be shared")]
    UnsupportedType,
    #[error("the file's content is not what its type says ({declared} declared)")]
    Mismatch { declared: &'static str },
    #[error("the file name must be 1 to 255 characters without control characters or slashes")]
    BadName,
    #[error("the PDF's streams inflate beyond the limit")]
    Bomb,
}

/// What the bytes are, from their first bytes (text: valid UTF-8 without
/// NUL or other C0 controls besides tab, CR and LF).
pub fn sniff(bytes: &[u8]) -> Option<FileKind> {
    if bytes.starts_with(b"%PDF-") {
        Some(FileKind::Pdf)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(FileKind::Png)
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        Some(FileKind::Jpeg)
    } else if let Ok(s) = std::str::from_utf8(bytes)
        && s.chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
    {
        Some(FileKind::Text)
    } else {
        None
    }
}

/// Checks a shared file: name, size, declared type, and that the content is
/// that type. Returns the kind.
pub fn check(name: &str, declared: &str, bytes: &[u8], max: usize) -> Result<FileKind, FileError> {
    if name.is_empty()
        || name.chars().count() > MAX_NAME_LEN
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(FileError::BadName);
    }
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    if bytes.len() > max {
        return Err(FileError::TooLarge { limit: max });
    }
    let kind = FileKind::from_mime(declared).ok_or(FileError::UnsupportedType)?;
    if sniff(bytes) != Some(kind) {
        return Err(FileError::Mismatch {
            declared: kind.mime(),
        });
    }
    Ok(kind)
}

/// The text the DLP reads: the whole of a text file, the drawn strings of a
/// PDF, nothing of an image.
pub fn text_of(kind: FileKind, bytes: &[u8]) -> Result<String, FileError> {
    match kind {
        FileKind::Text => Ok(String::from_utf8_lossy(bytes).into_owned()),
        FileKind::Pdf => pdf_text(bytes),
        FileKind::Png | FileKind::Jpeg => Ok(String::new()),
    }
}

/// The text strings a PDF's content streams draw, one line per operator.
pub fn pdf_text(bytes: &[u8]) -> Result<String, FileError> {
    let mut out = String::new();
    let mut budget = MAX_INFLATED;
    let mut at = 0;
    while let Some(rel) = find(bytes.get(at..).unwrap_or_default(), b"stream") {
        let kw = at + rel;
        // `endstream` also contains `stream`: skip it.
        if kw >= 3 && bytes.get(kw - 3..kw) == Some(b"end") {
            at = kw + 6;
            continue;
        }
        let mut start = kw + 6;
        if bytes.get(start) == Some(&b'\r') {
            start += 1;
        }
        if bytes.get(start) == Some(&b'\n') {
            start += 1;
        }
        let Some(end_rel) = find(bytes.get(start..).unwrap_or_default(), b"endstream") else {
            break;
        };
        let end = start + end_rel;
        let dict_from = kw.saturating_sub(512);
        let dict = bytes.get(dict_from..kw).unwrap_or_default();
        let raw = bytes.get(start..end).unwrap_or_default();
        let content = if find(dict, b"/FlateDecode").is_some() {
            match decompress_to_vec_zlib_with_limit(trim_eol(raw), budget) {
                Ok(v) => v,
                Err(e) if matches!(e.status, miniz_oxide::inflate::TINFLStatus::HasMoreOutput) => {
                    return Err(FileError::Bomb);
                }
                // A stream that does not inflate (an image, a damaged
                // stream) holds no text we can read.
                Err(_) => Vec::new(),
            }
        } else if find(dict, b"/Filter").is_some() {
            Vec::new()
        } else {
            raw.to_vec()
        };
        budget = budget.saturating_sub(content.len());
        draw_strings(&content, &mut out);
        at = end + 9;
    }
    Ok(out)
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b.get(end - 1), Some(b'\r' | b'\n')) {
        end -= 1;
    }
    b.get(..end).unwrap_or_default()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Appends the literal strings of a content stream that a text operator
/// shows (strings in a `TJ` array included).
fn draw_strings(content: &[u8], out: &mut String) {
    let mut pending = String::new();
    let mut i = 0;
    while let Some(&b) = content.get(i) {
        match b {
            b'(' => {
                let (s, next) = literal(content, i + 1);
                pending.push_str(&s);
                i = next;
            }
            b'T' if matches!(content.get(i + 1), Some(b'j' | b'J')) => {
                flush(&mut pending, out);
                i += 2;
            }
            b'\'' | b'"' => {
                flush(&mut pending, out);
                i += 1;
            }
            b'E' if content.get(i + 1) == Some(&b'T') => {
                flush(&mut pending, out);
                i += 2;
            }
            _ => i += 1,
        }
    }
}

fn flush(pending: &mut String, out: &mut String) {
    if !pending.is_empty() {
        out.push_str(pending);
        out.push(' ');
        pending.clear();
    }
}

/// A literal string from after its `(` to its balancing `)`, with escapes.
fn literal(c: &[u8], mut i: usize) -> (String, usize) {
    let mut depth = 1usize;
    let mut bytes = Vec::new();
    while let Some(&b) = c.get(i) {
        i += 1;
        match b {
            b'\\' => {
                let Some(&e) = c.get(i) else { break };
                i += 1;
                match e {
                    b'n' => bytes.push(b'\n'),
                    b'r' => bytes.push(b'\r'),
                    b't' => bytes.push(b'\t'),
                    b'b' | b'f' => {}
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match c.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        bytes.push(u8::try_from(v & 0xFF).unwrap_or(b' '));
                    }
                    b'\r' | b'\n' => {}
                    other => bytes.push(other),
                }
            }
            b'(' => {
                depth += 1;
                bytes.push(b);
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                bytes.push(b);
            }
            _ => bytes.push(b),
        }
    }
    // PDFDocEncoding is Latin-1 for the printable range.
    (bytes.iter().map(|&b| char::from(b)).collect(), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf_with(content: &[u8], flate: bool) -> Vec<u8> {
        let (dict, body) = if flate {
            (
                "<< /Length 0 /Filter /FlateDecode >>",
                miniz_oxide::deflate::compress_to_vec_zlib(content, 6),
            )
        } else {
            ("<< /Length 0 >>", content.to_vec())
        };
        let mut out = b"%PDF-1.4\n1 0 obj\n".to_vec();
        out.extend_from_slice(dict.as_bytes());
        out.extend_from_slice(b"\nstream\n");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        out
    }

    #[test]
    fn types_are_sniffed_not_believed() {
        let pdf = pdf_with(b"BT (hello) Tj ET", false);
        assert_eq!(
            check("a.pdf", "application/pdf", &pdf, 1 << 20),
            Ok(FileKind::Pdf)
        );
        // A script named as a PDF, an HTML page declared as text, a PNG as JPEG.
        assert!(matches!(
            check("a.pdf", "application/pdf", b"<script>x</script>", 1 << 20),
            Err(FileError::Mismatch { .. })
        ));
        assert_eq!(
            check("a.txt", "text/plain", b"\x00\x01binary", 1 << 20),
            Err(FileError::Mismatch {
                declared: "text/plain"
            })
        );
        assert!(matches!(
            check("a.jpg", "image/jpeg", b"\x89PNG\r\n\x1a\nrest", 1 << 20),
            Err(FileError::Mismatch { .. })
        ));
        assert_eq!(
            check("a.html", "text/html", b"<p>", 1 << 20),
            Err(FileError::UnsupportedType)
        );
        assert_eq!(
            check("a.txt", "text/plain", b"12345", 4),
            Err(FileError::TooLarge { limit: 4 })
        );
        assert_eq!(check("", "text/plain", b"x", 4), Err(FileError::BadName));
        assert_eq!(
            check("../x", "text/plain", b"x", 4),
            Err(FileError::BadName)
        );
        assert_eq!(check("x", "text/plain", b"", 4), Err(FileError::Empty));
    }

    #[test]
    fn pdf_text_comes_from_plain_and_flate_streams() {
        let content =
            b"BT /F1 12 Tf 72 712 Td (Call Walter Finch) Tj [(born ) 120 (1958-11-02)] TJ ET";
        for flate in [false, true] {
            let text = pdf_text(&pdf_with(content, flate)).unwrap();
            assert!(text.contains("Call Walter Finch"), "{text}");
            assert!(text.contains("born 1958-11-02"), "{text}");
        }
        // Escapes and nested parentheses.
        let text = pdf_text(&pdf_with(br"BT (a \(b\) c \061 (d)) Tj ET", false)).unwrap();
        assert!(text.contains("a (b) c 1 (d)"), "{text}");
    }

    #[test]
    fn a_compression_bomb_is_refused() {
        let zeros = vec![b' '; MAX_INFLATED + 1024];
        let pdf = pdf_with(&zeros, true);
        assert!(pdf.len() < 100_000, "the bomb is small: {}", pdf.len());
        assert_eq!(pdf_text(&pdf), Err(FileError::Bomb));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            let mut doc = b"%PDF-1.4 stream\n".to_vec();
            doc.extend_from_slice(&bytes);
            let _ = pdf_text(&doc);
            let _ = sniff(&bytes);
        }
    }
}
