//! Locating the TCP segment in a frame: Ethernet with up to two VLAN tags (802.1Q and
//! 802.1ad, any order), IPv4 (options included) or IPv6 (behind a bounded chain of
//! extension headers, see [`ipv6::walk_extensions`]), and the ports. The first step of the
//! pipeline, and all the TC program needs.
//!
//! Only locating happens here; judging lengths, flags and options is
//! [`crate::pipeline`]'s.

use crate::flow::{Family, Flow};
use crate::packet::Packet;
use crate::verifier::widen;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame};
use crate::wire::ipv4::Ipv4Header;
use crate::wire::ipv6::{self, Chain, Ipv6Header};
use crate::wire::{Addr, IPPROTO_TCP};

/// The furthest the IP header starts: after two VLAN tags.
const MAX_L3: usize = ethernet::HEADER_LEN + ethernet::MAX_TAGS * ethernet::TAG_LEN;

/// The largest IP total length a header can claim: IPv6's fixed header plus a 16-bit
/// payload length (IPv4's 16-bit total length is below it).
pub const MAX_IP_LEN: usize = ipv6::HEADER_LEN + u16::MAX as usize;

/// What the IP layer says about a TCP segment to, possibly, one of our ports.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub flow: Flow,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Bytes from the IP header to the TCP header: IPv4 options or IPv6 extension headers
    /// included.
    pub ip_hdr_len: usize,
    /// IP total length, header included, as the IP header claims; at most [`MAX_IP_LEN`].
    pub ip_len: usize,
    /// IPv4 options or IPv6 extension headers sit before the TCP header. Our reply never
    /// carries them: it has the fixed IP header only ([`Segment::reply_l4`]).
    pub ip_options: bool,
    /// The first fragment of a fragmented datagram (IPv4 MF, or an IPv6 Fragment header
    /// with offset 0 and M=1).
    pub first_fragment: bool,
    /// IPv6 Routing header with segments left: for a later hop, not yet for us.
    pub routing_pending: bool,
}

impl Segment {
    /// Where the TCP header of our reply goes: right after the fixed IP header.
    #[inline(always)]
    pub fn reply_l4(&self) -> usize {
        self.l3
            + if self.flow.is_v6() {
                ipv6::HEADER_LEN
            } else {
                crate::wire::ipv4::HEADER_LEN
            }
    }
}

/// What [`dissect`] found in a frame.
#[derive(Clone, Copy, Debug)]
pub enum Located {
    /// A TCP segment whose ports are in the packet.
    Tcp(Segment),
    /// Not TCP over IP, a non-first fragment, or too short to show the ports; none of
    /// which we can or need to judge.
    NotTcp,
    /// A frame that may hold TCP to a protected port, which we do not look into: more
    /// than two VLAN tags, an IPv6 extension-header chain beyond the walk's bound, or an
    /// extension header running past the packet. The pipeline decides by mode alone.
    Uninspectable,
}

/// Dissects an Ethernet frame down to the TCP ports.
#[inline(always)]
pub fn dissect<P: Packet + ?Sized>(p: &P) -> Located {
    let Some(eth) = Frame::parse(p) else {
        return Located::NotTcp;
    };
    if ethernet::is_tag(eth.ethertype) {
        return Located::Uninspectable;
    }
    let l3 = eth.l3_off;
    let (family, src, dst, l4, ip_len, ip_options, first_fragment, routing_pending);
    if eth.ethertype == ETHERTYPE_IPV4 {
        let Some(ip) = Ipv4Header::parse(p, l3) else {
            return Located::NotTcp;
        };
        if ip.version != 4 || ip.ihl < 5 || ip.proto != IPPROTO_TCP || ip.frag_off != 0 {
            return Located::NotTcp;
        }
        family = Family::V4;
        src = Addr::from_v4(ip.src);
        dst = Addr::from_v4(ip.dst);
        l4 = l3 + ip.header_len();
        ip_len = usize::from(ip.tot_len);
        ip_options = ip.ihl > 5;
        first_fragment = ip.mf;
        routing_pending = false;
    } else if eth.ethertype == ETHERTYPE_IPV6 {
        let Some(ip) = Ipv6Header::parse(p, l3) else {
            return Located::NotTcp;
        };
        if ip.version != 6 {
            return Located::NotTcp;
        }
        match ipv6::walk_extensions(p, l3, ip.next_header) {
            Chain::Upper {
                proto,
                off,
                first_fragment: ff,
                routing_pending: rp,
            } => {
                if proto != IPPROTO_TCP {
                    return Located::NotTcp;
                }
                l4 = off;
                first_fragment = ff;
                routing_pending = rp;
            }
            Chain::LaterFragment => return Located::NotTcp,
            Chain::Uninspectable => return Located::Uninspectable,
        }
        family = Family::V6;
        src = ip.src;
        dst = ip.dst;
        ip_len = ipv6::HEADER_LEN + usize::from(ip.payload_len);
        ip_options = l4 != l3 + ipv6::HEADER_LEN;
    } else {
        return Located::NotTcp;
    }
    // One bounded unknown each instead of a constant per header layout: see `widen`.
    let (Some(l3), Some(l4)) = (
        widen(l3, MAX_L3),
        widen(l4, MAX_L3 + ipv6::HEADER_LEN + ipv6::MAX_EXT_LEN),
    ) else {
        return Located::NotTcp;
    };
    if l4 < l3 + crate::wire::ipv4::HEADER_LEN {
        return Located::NotTcp;
    }
    let Some(ports) = p.load::<4>(l4) else {
        return Located::NotTcp;
    };
    Located::Tcp(Segment {
        flow: Flow {
            family,
            src,
            dst,
            src_port: u16::from_be_bytes([ports[0], ports[1]]),
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        },
        l3,
        l4,
        ip_hdr_len: l4 - l3,
        ip_len,
        ip_options,
        first_fragment,
        routing_pending,
    })
}

impl Segment {
    /// The TCP segment of an Ethernet frame, if [`dissect`] finds one.
    #[inline(always)]
    pub fn locate<P: Packet + ?Sized>(p: &P) -> Option<Segment> {
        match dissect(p) {
            Located::Tcp(s) => Some(s),
            Located::NotTcp | Located::Uninspectable => None,
        }
    }
}

/// For the TC program: the flow (client as source) of a TCP segment, for the listener
/// lookup. TC sees the same Ethernet frame, usually with the VLAN tags already taken off
/// into the skb; both forms parse.
#[inline(always)]
pub fn tc_flow<P: Packet + ?Sized>(p: &P) -> Option<Flow> {
    Some(Segment::locate(p)?.flow)
}
