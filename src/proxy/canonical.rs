//! One canonical reading of a request target.
//!
//! Pure: no I/O. The proxy decides on the path it reads here and forwards exactly the bytes
//! that decode to it. Anything two parsers could read differently is refused (400), never
//! repaired: `.`/`..` segments, empty segments (`//`), backslashes, `;` (matrix parameters),
//! control characters, raw non-ASCII, malformed percent-escapes, and percent-encoded `/`, `\`,
//! `.`, `;`, `#`, `?`, `%` (double encoding) or control bytes. Percent-decoding happens exactly
//! once.

use std::fmt;

/// Why a path or query is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Not origin-form (`/…`): absolute-form handled by the caller, `*` refused.
    NotOriginForm,
    /// A `.` or `..` segment.
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// A `\`.
    Backslash,
    /// A `;`.
    Semicolon,
    /// A control character, space, or raw non-ASCII byte.
    RawByte,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A percent-encoded `/`, `\`, `.`, `;`, `#`, `?`, `%` or control byte.
    EncodedDelimiter,
    /// The decoded path is not UTF-8.
    NotUtf8,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetError::NotOriginForm => "the request target must be a path starting with /",
            TargetError::DotSegment => "`.` and `..` segments are not accepted",
            TargetError::EmptySegment => "empty path segments (`//`) are not accepted",
            TargetError::Backslash => "`\\` is not accepted in a path",
            TargetError::Semicolon => "`;` is not accepted in the path or query",
            TargetError::RawByte => "control characters, spaces and raw non-ASCII bytes must not appear",
            TargetError::BadEscape => "`%` must be followed by two hex digits",
            TargetError::EncodedDelimiter => {
                "percent-encoded `/`, `\\`, `.`, `;`, `#`, `?`, `%` and control bytes are not accepted (ambiguous, or double encoding)"
            }
            TargetError::NotUtf8 => "the decoded path is not UTF-8",
        })
    }
}

impl std::error::Error for TargetError {}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks a raw path (as received, without the query) and returns it decoded once.
pub fn canonical_path(raw: &str) -> Result<String, TargetError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(TargetError::NotOriginForm);
    }
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(TargetError::BadEscape);
                };
                let d = h << 4 | l;
                if matches!(d, b'/' | b'\\' | b'.' | b';' | b'#' | b'?' | b'%')
                    || d < 0x20
                    || d == 0x7f
                {
                    return Err(TargetError::EncodedDelimiter);
                }
                out.push(d);
                i += 3;
                continue;
            }
            b'\\' => return Err(TargetError::Backslash),
            b';' => return Err(TargetError::Semicolon),
            b'#' | b'?' => return Err(TargetError::RawByte),
            0..=0x20 | 0x7f..=0xff => return Err(TargetError::RawByte),
            _ => out.push(b),
        }
        i += 1;
    }
    let decoded = String::from_utf8(out).map_err(|_| TargetError::NotUtf8)?;
    // Encoded C1 controls (U+0080–U+009F, e.g. `%C2%85` NEL) are control characters too.
    if decoded.chars().any(char::is_control) {
        return Err(TargetError::EncodedDelimiter);
    }
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, s) in segments.iter().enumerate() {
        if s.is_empty() && n != last {
            return Err(TargetError::EmptySegment);
        }
        if *s == "." || *s == ".." {
            return Err(TargetError::DotSegment);
        }
    }
    Ok(decoded)
}

/// Percent-decodes a query component once (`+` is a space, as in forms).
pub fn decode_query_component(raw: &str) -> Result<String, TargetError> {
    String::from_utf8(decode_form_bytes(raw.as_bytes())?).map_err(|_| TargetError::NotUtf8)
}

/// Percent-decodes form-encoded bytes once (`+` is a space); a malformed escape is an error.
pub fn decode_form_bytes(bytes: &[u8]) -> Result<Vec<u8>, TargetError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(TargetError::BadEscape);
                };
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Checks a raw query string: no `;` (some servers split on it), no raw control or non-ASCII
/// bytes, well-formed escapes.
pub fn check_query(raw: &str) -> Result<(), TargetError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => return Err(TargetError::Semicolon),
            b'%' => {
                if bytes.get(i + 1).copied().and_then(hex).is_none()
                    || bytes.get(i + 2).copied().and_then(hex).is_none()
                {
                    return Err(TargetError::BadEscape);
                }
                i += 3;
                continue;
            }
            0..=0x20 | 0x7f..=0xff | b'#' => return Err(TargetError::RawByte),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_and_decode_once() {
        assert_eq!(
            canonical_path("/crm/customers/42").unwrap(),
            "/crm/customers/42"
        );
        assert_eq!(
            canonical_path("/crm/customers/").unwrap(),
            "/crm/customers/"
        );
        assert_eq!(canonical_path("/").unwrap(), "/");
        assert_eq!(canonical_path("/a%20b/%41").unwrap(), "/a b/A");
        assert_eq!(canonical_path("/caf%C3%A9").unwrap(), "/café");
        assert_eq!(canonical_path("/files/a.txt").unwrap(), "/files/a.txt");
        assert_eq!(canonical_path("/x/..y/.z").unwrap(), "/x/..y/.z");
        assert_eq!(canonical_path("/x/%2A").unwrap(), "/x/*");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use TargetError::*;
        for (raw, want) in [
            ("crm", NotOriginForm),
            ("*", NotOriginForm),
            ("", NotOriginForm),
            ("/crm/../admin", DotSegment),
            ("/crm/./x", DotSegment),
            ("/crm/..", DotSegment),
            ("/crm/%2e%2e/admin", EncodedDelimiter),
            ("/crm/%2E/admin", EncodedDelimiter),
            ("/crm/.%2e/admin", EncodedDelimiter),
            ("/crm%2fadmin", EncodedDelimiter),
            ("/crm%2Fadmin", EncodedDelimiter),
            ("/crm%5cadmin", EncodedDelimiter),
            ("/crm%3badmin", EncodedDelimiter),
            ("/crm%23x", EncodedDelimiter),
            ("/crm%3Fx", EncodedDelimiter),
            ("/crm/%252e%252e/admin", EncodedDelimiter),
            ("/crm/%00", EncodedDelimiter),
            ("/crm/%0a", EncodedDelimiter),
            ("/crm/%7F", EncodedDelimiter),
            ("//crm", EmptySegment),
            ("/crm//customers", EmptySegment),
            ("/crm\\..\\admin", Backslash),
            ("/crm;jsessionid=1/customers", Semicolon),
            ("/crm/customers;/x", Semicolon),
            ("/crm/%zz", BadEscape),
            ("/crm/%2", BadEscape),
            ("/crm/%", BadEscape),
            ("/crm/\u{7f}", RawByte),
            ("/crm/caf\u{e9}", RawByte),
            ("/crm/a b", RawByte),
            ("/crm/%C3%28", NotUtf8),
            ("/crm/%FF", NotUtf8),
            ("/crm/%C2%9A", EncodedDelimiter),
            ("/crm/%C2%85x", EncodedDelimiter),
        ] {
            assert_eq!(canonical_path(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn queries() {
        assert!(check_query("limit=5&x=a%20b").is_ok());
        assert_eq!(
            check_query("limit=5;limit=500"),
            Err(TargetError::Semicolon)
        );
        assert_eq!(check_query("a=%zz"), Err(TargetError::BadEscape));
        assert_eq!(decode_query_component("l%69mit").unwrap(), "limit");
        assert_eq!(decode_query_component("a+b").unwrap(), "a b");
    }
}
