//! Idle keep-alive connections for the connections curve, and the open-file limit they need.
//!
//! Each idle connection is a plain tokio `TcpStream` that sends one minimal HTTP/1.1 GET on a
//! public route, reads the whole answer, and then says nothing more: a browser tab left open.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once (the gate's accept queue is not what is measured).
const AT_ONCE: usize = 256;

/// Raises this process's soft `RLIMIT_NOFILE` to at least `need` where the hard limit allows
/// (and the hard limit too, when this process may). Children (the gate) inherit it. Returns
/// the soft limit now in force.
pub fn raise_nofile(need: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur >= need {
            return lim.rlim_cur;
        }
        if lim.rlim_max < need {
            let raised = libc::rlimit {
                rlim_cur: need,
                rlim_max: need,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return need;
            }
        }
        let soft = libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            soft.rlim_cur
        } else {
            lim.rlim_cur
        }
    }
}

/// Opens `n` connections to 127.0.0.1:`port`, each answered once on `path` (status 200, body
/// read to its `Content-Length`), and returns them, idle.
pub fn open(rt: &tokio::runtime::Runtime, port: u16, path: &str, n: usize) -> Vec<TcpStream> {
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: sessiongate-idle/1\r\n\r\n"
    ));
    rt.block_on(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (gate, request) = (gate.clone(), request.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.unwrap();
                    tokio::time::timeout(Duration::from_secs(20), one(port, &request))
                        .await
                        .map_err(|_| "timed out".to_string())
                        .and_then(|r| r)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            match t.await.expect("an idle connection's task panicked") {
                Ok(s) => out.push(s),
                Err(why) => panic!("an idle connection to the gate failed: {why}"),
            }
        }
        out
    })
}

async fn one(port: u16, request: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the answer was complete".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!(
                    "answer: {}",
                    head.lines().next().unwrap_or_default()
                ));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("an answer without Content-Length")?;
            if buf.len() >= end + 4 + len {
                return Ok(s);
            }
        }
    }
}

/// How many of `conns` are no longer idle and open: the gate closed them (the end of the
/// stream, or a reset) or sent something unasked. A peek that does not block or touch tokio's
/// readiness.
pub fn closed(conns: &[TcpStream]) -> usize {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 1];
    conns
        .iter()
        .filter(|s| {
            // SAFETY: a non-blocking peek into a local buffer on a socket we own.
            let n = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            let would_block =
                n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
            !would_block
        })
        .count()
}
