//! The TC ingress side: a cookie ACK that XDP validated (and left in `HANDOFF`) becomes a
//! request socket on the listener through the kfunc `bpf_sk_assign_tcp_reqsk` (Linux >= 6.9). The kernel's
//! cookie path then builds the full socket, and the listener's accept() returns it.
//!
//! Every path returns [`NEXT`]: synguard never makes the final TC decision, so the rest of
//! the ingress chain (TCX programs attached after it, legacy `tc ... ingress` filters)
//! still runs, also for an ACK it has just assigned to a request socket.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    helpers::bpf_skc_to_tcp_sock,
    programs::TcContext,
};
use synguard_common::{
    dissect::Segment,
    flags,
    flow::Flow,
    handoff::{CookieMeta, HandoffKey, TcpReqAttrs},
    maps::{Counter, port_bit},
    packet::RawPacket,
    wire::tcp::TcpHeader,
};

use crate::{
    maps::{CONFIG, HANDOFF, PORTS, count},
    sock::{SockRef, TCP_LISTEN},
};

// SAFETY: the declaration matches the definition in kfuncs.c (struct pointers as
// `c_void`, `struct bpf_tcp_req_attrs` as `TcpReqAttrs`, whose size both sides assert).
unsafe extern "C" {
    /// Defined in kfuncs.c and inlined by bpf-linker: calls bpf_sk_assign_tcp_reqsk with
    /// sizeof(struct bpf_tcp_req_attrs).
    fn synguard_sk_assign_tcp_reqsk(
        skb: *mut c_void,
        sk: *mut c_void,
        attrs: *mut TcpReqAttrs,
    ) -> i32;
}

/// `TC_ACT_UNSPEC`, which TCX calls `TCX_NEXT`: run the next program or filter in the chain,
/// and pass the packet on if there is none. `TC_ACT_OK` would end the chain here.
const NEXT: i32 = TC_ACT_UNSPEC;

/// Counts `TcAckNoHandoff`: a bare ACK to a protected port with no `HANDOFF` entry that
/// finds only a listener, the ACK a cookie hand-off is for. Established flows stop at the
/// socket lookup, other traffic at the header checks.
#[inline(always)]
fn count_ack_without_handoff(skb: *mut c_void, flow: &Flow, tcph: &TcpHeader) {
    if tcph.flags & (flags::ACK | flags::SYN | flags::RST | flags::FIN) != flags::ACK {
        return;
    }
    let (word, bit) = port_bit(tcph.dst_port);
    if !PORTS.get(word).is_some_and(|w| w & bit != 0) {
        return;
    }
    if SockRef::lookup(skb, flow).is_some_and(|sk| sk.state() == TCP_LISTEN) {
        count(Counter::TcAckNoHandoff);
    }
}

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let skb = ctx.as_ptr();
    // SAFETY: skb is the __sk_buff the kernel handed this program, valid to read for the
    // whole run.
    let (data, data_end) = unsafe {
        let s = &*(skb as *const __sk_buff);
        (s.data as usize, s.data_end as usize)
    };
    // SAFETY: data..data_end is the packet, readable for the whole run; nothing here
    // changes its layout. The metadata area in front of it is never read: whatever is
    // there was not necessarily written by synguard.
    let pkt = unsafe { RawPacket::new(data, data_end) };
    let Some(seg) = Segment::locate(&pkt) else {
        return NEXT;
    };
    let flow = seg.flow;
    let Some(tcph) = TcpHeader::parse(&pkt, seg.l4) else {
        return NEXT;
    };
    let key = HandoffKey::new(&flow, tcph.seq, tcph.ack);
    // SAFETY: a plain-data map value, copied out before anything can change it.
    let Some(meta) = (unsafe { HANDOFF.get(&key) }).copied() else {
        count_ack_without_handoff(skb, &flow, &tcph);
        return NEXT;
    };
    // Taken once: a retransmitted ACK is validated (and stored) by XDP again.
    let _ = HANDOFF.remove(&key);
    if !meta.describes(tcph.seq, tcph.ack, tcph.src_port, tcph.dst_port) {
        // Only XDP writes the map, under this very key: a torn entry, not another segment's.
        count(Counter::ReqskFailed);
        return NEXT;
    }
    let Some(sk) = SockRef::lookup(skb, &flow) else {
        // No listener (it went away since XDP looked): the kernel will reset the ACK.
        count(Counter::TcNoListener);
        return NEXT;
    };
    if sk.state() != TCP_LISTEN {
        // A full socket appeared meanwhile (a retransmitted ACK): let the kernel have it.
        count(Counter::TcSocketExists);
        return NEXT;
    }
    // The kfunc takes a full `struct sock`; this turns the lookup's sock_common into one.
    // SAFETY: a referenced socket from the lookup; the result borrows that reference.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk.as_ptr()) };
    if tp.is_null() {
        count(Counter::ReqskFailed);
        return NEXT;
    }
    let mut attrs = TcpReqAttrs::from(&meta);
    // SAFETY: skb and tp are what the kfunc's BTF signature asks for; attrs is a live
    // stack value of the size the wrapper passes.
    let ret = unsafe { synguard_sk_assign_tcp_reqsk(skb, tp as *mut c_void, &mut attrs) };
    if ret != 0 {
        count(Counter::ReqskFailed);
        return NEXT;
    }
    count(Counter::ReqskAssigned);
    // Netfilter never saw this flow's SYN: the mark lets a ruleset accept the ACK.
    if let Some(cfg) = CONFIG.get(0)
        && cfg.handoff_mark != 0
    {
        // SAFETY: `mark` is a writable __sk_buff field for TC programs.
        unsafe {
            let s = &mut *(skb as *mut __sk_buff);
            s.mark = (s.mark & !cfg.handoff_mask) | (cfg.handoff_mark & cfg.handoff_mask);
        }
    }
    NEXT
}
