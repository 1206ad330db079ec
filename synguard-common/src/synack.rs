//! Building our SYN+ACK in place of the SYN that asked for it: MACs swapped (VLAN tags
//! kept), a fresh IP header without IPv4 options or IPv6 extension headers, our TCP header
//! and options right after it, checksums from scratch. The frame only ever shrinks, so
//! the glue trims it and transmits it back out.

use crate::checksum;
use crate::cookie::Minted;
use crate::dissect::Segment;
use crate::flags;
use crate::maps::{Config, IfaceFacts, KeySlot};
use crate::packet::Packet;
use crate::wire::IPPROTO_TCP;
use crate::wire::ethernet;
use crate::wire::ipv4::{self, Ipv4Header};
use crate::wire::ipv6::Ipv6Header;
use crate::wire::tcp::{self, TcpHeader};
use crate::wire::tcp_options::{self, TcpOptions};

/// What the SYN+ACK answers with besides the client's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Our initial sequence number: the cookie.
    pub isn: u32,
    /// Our window scale (used only if the client offered window scaling).
    pub wscale: u8,
    /// Our timestamp (used only if the client offered timestamps).
    pub tsval: u32,
}

impl Reply {
    /// synguard's own cookie `minted` under `key`.
    #[inline(always)]
    pub fn minted(key: &KeySlot, minted: &Minted) -> Reply {
        Reply {
            isn: minted.isn,
            wscale: key.wscale,
            tsval: minted.tsval,
        }
    }
}

/// Rewrites the SYN at hand into our SYN+ACK and returns the new frame length.
///
/// `seg` is the SYN's segment and `client_seq` its sequence number; `opts` are the
/// client's options as far as the cookie carries them; `reply` is the cookie (our ISN), and
/// the window scale and timestamp we answer with; `iface` the ingress interface, whose MTU
/// sets the MSS we advertise (clamped by the configured one). `None` only if the frame is shorter
/// than the checks before promised, in which case it may be half rewritten.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn build<P: Packet + ?Sized>(
    p: &mut P,
    seg: &Segment,
    client_seq: u32,
    opts: &TcpOptions,
    cfg: &Config,
    iface: &IfaceFacts,
    reply: Reply,
    ecn: bool,
) -> Option<usize> {
    let flow = &seg.flow;
    let v6 = flow.is_v6();
    let adv_mss = iface.adv_mss(v6, if v6 { cfg.adv_mss6 } else { cfg.adv_mss4 });
    let mut o = tcp_options::synack_options(opts, adv_mss, reply.wscale, reply.tsval);
    // Our options fit in the client's whenever it sent an MSS option. A client that sent
    // none (a bare 54-byte SYN from a flood tool, typically) may leave no room for ours;
    // it then gets no MSS option and assumes the protocol default, which is safe.
    // IPv4 options and IPv6 extension headers are not echoed: our TCP header follows the
    // fixed IP header, at or before the SYN's, over bytes already parsed.
    let l4 = seg.reply_l4();
    if p.load::<1>(l4 + tcp::HEADER_LEN + o.len - 1).is_none() {
        o = tcp_options::synack_options(opts, 0, reply.wscale, reply.tsval);
    }
    let olen = o.len;
    let tcp_len = tcp::HEADER_LEN + olen;
    let new_len = l4 + tcp_len;
    // Everything below writes inside [0, new_len): make sure it is all there first.
    p.load::<1>(new_len - 1)?;

    ethernet::swap_macs(p)?;
    let pseudo = if v6 {
        Ipv6Header {
            version: 6,
            traffic_class: 0,
            flow_label: 0,
            payload_len: tcp_len as u16,
            next_header: IPPROTO_TCP,
            hop_limit: cfg.ttl,
            src: flow.dst,
            dst: flow.src,
        }
        .write(p, seg.l3)?;
        checksum::pseudo_v6(&flow.dst, &flow.src, IPPROTO_TCP, tcp_len as u32)
    } else {
        Ipv4Header {
            version: 4,
            ihl: 5,
            tos: 0,
            tot_len: (ipv4::HEADER_LEN + tcp_len) as u16,
            id: 0,
            df: true,
            mf: false,
            frag_off: 0,
            ttl: cfg.ttl,
            proto: IPPROTO_TCP,
            checksum: 0,
            src: flow.dst.v4_octets(),
            dst: flow.src.v4_octets(),
        }
        .write(p, seg.l3)?;
        checksum::pseudo_v4(
            flow.dst.v4_octets(),
            flow.src.v4_octets(),
            IPPROTO_TCP,
            tcp_len as u16,
        )
    };
    let mut th = TcpHeader {
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        seq: reply.isn,
        ack: client_seq.wrapping_add(1),
        doff: (tcp_len / 4) as u8,
        reserved: 0,
        flags: flags::SYN | flags::ACK | (u8::from(ecn) << 6),
        // A zero window would stall the handshake; the controller should never set it.
        window: if cfg.synack_window == 0 {
            Config::DEFAULT.synack_window
        } else {
            cfg.synack_window
        },
        checksum: 0,
        urgent: 0,
    };
    let [w0, w1, w2, w3, w4] = o.words;
    // Unused option words are zero, so all five can be summed.
    let opt_sum = checksum::add(
        checksum::add(checksum::add(w0, w1), checksum::add(w2, w3)),
        w4,
    );
    let sum = checksum::add(pseudo, checksum::sum_bytes(&th.emit()));
    th.checksum = checksum::finish(checksum::add(sum, opt_sum));
    th.write(p, l4)?;
    let at = l4 + tcp::HEADER_LEN;
    // Only the words we use: the frame may end right after the last one.
    store_word(p, at, w0, 0, olen)?;
    store_word(p, at, w1, 1, olen)?;
    store_word(p, at, w2, 2, olen)?;
    store_word(p, at, w3, 3, olen)?;
    store_word(p, at, w4, 4, olen)?;
    Some(new_len)
}

#[inline(always)]
fn store_word<P: Packet + ?Sized>(
    p: &mut P,
    at: usize,
    w: u32,
    i: usize,
    olen: usize,
) -> Option<()> {
    if i * 4 >= olen {
        return Some(());
    }
    p.store_be32(at + i * 4, w)
}
