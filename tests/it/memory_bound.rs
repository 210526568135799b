//! Memory bounds that hold: what the local cache and the embedded store count for a session
//! against what it really costs, measured with a counting allocator; and the embedded store at
//! its bound refusing new logins (503 `store_full`) while the sessions it holds keep working.
//!
//! The measuring tests count, per thread, the bytes mimalloc (the gate's allocator) really
//! hands out (`mi_usable_size`, so size classes count too) while they build N entries, so
//! the other tests of this binary, running on other threads, do not disturb them.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sessiongate::footprint::{
    cache_entry_weight, sample_session, Cache, MemorySettings, MemoryStore, SessionRecord,
};
use sessiongate::hot_path::{CookiePolicy, SameSite, Secure};

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

/// mimalloc, counting what each thread holds while its count is on.
struct Counting;

#[global_allocator]
static ALLOC: Counting = Counting;

thread_local! {
    /// Net bytes this thread allocated while counting (`None`: not counting).
    static HELD: Cell<Option<i64>> = const { Cell::new(None) };
}

extern "C" {
    fn mi_usable_size(p: *const std::ffi::c_void) -> usize;
}

fn count(delta: i64) {
    let _ = HELD.try_with(|h| {
        if let Some(n) = h.get() {
            h.set(Some(n + delta));
        }
    });
}

fn usable(p: *mut u8) -> i64 {
    // SAFETY: `p` came from mimalloc and is live.
    unsafe { mi_usable_size(p.cast()) as i64 }
}

// SAFETY: every call goes to mimalloc as it is; only the counting is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(layout);
        if !p.is_null() {
            count(usable(p));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            count(usable(p));
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        count(-usable(p));
        mimalloc::MiMalloc.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = usable(p);
        let q = mimalloc::MiMalloc.realloc(p, layout, new_size);
        if !q.is_null() {
            count(usable(q) - old);
        }
        q
    }
}

/// What `f` leaves allocated on this thread, in bytes.
fn held_after<T>(f: impl FnOnce() -> T) -> (T, i64) {
    HELD.with(|h| h.set(Some(0)));
    let out = f();
    let held = HELD.with(|h| h.replace(None)).unwrap_or(0);
    (out, held)
}

const N: usize = 20_000;
/// The most the weight may be off what an entry really costs.
const TOLERANCE: f64 = 0.25;

fn cookie() -> CookiePolicy {
    CookiePolicy {
        path: "/".into(),
        domain: None,
        http_only: true,
        secure: Secure::Auto,
        same_site: Some(SameSite::Lax),
        max_age: Some(Duration::from_secs(1800)),
    }
}

/// Session shapes: a 200-byte one, a login as the gate makes it, 4 KiB of fields, 4 KiB in
/// one string.
fn shapes() -> Vec<(&'static str, String)> {
    let small = json!({
        "cookie": {"originalMaxAge": 1800000, "expires": "2026-12-03T15:00:00.000Z",
                   "httpOnly": true, "path": "/", "sameSite": "lax"},
        "user": "alice",
        "roles": ["admin", "dev"],
        "sessiongate": {"created": 1790000000000u64}
    })
    .to_string();
    let blob = json!({
        "cookie": {"originalMaxAge": 1800000, "expires": "2026-12-03T15:00:00.000Z",
                   "httpOnly": true, "path": "/", "sameSite": "lax"},
        "user": "alice",
        "blob": "x".repeat(3900),
    })
    .to_string();
    vec![
        ("200 B", small),
        ("login", sample_session(&cookie(), "user", 0).to_json()),
        (
            "4 KiB fields",
            sample_session(&cookie(), "user", 3900).to_json(),
        ),
        ("4 KiB string", blob),
    ]
}

fn sids() -> Vec<String> {
    (0..N).map(|i| format!("{i:0>32}")).collect()
}

fn within(what: &str, weighed: f64, real: f64) {
    let off = (weighed - real) / real;
    eprintln!(
        "{what}: weighed {weighed:.0} B, really {real:.0} B ({:+.1} %)",
        off * 100.0
    );
    assert!(
        off.abs() <= TOLERANCE,
        "{what}: the weight ({weighed:.0} B) is {:+.1} % off what an entry really costs ({real:.0} B)",
        off * 100.0
    );
}

#[test]
fn a_cached_session_weighs_what_it_costs() {
    for (shape, json) in shapes() {
        let sids = sids();
        let one = SessionRecord::parse(&json).unwrap();
        let weight = cache_entry_weight(&sids[0], &one);
        // Room for all with some to spare, so that nothing is evicted and moka's frequency
        // sketch (made once the cache is half full) is made and counted.
        let cache = Cache::new(weight * N as u64 * 3 / 2);
        let (_, held) = held_after(|| {
            for sid in &sids {
                let record = Arc::new(SessionRecord::parse(&json).unwrap());
                cache.insert(sid, record);
            }
            cache.entries()
        });
        assert_eq!(
            cache.entries(),
            N as u64,
            "{shape}: all admitted, none evicted"
        );
        assert!(cache.contains(&sids[N - 1]));
        let weighed = cache.bytes() as f64 / N as f64;
        within(
            &format!("cache, {shape} ({} B of JSON)", json.len()),
            weighed,
            held as f64 / N as f64,
        );
    }
}

#[test]
fn a_stored_session_weighs_what_it_costs() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (shape, json) in shapes() {
        let sids = sids();
        let store = MemoryStore::with_settings(
            &MemorySettings {
                max_bytes: u64::MAX,
            },
            Default::default(),
        );
        let (_, held) = held_after(|| {
            rt.block_on(async {
                for sid in &sids {
                    use sessiongate::footprint::SessionStore;
                    store
                        .save(sid, &json, Duration::from_secs(600), Some("alice"), None)
                        .await
                        .unwrap();
                }
            })
        });
        let (bytes, sessions) = store.usage();
        assert_eq!(sessions, N);
        within(
            &format!("embedded store, {shape} ({} B of JSON)", json.len()),
            bytes as f64 / N as f64,
            held as f64 / N as f64,
        );
    }
}

/// At its bound the embedded store refuses a new login with 503 `store_full` and
/// Retry-After, counted; the sessions it holds keep working, and logging one out makes room.
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_at_its_bound_refuses_new_logins_and_keeps_the_others() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .table("[memory]\nmax_bytes = 65536")
            .admin(ADMIN),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut first = gate.client();
    login(&mut first, "first", &[]).await;
    // Log in until the store refuses: 64 KiB hold a few dozen sessions.
    let mut held = vec![];
    let refused = loop {
        let mut c = gate.client();
        let r = c.post("/login?issue=%7B%22user%22%3A%22u%22%7D").await;
        if r.status != 200 {
            break r;
        }
        held.push(c);
        assert!(held.len() < 1000, "the bound never refused a login");
    };
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "store_full");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert!(
        refused.set_cookie("connect.sid").is_none(),
        "no cookie for a session that was not stored"
    );
    assert!(
        held.len() >= 10,
        "only {} sessions fit in 64 KiB",
        held.len()
    );
    assert_eq!(
        admin_metric(
            admin,
            ADMIN,
            r#"sessiongate_refusals_total{reason="store_full"}"#
        )
        .await,
        1
    );
    let bytes = admin_metric(admin, ADMIN, "sessiongate_store_bytes").await;
    assert!(bytes <= 65536 && bytes > 60000, "{bytes} bytes held");
    assert_eq!(
        admin_metric(admin, ADMIN, "sessiongate_store_sessions").await,
        held.len() as u64 + 1
    );
    // Every earlier session still works: nothing was evicted for the newcomer.
    assert_eq!(first.get("/account/").await.status, 200);
    for c in &mut held {
        assert_eq!(c.get("/account/").await.status, 200);
    }
    // A logout makes room for a new login.
    assert_eq!(first.post("/logout").await.status, 204);
    let mut late = gate.client();
    login(&mut late, "late", &[]).await;
    assert_eq!(late.get("/account/").await.status, 200);
}
