//! The XDP decision pipeline, generic over the packet buffer and the environment (maps,
//! clock, socket lookup), so the eBPF program is thin glue and the whole decision runs in
//! host tests.
//!
//! Order of decisions for each frame ([`process`]):
//! 1. Not IPv4/IPv6 TCP, or not to a protected port: `Pass`, nothing counted but
//!    `PacketsSeen`. Non-first IPv4 fragments carry no port, so they pass here too; and an
//!    IPv6 packet is TCP only when its first next-header is TCP (extension headers are
//!    not walked), so anything else is the kernel's.
//! 2. Deny list: `Drop` (`Deny`). Allow list: `Pass` (`Allow`), skipping everything below.
//! 3. First fragment of a TCP datagram: `Drop` (`Fragment`); a SYN+ACK cannot be
//!    reflected from part of a SYN, and reassembly is the classic bypass.
//! 4. Lengths (IP total length inside the frame, room for the TCP header, data offset
//!    within 5..=IP payload): `Drop` (`Malformed`).
//! 5. Flags through [`crate::flags`]: an invalid combination is dropped under its counter.
//! 6. SYN: malformed options, IPv4 options (we never reflect IP options, and would have
//!    to in order to answer exactly), or a non-unicast/loopback address on either end
//!    (`Flow::reflectable`): `Drop` (`Malformed`). Not engaged, or no valid key yet:
//!    `Pass` (`SynPassed`). Engaged: per-source budget (`RateLimited`), then the SYN+ACK
//!    budget (`SynackCapHit`), then the packet becomes our SYN+ACK in place:
//!    `Tx { len }` (`CookieSent`). Any SYN payload (TFO data) is cut off by `len`.
//! 7. ACK, RST, SYN+ACK: a socket of the flow's own (established, time-wait, request
//!    socket): `Pass` (`EstablishedPass`). Otherwise an ACK must carry a valid cookie of
//!    either key slot: `PassWithMeta` (`CookieAckValid`); if not, `Drop`
//!    (`CookieAckInvalid`) while cookies are engaged, `Pass` (`AckPassedUnengaged`)
//!    while they are not, so the kernel's own handshakes and cookies keep working. RST
//!    and SYN+ACK without a socket: `Drop` (`NoSocketDrop`).
//!
//! "Engaged" means mode `Always`, or `Auto` while the controller sets `State::engaged`.
//! In `Monitor` mode (and for an unknown mode value) every `Drop` is a `Pass`, still
//! counted under its reason, and SYNs are never answered.
//!
//! For the eBPF glue: everything here is `#[inline(always)]` except the TCP options step,
//! which runs as a `bpf_loop` callback (kernel 5.17+, see `packet::bounded_loop`). The
//! verifier refuses arithmetic on `data_end`, so trim a `Tx` frame with
//! `bpf_xdp_adjust_tail(len - bpf_xdp_get_buff_len(ctx))`, not with `data_end - data`.
//! Several shapes here (words instead of byte arrays, branch-free arithmetic, the
//! `opaque` length check) exist for the verifier or the 512-byte stack; their comments
//! say which.

use crate::checksum;
use crate::cookie::{self, MacPrefix, Minted};
use crate::flags::{self, FlagVerdict};
use crate::flow::{Addr, Family, Flow};
use crate::maps::{Config, CookieMeta, Counter, KeySlot, Mode, State};
use crate::packet::{Packet, opaque};
use crate::wire::IPPROTO_TCP;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame};
use crate::wire::ipv4::{self, Ipv4Header};
use crate::wire::ipv6::{self, Ipv6Header};
use crate::wire::tcp::{self, TcpHeader};
use crate::wire::tcp_options::{self, MAX_WSCALE, TcpOptions, WSCALE_ABSENT};

/// Result of the allow/deny LPM lookups on the flow's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListVerdict {
    Allow,
    Deny,
    None,
}

/// What the kernel has for a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockState {
    /// Nothing listens on the port.
    None,
    /// Only the listener: the flow itself has no socket.
    Listener,
    /// Established, time-wait or request socket: the kernel owns the flow.
    Other,
}

/// Everything `process` needs from outside the packet. The eBPF glue implements it over
/// maps and helpers; tests implement it over plain fields.
pub trait Env {
    fn config(&self) -> Config;
    fn state(&self) -> State;
    /// The key slot `slot` (0 or 1), if the map has it; `valid` is checked by the caller.
    fn key(&self, slot: u32) -> Option<KeySlot>;
    fn count(&mut self, c: Counter);
    fn port_protected(&self, port: u16) -> bool;
    /// Allow/deny lookups on the flow's source.
    fn list_verdict(&self, flow: &Flow) -> ListVerdict;
    /// Per-source SYN budget: `TokenBucket::take` on the source's `SRC_RATE` entry.
    fn src_syn_allowed(&mut self, flow: &Flow, now_ns: u64) -> bool;
    /// Global SYN+ACK budget: `TokenBucket::take` on this CPU's `SYNACK_BUCKET`.
    fn synack_budget(&mut self, now_ns: u64) -> bool;
    /// `bpf_skc_lookup_tcp` in eBPF.
    fn socket_state(&mut self, flow: &Flow) -> SockState;
    fn now_ns(&self) -> u64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// The frame now holds our SYN+ACK, `len` bytes long (never longer than it was): trim
    /// it to `len` and transmit it back out of the interface.
    Tx {
        len: usize,
    },
    /// A cookie ACK: put this in the XDP metadata for the TC program, then pass.
    PassWithMeta(CookieMeta),
}

/// What the IP layer says about a TCP segment to, possibly, one of our ports.
#[derive(Clone, Copy)]
struct Segment {
    flow: Flow,
    l3: usize,
    l4: usize,
    /// IP header length (with IPv4 options).
    ip_hdr_len: usize,
    /// IP total length, header included, as the IP header claims.
    ip_len: usize,
    ip_options: bool,
    first_fragment: bool,
}

/// Locates the TCP segment of an Ethernet frame. `None`: not TCP over IP, a non-first
/// fragment, or too short to show the ports; none of which we can or need to judge.
#[inline(always)]
fn segment<P: Packet + ?Sized>(p: &P) -> Option<Segment> {
    let eth = Frame::parse(p)?;
    let l3 = eth.l3_off;
    let (family, src, dst, ip_hdr_len, ip_len, ip_options, first_fragment);
    if eth.ethertype == ETHERTYPE_IPV4 {
        let ip = Ipv4Header::parse(p, l3)?;
        if ip.version != 4 || ip.ihl < 5 || ip.proto != IPPROTO_TCP || ip.frag_off != 0 {
            return None;
        }
        family = Family::V4;
        src = Addr::from_v4(ip.src);
        dst = Addr::from_v4(ip.dst);
        ip_hdr_len = ip.header_len();
        ip_len = usize::from(ip.tot_len);
        ip_options = ip.ihl > 5;
        first_fragment = ip.mf;
    } else if eth.ethertype == ETHERTYPE_IPV6 {
        let ip = Ipv6Header::parse(p, l3)?;
        if ip.version != 6 || ip.next_header != IPPROTO_TCP {
            return None;
        }
        family = Family::V6;
        src = ip.src;
        dst = ip.dst;
        ip_hdr_len = ipv6::HEADER_LEN;
        ip_len = ipv6::HEADER_LEN + usize::from(ip.payload_len);
        ip_options = false;
        first_fragment = false;
    } else {
        return None;
    }
    let l4 = l3 + ip_hdr_len;
    let ports = p.load::<4>(l4)?;
    Some(Segment {
        flow: Flow {
            family,
            src,
            dst,
            sport: u16::from_be_bytes([ports[0], ports[1]]),
            dport: u16::from_be_bytes([ports[2], ports[3]]),
        },
        l3,
        l4,
        ip_hdr_len,
        ip_len,
        ip_options,
        first_fragment,
    })
}

/// For the TC program: the flow (client as source) of a TCP segment, for the listener
/// lookup. TC sees the same Ethernet frame, usually with the VLAN tag already taken off
/// into the skb; both forms parse.
#[inline(always)]
pub fn tc_flow<P: Packet + ?Sized>(p: &P) -> Option<Flow> {
    Some(segment(p)?.flow)
}

/// What the path-specific steps need to know about the segment and the settings.
struct Ctx {
    seg: Segment,
    tcph: TcpHeader,
    /// Length of the TCP option area.
    opt_len: usize,
    engaged: bool,
    monitor: bool,
    active_key: u32,
}

/// A decision and the one counter that explains it.
type Outcome = Option<(Verdict, Counter)>;

/// Drops under counter `c`, or passes in monitor mode.
#[inline(always)]
fn reject(c: Counter, monitor: bool) -> Outcome {
    Some((
        if monitor {
            Verdict::Pass
        } else {
            Verdict::Drop
        },
        c,
    ))
}

#[inline(always)]
fn pass(c: Counter) -> Outcome {
    Some((Verdict::Pass, c))
}

/// Decides what to do with one frame, rewriting it into a SYN+ACK when the verdict is
/// [`Verdict::Tx`]. Never panics, whatever the bytes.
#[inline(always)]
pub fn process<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E) -> Verdict {
    env.count(Counter::PacketsSeen);
    // One counting site for the reason: each `count` is a map lookup once inlined.
    match decide(p, env) {
        Some((v, c)) => {
            env.count(c);
            v
        }
        None => Verdict::Pass,
    }
}

#[inline(always)]
fn decide<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E) -> Outcome {
    let seg = segment(p)?;
    if !env.port_protected(seg.flow.dport) {
        return None;
    }
    let state = env.state();
    let mode = Mode::from_u32(env.config().mode).unwrap_or(Mode::Monitor);
    let monitor = mode == Mode::Monitor;
    let engaged = mode == Mode::Always || (mode == Mode::Auto && state.engaged != 0);

    match env.list_verdict(&seg.flow) {
        ListVerdict::Deny => return reject(Counter::Deny, monitor),
        ListVerdict::Allow => return pass(Counter::Allow),
        ListVerdict::None => {}
    }
    if seg.first_fragment {
        return reject(Counter::Fragment, monitor);
    }
    // Through `opaque`: see there why this check must not vouch for the ones after it.
    if seg.ip_len < seg.ip_hdr_len + tcp::HEADER_LEN
        || p.load::<1>(seg.l3 + opaque(seg.ip_len) - 1).is_none()
    {
        return reject(Counter::Malformed, monitor);
    }
    let Some(tcph) = TcpHeader::parse(p, seg.l4) else {
        return reject(Counter::Malformed, monitor);
    };
    if tcph.doff < 5 || tcph.header_len() > seg.ip_len - seg.ip_hdr_len {
        return reject(Counter::Malformed, monitor);
    }

    let ctx = Ctx {
        seg,
        tcph,
        opt_len: tcph.header_len() - tcp::HEADER_LEN,
        engaged,
        monitor,
        active_key: state.active_key & 1,
    };
    match flags::verdict(tcph.flags) {
        FlagVerdict::Invalid(r) => reject(r.counter(), monitor),
        FlagVerdict::Syn => {
            env.count(Counter::SynSeen);
            syn(p, env, &ctx)
        }
        FlagVerdict::Ack => {
            if env.socket_state(&ctx.seg.flow) == SockState::Other {
                return pass(Counter::EstablishedPass);
            }
            cookie_ack(p, env, &ctx)
        }
        FlagVerdict::Rst | FlagVerdict::SynAck => {
            if env.socket_state(&ctx.seg.flow) == SockState::Other {
                return pass(Counter::EstablishedPass);
            }
            reject(Counter::NoSocketDrop, monitor)
        }
    }
}

#[inline(always)]
fn syn<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E, ctx: &Ctx) -> Outcome {
    let seg = &ctx.seg;
    if seg.ip_options || !seg.flow.reflectable() {
        return reject(Counter::Malformed, ctx.monitor);
    }
    // The MAC over the tuple is computed before the options walk: the verifier then
    // checks it once, not once per option combination the walk can end in.
    let keyed = if ctx.engaged {
        valid_key(env, ctx.active_key).map(|k| (k, MacPrefix::new(&k, &seg.flow, ctx.tcph.seq)))
    } else {
        None
    };
    let Ok(opts) = tcp_options::parse(p, seg.l4 + tcp::HEADER_LEN, ctx.opt_len) else {
        return reject(Counter::Malformed, ctx.monitor);
    };
    if !ctx.engaged {
        return pass(Counter::SynPassed);
    }
    // Without a key (controller not up yet) the kernel answers, with its own cookies if
    // need be: failing open beats dropping every SYN.
    let Some((key, prefix)) = keyed else {
        return pass(Counter::SynPassed);
    };
    let cfg = env.config();
    // The clock is read only when a limit needs it: it is a helper call on every SYN.
    if cfg.src_syn_rate != 0 || cfg.synack_rate_per_cpu != 0 {
        let now = env.now_ns();
        if !env.src_syn_allowed(&seg.flow, now) {
            return reject(Counter::RateLimited, ctx.monitor);
        }
        if !env.synack_budget(now) {
            return reject(Counter::SynackCapHit, ctx.monitor);
        }
    }
    // RFC 3168: an ECN-setup SYN has both ECE (0x40) and CWR (0x80). Bit arithmetic
    // rather than comparisons, which would each be one more verifier path.
    let f = ctx.tcph.flags;
    let ecn = (f >> 6) & (f >> 7) & cfg.ecn & 1 != 0;
    let minted = prefix.mint(key.epoch, seg.flow.is_v6(), &opts, ecn);
    match build_synack(p, ctx, &opts, &cfg, &key, &minted, ecn) {
        Some(len) => Some((Verdict::Tx { len }, Counter::CookieSent)),
        // Unreachable after the length checks; the frame may be half rewritten, so it
        // must not go anywhere, monitor or not.
        None => reject(Counter::Malformed, false),
    }
}

#[inline(always)]
fn valid_key<E: Env>(env: &E, slot: u32) -> Option<KeySlot> {
    let k = env.key(slot)?;
    if k.valid != 0 { Some(k) } else { None }
}

#[inline(always)]
fn clamp_wscale(ws: u8) -> u8 {
    if ws > MAX_WSCALE { MAX_WSCALE } else { ws }
}

/// Rewrites the SYN at hand into our SYN+ACK and returns the new frame length.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn build_synack<P: Packet + ?Sized>(
    p: &mut P,
    ctx: &Ctx,
    opts: &TcpOptions,
    cfg: &Config,
    key: &KeySlot,
    minted: &Minted,
    ecn: bool,
) -> Option<usize> {
    let seg = &ctx.seg;
    let flow = &seg.flow;
    let v6 = flow.is_v6();
    let adv_mss = if v6 { cfg.adv_mss6 } else { cfg.adv_mss4 };
    let mut o = tcp_options::synack_options(opts, adv_mss, key.wscale, minted.tsval);
    // Our options fit in the client's whenever it sent an MSS option. A client that sent
    // none (a bare 54-byte SYN from a flood tool, typically) may leave no room for ours;
    // it then gets no MSS option and assumes the protocol default, which is safe.
    if p.load::<1>(seg.l4 + tcp::HEADER_LEN + o.len - 1).is_none() {
        o = tcp_options::synack_options(opts, 0, key.wscale, minted.tsval);
    }
    let olen = o.len;
    let tcp_len = tcp::HEADER_LEN + olen;
    let new_len = seg.l4 + tcp_len;
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
            src: flow.daddr4(),
            dst: flow.saddr4(),
        }
        .write(p, seg.l3)?;
        checksum::pseudo_v4(flow.daddr4(), flow.saddr4(), IPPROTO_TCP, tcp_len as u16)
    };
    let mut th = TcpHeader {
        src_port: flow.dport,
        dst_port: flow.sport,
        seq: minted.isn,
        ack: ctx.tcph.seq.wrapping_add(1),
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
    th.write(p, seg.l4)?;
    let at = seg.l4 + tcp::HEADER_LEN;
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

#[inline(always)]
fn cookie_ack<P: Packet + ?Sized, E: Env>(p: &P, env: &mut E, ctx: &Ctx) -> Outcome {
    let not_ours = |c: Counter| {
        if ctx.engaged {
            reject(c, ctx.monitor)
        } else {
            pass(Counter::AckPassedUnengaged)
        }
    };
    let seg = &ctx.seg;
    let Ok(opts) = tcp_options::parse(p, seg.l4 + tcp::HEADER_LEN, ctx.opt_len) else {
        return not_ours(Counter::Malformed);
    };
    let isn = ctx.tcph.seq.wrapping_sub(1);
    let cookie = ctx.tcph.ack.wrapping_sub(1);
    if let Some(meta) = try_slot(env, ctx.active_key, &seg.flow, isn, cookie, &opts) {
        return Some((Verdict::PassWithMeta(meta), Counter::CookieAckValid));
    }
    if let Some(meta) = try_slot(env, ctx.active_key ^ 1, &seg.flow, isn, cookie, &opts) {
        return Some((Verdict::PassWithMeta(meta), Counter::CookieAckValid));
    }
    not_ours(Counter::CookieAckInvalid)
}

/// The cookie checked against one key slot, and on success the metadata TC hands to
/// `bpf_sk_assign_tcp_reqsk`. Fields of options not negotiated are zero, as the kfunc
/// requires.
#[inline(always)]
fn try_slot<E: Env>(
    env: &E,
    slot: u32,
    flow: &Flow,
    isn: u32,
    cookie: u32,
    opts: &TcpOptions,
) -> Option<CookieMeta> {
    let key = valid_key(env, slot)?;
    let tsecr = if opts.ts { Some(opts.tsecr) } else { None };
    let d = cookie::check(&key, flow, isn, cookie, tsecr)?;
    let wscale_ok = d.wscale != WSCALE_ABSENT;
    Some(CookieMeta {
        magic: CookieMeta::MAGIC,
        rcv_tsval: if opts.ts { opts.tsval } else { 0 },
        rcv_tsecr: if opts.ts { opts.tsecr } else { 0 },
        mss: d.mss,
        rcv_wscale: if wscale_ok {
            clamp_wscale(key.wscale)
        } else {
            0
        },
        snd_wscale: if wscale_ok { d.wscale } else { 0 },
        ecn_ok: d.ecn_ok as u8,
        wscale_ok: wscale_ok as u8,
        sack_ok: d.sack_ok as u8,
        tstamp_ok: opts.ts as u8,
    })
}

#[cfg(test)]
mod tests;
