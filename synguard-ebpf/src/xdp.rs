//! The XDP side: map and helper access for `synguard_common::pipeline::process`, and
//! turning its verdict into an XDP action. The one place a frame's reason is counted.
//!
//! No helper here changes packet data (no `bpf_xdp_adjust_*`): a SYN+ACK keeps the SYN's
//! frame length, the rest being padding after its IP datagram, and a cookie ACK reaches
//! TC through the `HANDOFF` map. So the program can be an extension program under any
//! libxdp dispatcher's stubs; `synguard/tests/map_abi.rs` checks the built object for it.

use aya_ebpf::{
    EbpfContext,
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action, xdp_md},
    helpers::{
        bpf_ktime_get_ns, bpf_tcp_gen_syncookie, bpf_tcp_raw_check_syncookie_ipv4,
        bpf_tcp_raw_check_syncookie_ipv6,
    },
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use synguard_common::{
    cookie::Decoded,
    dissect::Segment,
    flow::{Family, Flow},
    maps::{
        Action, Class, Config, Counter, EventScratch, Handoff, IfaceFacts, KeySlot,
        LOCAL_ADDR_BROADCAST, LOCAL_ADDR_LOCAL, ListSlot, Mode, SrcDrops, State, TokenBucket,
        VLAN_NONE, port_bit,
    },
    packet::{Packet, RawPacket},
    pipeline::{Decision, Env, KernelCookie, ListVerdict, SockState, Verdict, process},
    verifier::opaque,
    wire::{Addr, ethernet, ipv4, ipv6, tcp, tcp::TcpHeader, tcp_options::TcpOptions},
};

use crate::{
    maps::{
        ALLOW4, ALLOW6, CONFIG, COOKIE_SCRATCH, DENY4, DENY6, EVENT_SCRATCH, EVENTS, HANDOFF,
        HANDOFF_SCRATCH, IFACES, KEYS, LIST_FLAGS, LOCAL_ADDRS, MINTED, PORTS, SRC_DROPS, SRC_RATE,
        STATE, SYNACK_BUCKET, count, count_value,
    },
    sock::{SockRef, TCP_LISTEN},
};

/// What a socket the lookup found is to the pipeline: a listener (MPTCP or plain TCP), or
/// the flow's own socket.
#[inline(always)]
fn sock_state(sk: &SockRef) -> SockState {
    if sk.state() != TCP_LISTEN {
        SockState::Other
    } else if sk.is_mptcp() {
        SockState::MptcpListener
    } else {
        SockState::Listener
    }
}

/// `-EACCES`, what `bpf_tcp_raw_check_syncookie_*` returns for an ACK without the kernel's
/// cookie.
const EACCES: i64 = -13;

/// `MODE`: the handoff (a `Handoff` as u8) of this copy of the pipeline (see [`run`]).
struct XdpEnv<'a, const MODE: u8> {
    ctx: &'a XdpContext,
    /// The map value itself, not a copy: a copy would take 60 bytes of the pipeline's
    /// 512-byte stack. A live `synguard set` may land while a frame is being decided, so
    /// one frame can see old and new settings mixed, as it could with a copy taken while
    /// the controller writes.
    config: &'a Config,
    /// The pipeline located the segment ([`Env::located`]), whose source, port and flags
    /// are then in `EVENT_SCRATCH`.
    located: bool,
}

impl<const MODE: u8> Env for XdpEnv<'_, MODE> {
    #[inline(always)]
    fn config(&self) -> Config {
        let mut c = *self.config;
        // The copy's mode, a constant in it, whatever the map holds.
        c.handoff = MODE;
        c
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
        SockRef::lookup(self.ctx.as_ptr(), flow).map_or(SockState::None, |sk| sock_state(&sk))
    }

    #[inline(always)]
    fn kernel_cookie(&mut self, flow: &Flow, seq: u32, mss: u16) -> KernelCookie {
        let Some(sk) = SockRef::lookup(self.ctx.as_ptr(), flow) else {
            return KernelCookie::Socket(SockState::None);
        };
        match sock_state(&sk) {
            SockState::Listener => {}
            other => return KernelCookie::Socket(other),
        }
        let Some(h) = COOKIE_SCRATCH.get_ptr_mut(0) else {
            return KernelCookie::Declined;
        };
        // SAFETY: this CPU's scratch slot, which nothing else touches while XDP runs here
        // (not preempted); filled, then only read by the helper.
        let (ip_len, th_len) = unsafe { (*h).fill(flow, seq, mss) };
        // SAFETY: `sk` is the referenced listener from the lookup, released after the call;
        // both headers are in the map value, within its sizes (`ip_len` of 40 bytes,
        // `th_len` of 24); the helper only reads them.
        let r = unsafe {
            bpf_tcp_gen_syncookie(
                sk.as_ptr(),
                (*h).ip.as_mut_ptr().cast(),
                ip_len,
                (*h).tcp.as_mut_ptr().cast::<tcphdr>(),
                th_len,
            )
        };
        // The cookie in the low 32 bits, the MSS it encodes above them; negative where the
        // kernel would not send a cookie.
        if r < 0 {
            KernelCookie::Declined
        } else {
            KernelCookie::Minted(r as u32)
        }
    }

    #[inline(always)]
    fn kernel_cookie_valid(&mut self, v6: bool, l3: usize, l4: usize) -> Option<bool> {
        // Explicit bounds on the offsets first: the verifier adds only a bounded scalar
        // to a packet pointer. Both are far below these in any frame we parse.
        let (l3, l4) = (opaque(l3), opaque(l4));
        if l3 > 256 || l4 > 512 {
            return None;
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
            return None;
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
        // 0: the kernel's cookie; -EACCES: not one; anything else (-EPROTONOSUPPORT for
        // IPv6 as a module): the kernel cannot tell here.
        match r {
            0 => Some(true),
            EACCES => Some(false),
            _ => None,
        }
    }

    #[inline(always)]
    fn hand_off(
        &mut self,
        flow: &Flow,
        key: &KeySlot,
        d: &Decoded,
        opts: &TcpOptions,
        tcph: &TcpHeader,
    ) -> bool {
        // Key and value are built in a per-CPU scratch slot: on the stack they would not
        // fit beside the pipeline's frame (512 bytes).
        let Some(e) = HANDOFF_SCRATCH.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: this CPU's scratch slot, which nothing else touches while XDP runs here
        // (not preempted); written field by field, then only read by the insert.
        unsafe {
            let k = &mut (*e).key;
            k.src = flow.src.0;
            k.dst = flow.dst.0;
            k.seq = tcph.seq;
            k.ack = tcph.ack;
            k.src_port = flow.src_port;
            k.dst_port = flow.dst_port;
            k.v6 = flow.is_v6() as u32;
            (*e).meta.fill(key, d, opts, tcph);
            HANDOFF.insert(&(*e).key, &(*e).meta, 0).is_ok()
        }
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

    // Written straight to the scratch event, here where the pipeline has not branched
    // yet: the verifier checks these stores once, not once per path that ends in a drop.
    #[inline(always)]
    fn located(&mut self, seg: &Segment) {
        self.located = true;
        if let Some(e) = EVENT_SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's scratch value; XDP is not preempted on its CPU.
            let e = unsafe { &mut (*e).event };
            e.family = seg.flow.family as u8;
            e.src = seg.flow.src.octets();
            e.dst_port = seg.flow.dst_port;
            e.tcp_flags = 0;
        }
    }

    #[inline(always)]
    fn tcp_flags(&mut self, flags: u8) {
        if let Some(e) = EVENT_SCRATCH.get_ptr_mut(0) {
            // SAFETY: as in `located`.
            unsafe { (*e).event.tcp_flags = flags };
        }
    }
}

/// Runs the pipeline in the handoff mode `CONFIG` names. Each mode is its own copy of the
/// pipeline (a BPF subprogram) in which the mode is a constant, so the filter copy carries
/// none of the SYN+ACK path, the kernel-cookie copy none of synguard's cookie, and the kfunc
/// copy is the program as it was: one program with the mode read at run time would need
/// more than the 512-byte stack. The verifier follows only the copy the constant selects.
///
/// The mode comes from [`HANDOFF_MODE`], not `CONFIG`: a map lookup would take a stack slot in
/// this frame, on top of the pipeline's.
#[inline(always)]
pub fn run(raw: *mut xdp_md) -> u32 {
    // SAFETY: a plain read of a constant the loader wrote (frozen .rodata).
    let mode = unsafe { core::ptr::read_volatile(&HANDOFF_MODE) };
    match Handoff::from_u8(mode) {
        Handoff::Filter => run_in::<{ Handoff::Filter as u8 }>(raw),
        Handoff::KernelCookie => run_in::<{ Handoff::KernelCookie as u8 }>(raw),
        Handoff::Kfunc => run_in::<{ Handoff::Kfunc as u8 }>(raw),
    }
}

/// The handoff mode, as `Config::handoff` holds it: the loader overrides it
/// (`names::HANDOFF_GLOBAL`) with the mode `run` chose, before the verifier sees the program.
#[unsafe(no_mangle)]
static HANDOFF_MODE: u8 = Handoff::Kfunc as u8;

#[inline(never)]
fn run_in<const MODE: u8>(raw: *mut xdp_md) -> u32 {
    let ctx = &XdpContext::new(raw);
    let Some(config) = CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: data..data_end is the packet, valid for this program run.
    let mut pkt = unsafe { RawPacket::new(ctx.data(), ctx.data_end()) };
    let mut env = XdpEnv::<MODE> {
        ctx,
        config,
        located: false,
    };
    let Decision { verdict, reason } = process(&mut pkt, &mut env);
    let (action, reason) = match verdict {
        Verdict::Pass => (xdp_action::XDP_PASS, reason),
        Verdict::Drop => (xdp_action::XDP_DROP, reason),
        // The frame keeps its length: what follows the SYN+ACK's IP datagram is padding.
        Verdict::Tx { .. } => (xdp_action::XDP_TX, reason),
        Verdict::HandOff => (xdp_action::XDP_PASS, reason),
    };
    if let Some(c) = reason {
        let n = count_value(c);
        // Only the reason, the action and `n` depend on the pipeline's path here; whether
        // the frame is a drop to report is decided in `synguard_drop_event`, a global
        // function, which the verifier checks once by itself rather than once for every
        // path (and reason) of the pipeline that ends here. A transmitted frame is never a
        // drop, and a passed one only in monitor mode (which reports what it would drop):
        // other frames pay one comparison.
        let report = action == xdp_action::XDP_DROP
            || (action == xdp_action::XDP_PASS && config.mode == Mode::Monitor as u32);
        if report && let Some(e) = EVENT_SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's scratch value; XDP is not preempted on its CPU.
            let ev = unsafe { &mut (*e).event };
            ev.reason = c as u32;
            ev.passed = u8::from(action != xdp_action::XDP_DROP);
            if !env.located {
                ev.family = 0;
            }
            // SAFETY: the xdp_md the kernel handed this program.
            unsafe { synguard_drop_event(ctx.ctx, n) };
        }
    }
    action
}

/// [`on_drop`] as a global function (BTF linkage global): the kernel verifies it once, on its
/// own, with `n` an unknown scalar, and at each call only checks the arguments.
///
/// # Safety
///
/// `ctx` is the `xdp_md` of the running program.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn synguard_drop_event(ctx: *mut xdp_md, n: u64) -> u32 {
    let ctx = XdpContext::new(ctx);
    let (Some(config), Some(e)) = (CONFIG.get_ptr(0), EVENT_SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: a live map value, only read.
    on_drop(&ctx, unsafe { &*config }, e, n);
    0
}

/// The frame staged in the scratch `s` (source, port and flags from [`Env::located`] and
/// [`Env::tcp_flags`], reason and action from the counting site), this CPU's `n`th of its
/// reason: if it is a drop to report, adds it to its source's `SRC_DROPS` entry and, if `n`
/// is a multiple of `event_sample`, completes its event and writes it to `EVENTS`.
#[inline(always)]
fn on_drop(ctx: &XdpContext, config: &Config, s: *mut EventScratch, n: u64) {
    // SAFETY: this CPU's scratch value, staged just before; nothing else touches it.
    let s = unsafe { &mut *s };
    // A frame counted under a drop reason: dropped, or passed by monitor mode, which
    // reports what it would drop (seeing that is what the mode is for). Other passed
    // frames under a drop reason (`reflection` while not engaged) are not drops.
    let Some(&c) = Counter::ALL.get(s.event.reason as usize) else {
        return;
    };
    if c.class() != Class::Verdict(Action::Drop)
        || (s.event.passed != 0 && config.mode != Mode::Monitor as u32)
    {
        return;
    }
    // Kept in the event, not in a register: every value live across the helper calls
    // below would be spilled to the stack, of which the call chain has 16 bytes left.
    // SAFETY: the helper takes no arguments and only reads the clock.
    s.event.ts_ns = unsafe { bpf_ktime_get_ns() };
    let family = match s.event.family {
        4 => Some(Family::V4),
        6 => Some(Family::V6),
        _ => None,
    };
    if let Some(family) = family {
        // The key needs only the address's first 8 bytes (an IPv4 address, or an IPv6
        // /64), read as the little-endian word `Addr` keeps them in. One load from map
        // memory: the call chain has no stack to spare for a copy.
        // SAFETY: `src` lies at offset 8 of the 8-aligned map value, so the word is in
        // bounds and aligned.
        let w0 = unsafe { core::ptr::read(s.event.src.as_ptr().cast::<u64>()) };
        let flow = Flow {
            family,
            src: Addr([w0, 0]),
            dst: Addr::default(),
            src_port: 0,
            dst_port: 0,
        };
        let key = flow.src_key(config.src_prefix6);
        s.key.family = key.family;
        s.key._pad = 0;
        s.key.addr = key.addr;
        match SRC_DROPS.get_ptr_mut(&s.key) {
            // SAFETY: this CPU's value of a live per-CPU entry; XDP is not preempted on
            // its CPU, so nothing else touches it meanwhile.
            Some(d) => unsafe {
                (*d).drops += 1;
                (*d).rate_limited += u64::from(s.event.reason == Counter::RateLimited as u32);
                (*d).last_ns = s.event.ts_ns;
            },
            None => {
                s.first = SrcDrops {
                    drops: 1,
                    rate_limited: u64::from(s.event.reason == Counter::RateLimited as u32),
                    last_ns: s.event.ts_ns,
                };
                let _ = SRC_DROPS.insert(&s.key, &s.first, 0);
            }
        }
    }
    let every = u64::from(config.event_sample);
    if every == 0 || !n.is_multiple_of(every) {
        return;
    }
    let e = &mut s.event;
    // SAFETY: data..data_end is the packet, valid for this program run.
    let pkt = unsafe { RawPacket::new(ctx.data(), ctx.data_end()) };
    e.vlan = [VLAN_NONE; 2];
    if ethernet::is_tag(pkt.load_be16(12).unwrap_or(0)) {
        e.vlan[0] = pkt.load_be16(14).unwrap_or(0) & 0x0fff;
        if ethernet::is_tag(pkt.load_be16(16).unwrap_or(0)) {
            e.vlan[1] = pkt.load_be16(18).unwrap_or(0) & 0x0fff;
        }
    }
    // SAFETY: the xdp_md the kernel handed this program.
    e.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // A full ring (no reader, or a slow one) drops the event: counted, so a reader can
    // tell a quiet flood from a lossy one.
    if EVENTS.output(&*e, 0).is_err() {
        count(Counter::EventsLost);
    }
}
