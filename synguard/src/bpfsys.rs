//! The two raw bpf(2) calls aya does not expose publicly: opening a pinned object and
//! asking a link what it is attached to. Used to tell a live pinned link from a dead one
//! (its interface went away) and to report program ids in `status`.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use anyhow::{Context, Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

pub const BPF_LINK_TYPE_XDP: u32 = 6;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

/// What the kernel says about a link (`struct bpf_link_info`, the fields we use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStat {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For XDP and TCX links: the interface, 0 once the interface is gone.
    pub ifindex: u32,
}

fn sys_bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<i64> {
    // SAFETY: attr is a valid, writable buffer of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a pinned BPF object (BPF_OBJ_GET).
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).context("path contains NUL")?;
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [0u64; 4];
    attr[0] = c.as_ptr() as u64;
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)
        .with_context(|| format!("opening pinned object {}", path.display()))?;
    // SAFETY: the kernel returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_OBJ_GET_INFO_BY_FD on a link fd.
pub fn link_stat(fd: &OwnedFd) -> Result<LinkStat> {
    use std::os::fd::AsRawFd;
    // struct bpf_link_info is 64 bytes or so today; leave generous room.
    let mut info = [0u64; 32];
    let mut attr = [0u64; 2];
    // bpf_fd (u32), info_len (u32), info (u64).
    attr[0] = fd.as_raw_fd() as u32 as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    let lo = |w: u64| w as u32;
    let hi = |w: u64| (w >> 32) as u32;
    Ok(LinkStat {
        link_type: lo(info[0]),
        id: hi(info[0]),
        prog_id: lo(info[1]),
        // The union starts at offset 16; xdp and tcx both begin with ifindex.
        ifindex: lo(info[2]),
    })
}

/// The state of a pinned link file, or `None` if there is no pin.
pub fn pinned_link(path: &Path) -> Result<Option<LinkStat>> {
    if !path.exists() {
        return Ok(None);
    }
    let fd = obj_get(path)?;
    link_stat(&fd).map(Some)
}
