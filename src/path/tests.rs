//! Path canonicalisation and request targets: examples of every rule, and properties over
//! generated paths.

use super::*;

fn norm(p: &str) -> String {
    normalize_path(p).unwrap().matched
}

fn with(parameters: Parameters, p: &str) -> Result<NormalPath, PathError> {
    PathPolicy {
        parameters,
        reject_double_encoding: true,
    }
    .normalize(p)
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
    assert_eq!(p.matched, "/a b/#frag/?q/café/~");
    assert_eq!(p.upstream, "/a%20b/%23frag/%3Fq/caf%C3%A9/~");
}

#[test]
fn the_fast_path_agrees_with_the_full_one() {
    for p in [
        "/",
        "/a",
        "/a/",
        "/a/b.c/d~e",
        "/a/.b",
        "/a/..b",
        "/.well-known/x",
    ] {
        assert!(already_canonical(p), "{p}");
        let n = normalize_path(p).unwrap();
        assert_eq!((n.matched.as_str(), n.upstream.as_str()), (p, p));
    }
    for p in [
        "//a", "/a//b", "/a/./b", "/a/..", "/a/.", "/%61", "/a b", "/a\\b", "/..;/a", "/.;x", "x",
        "/a;b=c/",
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
    assert_eq!(normalize_path("account"), Err(PathError::NotAbsolute));
}

#[test]
fn path_parameters_are_refused_by_default() {
    for p in [
        "/account;jsessionid=x/secret",
        "/account%3Bx/secret",
        "/account%3bx/secret",
        "/account;/secret",
        "/public/..;/account",
        "/;x/account",
    ] {
        assert_eq!(normalize_path(p), Err(PathError::Parameters), "{p}");
    }
}

#[test]
fn stripped_parameters_leave_the_path_a_servlet_container_serves() {
    for (p, want) in [
        ("/account;jsessionid=x/secret", "/account/secret"),
        ("/account%3Bx/secret", "/account/secret"),
        ("/account;/secret", "/account/secret"),
        ("/public/..;x/account", "/account"),
        ("/;x/account", "/account"),
    ] {
        let n = with(Parameters::Strip, p).unwrap();
        assert_eq!(
            (n.matched.as_str(), n.upstream.as_str()),
            (want, want),
            "{p}"
        );
    }
}

#[test]
fn kept_parameters_reach_the_upstream_but_never_decode_to_a_raw_semicolon() {
    let n = with(Parameters::Keep, "/account;jsessionid=x/secret").unwrap();
    assert_eq!(n.matched, "/account/secret");
    assert_eq!(n.upstream, "/account;jsessionid=x/secret");
    let n = with(Parameters::Keep, "/account%3Bx/secret").unwrap();
    assert_eq!(n.matched, "/account/secret");
    assert_eq!(n.upstream, "/account%3Bx/secret");
    assert_eq!(
        with(Parameters::Keep, "/public/..;/account"),
        Err(PathError::DotParameter)
    );
}

#[test]
fn double_encoding_of_separators_is_refused() {
    for p in [
        "/%252e%252e/account",
        "/a%252fb",
        "/a%252Fb",
        "/a%255cb",
        "/a%253bb",
        "/a%2500",
        "/a%25252e",
        "/%2561ccount/secret",
    ] {
        assert_eq!(normalize_path(p), Err(PathError::DoubleEncoding), "{p}");
    }
    assert_eq!(norm("/100%25"), "/100%");
    assert_eq!(norm("/100%25/x"), "/100%/x");
    assert_eq!(norm("/a%25zz"), "/a%zz");
    let lenient = PathPolicy {
        parameters: Parameters::Reject,
        reject_double_encoding: false,
    };
    assert_eq!(lenient.normalize("/a%252fb").unwrap().upstream, "/a%252fb");
}

#[test]
fn request_targets_other_than_origin_absolute_and_asterisk_are_refused() {
    fn ok(t: &str) -> Result<RequestTarget<'_>, PathError> {
        RequestTarget::parse(false, t.as_bytes())
    }
    assert_eq!(
        ok("/a?b=1"),
        Ok(RequestTarget::Path {
            path: "/a",
            query: Some("b=1"),
            authority: None
        })
    );
    assert_eq!(
        ok("http://example.com:8080/account/x?y"),
        Ok(RequestTarget::Path {
            path: "/account/x",
            query: Some("y"),
            authority: Some("example.com:8080")
        })
    );
    assert_eq!(
        ok("HTTPS://example.com"),
        Ok(RequestTarget::Path {
            path: "/",
            query: None,
            authority: Some("example.com")
        })
    );
    for t in [
        "x:/account/secret",
        "account/secret",
        "*",
        "ftp://h/a",
        "/a#b",
        "",
    ] {
        assert!(ok(t).is_err(), "{t}");
    }
    assert_eq!(
        RequestTarget::parse(true, b"*"),
        Ok(RequestTarget::Asterisk)
    );
}

mod properties {
    //! Whatever the spelling, the gate either refuses the path or routes it where a
    //! lenient upstream would serve it, and sends the upstream a path that serves there.
    use super::super::*;
    use crate::routes::{AuthMode, Route, RouteTable};
    use http::Method;
    use proptest::prelude::*;

    /// The path a lenient upstream serves: decoded `decodes` times, `;` parameters
    /// stripped from every segment, dot segments resolved.
    fn lenient(raw: &str, decodes: usize) -> String {
        let mut t = raw.to_owned();
        for _ in 0..decodes {
            t = percent_encoding::percent_decode_str(&t)
                .decode_utf8_lossy()
                .into_owned();
        }
        let mut segments: Vec<&str> = Vec::new();
        for seg in t.split('/') {
            match seg.split(';').next().unwrap_or_default() {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        format!("/{}", segments.join("/"))
    }

    fn table() -> RouteTable {
        let route = |prefix: &str| Route {
            prefix: prefix.into(),
            host: None,
            methods: None,
            upstream: Some(0),
            auth: AuthMode::Public,
            login_redirect: None,
            issue_sessions: false,
            method_override: false,
            strip_session_cookie: false,
            audience: "app".into(),
            cross_origin: None,
        };
        RouteTable::new(
            vec![
                route(""),
                route("/account"),
                route("/public"),
                route("/account/public"),
            ],
            false,
        )
    }

    const PIECES: &[&str] = &[
        "account",
        "ACCOUNT",
        "Account",
        "public",
        "x",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2e%2e",
        ";",
        ";jsessionid=1",
        "%3B",
        "%3bx",
        "%2f",
        "%5c",
        "\\",
        "%00",
        "%25",
        "%252e",
        "%2561",
        "%61",
        "%41ccount",
        "%zz",
        "a%20b",
        "~",
        "%C3%A9",
        "%ff",
        "%2561ccount",
        "%252e%252e",
        "%2541CCOUNT",
        "%25zz",
    ];

    fn path() -> impl Strategy<Value = String> {
        let segment =
            prop::collection::vec(prop::sample::select(PIECES), 0..3).prop_map(|p| p.concat());
        let sep = prop::sample::select(&["/", "//"][..]);
        prop::collection::vec((sep, segment), 0..6).prop_map(|parts| {
            let mut p: String = parts.into_iter().map(|(s, g)| format!("{s}{g}")).collect();
            if p.is_empty() {
                p.push('/');
            }
            p
        })
    }

    fn policy() -> impl Strategy<Value = PathPolicy> {
        (
            prop::sample::select(&[Parameters::Reject, Parameters::Strip, Parameters::Keep][..]),
            any::<bool>(),
        )
            .prop_map(|(parameters, reject_double_encoding)| PathPolicy {
                parameters,
                reject_double_encoding,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn a_path_is_refused_or_routed_where_a_lenient_upstream_serves_it(
            raw in path(),
            policy in policy(),
        ) {
            let t = table();
            let route = |p: &str| t.find(None, &Method::GET, p);
            if let Ok(n) = policy.normalize(&raw) {
                prop_assert_eq!(route(&n.matched), route(&lenient(&raw, 1)), "{:?}", n);
                if policy.reject_double_encoding {
                    prop_assert_eq!(route(&n.matched), route(&lenient(&raw, 2)), "{:?}", n);
                }
                // The upstream gets a path that it, too, serves from the matched route.
                prop_assert_eq!(route(&n.matched), route(&lenient(&n.upstream, 1)), "{:?}", n);
                prop_assert!(n.upstream.starts_with('/') && !n.upstream.starts_with("//"));
                if policy.parameters != Parameters::Keep {
                    prop_assert!(!n.upstream.contains(';'), "{:?}", n);
                }
            }
        }

        #[test]
        fn any_text_is_a_path_or_a_refusal(raw in ".*", policy in policy()) {
            let _ = policy.normalize(&raw);
            let _ = RequestTarget::parse(false, raw.as_bytes());
        }
    }
}
