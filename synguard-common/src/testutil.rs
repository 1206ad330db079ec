//! Test-only reference code, written plainly and independently of the code under test:
//! the checksum by its definition, a frame builder and a frame reader.

/// RFC 1071 by the book: sum of big-endian 16-bit words (odd byte padded), folded,
/// complemented. Data that includes a correct checksum gives 0.
pub fn ref_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in data.chunks(2) {
        let hi = chunk[0] as u64;
        let lo = chunk.get(1).copied().unwrap_or(0) as u64;
        sum += (hi << 8) | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5e];

/// A TCP segment from client to server, as a frame.
#[derive(Clone, Debug)]
pub struct Seg {
    pub v6: bool,
    /// 802.1Q tag control (VID etc.) if tagged: the innermost tag.
    pub vlan: Option<u16>,
    /// Tags (TPID, TCI) outside `vlan`, outermost first.
    pub outer_tags: Vec<(u16, u16)>,
    /// IPv6 extension headers (type, bytes), in order; byte 0 of each (its next header)
    /// is filled in by `frame`.
    pub ext_headers: Vec<(u8, Vec<u8>)>,
    /// IPv4 uses the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes; padded with EOL to a multiple of 4.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// IPv4 option bytes (multiple of 4).
    pub ip_options: Vec<u8>,
    /// IPv4 flags+fragment offset word.
    pub frag: u16,
    /// Bytes of link-layer padding after the IP datagram.
    pub trailer: usize,
}

impl Seg {
    pub fn syn4() -> Seg {
        let mut src = [0; 16];
        src[..4].copy_from_slice(&[192, 0, 2, 10]);
        let mut dst = [0; 16];
        dst[..4].copy_from_slice(&[198, 51, 100, 1]);
        Seg {
            v6: false,
            vlan: None,
            outer_tags: vec![],
            ext_headers: vec![],
            src,
            dst,
            sport: 40123,
            dport: 80,
            seq: 0x1234_5678,
            ack: 0,
            flags: 0x02,
            window: 64240,
            options: linux_syn_options(0x0102_0304),
            payload: vec![],
            ip_options: vec![],
            frag: 0x4000,
            trailer: 0,
        }
    }

    pub fn syn6() -> Seg {
        let mut s = Seg::syn4();
        s.v6 = true;
        s.src = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        s.dst = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        ];
        s.options = linux_syn_options6(0x0102_0304);
        s
    }

    /// Every VLAN tag (TPID, TCI), outermost first.
    pub fn all_tags(&self) -> Vec<(u16, u16)> {
        let mut t = self.outer_tags.clone();
        t.extend(self.vlan.map(|tci| (0x8100, tci)));
        t
    }

    pub fn addr_len(&self) -> usize {
        if self.v6 { 16 } else { 4 }
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push((((20 + opts.len()) / 4) as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&opts);
        tcp.extend_from_slice(&self.payload);
        let a = self.addr_len();
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src[..a]);
        pseudo.extend_from_slice(&self.dst[..a]);
        if self.v6 {
            pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        } else {
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        }
        pseudo.extend_from_slice(&tcp);
        let c = ref_checksum(&pseudo);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::new();
        f.extend_from_slice(&SERVER_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        for (tpid, tci) in self.all_tags() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        if self.v6 {
            let mut ext = Vec::new();
            for (i, (_, bytes)) in self.ext_headers.iter().enumerate() {
                let mut h = bytes.clone();
                h[0] = self.ext_headers.get(i + 1).map_or(6, |n| n.0);
                ext.extend(h);
            }
            let first = self.ext_headers.first().map_or(6, |h| h.0);
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[first, 64]);
            f.extend_from_slice(&self.src);
            f.extend_from_slice(&self.dst);
            f.extend_from_slice(&ext);
        } else {
            let hl = 20 + self.ip_options.len();
            let mut ip = vec![0x40 | (hl / 4) as u8, 0];
            ip.extend_from_slice(&((hl + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0xab, 0xcd]);
            ip.extend_from_slice(&self.frag.to_be_bytes());
            ip.extend_from_slice(&[57, 6, 0, 0]);
            ip.extend_from_slice(&self.src[..4]);
            ip.extend_from_slice(&self.dst[..4]);
            ip.extend_from_slice(&self.ip_options);
            let c = ref_checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&ip);
        }
        f.extend_from_slice(&tcp);
        f.extend(std::iter::repeat_n(0, self.trailer));
        f
    }
}

/// Linux's SYN options: MSS 1460, SACK_PERM, TS(tsval, 0), NOP, WS 7.
pub fn linux_syn_options(tsval: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    o
}

/// The same with the IPv6 MSS (1440).
pub fn linux_syn_options6(tsval: u32) -> Vec<u8> {
    let mut o = linux_syn_options(tsval);
    o[2..4].copy_from_slice(&1440u16.to_be_bytes());
    o
}

/// A frame read back field by field, with both checksums verified on the way.
#[derive(Clone, Debug)]
pub struct Reply {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// The TCI of a single 802.1Q tag.
    pub vlan: Option<u16>,
    /// Every tag (TPID, TCI), outermost first.
    pub tags: Vec<(u16, u16)>,
    pub v6: bool,
    pub src: Vec<u8>,
    pub dst: Vec<u8>,
    pub ttl: u8,
    pub ip_id: u16,
    pub ip_frag: u16,
    pub tos: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    pub options: Vec<u8>,
    pub payload_len: usize,
    /// Bytes after the IP datagram.
    pub padding: usize,
}

/// Panics (failing the test) on any inconsistency: lengths, checksums, versions.
pub fn read_reply(f: &[u8]) -> Reply {
    let mut off = 12;
    let mut tags = Vec::new();
    while f[off..off + 2] == [0x81, 0x00] || f[off..off + 2] == [0x88, 0xa8] {
        tags.push((
            u16::from_be_bytes([f[off], f[off + 1]]),
            u16::from_be_bytes([f[off + 2], f[off + 3]]),
        ));
        off += 4;
    }
    let vlan = match tags[..] {
        [(0x8100, tci)] => Some(tci),
        _ => None,
    };
    let et = u16::from_be_bytes([f[off], f[off + 1]]);
    let l3 = off + 2;
    let (v6, src, dst, ttl, ip_id, ip_frag, tos, l4, seg_len, pseudo);
    if et == 0x0800 {
        v6 = false;
        let ip = &f[l3..l3 + 20];
        assert_eq!(ip[0], 0x45, "IPv4 without options");
        assert_eq!(ref_checksum(ip), 0, "IPv4 header checksum");
        let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        assert!(l3 + tot <= f.len(), "IP total length within the frame");
        assert_eq!(ip[9], 6);
        tos = ip[1];
        ip_id = u16::from_be_bytes([ip[4], ip[5]]);
        ip_frag = u16::from_be_bytes([ip[6], ip[7]]);
        ttl = ip[8];
        src = ip[12..16].to_vec();
        dst = ip[16..20].to_vec();
        l4 = l3 + 20;
        seg_len = tot - 20;
        let mut ph = src.clone();
        ph.extend_from_slice(&dst);
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&(seg_len as u16).to_be_bytes());
        pseudo = ph;
    } else {
        assert_eq!(et, 0x86dd);
        v6 = true;
        let ip = &f[l3..l3 + 40];
        assert_eq!(ip[0] >> 4, 6);
        tos = (u16::from_be_bytes([ip[0], ip[1]]) >> 4) as u8;
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        assert!(
            l3 + 40 + plen <= f.len(),
            "IPv6 payload + headers within the frame"
        );
        assert_eq!(ip[6], 6);
        ttl = ip[7];
        ip_id = 0;
        ip_frag = 0;
        src = ip[8..24].to_vec();
        dst = ip[24..40].to_vec();
        l4 = l3 + 40;
        seg_len = plen;
        let mut ph = src.clone();
        ph.extend_from_slice(&dst);
        ph.extend_from_slice(&(seg_len as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        pseudo = ph;
    }
    // Anything after the datagram is link-layer padding (a SYN+ACK keeps the SYN's frame
    // length), which a receiver trims by the IP length.
    let t = &f[l4..l4 + seg_len];
    let padding = f.len() - (l4 + seg_len);
    let mut all = pseudo;
    all.extend_from_slice(t);
    assert_eq!(ref_checksum(&all), 0, "TCP checksum");
    let hl = (t[12] >> 4) as usize * 4;
    assert!(hl >= 20 && hl <= t.len());
    Reply {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        vlan,
        tags,
        v6,
        src,
        dst,
        ttl,
        ip_id,
        ip_frag,
        tos,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes(t[4..8].try_into().unwrap()),
        ack: u32::from_be_bytes(t[8..12].try_into().unwrap()),
        flags: t[13],
        window: u16::from_be_bytes([t[14], t[15]]),
        urgent: u16::from_be_bytes([t[18], t[19]]),
        options: t[20..hl].to_vec(),
        payload_len: t.len() - hl,
        padding,
    }
}
