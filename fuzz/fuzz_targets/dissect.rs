//! The frame dissector on arbitrary bytes: it never panics, a slice and a `RawPacket` (the
//! buffer type the eBPF programs use) locate the same segment, and what it reports is
//! what the bytes say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{dissect::Segment, packet::RawPacket};

fuzz_target!(|frame: &[u8]| {
    let seg = Segment::locate(frame);
    let start = frame.as_ptr() as usize;
    // SAFETY: the range is `frame`, alive and unmodified for the whole call; locate only
    // reads.
    let raw = unsafe { RawPacket::new(start, start + frame.len()) };
    let seg_raw = Segment::locate(&raw);
    assert_eq!(format!("{seg:?}"), format!("{seg_raw:?}"));
    let Some(s) = seg else { return };
    assert!(s.l3 >= 14, "IP header inside the Ethernet header");
    assert_eq!(s.l4, s.l3 + s.ip_hdr_len);
    assert!(s.ip_hdr_len >= 20);
    let ports = &frame[s.l4..s.l4 + 4];
    assert_eq!(u16::from_be_bytes([ports[0], ports[1]]), s.flow.src_port);
    assert_eq!(u16::from_be_bytes([ports[2], ports[3]]), s.flow.dst_port);
});
