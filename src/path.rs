//! Request path normalisation, so that no spelling of a path reaches a different rule than the
//! upstream will serve: percent-decoding, dot segments and repeated slashes are resolved before
//! any route is matched, and the upstream receives the canonical form that was matched.

use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

/// A path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Fully decoded, dot segments resolved, single slashes: what routes match against.
    pub decoded: String,
    /// The same path re-encoded with only the bytes a path segment cannot hold escaped: what
    /// the upstream receives.
    pub encoded: String,
}

/// Why a path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("an encoded `/`, `\\` or NUL is ambiguous in a path")]
    EncodedSeparator,
    #[error("a backslash is ambiguous in a path")]
    Backslash,
    #[error("control characters are not allowed in a path")]
    Control,
    #[error("`%` must be followed by two hex digits")]
    BadPercent,
    #[error("the decoded path is not UTF-8")]
    NotUtf8,
    #[error("a dot segment with parameters (`..;`) is ambiguous")]
    DotParameter,
}

/// Bytes escaped in the canonical encoded path: everything outside RFC 3986 `pchar` and `/`.
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

pub fn normalize_path(raw: &str) -> Result<NormalPath, PathError> {
    // Most request paths are already canonical: no escapes, dot segments or empty segments.
    if already_canonical(raw) {
        return Ok(NormalPath {
            decoded: raw.to_owned(),
            encoded: raw.to_owned(),
        });
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadPercent)?;
                let v = (hex_value(hex[0]).ok_or(PathError::BadPercent)? << 4)
                    | hex_value(hex[1]).ok_or(PathError::BadPercent)?;
                if matches!(v, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if v.is_ascii_control() {
                    return Err(PathError::Control);
                }
                decoded.push(v);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ if b.is_ascii_control() => return Err(PathError::Control),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;

    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                let before_param = seg.split(';').next().unwrap_or(seg);
                if before_param == "." || before_param == ".." {
                    return Err(PathError::DotParameter);
                }
                segments.push(seg);
            }
        }
    }

    let mut canonical = String::with_capacity(decoded.len());
    let mut encoded = String::with_capacity(raw.len());
    for seg in &segments {
        canonical.push('/');
        canonical.push_str(seg);
        encoded.push('/');
        encoded.extend(percent_encode(seg.as_bytes(), PATH_ESCAPE));
    }
    if segments.is_empty() || trailing_slash {
        canonical.push('/');
        encoded.push('/');
    }
    Ok(NormalPath {
        decoded: canonical,
        encoded,
    })
}

/// A path that decoding and resolving would leave as it is, spelled the way its canonical
/// encoding spells it: only `pchar` bytes other than `%`, no empty segment but a trailing
/// one, no dot segment (with or without parameters).
fn already_canonical(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let head = seg.split(';').next().unwrap_or(seg);
        if (seg.is_empty() && !last) || head == "." || head == ".." || !seg.bytes().all(plain) {
            return false;
        }
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).unwrap().decoded
    }

    #[test]
    fn resolves_dots_slashes_and_encoding() {
        assert_eq!(norm("/public/../account/"), "/account/");
        assert_eq!(norm("/%61ccount/"), "/account/");
        assert_eq!(norm("//account//x"), "/account/x");
        assert_eq!(norm("/a/./b/."), "/a/b/");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/%2e%2e/account"), "/account");
    }

    #[test]
    fn encoded_form_escapes_only_what_a_segment_cannot_hold() {
        let p = normalize_path("/a%20b/%23frag/%3Fq/caf%C3%A9/%7E").unwrap();
        assert_eq!(p.decoded, "/a b/#frag/?q/café/~");
        assert_eq!(p.encoded, "/a%20b/%23frag/%3Fq/caf%C3%A9/~");
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_one() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b.c/d~e",
            "/a;b=c/",
            "/a/.b",
            "/a/..b",
            "/.well-known/x",
        ] {
            assert!(already_canonical(p), "{p}");
            let n = normalize_path(p).unwrap();
            assert_eq!((n.decoded.as_str(), n.encoded.as_str()), (p, p));
        }
        for p in [
            "//a", "/a//b", "/a/./b", "/a/..", "/a/.", "/%61", "/a b", "/a\\b", "/..;/a", "/.;x",
            "x",
        ] {
            assert!(!already_canonical(p), "{p}");
        }
    }

    #[test]
    fn refuses_ambiguous_spellings() {
        assert_eq!(normalize_path("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadPercent));
        assert_eq!(normalize_path("/a%4"), Err(PathError::BadPercent));
        assert_eq!(normalize_path("/a%0Ab"), Err(PathError::Control));
        assert_eq!(normalize_path("/a%FF"), Err(PathError::NotUtf8));
        assert_eq!(
            normalize_path("/public/..;/account"),
            Err(PathError::DotParameter)
        );
        assert_eq!(normalize_path("account"), Err(PathError::NotAbsolute));
    }
}
