//! The map definitions: the kernel half of the ABI in `synguard_common::maps`.
//!
//! Every map is pinned by name under /sys/fs/bpf/synguard/<iface>/ by the controller, which
//! reuses them on restart. Each static's identifier is its map name (`#[map]` without
//! `name =`), which must be the one in `synguard_common::maps::names`; its types and sizes
//! must be the row of `synguard_common::maps::SPECS`. synguard/tests/map_abi.rs checks
//! the built object against that table.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use synguard_common::handoff::{CookieMeta, HandoffEntry, HandoffKey};
use synguard_common::kernel_cookie::CookieHeaders;
use synguard_common::maps::{
    COUNTER_COUNT, Config, Counter, EVENTS_BYTES, EventScratch, HANDOFF_ENTRIES, IFACE_ENTRIES,
    IfaceFacts, KEY_SLOTS, KeySlot, LIST_ENTRIES, LIST_SLOTS, LOCAL_ADDR_ENTRIES, LocalAddrKey,
    MINTED_SLOTS, PORT_WORDS, SRC_DROPS_ENTRIES, SRC_RATE_ENTRIES, SrcDrops, SrcKey, State,
    TokenBucket,
};

#[map]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
pub static KEYS: Array<KeySlot> = Array::pinned(KEY_SLOTS, 0);
#[map]
pub static STATE: Array<State> = Array::pinned(1, 0);
#[map]
pub static PORTS: Array<u64> = Array::pinned(PORT_WORDS, 0);
#[map]
pub static ALLOW4: LpmTrie<[u8; 4], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map]
pub static ALLOW6: LpmTrie<[u8; 16], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map]
pub static DENY4: LpmTrie<[u8; 4], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map]
pub static DENY6: LpmTrie<[u8; 16], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map]
pub static SRC_RATE: LruHashMap<SrcKey, TokenBucket> = LruHashMap::pinned(SRC_RATE_ENTRIES, 0);
#[map]
pub static SYNACK_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::pinned(1, 0);
#[map]
pub static LIST_FLAGS: Array<u32> = Array::pinned(LIST_SLOTS, 0);
#[map]
pub static MINTED: Array<u64> = Array::pinned(MINTED_SLOTS, 0);
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);
#[map]
pub static LOCAL_ADDRS: HashMap<LocalAddrKey, u8> = HashMap::pinned(LOCAL_ADDR_ENTRIES, 0);
#[map]
pub static IFACES: HashMap<u32, IfaceFacts> = HashMap::pinned(IFACE_ENTRIES, 0);
#[map]
pub static HANDOFF: LruHashMap<HandoffKey, CookieMeta> = LruHashMap::pinned(HANDOFF_ENTRIES, 0);
/// XDP's scratch slot for a `HANDOFF` entry (see `xdp::XdpEnv::hand_off`).
#[map]
pub static HANDOFF_SCRATCH: PerCpuArray<HandoffEntry> = PerCpuArray::pinned(1, 0);
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);
#[map]
pub static SRC_DROPS: LruPerCpuHashMap<SrcKey, SrcDrops> =
    LruPerCpuHashMap::pinned(SRC_DROPS_ENTRIES, 0);
/// Where the counting site builds a drop's event. Through map memory, which the verifier
/// does not track, so the event code after it is verified once, not once for every path
/// (and reason constant) of the pipeline that ends in a drop.
#[map]
pub static EVENT_SCRATCH: PerCpuArray<EventScratch> = PerCpuArray::pinned(1, 0);
/// XDP's scratch slot for the headers `bpf_tcp_gen_syncookie` reads (see
/// `xdp::XdpEnv::kernel_cookie`).
#[map]
pub static COOKIE_SCRATCH: PerCpuArray<CookieHeaders> = PerCpuArray::pinned(1, 0);

#[inline(always)]
pub fn count(c: Counter) {
    let _ = count_value(c);
}

/// Counts `c` and returns this CPU's count of it, the increment included (0 if the map
/// lacks the slot).
#[inline(always)]
pub fn count_value(c: Counter) -> u64 {
    match COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot; XDP and TC programs are not preempted on their CPU, so
        // nothing else touches it during the increment.
        Some(v) => unsafe {
            *v += 1;
            *v
        },
        None => 0,
    }
}
