//! The map ABI cannot drift: the eBPF object embedded in the `synguard` binary declares
//! exactly the maps of `synguard_common::maps::SPECS`, with the same types, key and value
//! sizes, max_entries and flags, each pinned by name, and the two programs the loader
//! looks up by `names::XDP_PROG` / `names::TC_PROG`. Parses the object only: no root,
//! no kernel.

use std::collections::BTreeMap;

use aya_obj::{EbpfSectionKind, Map, Object, maps::PinningType};
use synguard_common::maps::{MapSpec, SPECS, names};

/// The same bytes `synguard::loader` embeds.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SYNGUARD_EBPF_OBJECT"));

fn object() -> Object {
    Object::parse(OBJECT).expect("the embedded eBPF object parses")
}

/// The declared maps: `#[map]` statics in the `maps` section. Data sections (`.rodata`
/// and the like) also appear as maps; they hold the object's constants, which aya
/// creates at load time and nothing pins or shares.
fn declared_maps(obj: &Object) -> impl Iterator<Item = (&str, &Map)> {
    obj.maps
        .iter()
        .filter(|(_, m)| {
            matches!(
                m.section_kind(),
                EbpfSectionKind::Maps | EbpfSectionKind::BtfMaps
            )
        })
        .map(|(n, m)| (n.as_str(), m))
}

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

impl From<&MapSpec> for Seen {
    fn from(m: &MapSpec) -> Seen {
        Seen {
            map_type: m.map_type as u32,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            map_flags: m.map_flags,
        }
    }
}

#[test]
fn object_maps_equal_the_common_table() {
    let obj = object();
    let in_object: BTreeMap<&str, Seen> = declared_maps(&obj)
        .map(|(name, m)| {
            (
                name,
                Seen {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                    map_flags: m.map_flags(),
                },
            )
        })
        .collect();
    let in_table: BTreeMap<&str, Seen> = SPECS.iter().map(|m| (m.name, m.into())).collect();
    assert_eq!(in_table.len(), SPECS.len(), "duplicate names in SPECS");
    assert_eq!(
        in_object.keys().collect::<Vec<_>>(),
        in_table.keys().collect::<Vec<_>>(),
        "map names: object vs maps::SPECS"
    );
    for (name, want) in &in_table {
        assert_eq!(&in_object[name], want, "map {name}: object vs maps::SPECS");
    }
}

#[test]
fn every_map_is_pinned_by_name() {
    let obj = object();
    for (name, m) in declared_maps(&obj) {
        assert!(
            matches!(m.pinning(), PinningType::ByName),
            "map {name} is not pinned by name: {:?}",
            m.pinning()
        );
    }
}

#[test]
fn programs_have_the_loader_names() {
    let obj = object();
    let mut progs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
    progs.sort_unstable();
    let mut want = vec![names::XDP_PROG, names::TC_PROG];
    want.sort_unstable();
    assert_eq!(progs, want);
}

/// `bpf_xdp_adjust_head`, `bpf_xdp_adjust_meta`, `bpf_xdp_adjust_tail` (`enum bpf_func_id`):
/// the helpers an XDP program can call that make the kernel mark it as changing packet data.
const PKT_CHANGING_XDP_HELPERS: [(i32, &str); 3] = [
    (44, "bpf_xdp_adjust_head"),
    (54, "bpf_xdp_adjust_meta"),
    (65, "bpf_xdp_adjust_tail"),
];

/// The XDP program calls none of them, anywhere in its code (its own section and the
/// shared `.text` subprograms), dead code included: the kernel marks the program from its
/// whole call graph. Since Linux 6.13 (and 6.12.y) an extension program that changes packet
/// data may not replace a dispatcher stub that does not, which is every libxdp dispatcher
/// before 1.5.5 (Debian's 1.3.1 included), so such a call would keep synguard out of any
/// dispatcher xdp-filter built (the vmtest "share" checks run that live on 6.12).
#[test]
fn the_xdp_program_changes_no_packet_data() {
    let obj = object();
    let xdp = &obj.programs[names::XDP_PROG];
    let tc_section = obj.programs[names::TC_PROG].section_index;
    let mut calls = Vec::new();
    let mut seen_xdp = false;
    for f in obj.functions.values() {
        // The TC program's own section is not the XDP program's code; everything else
        // (the XDP section, .text) may be.
        if f.section_index.0 == tc_section && f.section_index.0 != xdp.section_index {
            continue;
        }
        seen_xdp |= f.section_index.0 == xdp.section_index;
        for insn in &f.instructions {
            // BPF_JMP | BPF_CALL with src_reg 0: a helper call, imm its id.
            if insn.code == 0x85
                && insn.src_reg() == 0
                && let Some((_, name)) = PKT_CHANGING_XDP_HELPERS
                    .iter()
                    .find(|(id, _)| *id == insn.imm)
            {
                calls.push(format!("{} calls {name}", f.name));
            }
        }
    }
    assert!(seen_xdp, "no code found for {}", names::XDP_PROG);
    assert!(calls.is_empty(), "{}", calls.join("\n"));
}
