//! Where synguard keeps its state: `/sys/fs/bpf/synguard/<iface>/`, one directory per
//! protected interface, holding the maps and the program links.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

pub const BPFFS: &str = "/sys/fs/bpf";
/// Pinned links keep the programs attached while the daemon restarts, so no cookie ACK
/// lands on an unprotected interface in between.
pub const XDP_LINK: &str = "link_xdp";
pub const TC_LINK: &str = "link_tc";

/// The pin directory for `iface`.
pub fn dir(iface: &str) -> PathBuf {
    Path::new(BPFFS).join("synguard").join(iface)
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there (as bpftool does), then creates
/// the interface's pin directory with mode 0700.
pub fn ensure_dir(iface: &str) -> Result<PathBuf> {
    ensure_bpffs()?;
    let d = dir(iface);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .with_context(|| format!("creating pin directory {}", d.display()))?;
    Ok(d)
}

/// The pin directory of an interface synguard is running on, or a clear error.
pub fn existing_dir(iface: &str) -> Result<PathBuf> {
    let d = dir(iface);
    if !d.is_dir() {
        bail!(
            "synguard is not running on {iface}: no pins at {} (start it with `synguard run --iface {iface}`)",
            d.display()
        );
    }
    Ok(d)
}

/// Restricts everything pinned in `dir` to root (mode 0600): keys live here.
pub fn restrict(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
    }
    Ok(())
}

fn ensure_bpffs() -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let path = c"/sys/fs/bpf";
    // SAFETY: path is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    fs::create_dir_all(BPFFS).context("creating /sys/fs/bpf")?;
    // SAFETY: all arguments are NUL-terminated C strings or null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs on {BPFFS}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// An exclusive lock on an interface's pin directory, held by the running daemon for its
/// whole life. The kernel drops it when the process dies, SIGKILL included, so a stale
/// lock never blocks a restart.
pub struct DaemonLock {
    _fd: std::os::fd::OwnedFd,
}

/// Takes the daemon lock on `dir`, or says that another daemon holds it.
pub fn lock(dir: &Path, iface: &str) -> Result<DaemonLock> {
    match try_lock(dir)? {
        Some(l) => Ok(l),
        None => {
            let who = RunState::load(iface)
                .filter(|s| is_synguard(s.pid))
                .map(|s| format!(" (pid {})", s.pid))
                .unwrap_or_default();
            bail!(
                "a synguard daemon is already running on {iface}{who}; stop it first (SIGTERM detaches, \
                 or use --keep-attached on it to restart without a gap)"
            )
        }
    }
}

/// `Some(lock)` if nobody holds it, `None` if a daemon does.
pub fn try_lock(dir: &Path) -> Result<Option<DaemonLock>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: c is NUL-terminated; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "opening {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        bail!("locking {}: {e}", dir.display());
    }
    Ok(Some(DaemonLock { _fd: fd }))
}

/// Where the daemon records what bpffs cannot hold: its pid, when the key last rotated and
/// the XDP mode it attached. `status` reads it; a restarted daemon keeps the rotation
/// schedule from it. /run is shared by all network namespaces, like /sys/fs/bpf.
pub const RUN_DIR: &str = "/run/synguard";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub pid: u32,
    pub started_unix: u64,
    /// When the active key was installed (unix seconds) ...
    pub key_rotated_unix: u64,
    /// ... and its epoch, so a restart can tell the record matches the pinned keys.
    pub key_epoch: u32,
    pub rotation_secs: u64,
    /// "native" or "generic".
    pub xdp_mode: String,
    /// Why that mode was chosen.
    pub xdp_reason: String,
}

impl RunState {
    pub fn path(iface: &str) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{iface}.json"))
    }

    pub fn load(iface: &str) -> Option<RunState> {
        let text = fs::read_to_string(Self::path(iface)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes atomically (temp file + rename), mode 0600.
    pub fn store(&self, iface: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
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

    pub fn remove(iface: &str) {
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
