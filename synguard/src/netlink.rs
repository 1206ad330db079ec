//! A minimal rtnetlink RTM_GETLINK client: enough to learn an interface's kind (veth?), its
//! veth peer (IFLA_LINK, IFLA_LINK_NETNSID) and which XDP programs are attached to it
//! (IFLA_XDP), in this network namespace or, by netns id, in the peer's.
//!
//! netlink answers for the caller's network namespace, unlike /sys/class/net, which shows
//! the namespace sysfs was mounted in (the host's, under `nsenter --net`).

use std::{io, mem::size_of};

use anyhow::{Context, Result, bail};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;
const IFLA_TARGET_NETNSID: u16 = 46;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `IFLA_XDP_ATTACHED` values.
pub const XDP_ATTACHED_NONE: u8 = 0;
pub const XDP_ATTACHED_DRV: u8 = 1;
pub const XDP_ATTACHED_SKB: u8 = 2;
pub const XDP_ATTACHED_MULTI: u8 = 4;

/// XDP programs on an interface, by attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpState {
    pub attached: u8,
    /// Set when exactly one mode is attached (`attached` is DRV, SKB or HW).
    pub prog_id: u32,
    pub drv_prog_id: u32,
    pub skb_prog_id: u32,
}

impl XdpState {
    /// Id of the native (driver) program, if one is attached.
    pub fn native(&self) -> Option<u32> {
        match self.attached {
            XDP_ATTACHED_DRV => Some(self.prog_id),
            XDP_ATTACHED_MULTI if self.drv_prog_id != 0 => Some(self.drv_prog_id),
            _ => None,
        }
    }

    /// Id of the generic (skb) program, if one is attached.
    pub fn generic(&self) -> Option<u32> {
        match self.attached {
            XDP_ATTACHED_SKB => Some(self.prog_id),
            XDP_ATTACHED_MULTI if self.skb_prog_id != 0 => Some(self.skb_prog_id),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "veth", "bridge", ...; `None` for physical devices.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace id, when it is not ours.
    pub link_netnsid: Option<i32>,
    pub xdp: XdpState,
}

/// RTM_GETLINK for `ifindex`, in our namespace or in the one with id `netnsid`.
pub fn get_link(ifindex: u32, netnsid: Option<i32>) -> Result<Link> {
    let mut req = Vec::with_capacity(64);
    // nlmsghdr: len, type, flags, seq, pid (len patched below).
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family, pad, type, index, flags, change.
    req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(
        &mut req,
        IFLA_EXT_MASK,
        &RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
    );
    if let Some(id) = netnsid {
        push_attr(&mut req, IFLA_TARGET_NETNSID, &id.to_ne_bytes());
    }
    let len = req.len() as u32;
    req[..4].copy_from_slice(&len.to_ne_bytes());

    let reply = roundtrip(&req)?;
    parse_reply(&reply)
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn roundtrip(req: &[u8]) -> Result<Vec<u8>> {
    // SAFETY: plain socket calls with valid buffers; the fd is closed by OwnedFd.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            bail!("netlink socket: {}", io::Error::last_os_error());
        }
        let fd = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        use std::os::fd::AsRawFd;
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        let rc = libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        );
        if rc < 0 {
            bail!("netlink send: {}", io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 65536];
        let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            bail!("netlink recv: {}", io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Walks netlink attributes: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        let adv = (len + 3) & !3;
        b = b.get(adv..).unwrap_or(&[]);
        Some((ty, payload))
    })
}

fn parse_reply(b: &[u8]) -> Result<Link> {
    let len = u32_at(b, 0).context("short netlink reply")? as usize;
    let ty = u16_at(b, 4).context("short netlink reply")?;
    let msg = b.get(..len).context("truncated netlink reply")?;
    if ty == NLMSG_ERROR {
        let errno = u32_at(msg, 16).context("short netlink error")? as i32;
        let e = io::Error::from_raw_os_error(-errno);
        bail!("RTM_GETLINK: {e}");
    }
    if ty != RTM_NEWLINK {
        bail!("unexpected netlink message type {ty}");
    }
    // nlmsghdr (16) + ifinfomsg (16).
    let ifindex = u32_at(msg, 20).context("short ifinfomsg")?;
    let mut link = Link {
        ifindex,
        ..Link::default()
    };
    for (ty, p) in attrs(msg.get(32..).unwrap_or(&[])) {
        match ty {
            IFLA_IFNAME => {
                let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                link.name = String::from_utf8_lossy(&p[..end]).into_owned();
            }
            IFLA_LINK => link.link = u32_at(p, 0),
            IFLA_LINK_NETNSID => link.link_netnsid = u32_at(p, 0).map(|v| v as i32),
            IFLA_LINKINFO => {
                for (t, q) in attrs(p) {
                    if t == IFLA_INFO_KIND {
                        let end = q.iter().position(|&c| c == 0).unwrap_or(q.len());
                        link.kind = Some(String::from_utf8_lossy(&q[..end]).into_owned());
                    }
                }
            }
            IFLA_XDP => {
                for (t, q) in attrs(p) {
                    match t {
                        IFLA_XDP_ATTACHED => link.xdp.attached = q.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => link.xdp.prog_id = u32_at(q, 0).unwrap_or(0),
                        IFLA_XDP_DRV_PROG_ID => link.xdp.drv_prog_id = u32_at(q, 0).unwrap_or(0),
                        IFLA_XDP_SKB_PROG_ID => link.xdp.skb_prog_id = u32_at(q, 0).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_visible_and_has_no_xdp() {
        // Every namespace has lo at ifindex 1.
        let lo = get_link(1, None).unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.xdp.native(), None);
        assert_eq!(lo.kind, None);
    }

    #[test]
    fn missing_interface_is_an_error() {
        let e = get_link(u32::MAX >> 1, None).unwrap_err().to_string();
        assert!(e.contains("RTM_GETLINK"), "{e}");
    }

    #[test]
    fn attribute_walk_handles_padding() {
        let mut b = Vec::new();
        push_attr(&mut b, 3, b"ab\0");
        push_attr(&mut b, 5, &7u32.to_ne_bytes());
        let v: Vec<_> = attrs(&b).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], (3, &b"ab\0"[..]));
        assert_eq!(u32_at(v[1].1, 0), Some(7));
    }
}
