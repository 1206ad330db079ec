//! Whole-pipeline tests: real frames in, verdicts, counters and reply bytes out, every
//! reply checked by the independent reader in `testutil` (checksums recomputed from
//! scratch), every run repeated over `RawPacket` to hold both buffer types to one result.

use super::*;
use crate::flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use crate::packet::RawPacket;
use crate::testutil::{CLIENT_MAC, Reply, SERVER_MAC, Seg, read_reply};
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
    counts: Vec<Counter>,
    protected: Vec<u16>,
    list: ListVerdict,
    src_ok: bool,
    budget_ok: bool,
    sock: SockState,
    lookups: usize,
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
            counts: vec![],
            protected: vec![80, 443],
            list: ListVerdict::None,
            src_ok: true,
            budget_ok: true,
            sock: SockState::Listener,
            lookups: 0,
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
    fn now_ns(&self) -> u64 {
        5_000_000_000
    }
}

/// Runs `process` on the frame as a slice, and on a copy through `RawPacket` with a clone
/// of the environment; both must agree on verdict, bytes and counters.
fn run(frame: &mut [u8], env: &mut Mock) -> Verdict {
    let mut copy = frame.to_vec();
    let mut env2 = env.clone();
    let v = process(frame, env);
    let raw_v = {
        let start = copy.as_mut_ptr() as usize;
        // SAFETY: `copy` outlives `raw` and is not otherwise touched meanwhile.
        let mut raw = unsafe { RawPacket::new(start, start + copy.len()) };
        process(&mut raw, &mut env2)
    };
    assert_eq!(v, raw_v, "slice and RawPacket verdicts differ");
    assert_eq!(&frame[..], &copy[..], "slice and RawPacket bytes differ");
    assert_eq!(env.counts, env2.counts);
    v
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
    assert_eq!(r.vlan, syn.vlan, "VLAN tag kept");
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

    // The cookie: option byte in the low 8 bits, 24 MAC bits above.
    let ob = r.seq as u8;
    let h = reference_mac(key, syn, syn.seq, ob);
    assert_eq!(r.seq >> 8, (h & 0xff_ffff) as u32, "cookie MAC bits");
    assert_eq!(ob & 0x0f, offer.ws.map_or(15, |w| w.min(14)));
    assert_eq!(ob & 0x10 != 0, offer.sack);
    assert_eq!(ob & 0x20 != 0, ecn);

    // Options, built here from the rules in words.
    let adv = if syn.v6 {
        env.cfg.adv_mss6
    } else {
        env.cfg.adv_mss4
    };
    let mut rest = Vec::new();
    match (offer.sack, offer.ts) {
        (true, Some(tv)) => {
            rest.extend_from_slice(&[4, 2, 8, 10]);
            rest.extend_from_slice(&((h >> 32) as u32).to_be_bytes());
            rest.extend_from_slice(&tv.to_be_bytes());
        }
        (false, Some(tv)) => {
            rest.extend_from_slice(&[1, 1, 8, 10]);
            rest.extend_from_slice(&((h >> 32) as u32).to_be_bytes());
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
    let l4 = if syn.vlan.is_some() { 18 } else { 14 } + if syn.v6 { 40 } else { 20 };
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

/// Handshake through `process`: SYN -> Tx -> check reply -> ACK -> PassWithMeta.
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
    let ecn = ecn_syn && env.cfg.ecn != 0;
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
    let Verdict::PassWithMeta(m) = v else {
        panic!("cookie ACK refused: {v:?} {:?}", env.reasons())
    };
    assert_eq!(env.counts.last(), Some(&Counter::CookieAckValid));
    m
}

fn expected_mss(v6: bool, mss: Option<u16>) -> u16 {
    let t: [u16; 4] = if v6 {
        [1220, 1280, 1420, 1440]
    } else {
        [536, 1300, 1440, 1460]
    };
    let m = mss.unwrap_or(0);
    t.iter().rev().copied().find(|&e| e <= m).unwrap_or(t[0])
}

fn all_offers() -> Vec<Offer> {
    let mut v = Vec::new();
    for mss in [None, Some(1460), Some(1300), Some(9000), Some(300)] {
        for ws in [None, Some(0), Some(7), Some(14), Some(15)] {
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
                assert_eq!(m.snd_wscale, offer.ws.map_or(0, |w| w.min(14)), "{ctx}");
                assert_eq!(
                    m.rcv_wscale,
                    if offer.ws.is_some() { KEY1.wscale } else { 0 },
                    "{ctx}"
                );
                assert_eq!(m.sack_ok, offer.sack as u8, "{ctx}");
                assert_eq!(m.ecn_ok, ecn_syn as u8, "{ctx}");
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
                assert_eq!(env.lookups, 1, "one socket lookup, for the ACK");
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
        },
        false,
    );
    assert_eq!(
        m.rcv_tsecr,
        (reference_mac(&KEY1, &syn, syn.seq, ob) >> 32) as u32
    );
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
    let Verdict::PassWithMeta(m) = run(&mut af, &mut env) else {
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
    assert!(matches!(run(&mut af, &mut env), Verdict::PassWithMeta(_)));
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
    // IPv6 with a hop-by-hop header first.
    let mut f = Seg::syn6().frame();
    f[14 + 6] = 0;
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

#[test]
fn first_fragment_dropped() {
    let mut s = Seg::syn4();
    s.frag = 0x2000; // MF, offset 0
    let mut env = Mock::new().mode(Mode::Always);
    let mut f = s.frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::Fragment]);
}

#[test]
fn ip_options_syn_dropped_ack_accepted() {
    let mut env = Mock::new().mode(Mode::Always);
    let mut s = Seg::syn4();
    s.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let mut f = s.frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::Malformed]);

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
        matches!(run(&mut af, &mut env), Verdict::PassWithMeta(_)),
        "{:?}",
        env.reasons()
    );
}

#[test]
fn unreflectable_addresses() {
    for src in [
        [127, 0, 0, 1],
        [224, 0, 0, 5],
        [0, 0, 0, 0],
        [255, 255, 255, 255],
    ] {
        let mut s = Seg::syn4();
        s.src[..4].copy_from_slice(&src);
        let mut env = Mock::new().mode(Mode::Always);
        let mut f = s.frame();
        assert_eq!(run(&mut f, &mut env), Verdict::Drop);
        assert_eq!(env.reasons(), vec![Counter::SynSeen, Counter::Malformed]);
    }
    let mut s = Seg::syn6();
    s.dst[0] = 0xff;
    let mut env = Mock::new().mode(Mode::Always);
    let mut f = s.frame();
    assert_eq!(run(&mut f, &mut env), Verdict::Drop);
}

#[test]
fn malformed_lengths_and_options() {
    let l3 = 14;
    let mut cases: Vec<(&str, Vec<u8>, Vec<Counter>)> = Vec::new();
    let syn_mal = vec![Counter::SynSeen, Counter::Malformed];
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

    let mut s = Seg::syn6();
    s.options = vec![2, 3, 5, 1];
    cases.push(("MSS length 3", s.frame(), syn_mal.clone()));

    let mut s = Seg::syn4();
    s.options = vec![1, 1, 8, 10, 0, 0, 0, 0];
    cases.push(("TS overruns", s.frame(), syn_mal.clone()));

    for (what, mut f, want) in cases {
        let mut env = Mock::new().mode(Mode::Always);
        assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{what}");
        assert_eq!(env.reasons(), want, "{what}");
    }
}

/// Every flag byte gets the table's verdict and counter through the whole pipeline.
#[test]
fn all_256_flag_combinations() {
    for sock in [SockState::None, SockState::Listener, SockState::Other] {
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
                    FlagVerdict::Invalid(r) => (Some(Verdict::Drop), vec![r.counter()]),
                    FlagVerdict::Syn => (None, vec![Counter::SynSeen, Counter::CookieSent]),
                    _ if sock == SockState::Other => {
                        (Some(Verdict::Pass), vec![Counter::EstablishedPass])
                    }
                    FlagVerdict::Ack => (Some(Verdict::Drop), vec![Counter::CookieAckInvalid]),
                    FlagVerdict::Rst | FlagVerdict::SynAck => {
                        (Some(Verdict::Drop), vec![Counter::NoSocketDrop])
                    }
                };
                match want_v {
                    Some(w) => assert_eq!(v, w, "{ctx}"),
                    None => assert!(matches!(v, Verdict::Tx { .. }), "{ctx}: {v:?}"),
                }
                assert_eq!(env.reasons(), want_c, "{ctx}");
                // Independent of the table: the flag bits themselves.
                let low = flags & 0x3f;
                if low == SYN || (low == SYN && flags & (ECE | CWR) != 0) {
                    assert!(matches!(v, Verdict::Tx { .. }), "{ctx}");
                }
                if flags & (SYN | FIN) == SYN | FIN || flags & (SYN | RST) == SYN | RST || low == 0
                {
                    assert_eq!(v, Verdict::Drop, "{ctx}");
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
                    FlagVerdict::Ack if sock != SockState::Other => {
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
        0usize..3,
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
                m.sock = [SockState::None, SockState::Listener, SockState::Other][sock];
                m.list = [ListVerdict::None, ListVerdict::None, ListVerdict::Deny][list];
                m.keys[0].as_mut().unwrap().wscale = ws;
                m
            },
        )
}

/// A real SYN/ACK frame with some bytes overwritten and maybe cut short.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(variants()),
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
        let mut f = s.frame();
        prop_assert_eq!(run(&mut f, &mut env), Verdict::Drop);
    }
}

#[test]
fn urg_psh_syn_and_friends_are_not_answered() {
    // Sanity of the pipeline against the table for the packets scanners send.
    for flags in [FIN, FIN | PSH | URG, 0, PSH, URG, SYN | URG] {
        let mut s = Seg::syn4();
        s.flags = flags;
        let mut env = Mock::new().mode(Mode::Always);
        let mut f = s.frame();
        assert_eq!(run(&mut f, &mut env), Verdict::Drop, "{flags:#x}");
    }
}
