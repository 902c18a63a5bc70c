//! How vpnlbd logs: to stderr, as text (colour only when stderr is a terminal) or one JSON
//! object per line, at a level from `--log-level`, else `$RUST_LOG`, else `info`. Under systemd
//! (`$JOURNAL_STREAM` set: stderr goes to the journal) lines carry no timestamp: journald stamps
//! each one itself.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log line format (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `LEVEL target: message key=value ...`, human first.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log shippers.
    Json,
}

/// Where the lines go and how they look, decided from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub ansi: bool,
    pub timestamps: bool,
}

impl Output {
    /// Colour only on a terminal; no timestamps when journald adds its own.
    pub fn detect() -> Output {
        Output::of(
            std::io::stderr().is_terminal(),
            std::env::var_os("JOURNAL_STREAM").is_some(),
        )
    }

    fn of(terminal: bool, journal: bool) -> Output {
        Output {
            ansi: terminal,
            timestamps: !journal,
        }
    }
}

/// The filter: `level` (a level or a full `RUST_LOG`-style directive) when given, else
/// `$RUST_LOG`, else `info`. A bad directive is an error, not a silent default.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log-level `{l}`: {e}")),
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

/// Installs the subscriber for the process.
pub fn init(format: LogFormat, filter: EnvFilter, out: Output) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(out.ansi);
    match (format, out.timestamps) {
        (LogFormat::Text, true) => builder.init(),
        (LogFormat::Text, false) => builder.without_time().init(),
        (LogFormat::Json, true) => builder.json().init(),
        (LogFormat::Json, false) => builder.json().without_time().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_no_timestamps_for_journald() {
        assert_eq!(
            Output::of(true, false),
            Output {
                ansi: true,
                timestamps: true
            }
        );
        assert_eq!(
            Output::of(false, false),
            Output {
                ansi: false,
                timestamps: true
            }
        );
        assert_eq!(
            Output::of(false, true),
            Output {
                ansi: false,
                timestamps: false
            }
        );
    }

    #[test]
    fn a_bad_level_is_an_error() {
        assert!(filter(Some("debug")).is_ok());
        assert!(filter(Some("control::daemon=debug,info")).is_ok());
        let e = filter(Some("loud[")).unwrap_err();
        assert!(e.contains("--log-level"), "{e}");
    }
}
