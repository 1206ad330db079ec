//! Network interfaces: a validated name, its ifindex and driver, what rtnetlink says about
//! it (kind, veth peer, MAC, attached XDP programs), and the XDP mode synguard attaches in.
//!
//! Everything here asks the caller's network namespace: ifindex and netlink answer for it,
//! unlike /sys/class/net, which shows the namespace sysfs was mounted in (the host's, under
//! `nsenter --net`).

use std::{fmt, os::fd::AsRawFd, str::FromStr};

use anyhow::{Context, Result, bail};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{
        InfoKind, LinkAttribute, LinkExtentMask, LinkInfo, LinkLayerType, LinkMessage, LinkXdp,
        XdpAttached,
    },
};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use crate::rtnl;

/// An interface name the kernel would accept (`dev_valid_name`): 1 to 15 bytes
/// (IFNAMSIZ - 1), not "." or "..", and no '/', ':' or whitespace. Since every path
/// synguard derives from an interface (its pin directory, its run record) is built from
/// this type, no name can reach outside those directories.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfaceName(String);

impl IfaceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfaceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let why = if s.is_empty() {
            Some("it is empty".to_string())
        } else if s.len() >= libc::IFNAMSIZ {
            Some(format!(
                "it is {} bytes long; the kernel allows at most {}",
                s.len(),
                libc::IFNAMSIZ - 1
            ))
        } else if s == "." || s == ".." {
            Some("\".\" and \"..\" are not interface names".to_string())
        } else {
            s.chars()
                .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
                .map(|c| format!("it contains {c:?}"))
        };
        match why {
            Some(why) => Err(format!("invalid interface name {s:?}: {why}")),
            None => Ok(IfaceName(s.to_string())),
        }
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IfaceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The ifindex of `iface` in the current network namespace, or a clear error.
pub fn ifindex(iface: &IfaceName) -> Result<u32> {
    match nix::net::if_::if_nametoindex(iface.as_str()) {
        Ok(0) | Err(_) => bail!("no such interface in this network namespace: {iface}"),
        Ok(i) => Ok(i),
    }
}

/// The kernel driver behind `iface` (ETHTOOL_GDRVINFO). Asked through a socket rather than
/// sysfs because /sys shows the namespace it was mounted in, not the caller's.
pub fn driver_name(iface: &IfaceName) -> Result<String> {
    ifindex(iface)?;
    /// `struct ethtool_drvinfo`: only `driver` is read.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    /// `struct ifreq` with `ifr_data`.
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
    // IfaceName guarantees at most IFNAMSIZ - 1 bytes, so the name stays NUL-terminated.
    let name = iface.as_str().as_bytes();
    req.name[..name.len()].copy_from_slice(name);
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for ETHTOOL_GDRVINFO")?;
    // SAFETY: SIOCETHTOOL reads `req` and writes at most size_of::<DrvInfo>() bytes through
    // `req.data`; both live on this stack frame until after the call. No crate wraps
    // ETHTOOL_GDRVINFO.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        // Devices without ethtool support (e.g. some tunnels) just have no driver name.
        return Ok("unknown".into());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether `iface` strips VLAN tags on receive (`ethtool -k`'s rx-vlan-offload,
/// `NETIF_F_HW_VLAN_CTAG_RX`, read with ETHTOOL_GFLAGS' `ETH_FLAG_RXVLAN`): the tag then
/// reaches the stack out of band (descriptor, skb), and XDP sees the frame untagged. A
/// device without ethtool support does not strip.
pub fn strips_vlan_tags(iface: &IfaceName) -> Result<bool> {
    /// `struct ethtool_value`.
    #[repr(C)]
    struct Value {
        cmd: u32,
        data: u32,
    }
    /// `struct ifreq` with `ifr_data`.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut Value,
        _pad: [u8; 16],
    }
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETH_FLAG_RXVLAN: u32 = 1 << 8;
    ifindex(iface)?;
    let mut v = Value {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut v,
        _pad: [0; 16],
    };
    // IfaceName guarantees at most IFNAMSIZ - 1 bytes, so the name stays NUL-terminated.
    let name = iface.as_str().as_bytes();
    req.name[..name.len()].copy_from_slice(name);
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for ETHTOOL_GFLAGS")?;
    // SAFETY: SIOCETHTOOL reads `req` and writes at most size_of::<Value>() bytes through
    // `req.data`; both live on this stack frame until after the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    Ok(rc == 0 && v.data & ETH_FLAG_RXVLAN != 0)
}

/// Whether `link` is a VLAN device whose lower device is `lower` (an ifindex).
pub fn is_vlan_over(link: &Link, lower: u32) -> bool {
    link.kind == Some(InfoKind::Vlan) && link.link == Some(lower)
}

/// The XDP attach mode synguard ran in. On the wire (run state, status JSON) it is the
/// lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// On the generic skb path (XDP_FLAGS_SKB_MODE); works everywhere.
    Generic,
}

impl XdpMode {
    pub const fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }

    pub const fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The XDP attach mode the operator asks for (`--xdp-mode`, `xdp_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpRequest {
    /// Native where the driver can really transmit with XDP_TX, generic otherwise.
    Auto,
    Exactly(XdpMode),
}

impl FromStr for XdpRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(XdpRequest::Auto),
            "native" | "drv" | "driver" => Ok(XdpRequest::Exactly(XdpMode::Native)),
            "generic" | "skb" => Ok(XdpRequest::Exactly(XdpMode::Generic)),
            _ => Err(format!(
                "xdp_mode must be one of auto, native, generic; got {s:?}"
            )),
        }
    }
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
pub fn choose_mode(iface: &IfaceName, req: XdpRequest) -> Result<ModeChoice> {
    let idx = ifindex(iface)?;
    Ok(match req {
        XdpRequest::Exactly(mode) => ModeChoice {
            mode,
            fallback: false,
            reason: format!("{mode} XDP requested with --xdp-mode {mode}"),
        },
        XdpRequest::Auto => {
            let link =
                get_link(idx, None).with_context(|| format!("asking netlink about {iface}"))?;
            if link.is_veth() {
                match veth_peer_native_xdp(&link) {
                    Ok((peer, Some(prog))) => ModeChoice {
                        mode: XdpMode::Native,
                        fallback: true,
                        reason: format!(
                            "veth whose peer {peer} runs a native XDP program (id {prog}), so \
                             native XDP_TX frames reach it"
                        ),
                    },
                    Ok((peer, None)) => ModeChoice {
                        mode: XdpMode::Generic,
                        fallback: false,
                        reason: format!(
                            "veth whose peer {peer} has no native XDP program: it would drop \
                             native XDP_TX frames, so generic XDP (attach a native XDP program \
                             to the peer, e.g. xdp-pass, to get native)"
                        ),
                    },
                    Err(e) => ModeChoice {
                        mode: XdpMode::Generic,
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
                    mode: XdpMode::Native,
                    fallback: true,
                    reason: format!("driver {driver}, native XDP"),
                }
            }
        }
    })
}

/// For a veth `iface`: its peer's name and the id of the native XDP program on the peer, if
/// any. `None` when `iface` is not a veth.
pub fn veth_peer(iface: &IfaceName) -> Result<Option<(String, Option<u32>)>> {
    let link = get_link(ifindex(iface)?, None)?;
    if !link.is_veth() {
        return Ok(None);
    }
    veth_peer_native_xdp(&link).map(Some)
}

/// For a veth: its peer's name and the id of the native XDP program on it, if any.
fn veth_peer_native_xdp(link: &Link) -> Result<(String, Option<u32>)> {
    let peer_idx = match link.link {
        Some(i) if i != 0 => i,
        _ => bail!("netlink gives no peer index (IFLA_LINK)"),
    };
    let peer = get_link(peer_idx, link.link_netnsid).with_context(|| {
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

/// What occupies the XDP hook of an interface, as seen from one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpHook {
    /// The program is attached, in this mode.
    Ours(XdpMode),
    /// No XDP program at all.
    Empty,
    /// Some other program.
    Other,
}

impl fmt::Display for XdpHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdpHook::Ours(m) => m.fmt(f),
            XdpHook::Empty => f.write_str("not attached"),
            XdpHook::Other => f.write_str("other program attached"),
        }
    }
}

/// How the program with `prog_id` sits on the XDP hook of `ifindex`, from netlink.
pub fn xdp_hook(ifindex: u32, prog_id: u32) -> Result<XdpHook> {
    let xdp = get_link(ifindex, None)?.xdp;
    Ok(if xdp.native() == Some(prog_id) {
        XdpHook::Ours(XdpMode::Native)
    } else if xdp.generic() == Some(prog_id) {
        XdpHook::Ours(XdpMode::Generic)
    } else if xdp.attached == XdpAttached::None {
        XdpHook::Empty
    } else {
        XdpHook::Other
    })
}

/// A program on the XDP hook of `ifindex`, whoever attached it: (id, mode).
pub fn xdp_occupant(ifindex: u32) -> Result<Option<(u32, XdpMode)>> {
    let xdp = get_link(ifindex, None)?.xdp;
    Ok(xdp
        .native()
        .map(|id| (id, XdpMode::Native))
        .or(xdp.generic().map(|id| (id, XdpMode::Generic))))
}

/// XDP programs on an interface, by attach mode (`IFLA_XDP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpState {
    pub attached: XdpAttached,
    /// Set when exactly one mode is attached (`attached` is DRV, SKB or HW).
    pub prog_id: u32,
    pub drv_prog_id: u32,
    pub skb_prog_id: u32,
}

impl Default for XdpState {
    fn default() -> Self {
        XdpState {
            attached: XdpAttached::None,
            prog_id: 0,
            drv_prog_id: 0,
            skb_prog_id: 0,
        }
    }
}

impl XdpState {
    /// Id of the native (driver) program, if one is attached.
    pub fn native(&self) -> Option<u32> {
        match self.attached {
            XdpAttached::Driver => Some(self.prog_id),
            XdpAttached::Multiple if self.drv_prog_id != 0 => Some(self.drv_prog_id),
            _ => None,
        }
    }

    /// Id of the generic (skb) program, if one is attached.
    pub fn generic(&self) -> Option<u32> {
        match self.attached {
            XdpAttached::SocketBuffer => Some(self.prog_id),
            XdpAttached::Multiple if self.skb_prog_id != 0 => Some(self.skb_prog_id),
            _ => None,
        }
    }
}

/// What RTM_GETLINK says about one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: veth, bridge, ...; `None` for physical devices.
    pub kind: Option<InfoKind>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace id, when it is not ours.
    pub link_netnsid: Option<i32>,
    /// `IFLA_ADDRESS`, when it is an Ethernet (6-byte) address.
    pub mac: Option<[u8; 6]>,
    /// `IFLA_MTU`.
    pub mtu: Option<u32>,
    /// `ifi_type`: the link-layer type, an `ARPHRD_*` value.
    pub link_type: u16,
    pub xdp: XdpState,
}

impl Link {
    fn is_veth(&self) -> bool {
        self.kind == Some(InfoKind::Veth)
    }
}

/// Refuses an interface whose frames are not Ethernet: XDP sees a raw IP packet (or another
/// link header) at the start of the frame on tun, WireGuard, IPIP, SIT or GRE devices, and
/// would misparse it as an Ethernet header.
pub fn require_ethernet(iface: &IfaceName, ifindex: u32) -> Result<()> {
    let link = get_link(ifindex, None).with_context(|| format!("reading the link of {iface}"))?;
    ethernet_only(iface, link.link_type)
}

/// The decision of [`require_ethernet`], on the link type alone.
fn ethernet_only(iface: &IfaceName, link_type: u16) -> Result<()> {
    if link_type == libc::ARPHRD_ETHER {
        return Ok(());
    }
    let kernel_name = LinkLayerType::from(link_type).to_string();
    let what = match link_type {
        libc::ARPHRD_NONE => " (no link header: tun, WireGuard)",
        libc::ARPHRD_TUNNEL | libc::ARPHRD_TUNNEL6 => " (IP-in-IP tunnel)",
        libc::ARPHRD_SIT => " (IPv6-in-IPv4 tunnel)",
        // ARPHRD_IP6GRE (823), which libc lacks.
        libc::ARPHRD_IPGRE | 823 => " (GRE tunnel)",
        libc::ARPHRD_LOOPBACK => " (loopback)",
        _ => "",
    };
    bail!(
        "{iface} is not an Ethernet device: its link type is {kernel_name} ({link_type}){what}. \
         synguard's XDP program parses Ethernet frames only. Protect an Ethernet device that \
         carries the TCP unencapsulated: the physical NIC for untunnelled traffic, or for a \
         tunnel its decapsulated Ethernet device (a gretap, ip6gretap, vxlan or geneve device \
         in place of gre, ipip, sit or WireGuard)"
    );
}

/// RTM_GETLINK for `ifindex`, in our namespace or in the one with id `netnsid`.
pub fn get_link(ifindex: u32, netnsid: Option<i32>) -> Result<Link> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    if let Some(id) = netnsid {
        // IFLA_IF_NETNSID is IFLA_TARGET_NETNSID's first name.
        msg.attributes.push(LinkAttribute::IfNetnsId(id));
    }
    let reply = rtnl::request("RTM_GETLINK", RouteNetlinkMessage::GetLink(msg), false)?;
    match reply.into_iter().next() {
        Some(RouteNetlinkMessage::NewLink(m)) => Ok(parse_link(m)),
        other => bail!("RTM_GETLINK: unexpected reply {other:?}"),
    }
}

/// What one RTM_NEWLINK message (a reply or an event) says about its interface.
pub fn parse_link(m: LinkMessage) -> Link {
    let mut link = Link {
        ifindex: m.header.index,
        link_type: u16::from(m.header.link_layer_type),
        ..Link::default()
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Link(i) => link.link = Some(i),
            LinkAttribute::LinkNetNsId(i) => link.link_netnsid = Some(i),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k),
                    _ => None,
                })
            }
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(a) => link.xdp.attached = a,
                        LinkXdp::ProgId(id) => link.xdp.prog_id = id,
                        LinkXdp::DrvProgId(id) => link.xdp.drv_prog_id = id,
                        LinkXdp::SkbProgId(id) => link.xdp.skb_prog_id = id,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_vlan_over_the_interface_counts_as_behind_it() {
        let vlan = Link {
            kind: Some(InfoKind::Vlan),
            link: Some(7),
            ..Link::default()
        };
        assert!(is_vlan_over(&vlan, 7));
        assert!(!is_vlan_over(&vlan, 8));
        let macvlan = Link {
            kind: Some(InfoKind::MacVlan),
            ..vlan.clone()
        };
        assert!(!is_vlan_over(&macvlan, 7));
    }

    #[test]
    fn loopback_does_not_strip_vlan_tags() {
        assert!(!strips_vlan_tags(&"lo".parse().unwrap()).unwrap());
    }

    #[test]
    fn only_ethernet_devices_are_accepted() {
        let name: IfaceName = "sgt0".parse().unwrap();
        assert!(ethernet_only(&name, libc::ARPHRD_ETHER).is_ok());
        for (t, says) in [
            (libc::ARPHRD_NONE, "tun, WireGuard"),
            (libc::ARPHRD_TUNNEL, "IP-in-IP"),
            (libc::ARPHRD_SIT, "IPv6-in-IPv4"),
            (libc::ARPHRD_IPGRE, "GRE"),
            (libc::ARPHRD_LOOPBACK, "loopback"),
        ] {
            let e = ethernet_only(&name, t).unwrap_err().to_string();
            assert!(e.contains("sgt0 is not an Ethernet device"), "{e}");
            assert!(e.contains(says), "{t}: {e}");
            assert!(e.contains("decapsulated Ethernet device"), "{e}");
        }
    }

    #[test]
    fn loopback_is_refused_by_its_link_type() {
        // Every namespace has lo (ifindex 1), of type ARPHRD_LOOPBACK.
        let lo: IfaceName = "lo".parse().unwrap();
        let e = require_ethernet(&lo, 1).unwrap_err().to_string();
        assert!(e.contains("LOOPBACK"), "{e}");
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for ok in [
            "eth0",
            "lo",
            "veth-a.1",
            "x",
            "a23456789012345",
            "sg@p1",
            "br_0",
        ] {
            assert_eq!(ok.parse::<IfaceName>().unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "are not interface names"),
            ("..", "are not interface names"),
            ("a234567890123456", "at most 15"),
            ("eth0/..", "'/'"),
            ("../x", "'/'"),
            ("eth0:1", "':'"),
            ("eth 0", "' '"),
            ("eth\t0", "'\\t'"),
            ("eth\n", "'\\n'"),
            ("a\0b", "'\\0'"),
        ] {
            let e = bad.parse::<IfaceName>().unwrap_err();
            assert!(
                e.contains("invalid interface name") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn xdp_requests_parse() {
        assert_eq!("auto".parse(), Ok(XdpRequest::Auto));
        assert_eq!("DRV".parse(), Ok(XdpRequest::Exactly(XdpMode::Native)));
        assert_eq!("skb".parse(), Ok(XdpRequest::Exactly(XdpMode::Generic)));
        assert!(
            "fast"
                .parse::<XdpRequest>()
                .unwrap_err()
                .contains("auto, native, generic")
        );
        assert_eq!(XdpMode::Native.to_string(), "native");
        assert_eq!(XdpHook::Empty.to_string(), "not attached");
        assert_eq!(
            serde_json::to_string(&XdpMode::Generic).unwrap(),
            "\"generic\""
        );
    }

    #[test]
    fn loopback_is_visible_and_has_no_xdp() {
        // Every namespace has lo at ifindex 1.
        let lo = get_link(1, None).unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.xdp.native(), None);
        assert_eq!(lo.kind, None);
        assert_eq!(lo.mac, Some([0; 6]), "lo's IFLA_ADDRESS is six zero bytes");
        assert_eq!(ifindex(&"lo".parse().unwrap()).unwrap(), 1);
    }

    #[test]
    fn missing_interface_is_an_error() {
        let e = get_link(u32::MAX >> 1, None).unwrap_err().to_string();
        assert!(e.contains("RTM_GETLINK"), "{e}");
    }
}
