//! The daemon's record in `/run/synguard/<iface>.json`: what bpffs cannot hold (its pid,
//! when the key last rotated, the XDP mode it attached and why). `status` reads it; a
//! restarted daemon keeps the rotation schedule from it. /run is shared by all network
//! namespaces, like /sys/fs/bpf.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use synguard_common::maps::names::RUN_DIR;

use crate::iface::{IfaceName, XdpMode};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub pid: u32,
    pub started_unix: u64,
    /// When the active key was installed (unix seconds) ...
    pub key_rotated_unix: u64,
    /// ... and its epoch, so a restart can tell the record matches the pinned keys.
    pub key_epoch: u32,
    pub rotation_secs: u64,
    /// The mode the XDP link was attached in; `None` when a takeover could not tell.
    pub xdp_mode: Option<XdpMode>,
    /// Why that mode was chosen.
    pub xdp_reason: String,
    /// The config file the daemon runs from (and reloads on SIGHUP), if any.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The daemon's PID namespace (inode): `pid` means something only to a process in the
    /// same one (a restarted pod has a new one). `None` in records of older versions.
    #[serde(default)]
    pub pid_ns: Option<u64>,
    /// The shared secret's file (`--key-file`), if the keys come from one.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The handoff mode the daemon runs in (`Handoff::name`) and why it was chosen.
    #[serde(default)]
    pub handoff: String,
    #[serde(default)]
    pub handoff_reason: String,
}

impl RunState {
    pub fn path(iface: &IfaceName) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{iface}.json"))
    }

    pub fn load(iface: &IfaceName) -> Option<RunState> {
        let text = fs::read_to_string(Self::path(iface)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The pid of the daemon the record names, if that process is still a live synguard.
    pub fn live_pid(iface: &IfaceName) -> Option<u32> {
        Self::load(iface)
            .filter(|r| {
                r.pid_ns
                    .is_none_or(|ns| Some(ns) == crate::state_dir::pid_ns())
            })
            .map(|r| r.pid)
            .filter(|&pid| is_synguard(pid))
    }

    /// Writes atomically (temp file + rename), mode 0600.
    pub fn store(&self, iface: &IfaceName) -> Result<()> {
        use std::io::Write;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(RUN_DIR)
            .with_context(|| format!("creating {RUN_DIR}"))?;
        let path = Self::path(iface);
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn remove(iface: &IfaceName) {
        let _ = fs::remove_file(Self::path(iface));
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `pid` is a live synguard process (not a recycled pid, not a zombie).
pub fn is_synguard(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may hold spaces, so split at the last ')'.
    match stat.rsplit_once(')') {
        Some((head, tail)) => {
            pid != 0
                && head.ends_with("(synguard")
                && !matches!(tail.split_whitespace().next(), Some("Z" | "X"))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_the_mode_as_a_string() {
        let r = RunState {
            pid: 1,
            started_unix: 2,
            key_rotated_unix: 3,
            key_epoch: 4,
            rotation_secs: 60,
            xdp_mode: Some(XdpMode::Native),
            xdp_reason: "why".into(),
            config: None,
            pid_ns: Some(4026531836),
            key_file: None,
            handoff: "filter".into(),
            handoff_reason: "forced".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"xdp_mode\":\"native\""), "{text}");
        assert_eq!(serde_json::from_str::<RunState>(&text).unwrap(), r);
    }

    #[test]
    fn only_live_synguard_processes_count() {
        assert!(!is_synguard(0));
        // The test binary is not called synguard.
        assert!(!is_synguard(std::process::id()));
    }
}
