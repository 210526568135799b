//! express-session's cookie signature (the `cookie-signature` package): the value is
//! `s:<sid>.<sig>` where `sig` is HMAC-SHA256(secret, sid) in standard base64 without `=`.
//! The first secret signs; every secret verifies, so secrets can be rotated without logging
//! anyone out.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Length of a base64 HMAC-SHA256 without padding.
const SIGNATURE_LEN: usize = 43;
/// Longest session id accepted; express ids are 32 characters, custom `genid`s rarely exceed 64.
const MAX_SID_LEN: usize = 256;

#[derive(Clone)]
pub struct Signer {
    /// Keyed HMAC states, built once: cloning one is cheaper than re-keying per request.
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} secrets)", self.keys.len())
    }
}

impl Signer {
    /// `secrets` must not be empty (the config guarantees it).
    pub fn new(secrets: &[Vec<u8>]) -> Self {
        assert!(!secrets.is_empty(), "a signer needs at least one secret");
        Self {
            keys: secrets
                .iter()
                .map(|s| HmacSha256::new_from_slice(s).expect("HMAC takes keys of any length"))
                .collect(),
        }
    }

    fn signature(key: &HmacSha256, sid: &str) -> [u8; SIGNATURE_LEN] {
        let mut mac = key.clone();
        mac.update(sid.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; SIGNATURE_LEN];
        let n = STANDARD_NO_PAD
            .encode_slice(tag, &mut out)
            .expect("32 bytes encode to 43 characters");
        debug_assert_eq!(n, SIGNATURE_LEN);
        out
    }

    /// The cookie value before percent-encoding: `s:<sid>.<sig>`, signed with the first secret.
    pub fn sign(&self, sid: &str) -> String {
        let sig = Self::signature(&self.keys[0], sid);
        let mut out = String::with_capacity(2 + sid.len() + 1 + SIGNATURE_LEN);
        out.push_str("s:");
        out.push_str(sid);
        out.push('.');
        out.push_str(std::str::from_utf8(&sig).expect("base64 is ASCII"));
        out
    }

    /// The session id inside a decoded cookie value, if some secret signed it. Anything else
    /// (no `s:`, a signature of the wrong length, trailing bytes, a bad id) is no session.
    pub fn unsign<'a>(&self, value: &'a str) -> Option<&'a str> {
        self.verify(value).map(|v| v.sid)
    }

    /// [`unsign`](Self::unsign), also telling whether the current (first) secret signed it,
    /// so that cookies signed with a retired secret can be re-signed.
    pub fn verify<'a>(&self, value: &'a str) -> Option<Verified<'a>> {
        let body = value.strip_prefix("s:")?;
        let (sid, sig) = body.rsplit_once('.')?;
        if sig.len() != SIGNATURE_LEN || !valid_sid(sid) {
            return None;
        }
        // Try every key without stopping early, so timing does not tell which key matched.
        let mut ok = subtle::Choice::from(0);
        let mut current = subtle::Choice::from(0);
        for (i, key) in self.keys.iter().enumerate() {
            let matched = Self::signature(key, sid).ct_eq(sig.as_bytes());
            ok |= matched;
            if i == 0 {
                current = matched;
            }
        }
        bool::from(ok).then_some(Verified {
            sid,
            current: current.into(),
        })
    }
}

/// A verified session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    pub sid: &'a str,
    /// Signed with the first (current) secret.
    pub current: bool,
}

/// A session id as express-session and other writers make them: visible ASCII that needs no
/// quoting in a cookie or a Redis key pattern.
pub fn valid_sid(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= MAX_SID_LEN
        && sid.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b';' | b',' | b'"' | b'\\' | b'*' | b'?' | b'[' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookie;

    #[derive(serde::Deserialize)]
    struct Vector {
        secret: String,
        sid: String,
        set_cookie: String,
    }

    /// Cookies made by express-session 1.19's own code (cookie-signature 1.0.7).
    fn vectors() -> Vec<Vector> {
        serde_json::from_str(include_str!(
            "../tests/fixtures/express-cookie-vectors.json"
        ))
        .unwrap()
    }

    fn cookie_value(set_cookie: &str) -> &str {
        let (_, rest) = set_cookie.split_once('=').unwrap();
        rest.split(';').next().unwrap()
    }

    #[test]
    fn signs_like_express_session() {
        for v in vectors() {
            let signer = Signer::new(&[v.secret.as_bytes().to_vec()]);
            let encoded = cookie::encode_value(&signer.sign(&v.sid));
            assert_eq!(
                encoded,
                cookie_value(&v.set_cookie),
                "secret {:?}",
                v.secret
            );
        }
    }

    #[test]
    fn verifies_express_cookies_with_any_configured_secret() {
        for v in vectors() {
            let value = cookie::decode_value(cookie_value(&v.set_cookie)).unwrap();
            let rotated = Signer::new(&[b"a newer secret".to_vec(), v.secret.as_bytes().to_vec()]);
            assert_eq!(
                rotated.verify(&value),
                Some(Verified {
                    sid: &v.sid,
                    current: false
                })
            );
            let same = Signer::new(&[v.secret.as_bytes().to_vec()]);
            assert_eq!(
                same.verify(&value),
                Some(Verified {
                    sid: &v.sid,
                    current: true
                })
            );
            let stranger = Signer::new(&[b"another secret".to_vec()]);
            assert_eq!(stranger.unsign(&value), None);
        }
    }

    #[test]
    fn real_express_response_from_the_issue() {
        let value = cookie::decode_value(
            "s%3AW0kENn_GtXvdsJHGxCQISK4wiBiX30Ab.yr4V8RgJpEkXacLfJQNt40cBUQhshnRvrT564%2FaA%2BII",
        )
        .unwrap();
        let signer = Signer::new(&[b"keyboard cat".to_vec()]);
        assert_eq!(
            signer.unsign(&value),
            Some("W0kENn_GtXvdsJHGxCQISK4wiBiX30Ab")
        );
    }

    #[test]
    fn rejects_everything_that_is_not_exactly_signed() {
        let signer = Signer::new(&[b"keyboard cat".to_vec()]);
        let good = signer.sign("W0kENn_GtXvdsJHGxCQISK4wiBiX30Ab");
        assert!(signer.unsign(&good).is_some());
        // Trailing garbage after a valid signature (cookie-signature 1.1.0 accepted it).
        assert_eq!(signer.unsign(&format!("{good}x")), None);
        assert_eq!(signer.unsign(&format!("{good}.")), None);
        // Unsigned, missing prefix, truncated or tampered.
        assert_eq!(signer.unsign("W0kENn_GtXvdsJHGxCQISK4wiBiX30Ab"), None);
        assert_eq!(signer.unsign(&good[2..]), None);
        assert_eq!(signer.unsign(&good[..good.len() - 1]), None);
        let mut tampered = good.clone().into_bytes();
        tampered[5] ^= 1;
        assert_eq!(signer.unsign(std::str::from_utf8(&tampered).unwrap()), None);
        let last = good.len() - 1;
        let mut sig_flip = good.clone().into_bytes();
        sig_flip[last] = if sig_flip[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer.unsign(std::str::from_utf8(&sig_flip).unwrap()), None);
        assert_eq!(signer.unsign("s:"), None);
        assert_eq!(signer.unsign("s:."), None);
        assert_eq!(signer.unsign(""), None);
    }

    mod properties {
        //! Only the exact express format, signed by a configured secret, verifies; nothing a
        //! client sends makes the cookie path panic.
        use super::super::*;
        use crate::cookie;
        use proptest::prelude::*;

        fn signers() -> (Signer, Signer, Signer) {
            let (a, b) = (
                b"current secret".to_vec(),
                "retired secrét".as_bytes().to_vec(),
            );
            (
                Signer::new(&[a.clone(), b.clone()]),
                Signer::new(&[a]),
                Signer::new(&[b]),
            )
        }

        /// A value verifies exactly when one of the secrets signed that very text.
        fn check(value: &str) -> Result<(), TestCaseError> {
            let (both, a, b) = signers();
            match both.verify(value) {
                Some(v) => prop_assert!(
                    value == a.sign(v.sid) || value == b.sign(v.sid),
                    "{value:?} verified but is not a signature"
                ),
                None => {
                    if let Some(sid) = value.strip_prefix("s:").and_then(|b| b.rsplit_once('.')) {
                        prop_assert!(
                            !valid_sid(sid.0) || (value != a.sign(sid.0) && value != b.sign(sid.0)),
                            "{value:?} is a signature but did not verify"
                        );
                    }
                }
            }
            Ok(())
        }

        fn sid() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_-]{1,64}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            #[test]
            fn arbitrary_values_verify_only_as_exact_signatures(value in ".*") {
                check(&value)?;
                check(&format!("s:{value}"))?;
            }

            #[test]
            fn signed_values_verify_and_every_edit_of_them_does_not(
                sid in sid(),
                retired in any::<bool>(),
                cut in 0usize..200,
                insert in ".{1,3}",
                flip in 0usize..200,
            ) {
                let (both, a, b) = signers();
                let good = if retired { b.sign(&sid) } else { a.sign(&sid) };
                let v = both.verify(&good).expect("a signed value verifies");
                prop_assert_eq!(v.sid, sid.as_str());
                prop_assert_eq!(v.current, !retired);
                // Truncated, extended, or one byte changed: refused unless still exact.
                let cut = cut % good.len();
                check(&good[..cut])?;
                check(&format!("{good}{insert}"))?;
                check(&format!("{}{insert}{}", &good[..cut], &good[cut..]))?;
                let mut flipped = good.clone().into_bytes();
                let i = flip % flipped.len();
                flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
                check(std::str::from_utf8(&flipped).unwrap())?;
            }

            #[test]
            fn any_cookie_header_is_read_without_panicking(header in ".*", name in "[a-z.]{1,10}") {
                for value in cookie::values(&header, &name) {
                    if let Some(decoded) = cookie::decode_value(value) {
                        check(&decoded)?;
                    }
                }
            }
        }
    }
}
