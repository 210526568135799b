//! Who the client is, when proxies stand in front of the gate: `server.trusted_proxies`.
//!
//! A peer the operator did not list is the client itself: whatever it says in
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` or `X-Real-IP` is
//! removed, and the upstream gets the gate's own view (the peer's address, the scheme it
//! connected with, the host the gate routed on). A listed peer (a load balancer the operator
//! runs) is believed: its `X-Forwarded-For` is appended to, its `X-Forwarded-Proto` decides
//! `secure = "auto"`, and the client is the nearest address in the chain that is not itself
//! a trusted proxy. `Forwarded` (RFC 7239) is never passed on: upstreams that read it would
//! otherwise get a second, unchecked view.

use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::RequestHeader;

/// The request headers this module owns on the way upstream.
pub const HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// `server.trusted_proxies`: the networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`: match it as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address as text. IPv4 is written digit by digit: every request writes its client's
/// address, and `Display` through the formatting machinery costs several times as much.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// What the gate knows about the client of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// The client's address: the peer, or behind trusted proxies the nearest untrusted
    /// address they reported.
    pub ip: Option<IpAddr>,
    /// The client used HTTPS: to the gate, or (behind a trusted proxy) to that proxy.
    pub https: bool,
    /// The `X-Forwarded-For` chain the upstream gets (the trusted proxies' chain, then the
    /// peer); `None` without a peer address.
    forwarded_for: Option<String>,
    /// `forwarded_for` is the client's address alone (an untrusted peer).
    ip_is_chain: bool,
}

impl ClientView {
    /// Reads the request as it arrived from `peer` (`tls`: over a TLS listener).
    pub fn read(
        req: &RequestHeader,
        peer: Option<IpAddr>,
        tls: bool,
        trusted: &TrustedProxies,
    ) -> Self {
        let Some(peer) = peer.map(canonical) else {
            return ClientView {
                ip: None,
                https: tls,
                forwarded_for: None,
                ip_is_chain: false,
            };
        };
        if !trusted.contains(peer) {
            return ClientView {
                ip: Some(peer),
                https: tls,
                forwarded_for: Some(ip_text(peer)),
                ip_is_chain: true,
            };
        }
        // Every X-Forwarded-For value, in order, as one chain.
        let chain: Vec<String> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        // The client: walking from the nearest hop, the first address that is not a trusted
        // proxy (an unparseable entry stops the walk: nothing beyond it can be believed).
        let mut ip = peer;
        for hop in chain.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(a) if trusted.contains(a) => ip = canonical(a),
                Ok(a) => {
                    ip = canonical(a);
                    break;
                }
                Err(_) => break,
            }
        }
        // The scheme the trusted hop wrote: the last value, as for X-Forwarded-For. A proxy
        // that appends leaves the client's own claim first.
        let proto_https = req
            .headers
            .get_all("x-forwarded-proto")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        let mut forwarded_for = chain.join(", ");
        if !forwarded_for.is_empty() {
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(&ip_text(peer));
        ClientView {
            ip: Some(ip),
            https: tls || proto_https,
            forwarded_for: Some(forwarded_for),
            ip_is_chain: false,
        }
    }

    /// Replaces the forwarding headers of the upstream request with the gate's view; `host`
    /// is the host the gate routed on. (Each insert replaces every value a client sent under
    /// that name; the rest are removed.)
    pub fn write(&self, upstream: &mut RequestHeader, host: Option<&http::HeaderValue>) {
        upstream.remove_header("forwarded");
        // Set from values that were headers or addresses: never invalid.
        let forwarded_for = self
            .forwarded_for
            .as_deref()
            .and_then(|ff| http::HeaderValue::from_str(ff).ok());
        let _ = upstream.insert_header(
            "x-forwarded-proto",
            if self.https { "https" } else { "http" },
        );
        let real_ip = match self.ip {
            // An untrusted peer is the client and the whole chain: one text for both.
            Some(_) if self.ip_is_chain => forwarded_for.clone(),
            Some(ip) => http::HeaderValue::from_str(&ip_text(ip)).ok(),
            None => None,
        };
        match forwarded_for {
            Some(ff) => {
                let _ = upstream.insert_header("x-forwarded-for", ff);
            }
            None => {
                upstream.remove_header("x-forwarded-for");
            }
        }
        match real_ip {
            Some(ip) => {
                let _ = upstream.insert_header("x-real-ip", ip);
            }
            None => {
                upstream.remove_header("x-real-ip");
            }
        }
        match host {
            Some(host) => {
                let _ = upstream.insert_header("x-forwarded-host", host.clone());
            }
            None => {
                upstream.remove_header("x-forwarded-host");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "100.9.99.200",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 2, n % 10]);
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let r = req(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let v = ClientView::read(&r, Some("203.0.113.9".parse().unwrap()), false, &trusted());
        assert_eq!(v.ip, Some("203.0.113.9".parse().unwrap()));
        assert!(!v.https);
        let mut up = r.clone();
        v.write(
            &mut up,
            Some(&http::HeaderValue::from_static("example.com")),
        );
        assert_eq!(up.headers["x-forwarded-for"], "203.0.113.9");
        assert_eq!(up.headers["x-forwarded-proto"], "http");
        assert_eq!(up.headers["x-real-ip"], "203.0.113.9");
        assert_eq!(up.headers["x-forwarded-host"], "example.com");
    }

    #[test]
    fn a_trusted_peer_is_believed_and_appended_to() {
        let r = req(&[
            ("x-forwarded-for", "198.51.100.7, 10.1.2.3"),
            ("X-Forwarded-For", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=192.0.2.1"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let v = ClientView::read(
            &r,
            Some("::ffff:10.0.0.5".parse().unwrap()),
            false,
            &trusted(),
        );
        assert_eq!(v.ip, Some("198.51.100.7".parse().unwrap()));
        assert!(v.https);
        let mut up = r.clone();
        v.write(&mut up, None);
        assert_eq!(
            up.headers["x-forwarded-for"],
            "198.51.100.7, 10.1.2.3, 10.9.9.9, 10.0.0.5"
        );
        assert_eq!(up.headers["x-real-ip"], "198.51.100.7");
        assert!(up.headers.get("forwarded").is_none(), "never passed on");
        assert!(
            up.headers.get("x-forwarded-host").is_none(),
            "no host routed on: none sent"
        );
    }

    #[test]
    fn the_scheme_is_the_one_the_trusted_hop_wrote_last() {
        let peer = Some("10.0.0.5".parse().unwrap());
        for (headers, https) in [
            (
                &[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-proto", "http"),
                ][..],
                false,
            ),
            (&[("x-forwarded-proto", "https, http")][..], false),
            (
                &[
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-proto", "https"),
                ][..],
                true,
            ),
            (&[("x-forwarded-proto", "http,https")][..], true),
        ] {
            let v = ClientView::read(&req(headers), peer, false, &trusted());
            assert_eq!(v.https, https, "{headers:?}");
        }
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_or_unreadable_hop() {
        let r = req(&[("x-forwarded-for", "1.1.1.1, garbage, 192.0.2.1, 10.0.0.7")]);
        let v = ClientView::read(&r, Some("10.0.0.1".parse().unwrap()), true, &trusted());
        assert_eq!(v.ip, Some("192.0.2.1".parse().unwrap()));
        assert!(v.https, "TLS to the gate is HTTPS whatever the header says");
    }
}
