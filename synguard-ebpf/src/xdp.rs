//! The XDP side: map and helper access for `synguard_common::synproxy::process`, and
//! turning its verdict into an XDP action.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::xdp_action,
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use synguard_common::{
    flow::Flow,
    maps::{Config, CookieMeta, Counter, KeySlot, ListSlot, State, TokenBucket, port_bit},
    packet::{Packet, RawPacket},
    synproxy::{Env, ListVerdict, SockState, Verdict, process},
};

use crate::{
    maps::{
        ALLOW4, ALLOW6, CONFIG, DENY4, DENY6, KEYS, LIST_FLAGS, PORTS, SRC_RATE, STATE,
        SYNACK_BUCKET, count,
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
        let key = flow.src_key();
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
            // SAFETY: this CPU's slot, not preempted.
            Some(b) => unsafe { (*b).take(now_ns, rate, 0) },
            None => true,
        }
    }

    #[inline(always)]
    fn socket_state(&mut self, flow: &Flow) -> SockState {
        match SockRef::lookup(self.ctx.as_ptr(), flow) {
            None => SockState::None,
            Some(sk) if sk.state() == TCP_LISTEN => SockState::Listener,
            Some(_) => SockState::Other,
        }
    }

    #[inline(always)]
    fn now_ns(&self) -> u64 {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    }
}

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(config) = CONFIG.get(0).copied() else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: data..data_end is the packet, valid for this program run.
    let mut pkt = unsafe { RawPacket::new(ctx.data(), ctx.data_end()) };
    let mut env = XdpEnv { ctx, config };
    match process(&mut pkt, &mut env) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Tx { len } => {
            // The frame length comes from the helper: the verifier refuses arithmetic on
            // data_end.
            // SAFETY: shrinking only (len <= old length); no packet pointer is used after.
            let delta = len as i64 - unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i64;
            if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
                count(Counter::Malformed);
                return xdp_action::XDP_DROP;
            }
            xdp_action::XDP_TX
        }
        Verdict::PassWithMeta(meta) => {
            // SAFETY: grows the metadata area in front of the packet; checked below.
            if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(size_of::<CookieMeta>() as i32)) } != 0 {
                count(Counter::ReqskFailed);
                return xdp_action::XDP_PASS;
            }
            // SAFETY: the new metadata..data window, as the kernel just laid it out.
            let mut area = unsafe { RawPacket::new(ctx.metadata(), ctx.data()) };
            // SAFETY: CookieMeta is repr(C) plain data of exactly this size.
            let bytes: [u8; size_of::<CookieMeta>()] = unsafe { core::mem::transmute(meta) };
            if area.store(0, bytes).is_none() {
                count(Counter::ReqskFailed);
            }
            xdp_action::XDP_PASS
        }
    }
}
