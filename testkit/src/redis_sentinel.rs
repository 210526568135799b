//! A private Redis Sentinel setup per test: a master, a replica of it, and one sentinel that
//! watches them (quorum 1, `down-after-milliseconds` 1 s), each a `redis-server` on a loopback
//! port of its own, polled until the sentinel knows the master and the replica and the
//! replica's link is up.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::{wait_for, ProcessGuard};

/// The name the sentinel monitors the master under.
pub const MASTER_NAME: &str = "mymaster";

pub struct RedisSentinel {
    dir: tempfile::TempDir,
    /// The two data nodes' ports, and their processes while they run.
    nodes: Vec<(u16, Option<ProcessGuard>)>,
    sentinel_port: u16,
    /// The sentinel's own password (`requirepass` in its config), if any.
    password: Option<String>,
    _sentinel: ProcessGuard,
}

fn connection(port: u16) -> Option<redis::Connection> {
    authed(port, None)
}

/// A connection with `password` (a sentinel's `requirepass`).
fn authed(port: u16, password: Option<&str>) -> Option<redis::Connection> {
    let auth = password.map_or(String::new(), |p| format!(":{p}@"));
    redis::Client::open(format!("redis://{auth}127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

fn info(port: u16, section: &str) -> Option<BTreeMap<String, String>> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut connection(port)?)
        .ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

impl RedisSentinel {
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// The same, with a sentinel that asks clients for `password` (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
        let (master, replica, sentinel_port) = (ports[0], ports[1], ports[2]);
        let mut nodes = vec![(master, None), (replica, None)];
        for (i, (port, guard)) in nodes.iter_mut().enumerate() {
            *guard = Some(Self::data_node(&dir, *port, (i == 1).then_some(master)));
        }
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{}",
                dir.path().display(),
                password.map_or(String::new(), |p| format!("requirepass {p}\n")),
            ),
        )
        .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let mut sentinel = ProcessGuard::try_spawn("redis-sentinel", &mut cmd)
            .unwrap_or_else(|e| panic!("redis-server must be installed (see README): {e}"));
        sentinel.wait_until("answer PING", Duration::from_secs(10), || {
            authed(sentinel_port, password)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        let s = RedisSentinel {
            dir,
            nodes,
            sentinel_port,
            password: password.map(str::to_owned),
            _sentinel: sentinel,
        };
        s.wait_healthy();
        s
    }

    fn data_node(dir: &tempfile::TempDir, port: u16, replica_of: Option<u16>) -> ProcessGuard {
        let node_dir = dir.path().join(format!("node{port}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&node_dir);
        if let Some(m) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1"]).arg(m.to_string());
        }
        let mut guard = ProcessGuard::try_spawn(&format!("redis-server :{port}"), &mut cmd)
            .unwrap_or_else(|e| panic!("redis-server must be installed (see README): {e}"));
        guard.wait_until("answer PING", Duration::from_secs(10), || {
            connection(port)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        guard
    }

    /// Waits until the sentinel names a master that says it is one, and knows a replica of
    /// it whose link is up.
    pub fn wait_healthy(&self) {
        wait_for(
            "the sentinel setup to be healthy",
            Duration::from_secs(60),
            || {
                let master = self.master()?;
                if info(master, "replication")?.get("role")? != "master" {
                    return None;
                }
                let mut s = self.sentinel()?;
                let replicas: Vec<BTreeMap<String, String>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER_NAME)
                    .query(&mut s)
                    .ok()?;
                let up = replicas.iter().any(|r| {
                    r.get("flags").is_some_and(|f| f == "slave")
                        && r.get("master-link-status").is_some_and(|l| l == "ok")
                });
                up.then_some(())
            },
        );
    }

    /// The sentinel's URL, `redis://127.0.0.1:<port>`.
    fn sentinel(&self) -> Option<redis::Connection> {
        authed(self.sentinel_port, self.password.as_deref())
    }

    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The master's port, as the sentinel names it now.
    pub fn master(&self) -> Option<u16> {
        let mut s = self.sentinel()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut s)
            .ok()?;
        Some(port)
    }

    /// The data nodes' ports (master and replica, in the order they were started).
    pub fn nodes(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    /// A connection to one data node.
    pub fn node(&self, port: u16) -> redis::Connection {
        connection(port).unwrap_or_else(|| panic!("node {port} does not answer"))
    }

    /// `SENTINEL FAILOVER`: the replica is promoted and the old master, still running, is
    /// demoted to its replica. Returns the new master once the sentinel names it and it says
    /// it is one (the old master turns into its replica a moment later).
    pub fn failover(&self) -> u16 {
        let old = self.master().expect("a master");
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query::<()>(&mut self.sentinel().unwrap())
            .unwrap();
        wait_for(
            "the sentinel to name a new master that says it is one",
            Duration::from_secs(30),
            || {
                let new = self.master().filter(|m| *m != old)?;
                (info(new, "replication")?.get("role")? == "master").then_some(new)
            },
        )
    }

    /// Kills a data node as a crash would.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, g)) = self.nodes.iter_mut().find(|(p, _)| *p == port) {
            if let Some(mut g) = g.take() {
                g.kill();
            }
        }
    }

    /// The temp dir the processes run in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentinel_fails_over_to_the_replica() {
        let s = RedisSentinel::start();
        let old = s.master().unwrap();
        redis::cmd("SET")
            .arg("sess:x")
            .arg("1")
            .query::<()>(&mut s.node(old))
            .unwrap();
        redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query::<i64>(&mut s.node(old))
            .unwrap();
        let start = std::time::Instant::now();
        let new = s.failover();
        eprintln!("sentinel failover: {:?}", start.elapsed());
        assert_ne!(new, old);
        let v: Option<String> = redis::cmd("GET")
            .arg("sess:x")
            .query(&mut s.node(new))
            .unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        // The old master is demoted a moment after the promotion.
        wait_for(
            "the old master to be demoted",
            Duration::from_secs(30),
            || (info(old, "replication")?.get("role")? == "slave").then_some(()),
        );
        let err = redis::cmd("SET")
            .arg("sess:y")
            .arg("1")
            .query::<()>(&mut s.node(old))
            .unwrap_err();
        assert!(err.to_string().contains("read only"), "{err}");
    }
}
