//! Request ids: every request has one, in `X-Request-Id`, sent to the upstream, returned to
//! the client and written to the access log, so that one request can be followed through
//! every log it touches.
//!
//! A peer in `server.trusted_proxies` (a load balancer the operator runs) may have named the
//! request already: its `X-Request-Id` is kept when it is well-formed (one value, 1 to 128
//! visible ASCII characters). Any other peer's is replaced, so that a client cannot forge
//! ids into the logs. W3C `traceparent` and `tracestate` are not the gate's business and pass
//! through untouched.

use pingora::http::RequestHeader;
use rand::RngCore;

pub const HEADER: &str = "x-request-id";

/// The longest id kept from a trusted proxy.
const MAX_LEN: usize = 128;

/// A new id: 16 random bytes, as 32 lower-case hex digits.
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        out.push(char::from(b"0123456789abcdef"[(b & 0xf) as usize]));
    }
    out
}

/// The id a trusted proxy gave this request, when there is exactly one and it is well-formed.
pub fn from_trusted(req: &RequestHeader) -> Option<String> {
    let mut values = req.headers.get_all(HEADER).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let v = value.as_bytes();
    let ok = !v.is_empty() && v.len() <= MAX_LEN && v.iter().all(|b| (0x21..=0x7e).contains(b));
    ok.then(|| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(values: &[&[u8]]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in values {
            r.append_header(HEADER, http::HeaderValue::from_bytes(v).unwrap())
                .unwrap();
        }
        r
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_one_well_formed_value_is_kept() {
        assert_eq!(
            from_trusted(&req(&[b"lb-1234"])).as_deref(),
            Some("lb-1234")
        );
        assert_eq!(from_trusted(&req(&[])), None);
        assert_eq!(from_trusted(&req(&[b"a", b"b"])), None, "two values");
        assert_eq!(from_trusted(&req(&[b"with space"])), None);
        assert_eq!(from_trusted(&req(&[b"caf\xc3\xa9"])), None, "not ASCII");
        assert_eq!(from_trusted(&req(&[&[b'x'; 129]])), None, "too long");
        assert!(from_trusted(&req(&[&[b'x'; 128]])).is_some());
    }
}
