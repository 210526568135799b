//! Health probes and the drain, for orchestrators and load balancers.
//!
//! - `GET /healthz` (liveness) answers 200 while the process serves at all.
//! - `GET /readyz` (readiness) answers 200 when the gate should get traffic: its config is
//!   loaded (it is, once it serves), the session store answers a bounded ping, and it is not
//!   draining. Otherwise 503, and 200 again by itself once the store is back. The ping's
//!   answer is kept for [`STORE_CHECK_TTL`], and probes that arrive while one is under way
//!   wait for it: however many probes come (they need no token), the store sees at most one
//!   ping a second from them.
//!
//! Both are on the admin listener and need no token. A drain starts with SIGTERM: readiness
//! turns 503 at once, and the gate goes on accepting and serving for `server.drain_delay`
//! (so that a load balancer polling `/readyz` takes it out of rotation before it stops
//! accepting), then stops accepting and lets requests in flight finish for
//! `server.grace_period`. A SIGINT (or a second SIGTERM) during the delay ends it early.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};

use crate::sessions::Sessions;

/// Set once a drain (or any shutdown) has begun; never cleared.
#[derive(Debug, Default)]
pub struct Draining(AtomicBool);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, SeqCst);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(SeqCst)
    }
}

/// How long `/readyz` believes the store's last answer.
pub const STORE_CHECK_TTL: Duration = Duration::from_secs(1);

/// The store's last answer to a readiness ping, and when it came.
#[derive(Default)]
pub struct StoreCheck(tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>);

impl StoreCheck {
    /// The store's answer, at most [`STORE_CHECK_TTL`] old; one ping at a time.
    async fn answer(&self, sessions: &Sessions) -> Result<(), String> {
        let mut last = self.0.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < STORE_CHECK_TTL {
                return answer.clone();
            }
        }
        let answer = sessions.ping().await.map_err(|e| e.to_string());
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// What `/readyz` answers: the status and its JSON body.
pub async fn readiness(
    draining: &Draining,
    check: &StoreCheck,
    sessions: &Sessions,
) -> (u16, Value) {
    if draining.is_on() {
        return (
            503,
            json!({ "status": "draining", "store": "not checked", "draining": true }),
        );
    }
    match check.answer(sessions).await {
        Ok(()) => (
            200,
            json!({ "status": "ready", "store": "ok", "draining": false }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the session store does not answer");
            (
                503,
                json!({ "status": "store_unavailable", "store": "unreachable", "draining": false }),
            )
        }
    }
}

/// Turns SIGTERM (from `inner`) into a drain: readiness off at once, then `delay` of normal
/// service before Pingora's graceful shutdown.
pub struct DrainSignal {
    pub inner: Box<dyn ShutdownSignalWatch + Send + Sync>,
    pub draining: Arc<Draining>,
    pub delay: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        let signal = self.inner.recv().await;
        if !matches!(signal, ShutdownSignal::GracefulTerminate) {
            return signal;
        }
        self.draining.start();
        tracing::info!(
            drain_delay = ?self.delay,
            "draining: /readyz answers 503; requests are served for server.drain_delay, then in-flight ones get server.grace_period"
        );
        if self.delay.is_zero() {
            return signal;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => signal,
            // A second signal ends the wait: SIGINT at once, SIGTERM gracefully.
            next = self.inner.recv() => next,
        }
    }
}

/// Turns readiness off when any shutdown starts (an upgrade's hand-over too): a Pingora
/// background service.
pub struct DrainWatch(pub Arc<Draining>);

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        self.0.start();
    }
}
