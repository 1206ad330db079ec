//! synguard's kernel side: thin glue between the XDP/TC hooks and the pure logic in
//! `synguard-common`. All decisions live there; this file owns maps, helpers and `unsafe`.
#![no_std]
#![no_main]

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_CURRENT_NETNS, TC_ACT_OK, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, xdp_action,
    },
    helpers::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_skc_to_tcp_sock},
    macros::{classifier, map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use synguard_common::{
    maps::{
        COUNTER_COUNT, Config, CookieMeta, Counter, KeySlot, LIST_ENTRIES, PORT_WORDS,
        SRC_RATE_ENTRIES, SrcKey, State, TokenBucket,
    },
    packet::{Packet, RawPacket},
};

// Every map is pinned by name under /sys/fs/bpf/synguard/<iface>/ by the controller, which
// also reuses them on restart. Names come from synguard_common::maps::names.
#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map(name = "KEYS")]
static KEYS: Array<KeySlot> = Array::pinned(2, 0);
#[map(name = "STATE")]
static STATE: Array<State> = Array::pinned(1, 0);
#[map(name = "PORTS")]
static PORTS: Array<u64> = Array::pinned(PORT_WORDS, 0);
#[map(name = "ALLOW4")]
static ALLOW4: LpmTrie<[u8; 4], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "ALLOW6")]
static ALLOW6: LpmTrie<[u8; 16], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "DENY4")]
static DENY4: LpmTrie<[u8; 4], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "DENY6")]
static DENY6: LpmTrie<[u8; 16], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "SRC_RATE")]
static SRC_RATE: LruHashMap<SrcKey, TokenBucket> = LruHashMap::pinned(SRC_RATE_ENTRIES, 0);
#[map(name = "SYNACK_BUCKET")]
static SYNACK_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::pinned(1, 0);
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

#[inline(always)]
fn count(c: Counter) {
    if let Some(v) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, and XDP/TC programs are not preempted on their CPU.
        unsafe { *v += 1 };
    }
}

#[xdp]
pub fn synguard_xdp(_ctx: XdpContext) -> u32 {
    count(Counter::PacketsSeen);
    xdp_action::XDP_PASS
}

/// `struct bpf_tcp_req_attrs` (include/net/tcp.h); mirrored in kfuncs.c.
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
    /// Defined in kfuncs.c, inlined by bpf-linker: calls the kfunc bpf_sk_assign_tcp_reqsk.
    fn synguard_sk_assign_tcp_reqsk(
        skb: *mut c_void,
        sk: *mut c_void,
        attrs: *mut TcpReqAttrs,
    ) -> i32;
}

#[classifier]
pub fn synguard_tc(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr();
    // SAFETY: ctx is the __sk_buff the kernel handed us.
    let (meta, data, data_end) = unsafe {
        let s = &*(skb as *const __sk_buff);
        (s.data_meta as usize, s.data as usize, s.data_end as usize)
    };
    // SAFETY: the metadata area is meta..data, guaranteed readable by the verifier's checks.
    let meta_pkt = unsafe { RawPacket::new(meta, data) };
    let Some(m) = meta_pkt.load::<{ size_of::<CookieMeta>() }>(0) else {
        return TC_ACT_OK;
    };
    let m: CookieMeta = unsafe { core::mem::transmute(m) };
    if m.magic != CookieMeta::MAGIC {
        return TC_ACT_OK;
    }
    let pkt = unsafe { RawPacket::new(data, data_end) };
    // Each load returns early on its own: combining them in one pattern lets LLVM speculate
    // stores of registers that were never loaded, which the verifier rejects.
    let Some(saddr) = pkt.load::<4>(26) else {
        return TC_ACT_OK;
    };
    let Some(daddr) = pkt.load::<4>(30) else {
        return TC_ACT_OK;
    };
    let Some(ports) = pkt.load::<4>(34) else {
        return TC_ACT_OK;
    };
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: u32::from_ne_bytes(saddr),
                daddr: u32::from_ne_bytes(daddr),
                sport: u16::from_ne_bytes([ports[0], ports[1]]),
                dport: u16::from_ne_bytes([ports[2], ports[3]]),
            },
        },
    };
    let skc = unsafe { bpf_skc_lookup_tcp(skb, &mut tuple, 12, BPF_F_CURRENT_NETNS as u64, 0) };
    if skc.is_null() {
        count(Counter::ReqskFailed);
        return TC_ACT_OK;
    }
    let mut attrs = TcpReqAttrs {
        rcv_tsval: m.rcv_tsval,
        rcv_tsecr: m.rcv_tsecr,
        mss: m.mss,
        rcv_wscale: m.rcv_wscale,
        snd_wscale: m.snd_wscale,
        ecn_ok: m.ecn_ok,
        wscale_ok: m.wscale_ok,
        sack_ok: m.sack_ok,
        tstamp_ok: m.tstamp_ok,
        usec_ts_ok: 0,
        reserved: [0; 3],
    };
    let tp = unsafe { bpf_skc_to_tcp_sock(skc as *mut c_void) };
    let ret = if tp.is_null() {
        -1
    } else {
        unsafe { synguard_sk_assign_tcp_reqsk(skb, tp as *mut c_void, &mut attrs) }
    };
    unsafe { bpf_sk_release(skc as *mut c_void) };
    count(if ret == 0 {
        Counter::ReqskAssigned
    } else {
        Counter::ReqskFailed
    });
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
// The kernel only lets GPL-compatible programs call kfuncs; "Dual MIT/GPL" is one.
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
