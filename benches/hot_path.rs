//! Micro-benches of the gate's per-request work, through the library's public API:
//!
//! - `cookie`: find the session cookie in a browser's `Cookie` header, percent-decode it and
//!   verify the signature, with 1 secret and with 3 (the cookie signed by the last one: the
//!   worst case, every key is tried anyway so timing does not tell which matched);
//! - `route`: normalise the request path and match it against 100 routes;
//! - `identity`: strip every spelling of the identity headers from a realistic request and
//!   inject the real ones from a parsed session;
//! - `cross_origin`: the cross-origin check on a browser's request with the session cookie
//!   (read the request, then the rule), for a GET, a same-origin POST, a forged POST, a
//!   WebSocket handshake.
//!
//! Run: `cargo bench -p sessiongate-benches --bench hot_path` (add a filter such as `cookie`
//! after `--` to run one group).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderName, Method};
use pingora::http::RequestHeader;
use serde_json::{json, Map, Value};

use sessiongate::hot_path::{
    cross_origin_check, decode_value, encode_value, normalize_path, values, AuthMode, CookiePolicy,
    CrossOrigin, CrossOriginRequest, HostPattern, Identity, IdentitySettings, MemoryStore, Origin,
    Policy, Route, RouteTable, SameSite, Secure, SessionRecord, Signer, Verdict,
};
use sessiongate::{Config, Sessions};

const COOKIE_NAME: &str = "connect.sid";
const SID: &str = "W0kENn_GtXvdsJHGxCQISK4wiBiX30Ab";

/// A browser's Cookie header: analytics and consent cookies around the session cookie.
fn cookie_header(session_value: &str) -> String {
    format!(
        "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; \
         cookieconsent_status=dismiss; {COOKIE_NAME}={session_value}; theme=dark; \
         _hjSessionUser_123456=eyJpZCI6IjEyMzQ1Njc4LTkwYWItY2RlZi0xMjM0LTU2Nzg5MGFiY2RlZiJ9"
    )
}

/// The gate's session service with these secrets (the first signs), on the embedded store:
/// its `credential` is what the proxy calls on every protected request.
fn sessions(secrets: &[&str]) -> Sessions {
    let quoted: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
    let toml = format!(
        "[session]\nsecrets = [{}]\n[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"required\"\n",
        quoted.join(", ")
    );
    let config = Config::parse(&toml, "bench.toml", &|_| None).unwrap();
    Sessions::new(config.session, std::sync::Arc::new(MemoryStore::new()))
}

/// A GET carrying this Cookie header.
fn with_cookie(header: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/account/", None).unwrap();
    req.insert_header("cookie", header).unwrap();
    req
}

/// What the gate does with a Cookie header: every value of the session cookie, decoded and
/// verified (two different valid ones would count as none, so all are looked at).
fn verify(sessions: &Sessions, req: &RequestHeader) -> Option<String> {
    sessions.credential(req).map(|c| c.sid)
}

fn cookie(c: &mut Criterion) {
    let names = [
        "the current secret, 32 bytes long",
        "the previous secret, rotated last month",
        "the secret before that one",
    ];
    let secrets: Vec<Vec<u8>> = names.iter().map(|s| s.as_bytes().to_vec()).collect();
    let one = Signer::new(&secrets[..1]);
    let three = Signer::new(&secrets);
    let (one_service, three_service) = (sessions(&names[..1]), sessions(&names));
    // Signed by the first secret for the 1-secret case, by the LAST of three for the worst case.
    let by_first = cookie_header(&encode_value(&one.sign(SID)));
    let by_last = cookie_header(&encode_value(&Signer::new(&secrets[2..]).sign(SID)));
    let forged = cookie_header(&encode_value(&format!("s:{SID}.{}", "A".repeat(43))));
    let (by_first, by_last, forged) = (
        with_cookie(&by_first),
        with_cookie(&by_last),
        with_cookie(&forged),
    );
    assert_eq!(verify(&one_service, &by_first).as_deref(), Some(SID));
    assert_eq!(verify(&three_service, &by_last).as_deref(), Some(SID));
    assert_eq!(verify(&three_service, &forged), None);

    let mut g = c.benchmark_group("cookie");
    g.throughput(Throughput::Elements(1));
    let header = by_first
        .headers
        .get("cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            values(black_box(&header), COOKIE_NAME)
                .filter_map(decode_value)
                .count()
        })
    });
    g.bench_function("parse_verify/1_secret", |b| {
        b.iter(|| verify(&one_service, black_box(&by_first)))
    });
    g.bench_function("parse_verify/3_secrets_signed_by_last", |b| {
        b.iter(|| verify(&three_service, black_box(&by_last)))
    });
    g.bench_function("parse_verify/3_secrets_forged", |b| {
        b.iter(|| verify(&three_service, black_box(&forged)))
    });
    g.bench_function("unsign/1_secret", |b| {
        let v = one.sign(SID);
        b.iter(|| one.unsign(black_box(&v)).is_some())
    });
    g.bench_function("unsign/3_secrets_signed_by_last", |b| {
        let v = Signer::new(&secrets[2..]).sign(SID);
        b.iter(|| three.unsign(black_box(&v)).is_some())
    });
    g.finish();
}

fn route(prefix: &str, host: Option<&str>, methods: Option<Vec<Method>>) -> Route {
    Route {
        prefix: prefix.trim_end_matches('/').into(),
        host: host.map(|h| HostPattern::parse(h).unwrap()),
        methods,
        upstream: Some(0),
        auth: AuthMode::Required,
        login_redirect: None,
        issue_sessions: false,
        method_override: false,
        strip_session_cookie: false,
        audience: "app".into(),
        cross_origin: None,
    }
}

/// 100 routes the way a mid-sized site has them: a catch-all, per-service API prefixes with
/// versions, some host-bound (`*.example.com` tenants), some method-bound.
fn hundred_routes() -> Vec<Route> {
    let mut routes = vec![route("/", None, None)];
    for i in 0..99 {
        let r = match i % 4 {
            0 => route(&format!("/svc{i}/v1/"), None, None),
            1 => route(&format!("/svc{i}/v2/items/"), None, None),
            2 => route(&format!("/api/svc{i}/"), Some("*.example.com"), None),
            _ => route(
                &format!("/account/section{i}/"),
                None,
                Some(vec![Method::GET, Method::POST]),
            ),
        };
        routes.push(r);
    }
    assert_eq!(routes.len(), 100);
    routes
}

/// `n` routes: a catch-all, then per tenant (`tenantK.example.com`) its API, its admin
/// (POST and DELETE only) and its pages, and every fourth tenant's API on a `*.` pattern.
fn tenant_routes(n: usize) -> Vec<Route> {
    let mut routes = vec![route("/", None, None)];
    let mut k = 0;
    while routes.len() < n {
        let host = format!("tenant{k}.example.com");
        routes.push(route(&format!("/t{k}/api/"), Some(&host), None));
        routes.push(route(
            &format!("/t{k}/admin/"),
            Some(&host),
            Some(vec![Method::POST, Method::DELETE]),
        ));
        routes.push(route(&format!("/t{k}/pages/"), Some(&host), None));
        if k % 4 == 0 {
            routes.push(route(
                &format!("/t{k}/api/"),
                Some(&format!("*.t{k}.example.com")),
                None,
            ));
        }
        k += 1;
    }
    routes.truncate(n);
    routes
}

fn routing(c: &mut Criterion) {
    let table = RouteTable::new(hundred_routes(), false);
    let host = Some("tenant.example.com");
    // A hit deep in the table, a hit after a messy spelling, and a miss that falls through
    // every route to the catch-all (the worst case: all 100 are tried).
    let cases = [
        ("hit", "/svc41/v2/items/12345/details"),
        ("hit_messy", "/svc41/./v2//items/%31%32345/../12345/details"),
        ("catch_all", "/static/app.3f9a1c.js"),
    ];
    for (_, raw) in &cases {
        let p = normalize_path(raw).unwrap();
        assert!(table.find(host, &Method::GET, &p.matched).is_some());
    }

    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for (name, raw) in &cases {
        g.bench_function(format!("normalize/{name}"), |b| {
            b.iter(|| normalize_path(black_box(raw)).unwrap())
        });
        let decoded = normalize_path(raw).unwrap().matched;
        g.bench_function(format!("find_100/{name}"), |b| {
            b.iter(|| table.find(black_box(host), &Method::GET, black_box(&decoded)))
        });
        g.bench_function(format!("normalize+find_100/{name}"), |b| {
            b.iter(|| {
                let p = normalize_path(black_box(raw)).unwrap();
                table.find(black_box(host), &Method::GET, &p.matched)
            })
        });
    }
    // The same lookups in tables of 10 to 10,000 routes, as a multi-tenant setup has them
    // (each tenant a host with a few prefixes of its own): the cost must not grow with them.
    for n in [10usize, 100, 1_000, 10_000] {
        let table = RouteTable::new(tenant_routes(n), false);
        let tenant = format!("tenant{}.example.com", n / 8);
        let hit = format!("/t{}/api/items/7", n / 8);
        assert!(table.find(Some(&tenant), &Method::GET, &hit).unwrap() > 0);
        g.bench_function(format!("find_tenants_{n}/hit"), |b| {
            b.iter(|| {
                table.find(
                    black_box(Some(tenant.as_str())),
                    &Method::GET,
                    black_box(&hit),
                )
            })
        });
        g.bench_function(format!("find_tenants_{n}/catch_all"), |b| {
            b.iter(|| {
                table.find(
                    black_box(Some("unknown.example.org")),
                    &Method::GET,
                    black_box("/static/app.3f9a1c.js"),
                )
            })
        });
    }
    g.bench_function("table_build_100", |b| {
        b.iter_batched(
            hundred_routes,
            |r| RouteTable::new(r, false),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A browser's GET, plus two identity headers a client tried to forge in other spellings.
fn browser_request() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/api/orders?page=2", None).unwrap();
    for (k, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://app.example.com/orders"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-origin"),
        ("connection", "keep-alive"),
        ("cookie", &cookie_header("s%3Aabc.def")),
        ("X_User", "mallory"),
        ("x-user-roles", "admin"),
    ] {
        req.append_header(k.to_string(), v).unwrap();
    }
    req
}

fn identity(c: &mut Criterion) {
    let identity = Identity::new(&IdentitySettings {
        headers: vec![
            (HeaderName::from_static("x-user"), "/user".into()),
            (HeaderName::from_static("x-user-roles"), "/roles".into()),
            (
                HeaderName::from_static("x-user-email"),
                "/profile/email".into(),
            ),
        ],
        strip: vec!["x-forwarded-user".into(), "x-remote-user".into()],
        assertion: None,
    });
    let mut fields = Map::new();
    fields.insert("user".into(), json!("alice"));
    fields.insert("roles".into(), json!(["admin", "reader", "billing"]));
    fields.insert(
        "profile".into(),
        json!({"email": "alice@example.com", "name": "Alice"}),
    );
    fields.insert(
        "cart".into(),
        Value::Array((0..5).map(|i| json!({"sku": i, "qty": 1})).collect()),
    );
    let cookie = CookiePolicy {
        path: "/".into(),
        domain: None,
        http_only: true,
        secure: Secure::Auto,
        same_site: Some(SameSite::Lax),
        max_age: Some(Duration::from_secs(1800)),
    };
    let json = SessionRecord::new(fields, &cookie, false, SystemTime::now()).to_json();
    let session = SessionRecord::parse(&json).unwrap();

    let template = browser_request();
    let mut check = template.clone();
    identity.strip_request(&mut check, false);
    identity.inject(&session, &mut check);
    assert_eq!(check.headers.get("x-user").unwrap(), "alice");
    assert_eq!(
        check.headers.get("x-user-roles").unwrap(),
        "admin,reader,billing"
    );
    assert_eq!(
        check.headers.get("x-user-email").unwrap(),
        "alice@example.com"
    );
    assert!(check.headers.get("x_user").is_none());

    let mut g = c.benchmark_group("identity");
    g.throughput(Throughput::Elements(1));
    g.bench_function("session_parse", |b| {
        b.iter(|| SessionRecord::parse(black_box(&json)).unwrap())
    });
    g.bench_function("strip", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |req| identity.strip_request(req, false),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("inject", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |req| identity.inject(&session, req),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("strip+inject", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |req| {
                identity.strip_request(req, false);
                identity.inject(&session, req);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// `[identity.assertion]`: signing per request (ES256, EdDSA; what `bind_request` costs), and
/// the cached lookup an unbound assertion takes on a session's later requests.
fn assertion(c: &mut Criterion) {
    use sessiongate::hot_path::{AssertionSettings, Assertions, Binding, SigningKey};
    let session = SessionRecord::parse(
        &serde_json::json!({"cookie": {"originalMaxAge": 3600000}, "user": "alice",
            "roles": ["reader", "admin"], "email": "alice@example.com"})
        .to_string(),
    )
    .unwrap();
    let request = Binding {
        method: "GET",
        url: "https://app.example.com/api/items/42",
    };
    let sid = "Xy3kq0b1cC9gq4yN0kZr1l2m3n4o5p6q";
    let mut g = c.benchmark_group("assertion");
    g.throughput(Throughput::Elements(1));
    for (name, alg) in [
        ("es256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("eddsa", &rcgen::PKCS_ED25519),
    ] {
        let pem = rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
        let assertions = |bind_request| {
            Assertions::new(AssertionSettings {
                header: http::HeaderName::from_static("x-session-assertion"),
                keys: vec![SigningKey::from_pem(pem.as_bytes()).unwrap()],
                issuer: "https://gate.example.com".into(),
                ttl: Duration::from_secs(60),
                claims: vec![
                    ("roles".into(), "/roles".into()),
                    ("email".into(), "/email".into()),
                ],
                bind_request,
            })
        };
        let bound = assertions(true);
        g.bench_function(format!("sign/{name}"), |b| {
            b.iter(|| {
                bound
                    .assertion(black_box(sid), &session, "user", "app", &request)
                    .unwrap()
            })
        });
        let unbound = assertions(false);
        unbound
            .assertion(sid, &session, "user", "app", &request)
            .unwrap();
        g.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| {
                unbound
                    .assertion(black_box(sid), &session, "user", "app", &request)
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// The cross-origin check as the proxy makes it: read the request (is the session cookie
/// there, which authority), then the rule, with one trusted origin configured.
fn cross_origin(c: &mut Criterion) {
    let settings = CrossOrigin {
        policy: Policy::Refuse,
        trusted: vec![Origin::parse("https://partner.example.com").unwrap()],
    };
    let get = browser_request();
    let with = |method: &str, extra: &[(&str, &str)]| {
        let mut req = browser_request();
        req.set_method(Method::from_bytes(method.as_bytes()).unwrap());
        req.remove_header("sec-fetch-site");
        for (k, v) in extra {
            req.insert_header(k.to_string(), *v).unwrap();
        }
        req
    };
    let same_origin = with(
        "POST",
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://app.example.com"),
        ],
    );
    let origin_only = with("POST", &[("origin", "https://app.example.com")]);
    let forged = with(
        "POST",
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://blog.example.com"),
        ],
    );
    let websocket = with(
        "GET",
        &[
            ("upgrade", "websocket"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://app.example.com"),
        ],
    );
    let mut g = c.benchmark_group("cross_origin");
    for (name, req, expected) in [
        ("get", &get, true),
        ("post_same_origin", &same_origin, true),
        ("post_origin_only", &origin_only, true),
        ("post_forged", &forged, false),
        ("websocket", &websocket, true),
    ] {
        let run = || {
            let r = CrossOriginRequest::read(black_box(req), None, true, COOKIE_NAME);
            cross_origin_check(&r, &settings.trusted)
        };
        assert_eq!(run() == Verdict::Pass, expected, "{name}");
        g.bench_function(name, |b| b.iter(run));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots();
    targets = cookie, routing, identity, assertion, cross_origin
}
criterion_main!(benches);
