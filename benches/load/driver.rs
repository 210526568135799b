//! The load generator: closed loop, keep-alive, one request in flight per connection, like
//! wrk; latencies of the measured window in an HdrHistogram; Redis INFO commandstats around
//! the window.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sessiongate_testkit::ProcessGuard;

use crate::opts::Opts;
use crate::processes::BenchRedis;
use crate::report::Row;
use crate::workset::Mix;

#[derive(Default)]
pub struct LoadStats {
    /// Latency of every request completed in the window, in microseconds.
    pub hist: Option<Histogram<u64>>,
    pub ok: u64,
    pub non_2xx: u64,
    pub transport_errors: u64,
    pub elapsed: Duration,
}

impl LoadStats {
    pub fn requests(&self) -> u64 {
        self.ok + self.non_2xx
    }
    pub fn req_per_sec(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.hist
            .as_ref()
            .map_or(f64::NAN, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

pub struct Target {
    pub port: u16,
    pub path: &'static str,
    pub cookie: Option<String>,
    /// Many sessions, one picked per request (the working-set rows); `cookie` is then unused.
    pub mix: Option<Mix>,
}

impl Target {
    /// `/public/data` on `port`, without a session.
    pub fn public(port: u16) -> Self {
        Target {
            port,
            path: "/public/data",
            cookie: None,
            mix: None,
        }
    }
}

pub fn client_runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    }
}

pub fn drive(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    connections: usize,
    length: Duration,
) -> LoadStats {
    drive_as(rt, target, None, connections, length)
}

/// [`drive`], with `host` as the `Host` header (else `127.0.0.1:<port>`): a host route.
pub fn drive_as(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    host: Option<&str>,
    connections: usize,
    length: Duration,
) -> LoadStats {
    let addr: SocketAddr = ([127, 0, 0, 1], target.port).into();
    let host = host.map_or_else(|| format!("127.0.0.1:{}", target.port), str::to_string);
    let mut headers = vec![
        (header::HOST, HeaderValue::from_str(&host).unwrap()),
        (
            header::USER_AGENT,
            HeaderValue::from_static("sessiongate-load/1"),
        ),
        (header::ACCEPT, HeaderValue::from_static("application/json")),
    ];
    if let Some(c) = &target.cookie {
        headers.push((
            header::COOKIE,
            HeaderValue::from_str(&format!("_ga=GA1.2.1234567890.1700000000; {c}")).unwrap(),
        ));
    }
    let path = target.path;
    let mix = target.mix.clone();
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let until = start + length;
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let headers = headers.clone();
                tokio::spawn(connection_loop(addr, path, headers, mix.clone(), until))
            })
            .collect();
        let mut total = LoadStats {
            hist: Some(new_hist()),
            ..Default::default()
        };
        for t in tasks {
            let s = t.await.expect("a load task panicked");
            total.ok += s.ok;
            total.non_2xx += s.non_2xx;
            total.transport_errors += s.transport_errors;
            total
                .hist
                .as_mut()
                .unwrap()
                .add(s.hist.as_ref().unwrap())
                .unwrap();
        }
        total.elapsed = length;
        total
    })
}

async fn connection_loop(
    addr: SocketAddr,
    path: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    mix: Option<Mix>,
    until: tokio::time::Instant,
) -> LoadStats {
    let mut stats = LoadStats {
        hist: Some(new_hist()),
        ..Default::default()
    };
    let hist = stats.hist.as_mut().unwrap();
    let per_request = Duration::from_secs(5);
    'connect: while tokio::time::Instant::now() < until {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                stats.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            stats.transport_errors += 1;
            continue;
        };
        tokio::spawn(conn);
        loop {
            if sender.ready().await.is_err() {
                // The server closed the idle connection after a complete response (a
                // keep-alive request limit): not an error, open another one.
                continue 'connect;
            }
            let mut req = Request::get(path).body(Empty::<Bytes>::new()).unwrap();
            for (k, v) in &headers {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            if let Some(m) = &mix {
                req.headers_mut().insert(header::COOKIE, m.pick().clone());
            }
            let t0 = tokio::time::Instant::now();
            if t0 >= until {
                break 'connect;
            }
            let res = tokio::time::timeout(per_request, async {
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            })
            .await;
            let t1 = tokio::time::Instant::now();
            if t1 > until {
                // Straddles the end of the window: neither counted nor timed.
                break 'connect;
            }
            match res {
                Ok(Ok(status)) => {
                    let _ = hist.record((t1 - t0).as_micros().max(1) as u64);
                    if status.is_success() {
                        stats.ok += 1;
                    } else {
                        stats.non_2xx += 1;
                    }
                }
                _ => {
                    stats.transport_errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    stats
}

pub struct Ctx<'a> {
    pub opts: &'a Opts,
    pub rt: tokio::runtime::Runtime,
    pub redis: BenchRedis,
}

impl Ctx<'_> {
    /// Warm-up, then the measured window, with Redis INFO commandstats around the window.
    pub fn measure(&mut self, row: &mut Row, target: &Target, server: Option<&ProcessGuard>) {
        self.measure_counted(row, target, server, |ctx| ctx.redis.command_calls());
    }

    /// The same, with the store's calls counted by `calls` (PostgreSQL's statements).
    pub fn measure_counted(
        &mut self,
        row: &mut Row,
        target: &Target,
        server: Option<&ProcessGuard>,
        mut calls: impl FnMut(&mut Self) -> std::collections::BTreeMap<String, u64>,
    ) {
        eprintln!("load bench: {} ...", row.label);
        if !self.opts.warmup.is_zero() {
            drive(&self.rt, target, self.opts.connections, self.opts.warmup);
        }
        let before = calls(self);
        let stats = drive(&self.rt, target, self.opts.connections, self.opts.duration);
        let after = calls(self);
        let n = stats.requests().max(1) as f64;
        let mut per: Vec<(String, f64)> = after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - before.get(k).copied().unwrap_or(0)) as f64 / n,
                )
            })
            .filter(|(_, v)| *v > 0.0)
            .collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = per.iter().map(|(_, v)| v).sum::<f64>() + 0.0;
        row.redis = Some((total, per));
        row.rss_kib = server.and_then(ProcessGuard::peak_rss_kib);
        eprintln!(
            "load bench: {}: {:.0} req/s, p99 {:.3} ms, {} non-2xx, {} transport errors",
            row.label,
            stats.req_per_sec(),
            stats.quantile_ms(0.99),
            stats.non_2xx,
            stats.transport_errors
        );
        row.stats = Some(stats);
    }
}
