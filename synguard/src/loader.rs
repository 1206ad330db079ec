//! Loading the embedded eBPF object, attaching it to an interface, and taking it down again.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use log::info;
use synguard_common::maps::names;

use crate::pins;

/// The eBPF object built by build.rs, embedded so the binary is self-contained.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SYNGUARD_EBPF_OBJECT"));

/// XDP attach mode as the operator asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native where the driver can really transmit with XDP_TX, generic otherwise.
    Auto,
    Native,
    Generic,
}

/// Loads the object with its maps pinned in (or reused from) `dir`.
pub fn load(dir: &Path) -> Result<Ebpf> {
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(dir)
        .load(OBJECT)
        .context("loading the synguard eBPF object")?;
    Ok(ebpf)
}

/// Picks the XDP mode for `iface`, saying why.
pub fn choose_mode(iface: &str, arg: XdpModeArg) -> Result<XdpMode> {
    Ok(match arg {
        XdpModeArg::Native => XdpMode::Driver,
        XdpModeArg::Generic => XdpMode::Skb,
        XdpModeArg::Auto => {
            let driver = driver_name(iface)?;
            if driver == "veth" {
                // A veth only delivers native XDP_TX frames when its peer runs an XDP
                // program too, which we cannot see from here (the peer is usually in
                // another namespace). Generic mode always transmits.
                info!(
                    "{iface}: veth driver, using generic XDP (native XDP_TX needs an XDP program on the peer; pass --xdp-mode native if it has one)"
                );
                XdpMode::Skb
            } else {
                info!("{iface}: driver {driver}, using native XDP");
                XdpMode::Driver
            }
        }
    })
}

/// The ifindex of `iface` in the current network namespace, or a clear error.
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name contains NUL")?;
    // SAFETY: name is NUL-terminated.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => bail!("no such interface in this network namespace: {iface}"),
        i => Ok(i),
    }
}

/// The kernel driver behind `iface` (ETHTOOL_GDRVINFO). Asked through a socket rather than
/// sysfs because /sys shows the namespace it was mounted in, not the caller's.
pub fn driver_name(iface: &str) -> Result<String> {
    ifindex(iface)?;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    let n = iface.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&iface.as_bytes()[..n]);
    // SAFETY: plain socket/ioctl/close with valid pointers that outlive the calls.
    let rc = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        libc::close(fd);
        rc
    };
    if rc != 0 {
        // Devices without ethtool support (e.g. some tunnels) just have no driver name.
        return Ok("unknown".into());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Attaches XDP and TC ingress to `iface` and pins both links in `dir`.
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: XdpMode, dir: &Path) -> Result<()> {
    let ifname = std::ffi::CString::new(iface).context("interface name contains NUL")?;
    let xdp: &mut Xdp = ebpf
        .program_mut(names::XDP_PROG)
        .context("XDP program missing from object")?
        .try_into()?;
    xdp.load().context("verifier rejected the XDP program")?;
    let id = xdp
        .attach(&ifname, mode)
        .with_context(|| format!("attaching XDP to {iface} in {mode:?} mode"))?;
    let link: FdLink = xdp
        .take_link(id)?
        .try_into()
        .context("XDP link is not an fd link")?;
    link.pin(dir.join(pins::XDP_LINK))
        .context("pinning the XDP link")?;

    let tc: &mut SchedClassifier = ebpf
        .program_mut(names::TC_PROG)
        .context("TC program missing from object")?
        .try_into()?;
    tc.load().context("verifier rejected the TC program")?;
    let id = tc
        .attach(&ifname, TcAttachType::Ingress)
        .with_context(|| format!("attaching TC ingress to {iface}"))?;
    let link: FdLink = tc
        .take_link(id)?
        .try_into()
        .context("TC link is not an fd link")?;
    link.pin(dir.join(pins::TC_LINK))
        .context("pinning the TC link")?;
    pins::restrict(dir)?;
    Ok(())
}

/// Detaches both programs (their pinned links are the last references) and removes the
/// pin directory with its maps, keys and counters.
pub fn detach(dir: &Path) -> Result<()> {
    for name in [pins::XDP_LINK, pins::TC_LINK] {
        let path = dir.join(name);
        if path.exists() {
            let link = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening pinned link {}", path.display()))?;
            // Unpinning drops the last reference once this FdLink goes out of scope.
            drop(link.unpin()?);
        }
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}
