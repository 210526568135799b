//! A real browser for the tests: headless Chromium driven over WebDriver (`chromedriver`,
//! `fantoccini`), each with a profile directory of its own. Debian's `chromium` and
//! `chromium-driver` (`scripts/test` installs them): a missing one fails the test with what
//! to install, never skips it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use super::{free_port, wait_for, ProcessGuard};

/// An executable on `PATH` (or in `$var`), or a failure that says what to install.
fn program(var: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the browser tests need {} on PATH (or ${var}): run scripts/test, which installs \
         Debian's chromium and chromium-driver, or apt-get install chromium chromium-driver",
        names.join(" or ")
    );
}

/// Headless Chromium, driven by its own `chromedriver`; the browser quits on [`close`] or
/// when the driver is killed with this value.
///
/// [`close`]: Browser::close
pub struct Browser {
    pub client: Client,
    _driver: ProcessGuard,
}

impl Browser {
    /// Starts Chromium with `profile` as its user data dir: the same dir after a
    /// [`Browser::close`] is the same browser, restarted (its persistent cookies kept, its
    /// session cookies gone).
    pub async fn start(profile: &Path) -> Browser {
        let chromium = program("CHROMIUM", &["chromium", "chromium-browser"]);
        let driver_bin = program("CHROMEDRIVER", &["chromedriver"]);
        let port = free_port();
        let driver = ProcessGuard::spawn(
            "chromedriver",
            Command::new(&driver_bin).arg(format!("--port={port}")),
        );
        wait_for("chromedriver", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--password-store=basic".into(),
            "--window-size=800,480".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        // Chromium refuses to run as root inside its sandbox.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if root {
            args.push("--no-sandbox".into());
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let caps = caps.as_object().expect("an object").clone();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e}\n{}",
                    chromium.display(),
                    driver.log_tail(30)
                )
            });
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Quits the browser (as a user closing it: its profile is written out).
    pub async fn close(self) {
        self.client.close().await.expect("the browser quits");
    }

    /// Waits (bounded) until `script` returns something other than `null`, and returns it.
    pub async fn wait_for_js(&self, what: &str, script: &str) -> serde_json::Value {
        for _ in 0..200 {
            let v = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            if !v.is_null() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: never happened ({script})");
    }

    /// The current page's URL, as a string.
    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("a URL").to_string()
    }

    /// The current page's text.
    pub async fn text(&self) -> String {
        self.client
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .expect("the page's text")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}
