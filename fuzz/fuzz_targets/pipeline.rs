//! The whole decision pipeline on arbitrary frames and environments: it never panics; a
//! slice and a `RawPacket` (the eBPF buffer type) give the same verdict, bytes and
//! counters; monitor mode never drops, answers or hands off; a `Tx` frame is a shorter,
//! valid SYN+ACK (checked by the independent reader in `testutil`) from the server back to
//! the client; and every frame counts `PacketsSeen` once and `SynSeen` at most once.
//!
//! Half the inputs are raw bytes; the other half are built by `testutil::Seg` from fuzzed
//! fields, so most of them are well-formed TCP and reach the deep paths (options walk,
//! cookie check, SYN+ACK construction).
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{
    cookie::Decoded,
    flags,
    flow::Flow,
    maps::{Config, Counter, Handoff, IfaceFacts, KeySlot, Mode, State, minted_mark},
    packet::RawPacket,
    pipeline::{Env, KernelCookie, ListVerdict, SockState, Verdict, process},
    testutil::{SERVER_MAC, Seg, read_reply},
    wire::{tcp::TcpHeader, tcp_options::TcpOptions},
};
use synguard_fuzz::Input;

/// An environment whose every answer comes from the fuzz input.
#[derive(Clone, Debug)]
struct FuzzEnv {
    cfg: Config,
    state: State,
    keys: [Option<KeySlot>; 2],
    minted: [u64; 2],
    counts: Vec<Counter>,
    protected: u16,
    list: ListVerdict,
    src_ok: bool,
    budget_ok: bool,
    sock: SockState,
    kernel_cookie: Option<bool>,
    /// Whether `kernel_cookie` mints for a listener (its ISN is derived from the SYN's
    /// sequence number) or declines.
    kernel_isn: bool,
    iface: Option<IfaceFacts>,
    local: bool,
    src_broadcast: bool,
}

impl Env for FuzzEnv {
    fn config(&self) -> Config {
        self.cfg
    }
    fn state(&self) -> State {
        self.state
    }
    fn key(&self, slot: u32) -> Option<KeySlot> {
        self.keys.get(slot as usize).copied().flatten()
    }
    fn minted(&self, slot: u32) -> u64 {
        self.minted.get(slot as usize).copied().unwrap_or(0)
    }
    fn set_minted(&mut self, slot: u32, mark: u64) {
        if let Some(m) = self.minted.get_mut(slot as usize) {
            *m = mark;
        }
    }
    fn count(&mut self, c: Counter) {
        self.counts.push(c);
    }
    fn port_protected(&self, port: u16) -> bool {
        port == self.protected
    }
    fn list_verdict(&self, _: &Flow) -> ListVerdict {
        self.list
    }
    fn src_syn_allowed(&mut self, _: &Flow, _: u64) -> bool {
        self.src_ok
    }
    fn synack_budget(&mut self, _: u64) -> bool {
        self.budget_ok
    }
    fn socket_state(&mut self, _: &Flow) -> SockState {
        self.sock
    }
    fn kernel_cookie_valid(&mut self, _: bool, _: usize, _: usize) -> Option<bool> {
        self.kernel_cookie
    }
    fn kernel_cookie(&mut self, _: &Flow, seq: u32, _: u16) -> KernelCookie {
        match (self.sock, self.kernel_isn) {
            (SockState::Listener, true) => KernelCookie::Minted(seq ^ 0x4b43_4b43),
            (SockState::Listener, false) => KernelCookie::Declined,
            (s, _) => KernelCookie::Socket(s),
        }
    }
    fn hand_off(
        &mut self,
        _: &Flow,
        _: &KeySlot,
        _: &Decoded,
        _: &TcpOptions,
        _: &TcpHeader,
    ) -> bool {
        true
    }
    fn iface(&self) -> Option<IfaceFacts> {
        self.iface
    }
    fn local_dst(&self, _: &Flow) -> bool {
        self.local
    }
    fn src_local_broadcast(&self, _: &Flow) -> bool {
        self.src_broadcast
    }
    fn now_ns(&self) -> u64 {
        5_000_000_000
    }
}

fn env(i: &mut Input) -> FuzzEnv {
    let b = i.u8();
    let mode = match i.u8() % 4 {
        0 => Mode::Monitor,
        1 => Mode::Auto,
        2 => Mode::Always,
        // An unknown mode value: the pipeline treats it as monitor.
        _ => return env_with_mode(i, b, 7),
    };
    env_with_mode(i, b, mode as u32)
}

fn env_with_mode(i: &mut Input, b: u8, mode: u32) -> FuzzEnv {
    let key = |i: &mut Input, epoch: u32| KeySlot {
        k0: u64::from(i.u32()),
        k1: u64::from(i.u32()),
        epoch,
        wscale: i.u8() % 15,
        valid: 1,
        _pad: [0; 2],
    };
    let k0 = key(i, 41);
    let k1 = key(i, 42);
    FuzzEnv {
        cfg: Config {
            mode,
            ecn: b & 1,
            synack_window: i.u16(),
            // Mostly kfunc; the kernel-cookie and filter handoffs (and an unknown value,
            // read as filter) too.
            handoff: [
                Handoff::Kfunc as u8,
                Handoff::Kfunc as u8,
                Handoff::Kfunc as u8,
                Handoff::KernelCookie as u8,
                Handoff::KernelCookie as u8,
                Handoff::Filter as u8,
                Handoff::Filter as u8,
                0xee,
            ][usize::from(i.u8() & 7)],
            ..Config::DEFAULT
        },
        state: State {
            active_key: u32::from(b >> 1 & 1),
            engaged: u32::from(b >> 2 & 1),
        },
        keys: [(b & 0x08 == 0).then_some(k0), (b & 0x10 == 0).then_some(k1)],
        minted: [
            minted_mark(41),
            if b & 0x20 == 0 { minted_mark(42) } else { 0 },
        ],
        counts: vec![],
        protected: 80,
        list: match i.u8() % 3 {
            0 => ListVerdict::None,
            1 => ListVerdict::Allow,
            _ => ListVerdict::Deny,
        },
        src_ok: b & 0x40 == 0,
        budget_ok: b & 0x80 == 0,
        sock: match i.u8() % 4 {
            0 => SockState::Listener,
            1 => SockState::None,
            2 => SockState::MptcpListener,
            _ => SockState::Other,
        },
        kernel_cookie: [Some(false), Some(true), None][usize::from(i.u8() % 3)],
        kernel_isn: i.u8() % 8 != 0,
        iface: {
            // Mostly the frame's own destination MAC (testutil's SERVER_MAC), so the SYN
            // path is reached; sometimes no entry or another MAC.
            let (sel, mtu) = (i.u8(), i.u16());
            (sel % 8 != 0).then(|| IfaceFacts {
                mac: if sel % 8 == 1 {
                    [2, 0, 0, 0, 0, 1]
                } else {
                    SERVER_MAC
                },
                kernel_ecn: sel >> 7,
                _pad: 0,
                mtu: u32::from(mtu),
            })
        },
        local: i.u8() % 8 != 0,
        src_broadcast: i.u8() % 16 == 0,
    }
}

fn frame(i: &mut Input) -> Vec<u8> {
    if i.u8() & 1 == 0 {
        return i.bytes(usize::MAX).to_vec();
    }
    let shape = i.u8();
    let mut s = if shape & 1 == 0 {
        Seg::syn4()
    } else {
        Seg::syn6()
    };
    s.vlan = (shape & 2 != 0).then(|| i.u16() & 0x0fff);
    s.flags = if shape & 4 == 0 { flags::SYN } else { i.u8() };
    s.seq = i.u32();
    s.ack = i.u32();
    s.sport = i.u16();
    if shape & 8 != 0 {
        s.dport = i.u16();
    }
    if shape & 16 != 0 {
        s.frag = i.u16();
    }
    if shape & 32 != 0 {
        let n = usize::from(i.u8() % 3) * 4;
        s.ip_options = i.bytes(n).to_vec();
    }
    if shape & 64 != 0 {
        let n = usize::from(i.u8() % 41);
        s.options = i.bytes(n).to_vec();
    }
    let n = usize::from(i.u8() % 16);
    s.payload = i.bytes(n).to_vec();
    s.trailer = usize::from(i.u8() % 4);
    let mut f = s.frame();
    // Occasionally cut the frame short, as a broken sender would.
    if shape & 128 != 0 && !f.is_empty() {
        let cut = usize::from(i.u8()) % f.len();
        f.truncate(f.len() - cut);
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let mut i = Input(data);
    let mut e = env(&mut i);
    let mut f = frame(&mut i);
    let original = f.clone();
    let mut copy = f.clone();
    let mut e2 = e.clone();

    let d = process(&mut f[..], &mut e);
    let start = copy.as_mut_ptr() as usize;
    // SAFETY: `copy` is alive, owned here and touched only through `raw` during the call.
    let mut raw = unsafe { RawPacket::new(start, start + copy.len()) };
    let d2 = process(&mut raw, &mut e2);
    assert_eq!(d, d2, "slice and RawPacket decisions differ");
    assert_eq!(f, copy, "slice and RawPacket bytes differ");
    assert_eq!(e.counts, e2.counts);

    assert_eq!(
        e.counts
            .iter()
            .filter(|&&c| c == Counter::PacketsSeen)
            .count(),
        1
    );
    assert!(e.counts.iter().filter(|&&c| c == Counter::SynSeen).count() <= 1);
    assert!(
        e.counts
            .iter()
            .all(|&c| c == Counter::PacketsSeen || c == Counter::SynSeen),
        "process counts totals only; the reason is the glue's"
    );
    let monitor = e.cfg.mode != Mode::Auto as u32 && e.cfg.mode != Mode::Always as u32;
    if Handoff::from_u8(e.cfg.handoff) == Handoff::Filter {
        assert!(
            matches!(d.verdict, Verdict::Pass | Verdict::Drop),
            "the filter handoff answered or handed off: {d:?}"
        );
    }
    let kernel_cookie = Handoff::from_u8(e.cfg.handoff) == Handoff::KernelCookie;
    if kernel_cookie {
        assert_ne!(
            d.verdict,
            Verdict::HandOff,
            "the kernel-cookie handoff handed off"
        );
        if matches!(d.verdict, Verdict::Tx { .. }) {
            assert!(
                e.kernel_isn && e.sock == SockState::Listener,
                "answered without the kernel's cookie"
            );
        }
    }
    match d.verdict {
        Verdict::Pass => {}
        Verdict::Drop => assert!(!monitor, "monitor mode dropped"),
        Verdict::HandOff => assert!(!monitor, "monitor mode handed off"),
        Verdict::Tx { len } => {
            assert!(!monitor, "monitor mode answered");
            assert!(len <= original.len(), "a SYN+ACK longer than its SYN");
            let r = read_reply(&f[..len]);
            assert_eq!(r.flags & (flags::SYN | flags::ACK), flags::SYN | flags::ACK);
            assert_eq!(
                r.src_mac,
                original[..6],
                "reply leaves from the SYN's destination MAC"
            );
            if kernel_cookie {
                // The kernel's cookie as the ISN, and nothing the kernel cannot decode
                // from it: an MSS option at most, no ECN.
                assert_eq!(r.seq, r.ack.wrapping_sub(1) ^ 0x4b43_4b43);
                assert!(
                    r.options.is_empty() || (r.options.len() == 4 && r.options[..2] == [2, 4]),
                    "{:?}",
                    r.options
                );
                assert_eq!(r.flags & flags::ECE, 0);
            }
        }
    }
    if d.verdict == Verdict::Pass || d.verdict == Verdict::Drop {
        assert_eq!(f, original, "a passed or dropped frame is not modified");
    }
});
