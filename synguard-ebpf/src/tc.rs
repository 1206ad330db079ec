//! The TC ingress side: a cookie ACK that XDP validated becomes a request socket on the
//! listener through the kfunc `bpf_sk_assign_tcp_reqsk` (Linux >= 6.9). The kernel's
//! cookie path then builds the full socket, and the listener's accept() returns it.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_OK},
    helpers::bpf_skc_to_tcp_sock,
    programs::TcContext,
};
use synguard_common::{
    maps::{CookieMeta, Counter},
    packet::{Packet, RawPacket},
    synproxy::tc_flow,
};

use crate::{
    maps::count,
    sock::{SockRef, TCP_LISTEN},
};

/// `struct bpf_tcp_req_attrs` (include/net/tcp.h); kfuncs.c declares the same layout.
#[repr(C)]
struct TcpReqAttrs {
    rcv_tsval: u32,
    rcv_tsecr: u32,
    mss: u16,
    rcv_wscale: u8,
    snd_wscale: u8,
    ecn_ok: u8,
    wscale_ok: u8,
    sack_ok: u8,
    tstamp_ok: u8,
    usec_ts_ok: u8,
    reserved: [u8; 3],
}

unsafe extern "C" {
    /// Defined in kfuncs.c and inlined by bpf-linker: calls bpf_sk_assign_tcp_reqsk with
    /// sizeof(struct bpf_tcp_req_attrs).
    fn synguard_sk_assign_tcp_reqsk(
        skb: *mut c_void,
        sk: *mut c_void,
        attrs: *mut TcpReqAttrs,
    ) -> i32;
}

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let skb = ctx.as_ptr();
    // SAFETY: skb is the __sk_buff the kernel handed this program.
    let (meta_start, data, data_end) = unsafe {
        let s = &*(skb as *const __sk_buff);
        (s.data_meta as usize, s.data as usize, s.data_end as usize)
    };
    // Only XDP can write the metadata area, so its magic cannot come from the wire.
    // SAFETY: data_meta..data is the metadata window.
    let area = unsafe { RawPacket::new(meta_start, data) };
    let Some(bytes) = area.load::<{ size_of::<CookieMeta>() }>(0) else {
        return TC_ACT_OK;
    };
    // SAFETY: CookieMeta is repr(C) plain data of exactly this size.
    let meta: CookieMeta = unsafe { core::mem::transmute(bytes) };
    if meta.magic != CookieMeta::MAGIC {
        return TC_ACT_OK;
    }
    // SAFETY: data..data_end is the packet.
    let pkt = unsafe { RawPacket::new(data, data_end) };
    let Some(flow) = tc_flow(&pkt) else {
        count(Counter::ReqskFailed);
        return TC_ACT_OK;
    };
    let Some(sk) = SockRef::lookup(skb, &flow) else {
        // No listener (it went away since XDP looked): the kernel will reset the ACK.
        count(Counter::ReqskFailed);
        return TC_ACT_OK;
    };
    if sk.state() != TCP_LISTEN {
        // A full socket appeared meanwhile (a retransmitted ACK): let the kernel have it.
        return TC_ACT_OK;
    }
    // The kfunc takes a full `struct sock`; this turns the lookup's sock_common into one.
    // SAFETY: a referenced socket from the lookup; the result borrows that reference.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk.as_ptr()) };
    if tp.is_null() {
        count(Counter::ReqskFailed);
        return TC_ACT_OK;
    }
    let mut attrs = TcpReqAttrs {
        rcv_tsval: meta.rcv_tsval,
        rcv_tsecr: meta.rcv_tsecr,
        mss: meta.mss,
        rcv_wscale: meta.rcv_wscale,
        snd_wscale: meta.snd_wscale,
        ecn_ok: meta.ecn_ok,
        wscale_ok: meta.wscale_ok,
        sack_ok: meta.sack_ok,
        tstamp_ok: meta.tstamp_ok,
        usec_ts_ok: 0,
        reserved: [0; 3],
    };
    // SAFETY: skb and tp are what the kfunc's BTF signature asks for; attrs is a live
    // stack value of the size the wrapper passes.
    let ret = unsafe { synguard_sk_assign_tcp_reqsk(skb, tp as *mut c_void, &mut attrs) };
    count(if ret == 0 {
        Counter::ReqskAssigned
    } else {
        Counter::ReqskFailed
    });
    TC_ACT_OK
}
