//! Test packets for `BPF_PROG_TEST_RUN`, built and parsed with etherparse (checksums
//! included, so the program sees exactly what a NIC would hand it).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};
use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

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

/// Builds an Ethernet/IP/TCP frame without payload.
pub fn build(
    f: &Flow,
    flags: Flags,
    seq: u32,
    ack: u32,
    window: u16,
    options: &[TcpOptionElement],
) -> Result<Vec<u8>> {
    let b = PacketBuilder::ethernet2(f.src_mac, f.dst_mac);
    let b = match (f.src.ip(), f.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => bail!("mixed address families"),
    };
    let mut t = b.tcp(f.src.port(), f.dst.port(), seq, window);
    if flags.syn {
        t = t.syn();
    }
    if flags.fin {
        t = t.fin();
    }
    if flags.ack {
        t = t.ack(ack);
    }
    let t = t.options(options).context("TCP options")?;
    let mut v = Vec::new();
    t.write_to_vec(&mut v, &[]).context("building a frame")?;
    Ok(v)
}

/// The options a Linux client puts in a SYN, byte for byte as Linux lays them out: MSS,
/// SACK-permitted, timestamps, NOP, window scale; without timestamps, MSS, NOP NOP
/// SACK-permitted, NOP window scale.
pub fn syn_options(mss: u16, tsval: Option<u32>) -> Vec<TcpOptionElement> {
    use TcpOptionElement::*;
    match tsval {
        Some(ts) => vec![
            MaximumSegmentSize(mss),
            SelectiveAcknowledgementPermitted,
            Timestamp(ts, 0),
            Noop,
            WindowScale(7),
        ],
        None => vec![
            MaximumSegmentSize(mss),
            Noop,
            Noop,
            SelectiveAcknowledgementPermitted,
            Noop,
            WindowScale(7),
        ],
    }
}

/// The options of a Linux segment on a flow with timestamps: NOP NOP timestamps.
pub fn ack_options(tsval: u32, tsecr: Option<u32>) -> Vec<TcpOptionElement> {
    use TcpOptionElement::*;
    tsecr
        .map(|ecr| vec![Noop, Noop, Timestamp(tsval, ecr)])
        .unwrap_or_default()
}

/// What a SYN+ACK says that the client's ACK must echo.
#[derive(Debug, Clone, Copy)]
pub struct SynAck {
    pub seq: u32,
    pub ack: u32,
    /// Its TSval, when it carries timestamps.
    pub tsval: Option<u32>,
}

pub fn parse_synack(frame: &[u8]) -> Result<SynAck> {
    let p = SlicedPacket::from_ethernet(frame).context("parsing the program's output")?;
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        bail!("output is not TCP");
    };
    if !(tcp.syn() && tcp.ack()) {
        bail!("output is not a SYN+ACK");
    }
    let tsval = tcp.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::Timestamp(v, _)) => Some(v),
        _ => None,
    });
    Ok(SynAck {
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        tsval,
    })
}
