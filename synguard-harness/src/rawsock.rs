//! A raw AF_PACKET socket: frames go out exactly as written and come back whole, with the
//! VLAN tag the kernel strips on receive put back in place (from PACKET_AUXDATA).

use std::{
    io::IoSliceMut,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    errno::Errno,
    net::if_::if_nametoindex,
    sys::{
        socket::{
            AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockProtocol,
            SockType, SockaddrLike, bind, recvmsg, sendto, setsockopt, socket, sockopt,
        },
        time::TimeVal,
    },
};

/// How long one `recvmsg` blocks, so [`RawSock::recv_matching`] can check its deadline.
const RECV_SLICE: Duration = Duration::from_millis(200);

/// An AF_PACKET socket bound to one interface of the namespace the calling thread is in.
#[derive(Debug)]
pub struct RawSock {
    fd: OwnedFd,
    ifindex: i32,
}

/// A `sockaddr_ll` for `ifindex` (and `dst` as the link-layer destination, for sending).
fn link_addr(ifindex: i32, dst: Option<[u8; 6]>) -> LinkAddr {
    let mut sll_addr = [0u8; 8];
    if let Some(d) = dst {
        sll_addr[..6].copy_from_slice(&d);
    }
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: if dst.is_some() { 6 } else { 0 },
        sll_addr,
    };
    // SAFETY: `sll` is a fully initialised sockaddr_ll with family AF_PACKET, and the length
    // passed is its exact size; from_raw only copies it.
    unsafe {
        LinkAddr::from_raw(
            (&raw const sll).cast::<libc::sockaddr>(),
            Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    }
    .expect("a sockaddr_ll of the right family and size")
}

impl RawSock {
    /// Opens a socket on `iface`, in the calling thread's network namespace (enter one with
    /// [`crate::netns::in_netns`] first).
    pub fn open(iface: &str) -> Result<RawSock> {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .context("socket(AF_PACKET)")?;
        let ifindex = if_nametoindex(iface).with_context(|| format!("no interface {iface}"))?;
        let ifindex = i32::try_from(ifindex).context("ifindex out of range")?;
        bind(fd.as_raw_fd(), &link_addr(ifindex, None))
            .with_context(|| format!("bind to {iface}"))?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on our own socket with a valid int and its exact size; nix has no
        // wrapper for PACKET_AUXDATA.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Errno::result(rc).context("setsockopt(PACKET_AUXDATA)")?;
        let slice = TimeVal::new(0, RECV_SLICE.as_micros() as libc::suseconds_t);
        setsockopt(&fd, sockopt::ReceiveTimeout, &slice).context("setsockopt(SO_RCVTIMEO)")?;
        Ok(RawSock { fd, ifindex })
    }

    /// Sends `frame` as it is; its first six bytes are the destination MAC.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let dst: [u8; 6] = frame
            .get(..6)
            .and_then(|d| d.try_into().ok())
            .context("frame shorter than an Ethernet header")?;
        let n = sendto(
            self.fd.as_fd().as_raw_fd(),
            frame,
            &link_addr(self.ifindex, Some(dst)),
            MsgFlags::empty(),
        )
        .context("sendto")?;
        if n != frame.len() {
            bail!("sendto sent {n} of {} bytes", frame.len());
        }
        Ok(())
    }

    /// The next incoming frame (with its VLAN tag put back in place, if it had one) that
    /// `keep` accepts, within `timeout`. Frames this host sent are skipped.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        let mut cmsg = nix::cmsg_space!(libc::tpacket_auxdata);
        while Instant::now() < deadline {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<LinkAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(m) => m,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e).context("recvmsg"),
            };
            if msg
                .address
                .is_some_and(|a| a.pkttype() == libc::PACKET_OUTGOING)
            {
                continue;
            }
            let tag = msg
                .cmsgs()
                .context("control messages")?
                .find_map(|c| match c {
                    ControlMessageOwned::Unknown(u)
                        if u.cmsg_header.cmsg_level == libc::SOL_PACKET
                            && u.cmsg_header.cmsg_type == libc::PACKET_AUXDATA =>
                    {
                        vlan_tag(&u.data_bytes)
                    }
                    _ => None,
                });
            let n = msg.bytes;
            let mut frame = buf[..n].to_vec();
            if let Some(tag) = tag {
                frame.splice(12..12, tag);
            }
            if keep(&frame) {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }
}

/// The 802.1Q tag (TPID, TCI) a `tpacket_auxdata` reports, if the frame carried one.
fn vlan_tag(aux: &[u8]) -> Option<[u8; 4]> {
    // struct tpacket_auxdata { u32 tp_status, tp_len, tp_snaplen; u16 tp_mac, tp_net,
    // tp_vlan_tci, tp_vlan_tpid; }, in host byte order.
    let u32_at = |o: usize| {
        aux.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u16_at = |o: usize| aux.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let status = u32_at(0)?;
    if status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tci = u16_at(16)?;
    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        u16_at(18)?
    } else {
        0x8100
    };
    let [p0, p1] = tpid.to_be_bytes();
    let [t0, t1] = tci.to_be_bytes();
    Some([p0, p1, t0, t1])
}
