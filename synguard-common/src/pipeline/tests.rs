//! Whole-pipeline tests: real frames in, verdicts, counters and reply bytes out, every
//! reply checked by the independent reader in `testutil` (checksums recomputed from
//! scratch), every run repeated over `RawPacket` to hold both buffer types to one result.

use super::*;
use crate::cookie::Decoded;
use crate::dissect::tc_flow;
use crate::flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use crate::handoff::{CookieMeta, HandoffKey};
use crate::packet::RawPacket;
use crate::testutil::{CLIENT_MAC, Reply, SERVER_MAC, Seg, read_reply};
use crate::wire::tcp_options::TcpOptions;
use core::hash::Hasher;
use proptest::prelude::*;
use siphasher::sip::SipHasher24;

const KEY0: KeySlot = KeySlot {
    k0: 0x0011_2233_4455_6677,
    k1: 0x8899_aabb_ccdd_eeff,
    epoch: 41,
    wscale: 9,
    valid: 1,
    _pad: [0; 2],
};
const KEY1: KeySlot = KeySlot {
    k0: 0xdead_beef,
    k1: 0xfeed_face,
    epoch: 42,
    wscale: 7,
    valid: 1,
    _pad: [0; 2],
};

#[derive(Clone, Debug)]
struct Mock {
    cfg: Config,
    state: State,
    keys: [Option<KeySlot>; 2],
    minted: [u64; 2],
    minted_writes: usize,
    counts: Vec<Counter>,
    protected: Vec<u16>,
    list: ListVerdict,
    src_ok: bool,
    budget_ok: bool,
    sock: SockState,
    lookups: usize,
    /// What `kernel_cookie_valid` answers, and the calls it got: (v6, l3, l4).
    kernel_cookie: Option<bool>,
    kernel_checks: Vec<(bool, usize, usize)>,
    /// What `kernel_cookie` mints for a listener (`sock`; None: the kernel declines), and
    /// the calls it got: (flow, seq, mss).
    kernel_isn: Option<u32>,
    kernel_mints: Vec<(Flow, u32, u16)>,
    /// The interface's own MAC, as `IFACES` holds it (None: no entry).
    mac: Option<[u8; 6]>,
    /// The interface's MTU and kernel ECN, as `IFACES` holds them.
    mtu: u32,
    kernel_ecn: u8,
    /// Whether the destination is in `LOCAL_ADDRS`.
    local: bool,
    /// Whether the source is in `LOCAL_ADDRS` as a subnet's broadcast address.
    src_broadcast: bool,
    /// What `hand_off` stored, in order, and whether the map takes more.
    handoffs: Vec<(HandoffKey, CookieMeta)>,
    handoff_full: bool,
}

impl Mock {
    fn new() -> Mock {
        Mock {
            cfg: Config {
                ttl: 61,
                adv_mss4: 1400,
                adv_mss6: 1380,
                synack_window: 29200,
                ..Config::DEFAULT
            },
            state: State {
                active_key: 1,
                engaged: 0,
            },
            keys: [Some(KEY0), Some(KEY1)],
            minted: [0; 2],
            minted_writes: 0,
            counts: vec![],
            protected: vec![80, 443],
            list: ListVerdict::None,
            src_ok: true,
            budget_ok: true,
            sock: SockState::Listener,
            lookups: 0,
            kernel_cookie: Some(false),
            kernel_isn: Some(0x4b43_0001),
            kernel_mints: Vec::new(),
            kernel_checks: vec![],
            mac: Some(SERVER_MAC),
            mtu: 1500,
            kernel_ecn: 1,
            local: true,
            src_broadcast: false,
            handoffs: vec![],
            handoff_full: false,
        }
    }
    fn mode(mut self, m: Mode) -> Mock {
        self.cfg.mode = m as u32;
        self
    }
    /// Counters other than PacketsSeen, in order.
    fn reasons(&self) -> Vec<Counter> {
        self.counts
            .iter()
            .copied()
            .filter(|&c| c != Counter::PacketsSeen)
            .collect()
    }
}

impl Env for Mock {
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
        self.minted[slot as usize] = mark;
        self.minted_writes += 1;
    }
    fn count(&mut self, c: Counter) {
        self.counts.push(c);
    }
    fn port_protected(&self, port: u16) -> bool {
        self.protected.contains(&port)
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
        self.lookups += 1;
        self.sock
    }
    fn kernel_cookie_valid(&mut self, v6: bool, l3: usize, l4: usize) -> Option<bool> {
        self.kernel_checks.push((v6, l3, l4));
        self.kernel_cookie
    }
    /// As the glue: the lookup first, then the kernel's answer for a listener alone.
    fn kernel_cookie(&mut self, flow: &Flow, seq: u32, mss: u16) -> KernelCookie {
        self.lookups += 1;
        if self.sock != SockState::Listener {
            return KernelCookie::Socket(self.sock);
        }
        self.kernel_mints.push((*flow, seq, mss));
        match self.kernel_isn {
            Some(isn) => KernelCookie::Minted(isn),
            None => KernelCookie::Declined,
        }
    }
    fn hand_off(
        &mut self,
        flow: &Flow,
        key: &KeySlot,
        d: &Decoded,
        opts: &TcpOptions,
        tcph: &TcpHeader,
    ) -> bool {
        if self.handoff_full {
            return false;
        }
        self.handoffs.push((
            HandoffKey::new(flow, tcph.seq, tcph.ack),
            CookieMeta::new(key, d, opts, tcph),
        ));
        true
    }
    fn iface(&self) -> Option<IfaceFacts> {
        self.mac.map(|mac| IfaceFacts {
            mac,
            kernel_ecn: self.kernel_ecn,
            _pad: 0,
            mtu: self.mtu,
        })
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

/// Runs `process` on the frame as a slice, and on a copy through `RawPacket` with a clone
/// of the environment; both must agree on verdict, bytes and counters. Then counts the
/// reason as the glue does, so `env.counts` reads like the counters after the frame.
fn run(frame: &mut [u8], env: &mut Mock) -> Verdict {
    let mut copy = frame.to_vec();
    let mut env2 = env.clone();
    let before = env.counts.len();
    let d = process(frame, env);
    let raw_d = {
        let start = copy.as_mut_ptr() as usize;
        // SAFETY: `copy` outlives `raw` and is not otherwise touched meanwhile.
        let mut raw = unsafe { RawPacket::new(start, start + copy.len()) };
        process(&mut raw, &mut env2)
    };
    assert_eq!(d, raw_d, "slice and RawPacket decisions differ");
    assert_eq!(&frame[..], &copy[..], "slice and RawPacket bytes differ");
    assert_eq!(env.counts, env2.counts);
    // `process` counts the totals only (PacketsSeen once, then SynSeen at most once), so
    // with the glue's one count of `reason` each frame has exactly one verdict counter.
    let totals = &env.counts[before..];
    assert_eq!(totals.first(), Some(&Counter::PacketsSeen), "{totals:?}");
    assert!(
        totals[1..].is_empty() || totals[1..] == [Counter::SynSeen],
        "process counted a reason itself: {totals:?}"
    );
    if let Some(c) = d.reason {
        assert!(
            c != Counter::PacketsSeen && c != Counter::SynSeen,
            "a total is not a reason: {c:?}"
        );
        env.count(c);
    }
    d.verdict
}

fn client_flow(s: &Seg) -> Flow {
    if s.v6 {
        Flow::v6(s.src, s.dst, s.sport, s.dport)
    } else {
        Flow::v4(
            s.src[..4].try_into().unwrap(),
            s.dst[..4].try_into().unwrap(),
            s.sport,
            s.dport,
        )
    }
}

/// SipHash of the MAC input, laid out from the design text, by `siphasher`.
fn reference_mac(key: &KeySlot, s: &Seg, isn: u32, ob: u8) -> u64 {
    let a = s.addr_len();
    let mut m = Vec::new();
    m.extend_from_slice(&s.src[..a]);
    m.extend_from_slice(&s.dst[..a]);
    m.extend_from_slice(&s.sport.to_be_bytes());
    m.extend_from_slice(&s.dport.to_be_bytes());
    m.extend_from_slice(&isn.to_be_bytes());
    m.extend_from_slice(&key.epoch.to_le_bytes());
    m.extend_from_slice(&[ob, 0, 0, 0]);
    let mut h = SipHasher24::new_with_keys(key.k0, key.k1);
    h.write(&m);
    h.finish()
}

/// What the client offered, read plainly from its option bytes (for well-formed lists).
#[derive(Clone, Copy, Debug, Default)]
struct Offer {
    mss: Option<u16>,
    ws: Option<u8>,
    sack: bool,
    ts: Option<u32>,
}

fn offer_bytes(o: &Offer) -> Vec<u8> {
    let mut b = Vec::new();
    if let Some(m) = o.mss {
        b.extend_from_slice(&[2, 4]);
        b.extend_from_slice(&m.to_be_bytes());
    }
    if o.sack {
        b.extend_from_slice(&[1, 1, 4, 2]);
    }
    if let Some(t) = o.ts {
        b.extend_from_slice(&[1, 1, 8, 10]);
        b.extend_from_slice(&t.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
    }
    if let Some(w) = o.ws {
        b.extend_from_slice(&[1, 3, 3, w]);
    }
    b
}

/// Checks a SYN+ACK against the SYN it answers; returns the reply.
fn check_synack(
    syn: &Seg,
    env: &Mock,
    key: &KeySlot,
    offer: &Offer,
    frame: &[u8],
    ecn: bool,
) -> Reply {
    let r = read_reply(frame);
    let a = syn.addr_len();
    assert_eq!(r.dst_mac, CLIENT_MAC);
    assert_eq!(r.src_mac, SERVER_MAC);
    if syn.outer_tags.is_empty() {
        assert_eq!(r.vlan, syn.vlan, "VLAN tag kept");
    }
    assert_eq!(r.tags, syn.all_tags(), "VLAN stack kept");
    assert_eq!(r.v6, syn.v6);
    assert_eq!(r.src, &syn.dst[..a]);
    assert_eq!(r.dst, &syn.src[..a]);
    assert_eq!(r.ttl, env.cfg.ttl);
    assert_eq!(r.tos, 0);
    if !syn.v6 {
        assert_eq!(r.ip_id, 0);
        assert_eq!(r.ip_frag, 0x4000, "DF, not a fragment");
    }
    assert_eq!((r.sport, r.dport), (syn.dport, syn.sport));
    assert_eq!(r.ack, syn.seq.wrapping_add(1));
    assert_eq!(r.flags, SYN | ACK | if ecn { ECE } else { 0 });
    assert_eq!(r.window, env.cfg.synack_window);
    assert_eq!(r.urgent, 0);
    assert_eq!(r.payload_len, 0, "SYN payload is not echoed");

    // The cookie: 5 option bits at the bottom, 27 MAC bits above.
    let ob = (r.seq & 0x1f) as u8;
    let h = reference_mac(key, syn, syn.seq, ob);
    assert_eq!(r.seq >> 5, (h & 0x7ff_ffff) as u32, "cookie MAC bits");
    assert_eq!(
        ob >> 2,
        sack_ws_code(offer.sack, offer.ws.map(|w| w.min(14)))
    );
    assert!(!ecn || offer.ts.is_some(), "ECN only with timestamps");
    // Our TSval: ECN in bit 0, 31 MAC bits above it, chosen by ECN.
    let tsval = if ecn {
        ((h >> 33) as u32) << 1 | 1
    } else {
        (((h >> 32) as u32) & 0x7fff_ffff) << 1
    };

    // Options, built here from the rules in words. The MSS: the MTU less the IP and TCP
    // headers, at least Linux's floor (256 / 1220), at most the configured clamp (which an
    // unknown MTU leaves alone).
    let (clamp, headers, floor) = if syn.v6 {
        (env.cfg.adv_mss6, 60, 1220)
    } else {
        (env.cfg.adv_mss4, 40, 256)
    };
    let adv = if env.mtu != 0 {
        clamp.min(env.mtu.saturating_sub(headers).clamp(floor, 65535) as u16)
    } else {
        clamp
    };
    let mut rest = Vec::new();
    match (offer.sack, offer.ts) {
        (true, Some(tv)) => {
            rest.extend_from_slice(&[4, 2, 8, 10]);
            rest.extend_from_slice(&tsval.to_be_bytes());
            rest.extend_from_slice(&tv.to_be_bytes());
        }
        (false, Some(tv)) => {
            rest.extend_from_slice(&[1, 1, 8, 10]);
            rest.extend_from_slice(&tsval.to_be_bytes());
            rest.extend_from_slice(&tv.to_be_bytes());
        }
        (true, None) => rest.extend_from_slice(&[1, 1, 4, 2]),
        (false, None) => {}
    }
    if offer.ws.is_some() {
        rest.extend_from_slice(&[1, 3, 3, key.wscale]);
    }
    let mut want = vec![2, 4];
    want.extend_from_slice(&adv.to_be_bytes());
    want.extend_from_slice(&rest);
    // Our MSS is left out only when the SYN's frame is too short to hold it.
    // (At the reply's TCP offset: after the tags and the fixed IP header.)
    let l4 = 14 + 4 * syn.all_tags().len() + if syn.v6 { 40 } else { 20 };
    if syn.frame().len() < l4 + 20 + want.len() {
        want = rest;
    }
    assert_eq!(r.options, want, "SYN+ACK options");
    r
}

/// The client's third packet for a SYN+ACK.
fn ack_for(syn: &Seg, r: &Reply, ts: Option<(u32, u32)>) -> Seg {
    let mut a = syn.clone();
    a.flags = ACK;
    a.seq = syn.seq.wrapping_add(1);
    a.ack = r.seq.wrapping_add(1);
    a.payload = vec![];
    a.options = match ts {
        Some((tsval, tsecr)) => {
            let mut o = vec![1, 1, 8, 10];
            o.extend_from_slice(&tsval.to_be_bytes());
            o.extend_from_slice(&tsecr.to_be_bytes());
            o
        }
        None => vec![],
    };
    a
}

/// Handshake through `process`: SYN -> Tx -> check reply -> ACK -> HandOff.
fn handshake(mut syn: Seg, offer: Offer, ecn_syn: bool, env: &mut Mock) -> CookieMeta {
    syn.options = offer_bytes(&offer);
    if ecn_syn {
        syn.flags |= ECE | CWR;
    }
    let mut f = syn.frame();
    let old = f.len();
    let v = run(&mut f, env);
    let Verdict::Tx { len } = v else {
        panic!("SYN not answered: {v:?}, {:?}", env.reasons())
    };
    assert!(len <= old);
    // Without timestamps the cookie cannot carry ECN, so it is not accepted.
    let ecn = ecn_syn && env.cfg.ecn != 0 && env.kernel_ecn != 0 && offer.ts.is_some();
    let key = env.keys[env.state.active_key as usize].unwrap();
    let r = check_synack(&syn, env, &key, &offer, &f[..len], ecn);

    let our_tsval = u32::from_be_bytes(
        r.options
            .windows(2)
            .position(|w| w == [8, 10])
            .map(|i| r.options[i + 2..i + 6].try_into().unwrap())
            .unwrap_or([0; 4]),
    );
    let ack = ack_for(&syn, &r, offer.ts.map(|t| (t.wrapping_add(7), our_tsval)));
    let mut af = ack.frame();
    let before = af.clone();
    let v = run(&mut af, env);
    assert_eq!(af, before, "the ACK is not modified");
    let (Verdict::HandOff, Some(&(at, m))) = (v, env.handoffs.last()) else {
        panic!("cookie ACK refused: {v:?} {:?}", env.reasons())
    };
    // Stored under this very segment: both addresses and ports, seq and ack.
    let flow = if ack.v6 {
        Flow::v6(ack.src, ack.dst, ack.sport, ack.dport)
    } else {
        Flow::v4(
            ack.src[..4].try_into().unwrap(),
            ack.dst[..4].try_into().unwrap(),
            ack.sport,
            ack.dport,
        )
    };
    assert_eq!(at, HandoffKey::new(&flow, ack.seq, ack.ack));
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckValid));
    // Bound to this ACK, so TC hands it off for this segment only.
    assert!(m.describes(ack.seq, ack.ack, ack.sport, ack.dport));
    assert!(!m.describes(ack.seq, ack.ack, ack.dport, ack.sport));
    m
}

/// The SACK/window-scale code, from the table in words (module doc of `cookie`): 0 no
/// scaling, 1 scaling without SACK, 2.. SACK with a shift of 0, 2, 6, 7, 8, 9.
fn sack_ws_code(sack: bool, ws: Option<u8>) -> u8 {
    match (sack, ws) {
        (_, None) => 0,
        (false, Some(_)) => 1,
        (true, Some(w)) => [0u8, 2, 6, 7, 8, 9].iter().rposition(|&e| e <= w).unwrap() as u8 + 2,
    }
}

/// The shift a cookie gives back: rounded down to the table (to 0 without SACK).
fn expected_wscale(sack: bool, ws: u8) -> u8 {
    if !sack {
        return 0;
    }
    *[0u8, 2, 6, 7, 8, 9]
        .iter()
        .rev()
        .find(|&&e| e <= ws)
        .unwrap()
}

fn expected_mss(v6: bool, mss: Option<u16>) -> u16 {
    let t: [u16; 4] = if v6 {
        [1220, 1420, 1440, 8940]
    } else {
        [536, 1300, 1440, 1460]
    };
    let m = mss.unwrap_or(0);
    t.iter().rev().copied().find(|&e| e <= m).unwrap_or(t[0])
}

fn all_offers() -> Vec<Offer> {
    let mut v = Vec::new();
    for mss in [
        None,
        Some(1460),
        Some(1300),
        Some(9000),
        Some(300),
        Some(1420),
    ] {
        for ws in [None, Some(0), Some(3), Some(7), Some(8), Some(14), Some(15)] {
            for sack in [false, true] {
                for ts in [None, Some(0xa1b2_c3d4)] {
                    v.push(Offer { mss, ws, sack, ts });
                }
            }
        }
    }
    v
}

fn variants() -> Vec<Seg> {
    let mut v = Vec::new();
    for base in [Seg::syn4(), Seg::syn6()] {
        for vlan in [None, Some(0x0064)] {
            let mut s = base.clone();
            s.vlan = vlan;
            v.push(s);
        }
    }
    v
}

#[test]
fn handshake_every_option_combination() {
    for syn in variants() {
        for offer in all_offers() {
            for ecn_syn in [false, true] {
                let mut env = Mock::new().mode(Mode::Always);
                let m = handshake(syn.clone(), offer, ecn_syn, &mut env);
                let ctx = format!("{syn:?} {offer:?}");
                assert_eq!(m.magic, CookieMeta::MAGIC);
                assert_eq!(m.mss, expected_mss(syn.v6, offer.mss), "{ctx}");
                assert_eq!(m.wscale_ok, offer.ws.is_some() as u8, "{ctx}");
                assert_eq!(
                    m.snd_wscale,
                    offer
                        .ws
                        .map_or(0, |w| expected_wscale(offer.sack, w.min(14))),
                    "{ctx}"
                );
                assert_eq!(
                    m.rcv_wscale,
                    if offer.ws.is_some() { KEY1.wscale } else { 0 },
                    "{ctx}"
                );
                // SACK without window scale is dropped (module doc of `cookie`).
                assert_eq!(m.sack_ok, (offer.sack && offer.ws.is_some()) as u8, "{ctx}");
                assert_eq!(m.ecn_ok, (ecn_syn && offer.ts.is_some()) as u8, "{ctx}");
                assert_eq!(m.tstamp_ok, offer.ts.is_some() as u8, "{ctx}");
                assert_eq!(
                    m.rcv_tsval,
                    offer.ts.map_or(0, |t| t.wrapping_add(7)),
                    "{ctx}"
                );
                if offer.ts.is_none() {
                    assert_eq!(m.rcv_tsecr, 0);
                }
                assert_eq!(
                    env.reasons(),
                    vec![
                        Counter::SynSeen,
                        Counter::CookieSent,
                        Counter::CookieAckValid
                    ],
                    "{ctx}"
                );
                assert_eq!(
                    env.lookups, 2,
                    "one socket lookup for the SYN, one for the ACK"
                );
            }
        }
    }
}

#[test]
fn tsecr_is_our_tsval_and_validates() {
    let mut env = Mock::new().mode(Mode::Always);
    let offer = Offer {
        mss: Some(1460),
        ws: Some(7),
        sack: true,
        ts: Some(99),
    };
    let m = handshake(Seg::syn4(), offer, false, &mut env);
    // The TSecr the client echoed is our TSval: the high half of the MAC.
    let syn = Seg::syn4();
    let f = Flow::v4([192, 0, 2, 10], [198, 51, 100, 1], syn.sport, syn.dport);
    assert_eq!(f, client_flow(&syn));
    let ob = crate::cookie::encode_options(
        false,
        &TcpOptions {
            mss: 1460,
            wscale: 7,
            sack_ok: true,
            ts: true,
            tsval: 99,
            tsecr: 0,
            signed: false,
        },
    );
    let h = reference_mac(&KEY1, &syn, syn.seq, ob);
    assert_eq!(m.rcv_tsecr, (((h >> 32) as u32) & 0x7fff_ffff) << 1);
}

#[test]
fn ecn_needs_both_bits_and_config() {
    let offer = Offer {
        mss: Some(1460),
        ..Offer::default()
    };
    let mut env = Mock::new().mode(Mode::Always);
    env.cfg.ecn = 0;
    let m = handshake(Seg::syn4(), offer, true, &mut env);
    assert_eq!(m.ecn_ok, 0);
    // ECE alone is not an ECN-setup SYN.
    let mut env = Mock::new().mode(Mode::Always);
    let mut syn = Seg::syn4();
    syn.flags = SYN | ECE;
    let mut f = syn.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!()
    };
    assert_eq!(read_reply(&f[..len]).flags, SYN | ACK);
}

#[test]
fn ecn_also_needs_the_kernel_sysctl() {
    let offer = Offer {
        mss: Some(1460),
        ts: Some(5),
        ..Offer::default()
    };
    let mut env = Mock::new().mode(Mode::Always);
    let m = handshake(Seg::syn4(), offer, true, &mut env);
    assert_eq!(m.ecn_ok, 1, "both allow it");
    env.kernel_ecn = 0;
    let m = handshake(Seg::syn4(), offer, true, &mut env);
    assert_eq!(m.ecn_ok, 0, "net.ipv4.tcp_ecn=0");
}

#[test]
fn advertised_mss_is_the_mtu_less_headers_under_the_clamp() {
    let offer = Offer {
        mss: Some(1460),
        ..Offer::default()
    };
    // (MTU, IPv4 clamp, IPv6 clamp): check_synack computes what each must advertise.
    for (mtu, c4, c6) in [
        (1400, 65495, 65475),
        (9000, 65495, 65475),
        (9000, 1200, 1300),
        (1500, 1460, 1440),
        (0, 1400, 1380),
        (576, 65495, 65475),
        (200, 1460, 1440),
    ] {
        for syn in [Seg::syn4(), Seg::syn6()] {
            let mut env = Mock::new().mode(Mode::Always);
            env.mtu = mtu;
            env.cfg.adv_mss4 = c4;
            env.cfg.adv_mss6 = c6;
            handshake(syn, offer, false, &mut env);
        }
    }
}

#[test]
fn syn_payload_is_cut_and_trailer_ignored() {
    let mut env = Mock::new().mode(Mode::Always);
    let mut syn = Seg::syn4();
    syn.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    syn.trailer = 3;
    let mut f = syn.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!()
    };
    let offer = Offer {
        mss: Some(1460),
        ws: Some(7),
        sack: true,
        ts: Some(0x0102_0304),
    };
    check_synack(&syn, &env, &KEY1, &offer, &f[..len], false);
    assert_eq!(len, 14 + 20 + 20 + 20);
}

#[test]
fn bare_syn_without_room_gets_no_mss() {
    for v6 in [false, true] {
        let mut syn = if v6 { Seg::syn6() } else { Seg::syn4() };
        syn.options = vec![];
        let mut env = Mock::new().mode(Mode::Always);
        let mut f = syn.frame();
        let old = f.len();
        let Verdict::Tx { len } = run(&mut f, &mut env) else {
            panic!()
        };
        assert_eq!(len, old);
        let r = read_reply(&f[..len]);
        assert!(r.options.is_empty());
        // With Ethernet minimum-size padding there is room, and MSS is sent.
        syn.trailer = 6;
        let mut f = syn.frame();
        let Verdict::Tx { len } = run(&mut f, &mut env) else {
            panic!()
        };
        let r = read_reply(&f[..len]);
        let adv = if v6 { 1380u16 } else { 1400 };
        assert_eq!(r.options, [&[2u8, 4][..], &adv.to_be_bytes()].concat());
    }
}

#[test]
fn previous_key_slot_still_validates() {
    let mut env = Mock::new().mode(Mode::Always);
    let syn = Seg::syn6();
    let mut f = syn.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!()
    };
    let r = read_reply(&f[..len]);
    // Rotation: the slot we minted with becomes the previous one.
    env.state.active_key = 0;
    let tsv = u32::from_be_bytes(r.options[8..12].try_into().unwrap());
    let mut af = ack_for(&syn, &r, Some((5, tsv))).frame();
    let (Verdict::HandOff, Some(&(_, m))) = (run(&mut af, &mut env), env.handoffs.last()) else {
        panic!("{:?}", env.reasons())
    };
    assert_eq!(
        m.rcv_wscale, KEY1.wscale,
        "wscale of the slot that minted it"
    );
    // ... until that slot is invalidated.
    env.keys[1].as_mut().unwrap().valid = 0;
    let mut af = ack_for(&syn, &r, Some((5, tsv))).frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Drop);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
}

#[test]
fn forged_acks_are_dropped() {
    let syn = Seg::syn4();
    let mut env = Mock::new().mode(Mode::Always);
    let mut f = syn.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!()
    };
    let r = read_reply(&f[..len]);
    let tsv = u32::from_be_bytes(r.options[8..12].try_into().unwrap());
    let good = ack_for(&syn, &r, Some((5, tsv)));
    let mut forged = Vec::new();
    for bit in 0..32 {
        let mut a = good.clone();
        a.ack ^= 1 << bit;
        forged.push(a);
        let mut a = good.clone();
        a.seq ^= 1 << bit;
        forged.push(a);
        let mut a = good.clone();
        a.options = ack_for(&syn, &r, Some((5, tsv ^ (1 << bit)))).options;
        forged.push(a);
    }
    for bit in 0..16 {
        let mut a = good.clone();
        a.sport ^= 1 << bit;
        forged.push(a);
    }
    for bit in 0..32 {
        let mut a = good.clone();
        a.src[bit / 8] ^= 1 << (bit % 8);
        forged.push(a);
    }
    for a in forged {
        let mut af = a.frame();
        assert_eq!(run(&mut af, &mut env), Verdict::Drop, "{a:?}");
        assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
    }
    let mut af = good.frame();
    assert!(matches!(run(&mut af, &mut env), Verdict::HandOff));
}

#[test]
fn established_flows_pass_without_cookie_check() {
    let mut env = Mock::new().mode(Mode::Always);
    env.sock = SockState::Other;
    for flags in [ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN | ACK] {
        let mut s = Seg::syn4();
        s.flags = flags;
        s.ack = 12345;
        s.options = vec![];
        let mut f = s.frame();
        assert_eq!(run(&mut f, &mut env), Verdict::Pass);
        assert_eq!(env.counts.last(), Some(&Counter::EstablishedPass));
    }
}

/// Issue 7: an engaged SYN is answered only when a plain-TCP listener alone holds the
/// port; the lookup comes after every cheaper check, so traffic those settle never pays
/// for it.
#[test]
fn syn_is_left_to_the_kernel_unless_a_plain_listener_alone_holds_the_port() {
    for sock in ALL_SOCK_STATES {
        for v6 in [false, true] {
            let s = if v6 { Seg::syn6() } else { Seg::syn4() };
            let mut env = Mock::new().mode(Mode::Always);
            env.sock = sock;
            let mut f = s.frame();
            let v = run(&mut f, &mut env);
            assert_eq!(env.lookups, 1, "{sock:?}");
            if sock == SockState::Listener {
                assert!(matches!(v, Verdict::Tx { .. }), "{sock:?}: {v:?}");
                continue;
            }
            assert_eq!(v, Verdict::Pass, "{sock:?}");
            assert_eq!(f, s.frame(), "{sock:?}: frame rewritten");
            assert_eq!(
                env.reasons(),
                vec![Counter::SynSeen, syn_pass_reason(sock)],
                "{sock:?}"
            );
        }
    }
    // Not engaged, rate-limited, over the SYN+ACK cap, or without a key: no lookup.
    let mut unengaged = Mock::new().mode(Mode::Auto);
    let mut limited = Mock::new().mode(Mode::Always);
    limited.cfg.src_syn_rate = 1;
    limited.src_ok = false;
    let mut capped = Mock::new().mode(Mode::Always);
    capped.cfg.synack_rate_per_cpu = 1;
    capped.budget_ok = false;
    let mut keyless = Mock::new().mode(Mode::Always);
    keyless.keys = [None, None];
    for env in [&mut unengaged, &mut limited, &mut capped, &mut keyless] {
        let mut f = Seg::syn4().frame();
        let _ = run(&mut f, env);
        assert_eq!(env.lookups, 0, "{:?}", env.reasons());
    }
}

/// ACK, RST and SYN+ACK segments of a flow whose port nothing here listens on (DNAT,
/// forwarding), or whose listener is MPTCP, are the kernel's, even while engaged.
#[test]
fn segments_without_a_plain_listener_pass() {
    for sock in [SockState::None, SockState::MptcpListener] {
        for flags in [ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN | ACK] {
            let mut s = Seg::syn4();
            s.flags = flags;
            s.ack = 12345;
            s.options = vec![];
            let mut env = Mock::new().mode(Mode::Always);
            env.sock = sock;
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{sock:?} {flags:#x}");
            assert_eq!(env.reasons(), vec![ack_pass_reason(sock)]);
        }
    }
}

/// Issue 7: a SYN to an address the host does not own, or to a MAC other than the
/// interface's own, is not ours to answer; nor, with a wildcard listener, are that flow's
/// later segments ours to drop.
#[test]
fn frames_not_addressed_to_us_pass() {
    let cases = [
        (
            "foreign MAC",
            Some([2, 0, 0, 0, 0, 9]),
            true,
            Counter::NotOurMac,
        ),
        ("no MAC entry yet", None, true, Counter::NotOurMac),
        ("not local", Some(SERVER_MAC), false, Counter::NotLocal),
    ];
    for (what, mac, local, why) in cases {
        for flags in [SYN, ACK, ACK | PSH, RST, SYN | ACK] {
            let mut s = Seg::syn4();
            s.flags = flags;
            let mut env = Mock::new().mode(Mode::Always);
            env.mac = mac;
            env.local = local;
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{what} {flags:#x}");
            assert_eq!(f, s.frame(), "{what}: frame rewritten");
            assert_eq!(env.counts.last(), Some(&why), "{what} {flags:#x}");
            if flags == SYN {
                assert_eq!(env.lookups, 0, "{what}: a socket lookup for a foreign SYN");
            }
        }
    }
    // A group address (broadcast, multicast) is never the interface's own, whatever the map
    // says.
    for group in [
        [0xff; 6],
        [0x01, 0x00, 0x5e, 0, 0, 1],
        [0x33, 0x33, 0, 0, 0, 1],
    ] {
        let mut env = Mock::new().mode(Mode::Always);
        env.mac = Some(group);
        let mut f = Seg::syn4().frame();
        f[..6].copy_from_slice(&group);
        assert_eq!(run(&mut f, &mut env), Verdict::Pass);
        assert_eq!(env.counts.last(), Some(&Counter::NotOurMac));
    }
}

#[test]
fn auto_mode_follows_engagement() {
    let mut env = Mock::new().mode(Mode::Auto);
    let mut f = Seg::syn4().frame();
    let orig = f.clone();
    assert_eq!(run(&mut f, &mut env), Verdict::Pass);
    assert_eq!(f, orig);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynPassed]);
    let mut a = Seg::syn4();
    a.flags = ACK;
    a.ack = 777;
    a.options = vec![];
    let mut af = a.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Pass);
    assert_eq!(env.counts.last(), Some(&Counter::AckPassedUnengaged));

    env.state.engaged = 1;
    let mut f = Seg::syn4().frame();
    assert!(matches!(run(&mut f, &mut env), Verdict::Tx { .. }));
    let mut af = a.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Drop);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
}

#[test]
fn no_valid_key_fails_open() {
    let mut env = Mock::new().mode(Mode::Always);
    env.keys[1] = None;
    let mut f = Seg::syn4().frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Pass);
    assert_eq!(env.counts.last(), Some(&Counter::SynPassed));
    env.keys[1] = Some(KeySlot { valid: 0, ..KEY1 });
    let mut f = Seg::syn4().frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Pass);
    assert_eq!(env.counts.last(), Some(&Counter::SynPassed));
}

#[test]
fn budgets() {
    let mut env = Mock::new().mode(Mode::Always);
    env.cfg.src_syn_rate = 10;
    env.src_ok = false;
    let mut f = Seg::syn4().frame();
    let orig = f.clone();
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    assert_eq!(f, orig);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::RateLimited]);
    let mut env = Mock::new().mode(Mode::Always);
    env.cfg.synack_rate_per_cpu = 10;
    env.budget_ok = false;
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynackCapHit]);
}

#[test]
fn unconfigured_limits_are_not_consulted() {
    // With no rate configured the buckets (and the clock) are skipped: a bucket that would
    // refuse makes no difference.
    let mut env = Mock::new().mode(Mode::Always);
    env.cfg.src_syn_rate = 0;
    env.cfg.synack_rate_per_cpu = 0;
    env.src_ok = false;
    env.budget_ok = false;
    let mut f = Seg::syn4().frame();
    assert!(matches!(run(&mut f, &mut env), Verdict::Tx { .. }));
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::CookieSent]);
}

#[test]
fn lists() {
    let mut env = Mock::new().mode(Mode::Always);
    env.list = ListVerdict::Deny;
    let mut f = Seg::syn6().frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::Deny]);
    // Allow bypasses everything, invalid flags included.
    let mut env = Mock::new().mode(Mode::Always);
    env.list = ListVerdict::Allow;
    let mut s = Seg::syn4();
    s.flags = SYN | FIN;
    let mut f = s.frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::Allow]);
}

#[test]
fn not_ours_passes_uncounted() {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let mut s = Seg::syn4();
    s.dport = 8080;
    cases.push(s.frame());
    let mut s = Seg::syn6();
    s.dport = 22;
    cases.push(s.frame());
    // UDP to port 80.
    let mut f = Seg::syn4().frame();
    f[14 + 9] = 17;
    cases.push(f);
    // IPv6, UDP behind a Destination Options header.
    let mut s = Seg::syn6();
    s.ext_headers = vec![(60, dest_opts(0))];
    let mut f = s.frame();
    f[14 + 40] = 17;
    cases.push(f);
    // IPv6 non-first fragment, and an IPv6 packet with no next header.
    let mut s = Seg::syn6();
    s.ext_headers = vec![(44, frag6(0x10, true))];
    cases.push(s.frame());
    let mut f = Seg::syn6().frame();
    f[14 + 6] = 59;
    cases.push(f);
    // ARP, and a runt.
    let mut f = Seg::syn4().frame();
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    cases.push(f);
    cases.push(vec![0xff; 13]);
    // Non-first fragment: no port to look at.
    let mut s = Seg::syn4();
    s.frag = 0x0010;
    cases.push(s.frame());
    // IPv4 ihl below 5, version 5.
    let mut f = Seg::syn4().frame();
    f[14] = 0x44;
    cases.push(f);
    let mut f = Seg::syn4().frame();
    f[14] = 0x55;
    cases.push(f);
    for mut f in cases {
        let orig = f.clone();
        let mut env = Mock::new().mode(Mode::Always);
        assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{orig:x?}");
        assert_eq!(env.counts, vec![Counter::PacketsSeen]);
        assert_eq!(f, orig);
    }
}

/// An IPv6 Hop-by-Hop or Destination Options header of `(n + 1) * 8` bytes (PadN).
fn dest_opts(n: u8) -> Vec<u8> {
    let mut h = vec![0u8; (usize::from(n) + 1) * 8];
    h[1] = n;
    h[2] = 1; // PadN
    h[3] = h.len() as u8 - 4;
    h
}

/// An IPv6 Fragment header: offset in 8-byte units, M bit.
fn frag6(offset: u16, more: bool) -> Vec<u8> {
    let [a, b] = ((offset << 3) | u16::from(more)).to_be_bytes();
    vec![0, 0, a, b, 0xde, 0xad, 0xbe, 0xef]
}

/// An IPv6 Routing header (type 4, no segments) with `left` segments left.
fn routing6(left: u8) -> Vec<u8> {
    vec![0, 0, 4, left, 0, 0, 0, 0]
}

#[test]
fn first_fragment_dropped() {
    let first6 = |more| {
        let mut s = Seg::syn6();
        s.ext_headers = vec![(44, frag6(0, more))];
        s
    };
    let mut s4 = Seg::syn4();
    s4.frag = 0x2000; // MF, offset 0
    for s in [s4, first6(true)] {
        // Engaged: dropped, SYN or not.
        for flags in [SYN, ACK, ACK | PSH] {
            let mut s = s.clone();
            s.flags = flags;
            let mut env = Mock::new().mode(Mode::Always);
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{flags:#x}");
            assert_eq!(env.reasons(), vec![Counter::Fragment]);
        }
        // A flow of the kernel's own keeps its fragments.
        let mut env = Mock::new().mode(Mode::Always);
        env.sock = SockState::Other;
        let mut f = s.frame();
        assert_eq!(run(&mut f, &mut env), Verdict::Pass);
        assert_eq!(env.reasons(), vec![Counter::EstablishedPass]);
        // Not engaged: the kernel's, as without synguard.
        for mode in [Mode::Auto, Mode::Monitor] {
            let mut env = Mock::new().mode(mode);
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Pass);
            assert_eq!(env.reasons(), vec![Counter::FragmentPassed]);
        }
    }
    // An atomic IPv6 fragment (offset 0, M=0) is a whole packet: answered.
    let s = first6(false);
    let mut env = Mock::new().mode(Mode::Always);
    let mut f = s.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!("{:?}", env.reasons())
    };
    let r = read_reply(&f[..len]);
    assert_eq!(r.flags, SYN | ACK);
    assert_eq!(
        len,
        14 + 40 + 20 + r.options.len(),
        "no Fragment header echoed"
    );
}

/// SYNs behind IPv6 extension headers and VLAN stacks are answered like any other, with
/// a valid SYN+ACK that keeps the tags and drops the extension headers.
#[test]
fn extension_headers_and_vlan_stacks_are_answered() {
    let chains: Vec<Vec<(u8, Vec<u8>)>> = vec![
        vec![(0, dest_opts(0))],
        vec![(60, dest_opts(2))],
        vec![(43, routing6(0))],
        vec![(44, frag6(0, false))],
        vec![
            (0, dest_opts(0)),
            (60, dest_opts(1)),
            (43, routing6(0)),
            (44, frag6(0, false)),
        ],
        vec![(0, dest_opts(15))],
    ];
    // (outer tags, innermost 802.1Q tag)
    type Stack = (Vec<(u16, u16)>, Option<u16>);
    let stacks: Vec<Stack> = vec![
        (vec![], None),
        (vec![], Some(0)),
        (vec![(0x88a8, 0x0064)], Some(0x0007)),
        (vec![(0x8100, 0x0000)], Some(0x0000)),
        (vec![(0x8100, 0x0005)], None),
        (vec![(0x88a8, 0x0005)], None),
    ];
    for (outer, vlan) in &stacks {
        for chain in chains.iter().chain([&vec![]]) {
            for mut s in [Seg::syn4(), Seg::syn6()] {
                if !s.v6 && !chain.is_empty() {
                    continue;
                }
                s.outer_tags = outer.clone();
                s.vlan = *vlan;
                s.ext_headers = chain.clone();
                let mut env = Mock::new().mode(Mode::Always);
                let offer = Offer {
                    mss: Some(if s.v6 { 1440 } else { 1460 }),
                    sack: true,
                    ts: Some(0x0102_0304),
                    ws: Some(7),
                };
                let mut f = s.frame();
                let Verdict::Tx { len } = run(&mut f, &mut env) else {
                    panic!("{s:?}: {:?}", env.reasons())
                };
                let key = env.keys[1].unwrap();
                check_synack(&s, &env, &key, &offer, &f[..len], false);
                assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::CookieSent]);
                // And the handshake's ACK, with the same headers, validates.
                let r = read_reply(&f[..len]);
                let tsv = u32::from_be_bytes(r.options[8..12].try_into().unwrap());
                let mut af = ack_for(&s, &r, Some((1, tsv))).frame();
                assert!(
                    matches!(run(&mut af, &mut env), Verdict::HandOff),
                    "{s:?}: {:?}",
                    env.reasons()
                );
                assert_eq!(tc_flow(&af[..]), Some(client_flow(&s)));
            }
        }
    }
}

/// Behind extension headers, every filter applies: deny list, flags, forged ACKs, RSTs.
#[test]
fn extension_headers_do_not_bypass_the_filters() {
    let mut s = Seg::syn6();
    s.ext_headers = vec![(60, dest_opts(0)), (0, dest_opts(1))];
    let mut env = Mock::new().mode(Mode::Always);
    env.list = ListVerdict::Deny;
    assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::Deny]);
    let cases = [
        (SYN | FIN, Counter::FlagSynFin),
        (0, Counter::FlagNull),
        (ACK, Counter::CookieAckInvalid),
        (RST, Counter::NoSocketDrop),
    ];
    for (flags, c) in cases {
        let mut s = s.clone();
        s.flags = flags;
        s.ack = 0x4242_4242;
        let mut env = Mock::new().mode(Mode::Always);
        assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop, "{flags:#x}");
        assert_eq!(env.reasons(), vec![c]);
    }
    // A bad data offset behind the chain is as malformed as without it.
    let mut f = s.frame();
    f[14 + 40 + 24 + 12] = 0x40;
    let mut env = Mock::new().mode(Mode::Always);
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::Malformed]);
}

#[test]
fn routing_header_with_segments_left_is_for_a_later_hop() {
    let mut s = Seg::syn6();
    s.ext_headers = vec![(43, routing6(1))];
    for flags in [SYN, ACK, RST] {
        let mut s = s.clone();
        s.flags = flags;
        let mut env = Mock::new().mode(Mode::Always);
        let mut f = s.frame();
        let orig = f.clone();
        assert_eq!(run(&mut f, &mut env), Verdict::Pass);
        assert_eq!(env.reasons(), vec![Counter::Ipv6RoutingPass]);
        assert_eq!(f, orig);
    }
}

/// Frames whose port cannot be known: dropped while engaged, passed otherwise; to any
/// port, since the port is what cannot be known.
#[test]
fn uninspectable_frames_depend_on_engagement() {
    let mut cases = Vec::new();
    // A third VLAN tag.
    let mut s = Seg::syn4();
    s.outer_tags = vec![(0x88a8, 1), (0x8100, 2)];
    s.vlan = Some(3);
    cases.push(s.frame());
    // Five extension headers; 136 bytes of them.
    let mut s = Seg::syn6();
    s.ext_headers = vec![
        (0, dest_opts(0)),
        (60, dest_opts(0)),
        (43, routing6(0)),
        (44, frag6(0, false)),
        (60, dest_opts(0)),
    ];
    cases.push(s.frame());
    s.ext_headers = vec![(0, dest_opts(1)), (60, dest_opts(14))];
    cases.push(s.frame());
    // A header longer than the packet (a Hop-by-Hop length byte pointing past the end).
    let mut f = Seg::syn6().frame();
    f[14 + 6] = 0;
    cases.push(f);
    // To an unprotected port: the same, for it cannot be read.
    let mut s = Seg::syn4();
    s.outer_tags = vec![(0x8100, 0), (0x8100, 0)];
    s.vlan = Some(0);
    s.dport = 8080;
    cases.push(s.frame());
    for f in cases {
        {
            let mut env = Mock::new().mode(Mode::Always);
            let mut g = f.clone();
            assert_eq!(run(&mut g, &mut env), Verdict::Drop, "{f:x?}");
            assert_eq!(env.reasons(), vec![Counter::Uninspectable]);
            for mode in [Mode::Auto, Mode::Monitor] {
                let mut env = Mock::new().mode(mode);
                let mut g = f.clone();
                assert_eq!(run(&mut g, &mut env), Verdict::Pass);
                assert_eq!(env.reasons(), vec![Counter::UninspectablePassed]);
                assert_eq!(g, f);
            }
        }
    }
    let mut env = Mock::new().mode(Mode::Auto);
    env.state.engaged = 1;
    let mut s = Seg::syn4();
    s.outer_tags = vec![(0x88a8, 1), (0x8100, 2)];
    s.vlan = Some(3);
    assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop);
}

#[test]
fn ip_options_syn_answered_without_them() {
    let mut env = Mock::new().mode(Mode::Always);
    let mut s = Seg::syn4();
    s.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let mut f = s.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!("{:?}", env.reasons())
    };
    let r = read_reply(&f[..len]);
    assert_eq!(r.flags, SYN | ACK);
    assert_eq!(len, 14 + 20 + 20 + r.options.len(), "IHL 5");
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::CookieSent]);
    // Not engaged: the kernel's.
    let mut env = Mock::new().mode(Mode::Auto);
    assert_eq!(run(&mut s.frame(), &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynPassed]);

    let mut env = Mock::new().mode(Mode::Always);

    // The handshake's ACK may carry IP options: the cookie still validates.
    let syn = Seg::syn4();
    let mut f = syn.frame();
    let Verdict::Tx { len } = run(&mut f, &mut env) else {
        panic!()
    };
    let r = read_reply(&f[..len]);
    let tsv = u32::from_be_bytes(r.options[8..12].try_into().unwrap());
    let mut a = ack_for(&syn, &r, Some((1, tsv)));
    a.ip_options = vec![1, 1, 1, 1, 1, 1, 1, 0];
    let mut af = a.frame();
    assert!(
        matches!(run(&mut af, &mut env), Verdict::HandOff),
        "{:?}",
        env.reasons()
    );
}

/// Every SYN whose answer would reflect is dropped under `Reflection` while engaged, and
/// passed (to the kernel, which drops most of them) under the same counter while not.
#[test]
fn unreflectable_addresses() {
    let mut cases: Vec<(&str, Seg, bool)> = Vec::new();
    for (what, src) in [
        ("loopback", [127, 0, 0, 1]),
        ("multicast", [224, 0, 0, 5]),
        ("this network", [0, 0, 0, 0]),
        ("limited broadcast", [255, 255, 255, 255]),
    ] {
        let mut s = Seg::syn4();
        s.src[..4].copy_from_slice(&src);
        cases.push((what, s, false));
    }
    let mut land4 = Seg::syn4();
    land4.src = land4.dst;
    cases.push(("LAND v4", land4, false));
    let mut land6 = Seg::syn6();
    land6.src = land6.dst;
    cases.push(("LAND v6", land6, false));
    let mut mapped = Seg::syn6();
    mapped.src = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1];
    cases.push(("v4-mapped", mapped, false));
    let mut compat = Seg::syn6();
    compat.src = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1];
    cases.push(("v4-compatible", compat, false));
    let mut mc6 = Seg::syn6();
    mc6.src[0] = 0xff;
    cases.push(("v6 multicast source", mc6, false));
    let mut mcd6 = Seg::syn6();
    mcd6.dst[0] = 0xff;
    cases.push(("v6 multicast destination", mcd6, false));
    cases.push(("directed broadcast", Seg::syn4(), true));
    for (what, s, broadcast) in cases {
        let mut env = Mock::new().mode(Mode::Always);
        env.src_broadcast = broadcast;
        let mut f = s.frame();
        assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{what}");
        assert_eq!(
            env.reasons(),
            vec![Counter::SynSeen, Counter::Reflection],
            "{what}"
        );
        assert_eq!(env.lookups, 0, "{what}: no socket lookup");

        let mut env = Mock::new().mode(Mode::Auto);
        env.src_broadcast = broadcast;
        let mut f = s.frame();
        let want = if broadcast {
            // Unengaged, the broadcast lookup is skipped: the kernel drops these.
            Counter::SynPassed
        } else {
            Counter::Reflection
        };
        assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{what} unengaged");
        assert_eq!(env.reasons(), vec![Counter::SynSeen, want], "{what}");
    }
}

#[test]
fn malformed_lengths_and_options() {
    let l3 = 14;
    let mut cases: Vec<(&str, Vec<u8>, Vec<Counter>)> = Vec::new();
    let mal = vec![Counter::Malformed];

    let mut f = Seg::syn4().frame();
    let tl = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) + 1;
    f[l3 + 2..l3 + 4].copy_from_slice(&tl.to_be_bytes());
    cases.push(("tot_len past frame", f, mal.clone()));

    let mut f = Seg::syn4().frame();
    f[l3 + 2..l3 + 4].copy_from_slice(&39u16.to_be_bytes());
    cases.push(("tot_len below headers", f, mal.clone()));

    let mut f = Seg::syn4().frame();
    f[l3 + 20 + 12] = 4 << 4;
    cases.push(("doff 4", f, mal.clone()));

    let mut s = Seg::syn4();
    s.options = vec![];
    let mut f = s.frame();
    f[l3 + 20 + 12] = 6 << 4;
    cases.push(("doff past payload", f, mal.clone()));

    let mut f = Seg::syn4().frame();
    f.truncate(l3 + 20 + 10);
    cases.push(("TCP header cut", f, mal.clone()));

    let mut f = Seg::syn6().frame();
    f.truncate(f.len() - 1);
    cases.push(("IPv6 payload cut", f, mal.clone()));

    for (what, mut f, want) in cases {
        let mut env = Mock::new().mode(Mode::Always);
        assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{what}");
        assert_eq!(env.reasons(), want, "{what}");
    }
}

/// Option layouts Linux's parser tolerates: a SYN carrying one is answered, while
/// engaged, with what was parsed before the walk stopped (and passed while not), never
/// dropped as malformed.
#[test]
fn syn_with_tolerated_option_layouts_is_answered_with_what_was_parsed() {
    // (what, options, SACK-permitted and timestamps parsed)
    let cases: [(&str, Vec<u8>, bool, bool); 5] = [
        ("MSS length 3", vec![2, 3, 5, 1], false, false),
        ("kind without length byte", vec![4, 2, 1, 3], true, false),
        (
            "length below 2",
            vec![4, 2, 30, 1, 8, 10, 0, 0],
            true,
            false,
        ),
        ("length 0", vec![30, 0, 4, 2], false, false),
        (
            "option past the area",
            vec![4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 1, 1, 30, 9],
            true,
            true,
        ),
    ];
    for (what, options, sack, ts) in cases {
        for v6 in [false, true] {
            let mut s = if v6 { Seg::syn6() } else { Seg::syn4() };
            s.options = options.clone();
            let mut env = Mock::new().mode(Mode::Always);
            let mut f = s.frame();
            let Verdict::Tx { len } = run(&mut f, &mut env) else {
                panic!("{what} v6 {v6}: {:?}", env.reasons());
            };
            assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::CookieSent]);
            let r = read_reply(&f[..len]);
            let back = tcp_options::parse(&r.options[..], 0, r.options.len()).unwrap();
            assert_eq!((back.sack_ok, back.ts), (sack, ts), "{what} v6 {v6}");
            assert_eq!(back.wscale, tcp_options::WSCALE_ABSENT, "{what}");
            if ts {
                assert_eq!(back.tsecr, 7, "{what}: our TSecr echoes the parsed TSval");
            }
            // Not engaged: the kernel's, as for any SYN.
            let mut env = Mock::new().mode(Mode::Auto);
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{what}");
            assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynPassed]);
        }
    }
}

const ALL_SOCK_STATES: [SockState; 4] = [
    SockState::None,
    SockState::Listener,
    SockState::MptcpListener,
    SockState::Other,
];

/// Why an engaged SYN whose lookup found `sock` (not a plain listener alone) is passed.
fn syn_pass_reason(sock: SockState) -> Counter {
    match sock {
        SockState::None => Counter::NoListener,
        SockState::MptcpListener => Counter::MptcpListener,
        SockState::Other => Counter::ExistingSocket,
        SockState::Listener => unreachable!("a plain listener gets a cookie"),
    }
}

/// Why an ACK, RST or SYN+ACK whose lookup found `sock` (not a plain listener alone) is
/// passed.
fn ack_pass_reason(sock: SockState) -> Counter {
    match sock {
        SockState::None => Counter::NoListener,
        SockState::MptcpListener => Counter::MptcpListener,
        SockState::Other => Counter::EstablishedPass,
        SockState::Listener => unreachable!("a plain listener's flows are checked"),
    }
}

/// Every flag byte gets the table's verdict and counter through the whole pipeline.
#[test]
fn all_256_flag_combinations() {
    for sock in ALL_SOCK_STATES {
        for v6 in [false, true] {
            for flags in 0..=255u8 {
                let mut s = if v6 { Seg::syn6() } else { Seg::syn4() };
                s.flags = flags;
                s.ack = 0x0bad_cafe;
                let mut env = Mock::new().mode(Mode::Always);
                env.sock = sock;
                let mut f = s.frame();
                let v = run(&mut f, &mut env);
                let ctx = format!("flags {flags:#04x} {sock:?} v6 {v6}");
                let (want_v, want_c) = match crate::flags::classify(flags) {
                    FlagVerdict::Invalid(r)
                        if !r.own_socket_acts() || sock == SockState::Listener =>
                    {
                        (Some(Verdict::Drop), vec![r.counter()])
                    }
                    FlagVerdict::Syn if sock == SockState::Listener => {
                        (None, vec![Counter::SynSeen, Counter::CookieSent])
                    }
                    FlagVerdict::Syn => (
                        Some(Verdict::Pass),
                        vec![Counter::SynSeen, syn_pass_reason(sock)],
                    ),
                    _ if sock != SockState::Listener => {
                        (Some(Verdict::Pass), vec![ack_pass_reason(sock)])
                    }
                    FlagVerdict::Ack => (Some(Verdict::Drop), vec![Counter::CookieAckInvalid]),
                    FlagVerdict::Rst | FlagVerdict::SynAck => {
                        (Some(Verdict::Drop), vec![Counter::NoSocketDrop])
                    }
                    FlagVerdict::Invalid(_) => unreachable!("{ctx}: covered above"),
                };
                match want_v {
                    Some(w) => assert_eq!(v, w, "{ctx}"),
                    None => assert!(matches!(v, Verdict::Tx { .. }), "{ctx}: {v:?}"),
                }
                assert_eq!(env.reasons(), want_c, "{ctx}");
                // Independent of the table: the flag bits themselves.
                let low = flags & 0x3f;
                if sock == SockState::Listener && low == SYN {
                    assert!(matches!(v, Verdict::Tx { .. }), "{ctx}");
                }
                // Linux discards these whatever socket the flow has.
                if (flags & (SYN | FIN) == SYN | FIN && flags & RST == 0)
                    || flags & (ACK | RST | SYN) == 0
                {
                    assert_eq!(v, Verdict::Drop, "{ctx}");
                }
                // Linux processes any RST for a socket of the flow's own.
                if flags & RST != 0 && sock == SockState::Other {
                    assert_eq!(v, Verdict::Pass, "{ctx}");
                    assert_eq!(env.reasons(), vec![Counter::EstablishedPass], "{ctx}");
                }
                // Monitor: the same counters, never a drop or a reply.
                let mut env = Mock::new().mode(Mode::Monitor);
                env.sock = sock;
                let mut f = s.frame();
                let v = run(&mut f, &mut env);
                assert_eq!(v, Verdict::Pass, "{ctx} monitor");
                assert_eq!(f, s.frame());
                let want_m: Vec<_> = match crate::flags::classify(flags) {
                    FlagVerdict::Syn => vec![Counter::SynSeen, Counter::SynPassed],
                    FlagVerdict::Ack if sock == SockState::Listener => {
                        vec![Counter::AckPassedUnengaged]
                    }
                    _ => want_c,
                };
                assert_eq!(env.reasons(), want_m, "{ctx} monitor");
            }
        }
    }
}

#[test]
fn tc_flow_reads_client_tuple() {
    for s in variants() {
        let f = s.frame();
        assert_eq!(tc_flow(&f[..]), Some(client_flow(&s)));
    }
    let mut s = Seg::syn4();
    s.flags = ACK;
    // TC usually sees the frame with the tag already stripped: both parse the same.
    s.vlan = None;
    let untagged = tc_flow(&s.frame()[..]);
    s.vlan = Some(5);
    assert_eq!(tc_flow(&s.frame()[..]), untagged);
    assert_eq!(tc_flow(&[0u8; 20][..]), None);
}

fn arb_env() -> impl Strategy<Value = Mock> {
    (
        0u32..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..4,
        0usize..3,
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(
            |(mode, engaged, src_ok, budget_ok, sock, list, active, ws)| {
                let mut m = Mock::new();
                m.cfg.mode = mode;
                m.state = State {
                    active_key: active,
                    engaged: engaged as u32,
                };
                m.src_ok = src_ok;
                m.budget_ok = budget_ok;
                m.sock = ALL_SOCK_STATES[sock];
                m.list = [ListVerdict::None, ListVerdict::None, ListVerdict::Deny][list];
                m.keys[0].as_mut().unwrap().wscale = ws;
                m
            },
        )
}

/// A real SYN/ACK frame with some bytes overwritten and maybe cut short.
/// `variants()` and the shapes the dissector steps over: VLAN stacks, IPv4 options, IPv6
/// extension-header chains; the bases that `mutated_frame` damages.
fn damage_bases() -> Vec<Seg> {
    let mut v = variants();
    let mut s = Seg::syn4();
    s.outer_tags = vec![(0x88a8, 5)];
    s.vlan = Some(0);
    s.ip_options = vec![1, 1, 1, 0];
    v.push(s);
    let mut s = Seg::syn6();
    s.outer_tags = vec![(0x8100, 0)];
    s.vlan = Some(9);
    s.ext_headers = vec![(0, dest_opts(0)), (43, routing6(0)), (44, frag6(0, false))];
    v.push(s);
    let mut s = Seg::syn6();
    s.ext_headers = vec![(60, dest_opts(3))];
    v.push(s);
    v
}

fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(damage_bases()),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..44),
        prop::collection::vec((0usize..120, any::<u8>()), 0..6),
        0usize..140,
    )
        .prop_map(|(mut s, flags, opts, edits, cut)| {
            s.flags = if flags % 3 == 0 { SYN } else { flags };
            if opts.len() % 5 != 0 {
                s.options = opts;
                s.options.truncate(40);
            }
            let mut f = s.frame();
            for (at, b) in edits {
                if let Some(x) = f.get_mut(at) {
                    *x = b;
                }
            }
            if cut < f.len() && cut % 2 == 0 {
                f.truncate(cut);
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn never_panics_on_arbitrary_bytes(mut f in prop::collection::vec(any::<u8>(), 0..200), mut env in arb_env()) {
        // Make some of them at least Ethernet + IP + TCP to a protected port.
        if f.len() > 40 && f[0] & 1 == 0 {
            let et: [u8; 2] = if f[1] & 1 == 0 { [0x08, 0x00] } else { [0x86, 0xdd] };
            f[12..14].copy_from_slice(&et);
        }
        let _ = run(&mut f, &mut env);
    }

    /// Whatever the damage, a `Tx` is a well-formed SYN+ACK (checksums, lengths) no
    /// longer than the frame; monitor mode leaves frames alone and never drops.
    #[test]
    fn replies_are_always_well_formed(mut f in mutated_frame(), mut env in arb_env()) {
        let orig = f.clone();
        let v = run(&mut f, &mut env);
        match v {
            Verdict::Tx { len } => {
                prop_assert!(len <= orig.len());
                let r = read_reply(&f[..len]);
                prop_assert_eq!(r.flags & (SYN | ACK), SYN | ACK);
                prop_assert!(env.counts.contains(&Counter::CookieSent));
            }
            _ => prop_assert_eq!(&f, &orig, "only Tx rewrites the frame"),
        }
        if Mode::from_u32(env.cfg.mode) != Some(Mode::Always) && Mode::from_u32(env.cfg.mode) != Some(Mode::Auto) {
            prop_assert_eq!(v, Verdict::Pass);
        }
        prop_assert_eq!(env.counts.first(), Some(&Counter::PacketsSeen));
    }

    /// Random ACKs to a listener never validate (24+32 MAC bits), with or without TS.
    #[test]
    fn random_acks_never_validate(seq: u32, ack: u32, tsecr: u32, with_ts: bool, v6: bool) {
        let mut s = if v6 { Seg::syn6() } else { Seg::syn4() };
        s.flags = ACK;
        s.seq = seq;
        s.ack = ack;
        s.options = if with_ts { [&[1u8, 1, 8, 10, 0, 0, 0, 1][..], &tsecr.to_be_bytes()].concat() } else { vec![] };
        let mut env = Mock::new().mode(Mode::Always);
        // Both slots minted with: the forger has two keys to hit.
        env.minted = [minted_mark(KEY0.epoch), minted_mark(KEY1.epoch)];
        let mut f = s.frame();
        prop_assert_eq!(run(&mut f, &mut env), Verdict::Drop);
        prop_assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
    }
}

#[test]
fn urg_psh_syn_and_friends_are_not_answered() {
    // Sanity of the pipeline against the table for the packets scanners send.
    for flags in [
        FIN,
        FIN | PSH | URG,
        0,
        PSH,
        URG,
        SYN | FIN,
        SYN | FIN | PSH | URG,
    ] {
        let mut s = Seg::syn4();
        s.flags = flags;
        let mut env = Mock::new().mode(Mode::Always);
        let mut f = s.frame();
        assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{flags:#x}");
    }
    // Linux's listener takes a SYN whatever PSH and URG say, so it is answered.
    for flags in [SYN | URG, SYN | PSH, SYN | PSH | URG] {
        let mut s = Seg::syn4();
        s.flags = flags;
        let mut env = Mock::new().mode(Mode::Always);
        let mut f = s.frame();
        assert!(
            matches!(run(&mut f, &mut env), Verdict::Tx { .. }),
            "{flags:#x}"
        );
    }
}

/// Linux processes an RST-bearing segment as an RST for a socket of the flow's own
/// (`tcp_validate_incoming` checks RST first), whatever PSH, URG, SYN or FIN say: with a
/// socket it passes; to a listener alone it is dropped, which is what the listener does.
#[test]
fn rst_bearing_segments_reach_their_socket() {
    let cases = [
        (RST | PSH, Counter::NoSocketDrop),
        (RST | URG, Counter::NoSocketDrop),
        (RST | PSH | URG, Counter::NoSocketDrop),
        (RST | PSH | ACK, Counter::NoSocketDrop),
        (FIN | RST, Counter::FlagFinRst),
        (FIN | RST | ACK, Counter::FlagFinRst),
        (SYN | RST, Counter::FlagSynRst),
        (SYN | FIN | RST, Counter::FlagSynRst),
        (0x3f, Counter::FlagAll),
    ];
    for (flags, no_socket) in cases {
        for v6 in [false, true] {
            let mut s = if v6 { Seg::syn6() } else { Seg::syn4() };
            s.flags = flags;
            let mut env = Mock::new().mode(Mode::Always);
            env.sock = SockState::Other;
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{flags:#x}");
            assert_eq!(env.reasons(), vec![Counter::EstablishedPass], "{flags:#x}");
            let mut env = Mock::new().mode(Mode::Always);
            env.sock = SockState::Listener;
            let mut f = s.frame();
            assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{flags:#x}");
            assert_eq!(env.reasons(), vec![no_socket], "{flags:#x}");
        }
    }
}

/// A SYN answered in `env`, and the ACK a client would send for it (with timestamps).
fn minted_ack(env: &mut Mock, syn: &Seg) -> Seg {
    let mut f = syn.frame();
    let Verdict::Tx { len } = run(&mut f, env) else {
        panic!("SYN not answered: {:?}", env.reasons())
    };
    let r = read_reply(&f[..len]);
    let i = r.options.windows(2).position(|w| w == [8, 10]).unwrap();
    let tsv = u32::from_be_bytes(r.options[i + 2..i + 6].try_into().unwrap());
    ack_for(syn, &r, Some((5, tsv)))
}

#[test]
fn cookies_of_a_slot_never_minted_with_are_refused() {
    let syn = Seg::syn4();
    let ack = minted_ack(&mut Mock::new().mode(Mode::Always), &syn);
    // The same keys, but this instance never minted: a fresh daemon.
    let mut env = Mock::new().mode(Mode::Always);
    let mut af = ack.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::CookieAckInvalid]);
    // An auto-mode server that never engaged passes it to the kernel, as any ACK.
    let mut env = Mock::new().mode(Mode::Auto);
    let mut af = ack.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::AckPassedUnengaged]);
    // A mark for another epoch (the slot's key was replaced since) is no better.
    let mut env = Mock::new().mode(Mode::Always);
    env.minted = [minted_mark(KEY0.epoch), minted_mark(KEY1.epoch - 2)];
    let mut af = ack.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Drop);
    // Once minted with, the slot accepts it.
    env.minted[1] = minted_mark(KEY1.epoch);
    let mut af = ack.frame();
    assert!(matches!(run(&mut af, &mut env), Verdict::HandOff));
}

#[test]
fn minted_mark_is_written_once_per_key() {
    let mut env = Mock::new().mode(Mode::Always);
    for sport in 1000..1010 {
        let mut syn = Seg::syn4();
        syn.sport = sport;
        minted_ack(&mut env, &syn);
    }
    assert_eq!(env.minted, [0, minted_mark(KEY1.epoch)]);
    assert_eq!(env.minted_writes, 1, "one write, then reads");
    // Rotation: the other slot mints and is marked; the previous one keeps its mark.
    env.state.active_key = 0;
    minted_ack(&mut env, &Seg::syn6());
    assert_eq!(
        env.minted,
        [minted_mark(KEY0.epoch), minted_mark(KEY1.epoch)]
    );
    assert_eq!(env.minted_writes, 2);
    // An epoch-0 key does not match a never-written slot.
    assert_ne!(minted_mark(0), 0);
}

#[test]
fn monitor_mode_counts_valid_cookies_but_never_hands_off() {
    let syn = Seg::syn6();
    let mut env = Mock::new().mode(Mode::Always);
    let ack = minted_ack(&mut env, &syn);
    env.cfg.mode = Mode::Monitor as u32;
    let mut af = ack.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Pass);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckValid));
    assert!(env.handoffs.is_empty(), "monitor mode stored a hand-off");
}

#[test]
fn a_hand_off_the_map_refuses_passes_and_counts_reqsk_failed() {
    let syn = Seg::syn4();
    let mut env = Mock::new().mode(Mode::Always);
    let ack = minted_ack(&mut env, &syn);
    env.handoff_full = true;
    let mut af = ack.frame();
    // Passed on, as any ACK without an entry: TC counts it, the kernel resets it.
    assert_eq!(run(&mut af, &mut env), Verdict::Pass);
    assert_eq!(env.counts.last(), Some(&Counter::ReqskFailed));
    env.handoff_full = false;
    let mut af = ack.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::HandOff);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckValid));
    assert_eq!(env.handoffs.len(), 1);
}

#[test]
fn forged_acks_never_reach_the_options_walk() {
    let syn = Seg::syn4();
    let mut env = Mock::new().mode(Mode::Always);
    let good = minted_ack(&mut env, &syn);
    // An option length running past the area: behind a wrong cookie the options are
    // never read, so the ACK counts as a bad cookie ...
    let lying = vec![8, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut forged = good.clone();
    forged.ack ^= 1 << 20;
    forged.options = lying.clone();
    let mut af = forged.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Drop);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
    // ... and behind the right ISN the walk stops there, as Linux's does, with no
    // timestamps: the ISN alone validates it, as a cookie ACK without timestamps.
    let mut a = good.clone();
    a.options = lying;
    let mut af = a.frame();
    assert!(matches!(run(&mut af, &mut env), Verdict::HandOff));
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckValid));
    // The same overrun after the timestamps: validated with what was parsed.
    let mut a = good.clone();
    a.options.extend([1, 1, 30, 9]);
    let mut af = a.frame();
    assert!(matches!(run(&mut af, &mut env), Verdict::HandOff));
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckValid));
    // The right ISN with a wrong TSecr fails after the walk.
    let mut a = good.clone();
    a.options[11] ^= 0x10;
    let mut af = a.frame();
    assert_eq!(run(&mut af, &mut env), Verdict::Drop);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
}

#[test]
fn ecn_needs_timestamps() {
    let mut env = Mock::new().mode(Mode::Always);
    let offer = Offer {
        mss: Some(1460),
        ws: Some(8),
        sack: true,
        ts: None,
    };
    let m = handshake(Seg::syn4(), offer, true, &mut env);
    assert_eq!((m.ecn_ok, m.snd_wscale, m.sack_ok), (0, 8, 1));
    let offer = Offer {
        ts: Some(7),
        ..offer
    };
    let m = handshake(Seg::syn4(), offer, true, &mut env);
    assert_eq!(m.ecn_ok, 1);
    // Our TSval carried it: its low bit.
    assert_eq!(m.rcv_tsecr & 1, 1);
}

/// Engaged (`always`, or `auto` engaged), an ACK to a listener without synguard's cookie
/// but with the kernel's own passes: one the kernel minted before an `auto` engage, or for
/// a SYN XDP left to it (signed, over TIME_WAIT, before the first key). Before, only `auto`
/// asked, and `always` dropped the ACK of every such handshake the kernel answered with a
/// cookie.
#[test]
fn kernel_cookies_pass_while_engaged_to_a_listener() {
    let mut ack = Seg::syn6();
    ack.flags = ACK;
    ack.ack = 0x1234_5678;
    ack.options = vec![];
    ack.vlan = Some(7);
    let run_ack = |env: &mut Mock| {
        let mut f = ack.frame();
        run(&mut f, env)
    };
    // Engaged auto mode, a listener, a kernel cookie: passed, with the header offsets of
    // the frame (VLAN tag, then IPv6).
    let mut env = Mock::new().mode(Mode::Auto);
    env.state.engaged = 1;
    env.kernel_cookie = Some(true);
    assert_eq!(run_ack(&mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::KernelCookiePass]);
    assert_eq!(env.kernel_checks, vec![(true, 18, 58)]);
    // Not a kernel cookie either: dropped.
    env.kernel_cookie = Some(false);
    assert_eq!(run_ack(&mut env), Verdict::Drop);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
    // `always` is engaged too.
    let mut env = Mock::new().mode(Mode::Always);
    env.kernel_cookie = Some(true);
    assert_eq!(run_ack(&mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::KernelCookiePass]);
    // No listener, or not engaged: the kernel is not asked.
    for (mode, engaged, sock) in [
        (Mode::Auto, 1, SockState::None),
        (Mode::Always, 1, SockState::None),
        (Mode::Auto, 0, SockState::Listener),
        (Mode::Monitor, 1, SockState::Listener),
    ] {
        let mut env = Mock::new().mode(mode);
        env.state.engaged = engaged;
        env.sock = sock;
        env.kernel_cookie = Some(true);
        run_ack(&mut env);
        assert!(env.kernel_checks.is_empty(), "{mode:?} {engaged} {sock:?}");
        assert!(!env.counts.contains(&Counter::KernelCookiePass));
    }
    // A cookie of ours is ours: the kernel is not asked.
    let mut env = Mock::new().mode(Mode::Auto);
    env.state.engaged = 1;
    env.kernel_cookie = Some(true);
    let good = minted_ack(&mut env, &Seg::syn4());
    let mut af = good.frame();
    assert!(matches!(run(&mut af, &mut env), Verdict::HandOff));
    assert!(env.kernel_checks.is_empty());
}

impl Mock {
    fn handoff(mut self, h: Handoff) -> Mock {
        self.cfg.handoff = h as u8;
        self
    }
}

/// Filter handoff: an engaged SYN that passes every filter goes to the kernel untouched
/// (no SYN+ACK, no key, no socket lookup), and an ACK to a listener goes to the kernel
/// unchecked, where the kfunc handoff would answer the one and drop the other.
#[test]
fn filter_handoff_answers_nothing_and_validates_nothing() {
    for v6 in [false, true] {
        let syn = if v6 { Seg::syn6() } else { Seg::syn4() };
        let mut env = Mock::new().mode(Mode::Always).handoff(Handoff::Filter);
        let mut f = syn.frame();
        let orig = f.clone();
        assert_eq!(run(&mut f, &mut env), Verdict::Pass);
        assert_eq!(f, orig, "a filtered SYN is not rewritten");
        assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynToKernel]);
        assert_eq!(
            env.lookups, 0,
            "no socket lookup for a SYN XDP does not answer"
        );
        assert_eq!(env.minted_writes, 0);

        let mut ack = syn.clone();
        ack.flags = ACK;
        ack.ack = 0x1234_5678;
        ack.options = vec![];
        let mut af = ack.frame();
        assert_eq!(run(&mut af, &mut env), Verdict::Pass);
        assert_eq!(env.counts.last(), Some(&Counter::AckToKernel));
        assert!(env.kernel_checks.is_empty());

        // The same forged ACK under the kfunc handoff is dropped: the control.
        let mut env = Mock::new().mode(Mode::Always);
        let mut af = ack.frame();
        assert_eq!(run(&mut af, &mut env), Verdict::Drop);
        assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
    }
}

/// Filter handoff keeps the filters: lists, flags, the per-source budget, reflection and
/// forged RSTs; not engaged, it reads as the kfunc handoff does.
#[test]
fn filter_handoff_keeps_the_filters() {
    let filt = || Mock::new().mode(Mode::Always).handoff(Handoff::Filter);
    let mut env = filt();
    env.list = ListVerdict::Deny;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::Deny]);

    let mut env = filt();
    let mut s = Seg::syn4();
    s.flags = SYN | FIN;
    assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::FlagSynFin]);

    let mut env = filt();
    env.cfg.src_syn_rate = 10;
    env.src_ok = false;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::RateLimited]);

    // No SYN+ACK is sent, so the SYN+ACK budget is not consulted.
    let mut env = filt();
    env.cfg.synack_rate_per_cpu = 10;
    env.budget_ok = false;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynToKernel]);

    let mut env = filt();
    let mut s = Seg::syn4();
    s.src = s.dst;
    assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::Reflection]);

    for flags in [RST, RST | ACK, SYN | ACK] {
        let mut env = filt();
        let mut s = Seg::syn4();
        s.flags = flags;
        s.ack = 7;
        s.options = vec![];
        assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop, "{flags:#x}");
        assert_eq!(env.reasons(), vec![Counter::NoSocketDrop]);
    }

    // Not engaged (auto, quiet): SYNs and ACKs pass as under the kfunc handoff.
    let mut env = Mock::new().mode(Mode::Auto).handoff(Handoff::Filter);
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Pass);
    let mut ack = Seg::syn4();
    ack.flags = ACK;
    ack.options = vec![];
    assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Pass);
    assert_eq!(
        env.reasons(),
        vec![
            Counter::SynSeen,
            Counter::SynPassed,
            Counter::AckPassedUnengaged
        ]
    );

    // Monitor: the filters count but drop nothing.
    let mut env = Mock::new().mode(Mode::Monitor).handoff(Handoff::Filter);
    env.list = ListVerdict::Deny;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::Deny]);
}

#[test]
fn unknown_handoff_value_reads_as_filter() {
    let mut env = Mock::new().mode(Mode::Always);
    env.cfg.handoff = 0xee;
    let mut f = Seg::syn4().frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynToKernel]);
}

/// Kernel-cookie handoff: an engaged SYN to a listener whose overflow stamp is recent is
/// answered with the kernel's cookie as the ISN, for the SYN's own tuple, sequence number
/// and MSS, and an MSS option only: no window scaling, SACK, timestamps or ECN, which the
/// kernel would not decode from a cookie without timestamps.
#[test]
fn kernel_cookie_handoff_answers_with_the_kernels_cookie_and_an_mss_only() {
    for v6 in [false, true] {
        let mut syn = if v6 { Seg::syn6() } else { Seg::syn4() };
        syn.seq = 0x0bad_cafe;
        syn.flags = SYN | ECE | CWR;
        syn.options = offer_bytes(&Offer {
            mss: Some(1400),
            ws: Some(7),
            sack: true,
            ts: Some(0x1111),
        });
        let mut env = Mock::new()
            .mode(Mode::Always)
            .handoff(Handoff::KernelCookie);
        env.cfg.ecn = 1;
        env.kernel_ecn = 1;
        let mut f = syn.frame();
        let Verdict::Tx { len } = run(&mut f, &mut env) else {
            panic!("not answered: {:?}", env.counts);
        };
        assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::CookieSent]);
        assert_eq!(
            env.kernel_mints,
            vec![(client_flow(&syn), 0x0bad_cafe, 1400)]
        );
        let r = read_reply(&f[..len]);
        assert_eq!(r.seq, 0x4b43_0001, "the ISN is the kernel's cookie");
        assert_eq!(r.ack, 0x0bad_caff);
        assert_eq!(r.flags, SYN | ACK, "no ECE: the cookie cannot carry ECN");
        assert_eq!(r.options.len(), 4, "{:?}", r.options);
        assert_eq!(r.options[..2], [2, 4]);
        // synguard's own cookie state is untouched: no key, no MINTED mark.
        assert_eq!(env.minted_writes, 0);
        assert!(env.handoffs.is_empty());
    }
}

/// The safety rule: XDP answers only where the kernel itself would answer with a cookie.
/// Where the kernel declines, the SYN goes to it untouched; so does everything the kfunc
/// handoff leaves to the kernel (no listener, an MPTCP one, an existing socket, another
/// host's address), and, not engaged, every SYN.
#[test]
fn kernel_cookie_handoff_steps_aside_where_the_kernel_would_not_answer_with_a_cookie() {
    let kc = || {
        Mock::new()
            .mode(Mode::Always)
            .handoff(Handoff::KernelCookie)
    };
    type Case = (&'static str, fn(&mut Mock), Counter);
    let cases: [Case; 5] = [
        (
            "declined",
            |e| e.kernel_isn = None,
            Counter::KernelCookieDeclined,
        ),
        (
            "no listener",
            |e| e.sock = SockState::None,
            Counter::NoListener,
        ),
        (
            "mptcp",
            |e| e.sock = SockState::MptcpListener,
            Counter::MptcpListener,
        ),
        (
            "existing",
            |e| e.sock = SockState::Other,
            Counter::ExistingSocket,
        ),
        ("not local", |e| e.local = false, Counter::NotLocal),
    ];
    for (what, set, want) in cases {
        let mut env = kc();
        set(&mut env);
        let mut f = Seg::syn4().frame();
        let orig = f.clone();
        assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{what}");
        assert_eq!(f, orig, "{what}: rewritten");
        assert_eq!(env.reasons(), vec![Counter::SynSeen, want], "{what}");
        // One lookup, the kernel's own: `kernel_cookie` makes it.
        assert!(env.lookups <= 1, "{what}: {} lookups", env.lookups);
    }
    // Not engaged: the kernel answers, nothing is asked of it.
    let mut env = Mock::new().mode(Mode::Auto).handoff(Handoff::KernelCookie);
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynPassed]);
    assert!(env.kernel_mints.is_empty());
    // Monitor: counted as passed, never answered.
    let mut env = Mock::new()
        .mode(Mode::Monitor)
        .handoff(Handoff::KernelCookie);
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynPassed]);
    assert!(env.kernel_mints.is_empty());
    // The SYN+ACK cap limits what XDP sends: it drops a SYN XDP would answer, ...
    let mut env = kc();
    env.cfg.synack_rate_per_cpu = 10;
    env.budget_ok = false;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::SynackCapHit]);
    // ... never one the kernel answers.
    let mut env = kc();
    env.cfg.synack_rate_per_cpu = 10;
    env.budget_ok = false;
    env.kernel_isn = None;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Pass);
    assert_eq!(
        env.reasons(),
        vec![Counter::SynSeen, Counter::KernelCookieDeclined]
    );
    // The per-source budget and the reflection rule hold for every SYN.
    let mut env = kc();
    env.cfg.src_syn_rate = 10;
    env.src_ok = false;
    env.kernel_isn = None;
    assert_eq!(run(&mut Seg::syn4().frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::RateLimited]);
    let mut env = kc();
    let mut s = Seg::syn4();
    s.src = s.dst;
    assert_eq!(run(&mut s.frame(), &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::Reflection]);
}

/// Kernel-cookie handoff, ACK to a listener alone: checked against the kernel's cookie
/// (at the segment's own headers), passed to the kernel when valid, which makes the
/// socket, and never handed off (there is no TC program); dropped when not, as a forged
/// ACK under synguard's own cookie is. synguard's cookie is not consulted.
#[test]
fn kernel_cookie_handoff_checks_acks_against_the_kernels_cookie() {
    for v6 in [false, true] {
        let mut ack = if v6 { Seg::syn6() } else { Seg::syn4() };
        ack.flags = ACK;
        ack.ack = 0x4b43_0002;
        ack.options = vec![];
        let mut env = Mock::new()
            .mode(Mode::Always)
            .handoff(Handoff::KernelCookie);
        env.kernel_cookie = Some(true);
        assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Pass);
        assert_eq!(env.reasons(), vec![Counter::CookieAckValid]);
        let l3 = 14;
        let l4 = l3 + if v6 { 40 } else { 20 };
        assert_eq!(env.kernel_checks, vec![(v6, l3, l4)]);
        assert!(env.handoffs.is_empty());

        env.kernel_cookie = Some(false);
        assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Drop);
        assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));

        // The kernel cannot tell (IPv6 as a module): its to check, and reset.
        env.kernel_cookie = None;
        assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Pass);
        assert_eq!(env.counts.last(), Some(&Counter::AckToKernel));

        // Not engaged: passed unchecked, for the kernel's own handshakes.
        let mut env = Mock::new().mode(Mode::Auto).handoff(Handoff::KernelCookie);
        assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Pass);
        assert_eq!(env.reasons(), vec![Counter::AckPassedUnengaged]);
        assert!(env.kernel_checks.is_empty());
    }
}

/// `auto`, engaged, an ACK without synguard's cookie: where the kernel cannot tell whether
/// it carries one of its own (IPv6 as a module), it goes to the kernel, which checks it and
/// resets what is not; dropping it would lose the kernel's own cookie handshakes.
#[test]
fn auto_passes_an_ack_the_kernel_cannot_check_here() {
    let mut env = Mock::new().mode(Mode::Auto);
    env.state.engaged = 1;
    env.kernel_cookie = None;
    let mut ack = Seg::syn6();
    ack.flags = ACK;
    ack.ack = 0x1234_5678;
    ack.options = vec![];
    assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Pass);
    assert_eq!(env.reasons(), vec![Counter::AckToKernel]);
    env.kernel_cookie = Some(false);
    assert_eq!(run(&mut ack.frame(), &mut env), Verdict::Drop);
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckInvalid));
}

/// A SYN signed with TCP-MD5 or TCP-AO needs a signed SYN+ACK, with a key only the kernel
/// has: engaged, in both handoffs that answer, it goes to the kernel untouched. The same
/// SYN without the option is answered: the control.
#[test]
fn signed_syns_go_to_the_kernel_in_every_handoff_that_answers() {
    for h in [Handoff::Kfunc, Handoff::KernelCookie] {
        for (what, sig) in [
            ("md5", {
                let mut b = vec![1, 1, 19, 18];
                b.extend([0x5a; 16]);
                b
            }),
            ("ao", vec![29, 6, 7, 8, 0, 0]),
        ] {
            let mut syn = Seg::syn4();
            syn.options = offer_bytes(&Offer {
                mss: Some(1460),
                ..Offer::default()
            });
            syn.options.extend(&sig);
            while !syn.options.len().is_multiple_of(4) {
                syn.options.push(1);
            }
            let mut env = Mock::new().mode(Mode::Always).handoff(h);
            let mut f = syn.frame();
            let orig = f.clone();
            assert_eq!(run(&mut f, &mut env), Verdict::Pass, "{h} {what}");
            assert_eq!(f, orig);
            assert_eq!(
                env.reasons(),
                vec![Counter::SynSeen, Counter::TcpSignature],
                "{h} {what}"
            );
        }
        let mut env = Mock::new().mode(Mode::Always).handoff(h);
        assert!(matches!(
            run(&mut Seg::syn4().frame(), &mut env),
            Verdict::Tx { .. }
        ));
    }
}
