//! The access log: one line per request on stdout (`[log] access = "json" | "text"`), written
//! from Pingora's `logging` phase, which runs once for every request however it ended. The
//! diagnostic log stays on stderr, through `tracing` (`[log] format`).
//!
//! A line holds the time, the request id, the client, the method, the normalised path (never
//! the query, which may carry secrets), the route, the status, the upstream server, the total
//! and upstream durations, the [`Auth`] outcome, the session id's 6-character prefix and the
//! body bytes sent. Never a cookie, a token or a whole session id.
//!
//! Lines go through a bounded queue to a writer thread, so that a slow stdout (a pipe nobody
//! reads fast enough) never stalls a request: when the queue is full the line is dropped and
//! counted (`sessiongate_access_log_dropped_total`). The writer takes the lines in batches,
//! every 10 ms under load, each batch one write: a request never waits for it, nor wakes it.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::Serialize;

use crate::sessions::Lookup;

/// Lines waiting for the writer thread before new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// How long the writer lets lines gather after writing a batch: a line is written at most this
/// late (plus the write), and the queue holds `QUEUE` lines per pause, over a million a second.
const BATCH: Duration = Duration::from_millis(10);

/// The `[log]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogSettings {
    pub access: AccessFormat,
    /// The diagnostic log's format (stderr).
    pub format: LogFormat,
}

/// `[log] access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    #[default]
    Off,
    Json,
    Text,
}

/// `[log] format`: the diagnostic log on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How a request's session was settled: the `auth` of the access log and of
/// `sessiongate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A public route: no session was looked up.
    Public,
    /// From the local cache.
    Cache,
    /// From the store.
    Store,
    /// No session cookie or token.
    Missing,
    /// A cookie or token whose signature does not verify.
    Invalid,
    /// A verified id the store does not hold (expired, logged out, revoked).
    Expired,
    /// The store failed or timed out (the answer was a 503).
    StoreError,
}

impl Auth {
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::Public => "public",
            Auth::Cache => "cache",
            Auth::Store => "store",
            Auth::Missing => "missing",
            Auth::Invalid => "invalid",
            Auth::Expired => "expired",
            Auth::StoreError => "store_error",
        }
    }
}

impl From<Lookup> for Auth {
    fn from(l: Lookup) -> Self {
        match l {
            Lookup::Missing => Auth::Missing,
            Lookup::Invalid => Auth::Invalid,
            Lookup::Expired => Auth::Expired,
            Lookup::Cache => Auth::Cache,
            Lookup::Store => Auth::Store,
        }
    }
}

/// One access-log line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// The normalised path, as the upstream gets it; `None` for a refused request target.
    pub path: Option<&'a str>,
    /// The route's path; `None` when no route was chosen.
    pub route: Option<&'a str>,
    /// 0 when the client went away before any answer.
    pub status: u16,
    /// The upstream server that answered (or was tried last).
    pub upstream: Option<SocketAddr>,
    #[serde(serialize_with = "millis")]
    pub duration_ms: Duration,
    #[serde(serialize_with = "opt_millis")]
    pub upstream_ms: Option<Duration>,
    #[serde(serialize_with = "opt_auth")]
    pub auth: Option<Auth>,
    /// The first 6 characters of the session id the request carried.
    pub session: Option<&'a str>,
    /// Body bytes sent to the client.
    pub bytes: usize,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(ms(*d)),
        None => s.serialize_none(),
    }
}

fn opt_auth<S: serde::Serializer>(a: &Option<Auth>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.serialize_str(a.as_str()),
        None => s.serialize_none(),
    }
}

impl Entry<'_> {
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("an entry is plain data")
    }

    /// `TIME ID CLIENT "METHOD PATH" STATUS route=… upstream=… duration_ms=… upstream_ms=…
    /// auth=… session=… bytes=…`, with `-` for what is absent.
    pub fn text(&self) -> String {
        fn or_dash(v: Option<impl std::fmt::Display>) -> String {
            v.map_or_else(|| "-".to_string(), |v| v.to_string())
        }
        format!(
            "{} {} {} \"{} {}\" {} route={} upstream={} duration_ms={} upstream_ms={} auth={} session={} bytes={}",
            humantime::format_rfc3339_millis(self.time),
            self.request_id,
            or_dash(self.client),
            self.method,
            self.path.unwrap_or("-"),
            self.status,
            self.route.unwrap_or("-"),
            or_dash(self.upstream),
            ms(self.duration_ms),
            or_dash(self.upstream_ms.map(ms)),
            self.auth.map_or("-", Auth::as_str),
            self.session.unwrap_or("-"),
            self.bytes,
        )
    }
}

/// Where access-log lines go: stdout, or (for embedding and tests) any writer.
pub type Sink = Box<dyn Write + Send>;

/// The access log of one gate.
pub struct AccessLog {
    format: AccessFormat,
    lines: Option<SyncSender<String>>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer thread when `format` is not `Off`; `sink` defaults to stdout.
    pub fn start(format: AccessFormat, sink: Option<Sink>, dropped: IntCounter) -> Self {
        let lines = (format != AccessFormat::Off).then(|| {
            let (tx, rx) = sync_channel(QUEUE);
            let sink = sink.unwrap_or_else(|| Box::new(std::io::stdout()));
            std::thread::Builder::new()
                .name("sessiongate access log".into())
                .spawn(move || write_lines(rx, sink))
                .expect("a thread can be started");
            tx
        });
        Self {
            format,
            lines,
            dropped,
        }
    }

    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    pub fn write(&self, entry: &Entry) {
        let Some(lines) = &self.lines else { return };
        let line = match self.format {
            AccessFormat::Json => entry.json(),
            AccessFormat::Text => entry.text(),
            AccessFormat::Off => return,
        };
        match lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The writer thread: lines in order, flushed whenever the queue runs empty, then a pause of
/// [`BATCH`] before it waits again; ends with the gate (when every sender is gone).
///
/// The pause is what keeps the log off the request path: a request's line wakes the writer
/// only when the writer is parked in `recv`, and a writer that drained the queue at once would
/// be parked for nearly every line, so every request would pay a wake-up (a futex call and a
/// thread switch). Pausing, it is woken once per batch, and writes each batch with one call.
fn write_lines(rx: Receiver<String>, sink: Sink) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(line) = next {
            if writeln!(out, "{line}").is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
        std::thread::sleep(BATCH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
            request_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            client: Some("203.0.113.9".parse().unwrap()),
            method: "GET",
            path: Some("/account/a%20b"),
            route: Some("/account"),
            status: 200,
            upstream: Some("127.0.0.1:3000".parse().unwrap()),
            duration_ms: Duration::from_micros(1234),
            upstream_ms: Some(Duration::from_micros(812)),
            auth: Some(Auth::Store),
            session: Some("AbC123"),
            bytes: 57,
        }
    }

    #[test]
    fn a_json_line_has_every_field() {
        let v: serde_json::Value = serde_json::from_str(&entry().json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2025-11-24T16:00:00.123Z",
                "request_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "client": "203.0.113.9",
                "method": "GET",
                "path": "/account/a%20b",
                "route": "/account",
                "status": 200,
                "upstream": "127.0.0.1:3000",
                "duration_ms": 1.234,
                "upstream_ms": 0.812,
                "auth": "store",
                "session": "AbC123",
                "bytes": 57
            })
        );
    }

    #[test]
    fn a_text_line_reads_left_to_right_with_dashes_for_what_is_absent() {
        assert_eq!(
            entry().text(),
            "2025-11-24T16:00:00.123Z 4bf92f3577b34da6a3ce929d0e0e4736 203.0.113.9 \"GET /account/a%20b\" 200 route=/account upstream=127.0.0.1:3000 duration_ms=1.234 upstream_ms=0.812 auth=store session=AbC123 bytes=57"
        );
        let refused = Entry {
            path: None,
            route: None,
            upstream: None,
            upstream_ms: None,
            auth: None,
            session: None,
            status: 400,
            ..entry()
        };
        assert!(refused
            .text()
            .ends_with("\"GET -\" 400 route=- upstream=- duration_ms=1.234 upstream_ms=- auth=- session=- bytes=57"));
    }

    #[test]
    fn lines_reach_the_sink_in_order_and_a_full_queue_drops_and_counts() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = AccessLog::start(
            AccessFormat::Json,
            Some(Box::new(sink.clone())),
            dropped.clone(),
        );
        for status in [200, 401, 503] {
            log.write(&Entry { status, ..entry() });
        }
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            if text.lines().count() == 3 {
                let statuses: Vec<u64> = text
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                            .as_u64()
                            .unwrap()
                    })
                    .collect();
                assert_eq!(statuses, [200, 401, 503]);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(dropped.get(), 0);
        let off = AccessLog::start(AccessFormat::Off, None, dropped);
        assert!(!off.enabled());
    }
}
