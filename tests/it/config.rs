//! Configuration: the shipped `proxy.toml` is valid, `sessiongate check` explains it, and
//! every mistake is reported with its key and line.

use std::process::Command;

use sessiongate::Config;
use sessiongate::ConfigError;

const SHIPPED: &str = include_str!("../../proxy.toml");

fn env(name: &str) -> Option<String> {
    (name == "SESSION_SECRET").then(|| "from the environment".to_string())
}

fn error(toml: &str) -> String {
    Config::parse(toml, "proxy.toml", &env)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn the_shipped_config_is_valid() {
    let c = Config::parse(SHIPPED, "proxy.toml", &env).unwrap();
    assert_eq!(c.listen, ["127.0.0.1:8080"]);
    assert_eq!(c.session.secrets, [b"from the environment".to_vec()]);
    assert_eq!(c.routes.len(), 5);
}

#[test]
fn check_prints_the_plan_and_fails_on_errors() {
    let bin = env!("CARGO_BIN_EXE_sessiongate");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(format!("{root}/proxy.toml"))
        .env("SESSION_SECRET", "s3cret-value-never-printed")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("http://127.0.0.1:8080"), "{stdout}");
    assert!(
        stdout.contains("/account/ [any] -> demo: required (else redirect to /login)"),
        "{stdout}"
    );
    assert!(stdout.contains("store: memory"), "{stdout}");
    assert!(
        stdout.contains("cross-origin requests with the session cookie: refused (403)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("request heads: at most 32768 bytes and 100 headers (else 431), complete within 10s of their first byte (else 408)"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-value-never-printed"));

    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(format!("{root}/proxy.toml"))
        .env_remove("SESSION_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "proxy.toml:12: session.secrets[0]: environment variable SESSION_SECRET is not set"
        ),
        "{stderr}"
    );
}

const MINIMAL: &str = r#"
[session]
secrets = ["env:SESSION_SECRET"]

[[upstream]]
name = "app"
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "app"
auth = "public"
"#;

#[test]
fn defaults_fill_everything_else() {
    let c = Config::parse(MINIMAL, "proxy.toml", &env).unwrap();
    assert_eq!(c.listen, ["127.0.0.1:8080"]);
    assert_eq!(c.session.cookie_name, "connect.sid");
    assert_eq!(c.session.prefix, "sess:");
    assert!(c.session.rolling);
    assert_eq!(c.session.idle_timeout.as_secs(), 86_400);
    assert!(matches!(c.store, sessiongate::StoreSettings::Memory(_)));
    assert_eq!(c.session.cookie.same_site.map(|s| s.as_str()), Some("Lax"));
    assert!(c.session.cookie.http_only);
    assert_eq!(c.head.max_bytes, 32 * 1024);
    assert_eq!(c.head.max_headers, 100);
    assert_eq!(c.head.timeout.as_secs(), 10);
}

#[test]
fn errors_name_the_key_and_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("[server]\nlisten = [\"nowhere\"]\n", "", "proxy.toml:2: server.listen[0]: `nowhere` is not an address"),
        ("[server]\nlisten = [\"127.0.0.1:1\"]\nbogus = 1\n", "", "proxy.toml:3: server.bogus: unknown field `bogus`"),
        ("[server]\nmax_header_bytes = 512\n", "", "proxy.toml:2: server.max_header_bytes: must be from 1024 to 1048575"),
        ("[server]\nmax_header_bytes = 1048576\n", "", "proxy.toml:2: server.max_header_bytes: must be from 1024 to 1048575"),
        ("[server]\nmax_header_bytes = -1\n", "", "proxy.toml:2: server.max_header_bytes"),
        ("[server]\nmax_headers = 0\n", "", "proxy.toml:2: server.max_headers: must be from 1 to 256"),
        ("[server]\nmax_headers = 257\n", "", "proxy.toml:2: server.max_headers: must be from 1 to 256"),
        ("[server]\nheader_timeout = \"50ms\"\n", "", "proxy.toml:2: server.header_timeout: must be at least 100ms"),
        ("", "[session.cookie]\nmax_age = \"30 parsecs\"\n", "session.cookie.max_age"),
        ("", "[session.cookie]\nsame_site = \"none\"\n", "session.cookie.same_site: \"none\" needs secure = true"),
        ("", "[session.cookie]\npath = \"relative\"\n", "session.cookie.path: must start with /"),
        ("", "[[route]]\npath = \"/x\"\nupstream = \"ap\"\nauth = \"public\"\n", "route[1].upstream: no [[upstream]] is named `ap` (defined: app)"),
        ("", "[[route]]\npath = \"/x\"\nupstream = \"app\"\nauth = \"sometimes\"\n", "route[1].auth: unknown variant `sometimes`"),
        ("", "[[route]]\npath = \"/x%2Fy\"\nupstream = \"app\"\nauth = \"public\"\n", "route[1].path: an encoded `/`"),
        ("", "[[route]]\npath = \"/x\"\nupstream = \"app\"\nauth = \"public\"\nlogin_redirect = \"/login\"\n", "route[1].login_redirect: only a route with auth = \"required\""),
        ("", "[[route]]\npath = \"/x\"\nupstream = \"app\"\nauth = \"required\"\nlogin_redirect = \"//evil.example\"\n", "route[1].login_redirect: must be a path"),
        ("", "[identity.headers]\n\"Bad Header\" = \"/user\"\n", "identity.headers.\"Bad Header\": `Bad Header` is not a header name"),
        ("", "[identity.headers]\n\"Cookie\" = \"/user\"\n", "reserved"),
        ("", "[identity.headers]\n\"X-User\" = \"user\"\n", "a JSON pointer starts with /"),
        ("", "[log]\naccess = \"xml\"\n", "log.access: unknown variant `xml`, expected one of `json`, `text`, `off`"),
        ("", "[log]\nformat = \"yaml\"\n", "log.format: unknown variant `yaml`"),
        ("", "[log]\nlevel = \"debug\"\n", "log.level: unknown field `level`"),
        ("[server]\ndrain_delay = \"soon\"\n", "", "proxy.toml:2: server.drain_delay"),
    ];
    for (server, tail, expected) in cases {
        let toml = format!("{server}{MINIMAL}{tail}");
        let e = error(&toml);
        assert!(
            e.contains(expected),
            "expected `{expected}` in `{e}`\n{toml}"
        );
        assert!(e.contains("proxy.toml:"), "no line in `{e}`");
    }
    let e = error("[server]\nlisten = [\"127.0.0.1:1\"]\n[session]\nsecrets = []\n");
    assert!(e.contains("session.secrets: at least one secret"), "{e}");
    let e = error(&MINIMAL.replace("env:SESSION_SECRET", "env:NOT_SET"));
    assert_eq!(
        e,
        "proxy.toml:3: session.secrets[0]: environment variable NOT_SET is not set"
    );
    let e = error(
        &format!("{MINIMAL}\n[redis]\nurl = \"http://x\"\n")
            .replace("[session]", "[session]\nstore = \"redis\""),
    );
    assert!(e.contains("redis.url: not a usable Redis URL"), "{e}");
}

#[test]
fn logs_and_the_drain_default_to_quiet_and_immediate() {
    let c = Config::parse(MINIMAL, "proxy.toml", &env).unwrap();
    assert_eq!(c.log.access, sessiongate::AccessFormat::Off);
    assert_eq!(c.log.format, sessiongate::LogFormat::Text);
    assert!(c.drain_delay.is_zero());
    let shipped = Config::parse(SHIPPED, "proxy.toml", &env).unwrap();
    assert_eq!(shipped.log.access, sessiongate::AccessFormat::Text);
}

#[test]
fn the_deployment_config_in_contrib_is_valid() {
    let text = include_str!("../../contrib/proxy.toml");
    let env = |name: &str| {
        matches!(name, "SESSION_SECRET" | "SESSIONGATE_ADMIN_TOKEN")
            .then(|| "from the environment, long enough".to_string())
    };
    let c = Config::parse(text, "contrib/proxy.toml", &env).unwrap();
    assert_eq!(c.listen, ["0.0.0.0:8080"]);
    assert_eq!(c.log.access, sessiongate::AccessFormat::Json);
    assert_eq!(c.log.format, sessiongate::LogFormat::Json);
    assert_eq!(c.drain_delay.as_secs(), 5);
    assert!(c.admin.is_some());
}

#[test]
fn secrets_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "from a file\n").unwrap();
    let toml = MINIMAL.replace("env:SESSION_SECRET", &format!("file:{}", path.display()));
    let c = Config::parse(&toml, "proxy.toml", &env).unwrap();
    assert_eq!(c.session.secrets, [b"from a file".to_vec()]);
    let missing = MINIMAL.replace("env:SESSION_SECRET", "file:/nonexistent/secret");
    assert!(error(&missing).contains("cannot read secret file /nonexistent/secret"));
}

#[test]
fn read_errors_name_the_file() {
    let e = Config::load(std::path::Path::new("/nonexistent/proxy.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e
        .to_string()
        .starts_with("cannot read /nonexistent/proxy.toml"));
}
