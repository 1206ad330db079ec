//! The TCP options parser on arbitrary option areas, held to a reference written here
//! from its documented rules (one plain loop, no fast path, no verifier shapes): the two
//! must agree on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::wire::tcp_options::{
    self, MAX_LEN, MAX_WSCALE, OptionsError, TcpOptions, WSCALE_ABSENT,
};

/// The documented rules (Linux's `tcp_parse_options`, which never fails): EOL ends, NOP is
/// skipped; any other kind without a length byte in the area, or with a length below 2 or
/// past the area, ends the walk keeping what came before; the four kinds we keep count
/// only with their exact length (MSS 4, window scale 3, SACK-permitted 2, timestamps 10)
/// and are skipped otherwise; a repeated option overwrites the earlier one, but an MSS of
/// 0 is ignored; shifts above 14 count as 14; TCP-MD5 (19) and TCP-AO (29) of any length
/// mark the segment signed. The only error: an area longer than 40 bytes (no data offset
/// gives one).
fn reference(area: &[u8]) -> Result<TcpOptions, OptionsError> {
    if area.len() > MAX_LEN {
        return Err(OptionsError::Truncated);
    }
    let mut o = TcpOptions::NONE;
    let mut i = 0;
    while i < area.len() {
        match area[i] {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = area.get(i + 1) else {
            break;
        };
        let len = usize::from(len);
        if len < 2 || i + len > area.len() {
            break;
        }
        let body = &area[i + 2..i + len];
        match (area[i], len) {
            (2, 4) => {
                let mss = u16::from_be_bytes([body[0], body[1]]);
                if mss != 0 {
                    o.mss = mss;
                }
            }
            (3, 3) => o.wscale = body[0].min(MAX_WSCALE),
            (4, 2) => o.sack_ok = true,
            (8, 10) => {
                o.ts = true;
                o.tsval = u32::from_be_bytes(body[0..4].try_into().unwrap());
                o.tsecr = u32::from_be_bytes(body[4..8].try_into().unwrap());
            }
            (19 | 29, _) => o.signed = true,
            _ => {}
        }
        i += len;
    }
    Ok(o)
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: where the area starts in the buffer (as in a frame); the rest is the area,
    // up to 44 bytes so the too-long case is reached too.
    let Some((&lead, rest)) = data.split_first() else {
        return;
    };
    let area = &rest[..rest.len().min(MAX_LEN + 4)];
    let off = usize::from(lead % 8);
    let mut buf = vec![0xa5u8; off];
    buf.extend_from_slice(area);
    let got = tcp_options::parse(&buf[..], off, area.len());
    assert_eq!(got, reference(area), "area {area:02x?}");
    if let Ok(o) = got {
        assert!(o.wscale <= MAX_WSCALE || o.wscale == WSCALE_ABSENT);
    }
});
