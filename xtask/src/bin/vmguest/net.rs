//! The guest's plumbing that has no home in the harness: what `ip` reports about a link's XDP
//! program, the TCP sockets a handshake would have opened, replies read off a raw socket, and
//! the peer's XDP_PASS program. Namespaces, the veth pair, raw sockets and the daemon are the
//! harness's (`synguard_harness::{fixture, netns, rawsock, synguard}`).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use synguard_common::flags;
use synguard_harness::{netns, rawsock::RawSock};

/// The XDP mode the kernel reports for `dev`'s program, in synguard's words.
pub fn xdp_mode(ns: &str, dev: &str) -> Result<Option<&'static str>> {
    let out = netns::ip(&["-n", ns, "-d", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing ip -j")?;
    // enum xdp_attach_mode in ip's JSON: 1 drv, 2 skb, 3 hw, 4 several.
    Ok(v[0]["xdp"]["mode"].as_u64().map(|m| match m {
        1 => "native",
        2 => "generic",
        3 => "offload",
        _ => "several",
    }))
}

/// Lines of `/proc/net/tcp` seen from the calling thread's namespace whose local port is
/// `port` and that are not listeners: the sockets a handshake would have created.
pub fn tcp_sockets_on(port: u16) -> Result<usize> {
    // thread-self: network namespaces are per thread, and /proc/net follows the process.
    let text = std::fs::read_to_string("/proc/thread-self/net/tcp")
        .context("reading /proc/thread-self/net/tcp")?;
    let want = format!(":{port:04X}");
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] != "0A"
        })
        .count())
}

/// TCP flags of `frame` if it is IPv4 TCP from port `sport` to port `dport`. A check of the
/// bytes rather than `testutil::read_reply`, which asserts: the peer also sees neighbour
/// discovery and other frames that are not replies at all.
pub fn tcp_flags(frame: &[u8], sport: u16, dport: u16) -> Option<u8> {
    if frame.get(12..14)? != [0x08, 0x00] || frame.get(14)? >> 4 != 4 || *frame.get(23)? != 6 {
        return None;
    }
    let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
    let tcp = frame.get(l4..l4 + 14)?;
    let port = |o: usize| u16::from_be_bytes([tcp[o], tcp[o + 1]]);
    (port(0) == sport && port(2) == dport).then_some(tcp[13])
}

/// Whether TCP flags `f` are a SYN+ACK.
pub fn is_syn_ack(f: u8) -> bool {
    f & (flags::SYN | flags::ACK) == flags::SYN | flags::ACK
}

/// Every incoming frame `keep` accepts within `wait` (not only the first, as
/// [`RawSock::recv_matching`] returns).
pub fn replies(sock: &RawSock, wait: Duration, keep: impl Fn(&[u8]) -> bool) -> Result<usize> {
    let deadline = Instant::now() + wait;
    let mut n = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.recv_matching(left, &keep)?.is_none() {
            return Ok(n);
        }
        n += 1;
    }
}

/// Attaches an XDP_PASS program in driver mode to `dev` in `ns`. Native XDP_TX on a veth
/// hands the frame to the peer's NAPI, which exists only while the peer has an XDP program:
/// without one, every SYN+ACK synguard sends back is dropped. The program goes with the
/// namespace.
///
/// Not `synguard_harness::xdp::attach_pass`: that compiles its C source with clang at first
/// use, and the initramfs has no clang. The program is two instructions, loaded with a raw
/// bpf(2) (which nix does not wrap) and attached by iproute2 (`ip`, by path) from a pin.
pub fn xdp_pass_on(ip: &Path, ns: &str, dev: &str) -> Result<()> {
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    // r0 = XDP_PASS (2); exit
    let insns: [u64; 2] = [0x0000_0002_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"xdp_pass");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
    };
    // SAFETY: `ProgLoad` is the head of bpf_attr for BPF_PROG_LOAD; the instructions and the
    // license it points at live until the end of this function.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &attr) }.context("loading XDP_PASS")?;
    // SAFETY: a fresh program fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let pin = format!("/sys/fs/bpf/vmguest-xdp-pass-{}", std::process::id());
    let cpin = std::ffi::CString::new(pin.clone())?;
    let attr = ObjPin {
        pathname: cpin.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: `ObjPin` is the head of bpf_attr for BPF_OBJ_PIN; the path and the fd live
    // until the end of this function.
    unsafe { bpf(BPF_OBJ_PIN, &attr) }.with_context(|| format!("pinning XDP_PASS at {pin}"))?;
    // iproute2 attaches from a pin; the attachment holds the program once the pin is gone.
    // nsenter, not `ip -n`: that remounts /sys, and bpffs with it.
    let r = netns::run_checked(
        netns::command(ns, ip).args(["link", "set", "dev", dev, "xdpdrv", "pinned", &pin]),
    );
    let _ = std::fs::remove_file(&pin);
    r.map(|_| ())
}

/// bpf(2) `cmd` with `attr`, the head of union bpf_attr (the kernel zero-extends the rest).
///
/// # Safety
///
/// `T` must be `#[repr(C)]` and laid out as bpf_attr's fields for `cmd`, and every pointer
/// and fd in it must be valid for the kernel to read for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is valid for `size_of::<T>()` bytes; what it points at is the caller's
    // promise.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use synguard_common::testutil::Seg;

    use super::*;

    #[test]
    fn tcp_flags_reads_a_segment_of_the_flow_only() {
        let mut s = Seg::syn4();
        s.flags = flags::SYN | flags::ACK;
        let f = s.frame();
        assert_eq!(
            tcp_flags(&f, s.sport, s.dport),
            Some(flags::SYN | flags::ACK)
        );
        assert!(is_syn_ack(tcp_flags(&f, s.sport, s.dport).unwrap()));
        assert_eq!(tcp_flags(&f, s.dport, s.sport), None);
        assert_eq!(tcp_flags(&Seg::syn6().frame(), s.sport, s.dport), None);
        assert_eq!(tcp_flags(&f[..30], s.sport, s.dport), None);
    }
}
