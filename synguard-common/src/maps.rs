//! The map ABI between the XDP/TC programs and the controller.
//!
//! Every type here is `#[repr(C)]` with explicit padding so its layout is identical in the
//! BPF object and in userspace. Map names are the pin names under
//! `/sys/fs/bpf/synguard/<iface>/`.

/// Pin and map names. One home for them so the eBPF side and the controller cannot drift.
pub mod names {
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
    pub const XDP_PROG: &str = "synguard_xdp";
    pub const TC_PROG: &str = "synguard_tc";
}

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
    pub const fn from_u32(v: u32) -> Option<Mode> {
        match v {
            0 => Some(Mode::Monitor),
            1 => Some(Mode::Auto),
            2 => Some(Mode::Always),
            _ => None,
        }
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
    /// MSS we advertise in SYN+ACKs over IPv4 / IPv6.
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
    pub _pad: [u8; 3],
}

impl Config {
    pub const DEFAULT: Config = Config {
        mode: Mode::Always as u32,
        syn_rate_on: 1000,
        syn_rate_off: 500,
        src_syn_rate: 0,
        src_syn_burst: 0,
        synack_rate_per_cpu: 0,
        adv_mss4: 1460,
        adv_mss6: 1440,
        synack_window: 65535,
        ttl: 64,
        ecn: 1,
        wscale: 7,
        _pad: [0; 3],
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

/// Allow/deny LPM tries are keyed by (prefix length, address bytes in network order): aya's
/// `lpm_trie::Key<[u8; 4]>` and `Key<[u8; 16]>` on both sides.
/// What XDP hands to TC in the packet metadata area for an ACK whose cookie it validated.
/// The field set is what `bpf_sk_assign_tcp_reqsk` needs (`struct bpf_tcp_req_attrs`).
/// Size is a multiple of 4, as `bpf_xdp_adjust_meta` requires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieMeta {
    /// [`CookieMeta::MAGIC`]; TC ignores metadata without it.
    pub magic: u32,
    pub rcv_tsval: u32,
    pub rcv_tsecr: u32,
    pub mss: u16,
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    pub ecn_ok: u8,
    pub wscale_ok: u8,
    pub sack_ok: u8,
    pub tstamp_ok: u8,
}

impl CookieMeta {
    pub const MAGIC: u32 = 0x5347_4b31; // "SGK1"
}

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
    /// SYN answered in XDP with a cookie SYN+ACK (XDP_TX).
    CookieSent = "cookie_sent",
    /// SYN passed to the kernel (monitor mode, or auto mode while not engaged).
    SynPassed = "syn_passed",
    /// ACK with a valid cookie, handed to TC with metadata.
    CookieAckValid = "cookie_ack_valid",
    /// ACK with no socket and a bad cookie: dropped.
    CookieAckInvalid = "cookie_ack_invalid",
    /// ACK with no socket and a bad cookie, passed because cookies are not engaged.
    AckPassedUnengaged = "ack_passed_unengaged",
    /// Segment of a flow the kernel already has a socket for.
    EstablishedPass = "established_pass",
    /// RST or SYN+ACK with no socket behind it: dropped.
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
    /// TC handed a cookie ACK to the listener with bpf_sk_assign_tcp_reqsk.
    ReqskAssigned = "reqsk_assigned",
    /// TC found no listener, or the kfunc refused the request.
    ReqskFailed = "reqsk_failed",
    /// Any packet seen by XDP (the denominator for everything else).
    PacketsSeen = "packets_seen",
}

pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding and no pointers.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for KeySlot {}
    unsafe impl aya::Pod for State {}
    unsafe impl aya::Pod for SrcKey {}
    unsafe impl aya::Pod for TokenBucket {}
    unsafe impl aya::Pod for CookieMeta {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Config>(), 36);
        assert_eq!(core::mem::offset_of!(Config, ecn), 31);
        assert_eq!(core::mem::offset_of!(Config, wscale), 32);
        assert_eq!(size_of::<KeySlot>(), 24);
        assert_eq!(size_of::<State>(), 8);
        assert_eq!(size_of::<SrcKey>(), 16);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(size_of::<CookieMeta>() % 4, 0);
        assert_eq!(size_of::<CookieMeta>(), 20);
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
    fn port_bitmap_covers_all_ports() {
        assert_eq!(port_bit(0), (0, 1));
        assert_eq!(port_bit(65535), (PORT_WORDS - 1, 1 << 63));
        assert_eq!(port_bit(80), (1, 1 << 16));
    }
}
