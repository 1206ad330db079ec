//! The map definitions: the kernel half of the ABI in `synguard_common::maps`.
//!
//! Every map is pinned by name under /sys/fs/bpf/synguard/<iface>/ by the controller, which
//! reuses them on restart; the names match `synguard_common::maps::names`.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray},
};
use synguard_common::maps::{
    COUNTER_COUNT, Config, Counter, KeySlot, LIST_ENTRIES, LIST_SLOTS, PORT_WORDS,
    SRC_RATE_ENTRIES, SrcKey, State, TokenBucket,
};

#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map(name = "KEYS")]
pub static KEYS: Array<KeySlot> = Array::pinned(2, 0);
#[map(name = "STATE")]
pub static STATE: Array<State> = Array::pinned(1, 0);
#[map(name = "PORTS")]
pub static PORTS: Array<u64> = Array::pinned(PORT_WORDS, 0);
#[map(name = "ALLOW4")]
pub static ALLOW4: LpmTrie<[u8; 4], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "ALLOW6")]
pub static ALLOW6: LpmTrie<[u8; 16], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "DENY4")]
pub static DENY4: LpmTrie<[u8; 4], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "DENY6")]
pub static DENY6: LpmTrie<[u8; 16], u8> = LpmTrie::pinned(LIST_ENTRIES, 0);
#[map(name = "SRC_RATE")]
pub static SRC_RATE: LruHashMap<SrcKey, TokenBucket> = LruHashMap::pinned(SRC_RATE_ENTRIES, 0);
#[map(name = "SYNACK_BUCKET")]
pub static SYNACK_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::pinned(1, 0);
#[map(name = "LIST_FLAGS")]
pub static LIST_FLAGS: Array<u32> = Array::pinned(LIST_SLOTS, 0);
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(v) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot; XDP and TC programs are not preempted on their CPU, so
        // nothing else touches it during the increment.
        unsafe { *v += 1 };
    }
}
