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
