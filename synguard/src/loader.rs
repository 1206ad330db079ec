//! Loading the embedded eBPF object, attaching it to an interface, and taking it down again.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use log::warn;
use synguard_common::maps::names;

use crate::{
    bpfsys::{self, BPF_LINK_TYPE_TCX, BPF_LINK_TYPE_XDP, LinkStat},
    netlink, pins,
    settings::XdpModeArg,
};

/// The eBPF object built by build.rs, embedded so the binary is self-contained.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SYNGUARD_EBPF_OBJECT"));

/// Loads the object with its maps pinned in (or reused from) `dir`.
pub fn load(dir: &Path) -> Result<Ebpf> {
    match EbpfLoader::new()
        .default_map_pin_directory(dir)
        .load(OBJECT)
    {
        Ok(ebpf) => Ok(ebpf),
        Err(aya::EbpfError::MapError(e @ aya::maps::MapError::IncompatiblePinnedMap { .. })) => {
            Err(anyhow::Error::new(e).context(format!(
                "the maps pinned in {} come from an incompatible synguard build; \
                 `synguard detach` that interface first (this drops its keys, lists and counters)",
                dir.display()
            )))
        }
        Err(e) => Err(anyhow::Error::new(e).context("loading the synguard eBPF object")),
    }
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

/// The XDP mode to attach in, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChoice {
    pub mode: XdpMode,
    /// Fall back to generic if the native attach fails (auto mode on non-veth devices).
    pub fallback: bool,
    pub reason: String,
}

/// Picks the XDP mode for `iface`.
///
/// A veth only delivers natively transmitted (XDP_TX) frames when its peer runs a native
/// XDP program; otherwise the peer drops them (its NAPI is off), and every cookie SYN+ACK
/// is lost. So on veth, auto uses native only when netlink shows a native XDP program on the
/// peer, looked up in the peer's namespace by its netns id; generic otherwise. Other drivers
/// get native, falling back to generic when the driver refuses the attach.
pub fn choose_mode(iface: &str, arg: XdpModeArg) -> Result<ModeChoice> {
    let idx = ifindex(iface)?;
    Ok(match arg {
        XdpModeArg::Native => ModeChoice {
            mode: XdpMode::Driver,
            fallback: false,
            reason: "native XDP requested with --xdp-mode native".into(),
        },
        XdpModeArg::Generic => ModeChoice {
            mode: XdpMode::Skb,
            fallback: false,
            reason: "generic XDP requested with --xdp-mode generic".into(),
        },
        XdpModeArg::Auto => {
            let link = netlink::get_link(idx, None)
                .with_context(|| format!("asking netlink about {iface}"))?;
            if link.kind.as_deref() == Some("veth") {
                match veth_peer_native_xdp(&link) {
                    Ok((peer, Some(prog))) => ModeChoice {
                        mode: XdpMode::Driver,
                        fallback: true,
                        reason: format!(
                            "veth whose peer {peer} runs a native XDP program (id {prog}), so \
                             native XDP_TX frames reach it"
                        ),
                    },
                    Ok((peer, None)) => ModeChoice {
                        mode: XdpMode::Skb,
                        fallback: false,
                        reason: format!(
                            "veth whose peer {peer} has no native XDP program: it would drop \
                             native XDP_TX frames, so generic XDP (attach a native XDP program \
                             to the peer, e.g. xdp-pass, to get native)"
                        ),
                    },
                    Err(e) => ModeChoice {
                        mode: XdpMode::Skb,
                        fallback: false,
                        reason: format!(
                            "veth whose peer cannot be inspected ({e:#}), so generic XDP, \
                             which always transmits"
                        ),
                    },
                }
            } else {
                let driver = driver_name(iface).unwrap_or_else(|_| "unknown".into());
                ModeChoice {
                    mode: XdpMode::Driver,
                    fallback: true,
                    reason: format!("driver {driver}, native XDP"),
                }
            }
        }
    })
}

/// For a veth `iface`: its peer's name and the id of the native XDP program on the peer, if
/// any. `None` when `iface` is not a veth.
pub fn veth_peer(iface: &str) -> Result<Option<(String, Option<u32>)>> {
    let link = netlink::get_link(ifindex(iface)?, None)?;
    if link.kind.as_deref() != Some("veth") {
        return Ok(None);
    }
    veth_peer_native_xdp(&link).map(Some)
}

/// For a veth: its peer's name and the id of the native XDP program on it, if any.
fn veth_peer_native_xdp(link: &netlink::Link) -> Result<(String, Option<u32>)> {
    let peer_idx = match link.link {
        Some(i) if i != 0 => i,
        _ => bail!("netlink gives no peer index (IFLA_LINK)"),
    };
    let peer = netlink::get_link(peer_idx, link.link_netnsid).with_context(|| {
        format!(
            "looking up the peer (ifindex {peer_idx}{})",
            link.link_netnsid
                .map(|n| format!(" in netns id {n}"))
                .unwrap_or_default()
        )
    })?;
    let where_ = match link.link_netnsid {
        Some(n) => format!("{} (netns id {n})", peer.name),
        None => peer.name.clone(),
    };
    Ok((where_, peer.xdp.native()))
}

/// The pinned links found in a pin directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// No link pins.
    None,
    /// Both links pinned and attached to this interface: a restart can swap the programs in.
    Live { xdp: LinkStat, tc: LinkStat },
    /// Some link pin exists but is not attached here any more (its interface went away, or
    /// only one of the two was pinned).
    Stale,
}

pub fn existing_links(dir: &Path, ifindex: u32) -> Result<Existing> {
    let xdp = bpfsys::pinned_link(&dir.join(pins::XDP_LINK))?;
    let tc = bpfsys::pinned_link(&dir.join(pins::TC_LINK))?;
    Ok(match (xdp, tc) {
        (None, None) => Existing::None,
        (Some(x), Some(t))
            if x.link_type == BPF_LINK_TYPE_XDP
                && t.link_type == BPF_LINK_TYPE_TCX
                && x.ifindex == ifindex
                && t.ifindex == ifindex =>
        {
            Existing::Live { xdp: x, tc: t }
        }
        _ => Existing::Stale,
    })
}

/// Removes link pins that no longer hold anything attached here.
pub fn remove_link_pins(dir: &Path) -> Result<()> {
    for name in [pins::XDP_LINK, pins::TC_LINK] {
        let path = dir.join(name);
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

fn programs(ebpf: &mut Ebpf) -> Result<()> {
    let xdp: &mut Xdp = ebpf
        .program_mut(names::XDP_PROG)
        .context("XDP program missing from object")?
        .try_into()?;
    xdp.load().context("verifier rejected the XDP program")?;
    let tc: &mut SchedClassifier = ebpf
        .program_mut(names::TC_PROG)
        .context("TC program missing from object")?
        .try_into()?;
    tc.load().context("verifier rejected the TC program")?;
    Ok(())
}

fn xdp_prog(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(names::XDP_PROG)
        .context("XDP program missing from object")?
        .try_into()?)
}

fn tc_prog(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(names::TC_PROG)
        .context("TC program missing from object")?
        .try_into()?)
}

/// Attaches XDP (in the chosen mode, falling back to generic if allowed) and TC ingress to
/// `iface`, and pins both links in `dir`. Returns the XDP mode actually attached and why.
pub fn attach(ebpf: &mut Ebpf, iface: &str, choice: &ModeChoice, dir: &Path) -> Result<ModeChoice> {
    let ifname = std::ffi::CString::new(iface).context("interface name contains NUL")?;
    programs(ebpf)?;
    let xdp = xdp_prog(ebpf)?;
    let mut got = choice.clone();
    let id = match xdp.attach(ifname.as_c_str(), choice.mode) {
        Ok(id) => id,
        Err(e) if choice.fallback && choice.mode == XdpMode::Driver => {
            warn!("{iface}: native XDP attach failed ({e}); falling back to generic XDP");
            got = ModeChoice {
                mode: XdpMode::Skb,
                fallback: false,
                reason: format!(
                    "{}, but the native attach failed ({e}), so generic",
                    choice.reason
                ),
            };
            xdp.attach(ifname.as_c_str(), XdpMode::Skb)
                .with_context(|| format!("attaching XDP to {iface} in generic mode"))?
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "attaching XDP to {iface} in {} mode",
                mode_name(choice.mode)
            )));
        }
    };
    let link: FdLink = xdp
        .take_link(id)?
        .try_into()
        .context("XDP link is not an fd link (kernel without XDP bpf_link?)")?;
    link.pin(dir.join(pins::XDP_LINK))
        .context("pinning the XDP link")?;

    let tc = tc_prog(ebpf)?;
    let id = tc
        .attach(ifname.as_c_str(), TcAttachType::Ingress)
        .with_context(|| format!("attaching TC ingress to {iface}"))?;
    let link: FdLink = tc
        .take_link(id)?
        .try_into()
        .context("TC link is not an fd link (kernel without TCX?)")?;
    link.pin(dir.join(pins::TC_LINK))
        .context("pinning the TC link")?;
    pins::restrict(dir)?;
    Ok(got)
}

/// Swaps the freshly loaded programs into the pinned links of a previous run
/// (BPF_LINK_UPDATE), so the interface is never without a program. The pins stay in place
/// throughout: the link fds come from them without unpinning.
pub fn replace(ebpf: &mut Ebpf, dir: &Path) -> Result<()> {
    // Load both first: a verifier failure must leave the running programs alone.
    programs(ebpf)?;
    let fd: FdLink = PinnedLink::from_pin(dir.join(pins::XDP_LINK))
        .context("opening the pinned XDP link")?
        .into();
    let xdp = xdp_prog(ebpf)?;
    let id = xdp
        .attach_to_link(XdpLink::try_from(fd).context("pinned XDP link")?)
        .context("replacing the program in the pinned XDP link")?;
    // Dropping our handle only closes our fd; the pin keeps the link.
    drop(xdp.take_link(id)?);

    let fd: FdLink = PinnedLink::from_pin(dir.join(pins::TC_LINK))
        .context("opening the pinned TC link")?
        .into();
    let tc = tc_prog(ebpf)?;
    let id = tc
        .attach_to_link(SchedClassifierLink::try_from(fd).context("pinned TC link")?)
        .context("replacing the program in the pinned TC link")?;
    drop(tc.take_link(id)?);
    pins::restrict(dir)?;
    Ok(())
}

pub fn mode_name(m: XdpMode) -> &'static str {
    match m {
        XdpMode::Driver => "native",
        XdpMode::Skb => "generic",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "default",
    }
}

/// The XDP mode the program with `prog_id` is attached in on `ifindex`, from netlink.
pub fn attached_mode(ifindex: u32, prog_id: u32) -> Result<&'static str> {
    let link = netlink::get_link(ifindex, None)?;
    Ok(if link.xdp.native() == Some(prog_id) {
        "native"
    } else if link.xdp.generic() == Some(prog_id) {
        "generic"
    } else if link.xdp.attached == netlink::XDP_ATTACHED_NONE {
        "not attached"
    } else {
        "other program attached"
    })
}
