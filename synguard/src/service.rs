//! The daemon's side of running under a service manager: log lines journald can file by
//! priority, readiness and status through `NOTIFY_SOCKET` (sd_notify(3)), the watchdog, and
//! the exit codes.

use std::{fmt, io::Write, time::Duration};

use log::{Level, LevelFilter};

use crate::cli::LogFormat;

/// Exit codes (README, CLI section; `synguard --help`).
pub mod exit {
    pub const ERROR: i32 = 1;
    // 2 is clap's own code for usage errors.
    pub const NOT_RUNNING: i32 = 3;
    pub const CHECK_FAILED: i32 = 4;
    pub const PERMISSION: i32 = 5;
}

/// No synguard instance on an interface (no pins): exit code 3.
#[derive(Debug)]
pub struct NotRunning(pub String);

impl fmt::Display for NotRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotRunning {}

/// The caller lacks a privilege synguard needs: exit code 5.
#[derive(Debug)]
pub struct PermissionDenied(pub String);

impl fmt::Display for PermissionDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PermissionDenied {}

/// What a permission error says, whoever hits it.
pub const NEEDS: &str = "synguard needs root, or the capabilities CAP_BPF, CAP_NET_ADMIN, \
                         CAP_PERFMON and CAP_SYS_ADMIN (bpffs and its pins are root-only, mode \
                         0700/0600)";

/// A [`PermissionDenied`] for `what` (e.g. "reading /sys/fs/bpf/synguard").
pub fn permission(what: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(PermissionDenied(format!(
        "permission denied {what}: {NEEDS}"
    )))
}

/// The exit code of an error: the first typed cause in its chain decides.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<NotRunning>() {
            return exit::NOT_RUNNING;
        }
        if cause.is::<PermissionDenied>() {
            return exit::PERMISSION;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return exit::PERMISSION;
        }
    }
    exit::ERROR
}

/// Whether stderr is the journal stream systemd handed us: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream, and stderr must still be it (not redirected since).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// The sd-daemon(3) priority prefix of a level: journald files `<4>...` as warning.
pub fn priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Sets up the logger: `--log-level` (default info; `RUST_LOG` refines it), `--log-format`,
/// and under journald `<N>` priority prefixes instead of timestamps (the journal stamps
/// every line itself).
pub fn init_logging(level: Option<LevelFilter>, format: LogFormat) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level.unwrap_or(LevelFilter::Info));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        // An explicit --log-level wins over RUST_LOG's default level, not its per-module
        // directives.
        b.parse_filters(&spec);
        if let Some(l) = level {
            b.filter_level(l);
        }
    }
    let journal = stderr_is_journal();
    match (format, journal) {
        (LogFormat::Json, _) => {
            b.format(move |buf, r| {
                let mut v = serde_json::json!({
                    "level": r.level().as_str().to_ascii_lowercase(),
                    "target": r.target(),
                    "message": r.args().to_string(),
                });
                if !journal {
                    v["ts"] = buf.timestamp_millis().to_string().into();
                }
                if journal {
                    write!(buf, "<{}>", priority(r.level()))?;
                }
                writeln!(buf, "{v}")
            });
        }
        (LogFormat::Text, true) => {
            b.format(|buf, r| writeln!(buf, "<{}>{}", priority(r.level()), r.args()));
        }
        (LogFormat::Text, false) => {}
    }
    b.init();
}

/// sd_notify(3) messages; each is a no-op without `NOTIFY_SOCKET`. A failed send is
/// logged at debug: the service manager going away must not stop protection.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}

pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

pub fn status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

pub fn reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    // Type=notify-reload (systemd 253) wants the monotonic time with RELOADING=1.
    if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    notify(&states);
}

pub fn stopping(status: &str) {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// How often to send WATCHDOG=1: half the manager's timeout, as sd_watchdog_enabled(3)
/// advises; `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(10)))
}

pub fn watchdog() {
    notify(&[sd_notify::NotifyState::Watchdog]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_syslog_levels() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
    }

    #[test]
    fn exit_codes_follow_the_typed_cause() {
        let e = anyhow::Error::new(NotRunning("x".into())).context("stats");
        assert_eq!(exit_code(&e), exit::NOT_RUNNING);
        assert_eq!(exit_code(&permission("reading x")), exit::PERMISSION);
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            exit_code(&anyhow::Error::new(io).context("opening")),
            exit::PERMISSION
        );
        assert_eq!(exit_code(&anyhow::anyhow!("other")), exit::ERROR);
    }
}
