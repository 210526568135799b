//! The "working set larger than the cache" rows: `BENCH_WORKING_SET` sessions (100 000) of
//! about 200 bytes written straight into Redis as a gate would have written them (so that no
//! load stamps or rewrites one), and the load generator cycling over all of them, or drawing
//! them from a Zipf distribution (exponent [`ZIPF_S`], rank 1 the most asked), with the
//! cache on and off. 16 MiB of cache hold some 5 400 such sessions (3.1 KB each, parsed):
//! 100 000 are 18 times that.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http::HeaderValue;
use sessiongate::hot_path::{encode_value, Signer};

use crate::processes::BenchRedis;
use crate::SECRET;

/// The Zipf exponent: YCSB's.
pub const ZIPF_S: f64 = 0.99;

/// How a row picks the session of each request.
#[derive(Clone)]
pub struct Mix {
    cookies: Arc<Vec<HeaderValue>>,
    /// The Zipf distribution's cumulative weights by rank; `None`: cycle.
    cdf: Option<Arc<Vec<f64>>>,
    next: Arc<AtomicUsize>,
    rng: Arc<AtomicU64>,
}

impl Mix {
    pub fn cycling(cookies: &Arc<Vec<HeaderValue>>) -> Self {
        Self {
            cookies: cookies.clone(),
            cdf: None,
            next: Arc::default(),
            rng: Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15)),
        }
    }

    pub fn zipf(cookies: &Arc<Vec<HeaderValue>>) -> Self {
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = (1..=cookies.len())
            .map(|k| {
                sum += 1.0 / (k as f64).powf(ZIPF_S);
                sum
            })
            .collect();
        for c in &mut cdf {
            *c /= sum;
        }
        Self {
            cdf: Some(Arc::new(cdf)),
            ..Self::cycling(cookies)
        }
    }

    /// The cookie for the next request.
    pub fn pick(&self) -> &HeaderValue {
        let i = match &self.cdf {
            None => self.next.fetch_add(1, Relaxed) % self.cookies.len(),
            Some(cdf) => {
                // splitmix64 over a shared counter: cheap, and the same for every row.
                let mut z = self
                    .rng
                    .fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
                    .wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
            }
        };
        &self.cookies[i]
    }
}

/// Writes `n` sessions into Redis and returns their cookies (`connect.sid=…`).
pub fn seed(redis: &mut BenchRedis, n: usize) -> Arc<Vec<HeaderValue>> {
    eprintln!("load bench: writing {n} sessions into Redis for the working-set rows ...");
    let now = now_ms();
    seed_sessions(redis, "ws", n, |i| small_session(i, now))
}

/// The working set's session: about 200 bytes of JSON, as a gate's login writes it.
pub fn small_session(i: usize, now: u64) -> String {
    serde_json::json!({
        "cookie": {"originalMaxAge": 1_800_000, "expires": "2030-01-01T00:00:00.000Z",
                   "httpOnly": true, "path": "/", "sameSite": "lax"},
        "user": format!("user{i}"),
        "roles": ["reader"],
        "sessiongate": {"created": now}
    })
    .to_string()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes `n` sessions (`json(i)`, ids `<id_prefix>000…i`, 32 characters as express-session
/// makes them) into Redis, 10 000 to a pipeline, and returns their cookies (`connect.sid=…`).
pub fn seed_sessions(
    redis: &mut BenchRedis,
    id_prefix: &str,
    n: usize,
    json: impl Fn(usize) -> String,
) -> Arc<Vec<HeaderValue>> {
    let signer = Signer::new(&[SECRET.as_bytes().to_vec()]);
    let width = 32usize.saturating_sub(id_prefix.len());
    let mut cookies = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = n.min(start + 10_000);
        let mut pipe = redis::pipe();
        for i in start..end {
            let sid = format!("{id_prefix}{i:0>width$}");
            pipe.cmd("SET")
                .arg(format!("sess:{sid}"))
                .arg(json(i))
                .arg("EX")
                .arg(1800)
                .ignore();
            let cookie = format!("connect.sid={}", encode_value(&signer.sign(&sid)));
            cookies.push(HeaderValue::from_str(&cookie).unwrap());
        }
        pipe.query::<()>(&mut redis.con).expect("seed sessions");
        start = end;
    }
    Arc::new(cookies)
}
