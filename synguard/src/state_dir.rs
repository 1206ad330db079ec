//! The pin directory: `<PIN_ROOT>/<iface>/`, one per protected interface, holding the maps
//! and the program links; mounting bpffs for it, restricting it to root, and the daemon lock
//! on it.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use synguard_common::maps::names::{BPFFS, PIN_ROOT, TC_LINK, XDP_LINK};

use crate::{iface::IfaceName, run_state::RunState, service};

/// The pin directory for `iface`. [`IfaceName`] keeps it a direct child of the pin root.
pub fn dir(iface: &IfaceName) -> PathBuf {
    Path::new(PIN_ROOT).join(iface.as_str())
}

/// The two link pins in a pin directory: XDP first, then TC.
pub fn link_pins(dir: &Path) -> [PathBuf; 2] {
    [dir.join(XDP_LINK), dir.join(TC_LINK)]
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there (as bpftool does), then creates
/// the interface's pin directory with mode 0700.
pub fn ensure_dir(iface: &IfaceName) -> Result<PathBuf> {
    ensure_bpffs()?;
    let d = dir(iface);
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(&d) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(service::permission(format!("creating {}", d.display())));
        }
        return Err(
            anyhow::Error::new(e).context(format!("creating pin directory {}", d.display()))
        );
    }
    Ok(d)
}

/// The pin directory of an interface synguard is running on, or a clear error.
pub fn existing_dir(iface: &IfaceName) -> Result<PathBuf> {
    let d = dir(iface);
    match fs::metadata(&d) {
        Ok(m) if m.is_dir() => Ok(d),
        // bpffs and the pin root are 0700: a non-root caller cannot even see whether the
        // pins are there, so say that instead of "not running".
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(service::permission(
            format!("looking for pins at {}", d.display()),
        )),
        _ => Err(anyhow::Error::new(service::NotRunning(format!(
            "synguard is not running on {iface}: no pins at {} (start it with `synguard run --iface {iface}`)",
            d.display()
        )))),
    }
}

/// Every interface with a pin directory under the pin root, sorted; none if there is no
/// root. A name that is no interface name (nothing synguard made) is skipped.
pub fn instances() -> Result<Vec<IfaceName>> {
    let root = Path::new(PIN_ROOT);
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(service::permission(format!("reading {}", root.display())));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", root.display()))),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.path().is_dir() {
            continue;
        }
        if let Some(iface) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(iface);
        }
    }
    out.sort();
    Ok(out)
}

/// The interface a per-instance verb works on: `given`, or else the host's one instance
/// ([`only_instance`]).
pub fn iface_or_only(given: Option<IfaceName>) -> Result<IfaceName> {
    match given {
        Some(i) => Ok(i),
        None => only_instance(instances()?),
    }
}

/// The one instance of `found`, or an error naming what to pass: none pinned, or several.
pub fn only_instance(found: Vec<IfaceName>) -> Result<IfaceName> {
    match <[IfaceName; 1]>::try_from(found) {
        Ok([one]) => Ok(one),
        Err(v) if v.is_empty() => anyhow::bail!(
            "no synguard instance is pinned under {PIN_ROOT}: start one with `synguard run`, \
             or pass --iface"
        ),
        Err(v) => {
            let names: Vec<String> = v.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "{} synguard instances ({}): pass --iface to pick one",
                names.len(),
                names.join(", ")
            )
        }
    }
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

/// The inode the kernel gives the initial PID namespace (`PROC_PID_INIT_INO`), fixed since
/// Linux 3.8.
const PID_NS_INIT_INO: u64 = 0xEFFF_FFFC;

/// This process's PID namespace (the inode of `/proc/self/ns/pid`), if /proc tells.
pub fn pid_ns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// Why this process runs in a container, if it does: its own PID namespace (Docker,
/// Kubernetes and `unshare -p` all give one), or the marks container runtimes leave
/// (`container=` from podman, systemd-nspawn and LXC; `/run/.containerenv`; a Kubernetes
/// pod's service variables).
pub fn container_hint() -> Option<String> {
    if let Some(ino) = pid_ns()
        && ino != PID_NS_INIT_INO
    {
        return Some(format!("it has its own PID namespace, pid:[{ino}]"));
    }
    if let Ok(v) = std::env::var("container")
        && !v.is_empty()
    {
        return Some(format!("container={v} is set"));
    }
    if Path::new("/run/.containerenv").exists() {
        return Some("/run/.containerenv exists".into());
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Some("KUBERNETES_SERVICE_HOST is set".into());
    }
    None
}

fn ensure_bpffs() -> Result<()> {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    if statfs(BPFFS).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    // A bpffs mounted here would live in the container's mount namespace and die with it,
    // and with it the pins that carry programs, keys and lists across a restart.
    if let Some(why) = container_hint() {
        bail!(
            "{BPFFS} is not a bpffs mount and synguard runs in a container ({why}): refusing \
             to mount a bpffs of its own, whose pins would die with the container. Mount the \
             host's bpffs at {BPFFS} (Kubernetes: a hostPath volume for /sys/fs/bpf; docker \
             or podman: -v /sys/fs/bpf:/sys/fs/bpf), after mounting it on the host if needed \
             (mount -t bpf bpf /sys/fs/bpf)"
        );
    }
    fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs on {BPFFS}"))?;
    Ok(())
}

/// An exclusive lock on an interface's pin directory, held by the running daemon for its
/// whole life. The kernel drops it when the process dies, SIGKILL included, so a stale
/// lock never blocks a restart.
pub struct DaemonLock {
    _dir: fs::File,
}

/// Takes the daemon lock on `dir`, or says that another daemon holds it.
pub fn lock(dir: &Path, iface: &IfaceName) -> Result<DaemonLock> {
    match try_lock(dir)? {
        Some(l) => Ok(l),
        None => {
            let who = RunState::live_pid(iface)
                .map(|pid| format!(" (pid {pid})"))
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
    let f = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(DaemonLock { _dir: f })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("locking {}", dir.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dirs_stay_under_the_pin_root() {
        let d = dir(&"eth0".parse().unwrap());
        assert_eq!(d, Path::new(PIN_ROOT).join("eth0"));
        assert_eq!(d.parent(), Some(Path::new(PIN_ROOT)));
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let tmp = std::env::temp_dir().join(format!("synguard-lock-test-{}", std::process::id()));
        fs::create_dir_all(&tmp).unwrap();
        let held = try_lock(&tmp).unwrap();
        assert!(held.is_some());
        assert!(try_lock(&tmp).unwrap().is_none());
        drop(held);
        assert!(try_lock(&tmp).unwrap().is_some());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn only_instance_picks_the_one_or_names_the_fix() {
        let n = |s: &str| s.parse::<IfaceName>().unwrap();
        assert_eq!(only_instance(vec![n("eth0")]).unwrap(), n("eth0"));
        let e = only_instance(vec![]).unwrap_err().to_string();
        assert!(
            e.contains("no synguard instance") && e.contains("--iface"),
            "{e}"
        );
        let e = only_instance(vec![n("eth0"), n("eth1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 synguard instances (eth0, eth1)") && e.contains("--iface"),
            "{e}"
        );
        assert_eq!(iface_or_only(Some(n("lo"))).unwrap(), n("lo"));
    }
}
