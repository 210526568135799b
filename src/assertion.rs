//! `[identity.assertion]`: a signed JWT per proxied request that tells an upstream who the
//! user is, verifiable with the public keys the admin listener publishes at
//! `GET /.well-known/jwks.json`.
//!
//! Claims: `iss` (the configured issuer), `aud` (the route's `audience`, by default the
//! upstream's name), `sub` (the session's user, by the rules of
//! [`crate::record::render_user`]: a non-empty string or a JavaScript-safe integer, as its
//! text), `iat`, `nbf`, `exp` (`iat + ttl`), `jti` (128 random bits), `sid_hash`
//! (base64url of the SHA-256 of the session id: it correlates, it never authenticates) and
//! the configured claims, copied as JSON from the session (arrays stay arrays; integers
//! outside JavaScript's safe range are refused and the claim is left out). With
//! `bind_request`, `htm` and `htu` (as DPoP names them) bind the token to the request: the
//! method, and `scheme://host/path` as the upstream receives them (the scheme of
//! `X-Forwarded-Proto`, the `Host` header, the path without the query).
//!
//! Keys: PKCS#8 PEM, EC P-256 (ES256) or Ed25519 (EdDSA). The first of `keys` signs; all are
//! published, each under its `kid`, the RFC 7638 thumbprint (base64url SHA-256 of the
//! canonical JWK), so a verifier that knows the JWKS keeps accepting tokens of the old key
//! while the next one takes over.
//!
//! Unbound assertions are cached per (session id hash, audience) for half the ttl, and only
//! reused while the session still yields the same `sub` and claims; bound ones are signed
//! per request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use http::HeaderName;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::record::SessionRecord;

/// The default header the assertion travels in.
pub const DEFAULT_HEADER: &str = "x-session-assertion";

/// One signing key with its public half.
#[derive(Clone)]
pub struct SigningKey {
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK, with `kid`, `alg` and `use`.
    pub jwk: Jwk,
    pub kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A PKCS#8 PEM private key: EC P-256 or Ed25519.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let (alg, encoding, params) = if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            let jwk = Jwk::from_encoding_key(&k, Algorithm::ES256)
                .map_err(|e| format!("not an EC P-256 key: {e}"))?;
            (Algorithm::ES256, k, jwk.algorithm)
        } else if let Ok(k) = EncodingKey::from_ed_pem(pem) {
            let text = std::str::from_utf8(pem).map_err(|_| "the key is not PEM text")?;
            let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
                .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
            let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
            let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x,
            });
            (Algorithm::EdDSA, k, params)
        } else {
            return Err(
                "not a PKCS#8 PEM private key of EC P-256 (ES256) or Ed25519 (EdDSA)".into(),
            );
        };
        // Only P-256 is ES256.
        if let AlgorithmParameters::EllipticCurve(ec) = &params {
            if ec.curve != EllipticCurve::P256 {
                return Err("EC keys must be on P-256 (ES256)".into());
            }
        }
        let mut jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: params,
        };
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(match alg {
                Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                _ => KeyAlgorithm::ES256,
            }),
            key_id: Some(kid.clone()),
            ..Default::default()
        };
        Ok(Self {
            alg,
            encoding,
            jwk,
            kid,
        })
    }
}

/// The `[identity.assertion]` settings.
#[derive(Debug, Clone)]
pub struct AssertionSettings {
    pub header: HeaderName,
    /// The first signs; all are published.
    pub keys: Vec<SigningKey>,
    pub issuer: String,
    pub ttl: Duration,
    /// Claim name -> JSON pointer into the session.
    pub claims: Vec<(String, String)>,
    pub bind_request: bool,
}

/// The request an assertion is bound to.
pub struct Binding<'a> {
    pub method: &'a str,
    /// `scheme://host/path`.
    pub url: &'a str,
}

/// The URL an assertion is bound to (`htu`): the scheme the client used, the host and the
/// canonical path, without the query (as DPoP's `htu`).
pub fn request_url(https: bool, host: &str, path: &str) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}{path}")
}

/// Why no assertion was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The session names no user (or one no JWT `sub` can carry).
    NoUser,
    Signing(String),
}

struct Cached {
    /// The `sub` and claims the token was made from.
    fingerprint: Box<str>,
    token: Arc<str>,
}

/// Signs assertions for one config; on the runtime, swapped on reload.
pub struct Assertions {
    pub settings: AssertionSettings,
    jwks: Arc<[u8]>,
    cache: moka::sync::Cache<(String, String), Arc<Cached>>,
}

impl Assertions {
    pub fn new(settings: AssertionSettings) -> Self {
        let keys: Vec<&Jwk> = settings.keys.iter().map(|k| &k.jwk).collect();
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys }))
            .expect("a JWK serialises")
            .into();
        let cache = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live((settings.ttl / 2).max(Duration::from_millis(1)))
            .build();
        Self {
            settings,
            jwks,
            cache,
        }
    }

    /// `{"keys": [...]}`: every key's public JWK.
    pub fn jwks(&self) -> Arc<[u8]> {
        self.jwks.clone()
    }

    /// The token for this session, audience and (when `bind_request`) request.
    pub fn assertion(
        &self,
        sid: &str,
        session: &SessionRecord,
        user_field: &str,
        audience: &str,
        request: &Binding<'_>,
    ) -> Result<Arc<str>, Refused> {
        let sub = session.user(user_field).ok_or(Refused::NoUser)?;
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(sub));
        for (name, pointer) in &self.settings.claims {
            match session.pointer(pointer) {
                None | Some(Value::Null) => {}
                Some(v) if !safe_json(v) => {
                    tracing::warn!(claim = %name, "session value holds an integer outside JavaScript's safe range; claim not sent");
                }
                Some(v) => {
                    claims.insert(name.clone(), v.clone());
                }
            }
        }
        let sid_hash = URL_SAFE_NO_PAD.encode(Sha256::digest(sid.as_bytes()));
        if self.settings.bind_request {
            claims.insert("htm".into(), request.method.into());
            claims.insert("htu".into(), request.url.into());
            return self.sign(claims, audience, &sid_hash);
        }
        let fingerprint = Value::Object(claims.clone()).to_string();
        let key = (sid_hash, audience.to_string());
        if let Some(hit) = self.cache.get(&key) {
            if *hit.fingerprint == *fingerprint {
                return Ok(hit.token.clone());
            }
        }
        let token = self.sign(claims, audience, &key.0)?;
        self.cache.insert(
            key,
            Arc::new(Cached {
                fingerprint: fingerprint.into(),
                token: token.clone(),
            }),
        );
        Ok(token)
    }

    fn sign(
        &self,
        mut claims: Map<String, Value>,
        audience: &str,
        sid_hash: &str,
    ) -> Result<Arc<str>, Refused> {
        let key = &self.settings.keys[0];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        claims.insert("iss".into(), self.settings.issuer.clone().into());
        claims.insert("aud".into(), audience.into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + self.settings.ttl.as_secs()).into());
        claims.insert(
            "jti".into(),
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()).into(),
        );
        claims.insert("sid_hash".into(), sid_hash.into());
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map(Arc::from)
            .map_err(|e| Refused::Signing(e.to_string()))
    }
}

/// No integer in `v` past JavaScript's safe range (a verifier in JavaScript would read
/// another number).
fn safe_json(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            crate::record::safe_integer(n).is_some() || n.as_f64().is_some_and(|f| f.fract() != 0.0)
        }
        Value::Array(a) => a.iter().all(safe_json),
        Value::Object(o) => o.values().all(safe_json),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2
OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r
1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G
-----END PRIVATE KEY-----
";
    const ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";

    fn assertions(pem: &str, bind: bool) -> Assertions {
        Assertions::new(AssertionSettings {
            header: HeaderName::from_static(DEFAULT_HEADER),
            keys: vec![SigningKey::from_pem(pem.as_bytes()).unwrap()],
            issuer: "https://gate".into(),
            ttl: Duration::from_secs(60),
            claims: vec![("roles".into(), "/roles".into()), ("n".into(), "/n".into())],
            bind_request: bind,
        })
    }

    fn session(v: Value) -> SessionRecord {
        SessionRecord::parse(&v.to_string()).unwrap()
    }

    const GET: Binding<'static> = Binding {
        method: "GET",
        url: "http://h/a",
    };

    fn claims(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn keys_are_read_with_their_rfc7638_thumbprint() {
        let ec = SigningKey::from_pem(P256.as_bytes()).unwrap();
        assert_eq!(ec.alg, Algorithm::ES256);
        let ed = SigningKey::from_pem(ED25519.as_bytes()).unwrap();
        assert_eq!(ed.alg, Algorithm::EdDSA);
        for k in [&ec, &ed] {
            let jwk = serde_json::to_value(&k.jwk).unwrap();
            assert!(jwk.get("d").is_none());
            // The thumbprint of the members RFC 7638 names, in its order.
            let canonical = match k.alg {
                Algorithm::EdDSA => json!({"crv": "Ed25519", "kty": "OKP", "x": jwk["x"]}),
                _ => json!({"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}),
            };
            let sha = Sha256::digest(canonical.to_string().as_bytes());
            assert_eq!(k.kid, URL_SAFE_NO_PAD.encode(sha));
            assert_eq!(jwk["kid"], k.kid.as_str());
        }
        assert!(SigningKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn claims_follow_the_identity_rules() {
        let a = assertions(ED25519, false);
        let s = session(json!({"user": 42, "roles": ["a"], "n": 1234567890123456789u64}));
        let t = a.assertion("sid", &s, "user", "app", &GET).unwrap();
        let c = claims(&t);
        assert_eq!(c["sub"], "42", "an integer user, as its text");
        assert_eq!(c["roles"], json!(["a"]));
        assert!(c.get("n").is_none(), "unsafe integers are refused");
        assert_eq!(
            c["sid_hash"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"sid")).as_str()
        );
        for user in [json!(""), json!(1e20), json!({"a": 1}), Value::Null] {
            let s = session(json!({ "user": user }));
            assert_eq!(
                a.assertion("sid", &s, "user", "app", &GET).unwrap_err(),
                Refused::NoUser
            );
        }
    }

    #[test]
    fn unbound_tokens_are_reused_until_the_claims_change() {
        let a = assertions(P256, false);
        let s = session(json!({"user": "alice", "roles": ["a"]}));
        let t1 = a.assertion("sid", &s, "user", "app", &GET).unwrap();
        assert_eq!(a.assertion("sid", &s, "user", "app", &GET).unwrap(), t1);
        assert_ne!(a.assertion("sid", &s, "user", "other", &GET).unwrap(), t1);
        assert_ne!(a.assertion("sid2", &s, "user", "app", &GET).unwrap(), t1);
        let changed = session(json!({"user": "alice", "roles": ["a", "admin"]}));
        let t2 = a.assertion("sid", &changed, "user", "app", &GET).unwrap();
        assert_ne!(t2, t1);
        assert_eq!(claims(&t2)["roles"], json!(["a", "admin"]));
    }

    #[test]
    fn bound_tokens_name_the_request_and_are_signed_each_time() {
        let a = assertions(P256, true);
        let s = session(json!({"user": "alice"}));
        let t1 = a.assertion("sid", &s, "user", "app", &GET).unwrap();
        let c = claims(&t1);
        assert_eq!(
            (c["htm"].as_str(), c["htu"].as_str()),
            (Some("GET"), Some("http://h/a"))
        );
        assert_ne!(a.assertion("sid", &s, "user", "app", &GET).unwrap(), t1);
    }
}
