//! Identity headers: client spoofs never reach an upstream, in any spelling, on any route;
//! real values are injected from the session.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::harness::*;
use crate::interop_harness::{NodeEcho, Python};

const SPOOFS: &[(&str, &str)] = &[
    ("X-User", "root"),
    ("x_user", "root"),
    ("X_USER", "root"),
    ("x-user-roles", "admin"),
    ("X_User_Roles", "admin"),
    ("X-Session-Issue", "{\"user\":\"root\"}"),
    ("x_session_destroy", "1"),
];

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();

    for path in ["/public/x", "/maybe/x"] {
        let r = raw(gate.addr, "GET", path, SPOOFS).await;
        assert_eq!(r.status, 200);
        let seen = r.json()["headers"].clone();
        for (name, _) in SPOOFS {
            assert!(
                seen.get(name.to_ascii_lowercase()).is_none(),
                "{name} reached the upstream on {path}: {seen}"
            );
        }
    }

    let mut c = gate.client();
    login(&mut c, "alice", &["reader"]).await;
    let r = c.send("GET", "/account/", SPOOFS).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-user").as_deref(),
        Some("alice"),
        "one value, the real one"
    );
    assert_eq!(r.upstream_header("x-user-roles").as_deref(), Some("reader"));
    let seen = r.json()["headers"].clone();
    for name in [
        "x_user",
        "x_user_roles",
        "x-session-issue",
        "x_session_destroy",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the upstream: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_values_become_header_text() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .identity(r#""X-User-Id" = "/id""#)
            .identity(r#""X-Admin" = "/admin""#)
            .identity(r#""X-Email" = "/profile/email""#)
            .identity(r#""X-Profile" = "/profile""#)
            .identity(r#""X-Missing" = "/nope""#),
        &[&app],
    )
    .start();
    let pair = plant_session(
        &redis,
        SECRET,
        "ValuesSession0123456789abcdefABC",
        json!({"user": "bob", "roles": ["a", "b", 3], "id": 42, "admin": false, "profile": {"email": "bob@example.com"}}),
        None,
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("bob"));
    assert_eq!(r.upstream_header("x-user-roles").as_deref(), Some("a,b,3"));
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("42"));
    assert_eq!(r.upstream_header("x-admin").as_deref(), Some("false"));
    assert_eq!(
        r.upstream_header("x-email").as_deref(),
        Some("bob@example.com")
    );
    assert_eq!(r.upstream_header("x-profile"), None, "objects are not sent");
    assert_eq!(r.upstream_header("x-missing"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn values_with_control_characters_are_encoded_never_injected() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let pair = plant_session(
        &redis,
        SECRET,
        "CrlfSession0123456789abcdefABCDE",
        json!({"user": "mallory\r\nX-Admin: true", "roles": ["ok\u{7}"]}),
        None,
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-user").as_deref(),
        Some("mallory%0D%0AX-Admin: true")
    );
    assert_eq!(r.upstream_header("x-user-roles").as_deref(), Some("ok%07"));
    assert_eq!(r.upstream_header("x-admin"), None);
}

/// A gate on `redis` whose `/node/` goes to Node's `http` and `/py/` to Python's
/// `http.server`, both `required`, with `X-User` from `/user` and `X-User-Roles` from
/// `/roles`.
fn gate_before_node_and_python(redis: &Redis, node: &NodeEcho, python: &Python) -> Gate {
    GateBuilder::new()
        .redis(redis)
        .admin(ADMIN)
        .upstream_addrs("node", &[node.addr])
        .upstream_addrs("python", &[python.addr])
        .route("path = \"/node/\"\nupstream = \"node\"\nauth = \"optional\"")
        .route("path = \"/py/\"\nupstream = \"python\"\nauth = \"optional\"")
        .route("path = \"/\"\nupstream = \"node\"\nauth = \"public\"")
        .start()
}

const ADMIN: &str = "identity-admin-token";

/// Splits a header as an upstream would and percent-decodes each item.
fn decode(header: &str) -> Vec<String> {
    if header.is_empty() {
        return Vec::new();
    }
    header
        .split(',')
        .map(|item| {
            percent_encoding::percent_decode_str(item)
                .decode_utf8()
                .unwrap_or_else(|e| panic!("{item:?} is not UTF-8 once decoded: {e}"))
                .into_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_never_reach_node_as_the_same_identity() {
    let redis = Redis::start();
    let (node, python) = (NodeEcho::start(), Python::start("python"));
    let gate = gate_before_node_and_python(&redis, &node, &python);
    let users = [
        "alice", "alice ", "  alice", "alice\t", "al ice", "ALICE", "alicé",
    ];
    let mut seen = std::collections::HashMap::new();
    for (i, user) in users.iter().enumerate() {
        let pair = plant_session(
            &redis,
            SECRET,
            &format!("IdentitySession{i:017}"),
            json!({"user": user, "roles": ["reader,admin"]}),
            None,
        );
        let r = raw(gate.addr, "GET", "/node/", &[("cookie", &pair)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let headers = &r.json()["headers"];
        let x_user = headers["x-user"].as_str().expect("X-User reached node");
        if let Some(other) = seen.insert(x_user.to_owned(), *user) {
            panic!("{other:?} and {user:?} both reach node as X-User: {x_user:?}");
        }
        assert_eq!(decode(x_user), [*user], "decodes to the session's value");
        let roles = headers["x-user-roles"]
            .as_str()
            .expect("roles reached node");
        assert_eq!(
            decode(roles),
            ["reader,admin"],
            "one role, not two: {roles:?}"
        );
    }
    let pair = plant_session(
        &redis,
        SECRET,
        "IdentitySessionTwoRoles000000000",
        json!({"user": "bob", "roles": ["reader", "admin"]}),
        None,
    );
    let r = raw(gate.addr, "GET", "/node/", &[("cookie", &pair)]).await;
    assert_eq!(r.json()["headers"]["x-user-roles"], "reader,admin");
}

/// What an upstream must decode an identity header back to, item by item; `None`: the
/// value has no header form and the header must be absent.
fn expected_items(v: &Value) -> Option<Vec<Value>> {
    let item_ok = |i: &Value| match i {
        Value::String(_) | Value::Bool(_) => true,
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.unsigned_abs() < 1 << 53,
            (None, Some(_), _) => false,
            (None, None, Some(f)) => f.fract() != 0.0 || f.abs() < 9007199254740992.0,
            _ => false,
        },
        _ => false,
    };
    match v {
        Value::Array(items) if items == &[json!("")] => None,
        Value::Array(items) => items.iter().all(item_ok).then(|| items.clone()),
        scalar => item_ok(scalar).then(|| vec![scalar.clone()]),
    }
}

/// Whether an item an upstream decoded is exactly the session's item.
fn same_item(decoded: &str, item: &Value) -> bool {
    match item {
        Value::String(s) => decoded == s,
        Value::Bool(b) => decoded == b.to_string(),
        Value::Number(n) => decoded.parse::<f64>().ok() == n.as_f64(),
        _ => false,
    }
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        // Whitespace, separators, escapes, controls and non-ASCII, where parsers go wrong.
        "[ a-z,%;\"\t\u{1}\u{7f}é€😀]{0,8}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => json_scalar(),
        2 => prop::collection::vec(json_scalar(), 0..4).prop_map(Value::from),
        1 => Just(json!({"nested": 1})),
        1 => Just(json!([["nested"]])),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_identity_value_reads_back_exactly_at_node_and_python_or_is_absent() {
    let redis = Redis::start();
    let (node, python) = (NodeEcho::start(), Python::start("python"));
    let gate = gate_before_node_and_python(&redis, &node, &python);
    let handle = tokio::runtime::Handle::current();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let n = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&json_value(), |value| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pair = plant_session(
            &redis,
            SECRET,
            &format!("PropertySession{i:017}"),
            json!({"user": value.clone()}),
            None,
        );
        let expected = expected_items(&value);
        for path in ["/node/", "/py/"] {
            let r = tokio::task::block_in_place(|| {
                handle.block_on(raw(gate.addr, "GET", path, &[("cookie", &pair)]))
            });
            prop_assert_eq!(r.status, 200);
            let header = r.json()["headers"]["x-user"].as_str().map(str::to_owned);
            match (&expected, header) {
                (None, None) => {}
                (None, Some(h)) => {
                    prop_assert!(false, "{value} has no header form, yet {path} read {h:?}")
                }
                (Some(_), None) => prop_assert!(false, "{value} was not sent to {path}"),
                // The empty string is the one text whose header is empty, as the empty list's.
                (Some(items), Some(h)) if h.is_empty() && value == json!("") => {
                    prop_assert_eq!(items.len(), 1);
                }
                (Some(items), Some(h)) => {
                    let decoded = decode(&h);
                    prop_assert_eq!(
                        decoded.len(),
                        items.len(),
                        "{} read {:?} for {}",
                        path,
                        h,
                        value
                    );
                    for (d, item) in decoded.iter().zip(items) {
                        prop_assert!(same_item(d, item), "{} read {:?} for {}", path, h, value);
                    }
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
