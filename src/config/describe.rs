//! `sessiongate check`: the validated config, said plainly.

use std::fmt::Write;

use super::file::AuthMode;
use super::runtime::redact_url;
use super::{Config, Secure, StoreSettings};
use crate::routes::HostPattern;

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
            c.same_site.unwrap_or("not sent"),
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
            StoreSettings::Memory => {
                let _ = writeln!(
                    o,
                    "  store: memory (embedded; this process only), key prefix `{}`",
                    s.prefix
                );
            }
            StoreSettings::Redis(r) => {
                let _ = writeln!(
                    o,
                    "  store: redis {} key prefix `{}`, timeout {}",
                    redact_url(&r.url),
                    s.prefix,
                    humantime::format_duration(r.timeout)
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
            None if matches!(self.store, StoreSettings::Redis(_)) => {
                let _ = writeln!(o, "  local cache: off");
            }
            None => {}
        }
        if let Some(a) = &s.absolute_timeout {
            let _ = writeln!(o, "  absolute timeout {}", humantime::format_duration(*a));
        }
        if let Some(p) = &s.logout_path {
            let _ = writeln!(o, "  logout: POST {p}");
        }
        if let Some(a) = &self.admin {
            let _ = writeln!(o, "admin API: http://{} (bearer token)", a.listen);
        }
        let _ = writeln!(o, "identity headers:");
        for (h, p) in &self.identity.headers {
            let _ = writeln!(o, "  {h} <- session{p}");
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
                "  {host} {}/ [{methods}] -> {}: {auth}{}",
                r.prefix,
                self.upstreams[r.upstream].name,
                if r.issue_sessions {
                    ", may send session directives"
                } else {
                    ""
                }
            );
        }
        o
    }
}
