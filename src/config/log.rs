//! `[log]`: the access log on stdout and the diagnostic log's format on stderr.

use super::file::{self, AccessLogSetting, LogFormatSetting};
use super::source::In;
use super::ConfigError;
use crate::access_log::{AccessFormat, LogFormat, LogSettings};

impl TryFrom<In<'_, file::LogSection>> for LogSettings {
    type Error = ConfigError;

    fn try_from(In { at: l, .. }: In<'_, file::LogSection>) -> Result<Self, ConfigError> {
        // Both values are closed sets, checked (with their line) by serde.
        Ok(LogSettings {
            access: match l.access {
                AccessLogSetting::Json => AccessFormat::Json,
                AccessLogSetting::Text => AccessFormat::Text,
                AccessLogSetting::Off => AccessFormat::Off,
            },
            format: match l.format {
                LogFormatSetting::Text => LogFormat::Text,
                LogFormatSetting::Json => LogFormat::Json,
            },
        })
    }
}
