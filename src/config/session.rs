//! `[session]`, `[session.cookie]` and `[session.token]`: how sessions are named, signed,
//! timed out and handed out.

use std::time::Duration;

use http::HeaderName;

use super::file::{self, MaxPerUserAction, SameSiteSetting, SecureNamed, SecureSetting};
use super::normalize_path;
use super::source::{redirect_target, resolve_secret, In};
use super::ConfigError;
use crate::cookie::{CookiePolicy, SameSite, Secure};
use crate::sessions::{SessionSettings, TokenSettings};
use crate::store::{UserCap, WhenFull};

impl TryFrom<In<'_, file::SessionSection>> for SessionSettings {
    type Error = ConfigError;

    fn try_from(In { at: s, src, env }: In<'_, file::SessionSection>) -> Result<Self, ConfigError> {
        let name = s.cookie_name.get_ref();
        if name.is_empty() || !name.bytes().all(is_cookie_name_byte) {
            return Err(src.err(
                "session.cookie_name",
                s.cookie_name.span(),
                format!("`{name}` is not a valid cookie name"),
            ));
        }
        if s.secrets.get_ref().is_empty() {
            return Err(src.err(
                "session.secrets",
                s.secrets.span(),
                "at least one secret is needed",
            ));
        }
        let mut secrets = Vec::new();
        for (i, spec) in s.secrets.get_ref().iter().enumerate() {
            let key = format!("session.secrets[{i}]");
            let secret = resolve_secret(spec.get_ref(), env)
                .map_err(|m| src.err(key.as_str(), spec.span(), m))?;
            if secret.is_empty() {
                return Err(src.err(key, spec.span(), "the secret is empty"));
            }
            secrets.push(secret);
        }
        if s.idle_timeout < Duration::from_secs(1) {
            return Err(src.err("session.idle_timeout", 0..0, "must be at least 1s"));
        }
        if s.absolute_timeout
            .is_some_and(|a| a < Duration::from_secs(1))
        {
            return Err(src.err("session.absolute_timeout", 0..0, "must be at least 1s"));
        }
        if s.remember_max < Duration::from_secs(1) {
            return Err(src.err("session.remember_max", 0..0, "must be at least 1s"));
        }
        if s.user_field.is_empty()
            || s.user_field == "cookie"
            || s.user_field == crate::record::META_FIELD
        {
            return Err(src.err(
                "session.user_field",
                0..0,
                "name a top-level field of the session, like \"user\"",
            ));
        }
        if s.index_prefix.is_empty()
            || s.index_prefix.starts_with(&s.prefix)
            || s.prefix.starts_with(&s.index_prefix)
        {
            return Err(src.err(
            "session.index_prefix",
            0..0,
            "must differ from session.prefix without either being a prefix of the other, so indexes never look like sessions",
        ));
        }
        let max_per_user = match (&s.max_per_user, &s.max_per_user_action) {
            (None, None) => None,
            (None, Some(a)) => {
                return Err(src.err(
                    "session.max_per_user_action",
                    a.span(),
                    "applies with session.max_per_user, which is not set",
                ))
            }
            (Some(m), action) => {
                let max = usize::try_from(*m.get_ref())
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        src.err("session.max_per_user", m.span(), "must be at least 1")
                    })?;
                Some(UserCap {
                    max,
                    when_full: match action.as_ref().map(|a| *a.get_ref()) {
                        None | Some(MaxPerUserAction::EndOldest) => WhenFull::EndOldest,
                        Some(MaxPerUserAction::Refuse) => WhenFull::Refuse,
                    },
                })
            }
        };
        let token = match &s.token {
            None => None,
            Some(t) => {
                let header =
                    HeaderName::from_bytes(t.header.get_ref().as_bytes()).map_err(|_| {
                        src.err("session.token.header", t.header.span(), "not a header name")
                    })?;
                if matches!(header.as_str(), "cookie" | "host")
                    || crate::identity::is_internal(header.as_str())
                {
                    return Err(src.err(
                        "session.token.header",
                        t.header.span(),
                        "reserved header",
                    ));
                }
                if t.scheme.is_empty()
                    || !t
                        .scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(src.err("session.token.scheme", 0..0, "a word like \"Session\""));
                }
                Some(TokenSettings {
                    header,
                    scheme: t.scheme.clone(),
                })
            }
        };
        let logout_path = match &s.logout_path {
            None => None,
            Some(p) => {
                let n = normalize_path(p.get_ref())
                    .map_err(|e| src.err("session.logout_path", p.span(), e.to_string()))?;
                if !p.get_ref().starts_with('/') {
                    return Err(src.err("session.logout_path", p.span(), "must start with /"));
                }
                Some(n.matched)
            }
        };
        let logout_redirect = s
            .logout_redirect
            .as_ref()
            .map(|r| redirect_target(src, "session.logout_redirect", r))
            .transpose()?;
        if s.return_param.is_empty()
            || !s
                .return_param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(src.err(
                "session.return_param",
                0..0,
                "use letters, digits, `_` or `-`",
            ));
        }

        let c = &s.cookie;
        if !c.path.starts_with('/') || c.path.bytes().any(|b| b.is_ascii_control() || b == b';') {
            return Err(src.err(
                "session.cookie.path",
                0..0,
                "must start with / and hold no `;`",
            ));
        }
        if let Some(d) = &c.domain {
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(src.err(
                    "session.cookie.domain",
                    0..0,
                    format!("`{d}` is not a domain name"),
                ));
            }
        }
        let secure = match c.secure {
            SecureSetting::Fixed(true) => Secure::Always,
            SecureSetting::Fixed(false) => Secure::Never,
            SecureSetting::Named(SecureNamed::Auto) => Secure::Auto,
        };
        let same_site = match c.same_site {
            SameSiteSetting::Lax => Some(SameSite::Lax),
            SameSiteSetting::Strict => Some(SameSite::Strict),
            SameSiteSetting::None => Some(SameSite::None),
            SameSiteSetting::Off => None,
        };
        if same_site == Some(SameSite::None) && secure != Secure::Always {
            return Err(src.err(
            "session.cookie.same_site",
            0..0,
            "\"none\" needs secure = true: browsers drop SameSite=None cookies that are not Secure",
        ));
        }
        if let Some(m) = c.max_age {
            if m < Duration::from_secs(1) {
                return Err(src.err("session.cookie.max_age", 0..0, "must be at least 1s"));
            }
        }
        Ok(SessionSettings {
            cookie_name: name.clone(),
            secrets,
            prefix: s.prefix.clone(),
            rolling: s.rolling,
            touch: s.touch,
            idle_timeout: s.idle_timeout,
            absolute_timeout: s.absolute_timeout,
            // Resolved against the cache settings by `validate`.
            touch_interval: s.touch_interval.unwrap_or_default(),
            remember_max: s.remember_max,
            user_field: s.user_field.clone(),
            index_prefix: s.index_prefix.clone(),
            record_client: s.record_client,
            token,
            logout_path,
            logout_redirect,
            return_param: s.return_param.clone(),
            max_per_user,
            cookie: CookiePolicy {
                path: c.path.clone(),
                domain: c.domain.clone(),
                http_only: c.http_only,
                secure,
                same_site,
                max_age: c.max_age,
            },
        })
    }
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}
