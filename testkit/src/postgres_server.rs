//! A private PostgreSQL server per test or bench run, as [`crate::Redis`] is for Redis: Debian's
//! `initdb` and `postgres` (on `PATH`, or under `/usr/lib/postgresql/*/bin`), a data directory
//! in a temp dir, loopback only, on a port from the kit's counter, trusting local connections.
//! It can be stopped and started again on the same port and data to play an outage. The
//! machine's own PostgreSQL (5432) is never touched.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
//! `postgres` user the package creates (or `nobody`), which owns the temp dir (`initdb` takes
//! about half a second).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, ProcessGuard};

/// How long the server gets to be ready after it starts.
const STARTUP: Duration = Duration::from_secs(30);

pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    /// `name=value` server settings besides the kit's own.
    settings: Vec<String>,
    /// The certificate and key of a TLS server.
    _tls_dir: Option<tempfile::TempDir>,
    server: Option<ProcessGuard>,
}

/// Where `initdb` and `postgres` are.
fn bin_dir() -> PathBuf {
    if crate::on_path("initdb") {
        if let Ok(out) = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if let Ok(real) = std::fs::canonicalize(&path) {
                return real.parent().expect("a directory").to_owned();
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's initdb must be installed (Debian: apt-get install postgresql; scripts/test does it)")
}

/// The user the server runs as: ourselves, or an unprivileged one when we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: getpwnam with a valid C string; the record is read at once.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null, as returned by getpwnam.
            let pw = unsafe { &*pw };
            return Some((pw.pw_uid, pw.pw_gid));
        }
    }
    panic!("running as root, and there is no postgres or nobody user to run PostgreSQL as");
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// `initdb` into `data`: trust for local connections, superuser `postgres`, UTF-8, C locale.
fn initdb(data: &Path) {
    let out = as_server_user(&mut Command::new(bin_dir().join("initdb")))
        .arg("-D")
        .arg(data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        .args(["--locale", "C"])
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// A fresh server on 127.0.0.1 and a free port, with an empty `postgres` database.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The same with server settings (`"shared_preload_libraries=pg_stat_statements"`).
    pub fn start_with(settings: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("pg-").tempdir().unwrap();
        chown(dir.path());
        initdb(&dir.path().join("data"));
        let mut pg = Postgres {
            dir,
            port: free_port(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
            _tls_dir: None,
            server: None,
        };
        pg.restart();
        pg
    }

    /// The same with TLS on (`ssl = on`) with this certificate and key (PEM), which the
    /// server user owns, as PostgreSQL requires of its key.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pg-tls-")
            .tempdir()
            .unwrap();
        chown(dir.path());
        let mut settings = vec!["ssl=on".to_string()];
        for (name, pem, key) in [
            ("cert", cert_pem, "ssl_cert_file"),
            ("key", key_pem, "ssl_key_file"),
        ] {
            let path = dir.path().join(format!("{name}.pem"));
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            chown(&path);
            settings.push(format!("{key}={}", path.display()));
        }
        let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
        let mut pg = Self::start_with(&refs);
        pg._tls_dir = Some(dir);
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port and data; returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "postgres is already running");
        let mut cmd = Command::new(bin_dir().join("postgres"));
        as_server_user(&mut cmd)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"]);
        for setting in &self.settings {
            cmd.arg("-c").arg(setting);
        }
        let mut server = ProcessGuard::spawn("postgres", &mut cmd);
        let log = server.log_path().to_owned();
        server.wait_until("accept connections", STARTUP, || {
            server_ready(&std::fs::read_to_string(&log).unwrap_or_default())
        });
        self.server = Some(server);
    }

    /// Stops the server at once (immediate shutdown: every connection is cut, no checkpoint),
    /// as a crash would, and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            // SAFETY: a plain kill(2) of our own child.
            unsafe {
                libc::kill(s.pid() as libc::pid_t, libc::SIGQUIT);
            }
            let until = Instant::now() + Duration::from_secs(10);
            while s.exit_status().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            s.kill();
        }
    }

    /// A connection for the test's own SQL; its connection task runs on the current runtime.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

fn server_ready(log: &str) -> bool {
    log.lines()
        .rev()
        .find(|l| l.contains("ready to accept connections") || l.contains("starting PostgreSQL"))
        .is_some_and(|l| l.contains("ready to accept connections"))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
