//! IP addresses and the 4-tuple of a TCP flow, always seen from the client: source = the
//! SYN's sender.

use crate::maps::SrcKey;
use crate::packet::Packet;

/// An IP address as two little-endian words of its 16 bytes (IPv4: its 4 bytes, then
/// zeros). Words, not a byte array: the optimizer splits a `[u8; 16]` into 16 separate
/// values, and in BPF each of those ends up in its own 8-byte stack slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr(pub [u64; 2]);

impl Addr {
    #[inline(always)]
    pub fn from_v4(a: [u8; 4]) -> Addr {
        Addr([u64::from(u32::from_le_bytes(a)), 0])
    }

    #[inline(always)]
    pub fn from_v6(a: [u8; 16]) -> Addr {
        let [
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
            b8,
            b9,
            b10,
            b11,
            b12,
            b13,
            b14,
            b15,
        ] = a;
        Addr([
            u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
            u64::from_le_bytes([b8, b9, b10, b11, b12, b13, b14, b15]),
        ])
    }

    /// The 16 bytes in network order.
    #[inline(always)]
    pub fn octets(&self) -> [u8; 16] {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = self.0[0].to_le_bytes();
        let [b8, b9, b10, b11, b12, b13, b14, b15] = self.0[1].to_le_bytes();
        [
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15,
        ]
    }

    /// The first 4 bytes: the address of an IPv4 flow.
    #[inline(always)]
    pub fn v4_octets(&self) -> [u8; 4] {
        (self.0[0] as u32).to_le_bytes()
    }

    /// Reads an IPv4 address at `off`.
    #[inline(always)]
    pub fn load4<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Addr> {
        Some(Addr::from_v4(p.load::<4>(off)?))
    }

    /// Reads an IPv6 address at `off` as two 8-byte loads.
    #[inline(always)]
    pub fn load6<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Addr> {
        Some(Addr([
            u64::from_le_bytes(p.load::<8>(off)?),
            u64::from_le_bytes(p.load::<8>(off + 8)?),
        ]))
    }

    #[inline(always)]
    pub fn store4<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.v4_octets())
    }

    #[inline(always)]
    pub fn store6<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.0[0].to_le_bytes())?;
        p.store(off + 8, self.0[1].to_le_bytes())
    }

    /// First byte on the wire.
    #[inline(always)]
    fn first(&self) -> u8 {
        self.0[0] as u8
    }
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub family: Family,
    /// The client's address.
    pub src: Addr,
    /// The server's address.
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    #[inline(always)]
    pub fn v4(saddr: [u8; 4], daddr: [u8; 4], sport: u16, dport: u16) -> Flow {
        Flow {
            family: Family::V4,
            src: Addr::from_v4(saddr),
            dst: Addr::from_v4(daddr),
            sport,
            dport,
        }
    }

    #[inline(always)]
    pub fn v6(saddr: [u8; 16], daddr: [u8; 16], sport: u16, dport: u16) -> Flow {
        Flow {
            family: Family::V6,
            src: Addr::from_v6(saddr),
            dst: Addr::from_v6(daddr),
            sport,
            dport,
        }
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.family == Family::V6
    }

    /// The client address bytes (IPv4: 4 bytes, then zeros).
    #[inline(always)]
    pub fn saddr(&self) -> [u8; 16] {
        self.src.octets()
    }

    /// The server address bytes (IPv4: 4 bytes, then zeros).
    #[inline(always)]
    pub fn daddr(&self) -> [u8; 16] {
        self.dst.octets()
    }

    /// The IPv4 client address (meaningful for [`Family::V4`] only).
    #[inline(always)]
    pub fn saddr4(&self) -> [u8; 4] {
        self.src.v4_octets()
    }

    /// The IPv4 server address (meaningful for [`Family::V4`] only).
    #[inline(always)]
    pub fn daddr4(&self) -> [u8; 4] {
        self.dst.v4_octets()
    }

    /// The `SRC_RATE` key of the client: its /32, or its /64 (one host's worth of IPv6
    /// addresses, which an attacker gets for free).
    #[inline(always)]
    pub fn src_key(&self) -> SrcKey {
        match self.family {
            Family::V4 => SrcKey {
                family: 4,
                _pad: 0,
                addr: (self.src.0[0] & 0xffff_ffff).to_le_bytes(),
            },
            Family::V6 => SrcKey {
                family: 6,
                _pad: 0,
                addr: self.src.0[0].to_le_bytes(),
            },
        }
    }

    /// Both ends are unicast, non-loopback, specified addresses, so answering the SYN
    /// sends a unicast reply from an address that can own a connection. The kernel would
    /// drop SYNs that fail this too.
    #[inline(always)]
    pub fn reflectable(&self) -> bool {
        match self.family {
            Family::V4 => unicast4(self.src.first()) && unicast4(self.dst.first()),
            Family::V6 => unicast6(&self.src) && unicast6(&self.dst),
        }
    }
}

/// Not 0/8 ("this network"), 127/8 (loopback), or 224/3 (multicast, reserved, broadcast).
#[inline(always)]
fn unicast4(first_octet: u8) -> bool {
    first_octet != 0 && first_octet != 127 && first_octet < 224
}

/// Not ff00::/8 (multicast), :: (unspecified) or ::1 (loopback).
#[inline(always)]
fn unicast6(a: &Addr) -> bool {
    // ::1 is byte 15 = 1, the top byte of the little-endian second word.
    let unspecified_or_loopback = a.0[0] == 0 && (a.0[1] == 0 || a.0[1] == 1 << 56);
    a.first() != 0xff && !unspecified_or_loopback
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn src_keys() {
        let f = Flow::v4([192, 0, 2, 7], [10, 0, 0, 1], 1234, 80);
        assert_eq!(
            f.src_key(),
            SrcKey {
                family: 4,
                _pad: 0,
                addr: [192, 0, 2, 7, 0, 0, 0, 0]
            }
        );
        let mut s6 = [0u8; 16];
        s6[0] = 0x20;
        s6[1] = 0x01;
        s6[7] = 0x99;
        s6[15] = 1;
        let f = Flow::v6(s6, [1; 16], 1, 2);
        assert_eq!(f.src_key().addr, [0x20, 0x01, 0, 0, 0, 0, 0, 0x99]);
        assert_eq!(f.src_key().family, 6);
    }

    #[test]
    fn reflectable() {
        let ok = |s: [u8; 4], d: [u8; 4]| Flow::v4(s, d, 1, 2).reflectable();
        assert!(ok([10, 1, 2, 3], [10, 0, 0, 1]));
        assert!(!ok([0, 0, 0, 0], [10, 0, 0, 1]));
        assert!(!ok([127, 0, 0, 1], [10, 0, 0, 1]));
        assert!(!ok([224, 0, 0, 1], [10, 0, 0, 1]));
        assert!(!ok([255, 255, 255, 255], [10, 0, 0, 1]));
        assert!(!ok([10, 1, 2, 3], [239, 1, 1, 1]));
        let mut u = [0u8; 16];
        u[0] = 0xfd;
        u[15] = 9;
        let ok6 = |s: [u8; 16], d: [u8; 16]| Flow::v6(s, d, 1, 2).reflectable();
        assert!(ok6(u, u));
        let mut lo = [0u8; 16];
        assert!(!ok6(lo, u));
        lo[15] = 1;
        assert!(!ok6(lo, u));
        lo[15] = 2;
        assert!(ok6(lo, u), "::2 is not special here");
        lo[15] = 1;
        lo[0] = 1;
        assert!(ok6(lo, u));
        let mut mc = u;
        mc[0] = 0xff;
        assert!(!ok6(u, mc));
    }

    proptest! {
        #[test]
        fn addr_roundtrips(a: [u8; 16], b: [u8; 4]) {
            prop_assert_eq!(Addr::from_v6(a).octets(), a);
            prop_assert_eq!(Addr::from_v4(b).v4_octets(), b);
            let mut wide = [0u8; 16];
            wide[..4].copy_from_slice(&b);
            prop_assert_eq!(Addr::from_v4(b).octets(), wide);
            prop_assert_eq!(Addr::load6(&a[..], 0), Some(Addr::from_v6(a)));
            prop_assert_eq!(Addr::load4(&a[..], 3), Some(Addr::from_v4([a[3], a[4], a[5], a[6]])));
            let mut buf = [0u8; 16];
            Addr::from_v6(a).store6(&mut buf[..], 0).unwrap();
            prop_assert_eq!(buf, a);
            Addr::from_v4(b).store4(&mut buf[..], 12).unwrap();
            prop_assert_eq!(&buf[12..], &b[..]);
        }
    }
}
