//! Polling with a deadline. Servers started for a test or a bench come up in their own time
//! (a child process, a thread running Pingora); everything that waits for one polls the same
//! way and fails the same way: a panic that names what never happened.

use std::time::{Duration, Instant};

/// How often the waits here poll.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `f` until it gives a value, and returns it; panics with "`what` did not come up
/// within `timeout`" when it has not by then.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("{what} did not come up within {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it is true; panics like [`wait_for`] when it is not within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, timeout, || f().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = wait_for("three", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "never did not come up within")]
    fn panics_with_what_it_waited_for() {
        wait_until("never", Duration::from_millis(30), || false);
    }
}
