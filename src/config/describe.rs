//! `sessiongate check`: the validated config, said plainly.

use std::fmt::Write;

use super::Config;
use crate::access_log::{AccessFormat, LogFormat};
use crate::cookie::Secure;
use crate::record::{new_session_id, sample_session};
use crate::routes::AuthMode;
use crate::routes::HostPattern;
use crate::store::{memory_entry_weight, redact_pg_url, redact_url, StoreSettings};

impl Config {
    pub fn describe(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "listeners:");
        for l in &self.listen {
            let _ = writeln!(o, "  http://{l}");
        }
        if let Some(t) = &self.tls {
            for l in &t.listen {
                let _ = writeln!(o, "  https://{l} (cert {})", t.cert);
            }
        }
        if self.listen.is_empty() && self.tls.is_none() {
            let _ = writeln!(
                o,
                "  none: the gate does not proxy, it answers forward-auth only"
            );
        }
        let h = &self.head;
        let _ = writeln!(
            o,
            "  request heads: at most {} bytes and {} headers (else 431), complete within {} of their first byte (else 408)",
            h.max_bytes,
            h.max_headers,
            humantime::format_duration(h.timeout)
        );
        let c = &self.connections;
        let _ = writeln!(
            o,
            "  connections: at most {} open (more are closed), idle for at most {}; HTTP/2: {} streams each, header blocks within {}",
            c.max_connections,
            humantime::format_duration(c.idle_timeout),
            c.h2_max_streams,
            humantime::format_duration(h.timeout)
        );
        if self.trusted_proxies.is_empty() {
            let _ = writeln!(o, "trusted proxies: none (every peer is the client)");
        } else {
            let nets: Vec<String> = self
                .trusted_proxies
                .nets()
                .iter()
                .map(|n| n.to_string())
                .collect();
            let _ = writeln!(o, "trusted proxies: {}", nets.join(", "));
        }
        let x = &self.cross_origin;
        let trusted: Vec<String> = x.trusted.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            o,
            "cross-origin requests with the session cookie: {}{}",
            policy(x.policy),
            if trusted.is_empty() {
                String::new()
            } else {
                format!("; trusted origins: {}", trusted.join(", "))
            }
        );
        let p = &self.path_policy;
        let _ = writeln!(
            o,
            "paths: `;` parameters {}, double encoding {}",
            match p.parameters {
                crate::path::Parameters::Reject => "refused (400)",
                crate::path::Parameters::Strip => "stripped",
                crate::path::Parameters::Keep => "forwarded (routes match without them)",
            },
            if p.reject_double_encoding {
                "refused (400)"
            } else {
                "allowed"
            }
        );
        let s = &self.session;
        let _ = writeln!(o, "session:");
        let _ = writeln!(
            o,
            "  cookie `{}`, {} secret(s), the first signs",
            s.cookie_name,
            s.secrets.len()
        );
        let c = &s.cookie;
        let _ = writeln!(
            o,
            "  cookie attributes: Path={}{}{}, Secure {}, SameSite {}, {}",
            c.path,
            c.domain
                .as_ref()
                .map(|d| format!(", Domain={d}"))
                .unwrap_or_default(),
            if c.http_only { ", HttpOnly" } else { "" },
            match c.secure {
                Secure::Always => "always",
                Secure::Never => "never",
                Secure::Auto => "on HTTPS",
            },
            c.same_site.map_or("not sent", |s| s.as_str()),
            match c.max_age {
                Some(m) => format!("max-age {}", humantime::format_duration(m)),
                None => "browser-session cookie".into(),
            },
        );
        let _ = writeln!(
            o,
            "  rolling {}, touch {}, TTL without max-age {}",
            s.rolling,
            s.touch,
            humantime::format_duration(s.idle_timeout)
        );
        match &self.store {
            StoreSettings::Memory(m) => {
                let _ = writeln!(
                    o,
                    "  store: memory (embedded; this process only), key prefix `{}`",
                    s.prefix
                );
                let weigh = |app_bytes| {
                    let r = sample_session(&s.cookie, &s.user_field, app_bytes);
                    let json = r.to_json();
                    let w = memory_entry_weight(&new_session_id(), &json, Some(&r), Some("u"));
                    (json.len(), w)
                };
                let ((small, ws), (large, wl)) = (weigh(0), weigh(4096));
                let _ = writeln!(
                    o,
                    "  memory bound {} bytes (new sessions refused with 503 store_full beyond it): about {} sessions of {} bytes of JSON ({} bytes each in memory), {} of {} bytes ({} each)",
                    m.max_bytes,
                    m.max_bytes / ws,
                    small,
                    ws,
                    m.max_bytes / wl,
                    large,
                    wl
                );
            }
            StoreSettings::Redis(r) => {
                let _ = writeln!(
                    o,
                    "  store: redis {} key prefix `{}`, timeout {}",
                    if let Some(sentinel) = &r.sentinel {
                        format!(
                            "master `{}` as the sentinels name it ({})",
                            sentinel.master,
                            sentinel
                                .nodes
                                .iter()
                                .map(|u| redact_url(u))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else if r.cluster.is_empty() {
                        redact_url(&r.url)
                    } else {
                        format!(
                            "cluster (seeds {})",
                            r.cluster
                                .iter()
                                .map(|u| redact_url(u))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    s.prefix,
                    humantime::format_duration(r.timeout)
                );
            }
            StoreSettings::Postgres(p) => {
                let _ = writeln!(
                    o,
                    "  store: postgres {} table {}.{} (connect-pg-simple's layout), pool {}, timeout {}, prune {}{}{}",
                    redact_pg_url(&p.url),
                    p.schema,
                    p.table,
                    p.pool_size,
                    humantime::format_duration(p.timeout),
                    if p.prune_interval.is_zero() {
                        "off".to_string()
                    } else {
                        format!("every {} (randomised)", humantime::format_duration(p.prune_interval))
                    },
                    if p.create_user_index { ", user index created" } else { "" },
                    if p.create_notify_trigger {
                        ", notify trigger created"
                    } else {
                        ""
                    },
                );
            }
        }
        match &self.cache {
            Some(c) => {
                let _ = writeln!(
                    o,
                    "  local cache: on, {} bytes, entries live at most {}, touches every {}",
                    c.max_bytes,
                    humantime::format_duration(c.ttl),
                    humantime::format_duration(s.touch_interval)
                );
            }
            None if !matches!(self.store, StoreSettings::Memory(_)) => {
                let _ = writeln!(o, "  local cache: off");
            }
            None => {}
        }
        if let Some(a) = &s.absolute_timeout {
            let _ = writeln!(o, "  absolute timeout {}", humantime::format_duration(*a));
        }
        if let Some(cap) = &s.max_per_user {
            let _ = writeln!(
                o,
                "  at most {} sessions per user; a login past that {}",
                cap.max,
                match cap.when_full {
                    crate::store::WhenFull::EndOldest => "ends the user's oldest session",
                    crate::store::WhenFull::Refuse => "is refused (403 too_many_sessions)",
                }
            );
        }
        if let Some(p) = &s.logout_path {
            let _ = writeln!(o, "  logout: POST {p}");
        }
        if let Some(fa) = &self.forward_auth {
            let trusted: Vec<String> = fa.trusted.nets().iter().map(|n| n.to_string()).collect();
            let _ = writeln!(
                o,
                "forward-auth: http://{} (/auth/request, /auth/forward, /auth/envoy/...), believing {} only",
                fa.listen.join(", http://"),
                trusted.join(", ")
            );
        }
        if let Some(a) = &self.admin {
            let _ = writeln!(
                o,
                "admin API: http://{} (bearer token; /healthz and /readyz without)",
                a.listen
            );
        }
        let _ = writeln!(
            o,
            "logs: access log {} on stdout, diagnostic log as {} on stderr",
            match self.log.access {
                AccessFormat::Json => "as JSON",
                AccessFormat::Text => "as text",
                AccessFormat::Off => "off",
            },
            match self.log.format {
                LogFormat::Json => "JSON",
                LogFormat::Text => "text",
            }
        );
        let _ = writeln!(
            o,
            "SIGTERM: /readyz 503 and {} more of service, then {} for requests in flight",
            humantime::format_duration(self.drain_delay),
            humantime::format_duration(self.grace_period)
        );
        let _ = writeln!(o, "identity headers:");
        for (h, p) in &self.identity.headers {
            let _ = writeln!(o, "  {h} <- session{p}");
        }
        if let Some(a) = &self.identity.assertion {
            let kids: Vec<String> = a
                .keys
                .iter()
                .map(|k| format!("{:?} {}", k.alg, k.kid))
                .collect();
            let _ = writeln!(
                o,
                "assertion: {} (iss {}, ttl {}s{}), signed by {}; published: {}",
                a.header,
                a.issuer,
                a.ttl.as_secs(),
                if a.bind_request {
                    ", bound to the request"
                } else {
                    ""
                },
                kids[0],
                kids.join(", "),
            );
            for (name, p) in &a.claims {
                let _ = writeln!(o, "  claim {name} <- session{p}");
            }
        }
        let _ = writeln!(o, "upstreams:");
        for u in &self.upstreams {
            let servers: Vec<String> = u.servers.iter().map(|s| s.to_string()).collect();
            let _ = writeln!(
                o,
                "  {}: {} (round robin{})",
                u.name,
                servers.join(", "),
                match u.health_check_interval {
                    Some(i) =>
                        format!(", TCP health check every {}", humantime::format_duration(i)),
                    None => ", no health check".into(),
                }
            );
        }
        let _ = writeln!(o, "routes (longest prefix first):");
        let mut routes: Vec<_> = self.routes.iter().collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        for r in routes {
            let host = match &r.host {
                Some(HostPattern::Exact(h)) => h.clone(),
                Some(HostPattern::Subdomains(s)) => format!("*{s}"),
                None => "*".into(),
            };
            let methods = r
                .methods
                .as_ref()
                .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "any".into());
            let auth = match (r.auth, &r.login_redirect) {
                (AuthMode::Required, Some(l)) => format!("required (else redirect to {l})"),
                (AuthMode::Required, None) => "required (else 401)".into(),
                (AuthMode::Optional, _) => "optional".into(),
                (AuthMode::Public, _) => "public".into(),
            };
            let _ = writeln!(
                o,
                "  {host} {}/ [{methods}] -> {}: {auth}{}{}{}",
                r.prefix,
                r.upstream
                    .map_or("(no upstream: forward-auth only)", |u| self.upstreams[u]
                        .name
                        .as_str()),
                match (r.issue_sessions, r.method_override) {
                    (true, true) => ", may send session directives, method overrides pass",
                    (true, false) => ", may send session directives",
                    (false, true) => ", method overrides pass",
                    (false, false) => "",
                },
                if r.strip_session_cookie {
                    ", the session cookie is kept from the upstream"
                } else {
                    ""
                },
                r.cross_origin
                    .map(|p| format!(", cross-origin requests: {}", policy(p)))
                    .unwrap_or_default()
            );
        }
        o
    }
}

fn policy(p: crate::cross_origin::Policy) -> &'static str {
    match p {
        crate::cross_origin::Policy::Refuse => "refused (403)",
        crate::cross_origin::Policy::Report => "reported (logged and counted, let through)",
        crate::cross_origin::Policy::Allow => "not checked",
    }
}
