//! The XDP decision pipeline, generic over the packet buffer and the environment (maps,
//! clock, socket lookup), so the eBPF program is thin glue and the whole decision runs in
//! host tests.
//!
//! A frame goes through the modules in this order: [`crate::dissect`] locates the TCP
//! segment, this module decides, [`crate::synack`] turns a SYN into our SYN+ACK in place,
//! and for a cookie ACK [`crate::handoff`] builds what TC needs to make the socket.
//!
//! Order of decisions for each frame ([`process`]):
//! 0. Uninspectable frames ([`crate::dissect::Located::Uninspectable`]): a third VLAN
//!    tag, an IPv6 extension-header chain beyond the walk's bound (more than
//!    [`crate::wire::ipv6::MAX_EXT_HEADERS`] headers or
//!    [`crate::wire::ipv6::MAX_EXT_LEN`] bytes of them), or an extension header that runs
//!    past the packet. Their port cannot be known, so the decision is the mode's alone:
//!    engaged, `Drop` (`Uninspectable`), whatever the port, for passing them would be a
//!    bypass of every rule below while under attack; not engaged (monitor included),
//!    `Pass` (`UninspectablePassed`), which is never worse than the kernel alone.
//! 1. Not IPv4/IPv6 TCP, or not to a protected port: `Pass`, nothing counted but
//!    `PacketsSeen`. Up to two VLAN tags (802.1Q, 802.1ad, any order, VID 0 included)
//!    are stepped over, IPv4 options too, and IPv6 Hop-by-Hop, Routing, Destination
//!    Options and Fragment headers ([`crate::wire::ipv6::walk_extensions`], unrolled);
//!    the TCP behind them goes through every rule below like any other. Non-first
//!    fragments (IPv4, or an IPv6 Fragment header with a non-zero offset) carry no port,
//!    so they pass here, as does TCP behind any other next header (AH, ESP: the kernel
//!    needs a security association to deliver those at all).
//! 2. Deny list: `Drop` (`Deny`). Allow list: `Pass` (`Allow`), skipping everything below.
//!    An IPv6 Routing header with segments left: the packet is for a later hop, `Pass`
//!    (`Ipv6RoutingPass`).
//! 3. First fragment of a TCP datagram (IPv4 MF, or IPv6 offset 0 with M=1; an atomic
//!    IPv6 fragment, M=0, is a whole packet and skips this): a socket of the flow's own
//!    keeps it, `Pass` (`EstablishedPass`), and so do flows with no listener or an MPTCP
//!    one (`NoListener`, `MptcpListener`, as in step 7). To a plain listener: `Drop`
//!    (`Fragment`) while engaged, since a SYN+ACK cannot be answered from part of a SYN
//!    and reassembly is the classic bypass; `Pass` (`FragmentPassed`) while not.
//! 4. Lengths (IP total length inside the frame, room for the TCP header, data offset
//!    within 5..=IP payload): `Drop` (`Malformed`).
//! 5. Flags through [`crate::flags`]: an invalid combination is dropped under its counter;
//!    an RST-bearing one with SYN or FIN (`Invalid::own_socket_acts`) takes the RST path of
//!    step 7 and is dropped, without a socket of its own, under its flag counter.
//! 6. SYN: a SYN whose answer would reflect (`Flow::reflectable`: LAND, a non-unicast,
//!    loopback, unspecified or v4-mapped address on either end; engaged, also a source
//!    that is one of the host's directed broadcast addresses): `Drop` (`Reflection`) while
//!    engaged, `Pass` (`Reflection`) while not. TCP options are parsed as Linux does
//!    ([`tcp_options::parse`]: no layout is an error, the SYN is answered with what was
//!    parsed); engaged, a SYN with a TCP-MD5 or TCP-AO option passes (`TcpSignature`): its
//!    SYN+ACK must be signed with the listener's key, which only the kernel has (and the
//!    kernel drops a signature it has no key for). IPv4 options and IPv6 extension headers are not echoed: the SYN+ACK has the
//!    fixed IP header only (IHL 5, or next header TCP), its TCP header right after it, and
//!    the frame shrinks; VLAN tags stay. Not engaged, or no valid key yet:
//!    `Pass` (`SynPassed`). Engaged: per-source budget (`RateLimited`), then the SYN+ACK
//!    budget (`SynackCapHit`), then the destination: a MAC other than the interface's own
//!    (`NotOurMac`) or an address the host does not own (`NotLocal`) means `Pass`; then the
//!    socket lookup: only a plain-TCP listener with no
//!    socket of the flow's own can take our cookie, so no listener (`NoListener`), a
//!    socket holding the 4-tuple (`ExistingSocket`) or an MPTCP listener (`MptcpListener`)
//!    means `Pass`, and the kernel (with its own syncookies) answers. Otherwise the packet
//!    becomes our SYN+ACK in place: `Tx { len }` (`CookieSent`). The frame keeps its
//!    length: bytes past `len` (a SYN payload such as TFO data, or what IP options and
//!    extension headers left) are link-layer padding after the IP datagram, which every
//!    receiver trims by the IP length, as it does for short frames.
//! 7. ACK, RST, SYN+ACK: a socket of the flow's own (established, time-wait, request
//!    socket): `Pass` (`EstablishedPass`); no listener, or an MPTCP one: `Pass`
//!    (`NoListener`, `MptcpListener`), as for the SYN. Otherwise (only the listener) an
//!    ACK must carry a valid cookie of a key slot XDP has minted with (`MINTED`, see
//!    [`crate::maps::minted_mark`]): the ISN's MAC bits are checked first, and only on a
//!    match are the ACK's options parsed for TSecr. Valid: `HandOff`
//!    (`CookieAckValid`), or a plain `Pass` in monitor mode, which never hands off. If
//!    not, `Drop` (`CookieAckInvalid`; its options, parsed as for the SYN, are read only
//!    behind a matching ISN) while cookies are engaged, `Pass` (`AckPassedUnengaged`) while they are not, so
//!    the kernel's own handshakes and cookies keep working; engaged, an ACK without a cookie
//!    of ours but with one the kernel minted (`bpf_tcp_raw_check_syncookie_*`: before an
//!    `auto` engage, or for a SYN XDP left to the kernel) passes too (`KernelCookiePass`). RST and SYN+ACK
//!    to a listener without a socket of their own: `Drop` (`NoSocketDrop`). A segment to
//!    a listener that would be dropped passes instead when its destination is not ours
//!    (`NotOurMac`, `NotLocal`: a flow routed through the host).
//!
//! In the filter handoff ([`Handoff::Filter`], `Config::handoff`) steps 0-5 and the
//! reflection check of step 6 are as above, but XDP answers no SYN and checks no cookie:
//! engaged, a SYN within its per-source budget passes (`SynToKernel`) and a bare ACK to a
//! listener passes (`AckToKernel`), for the kernel's own syncookies; RST and SYN+ACK to a
//! listener alone are still dropped (`NoSocketDrop`). Not engaged, as above.
//!
//! In the kernel-cookie handoff ([`Handoff::KernelCookie`], see [`crate::kernel_cookie`])
//! everything is as in the kfunc handoff except the cookie itself. An engaged SYN within its
//! per-source budget and addressed to this host goes to [`Env::kernel_cookie`]: where the
//! kfunc handoff's socket lookup would pass it, so does this; to a plain-TCP listener, the
//! kernel's cookie answers it (`CookieSent`, after the SYN+ACK budget) if the kernel would
//! itself answer with one, and otherwise it passes (`KernelCookieDeclined`) and the kernel
//! handles it. The SYN+ACK carries the kernel's cookie as its ISN and an MSS option only
//! ([`crate::kernel_cookie::answer_options`]), never ECN. An engaged ACK to a listener
//! alone is checked with `bpf_tcp_raw_check_syncookie_*` ([`Env::kernel_cookie_valid`]):
//! valid, it passes to the kernel, which completes the handshake (`CookieAckValid`; nothing
//! is handed off, there is no TC program); invalid, as for synguard's own cookie; if the
//! kernel cannot tell, it passes for the kernel to check (`AckToKernel`).
//!
//! "Engaged" means mode `Always`, or `Auto` while the controller sets `State::engaged`.
//! In `Monitor` mode (and for an unknown mode value) every `Drop` is a `Pass`, still
//! counted under its reason, and SYNs are never answered.
//!
//! Each frame is explained by exactly one reason ([`Decision::reason`]), which the glue
//! counts after carrying out the verdict; a `HANDOFF` entry the map refuses is counted as
//! `ReqskFailed` instead of `CookieAckValid`. `PacketsSeen` and `SynSeen` are totals, counted here, not reasons.
//!
//! For the eBPF glue: everything here is `#[inline(always)]` except the TCP options step,
//! which runs as a `bpf_loop` callback (kernel 5.17+, see [`crate::verifier::bounded_loop`]). The
//! glue calls no helper that changes packet data (`bpf_xdp_adjust_tail`/`_meta`/`_head`):
//! an extension program in a libxdp dispatcher must not, under stubs that do not
//! (`synguard/tests/map_abi.rs` checks the built object). Several shapes here and in the modules above (words instead of byte arrays,
//! branch-free arithmetic, the [`opaque`] length check) exist for the verifier or the 512-byte stack; their comments
//! say which.

use crate::cookie::{Decoded, IsnMatch, MacPrefix};
use crate::dissect::{Located, MAX_IP_LEN, Segment, dissect};
use crate::flags::{self, FlagVerdict};
use crate::flow::Flow;
use crate::kernel_cookie;
use crate::maps::{Config, Counter, Handoff, IfaceFacts, KeySlot, Mode, State, minted_mark};
use crate::packet::Packet;
use crate::synack::{self, Reply};
use crate::verifier::opaque;
use crate::wire::tcp::{self, TcpHeader};
use crate::wire::tcp_options::{self, TcpOptions};

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
    /// Only the listener, a plain-TCP one: the flow itself has no socket.
    Listener,
    /// Only the listener, and it is MPTCP (`sk_is_mptcp`): `bpf_sk_assign_tcp_reqsk`
    /// refuses it, so its handshakes are the kernel's.
    MptcpListener,
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
    /// `MINTED[slot]`: see [`crate::maps::minted_mark`]; 0 if the map lacks the slot.
    fn minted(&self, slot: u32) -> u64;
    fn set_minted(&mut self, slot: u32, mark: u64);
    /// Counts a total (`PacketsSeen`, `SynSeen`); the reason is the caller's to count.
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
    /// `bpf_tcp_raw_check_syncookie_ipv4/6` on the IP header at `l3` and the TCP header at
    /// `l4`: whether the segment's ACK number is a cookie the kernel minted, within the
    /// kernel's own age limit; `None` if the kernel cannot tell (IPv6 built as a module, or
    /// the headers not in the packet).
    fn kernel_cookie_valid(&mut self, v6: bool, l3: usize, l4: usize) -> Option<bool>;
    /// Kernel-cookie handoff, for an engaged SYN of `flow` with sequence number `seq` and
    /// MSS option `mss` (0: none): looks up the flow's socket and, if it is a plain-TCP
    /// listener alone, asks the kernel for the cookie it would answer the SYN with
    /// (`bpf_tcp_gen_syncookie` on that listener, which mints only where the kernel itself
    /// would, and refreshes the listener's overflow stamp; see [`crate::kernel_cookie`]).
    fn kernel_cookie(&mut self, flow: &Flow, seq: u32, mss: u16) -> KernelCookie;
    /// Stores a validated cookie ACK's request-socket attributes
    /// (`CookieMeta::new(key, d, opts, tcph)`) in `HANDOFF`, for TC, under the segment's
    /// key (`HandoffKey::new(flow, tcph.seq, tcph.ack)`); false if the map refused it.
    fn hand_off(
        &mut self,
        flow: &Flow,
        key: &KeySlot,
        d: &Decoded,
        opts: &TcpOptions,
        tcph: &TcpHeader,
    ) -> bool;
    /// The ingress interface's entry in `IFACES` (its MAC, MTU, the kernel's ECN), if any.
    fn iface(&self) -> Option<IfaceFacts>;
    /// The flow's destination address is local to the host (`LOCAL_ADDRS`).
    fn local_dst(&self, flow: &Flow) -> bool;
    /// The flow's source is the broadcast address of one of the host's IPv4 subnets
    /// (`LOCAL_ADDRS`, flagged [`crate::maps::LOCAL_ADDR_BROADCAST`]).
    fn src_local_broadcast(&self, flow: &Flow) -> bool;
    fn now_ns(&self) -> u64;
    /// The segment of a frame to a protected port, once located and before any rule
    /// judges it: what the glue's sampled drop events ([`crate::maps::DropEvent`]) report.
    /// Nothing by default.
    #[inline(always)]
    fn located(&mut self, _seg: &Segment) {}
    /// The TCP flags of that segment, once its header is parsed (for the same events).
    /// Nothing by default.
    #[inline(always)]
    fn tcp_flags(&mut self, _flags: u8) {}
}

/// What [`Env::kernel_cookie`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCookie {
    /// A plain-TCP listener alone, and the ISN the kernel's cookie gives the SYN.
    Minted(u32),
    /// A plain-TCP listener alone, which would not answer the SYN with a cookie now.
    Declined,
    /// Not a plain-TCP listener alone: what the lookup found instead.
    Socket(SockState),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// The frame now holds our SYN+ACK, `len` bytes long (never longer than the frame; the
    /// rest is padding after the IP datagram): transmit it back out of the interface.
    Tx {
        len: usize,
    },
    /// A cookie ACK whose request-socket attributes are in `HANDOFF` ([`Env::hand_off`]),
    /// for the TC program: pass.
    HandOff,
}

/// A verdict and the one counter that explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The reason to count; `None` for a frame that is not ours (not TCP to a protected
    /// port), which counts nothing but `PacketsSeen`.
    pub reason: Option<Counter>,
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

/// [`Decision`] inside the pipeline; `None` for a frame that is not ours.
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
///
/// Counts the totals (`PacketsSeen` for every frame, `SynSeen` for every SYN to a
/// protected port) but not the reason: the caller counts [`Decision::reason`] once, after
/// carrying out the verdict, or the reason it failed instead. So each frame counts
/// exactly one reason, and each `count` (a map lookup once inlined) has one site.
#[inline(always)]
pub fn process<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E) -> Decision {
    env.count(Counter::PacketsSeen);
    match decide(p, env) {
        Some((verdict, c)) => Decision {
            verdict,
            reason: Some(c),
        },
        None => Decision {
            verdict: Verdict::Pass,
            reason: None,
        },
    }
}

#[inline(always)]
fn decide<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E) -> Outcome {
    let seg = match dissect(p) {
        Located::Tcp(seg) => seg,
        Located::NotTcp => return None,
        Located::Uninspectable => {
            let (_, engaged, _) = mode_of(env);
            return if engaged {
                Some((Verdict::Drop, Counter::Uninspectable))
            } else {
                pass(Counter::UninspectablePassed)
            };
        }
    };
    if !env.port_protected(seg.flow.dst_port) {
        return None;
    }
    env.located(&seg);
    let (mode, engaged, state) = mode_of(env);
    let monitor = mode == Mode::Monitor;

    match env.list_verdict(&seg.flow) {
        ListVerdict::Deny => return reject(Counter::Deny, monitor),
        ListVerdict::Allow => return pass(Counter::Allow),
        ListVerdict::None => {}
    }
    if seg.routing_pending {
        return pass(Counter::Ipv6RoutingPass);
    }
    if seg.first_fragment {
        return match env.socket_state(&seg.flow) {
            SockState::Listener if engaged => reject(Counter::Fragment, monitor),
            SockState::Listener => pass(Counter::FragmentPassed),
            s => pass(not_our_socket(s)),
        };
    }
    // Through `opaque`: see there why this check must not vouch for the ones after it.
    // Bounded by MAX_IP_LEN, which it always is, for older verifiers: 6.12's does not
    // follow the byte swap that reads the length, sees an unbounded value and refuses to
    // add it to a packet pointer ("math between pkt pointer and register with unbounded
    // min value is not allowed"); 6.18's accepts it either way.
    let ip_len = opaque(seg.ip_len);
    if seg.ip_len < seg.ip_hdr_len + tcp::HEADER_LEN
        || ip_len > MAX_IP_LEN
        || p.load::<1>(seg.l3 + ip_len - 1).is_none()
    {
        return reject(Counter::Malformed, monitor);
    }
    let Some(tcph) = TcpHeader::parse(p, seg.l4) else {
        return reject(Counter::Malformed, monitor);
    };
    env.tcp_flags(tcph.flags);
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
        FlagVerdict::Invalid(r) if r.own_socket_acts() => {
            own_socket_only(p, env, &ctx, r.counter())
        }
        FlagVerdict::Invalid(r) => reject(r.counter(), monitor),
        FlagVerdict::Syn => {
            env.count(Counter::SynSeen);
            match handoff(env) {
                Handoff::Filter => syn_filtered(env, &ctx),
                Handoff::KernelCookie => syn_kernel_cookie(p, env, &ctx),
                Handoff::Kfunc => syn(p, env, &ctx),
            }
        }
        FlagVerdict::Ack => match env.socket_state(&ctx.seg.flow) {
            SockState::Listener => cookie_ack(p, env, &ctx),
            s => pass(not_our_socket(s)),
        },
        FlagVerdict::Rst | FlagVerdict::SynAck => {
            own_socket_only(p, env, &ctx, Counter::NoSocketDrop)
        }
    }
}

/// A segment Linux acts on only for a socket of the flow's own: with one (or with no
/// plain listener to forge it to), the kernel's; to a listener alone, dropped under `c`,
/// as the listener itself would discard it (or reset a SYN+ACK).
#[inline(always)]
fn own_socket_only<P: Packet + ?Sized, E: Env>(
    p: &P,
    env: &mut E,
    ctx: &Ctx,
    c: Counter,
) -> Outcome {
    match env.socket_state(&ctx.seg.flow) {
        SockState::Listener => match not_addressed_to_us(p, env, &ctx.seg.flow) {
            Some(why) => pass(why),
            None => reject(c, ctx.monitor),
        },
        s => pass(not_our_socket(s)),
    }
}

/// The mode (an unknown value is `Monitor`), whether cookies are engaged, and the state
/// it was read from.
#[inline(always)]
fn mode_of<E: Env>(env: &E) -> (Mode, bool, State) {
    let state = env.state();
    let mode = Mode::from_u32(env.config().mode).unwrap_or(Mode::Monitor);
    let engaged = mode == Mode::Always || (mode == Mode::Auto && state.engaged != 0);
    (mode, engaged, state)
}

/// Why a segment whose lookup found `s` (anything but a plain-TCP listener alone) is the
/// kernel's: the flow is its own, nothing here listens (the kernel resets or forwards it,
/// as without synguard), or the listener is MPTCP.
#[inline(always)]
fn not_our_socket(s: SockState) -> Counter {
    match s {
        SockState::None => Counter::NoListener,
        SockState::MptcpListener => Counter::MptcpListener,
        SockState::Listener | SockState::Other => Counter::EstablishedPass,
    }
}

/// [`not_our_socket`] for a SYN, which the flow's own socket makes `ExistingSocket` (only
/// the kernel can resolve a SYN over TIME_WAIT or into a live flow).
#[inline(always)]
fn syn_not_ours(s: SockState) -> Counter {
    match s {
        SockState::Other => Counter::ExistingSocket,
        s => not_our_socket(s),
    }
}

/// The ingress interface's facts if the frame is for this host to answer, or why it is not:
/// its destination MAC is not the interface's own unicast address, or its destination
/// address is not local. Two map lookups, so only for frames we would otherwise answer or
/// drop.
#[inline(always)]
fn addressed_to_us<P: Packet + ?Sized, E: Env>(
    p: &P,
    env: &E,
    flow: &Flow,
) -> Result<IfaceFacts, Counter> {
    // `Segment::locate` parsed the Ethernet header, so the MAC is there.
    let mac = p.load::<6>(0).ok_or(Counter::NotOurMac)?;
    // The I/G bit: a group address (broadcast, multicast) is never the interface's own.
    if mac[0] & 1 != 0 {
        return Err(Counter::NotOurMac);
    }
    let facts = match env.iface() {
        Some(f) if f.mac == mac => f,
        _ => return Err(Counter::NotOurMac),
    };
    if !env.local_dst(flow) {
        return Err(Counter::NotLocal);
    }
    Ok(facts)
}

/// [`addressed_to_us`] where only the reason matters.
#[inline(always)]
fn not_addressed_to_us<P: Packet + ?Sized, E: Env>(p: &P, env: &E, flow: &Flow) -> Option<Counter> {
    addressed_to_us(p, env, flow).err()
}

#[inline(always)]
fn syn<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E, ctx: &Ctx) -> Outcome {
    let seg = &ctx.seg;
    // IPv4 options and IPv6 extension headers are fine: the reply goes without them.
    if let Some(o) = reflection(env, ctx) {
        return o;
    }
    // The MAC over the tuple is computed before the options walk: the verifier then
    // checks it once, not once per option combination the walk can end in.
    let keyed = if ctx.engaged {
        valid_key(env, ctx.active_key).map(|k| (k, MacPrefix::new(&k, &seg.flow, ctx.tcph.seq)))
    } else {
        None
    };
    let opts = match answerable_options(p, ctx) {
        Ok(o) => o,
        Err(o) => return o,
    };
    // Without a key (controller not up yet) the kernel answers, with its own cookies if
    // need be: failing open beats dropping every SYN.
    let Some((key, prefix)) = keyed else {
        return pass(Counter::SynPassed);
    };
    let cfg = env.config();
    let facts = match answerable(p, env, ctx, &cfg) {
        Ok(f) => f,
        Err(o) => return o,
    };
    // RFC 3168: an ECN-setup SYN has both ECE (0x40) and CWR (0x80). Bit arithmetic
    // rather than comparisons, which would each be one more verifier path.
    let f = ctx.tcph.flags;
    // Accepted only when the setting allows it and so does net.ipv4.tcp_ecn.
    let ecn = (f >> 6) & (f >> 7) & cfg.ecn & facts.kernel_ecn & 1 != 0;
    let minted = prefix.mint(key.epoch, seg.flow.is_v6(), &opts, ecn);
    // Written only on a change, once per rotation: the common case is one map read.
    let mark = minted_mark(key.epoch);
    if env.minted(ctx.active_key) != mark {
        env.set_minted(ctx.active_key, mark);
    }
    // `minted.ecn`: the cookie carries ECN only with timestamps, so only then is it
    // accepted.
    match synack::build(
        p,
        seg,
        ctx.tcph.seq,
        &opts,
        &cfg,
        &facts,
        Reply::minted(&key, &minted),
        minted.ecn,
    ) {
        Some(len) => Some((Verdict::Tx { len }, Counter::CookieSent)),
        // Unreachable after the length checks; the frame may be half rewritten, so it
        // must not go anywhere, monitor or not.
        None => reject(Counter::Malformed, false),
    }
}

/// The handoff mode ([`Config::handoff`]). Read from the config where needed rather than
/// kept in [`Ctx`]: the XDP frame has no stack to spare (512 bytes over the program and its
/// `bpf_loop` callback). The XDP glue makes it a constant in each copy of the pipeline.
#[inline(always)]
fn handoff<E: Env>(env: &E) -> Handoff {
    Handoff::from_u8(env.config().handoff)
}

/// Step 6's reflection rule, in every handoff: the verdict for a SYN whose answer would
/// reflect, or `None`. The broadcast lookup is a map access, so only engaged SYNs pay for
/// it; unengaged, the kernel answers and drops a directed-broadcast source itself.
#[inline(always)]
fn reflection<E: Env>(env: &E, ctx: &Ctx) -> Option<Outcome> {
    let flow = &ctx.seg.flow;
    if flow.reflectable() && !(ctx.engaged && env.src_local_broadcast(flow)) {
        return None;
    }
    Some(if ctx.engaged {
        reject(Counter::Reflection, ctx.monitor)
    } else {
        pass(Counter::Reflection)
    })
}

/// A SYN's options, in both handoffs that answer, if it may still be answered: not while
/// cookies are not engaged (`SynPassed`: the kernel answers), nor when it is signed
/// (`TcpSignature`: its answer needs the listener's key). Only an area outside the packet
/// fails to parse, which the length checks before rule out.
#[inline(always)]
fn answerable_options<P: Packet + ?Sized>(p: &P, ctx: &Ctx) -> Result<TcpOptions, Outcome> {
    let Ok(opts) = tcp_options::parse(p, ctx.seg.l4 + tcp::HEADER_LEN, ctx.opt_len) else {
        return Err(reject(Counter::Malformed, ctx.monitor));
    };
    if !ctx.engaged {
        return Err(pass(Counter::SynPassed));
    }
    if opts.signed {
        return Err(pass(Counter::TcpSignature));
    }
    Ok(opts)
}

/// The per-source SYN budget (with `src`) and the SYN+ACK budget (with `synack`): the
/// verdict for a SYN over one, or `None`. The clock is read only when a limit needs it: it
/// is a helper call on every SYN.
#[inline(always)]
fn over_budget<E: Env>(
    env: &mut E,
    ctx: &Ctx,
    cfg: &Config,
    src: bool,
    synack: bool,
) -> Option<Outcome> {
    let src = src && cfg.src_syn_rate != 0;
    let synack = synack && cfg.synack_rate_per_cpu != 0;
    if !src && !synack {
        return None;
    }
    let now = env.now_ns();
    if src && !env.src_syn_allowed(&ctx.seg.flow, now) {
        return Some(reject(Counter::RateLimited, ctx.monitor));
    }
    if synack && !env.synack_budget(now) {
        return Some(reject(Counter::SynackCapHit, ctx.monitor));
    }
    None
}

/// The last checks before an engaged SYN is answered with synguard's cookie: both budgets,
/// then whether it is addressed to this host, then the socket lookup (only a plain-TCP
/// listener with no socket of the flow's own). The interface's facts if it may be
/// answered, else the verdict.
#[inline(always)]
fn answerable<P: Packet + ?Sized, E: Env>(
    p: &P,
    env: &mut E,
    ctx: &Ctx,
    cfg: &Config,
) -> Result<IfaceFacts, Outcome> {
    let flow = &ctx.seg.flow;
    if let Some(o) = over_budget(env, ctx, cfg, true, true) {
        return Err(o);
    }
    // Last, dearest first: unengaged traffic never pays for these.
    let facts = addressed_to_us(p, env, flow).map_err(pass)?;
    match env.socket_state(flow) {
        SockState::Listener => Ok(facts),
        s => Err(pass(syn_not_ours(s))),
    }
}

/// A SYN in the kernel-cookie handoff: as [`syn`], with the kernel's cookie, and only where
/// the kernel would answer with one itself (see the module doc). The SYN+ACK budget is
/// spent only on a SYN XDP answers.
#[inline(always)]
fn syn_kernel_cookie<P: Packet + ?Sized, E: Env>(p: &mut P, env: &mut E, ctx: &Ctx) -> Outcome {
    let seg = &ctx.seg;
    if let Some(o) = reflection(env, ctx) {
        return o;
    }
    let opts = match answerable_options(p, ctx) {
        Ok(o) => o,
        Err(o) => return o,
    };
    let cfg = env.config();
    if let Some(o) = over_budget(env, ctx, &cfg, true, false) {
        return o;
    }
    let facts = match addressed_to_us(p, env, &seg.flow) {
        Ok(f) => f,
        Err(c) => return pass(c),
    };
    let isn = match env.kernel_cookie(&seg.flow, ctx.tcph.seq, opts.mss) {
        KernelCookie::Minted(isn) => isn,
        // The kernel would not answer with a cookie (no flood by its own measure, a full
        // accept queue): it gets the SYN, as without synguard.
        KernelCookie::Declined => return pass(Counter::KernelCookieDeclined),
        KernelCookie::Socket(s) => return pass(syn_not_ours(s)),
    };
    if let Some(o) = over_budget(env, ctx, &cfg, false, true) {
        return o;
    }
    let reply = Reply {
        isn,
        wscale: 0,
        tsval: 0,
    };
    // No ECN: the kernel's cookie carries it only in the timestamp, which ours lacks.
    match synack::build(
        p,
        seg,
        ctx.tcph.seq,
        &kernel_cookie::answer_options(&opts),
        &cfg,
        &facts,
        reply,
        false,
    ) {
        Some(len) => Some((Verdict::Tx { len }, Counter::CookieSent)),
        None => reject(Counter::Malformed, false),
    }
}

/// A SYN in the filter handoff: the reflection check and the per-source budget while
/// engaged, then the kernel's (its own syncookies answer). No key, SYN+ACK budget, options
/// walk or socket lookup: XDP sends nothing back.
#[inline(always)]
fn syn_filtered<E: Env>(env: &mut E, ctx: &Ctx) -> Outcome {
    if let Some(o) = reflection(env, ctx) {
        return o;
    }
    if !ctx.engaged {
        return pass(Counter::SynPassed);
    }
    if let Some(o) = over_budget(env, ctx, &env.config(), true, false) {
        return o;
    }
    pass(Counter::SynToKernel)
}

#[inline(always)]
fn valid_key<E: Env>(env: &E, slot: u32) -> Option<KeySlot> {
    let k = env.key(slot)?;
    if k.valid != 0 { Some(k) } else { None }
}

#[inline(always)]
fn cookie_ack<P: Packet + ?Sized, E: Env>(p: &P, env: &mut E, ctx: &Ctx) -> Outcome {
    let not_ours = |env: &E, c: Counter| {
        if !ctx.engaged {
            return pass(Counter::AckPassedUnengaged);
        }
        // A flow routed through the host may meet a wildcard listener here.
        match not_addressed_to_us(p, env, &ctx.seg.flow) {
            Some(why) => pass(why),
            None => reject(c, ctx.monitor),
        }
    };
    let seg = &ctx.seg;
    match handoff(env) {
        // The kernel checks its own cookie (and resets what fails it); XDP mints none to
        // check against.
        Handoff::Filter => {
            return pass(if ctx.engaged {
                Counter::AckToKernel
            } else {
                Counter::AckPassedUnengaged
            });
        }
        // The kernel's cookie, checked as the kernel will check it again; it then makes
        // the socket itself.
        Handoff::KernelCookie => {
            if !ctx.engaged {
                return pass(Counter::AckPassedUnengaged);
            }
            return match env.kernel_cookie_valid(seg.flow.is_v6(), seg.l3, seg.l4) {
                Some(true) => pass(Counter::CookieAckValid),
                Some(false) => not_ours(env, Counter::CookieAckInvalid),
                None => pass(Counter::AckToKernel),
            };
        }
        Handoff::Kfunc => {}
    }
    let isn = ctx.tcph.seq.wrapping_sub(1);
    let cookie = ctx.tcph.ack.wrapping_sub(1);
    // The ISN's MAC bits first: a forged ACK fails here (all but 2^-27 of them per slot)
    // and never reaches the attacker-shaped options walk. A legitimate ACK with
    // timestamps from the previous slot is lost when the active slot's ISN bits also
    // match (2^-27); its client retries.
    let hit = match try_slot(env, ctx.active_key, &seg.flow, isn, cookie) {
        Some(h) => Some(h),
        None => try_slot(env, ctx.active_key ^ 1, &seg.flow, isn, cookie),
    };
    let Some((key, m)) = hit else {
        // The kernel's own cookies keep working: minted while it answered SYNs before an
        // `auto` engage, or for a SYN XDP left to it while engaged (signed, over
        // TIME_WAIT, no key yet). The kernel checks them again, with its own
        // overflow-recency rule, when they reach the listener.
        if ctx.engaged {
            match env.kernel_cookie_valid(seg.flow.is_v6(), seg.l3, seg.l4) {
                Some(true) => return pass(Counter::KernelCookiePass),
                // The kernel cannot tell here, but will: it resets what is not its own.
                None => return pass(Counter::AckToKernel),
                Some(false) => {}
            }
        }
        return not_ours(env, Counter::CookieAckInvalid);
    };
    let Ok(opts) = tcp_options::parse(p, seg.l4 + tcp::HEADER_LEN, ctx.opt_len) else {
        return not_ours(env, Counter::Malformed);
    };
    let tsecr = if opts.ts { Some(opts.tsecr) } else { None };
    let Some(d) = m.check_tsecr(seg.flow.is_v6(), tsecr) else {
        return not_ours(env, Counter::CookieAckInvalid);
    };
    if ctx.monitor {
        return pass(Counter::CookieAckValid);
    }
    Some((
        {
            if !env.hand_off(&seg.flow, &key, &d, &opts, &ctx.tcph) {
                return pass(Counter::ReqskFailed);
            }
            Verdict::HandOff
        },
        Counter::CookieAckValid,
    ))
}

/// The cookie's ISN checked against one key slot, if XDP has minted with that slot's
/// key (`MINTED`): the slot's key and the match to finish with TSecr.
#[inline(always)]
fn try_slot<E: Env>(
    env: &E,
    slot: u32,
    flow: &Flow,
    isn: u32,
    cookie: u32,
) -> Option<(KeySlot, IsnMatch)> {
    let key = valid_key(env, slot)?;
    if env.minted(slot) != minted_mark(key.epoch) {
        return None;
    }
    let m = MacPrefix::new(&key, flow, isn).check_isn(key.epoch, cookie)?;
    Some((key, m))
}

#[cfg(test)]
mod tests;
