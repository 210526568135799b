//! A private Redis Cluster per test: three masters and three replicas, each a `redis-server`
//! on a loopback port of its own (cluster bus on a second free port), joined with
//! `redis-cli --cluster create … --cluster-replicas 1` and polled until every node reports
//! `cluster_state:ok`, knows all six nodes, and every replica's link to its master is up.
//! `cluster-node-timeout` is 1.5 s, so a killed master is failed over in a few seconds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{wait_for, ProcessGuard};

/// How long the whole cluster gets to form (every node up, slots covered, replicas synced).
const FORM: Duration = Duration::from_secs(60);
/// `cluster-node-timeout`, in ms.
pub const NODE_TIMEOUT_MS: u64 = 1500;

/// One node: its client port, its bus port, and its process while it runs.
struct Node {
    port: u16,
    bus: u16,
    dir: PathBuf,
    server: Option<ProcessGuard>,
}

pub struct RedisCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// What `CLUSTER NODES` says of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRole {
    pub port: u16,
    pub master: bool,
    /// For a replica, the port of its master.
    pub master_port: Option<u16>,
    /// Marked failed (`fail`) or unreachable.
    pub failed: bool,
}

/// `n` distinct free loopback ports (a node's client and bus ports, for every node).
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| crate::free_port()).collect()
}

fn connection(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

/// `INFO <section>` (or `CLUSTER INFO`) of one node as key/value pairs; `None` if it does not
/// answer.
fn info(port: u16, cmd: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut c = connection(port)?;
    let mut q = redis::cmd(cmd[0]);
    for a in &cmd[1..] {
        q.arg(*a);
    }
    let text: String = q.query(&mut c).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

impl RedisCluster {
    /// Three masters with one replica each, formed and healthy.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        let ports = free_ports(12);
        for i in 0..6 {
            let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            nodes.push(Node {
                port,
                bus,
                dir: node_dir,
                server: None,
            });
        }
        let mut cluster = RedisCluster { _dir: dir, nodes };
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create
            .output()
            .unwrap_or_else(|e| panic!("redis-cli must be installed (see README): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy(6);
        cluster
    }

    fn start_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        assert!(n.server.is_none(), "node {} is already running", n.port);
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(n.port.to_string())
            .args(["--cluster-enabled", "yes", "--cluster-port"])
            .arg(n.bus.to_string())
            .args(["--cluster-config-file"])
            .arg(n.dir.join("nodes.conf"))
            .args(["--cluster-node-timeout"])
            .arg(NODE_TIMEOUT_MS.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&n.dir);
        let mut server = ProcessGuard::try_spawn(&format!("redis-server :{}", n.port), &mut cmd)
            .unwrap_or_else(|e| panic!("redis-server must be installed (see README): {e}"));
        let port = n.port;
        server.wait_until("answer PING", Duration::from_secs(10), || {
            connection(port)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        n.server = Some(server);
    }

    /// Waits until every running node reports `cluster_state:ok` and knows `known` nodes, and
    /// every running replica's link to its master is up.
    pub fn wait_healthy(&self, known: usize) {
        let running: Vec<u16> = self.running_ports();
        wait_for("the Redis cluster to be healthy", FORM, || {
            for &port in &running {
                let ci = info(port, &["CLUSTER", "INFO"])?;
                if ci.get("cluster_state").map(String::as_str) != Some("ok")
                    || ci.get("cluster_slots_ok").map(String::as_str) != Some("16384")
                    || ci.get("cluster_known_nodes") != Some(&known.to_string())
                {
                    return None;
                }
                let repl = info(port, &["INFO", "replication"])?;
                if repl.get("role").map(String::as_str) == Some("slave")
                    && repl.get("master_link_status").map(String::as_str) != Some("up")
                {
                    return None;
                }
            }
            let roles = self.roles();
            let masters = roles.iter().filter(|r| r.master && !r.failed).count();
            (masters == 3).then_some(())
        });
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Seed URLs for a cluster client: every node, `redis://127.0.0.1:<port>`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Every node's role, as a running node's `CLUSTER NODES` has it.
    pub fn roles(&self) -> Vec<NodeRole> {
        let Some(text) = self.running_ports().into_iter().find_map(|p| {
            let mut c = connection(p)?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut c)
                .ok()
        }) else {
            return Vec::new();
        };
        // <id> <ip:port@bus> <flags> <master id|-> <ping> <pong> <epoch> <state> <slots…>
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() >= 8)
            .collect();
        let port_of = |addr: &str| -> u16 {
            addr.split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let by_id: BTreeMap<&str, u16> = rows.iter().map(|f| (f[0], port_of(f[1]))).collect();
        rows.iter()
            .map(|f| NodeRole {
                port: port_of(f[1]),
                master: f[2].split(',').any(|x| x == "master"),
                master_port: by_id.get(f[3]).copied(),
                failed: f[2].split(',').any(|x| x == "fail" || x == "fail?"),
            })
            .collect()
    }

    /// The ports of the masters that serve slots now.
    pub fn masters(&self) -> Vec<u16> {
        self.roles()
            .into_iter()
            .filter(|r| r.master && !r.failed)
            .map(|r| r.port)
            .collect()
    }

    /// A connection to one node (`READONLY` is not sent: use masters for reads).
    pub fn node(&self, port: u16) -> redis::Connection {
        connection(port).unwrap_or_else(|| panic!("node {port} does not answer"))
    }

    /// Kills one node as a crash would.
    pub fn kill(&mut self, port: u16) {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on {port}"));
        if let Some(mut s) = n.server.take() {
            s.kill();
        }
    }

    /// Starts a killed node again on the same ports, with its cluster config (it rejoins as
    /// a replica of whoever took over its slots).
    pub fn revive(&mut self, port: u16) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on {port}"));
        self.start_node(i);
    }

    /// The master port serving `key`'s slot, as every running node sees it (polled: after
    /// a failover the nodes learn the new owner one gossip round after another).
    pub fn master_of(&self, key: &str) -> u16 {
        wait_for(&format!("one master to serve {key}"), FORM, || {
            let mut owner = None;
            for port in self.running_ports() {
                let o = slot_owner(port, key)?;
                if owner.is_some_and(|p| p != o) {
                    return None;
                }
                owner = Some(o);
            }
            owner
        })
    }
}

/// The master serving `key`'s slot as the node on `port` sees it.
fn slot_owner(port: u16, key: &str) -> Option<u16> {
    let mut c = connection(port)?;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut c)
        .ok()?;
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok()?;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        for range in f[8..].iter().filter(|r| !r.starts_with('[')) {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
            if (a..=b).contains(&slot) {
                return f[1].split('@').next()?.rsplit(':').next()?.parse().ok();
            }
        }
    }
    None
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut s) = n.server.take() {
                s.kill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_forms_and_fails_over_a_killed_master() {
        let mut cluster = RedisCluster::start();
        assert_eq!(cluster.urls().len(), 6);
        let roles = cluster.roles();
        assert_eq!(roles.iter().filter(|r| r.master).count(), 3, "{roles:?}");
        assert!(roles
            .iter()
            .filter(|r| !r.master)
            .all(|r| r.master_port.is_some()));
        // A key lands on the master serving its slot, and its replica takes over when that
        // master is killed.
        let master = cluster.master_of("sess:abc");
        let mut c = cluster.node(master);
        redis::cmd("SET")
            .arg("sess:abc")
            .arg("1")
            .query::<()>(&mut c)
            .unwrap();
        redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query::<i64>(&mut c)
            .unwrap();
        cluster.kill(master);
        let killed = std::time::Instant::now();
        wait_for("a replica to take over", FORM, || {
            let masters = cluster.masters();
            (masters.len() == 3 && !masters.contains(&master)).then_some(())
        });
        eprintln!(
            "cluster failover (node timeout {NODE_TIMEOUT_MS} ms): {:?} from kill to a new master",
            killed.elapsed()
        );
        let now = cluster.master_of("sess:abc");
        assert_ne!(now, master);
        let v: Option<String> = redis::cmd("GET")
            .arg("sess:abc")
            .query(&mut cluster.node(now))
            .unwrap();
        assert_eq!(
            v.as_deref(),
            Some("1"),
            "the replicated key survived the failover"
        );
    }
}
