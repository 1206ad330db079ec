//! The XDP side: map and helper access for `synguard_common::pipeline::process`, and
//! turning its verdict into an XDP action. The one place a frame's reason is counted.

use aya_ebpf::{
    EbpfContext,
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action},
    helpers::{
        bpf_ktime_get_ns, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_xdp_adjust_meta, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
    },
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use synguard_common::{
    flow::Flow,
    handoff::CookieMeta,
    maps::{
        Config, Counter, Handoff, IfaceFacts, KeySlot, LOCAL_ADDR_BROADCAST, LOCAL_ADDR_LOCAL,
        ListSlot, State, TokenBucket, port_bit,
    },
    packet::{Packet, RawPacket},
    pipeline::{Decision, Env, ListVerdict, SockState, Verdict, process},
    verifier::opaque,
    wire::{ipv4, ipv6, tcp},
};

use crate::{
    maps::{
        ALLOW4, ALLOW6, CONFIG, DENY4, DENY6, IFACES, KEYS, LIST_FLAGS, LOCAL_ADDRS, MINTED, PORTS,
        SRC_RATE, STATE, SYNACK_BUCKET, count,
    },
    sock::{SockRef, TCP_LISTEN},
};

struct XdpEnv<'a> {
    ctx: &'a XdpContext,
    config: Config,
}

impl Env for XdpEnv<'_> {
    #[inline(always)]
    fn config(&self) -> Config {
        self.config
    }

    #[inline(always)]
    fn state(&self) -> State {
        STATE.get(0).copied().unwrap_or_default()
    }

    #[inline(always)]
    fn key(&self, slot: u32) -> Option<KeySlot> {
        KEYS.get(slot).copied()
    }

    #[inline(always)]
    fn minted(&self, slot: u32) -> u64 {
        MINTED.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn set_minted(&mut self, slot: u32, mark: u64) {
        if let Some(v) = MINTED.get_ptr_mut(slot) {
            // SAFETY: a live map value. CPUs minting with the same key store the same
            // value, so racing writers cannot leave a wrong one.
            unsafe { *v = mark };
        }
    }

    #[inline(always)]
    fn count(&mut self, c: Counter) {
        count(c)
    }

    #[inline(always)]
    fn port_protected(&self, port: u16) -> bool {
        let (word, bit) = port_bit(port);
        PORTS.get(word).is_some_and(|w| w & bit != 0)
    }

    #[inline(always)]
    fn list_verdict(&self, flow: &Flow) -> ListVerdict {
        // An LPM lookup is a helper call even on an empty trie; LIST_FLAGS says which
        // tries may hold entries.
        let may_hold = |s: ListSlot| LIST_FLAGS.get(s as u32).is_some_and(|f| *f != 0);
        // The allow list wins: it is the operator's explicit exception.
        let (allowed, denied) = if flow.is_v6() {
            let k = Key::new(128, flow.src.octets());
            (
                may_hold(ListSlot::Allow6) && ALLOW6.get(&k).is_some(),
                may_hold(ListSlot::Deny6) && DENY6.get(&k).is_some(),
            )
        } else {
            let k = Key::new(32, flow.src.v4_octets());
            (
                may_hold(ListSlot::Allow4) && ALLOW4.get(&k).is_some(),
                may_hold(ListSlot::Deny4) && DENY4.get(&k).is_some(),
            )
        };
        if allowed {
            ListVerdict::Allow
        } else if denied {
            ListVerdict::Deny
        } else {
            ListVerdict::None
        }
    }

    #[inline(always)]
    fn src_syn_allowed(&mut self, flow: &Flow, now_ns: u64) -> bool {
        let (rate, burst) = (self.config.src_syn_rate, self.config.src_syn_burst);
        if rate == 0 {
            return true;
        }
        let key = flow.src_key(self.config.src_prefix6);
        if let Some(b) = SRC_RATE.get_ptr_mut(&key) {
            // SAFETY: a live map value; concurrent updates from other CPUs can only make
            // the limit slightly loose, never unsafe.
            return unsafe { (*b).take(now_ns, rate, burst) };
        }
        let mut b = TokenBucket::default();
        let ok = b.take(now_ns, rate, burst);
        let _ = SRC_RATE.insert(&key, &b, 0);
        ok
    }

    #[inline(always)]
    fn synack_budget(&mut self, now_ns: u64) -> bool {
        let rate = self.config.synack_rate_per_cpu;
        if rate == 0 {
            return true;
        }
        match SYNACK_BUCKET.get_ptr_mut(0) {
            // SAFETY: a live map value, and this CPU's own slot: XDP is not preempted on
            // its CPU, so nothing else touches it meanwhile.
            Some(b) => unsafe { (*b).take(now_ns, rate, 0) },
            None => true,
        }
    }

    #[inline(always)]
    fn socket_state(&mut self, flow: &Flow) -> SockState {
        if self.config.test_flags & Config::TEST_BENCH_NO_SOCKET != 0 {
            return SockState::Listener;
        }
        match SockRef::lookup(self.ctx.as_ptr(), flow) {
            None => SockState::None,
            Some(sk) if sk.state() == TCP_LISTEN => {
                if sk.is_mptcp() {
                    SockState::MptcpListener
                } else {
                    SockState::Listener
                }
            }
            Some(_) => SockState::Other,
        }
    }

    #[inline(always)]
    fn kernel_cookie_valid(&mut self, v6: bool, l3: usize, l4: usize) -> bool {
        // Explicit bounds on the offsets first: the verifier adds only a bounded scalar
        // to a packet pointer. Both are far below these in any frame we parse.
        let (l3, l4) = (opaque(l3), opaque(l4));
        if l3 > 256 || l4 > 512 {
            return false;
        }
        let (data, end) = (self.ctx.data(), self.ctx.data_end());
        let (ip, th) = (data + l3, data + l4);
        // The helpers read fixed-size `struct iphdr`/`ipv6hdr`/`tcphdr`; the bindings
        // declare them opaque (size 0), so the sizes are the wire constants.
        let ip_len = if v6 {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        };
        if ip + ip_len > end || th + tcp::HEADER_LEN > end {
            return false;
        }
        // SAFETY: both headers lie inside the packet, as just checked; the helpers only
        // read them.
        let r = unsafe {
            if v6 {
                bpf_tcp_raw_check_syncookie_ipv6(ip as *mut ipv6hdr, th as *mut tcphdr)
            } else {
                bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th as *mut tcphdr)
            }
        };
        r == 0
    }

    #[inline(always)]
    fn iface(&self) -> Option<IfaceFacts> {
        // SAFETY: the xdp_md the kernel handed this program.
        let ifindex = unsafe { (*self.ctx.ctx).ingress_ifindex };
        // SAFETY: a plain-data map value, only read (copied out).
        unsafe { IFACES.get(&ifindex) }.copied()
    }

    #[inline(always)]
    fn local_dst(&self, flow: &Flow) -> bool {
        if self.config.test_flags & Config::TEST_BENCH_NO_LOCAL != 0 {
            return true;
        }
        // SAFETY: a plain-data map value, only read.
        unsafe { LOCAL_ADDRS.get(&flow.dst_local_key()) }.is_some_and(|f| f & LOCAL_ADDR_LOCAL != 0)
    }

    #[inline(always)]
    fn src_local_broadcast(&self, flow: &Flow) -> bool {
        let Some(key) = flow.src_broadcast_key() else {
            return false;
        };
        // SAFETY: a plain-data map value, only read.
        unsafe { LOCAL_ADDRS.get(&key) }.is_some_and(|f| f & LOCAL_ADDR_BROADCAST != 0)
    }

    #[inline(always)]
    fn now_ns(&self) -> u64 {
        // SAFETY: the helper takes no arguments and only reads the clock.
        unsafe { bpf_ktime_get_ns() }
    }
}

/// Runs the pipeline in the handoff mode `CONFIG` names. Each mode is its own copy of the
/// pipeline (a BPF subprogram) in which the mode is a constant, so the filter copy carries
/// none of the SYN+ACK path and the kfunc copy is the program as it was: one program with
/// the mode read at run time would need more than the 512-byte stack.
///
/// The mode comes from [`HANDOFF_MODE`], not `CONFIG`: a map lookup would take a stack slot in
/// this frame, on top of the pipeline's.
#[inline(always)]
pub fn run(raw: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    // SAFETY: a plain read of a constant the loader wrote (frozen .rodata).
    let mode = unsafe { core::ptr::read_volatile(&HANDOFF_MODE) };
    if Handoff::from_u8(mode) == Handoff::Filter {
        run_in::<true>(raw)
    } else {
        run_in::<false>(raw)
    }
}

/// The handoff mode, as `Config::handoff` holds it: the loader overrides it
/// (`names::HANDOFF_GLOBAL`) with the mode `run` chose, before the verifier sees the program.
#[unsafe(no_mangle)]
static HANDOFF_MODE: u8 = Handoff::Kfunc as u8;

#[inline(never)]
fn run_in<const FILTER: bool>(raw: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    let ctx = &XdpContext::new(raw);
    clear_foreign_meta(ctx);
    let Some(mut config) = CONFIG.get(0).copied() else {
        return xdp_action::XDP_PASS;
    };
    config.handoff = if FILTER {
        Handoff::Filter as u8
    } else {
        Handoff::Kfunc as u8
    };
    // SAFETY: data..data_end is the packet, valid for this program run.
    let mut pkt = unsafe { RawPacket::new(ctx.data(), ctx.data_end()) };
    let mut env = XdpEnv { ctx, config };
    let Decision { verdict, reason } = process(&mut pkt, &mut env);
    let config = env.config;
    let (action, reason) = match verdict {
        Verdict::Pass => (xdp_action::XDP_PASS, reason),
        Verdict::Drop => (xdp_action::XDP_DROP, reason),
        Verdict::Tx { len } => {
            // The frame length comes from the helper: the verifier refuses arithmetic on
            // data_end.
            // SAFETY: bpf_xdp_get_buff_len only reads the context the kernel handed us.
            let delta = len as i64 - unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i64;
            // SAFETY: shrinking only (len <= old length); no packet pointer is used after.
            if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
                (xdp_action::XDP_DROP, Some(Counter::Malformed))
            } else {
                (xdp_action::XDP_TX, reason)
            }
        }
        Verdict::PassWithMeta(meta) => (
            xdp_action::XDP_PASS,
            hand_off(ctx, &config, &meta).or(reason),
        ),
    };
    if let Some(c) = reason {
        count(c);
    }
    action
}

/// Removes a metadata area that is already in front of the packet (left by a program that
/// ran before us, or by the sender of a redirected frame), so that the only metadata TC
/// can see is what [`hand_off`] writes in this run. The packet pointers are read afresh
/// after the call, as the helper invalidates them.
#[inline(always)]
fn clear_foreign_meta(ctx: &XdpContext) {
    let len = ctx.data().wrapping_sub(ctx.metadata());
    // The kernel caps the area at 32 bytes; the bound also gives the verifier a range.
    if len == 0 || len > 32 {
        return;
    }
    // SAFETY: shrinks the metadata area by its own size, to empty; no packet pointer from
    // before the call is used after it. On failure the area stays, and TC still takes it
    // only for the segment it describes.
    unsafe { bpf_xdp_adjust_meta(ctx.ctx, len as i32) };
    count(Counter::ForeignMetaCleared);
}

/// Puts `meta` in the metadata area in front of the packet for TC; on failure, the
/// reason to count instead of the verdict's.
#[inline(always)]
fn hand_off(ctx: &XdpContext, config: &Config, meta: &CookieMeta) -> Option<Counter> {
    // Refused by drivers without XDP metadata support (native mode only); the daemon
    // falls back to generic mode when this counter moves.
    if config.test_flags & Config::TEST_FAIL_META != 0 {
        return Some(Counter::MetaUnsupported);
    }
    // SAFETY: grows the metadata area in front of the packet; checked below, and no
    // packet pointer from before the call is used after it.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(CookieMeta::LEN as i32)) } != 0 {
        return Some(Counter::MetaUnsupported);
    }
    // SAFETY: the new metadata..data window, as the kernel just laid it out.
    let mut area = unsafe { RawPacket::new(ctx.metadata(), ctx.data()) };
    match area.store(0, meta.to_bytes()) {
        Some(()) => None,
        None => Some(Counter::ReqskFailed),
    }
}
