//! `[identity.assertion]` and the JWKS: an upstream verifies the gate's assertions with
//! Node's `jose` against the JWKS the admin listener publishes, as an app would: signature,
//! `iss`, `aud`, `exp`; forged, expired and replayed tokens refused; key rotation.

use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;
use crate::interop_harness::JwtUpstream;

const ISSUER: &str = "https://gate.test";

/// A PKCS#8 PEM private key file.
pub(crate) fn key_file(
    dir: &tempfile::TempDir,
    name: &str,
    alg: &'static rcgen::SignatureAlgorithm,
) -> String {
    let pem = rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// A gate whose `/api/` (required) and `/open/` (optional) go to a `jose` upstream that
/// knows this gate's JWKS; `/login` and the rest go to `app`.
struct Setup {
    gate: Gate,
    admin: SocketAddr,
    api: JwtUpstream,
    _app: Upstream,
}

async fn setup(assertion: &str) -> Setup {
    let app = Upstream::start("app").await;
    let admin = free_addr();
    let api = JwtUpstream::start(
        &format!("http://{admin}/.well-known/jwks.json"),
        ISSUER,
        "api",
    );
    let gate = standard(GateBuilder::new(), &[&app])
        .upstream_addrs("api", &[api.addr])
        .route("path = \"/api/\"\nupstream = \"api\"\nauth = \"required\"")
        .route("path = \"/open/\"\nupstream = \"api\"\nauth = \"optional\"")
        .route(
            "path = \"/billing/\"\nupstream = \"api\"\nauth = \"required\"\naudience = \"billing\"",
        )
        .table(&format!(
            "[identity.assertion]\nissuer = \"{ISSUER}\"\n{assertion}"
        ))
        .table(&format!(
            "[admin]\nlisten = \"{admin}\"\ntoken = \"an-admin-token-of-some-length\""
        ))
        .start();
    Setup {
        gate,
        admin,
        api,
        _app: app,
    }
}

async fn jwks(admin: SocketAddr) -> Response {
    raw(admin, "GET", "/.well-known/jwks.json", &[]).await
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_verifies_the_assertion_with_the_jwks() {
    for (alg, name) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "ES256"),
        (&rcgen::PKCS_ED25519, "EdDSA"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(&dir, "k.pem", alg);
        let s = setup(&format!(
            "key = \"file:{key}\"\nclaims = {{ roles = \"/roles\", email = \"/email\" }}"
        ))
        .await;
        let mut c = s.gate.client();
        login(&mut c, "alice", &["reader", "admin"]).await;
        let sid = sid_of(&c);
        let r = c
            .send("GET", "/api/x?q=1", &[("X-Session-Assertion", "forged")])
            .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["ok"], true, "{name}: {v}");
        assert_eq!(v["protectedHeader"]["alg"], name);
        let claims = &v["claims"];
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], "api", "the upstream's name by default");
        assert_eq!(
            claims["roles"],
            json!(["reader", "admin"]),
            "arrays stay arrays"
        );
        assert!(claims.get("email").is_none(), "no such session field");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        assert_eq!(claims["nbf"], claims["iat"]);
        assert_eq!(
            claims["sid_hash"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(sid.as_bytes()))
        );
        let token = v["token"].as_str().unwrap();
        assert!(
            !token.contains(&sid) && !v.to_string().contains(&sid),
            "never the id"
        );
        assert!(claims.get("htm").is_none());

        // The JWKS: no token needed, cacheable, the key under its kid, no private part.
        let j = jwks(s.admin).await;
        assert_eq!(j.status, 200);
        assert_eq!(j.header("cache-control"), Some("public, max-age=300"));
        let keys = j.json()["keys"].clone();
        assert_eq!(keys.as_array().unwrap().len(), 1);
        assert_eq!(keys[0]["kid"], v["protectedHeader"]["kid"]);
        assert_eq!(keys[0]["alg"], name);
        assert!(keys[0].get("d").is_none(), "public keys only");

        // The per-route audience: a token for `billing` is not one for `api`.
        let r = c.get("/billing/x").await.json();
        assert_eq!(r["ok"], false);
        assert_eq!(r["code"], "ERR_JWT_CLAIM_VALIDATION_FAILED", "{r}");

        // Without a session: no assertion, and a client's own copy never gets through, in
        // any spelling.
        let r = raw(
            s.gate.addr,
            "GET",
            "/open/x",
            &[
                ("X-Session-Assertion", token),
                ("x_session_assertion", token),
            ],
        )
        .await;
        assert_eq!(r.json()["code"], "ERR_NO_ASSERTION", "{}", r.body);
        let r = raw(
            s.gate.addr,
            "GET",
            "/public/x",
            &[
                ("X-SESSION-ASSERTION", token),
                ("x_Session_Assertion", token),
            ],
        )
        .await;
        let seen = r.json()["headers"].to_string().to_lowercase();
        assert!(!seen.contains("assertion"), "{seen}");

        // Unbound assertions are reused for a while: the same token again.
        let again = c.get("/api/y").await.json();
        assert_eq!(again["token"], v["token"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_expired_assertions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir, "k.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let s = setup(&format!("key = \"file:{key}\"")).await;
    let mut c = s.gate.client();
    login(&mut c, "alice", &[]).await;
    let v = c.get("/api/x").await.json();
    assert_eq!(v["ok"], true, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let kid = v["protectedHeader"]["kid"].as_str().unwrap().to_string();
    let direct = |t: String| {
        let api = s.api.addr;
        async move {
            raw(
                api,
                "GET",
                "/api/x",
                &[("X-Session-Assertion", &t), ("X-Forwarded-Proto", "http")],
            )
            .await
            .json()
        }
    };
    assert_eq!(direct(token.clone()).await["ok"], true, "the control");

    // Another user in the payload, the signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_of(&token);
    claims["sub"] = "mallory".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        direct(forged).await["code"],
        "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"
    );

    // Signed by a key of the attacker's under the gate's kid.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let sign = |pem: &str, claims: &Value| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.clone());
        let k = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&h, claims, &k).unwrap()
    };
    assert_eq!(
        direct(sign(&other, &claims)).await["code"],
        "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"
    );

    // The gate's own key, but expired.
    let pem = std::fs::read_to_string(&key).unwrap();
    let mut old = claims_of(&token);
    old["iat"] = (old["iat"].as_u64().unwrap() - 600).into();
    old["nbf"] = old["iat"].clone();
    old["exp"] = (old["iat"].as_u64().unwrap() + 60).into();
    assert_eq!(direct(sign(&pem, &old)).await["code"], "ERR_JWT_EXPIRED");
    assert_eq!(
        direct(sign(&pem, &claims_of(&token))).await["ok"],
        true,
        "the same claims, freshly signed by that key, pass: the test signs correctly"
    );

    // Another issuer, and no algorithm at all.
    let mut wrong = claims_of(&token);
    wrong["iss"] = "https://evil.test".into();
    assert_eq!(
        direct(sign(&pem, &wrong)).await["code"],
        "ERR_JWT_CLAIM_VALIDATION_FAILED"
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": kid}).to_string()),
        parts[1]
    );
    assert_eq!(direct(none).await["ok"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_publishes_both_keys_and_signs_with_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = key_file(&dir, "k1.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let k2 = key_file(&dir, "k2.pem", &rcgen::PKCS_ED25519);
    // Before: k1 alone.
    let before = setup(&format!("key = \"file:{k1}\"")).await;
    let mut c = before.gate.client();
    login(&mut c, "alice", &[]).await;
    let t1 = c.get("/api/x").await.json();
    assert_eq!(t1["ok"], true, "{t1}");
    // During: k2 signs, k1 still published.
    let during = setup(&format!("keys = [\"file:{k2}\", \"file:{k1}\"]")).await;
    let keys = jwks(during.admin).await.json()["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(keys[1]["kid"], t1["protectedHeader"]["kid"]);
    assert_ne!(keys[0]["kid"], keys[1]["kid"]);
    let mut c2 = during.gate.client();
    login(&mut c2, "bob", &[]).await;
    let t2 = c2.get("/api/x").await.json();
    assert_eq!(t2["ok"], true, "{t2}");
    assert_eq!(t2["protectedHeader"]["kid"], keys[0]["kid"]);
    assert_eq!(t2["protectedHeader"]["alg"], "EdDSA");

    let send = |to: SocketAddr, t: &Value| {
        let t = t["token"].as_str().unwrap().to_string();
        async move {
            raw(
                to,
                "GET",
                "/api/x",
                &[("X-Session-Assertion", &t), ("X-Forwarded-Proto", "http")],
            )
            .await
            .json()
        }
    };
    // A token of the old key still verifies against the new JWKS...
    assert_eq!(send(during.api.addr, &t1).await["ok"], true);
    // ...and one of the new key does not against the old JWKS.
    assert_eq!(
        send(before.api.addr, &t2).await["code"],
        "ERR_JWKS_NO_MATCHING_KEY"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_assertion_is_refused_for_another_request() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir, "k.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let s = setup(&format!("key = \"file:{key}\"\nbind_request = true")).await;
    let mut c = s.gate.client();
    login(&mut c, "alice", &[]).await;
    let v = c.get("/api/a?q=1").await.json();
    assert_eq!(v["ok"], true, "{v}");
    let claims = &v["claims"];
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["htu"], v["url"]);
    let htu = claims["htu"].as_str().unwrap();
    assert!(
        htu.starts_with("http://") && htu.ends_with("/api/a"),
        "{htu}"
    );
    let host = htu["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let token = v["token"].as_str().unwrap().to_string();

    let replay = |method: &'static str, path: &'static str| {
        let (api, token, host) = (s.api.addr, token.clone(), host.clone());
        async move {
            raw(
                api,
                method,
                path,
                &[
                    ("Host", &host),
                    ("X-Forwarded-Proto", "http"),
                    ("X-Session-Assertion", &token),
                ],
            )
            .await
            .json()
        }
    };
    assert_eq!(replay("GET", "/api/a").await["ok"], true, "the control");
    assert_eq!(
        replay("GET", "/api/b").await["code"],
        "ERR_REQUEST_MISMATCH"
    );
    assert_eq!(
        replay("DELETE", "/api/a").await["code"],
        "ERR_REQUEST_MISMATCH"
    );

    // Bound assertions are signed per request.
    let next = c.get("/api/a").await.json();
    assert_ne!(next["claims"]["jti"], claims["jti"]);
}

#[test]
fn config_errors_name_the_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir, "k.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let rsa = dir.path().join("rsa.pem");
    std::fs::write(
        &rsa,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let base = "[session]\nsecrets = [\"a long enough secret\"]\n\n[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:1\"]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\nauth = \"required\"\n\n[identity.assertion]\nissuer = \"https://gate\"\n";
    let parse = |extra: &str| {
        sessiongate::Config::parse(&format!("{base}{extra}"), "p.toml", &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(parse(&format!("key = \"file:{key}\"")), Ok(()));
    let err = |extra: &str| parse(extra).unwrap_err();
    assert!(err("").contains("identity.assertion.key"), "{}", err(""));
    let e = err(&format!("key = \"file:{}\"", rsa.display()));
    assert!(e.starts_with("p.toml:15: identity.assertion.key"), "{e}");
    let e = err(&format!("key = \"file:{key}\"\nkeys = [\"file:{key}\"]"));
    assert!(e.contains("not both"), "{e}");
    let e = err(&format!("keys = [\"file:{key}\", \"file:/nonexistent\"]"));
    assert!(e.contains("identity.assertion.keys[1]"), "{e}");
    let e = err(&format!(
        "key = \"file:{key}\"\nclaims = {{ sub = \"/user\" }}"
    ));
    assert!(e.contains("identity.assertion.claims.sub"), "{e}");
    let e = err(&format!("key = \"file:{key}\"\nttl = \"1s\""));
    assert!(e.contains("identity.assertion.ttl"), "{e}");
    let e = err(&format!("key = \"file:{key}\"\nsecret = 1"));
    assert!(e.contains("secret"), "{e}");
}
