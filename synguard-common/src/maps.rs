//! The map ABI between the XDP/TC programs and the controller.
//!
//! Every type here is `#[repr(C)]` with explicit padding so its layout is identical in the
//! BPF object and in userspace. Map names are the pin names under
//! `/sys/fs/bpf/synguard/<iface>/`; [`SPECS`] is the whole map set.

use core::mem::size_of;

use crate::handoff::{CookieMeta, HandoffEntry, HandoffKey};
use crate::kernel_cookie::CookieHeaders;

/// Pin and map names. One home for them so the eBPF side and the controller cannot drift.
pub mod names {
    /// bpffs mount point; synguard mounts it there if nothing is mounted.
    pub const BPFFS: &str = "/sys/fs/bpf";
    /// Root of synguard's pins: one directory per protected interface below it.
    pub const PIN_ROOT: &str = "/sys/fs/bpf/synguard";
    /// Pinned program links (in the interface's pin directory): they keep the programs
    /// attached while the daemon restarts.
    pub const XDP_LINK: &str = "link_xdp";
    pub const TC_LINK: &str = "link_tc";
    /// Where the daemon records what bpffs cannot hold (pid, key schedule, XDP mode).
    pub const RUN_DIR: &str = "/run/synguard";
    pub const CONFIG: &str = "CONFIG";
    pub const KEYS: &str = "KEYS";
    pub const STATE: &str = "STATE";
    pub const PORTS: &str = "PORTS";
    pub const ALLOW4: &str = "ALLOW4";
    pub const ALLOW6: &str = "ALLOW6";
    pub const DENY4: &str = "DENY4";
    pub const DENY6: &str = "DENY6";
    pub const SRC_RATE: &str = "SRC_RATE";
    pub const SYNACK_BUCKET: &str = "SYNACK_BUCKET";
    pub const COUNTERS: &str = "COUNTERS";
    pub const LIST_FLAGS: &str = "LIST_FLAGS";
    pub const MINTED: &str = "MINTED";
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    pub const IFACES: &str = "IFACES";
    pub const HANDOFF: &str = "HANDOFF";
    /// XDP's per-CPU scratch slot for building a `HANDOFF` entry off the stack.
    pub const HANDOFF_SCRATCH: &str = "HANDOFF_SCRATCH";
    /// XDP's per-CPU scratch slot for the headers `bpf_tcp_gen_syncookie` reads
    /// ([`crate::kernel_cookie::CookieHeaders`]).
    pub const COOKIE_SCRATCH: &str = "COOKIE_SCRATCH";
    /// The maps each interface has for itself when one daemon serves several: its own
    /// counters, and its address and link facts (each interface's follower keeps them
    /// whole). Every other map is shared: the first interface's pin directory holds it and
    /// the others pin the same map, so one key ring, one MINTED, one set of settings and
    /// lists serve them all.
    pub const PER_IFACE: &[&str] = &[COUNTERS, LOCAL_ADDRS, IFACES];
    /// Ring buffer of sampled drops ([`super::DropEvent`]), read by `synguard events`.
    pub const EVENTS: &str = "EVENTS";
    /// Per-source drop counts ([`super::SrcDrops`]), read by `synguard top`.
    pub const SRC_DROPS: &str = "SRC_DROPS";
    /// One per-CPU [`super::EventScratch`]: where the XDP counting site builds a drop's
    /// event.
    pub const EVENT_SCRATCH: &str = "EVENT_SCRATCH";
    pub const XDP_PROG: &str = "synguard_xdp";
    /// The XDP program's read-only global holding the handoff mode (a `Handoff` as u8),
    /// set at load time.
    pub const HANDOFF_GLOBAL: &str = "HANDOFF_MODE";
    pub const TC_PROG: &str = "synguard_tc";
}

/// The kernel's `enum bpf_map_type` values of the map types synguard uses.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    Hash = 1,
    Array = 2,
    PerCpuArray = 6,
    LruHash = 9,
    LruPerCpuHash = 10,
    LpmTrie = 11,
    RingBuf = 27,
}

/// `BPF_F_NO_PREALLOC`, which the kernel requires of LPM tries.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// One map of the ABI as the kernel sees it. [`SPECS`] lists them all; the eBPF crate
/// declares each with the same name, and `synguard/tests/map_abi.rs` checks the built
/// object against this table, so neither side can change a map alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Map (and pin) name, from [`names`].
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

impl MapSpec {
    const fn new<K, V>(name: &'static str, map_type: MapType, max_entries: u32) -> MapSpec {
        MapSpec {
            name,
            map_type,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
            map_flags: if matches!(map_type, MapType::LpmTrie) {
                BPF_F_NO_PREALLOC
            } else {
                0
            },
        }
    }
}

/// An LPM trie key: the prefix length, then the address bytes (aya's `lpm_trie::Key<A>`).
#[repr(C, packed)]
pub struct LpmKey<A> {
    pub prefix_len: u32,
    pub addr: A,
}

/// Every map of the ABI, in declaration order.
pub const SPECS: &[MapSpec] = &[
    MapSpec::new::<u32, Config>(names::CONFIG, MapType::Array, 1),
    MapSpec::new::<u32, KeySlot>(names::KEYS, MapType::Array, KEY_SLOTS),
    MapSpec::new::<u32, State>(names::STATE, MapType::Array, 1),
    MapSpec::new::<u32, u64>(names::PORTS, MapType::Array, PORT_WORDS),
    MapSpec::new::<LpmKey<[u8; 4]>, u8>(names::ALLOW4, MapType::LpmTrie, LIST_ENTRIES),
    MapSpec::new::<LpmKey<[u8; 16]>, u8>(names::ALLOW6, MapType::LpmTrie, LIST_ENTRIES),
    MapSpec::new::<LpmKey<[u8; 4]>, u8>(names::DENY4, MapType::LpmTrie, LIST_ENTRIES),
    MapSpec::new::<LpmKey<[u8; 16]>, u8>(names::DENY6, MapType::LpmTrie, LIST_ENTRIES),
    MapSpec::new::<SrcKey, TokenBucket>(names::SRC_RATE, MapType::LruHash, SRC_RATE_ENTRIES),
    MapSpec::new::<u32, TokenBucket>(names::SYNACK_BUCKET, MapType::PerCpuArray, 1),
    MapSpec::new::<u32, u32>(names::LIST_FLAGS, MapType::Array, LIST_SLOTS),
    MapSpec::new::<u32, u64>(names::MINTED, MapType::Array, MINTED_SLOTS),
    MapSpec::new::<u32, u64>(names::COUNTERS, MapType::PerCpuArray, COUNTER_COUNT),
    MapSpec::new::<LocalAddrKey, u8>(names::LOCAL_ADDRS, MapType::Hash, LOCAL_ADDR_ENTRIES),
    MapSpec::new::<u32, IfaceFacts>(names::IFACES, MapType::Hash, IFACE_ENTRIES),
    MapSpec::new::<HandoffKey, CookieMeta>(names::HANDOFF, MapType::LruHash, HANDOFF_ENTRIES),
    MapSpec::new::<u32, HandoffEntry>(names::HANDOFF_SCRATCH, MapType::PerCpuArray, 1),
    // A ring buffer has no key or value: its max_entries is its size in bytes.
    MapSpec::new::<(), ()>(names::EVENTS, MapType::RingBuf, EVENTS_BYTES),
    MapSpec::new::<SrcKey, SrcDrops>(names::SRC_DROPS, MapType::LruPerCpuHash, SRC_DROPS_ENTRIES),
    MapSpec::new::<u32, EventScratch>(names::EVENT_SCRATCH, MapType::PerCpuArray, 1),
    MapSpec::new::<u32, CookieHeaders>(names::COOKIE_SCRATCH, MapType::PerCpuArray, 1),
];

/// `HANDOFF` entries: cookie ACKs XDP validated and TC has not taken yet. TC takes each
/// within the same softirq (or the next, with RPS), so this only has to cover a burst of
/// legitimate handshakes; an entry whose ACK never reached TC (dropped by a program after
/// synguard's) is evicted as the least recently used.
pub const HANDOFF_ENTRIES: u32 = 8192;

/// Operating mode, stored in [`Config::mode`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Count and classify, never drop or answer: every packet passes.
    Monitor = 0,
    /// Answer SYNs with cookies only while [`State::engaged`] is set by the controller's
    /// hysteresis on the SYN rate.
    Auto = 1,
    /// Always answer SYNs to protected ports with cookies.
    Always = 2,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Monitor, Mode::Auto, Mode::Always];

    pub const fn from_u32(v: u32) -> Option<Mode> {
        match v {
            0 => Some(Mode::Monitor),
            1 => Some(Mode::Auto),
            2 => Some(Mode::Always),
            _ => None,
        }
    }

    /// The operator's name for the mode (`--mode`, `synguard set mode`, status).
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Auto => "auto",
            Mode::Always => "always",
        }
    }

    /// The mode named `name`, case-insensitively.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl core::fmt::Display for Mode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the handshake of a SYN to a protected port completes, stored in [`Config::handoff`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// XDP answers SYNs with synguard's cookie and TC hands a valid ACK to the listener
    /// with `bpf_sk_assign_tcp_reqsk` (Linux 6.9+).
    Kfunc = 0,
    /// XDP answers SYNs with the kernel's own cookie, minted on the listener
    /// (`bpf_tcp_gen_syncookie`) only where the kernel would send one itself, checks ACKs
    /// against it (`bpf_tcp_raw_check_syncookie_*`, Linux 6.0+), and the kernel completes
    /// the handshake itself (`cookie_v4_check`/`cookie_v6_check`). Where the kernel would
    /// send no cookie, the SYN goes to it. No TC.
    KernelCookie = 1,
    /// XDP only filters (flags, lists, rate limits, reflection, forged RSTs): it never
    /// answers a SYN nor validates a cookie; the kernel's own syncookies answer. No TC.
    Filter = 2,
}

impl Handoff {
    /// In the order `auto` prefers them.
    pub const ALL: [Handoff; 3] = [Handoff::Kfunc, Handoff::KernelCookie, Handoff::Filter];

    /// The data path's reading of [`Config::handoff`]: an unknown value is `Filter`, which
    /// never answers a SYN it could not complete.
    pub const fn from_u8(v: u8) -> Handoff {
        match v {
            0 => Handoff::Kfunc,
            1 => Handoff::KernelCookie,
            _ => Handoff::Filter,
        }
    }

    /// The operator's name (`--handoff`, status, metrics).
    pub const fn name(self) -> &'static str {
        match self {
            Handoff::Kfunc => "kfunc",
            Handoff::KernelCookie => "kernel-cookie",
            Handoff::Filter => "filter",
        }
    }

    /// By [`Handoff::name`], ignoring case; `kernel_cookie` is taken too (a TOML habit).
    pub fn from_name(name: &str) -> Option<Handoff> {
        let name = name.trim();
        let same = |a: u8, b: u8| a.eq_ignore_ascii_case(&b) || (a == b'-' && b == b'_');
        Handoff::ALL.into_iter().find(|m| {
            let n = m.name().as_bytes();
            n.len() == name.len() && n.iter().zip(name.bytes()).all(|(&a, b)| same(a, b))
        })
    }

    /// Whether this mode needs the TC program (and its kfunc).
    pub const fn needs_tc(self) -> bool {
        matches!(self, Handoff::Kfunc)
    }
}

impl core::fmt::Display for Handoff {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Operator settings: `CONFIG[0]`. Written by `synguard run` and `synguard set`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A [`Mode`] as u32.
    pub mode: u32,
    /// Auto mode engages above this many SYN/s ...
    pub syn_rate_on: u32,
    /// ... and disengages below this many SYN/s.
    pub syn_rate_off: u32,
    /// Per-source SYN budget refill, SYN/s (0 = no per-source limit).
    pub src_syn_rate: u32,
    /// Per-source bucket depth, SYNs.
    pub src_syn_burst: u32,
    /// Global SYN+ACK budget, packets/s per CPU (0 = no cap). The controller divides the
    /// operator's machine-wide cap by the number of CPUs.
    pub synack_rate_per_cpu: u32,
    /// Upper bound on the MSS we advertise in SYN+ACKs over IPv4 / IPv6; the ingress
    /// interface's MTU less the headers decides below it ([`IfaceFacts::adv_mss`]).
    pub adv_mss4: u16,
    pub adv_mss6: u16,
    /// Receive window in our SYN+ACK (never zero; SYN segments are never scaled).
    pub synack_window: u16,
    /// IPv4 TTL / IPv6 hop limit of our SYN+ACKs.
    pub ttl: u8,
    /// 1: accept ECN setup (answer ECE) when the client asks; mirrors net.ipv4.tcp_ecn.
    pub ecn: u8,
    /// Window scale (0-14) for keys minted from the next rotation on. Only the controller
    /// reads it: it copies it into [`KeySlot::wscale`] when it rotates, so a live
    /// `synguard set wscale` never desynchronises cookies already in flight.
    /// The data path uses [`KeySlot::wscale`], never this field.
    pub wscale: u8,
    /// Prefix length (48..=64) to which an IPv6 source is masked for the per-source limit
    /// ([`crate::flow::Flow::src_key`]); 0 reads as 64.
    pub src_prefix6: u8,
    /// Test-only switches ([`Config::TEST_BENCH_NO_SOCKET`]); no setting writes them, so
    /// they are 0 in production. Only `cargo xtask bench` sets them, in the pinned map.
    pub test_flags: u8,
    /// How a cookie handshake completes: a [`Handoff`] as u8, chosen by `synguard run`
    /// (`--handoff`) from what the kernel can do. Not a live setting: it decides which
    /// programs are attached.
    pub handoff: u8,
    /// TC sets the bits of `handoff_mask` in `skb->mark` to these on every ACK it hands to a
    /// listener, so a netfilter ruleset (which never saw the SYN or our SYN+ACK, and finds
    /// the ACK `ct state invalid` or `new` without SYN) can accept it. 0: leave the mark.
    pub handoff_mark: u32,
    pub handoff_mask: u32,
    /// Auto mode also engages above this many forged ACKs/s (ACKs to a listener with no
    /// socket and a bad cookie: `AckPassedUnengaged` + `CookieAckInvalid`) ...
    pub ack_rate_on: u32,
    /// ... and disengages only when these and SYNs are both below their `_off` rates.
    pub ack_rate_off: u32,
    /// 1 in this many drops of each reason (per CPU) goes to the `EVENTS` ring buffer as a
    /// [`DropEvent`]; 0: none. Counted from the reason's per-CPU counter, so the sample is
    /// deterministic: the drops that bring the counter to a multiple of it.
    pub event_sample: u32,
}

impl Config {
    /// [`Config::test_flags`] bits for `cargo xtask bench` only, each taking one lookup
    /// out of the SYN path to show its cost: the socket lookup reads as a plain-TCP
    /// listener, and the destination address as local.
    pub const TEST_BENCH_NO_SOCKET: u8 = 2;
    pub const TEST_BENCH_NO_LOCAL: u8 = 4;

    /// The operator defaults (synguard's settings table checks that they agree); the data
    /// path falls back to `synack_window` from here when the map holds 0.
    pub const DEFAULT: Config = Config {
        mode: Mode::Auto as u32,
        syn_rate_on: 1000,
        syn_rate_off: 500,
        src_syn_rate: 0,
        src_syn_burst: 0,
        // The machine-wide default of synguard's settings table, stored for one CPU.
        synack_rate_per_cpu: 250_000,
        adv_mss4: 65495,
        adv_mss6: 65475,
        synack_window: 65535,
        ttl: 64,
        ecn: 1,
        wscale: 7,
        src_prefix6: 64,
        test_flags: 0,
        handoff: Handoff::Kfunc as u8,
        handoff_mark: 0x5347,
        handoff_mask: 0xffff,
        ack_rate_on: 1000,
        ack_rate_off: 500,
        event_sample: 1000,
    };
}

/// One cookie key slot: `KEYS[0]` and `KEYS[1]`. The controller writes them; XDP mints with
/// `KEYS[State::active_key]` and validates against both.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySlot {
    /// SipHash-2-4 key, 128 bits.
    pub k0: u64,
    pub k1: u64,
    /// Monotonic key epoch; part of the MAC input, so a cookie is bound to its key.
    pub epoch: u32,
    /// Window scale we advertise in SYN+ACKs minted with this key. It lives with the key,
    /// not in [`Config`], so a live change cannot desynchronise cookies already in flight:
    /// it takes effect at the next rotation.
    pub wscale: u8,
    /// 1 when the slot holds a key.
    pub valid: u8,
    pub _pad: [u8; 2],
}

/// Runtime state written only by the controller: `STATE[0]`. Each field is a 4-byte value,
/// so the XDP program never sees a torn write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Index (0 or 1) of the key slot used to mint new cookies. The controller writes the
    /// other slot completely first, then flips this.
    pub active_key: u32,
    /// Auto mode: 1 while the SYN rate is above the trigger (with hysteresis).
    pub engaged: u32,
}

/// `KEYS` holds this many key slots: the active one and the previous one.
pub const KEY_SLOTS: u32 = 2;

/// `MINTED[slot]` (two u64s, one per key slot) is [`minted_mark`] of the key epoch XDP last
/// minted a cookie with in that slot, or 0 if it never has. XDP writes it when it mints
/// with a slot whose mark differs (once per rotation: the common case is a read), and
/// accepts a cookie ACK against a slot only while the mark matches the slot's key. A key
/// lives two periods (active, then previous), so a cookie is accepted only if synguard
/// minted with its key within the last two key periods: a fresh daemon, or an `auto`
/// server that never engaged, accepts none, and a forger has nothing to guess against.
/// XDP writes it; the controller clears a slot's mark when it installs a random key there,
/// and with a shared key file (`--key-file`) sets both slots' marks, since then the fleet
/// minted with them, maybe not this host.
pub const MINTED_SLOTS: u32 = KEY_SLOTS;

/// The `MINTED` value for a key epoch: the epoch with bit 32 set, so that 0 (the map's
/// initial value) matches no epoch, 0 included.
#[inline(always)]
pub const fn minted_mark(epoch: u32) -> u64 {
    (1 << 32) | epoch as u64
}

/// `PORTS` is an array of this many u64 words: a 65536-bit bitmap of protected ports.
pub const PORT_WORDS: u32 = 1024;

/// Word index and bit mask of `port` in the `PORTS` bitmap.
#[inline(always)]
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}

/// Key of `SRC_RATE`: an IPv4 source as a /32, or an IPv6 source as its /64.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SrcKey {
    /// 4 or 6.
    pub family: u32,
    pub _pad: u32,
    /// IPv4: the address in the first 4 bytes. IPv6: the /64 prefix in the first 8 bytes.
    pub addr: [u8; 8],
}

/// A token bucket in `SRC_RATE` (per source) and `SYNACK_BUCKET` (per CPU).
/// The level is kept in nanotokens: refilling at `rate` tokens/s adds exactly
/// `rate * elapsed_ns` of them, so refill needs no division and loses no fractions.
/// The arithmetic is `TokenBucket::take`, in `crate::bucket`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub nanotokens: u64,
    pub last_ns: u64,
}

/// Capacity of the per-source LRU.
pub const SRC_RATE_ENTRIES: u32 = 65536;

/// Size of the `EVENTS` ring buffer in bytes (a power-of-two number of pages): 4096
/// events of 64 bytes (48 and the kernel's 8-byte header, rounded to 8), about 4 s of
/// the default sample under a 1 Mpps single-reason flood on one CPU, before a reader that
/// has fallen behind loses events (and only events: the verdict never waits on it).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// `DropEvent::vlan` of a tag that is not there.
pub const VLAN_NONE: u16 = 0xffff;

/// One sampled drop in the `EVENTS` ring buffer, as the XDP counting site writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// The source address in network order (IPv4 in the first 4 bytes); zero when
    /// `family` is 0.
    pub src: [u8; 16],
    /// The [`Counter`] the frame was counted under.
    pub reason: u32,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// The TCP destination port (0 when `family` is 0).
    pub dst_port: u16,
    /// The VLAN IDs of the outer and inner tag, [`VLAN_NONE`] where there is none.
    pub vlan: [u16; 2],
    /// 4 or 6; 0 for a frame whose TCP header was never located (`uninspectable`).
    pub family: u8,
    /// The TCP flags byte (0 when `family` is 0, or the header is cut short).
    pub tcp_flags: u8,
    /// 1: monitor mode passed the frame, counted under a drop reason (it would have been
    /// dropped); 0: dropped.
    pub passed: u8,
    pub _pad: [u8; 7],
}

/// The per-CPU `EVENT_SCRATCH` value: the drop event being built, and the `SRC_DROPS` key
/// and first value. In map memory rather than on the BPF stack, which the pipeline all but
/// fills (512 bytes for the whole call chain).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventScratch {
    pub event: DropEvent,
    pub key: SrcKey,
    pub first: SrcDrops,
}

/// Per-source drop counts in `SRC_DROPS` (per CPU), keyed like `SRC_RATE`
/// ([`crate::flow::Flow::src_key`]); written only when a frame is dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcDrops {
    /// Frames of the source counted under a drop reason.
    pub drops: u64,
    /// Of those, SYNs over the per-source budget (`rate_limited`).
    pub rate_limited: u64,
    /// `bpf_ktime_get_ns()` of the last one.
    pub last_ns: u64,
}

/// Capacity of the `SRC_DROPS` LRU: the heaviest droppers of a flood stay in it, spoofed
/// one-packet sources churn through. Per-CPU values: 24 bytes times the CPUs per entry.
pub const SRC_DROPS_ENTRIES: u32 = 4096;
/// Capacity of each allow/deny LPM trie.
pub const LIST_ENTRIES: u32 = 16384;

/// `LIST_FLAGS[slot]` is 1 while that allow/deny trie may hold entries and 0 when it is known
/// empty, so the data path skips the LPM lookups (two per packet to a protected port, about
/// 25 ns) when there is nothing to find. `allow|deny add` only ever writes 1 to its own slot;
/// the running daemon recounts every tick and writes 0 or 1. So a flag can read 0 while its
/// list has entries for at most one tick (a recount racing an add), and without a daemon
/// flags only go from 0 to 1.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListSlot {
    Allow4 = 0,
    Allow6 = 1,
    Deny4 = 2,
    Deny6 = 3,
}

pub const LIST_SLOTS: u32 = 4;

/// Key of `LOCAL_ADDRS`: an address of the daemon's network namespace (on any interface),
/// its value a set of `LOCAL_ADDR_*` flags. The daemon keeps the map current from rtnetlink
/// (an RTM_GETADDR dump, then address events); XDP answers a SYN only for a destination
/// flagged [`LOCAL_ADDR_LOCAL`], and never one from a source flagged
/// [`LOCAL_ADDR_BROADCAST`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalAddrKey {
    /// 4 or 6.
    pub family: u32,
    /// Network order; an IPv4 address in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}

impl LocalAddrKey {
    pub const fn v4(a: [u8; 4]) -> LocalAddrKey {
        LocalAddrKey {
            family: 4,
            addr: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    pub const fn v6(a: [u8; 16]) -> LocalAddrKey {
        LocalAddrKey { family: 6, addr: a }
    }
}

/// `LOCAL_ADDRS` value flag: a local unicast address (IFA_LOCAL, else IFA_ADDRESS).
pub const LOCAL_ADDR_LOCAL: u8 = 1;
/// `LOCAL_ADDRS` value flag: the broadcast address (IFA_BROADCAST) of one of the host's
/// IPv4 subnets. A SYN from it would have its SYN+ACK delivered to the whole subnet.
pub const LOCAL_ADDR_BROADCAST: u8 = 2;

/// Capacity of `LOCAL_ADDRS` (values are `LOCAL_ADDR_*` flags).
pub const LOCAL_ADDR_ENTRIES: u32 = 4096;

/// Value of `IFACES`, keyed by ifindex (u32): what the data path needs to know about the
/// ingress interface. Kept current by the daemon from rtnetlink link events (MAC, MTU) and
/// from `net.ipv4.tcp_ecn` (re-read every second). XDP reads it with the one lookup that
/// checks the destination MAC, so the facts cost nothing more per SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceFacts {
    /// The interface's own unicast MAC, which a SYN's destination MAC must equal for XDP
    /// to answer it.
    pub mac: [u8; 6],
    /// 1 when `net.ipv4.tcp_ecn` is 1 or 2, i.e. the kernel would accept ECN setup on a
    /// passive open; our SYN+ACK accepts it only then (and when the `ecn` setting is on).
    pub kernel_ecn: u8,
    pub _pad: u8,
    /// `IFLA_MTU`; 0 if unknown, in which case the configured MSS is advertised as is.
    pub mtu: u32,
}

impl IfaceFacts {
    /// IPv4 / IPv6 + TCP header bytes that the MSS leaves out of the MTU.
    pub const V4_HEADERS: u32 = 40;
    pub const V6_HEADERS: u32 = 60;
    /// The smallest MSS Linux advertises from a route's MTU (`ip_rt_min_advmss`,
    /// `ip6_rt_min_advmss`), whatever the MTU.
    pub const V4_MIN_MSS: u32 = 256;
    pub const V6_MIN_MSS: u32 = 1220;

    /// The MSS our SYN+ACK advertises on this interface, as Linux derives it: the MTU less
    /// the IP and TCP headers, at least Linux's floor, clamped by the configured `clamp`
    /// (`Config::adv_mss4/6`). An unknown MTU (0) leaves the clamp alone.
    #[inline(always)]
    pub const fn adv_mss(&self, v6: bool, clamp: u16) -> u16 {
        let (hdr, floor) = if v6 {
            (Self::V6_HEADERS, Self::V6_MIN_MSS)
        } else {
            (Self::V4_HEADERS, Self::V4_MIN_MSS)
        };
        if self.mtu == 0 {
            return clamp;
        }
        let mut from_mtu = self.mtu.saturating_sub(hdr);
        if from_mtu < floor {
            from_mtu = floor;
        }
        if from_mtu < clamp as u32 {
            from_mtu as u16
        } else {
            clamp
        }
    }
}

/// Capacity of `IFACES`.
pub const IFACE_ENTRIES: u32 = 64;

// Allow/deny LPM tries are keyed by (prefix length, address bytes in network order): aya's
// `lpm_trie::Key<[u8; 4]>` and `Key<[u8; 16]>` on both sides.

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident = $label:literal, )*) => {
        /// One counter per verdict reason; the index into the per-CPU `COUNTERS` array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $( $(#[doc = $doc])* $name, )* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[ $( Counter::$name, )* ];
            /// Stable snake_case name, used by the CLI, JSON and Prometheus labels.
            pub const fn name(self) -> &'static str {
                match self { $( Counter::$name => $label, )* }
            }
        }
    };
}

counters! {
    /// TCP SYN to a protected port.
    SynSeen = "syn_seen",
    /// SYN answered in XDP with a cookie SYN+ACK (XDP_TX): addressed to this host, to a
    /// plain-TCP listener, no socket of its own.
    CookieSent = "cookie_sent",
    /// SYN passed to the kernel (monitor mode, or auto mode while not engaged).
    SynPassed = "syn_passed",
    /// ACK with a valid cookie, handed to TC with metadata.
    CookieAckValid = "cookie_ack_valid",
    /// ACK to a listener, with no socket of its own and a bad cookie: dropped.
    CookieAckInvalid = "cookie_ack_invalid",
    /// ACK with no socket and a bad cookie, passed because cookies are not engaged.
    AckPassedUnengaged = "ack_passed_unengaged",
    /// Engaged: ACK to a listener with no cookie of ours but one the kernel minted (before
    /// an `auto` engage, or for a SYN XDP left to the kernel), passed to the kernel, which
    /// checks it again.
    KernelCookiePass = "kernel_cookie_pass",
    /// Segment of a flow the kernel already has a socket for.
    EstablishedPass = "established_pass",
    /// RST or SYN+ACK to a listener, with no socket of its own behind it: dropped.
    NoSocketDrop = "no_socket_drop",
    FlagSynFin = "flag_syn_fin",
    FlagSynRst = "flag_syn_rst",
    FlagFinRst = "flag_fin_rst",
    FlagFinNoAck = "flag_fin_no_ack",
    FlagPshNoAck = "flag_psh_no_ack",
    FlagUrgNoAck = "flag_urg_no_ack",
    FlagNull = "flag_null",
    FlagXmas = "flag_xmas",
    FlagAll = "flag_all",
    /// Truncated or inconsistent headers, bad lengths, bad options on a protected port.
    Malformed = "malformed",
    /// IPv4 fragment carrying a TCP header to a protected port.
    Fragment = "fragment",
    /// Source matched the deny list.
    Deny = "deny",
    /// Source matched the allow list and bypassed all checks.
    Allow = "allow",
    /// SYN over the per-source budget.
    RateLimited = "rate_limited",
    /// SYN dropped because the SYN+ACK cap was reached.
    SynackCapHit = "synack_cap_hit",
    /// TC handed a cookie ACK to the listener with bpf_sk_assign_tcp_reqsk (and set the
    /// `handoff_mark` bits of its skb mark).
    ReqskAssigned = "reqsk_assigned",
    /// XDP could not store the metadata it had made room for, TC could not parse the
    /// frame, or the kfunc refused the request.
    ReqskFailed = "reqsk_failed",
    /// Any packet seen by XDP (the denominator for everything else).
    PacketsSeen = "packets_seen",
    /// Passed to the kernel: SYN, ACK, RST or SYN+ACK to a protected port that nothing
    /// listens on in this namespace (a port the host DNATs or forwards; the kernel resets
    /// or forwards it, as it would without synguard).
    NoListener = "no_listener",
    /// Passed to the kernel: SYN for a 4-tuple that already has a socket (TIME_WAIT,
    /// request or established), which only the kernel can resolve (a SYN over TIME_WAIT
    /// opens a new connection; one into a live flow gets a challenge ACK).
    ExistingSocket = "existing_socket",
    /// Passed to the kernel: segment to an MPTCP listener, whose handshake the kernel's
    /// own syncookies complete and `bpf_sk_assign_tcp_reqsk` refuses.
    MptcpListener = "mptcp_listener",
    /// Passed to the kernel: SYN (or, with a listener but no valid cookie, ACK, RST or
    /// SYN+ACK) whose destination address is not local to the host (routed through it).
    NotLocal = "not_local",
    /// Passed to the kernel: as `not_local`, for a destination MAC that is not the
    /// interface's own unicast address (broadcast, multicast, another host's, seen in
    /// promiscuous mode).
    NotOurMac = "not_our_mac",
    /// Dropped while engaged: a frame whose port cannot be known (more than two VLAN tags,
    /// an IPv6 extension-header chain beyond the walk's bound or running past the packet).
    Uninspectable = "uninspectable",
    /// Passed while not engaged: as `uninspectable`; the kernel sees what it would alone.
    UninspectablePassed = "uninspectable_passed",
    /// Passed to the kernel: IPv6 segment to a protected port behind a Routing header
    /// with segments left, so for a later hop.
    Ipv6RoutingPass = "ipv6_routing_pass",
    /// Passed while not engaged: first fragment (IPv4 or IPv6) to a listener.
    FragmentPassed = "fragment_passed",
    /// TC: a cookie ACK that XDP validated found no listener any more (it closed between
    /// XDP and TC); passed on, and the kernel resets it.
    TcNoListener = "tc_no_listener",
    /// TC: a cookie ACK that XDP validated found a full socket (a retransmitted ACK whose
    /// first copy already made one); passed on to it.
    TcSocketExists = "tc_socket_exists",
    /// SYN whose answer would reflect: LAND (source = destination), a source that is
    /// multicast, broadcast (limited, or directed to one of the host's subnets), loopback,
    /// unspecified, or IPv4-mapped/-compatible IPv6. Dropped while engaged, passed to the
    /// kernel (which drops most of these itself) while not.
    Reflection = "reflection",
    /// TC: a bare ACK (no SYN, RST or FIN) to a protected port, with no `HANDOFF` entry,
    /// that finds only a listener: a cookie ACK whose entry was lost between XDP and TC
    /// (evicted), or one XDP passed on purpose (not engaged: `ack_passed_unengaged`; the
    /// kernel's cookie: `kernel_cookie_pass`). Above those two, entries are being lost.
    TcAckNoHandoff = "tc_ack_no_handoff",
    /// Filter handoff, engaged: a SYN that passed every filter, passed to the kernel (whose
    /// own syncookies answer it) instead of being answered in XDP.
    SynToKernel = "syn_to_kernel",
    /// Filter handoff, engaged: an ACK to a listener with no socket of its own, passed to
    /// the kernel, which checks its own cookie; XDP validates none. Kernel-cookie handoff
    /// (and `auto` mode) too, for an ACK whose kernel cookie the helper cannot check
    /// (`bpf_tcp_raw_check_syncookie_ipv6` with IPv6 built as a module).
    AckToKernel = "ack_to_kernel",
    /// Kernel-cookie handoff, engaged: a SYN to a plain-TCP listener that the kernel would
    /// not answer with a cookie now (`bpf_tcp_gen_syncookie` declined: `tcp_syncookies` is
    /// 1 and the SYN queue is not full, or 0; the accept queue is full; or the kernel cannot
    /// for this family), passed to the kernel, which handles it as without synguard.
    KernelCookieDeclined = "kernel_cookie_declined",
    /// Passed to the kernel while engaged: a SYN carrying a TCP-MD5 (RFC 2385) or TCP-AO
    /// (RFC 5925) option. Its SYN+ACK must be signed with the listener's key for that peer,
    /// which only the kernel has (and it drops a signed SYN it has no key for).
    TcpSignature = "tcp_signature",
    /// A sampled drop event the `EVENTS` ring buffer had no room for (no reader, or one
    /// slower than the drops): the drop itself is counted under its reason all the same.
    EventsLost = "events_lost",
}

pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

/// What a counter counts, for the metrics: a total every packet (or SYN, or lost event)
/// adds to, the XDP
/// action a verdict reason ended in, or an outcome of the TC hand-off (which adds to a
/// packet XDP already counted a verdict for). Sums of [`Class::Verdict`] counters are
/// packets; totals and hand-off outcomes are kept apart so `sum()` over verdicts means
/// something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Total,
    Verdict(Action),
    Handoff,
}

/// The XDP action behind a verdict reason, as `synguard_verdicts_total{action}` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    Tx,
}

impl Action {
    pub const fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Tx => "tx",
        }
    }
}

impl Counter {
    /// The one table of what each counter means to the metrics. The match is exhaustive,
    /// so a new counter cannot be added without classifying it.
    ///
    /// One reason is not one action everywhere yet: `reflection` counts drops while engaged
    /// and passes while not (unlike `uninspectable`/`uninspectable_passed`), and
    /// `reqsk_failed` is also counted by XDP when the metadata cannot be attached (the
    /// frame passes). Both are classified by their engaged, TC meaning.
    pub const fn class(self) -> Class {
        use Action::*;
        use Counter::*;
        match self {
            PacketsSeen | SynSeen | EventsLost => Class::Total,
            CookieSent => Class::Verdict(Tx),
            SynPassed | CookieAckValid | AckPassedUnengaged | KernelCookiePass
            | EstablishedPass | Allow | NoListener | ExistingSocket | MptcpListener | NotLocal
            | NotOurMac | UninspectablePassed | Ipv6RoutingPass | FragmentPassed | SynToKernel
            | AckToKernel | KernelCookieDeclined | TcpSignature => Class::Verdict(Pass),
            CookieAckInvalid | NoSocketDrop | FlagSynFin | FlagSynRst | FlagFinRst
            | FlagFinNoAck | FlagPshNoAck | FlagUrgNoAck | FlagNull | FlagXmas | FlagAll
            | Malformed | Fragment | Deny | RateLimited | SynackCapHit | Uninspectable
            | Reflection => Class::Verdict(Drop),
            // The metadata channel between XDP and TC is part of the hand-off: a driver that
            // refuses it, an ACK that reaches TC without it, metadata XDP did not write.
            ReqskAssigned | ReqskFailed | TcNoListener | TcSocketExists | TcAckNoHandoff => {
                Class::Handoff
            }
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // Pod means any bit pattern is a valid value and the type has no padding to leak: true
    // of each of these, being repr(C) structs of integers and byte arrays, with padding
    // spelled out as fields (sizes held by `layouts_have_no_implicit_padding`).
    // SAFETY: repr(C), integers only, explicit `_pad`.
    unsafe impl aya::Pod for Config {}
    // SAFETY: repr(C), integers only, explicit `_pad`.
    unsafe impl aya::Pod for KeySlot {}
    // SAFETY: repr(C), two u32s.
    unsafe impl aya::Pod for State {}
    // SAFETY: repr(C), integers and a byte array, explicit `_pad`.
    unsafe impl aya::Pod for SrcKey {}
    // SAFETY: repr(C), two u64s.
    unsafe impl aya::Pod for TokenBucket {}
    // SAFETY: repr(C), a u32 and a byte array; no padding (20 bytes).
    unsafe impl aya::Pod for LocalAddrKey {}
    // SAFETY: repr(C), bytes and a u32, explicit `_pad`; no padding (12 bytes).
    unsafe impl aya::Pod for IfaceFacts {}
    // SAFETY: repr(C), integers and byte arrays, explicit `_pad`; no padding (48 bytes).
    unsafe impl aya::Pod for DropEvent {}
    // SAFETY: repr(C), three u64s.
    unsafe impl aya::Pod for SrcDrops {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Config>(), 56);
        assert_eq!(core::mem::offset_of!(Config, event_sample), 52);
        assert_eq!(size_of::<DropEvent>(), 48);
        assert_eq!(core::mem::offset_of!(DropEvent, vlan), 34);
        assert_eq!(core::mem::offset_of!(DropEvent, passed), 40);
        assert_eq!(size_of::<SrcDrops>(), 24);
        assert_eq!(size_of::<EventScratch>(), 88);
        // The XDP side reads `src`'s first word as a u64: it must be 8-aligned.
        assert_eq!(core::mem::offset_of!(DropEvent, src), 8);
        assert_eq!(core::mem::offset_of!(EventScratch, event), 0);
        assert_eq!(core::mem::offset_of!(Config, handoff_mark), 36);
        assert_eq!(core::mem::offset_of!(Config, ack_rate_on), 44);
        assert_eq!(core::mem::offset_of!(Config, ecn), 31);
        assert_eq!(core::mem::offset_of!(Config, wscale), 32);
        assert_eq!(core::mem::offset_of!(Config, test_flags), 34);
        assert_eq!(core::mem::offset_of!(Config, handoff), 35);
        assert_eq!(size_of::<KeySlot>(), 24);
        assert_eq!(size_of::<State>(), 8);
        assert_eq!(size_of::<SrcKey>(), 16);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(size_of::<LocalAddrKey>(), 20);
        assert_eq!(size_of::<IfaceFacts>(), 12);
    }

    #[test]
    fn specs_are_unique_and_sized_from_the_types() {
        for (i, m) in SPECS.iter().enumerate() {
            assert!(
                SPECS[i + 1..].iter().all(|n| n.name != m.name),
                "{}",
                m.name
            );
            assert!(
                m.max_entries > 0 && (m.value_size > 0 || m.map_type == MapType::RingBuf),
                "{}",
                m.name
            );
        }
        let by_name = |n: &str| SPECS.iter().find(|m| m.name == n).unwrap();
        assert_eq!(by_name(names::ALLOW4).key_size, 8);
        assert_eq!(by_name(names::ALLOW6).key_size, 20);
        assert_eq!(by_name(names::CONFIG).value_size, 56);
        assert_eq!(by_name(names::EVENTS).key_size, 0);
        assert!(EVENTS_BYTES.is_power_of_two() && EVENTS_BYTES.is_multiple_of(4096));
        assert_eq!(
            by_name(names::COUNTERS).max_entries,
            Counter::ALL.len() as u32
        );
        assert_eq!(by_name(names::DENY6).map_flags, BPF_F_NO_PREALLOC);
        assert_eq!(by_name(names::SRC_RATE).map_flags, 0);
        assert_eq!(by_name(names::LOCAL_ADDRS).key_size, 20);
        assert_eq!(by_name(names::IFACES).value_size, 12);
    }

    #[test]
    fn counter_names_are_unique_and_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for d in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), d.name());
            }
        }
    }

    #[test]
    fn every_counter_has_exactly_one_class() {
        let (mut totals, mut verdicts, mut handoffs) = (0, 0, 0);
        for c in Counter::ALL {
            match c.class() {
                Class::Total => totals += 1,
                Class::Verdict(_) => verdicts += 1,
                Class::Handoff => handoffs += 1,
            }
        }
        assert_eq!(totals + verdicts + handoffs, Counter::ALL.len());
        assert_eq!(Counter::PacketsSeen.class(), Class::Total);
        assert_eq!(Counter::SynSeen.class(), Class::Total);
        assert_eq!(Counter::CookieSent.class(), Class::Verdict(Action::Tx));
        assert_eq!(Counter::SynackCapHit.class(), Class::Verdict(Action::Drop));
        assert_eq!(Counter::SynPassed.class(), Class::Verdict(Action::Pass));
        assert_eq!(Counter::ReqskFailed.class(), Class::Handoff);
        // Only cookie SYN+ACKs are transmitted.
        let tx: Vec<_> = Counter::ALL
            .iter()
            .filter(|c| c.class() == Class::Verdict(Action::Tx))
            .collect();
        assert_eq!(tx, [&Counter::CookieSent]);
    }

    #[test]
    fn adv_mss_is_the_mtu_less_headers_clamped() {
        let f = |mtu| IfaceFacts {
            mtu,
            ..IfaceFacts::default()
        };
        assert_eq!(f(1500).adv_mss(false, Config::DEFAULT.adv_mss4), 1460);
        assert_eq!(f(1500).adv_mss(true, Config::DEFAULT.adv_mss6), 1440);
        assert_eq!(f(1400).adv_mss(false, 65495), 1360);
        assert_eq!(f(1400).adv_mss(true, 65475), 1340);
        assert_eq!(f(9000).adv_mss(false, 65495), 8960);
        assert_eq!(f(9000).adv_mss(true, 65475), 8940);
        assert_eq!(f(9000).adv_mss(false, 1200), 1200);
        assert_eq!(f(65536).adv_mss(false, 65495), 65495);
        assert_eq!(f(0).adv_mss(false, 1460), 1460);
        assert_eq!(f(100).adv_mss(false, 1460), 256, "Linux's floor");
        assert_eq!(f(1280).adv_mss(true, 65475), 1220);
        assert_eq!(f(1000).adv_mss(true, 65475), 1220, "Linux's floor");
    }

    #[test]
    fn port_bitmap_covers_all_ports() {
        assert_eq!(port_bit(0), (0, 1));
        assert_eq!(port_bit(65535), (PORT_WORDS - 1, 1 << 63));
        assert_eq!(port_bit(80), (1, 1 << 16));
    }
}
