//! The attack suite: every route-bypass class an audit found, in several spellings, against
//! real upstreams that read requests leniently (the Python backend reads paths like a servlet
//! container that also decodes twice, targets like Werkzeug, methods in any case, overrides
//! and forwarded hosts like a framework that trusts its proxy; express 5 with `trust proxy`).
//! Each test asserts that the upstream never served a protected resource without the
//! identity the gate injects, whatever the gate answered.
//!
//! Longer than other modules on purpose: one table-like test per attack class, each listing
//! its spellings, so that a reader sees every known bypass in one place (SECURITY.md links
//! here).

use serde_json::Value;

use crate::harness::*;
use crate::interop_harness::{Express, Python};

/// Routes over one lenient backend, `app`:
/// `/account/` and `/reports/` (GET only) required; `admin.example.com` required;
/// `/api/` public for GET and POST, required for DELETE; `/forms/` public with
/// `method_override`; `/` public.
fn lenient_gate(python: &Python, b: GateBuilder) -> Gate {
    b.upstream_addrs("app", &[python.addr])
        .route("path = \"/account/\"\nupstream = \"app\"\nauth = \"required\"")
        .route("path = \"/reports/\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = \"required\"")
        .route("path = \"/\"\nhost = \"admin.example.com\"\nupstream = \"app\"\nauth = \"required\"")
        .route("path = \"/api/\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\nauth = \"public\"")
        .route("path = \"/api/\"\nmethods = [\"DELETE\"]\nupstream = \"app\"\nauth = \"required\"")
        .route("path = \"/forms/\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\nauth = \"public\"\nmethod_override = true")
        .route("path = \"/\"\nupstream = \"app\"\nauth = \"public\"")
        .start()
}

/// What the backend served, as it read each request.
async fn seen(python: &Python) -> Vec<Value> {
    let r = raw(python.addr, "GET", "/__seen", &[]).await;
    r.json().as_array().unwrap().clone()
}

/// Whether the backend served `s` as a resource the gate protects.
fn protected(s: &Value) -> bool {
    let path = s["path"].as_str().unwrap().to_ascii_lowercase();
    let method = s["method"].as_str().unwrap();
    path.starts_with("/account")
        || path.starts_with("/reports")
        || s["host"] == "admin.example.com"
        || (path.starts_with("/api") && method == "DELETE")
}

/// Sends each request (a request line and headers, `\r\n`-separated) and checks that the
/// gate answered `expect` and the backend never served a protected resource anonymously.
async fn assert_never_served(gate: &Gate, python: &Python, expect: u16, requests: &[&str]) {
    for request in requests {
        let bytes = format!("{request}\r\nConnection: close\r\n\r\n");
        let r = raw_bytes(gate.addr, bytes.as_bytes()).await;
        assert_eq!(
            r.status, expect,
            "{request:?} answered {}: {}",
            r.status, r.body
        );
    }
    for s in seen(python).await {
        assert!(
            !(protected(&s) && s["user"].is_null()),
            "the backend served a protected resource without a session: {s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn path_parameters_never_reach_a_protected_resource() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    assert_never_served(
        &gate,
        &python,
        400,
        &[
            "GET /account;jsessionid=x/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /account%3Bx/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /account%3bx/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /account;/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /ACCOUNT;a=b;c=d/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /%61ccount;x/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /public/..;/account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /;x/account/secret HTTP/1.1\r\nHost: www.example.com",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stripped_and_kept_parameters_are_routed_on_the_path_without_them() {
    for mode in ["strip", "keep"] {
        let python = Python::start("lenient");
        let gate = lenient_gate(
            &python,
            GateBuilder::new().server(&format!("path_parameters = \"{mode}\"")),
        );
        assert_never_served(
            &gate,
            &python,
            401,
            &[
                "GET /account;jsessionid=x/secret HTTP/1.1\r\nHost: www.example.com",
                "GET /account%3Bx/secret HTTP/1.1\r\nHost: www.example.com",
                "GET /account;/secret HTTP/1.1\r\nHost: www.example.com",
            ],
        )
        .await;
        // A public path keeps working, and never carries a `;` the client encoded.
        let r = raw_bytes(
            gate.addr,
            b"GET /docs;v=1/a%3Bb HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 200, "{mode}");
        let want = if mode == "strip" {
            "/docs/a"
        } else {
            "/docs;v=1/a%3Bb"
        };
        assert_eq!(r.json()["path"], want, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn double_encoded_separators_are_refused() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    assert_never_served(
        &gate,
        &python,
        400,
        &[
            "GET /public/%252e%252e/account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /public/%252E%252E/account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /account%252fsecret HTTP/1.1\r\nHost: www.example.com",
            "GET /public%255c..%255caccount/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /account%253bx/secret HTTP/1.1\r\nHost: www.example.com",
            "GET /public/%25252e%25252e/account/secret HTTP/1.1\r\nHost: www.example.com",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_targets_that_are_not_origin_or_absolute_form_are_refused() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    assert_never_served(
        &gate,
        &python,
        400,
        &[
            "GET x:/account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET javascript:/account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET ftp://www.example.com/account/secret HTTP/1.1\r\nHost: www.example.com",
            "GET * HTTP/1.1\r\nHost: www.example.com",
        ],
    )
    .await;
    // Absolute-form is routed on its path, and the upstream gets origin-form.
    let r = raw_bytes(
        gate.addr,
        b"GET http://www.example.com/account/secret HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = raw_bytes(
        gate.addr,
        b"GET http://www.example.com/docs/a?b=1 HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.json()["path"], "/docs/a?b=1");
    let r = raw_bytes(
        gate.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "OPTIONS * is the gate's to answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_routed_on_is_the_host_the_upstream_sees() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    // An absolute-form target names its host: no Host header falls through to host-less rules.
    assert_never_served(
        &gate,
        &python,
        401,
        &[
            "GET http://admin.example.com/secret HTTP/1.1",
            "GET http://ADMIN.example.com:80/secret HTTP/1.1",
            "GET https://admin.example.com./secret HTTP/1.1",
        ],
    )
    .await;
    assert_never_served(
        &gate,
        &python,
        400,
        &[
            "GET /secret HTTP/1.1\r\nHost: admin.example.com:80:80",
            "GET /secret HTTP/1.1\r\nHost: www.example.com:80:admin.example.com",
            "GET /secret HTTP/1.1\r\nHost: www.example.com:x",
            "GET /secret HTTP/1.1\r\nHost: www.example.com\r\nHost: admin.example.com",
            "GET /secret HTTP/1.1\r\nHost: www.example.com/admin.example.com",
            "GET /secret HTTP/1.1",
        ],
    )
    .await;
    // Forwarded hosts from the client are removed, in every spelling.
    assert_never_served(
        &gate,
        &python,
        200,
        &[
            "GET /secret HTTP/1.1\r\nHost: www.example.com\r\nX-Forwarded-Host: admin.example.com",
            "GET /secret HTTP/1.1\r\nHost: www.example.com\r\nX_Forwarded_Host: admin.example.com",
            "GET /secret HTTP/1.1\r\nHost: www.example.com\r\nForwarded: for=1.2.3.4;host=admin.example.com",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn express_with_trust_proxy_never_sees_a_client_forwarded_host() {
    let redis = Redis::start();
    let express = Express::builder(&redis)
        .secrets(&[SECRET])
        .trust_proxy()
        .start();
    let gate = GateBuilder::new()
        .redis(&redis)
        .upstream_addrs("express", &[express.addr])
        .route("path = \"/\"\nhost = \"admin.example.com\"\nupstream = \"express\"\nauth = \"required\"")
        .route("path = \"/\"\nupstream = \"express\"\nauth = \"public\"")
        .start();
    for header in ["X-Forwarded-Host", "x_forwarded_host"] {
        let r = raw(
            gate.addr,
            "GET",
            "/whoami",
            &[("host", "www.example.com"), (header, "admin.example.com")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["hostname"], "www.example.com", "{header}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_are_matched_as_upstreams_read_them() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    assert_never_served(
        &gate,
        &python,
        400,
        &[
            "Delete /api/items/1 HTTP/1.1\r\nHost: www.example.com",
            "delete /api/items/1 HTTP/1.1\r\nHost: www.example.com",
            "DeLeTe /api/items/1 HTTP/1.1\r\nHost: www.example.com",
            "get /reports/q3 HTTP/1.1\r\nHost: www.example.com",
        ],
    )
    .await;
    // HEAD goes wherever GET goes.
    assert_never_served(
        &gate,
        &python,
        401,
        &["HEAD /reports/q3 HTTP/1.1\r\nHost: www.example.com"],
    )
    .await;
    // Overrides are removed on routes that did not opt in.
    assert_never_served(
        &gate,
        &python,
        200,
        &[
            "POST /api/items/1 HTTP/1.1\r\nHost: www.example.com\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0",
            "POST /api/items/1 HTTP/1.1\r\nHost: www.example.com\r\nX-HTTP-Method: DELETE\r\nContent-Length: 0",
            "POST /api/items/1 HTTP/1.1\r\nHost: www.example.com\r\nX-Method-Override: DELETE\r\nContent-Length: 0",
            "POST /api/items/1 HTTP/1.1\r\nHost: www.example.com\r\nx_http_method_override: DELETE\r\nContent-Length: 0",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_that_opts_into_method_override_keeps_it_within_the_route() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    let r = raw_bytes(
        gate.addr,
        b"POST /forms/a HTTP/1.1\r\nHost: www.example.com\r\nX-HTTP-Method-Override: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-http-method-override"], "GET");
    // A method this route does not serve would be another rule's business: refused.
    assert_never_served(
        &gate,
        &python,
        400,
        &[
            "POST /forms/a HTTP/1.1\r\nHost: www.example.com\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0",
            "POST /forms/a HTTP/1.1\r\nHost: www.example.com\r\nX-HTTP-Method-Override: get\r\nContent-Length: 0",
        ],
    )
    .await;
}

/// A request to express (`method-override` reading the `_method` query key, then the
/// `_method` field of urlencoded and multipart bodies) through a gate where `/mo/items/` is
/// public for POST and required for DELETE, and `/mo/forms/` opts into overrides for GET,
/// POST and PUT.
async fn send_to_express(gate: &Gate, head: &str, body: &[u8]) -> Response {
    let mut request = format!(
        "{head}\r\nHost: www.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw_bytes(gate.addr, &request).await
}

fn multipart(fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--B0undary\r\nContent-Disposition: form-data; {name}\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(b"--B0undary--\r\n");
    ("multipart/form-data; boundary=B0undary".into(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn method_overrides_in_the_query_and_the_body_never_move_a_request_to_another_route() {
    let redis = Redis::start();
    let express = Express::builder(&redis).secrets(&[SECRET]).start();
    let gate = GateBuilder::new()
        .redis(&redis)
        .upstream_addrs("express", &[express.addr])
        .route("path = \"/mo/items/\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"express\"\nauth = \"public\"")
        .route("path = \"/mo/items/\"\nmethods = [\"DELETE\"]\nupstream = \"express\"\nauth = \"required\"")
        .route("path = \"/mo/forms/\"\nmethods = [\"GET\", \"POST\", \"PUT\"]\nupstream = \"express\"\nauth = \"public\"\nmethod_override = true")
        .route("path = \"/\"\nupstream = \"express\"\nauth = \"public\"")
        .start();
    let urlencoded = "Content-Type: application/x-www-form-urlencoded";
    let r = send_to_express(&gate, "DELETE /mo/items/7 HTTP/1.1", b"").await;
    assert_eq!(r.status, 401, "a DELETE needs a session");

    // Whatever the gate answers, express never serves a DELETE here without a user.
    let refused = |r: &Response, what: &str| {
        assert!(
            !(r.status == 200 && r.json()["method"] == "DELETE"),
            "express served {what} as a DELETE: {}",
            r.body
        );
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_method", "{what}");
    };
    for query in [
        "_method=DELETE",
        "_METHOD=DELETE",
        "%5Fmethod=DELETE",
        "a=1&_method=DELETE&_method=DELETE",
    ] {
        let r = send_to_express(&gate, &format!("POST /mo/items/7?{query} HTTP/1.1"), b"").await;
        refused(&r, query);
    }
    for body in [
        "_method=DELETE",
        "a=1&_method=DELETE",
        "%5Fmethod=DELETE",
        "_method[]=DELETE",
    ] {
        let r = send_to_express(
            &gate,
            &format!("POST /mo/items/7 HTTP/1.1\r\n{urlencoded}"),
            body.as_bytes(),
        )
        .await;
        refused(&r, body);
    }
    // Far past any buffer: the body is scanned as it streams.
    let long = format!("pad={}&_method=DELETE", "x".repeat(300_000));
    let r = send_to_express(
        &gate,
        &format!("POST /mo/items/7 HTTP/1.1\r\n{urlencoded}"),
        long.as_bytes(),
    )
    .await;
    refused(&r, "a 300 kB body ending in _method");
    let (ty, body) = multipart(&[("name=\"title\"", "hello"), ("name=\"_method\"", "DELETE")]);
    let r = send_to_express(
        &gate,
        &format!("POST /mo/items/7 HTTP/1.1\r\nContent-Type: {ty}"),
        &body,
    )
    .await;
    refused(&r, "a multipart _method field");
    let r = send_to_express(
        &gate,
        &format!("POST /mo/items/7 HTTP/1.1\r\n{urlencoded}\r\nContent-Encoding: gzip"),
        b"\x1f\x8b",
    )
    .await;
    assert_eq!(
        r.status, 415,
        "a compressed form cannot be scanned: {}",
        r.body
    );

    // Forms without an override are served as sent.
    let r = send_to_express(
        &gate,
        &format!("POST /mo/items/7 HTTP/1.1\r\n{urlencoded}"),
        b"title=x",
    )
    .await;
    assert_eq!((r.status, r.json()["method"].as_str()), (200, Some("POST")));
    let (ty, body) = multipart(&[("name=\"file\"; filename=\"_method\"", "_method=DELETE")]);
    let r = send_to_express(
        &gate,
        &format!("POST /mo/items/7 HTTP/1.1\r\nContent-Type: {ty}"),
        &body,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["method"].as_str()),
        (200, Some("POST")),
        "{}",
        r.body
    );

    // A route that opts in keeps its overrides within its own methods.
    let r = send_to_express(&gate, "POST /mo/forms/a?_method=PUT HTTP/1.1", b"").await;
    assert_eq!(
        (r.status, r.json()["method"].as_str()),
        (200, Some("PUT")),
        "{}",
        r.body
    );
    let r = send_to_express(
        &gate,
        &format!("POST /mo/forms/a HTTP/1.1\r\n{urlencoded}"),
        b"_method=PUT",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["method"].as_str()),
        (200, Some("PUT")),
        "{}",
        r.body
    );
    for (head, body) in [
        ("POST /mo/forms/a?_method=DELETE HTTP/1.1".to_owned(), ""),
        ("POST /mo/forms/a?_method=put HTTP/1.1".to_owned(), ""),
        (
            format!("POST /mo/forms/a HTTP/1.1\r\n{urlencoded}"),
            "_method=DELETE",
        ),
    ] {
        let r = send_to_express(&gate, &head, body.as_bytes()).await;
        assert_eq!(r.status, 400, "{head} {body}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn error_bodies_are_generic() {
    let app = Upstream::start("app").await;
    let dead = free_addr();
    let gate = standard(GateBuilder::new(), &[&app])
        .upstream_addrs("gone", &[dead])
        .route("path = \"/gone/\"\nupstream = \"gone\"\nauth = \"public\"")
        .start();
    let r = raw(gate.addr, "GET", "/gone/x", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "bad_gateway", "message": "the upstream is unavailable"})
    );
    for leak in ["127.0.0.1", &dead.port().to_string(), "gone", "connect"] {
        assert!(!r.body.contains(leak), "{leak} in {}", r.body);
    }
    let r = raw(gate.addr, "GET", "/a%2fb", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "bad_path", "message": "the request path is not acceptable"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_directives_on_a_route_that_cannot_issue_are_removed_not_a_502() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    for (param, value) in [
        ("issue", "%5B1%5D"),
        ("update", "not-json"),
        ("destroy", "maybe"),
        ("max_age", "soon"),
    ] {
        let r = raw(gate.addr, "GET", &format!("/public/x?{param}={value}"), &[]).await;
        assert_eq!(r.status, 200, "{param}");
        assert!(
            r.headers.iter().all(|(k, _)| !k.starts_with("x-session")),
            "{param}: {:?}",
            r.headers
        );
    }
    // On a route that may issue, a malformed directive is still the upstream's error.
    let r = raw(gate.addr, "POST", "/login?issue=%5B1%5D", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_token_is_the_only_credential_or_the_request_is_refused() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .table("[session.token]\nheader = \"authorization\"\nscheme = \"Session\""),
        &[&app],
    )
    .start();
    let login = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22alice%22%7D",
        &[("x-session-token", "request")],
    )
    .await;
    let token = format!("Session {}", login.header("x-session-token").unwrap());
    let hits = app.hits();
    for headers in [
        vec![
            "Authorization: Bearer x".to_string(),
            format!("Authorization: {token}"),
        ],
        vec![
            format!("Authorization: {token}"),
            "Authorization: Bearer x".to_string(),
        ],
        vec![format!("Authorization: Bearer x, {token}")],
        vec![format!("Authorization: {token}, Basic YTpi")],
    ] {
        for path in ["/account/", "/public/"] {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}\r\nConnection: close\r\n\r\n",
                headers.join("\r\n")
            );
            let r = raw_bytes(gate.addr, request.as_bytes()).await;
            assert_eq!(r.status, 400, "{path} {headers:?}");
            assert_eq!(r.json()["error"], "bad_credentials");
        }
    }
    assert_eq!(
        app.hits(),
        hits,
        "no mixed credentials reached the upstream"
    );

    let r = raw(gate.addr, "GET", "/account/", &[("authorization", &token)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("alice"));
    assert_eq!(
        r.upstream_header("authorization"),
        None,
        "the token stays at the gate"
    );
    let r = raw(gate.addr, "GET", "/public/", &[("authorization", &token)]).await;
    assert_eq!(
        r.upstream_header("authorization"),
        None,
        "on public routes too"
    );
    let r = raw(
        gate.addr,
        "GET",
        "/public/",
        &[("authorization", "Bearer x")],
    )
    .await;
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Bearer x")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_never_carry_a_second_request_past_the_gate() {
    let python = Python::start("lenient");
    let gate = lenient_gate(&python, GateBuilder::new());
    let smuggled = "GET /account/secret HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    let chunked = format!("0\r\n\r\n{smuggled}");
    for (framing, body) in [
        (
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                chunked.len()
            ),
            chunked.clone(),
        ),
        (
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}",
                chunked.len()
            ),
            chunked.clone(),
        ),
        (
            format!("Content-Length: 0\r\nContent-Length: {}", smuggled.len()),
            smuggled.to_string(),
        ),
        ("Transfer-Encoding: xchunked".to_string(), chunked.clone()),
        (
            "Transfer-Encoding: chunked, identity".to_string(),
            chunked.clone(),
        ),
        ("Transfer-Encoding : chunked".to_string(), chunked.clone()),
        (
            "Transfer-Encoding:\tchunked\r\n Transfer-Encoding: x".to_string(),
            chunked.clone(),
        ),
        ("Content-Length: +5".to_string(), smuggled.to_string()),
    ] {
        let request =
            format!("POST /docs HTTP/1.1\r\nHost: www.example.com\r\n{framing}\r\n\r\n{body}");
        let r = raw_bytes(gate.addr, request.as_bytes()).await;
        assert!(
            r.status == 0 || r.status == 400 || r.status == 200,
            "{framing:?}: {}",
            r.status
        );
    }
    for s in seen(&python).await {
        assert!(
            !(protected(&s) && s["user"].is_null()),
            "a smuggled request was served: {s}"
        );
    }
}
