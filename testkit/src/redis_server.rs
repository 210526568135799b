//! A private `redis-server` per test or bench run. The gate's tests and its load bench run
//! against the real Redis, never a mock and never the developer's own instance: each gets a
//! fresh server in a temp dir, without persistence, on a unix socket (tests: no port to race
//! for) or a loopback TCP port (the bench, and clients that only speak TCP), that can be
//! stopped and restarted on the same address to play an outage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{free_port, ProcessGuard};

/// How long `redis-server` gets to answer PING after it starts.
const STARTUP: Duration = Duration::from_secs(10);

pub struct Redis {
    dir: tempfile::TempDir,
    listen: Listen,
    server: Option<ProcessGuard>,
}

#[derive(Clone, Copy)]
enum Listen {
    Unix,
    Tcp(u16),
}

impl Redis {
    /// A `redis-server` on a unix socket in a temp dir ([`Redis::socket`]).
    pub fn start() -> Self {
        Self::with(Listen::Unix)
    }

    /// A `redis-server` on 127.0.0.1 and a free port ([`Redis::port`]), protected mode on.
    pub fn start_tcp() -> Self {
        Self::with(Listen::Tcp(free_port()))
    }

    fn with(listen: Listen) -> Self {
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            listen,
            server: None,
        };
        r.restart();
        r
    }

    /// The unix socket; panics for a TCP server.
    pub fn socket(&self) -> PathBuf {
        assert!(
            matches!(self.listen, Listen::Unix),
            "this redis-server listens on TCP"
        );
        self.dir.path().join("redis.sock")
    }

    /// The TCP port, for a server started with [`Redis::start_tcp`].
    pub fn port(&self) -> Option<u16> {
        match self.listen {
            Listen::Unix => None,
            Listen::Tcp(port) => Some(port),
        }
    }

    /// `redis+unix:///…/redis.sock`, or `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        match self.listen {
            Listen::Unix => format!("redis+unix://{}", self.socket().display()),
            Listen::Tcp(port) => format!("redis://127.0.0.1:{port}/0"),
        }
    }

    /// Starts (again) on the same address, with no data: a restarted Redis without
    /// persistence. Returns once it answers PING.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "redis is already running");
        let mut cmd = Command::new("redis-server");
        match self.listen {
            Listen::Unix => {
                cmd.args(["--port", "0", "--unixsocket"])
                    .arg(self.socket())
                    .args(["--unixsocketperm", "700"]);
            }
            Listen::Tcp(port) => {
                cmd.args(["--bind", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .args(["--protected-mode", "yes"]);
            }
        }
        cmd.args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path());
        let mut server = ProcessGuard::try_spawn("redis-server", &mut cmd)
            .unwrap_or_else(|e| panic!("redis-server must be installed (see README): {e}"));
        let client = redis::Client::open(self.url()).unwrap();
        server.wait_until("answer PING", STARTUP, || {
            client
                .get_connection()
                .ok()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        self.server = Some(server);
    }

    /// Kills the server (as a crash would: no shutdown, no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
        if let Listen::Unix = self.listen {
            let _ = std::fs::remove_file(self.socket());
        }
    }

    /// A new connection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn set(&self, key: &str, value: &str, ttl_secs: u64) {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl_secs)
            .query::<()>(&mut self.conn())
            .unwrap();
    }

    pub fn expire(&self, key: &str, ttl_secs: u64) {
        redis::cmd("EXPIRE")
            .arg(key)
            .arg(ttl_secs)
            .query::<()>(&mut self.conn())
            .unwrap();
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .unwrap()
    }

    /// Calls per command so far (INFO commandstats, commands run by Lua scripts included),
    /// INFO itself left out. Ask on one connection kept for the purpose: opening one runs
    /// commands too.
    pub fn command_calls(con: &mut redis::Connection) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(con)
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                (name != "info").then(|| (name.to_string(), calls))
            })
            .collect()
    }

    /// The installed `redis-server`'s version (`7.0.15`), or `?`.
    pub fn version() -> String {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| {
                s.split_whitespace()
                    .find_map(|w| w.strip_prefix("v=").map(str::to_string))
            })
            .unwrap_or_else(|| "?".into())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_socket_restarts_empty() {
        let mut r = Redis::start();
        assert!(r.port().is_none());
        r.set("k", "v", 60);
        assert_eq!(r.get("k").as_deref(), Some("v"));
        assert!(r.ttl("k") > 0);
        r.stop();
        assert!(!r.socket().exists());
        r.restart();
        assert_eq!(r.get("k"), None);
    }

    #[test]
    fn tcp_counts_commands() {
        let r = Redis::start_tcp();
        assert!(r.url().starts_with("redis://127.0.0.1:"));
        let mut con = r.conn();
        let before = Redis::command_calls(&mut con);
        r.set("a", "1", 60);
        r.expire("a", 30);
        let after = Redis::command_calls(&mut con);
        let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
        assert_eq!((delta("set"), delta("expire"), delta("info")), (1, 1, 0));
        assert_ne!(Redis::version(), "?");
    }
}
