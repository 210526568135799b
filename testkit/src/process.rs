//! Child processes that never outlive what started them. Tests and benches run `redis-server`,
//! the release gate, nginx and Node as children; a failed assertion, a panic, a Ctrl-C or a
//! watchdog's `exit` must not leave any of them running, holding ports and CPU. And when one
//! of them fails, the failure message should say why, with the end of its own output.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait::POLL;

/// How long a [`ProcessGuard::graceful`] child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// A child process, killed when the guard is dropped (also while unwinding from a panic) and,
/// on Linux, when the thread that started it ends (PR_SET_PDEATHSIG with SIGKILL): so also
/// when the test or bench process dies however it dies. Keep the guard on the thread that
/// spawned it (a test's own thread, a bench's main thread), not on a pool thread that may end
/// before the guard is dropped.
///
/// Its stdout and stderr go to one log file, whose end failure messages quote.
pub struct ProcessGuard {
    name: String,
    child: Child,
    log: tempfile::NamedTempFile,
    /// SIGTERM first (nginx: its master stops its workers), then SIGKILL.
    graceful: bool,
    /// Waited for: nothing left to kill.
    reaped: bool,
}

impl ProcessGuard {
    /// Starts `cmd` as `name` (for messages), with stdin from `/dev/null` and stdout and
    /// stderr in the guard's log. Panics when it cannot start.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        Self::try_spawn(name, cmd)
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()))
    }

    /// [`ProcessGuard::spawn`], with the error when the program cannot be started.
    pub fn try_spawn(name: &str, cmd: &mut Command) -> io::Result<Self> {
        let log = tempfile::Builder::new()
            .prefix(&format!("{}-", name.replace(['/', ' '], "_")))
            .suffix(".log")
            .tempfile()?;
        // One open file for both, so that they share its offset and neither overwrites the other.
        let out = log.reopen()?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent died before the prctl: nothing would ever kill this child.
                    if libc::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn()?;
        Ok(ProcessGuard {
            name: name.into(),
            child,
            log,
            graceful: false,
            reaped: false,
        })
    }

    /// On drop, SIGTERM first and SIGKILL only after 3 s: for servers whose own children must
    /// be stopped by them (nginx's master and its workers).
    pub fn graceful(mut self) -> Self {
        self.graceful = true;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file holding the child's stdout and stderr (removed with the guard).
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// The last `lines` lines of the child's output so far.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(self.log.path(), lines)
    }

    /// How it ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with the end of the child's output when it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exit_status() {
            panic!(
                "{} exited ({status}); its log ({}):\n{}",
                self.name,
                self.log_path().display(),
                self.log_tail(40)
            );
        }
    }

    /// Polls `f` until it is true, checking that the child still runs. Panics with "`name`
    /// did not `what` within `within`" and the end of its output otherwise.
    pub fn wait_until(&mut self, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + within;
        loop {
            self.assert_running();
            if f() {
                return;
            }
            assert!(
                Instant::now() < until,
                "{} did not {what} within {within:?}; its log ({}):\n{}",
                self.name,
                self.log_path().display(),
                self.log_tail(40)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the child accepts connections on 127.0.0.1:`port`.
    pub fn wait_for_port(&mut self, port: u16, within: Duration) {
        self.wait_until(&format!("listen on 127.0.0.1:{port}"), within, || {
            crate::port_open(port)
        });
    }

    /// Peak resident set size (VmHWM) in KiB, while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Stops the child now (SIGKILL) and waits for it. Dropping the guard does the same.
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    fn terminate(&mut self) {
        if self.reaped || self.exit_status().is_some() {
            self.reaped = true;
            return;
        }
        // SAFETY: a plain kill(2) of our own, not yet reaped, child.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + GRACE;
        while Instant::now() < until {
            if self.exit_status().is_some() {
                self.reaped = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.graceful {
            self.terminate();
        }
        self.kill();
    }
}

/// A `key:` line of `/proc/<pid>/status` in KiB (`VmHWM:`, `VmRSS:`), while `pid` runs.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `program` is an executable file in a `PATH` directory.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_dead_child_is_reported_with_its_output() {
        let mut p = ProcessGuard::spawn("failing", &mut sh("echo out; echo err >&2; exit 3"));
        let status = crate::wait_for("the exit", Duration::from_secs(5), || p.exit_status());
        assert_eq!(status.code(), Some(3));
        assert_eq!(p.log_tail(2), "out\nerr");
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.assert_running()))
            .unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(msg.starts_with("failing exited"), "{msg}");
        assert!(msg.ends_with("out\nerr"), "{msg}");
    }

    #[test]
    fn dropping_the_guard_kills_the_child() {
        let p = ProcessGuard::spawn("sleeper", &mut sh("exec sleep 60"));
        let pid = p.pid();
        assert!(status_kib(pid, "VmRSS:").is_some());
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_graceful_child_gets_sigterm() {
        let mut p = ProcessGuard::spawn(
            "trapper",
            &mut sh("trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done"),
        )
        .graceful();
        let path = p.log_path().to_path_buf();
        p.wait_until("start", Duration::from_secs(5), || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("up")
        });
        let start = Instant::now();
        drop(p);
        assert!(start.elapsed() < GRACE, "it stopped on SIGTERM");
    }
}
