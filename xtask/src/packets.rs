//! Test packets for `BPF_PROG_TEST_RUN`, built with the tests' one frame builder
//! (`synguard_common::testutil::Seg`, checksums included, so the program sees exactly what a
//! NIC would hand it) and read back with its reader.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, bail};
use synguard_common::{
    flags,
    testutil::{Seg, read_reply},
};

/// One direction of a TCP flow at L2.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
}

impl Flags {
    fn bits(self) -> u8 {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        bit(self.syn, flags::SYN) | bit(self.ack, flags::ACK) | bit(self.fin, flags::FIN)
    }
}

/// Builds an Ethernet/IP/TCP frame without payload; `options` are raw TCP option bytes.
pub fn build(
    f: &Flow,
    flags: Flags,
    seq: u32,
    ack: u32,
    window: u16,
    options: &[u8],
) -> Result<Vec<u8>> {
    let mut s = Seg::syn4();
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    s.v6 = match (f.src.ip(), f.dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            src[..4].copy_from_slice(&a.octets());
            dst[..4].copy_from_slice(&b.octets());
            false
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            src = a.octets();
            dst = b.octets();
            true
        }
        _ => bail!("mixed address families: {} -> {}", f.src, f.dst),
    };
    s.src = src;
    s.dst = dst;
    s.sport = f.src.port();
    s.dport = f.dst.port();
    s.seq = seq;
    // The acknowledgment field means nothing without ACK; keep it zero, as a stack does.
    s.ack = if flags.ack { ack } else { 0 };
    s.flags = flags.bits();
    s.window = window;
    s.options = options.to_vec();
    let mut frame = s.frame();
    frame[..6].copy_from_slice(&f.dst_mac);
    frame[6..12].copy_from_slice(&f.src_mac);
    Ok(frame)
}

const NOP: u8 = 1;
const MSS: u8 = 2;
const WSCALE: u8 = 3;
const SACK_PERM: u8 = 4;
const TIMESTAMP: u8 = 8;

/// The options a Linux client puts in a SYN, byte for byte as Linux lays them out: MSS,
/// SACK-permitted, timestamps, NOP, window scale; without timestamps, MSS, NOP NOP
/// SACK-permitted, NOP window scale.
pub fn syn_options(mss: u16, tsval: Option<u32>) -> Vec<u8> {
    let [m0, m1] = mss.to_be_bytes();
    let mut o = vec![MSS, 4, m0, m1];
    match tsval {
        Some(ts) => {
            o.extend([SACK_PERM, 2, TIMESTAMP, 10]);
            o.extend(ts.to_be_bytes());
            o.extend([0, 0, 0, 0, NOP]);
        }
        None => o.extend([NOP, NOP, SACK_PERM, 2, NOP]),
    }
    o.extend([WSCALE, 3, 7]);
    o
}

/// `n` NOPs: each one step of the options walk.
pub fn nops(n: usize) -> Vec<u8> {
    vec![1; n]
}

/// A cookie ACK's 40 option bytes in the layout whose walk is longest: NOPs, then the
/// timestamps (TSval, TSecr) if given, last.
pub fn worst_ack_options(ts: Option<(u32, Option<u32>)>) -> Vec<u8> {
    match ts {
        None => nops(40),
        Some((tsval, tsecr)) => {
            let mut o = nops(30);
            o.extend([8, 10]);
            o.extend(tsval.to_be_bytes());
            o.extend(tsecr.unwrap_or(0).to_be_bytes());
            o
        }
    }
}

/// The options of a Linux segment on a flow with timestamps: NOP NOP timestamps.
pub fn ack_options(tsval: u32, tsecr: Option<u32>) -> Vec<u8> {
    let Some(ecr) = tsecr else {
        return Vec::new();
    };
    let mut o = vec![NOP, NOP, TIMESTAMP, 10];
    o.extend(tsval.to_be_bytes());
    o.extend(ecr.to_be_bytes());
    o
}

/// What a SYN+ACK says that the client's ACK must echo.
#[derive(Debug, Clone, Copy)]
pub struct SynAck {
    pub seq: u32,
    pub ack: u32,
    /// Its TSval, when it carries timestamps.
    pub tsval: Option<u32>,
}

/// Reads the program's output as a SYN+ACK. What is not a TCP SYN+ACK is an error; a SYN+ACK
/// with wrong lengths or checksums fails the frame reader's own assertions (a bug in the
/// program under test, not a case to skip).
pub fn parse_synack(frame: &[u8]) -> Result<SynAck> {
    let l3 = match frame.get(12..14) {
        Some([0x08, 0x00]) => 14,
        Some([0x86, 0xdd]) => 14,
        _ => bail!("output is not IPv4 or IPv6 over Ethernet"),
    };
    let (proto, l4) = match frame.get(l3).map(|v| v >> 4) {
        Some(4) => (frame.get(l3 + 9), l3 + usize::from(frame[l3] & 0x0f) * 4),
        Some(6) => (frame.get(l3 + 6), l3 + 40),
        _ => bail!("output has no IP header"),
    };
    if proto != Some(&6) || frame.len() < l4 + 20 {
        bail!("output is not TCP");
    }
    if frame[l4 + 13] & (flags::SYN | flags::ACK) != flags::SYN | flags::ACK {
        bail!("output is not a SYN+ACK");
    }
    let r = read_reply(frame);
    Ok(SynAck {
        seq: r.seq,
        ack: r.ack,
        tsval: timestamp_value(&r.options),
    })
}

/// TSval of the timestamp option in raw TCP option bytes, if there is one.
fn timestamp_value(mut o: &[u8]) -> Option<u32> {
    while let [kind, rest @ ..] = o {
        match *kind {
            0 => return None,
            NOP => o = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                if len < 2 || len > o.len() {
                    return None;
                }
                if *kind == TIMESTAMP && len == 10 {
                    return Some(u32::from_be_bytes(o[2..6].try_into().ok()?));
                }
                o = &o[len..];
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts are Linux's, byte for byte (what etherparse produced before).
    #[test]
    fn option_layouts_are_linuxs() {
        assert_eq!(
            syn_options(1460, Some(0x0102_0304)),
            [
                2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7
            ]
        );
        assert_eq!(
            syn_options(1440, None),
            [2, 4, 5, 160, 1, 1, 4, 2, 1, 3, 3, 7]
        );
        assert_eq!(
            ack_options(5, Some(6)),
            [1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6]
        );
        assert!(ack_options(5, None).is_empty());
        assert_eq!(worst_ack_options(None), vec![1; 40]);
        let w = worst_ack_options(Some((5, Some(6))));
        assert_eq!(
            (w.len(), &w[..30], &w[30..]),
            (40, &[1u8; 30][..], &[8, 10, 0, 0, 0, 5, 0, 0, 0, 6][..])
        );
    }

    #[test]
    fn a_built_syn_ack_reads_back() {
        let flow = Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "[2001:2::1]:80".parse().unwrap(),
            dst: "[2001:2::2]:4000".parse().unwrap(),
        };
        let syn_ack = Flags {
            syn: true,
            ack: true,
            ..Default::default()
        };
        let f = build(&flow, syn_ack, 7, 9, 100, &syn_options(1440, Some(42))).unwrap();
        assert_eq!(f[..6], flow.dst_mac);
        let sa = parse_synack(&f).unwrap();
        assert_eq!((sa.seq, sa.ack, sa.tsval), (7, 9, Some(42)));
        let ack = Flags {
            ack: true,
            ..Default::default()
        };
        let f = build(&flow, ack, 7, 9, 100, &[]).unwrap();
        assert!(parse_synack(&f).is_err());
    }
}
