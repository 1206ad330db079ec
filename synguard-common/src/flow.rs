//! The 4-tuple of a TCP flow, always seen from the client: source = the SYN's sender.

use crate::maps::SrcKey;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

/// Addresses in network byte order; an IPv4 address uses the first 4 bytes, the rest
/// zero, so one layout serves both families without an enum payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub family: Family,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

#[inline(always)]
fn widen(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[inline(always)]
fn first4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

impl Flow {
    #[inline(always)]
    pub fn v4(saddr: [u8; 4], daddr: [u8; 4], sport: u16, dport: u16) -> Flow {
        Flow {
            family: Family::V4,
            saddr: widen(saddr),
            daddr: widen(daddr),
            sport,
            dport,
        }
    }

    #[inline(always)]
    pub fn v6(saddr: [u8; 16], daddr: [u8; 16], sport: u16, dport: u16) -> Flow {
        Flow {
            family: Family::V6,
            saddr,
            daddr,
            sport,
            dport,
        }
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.family == Family::V6
    }

    /// The IPv4 source (meaningful for [`Family::V4`] only).
    #[inline(always)]
    pub fn saddr4(&self) -> [u8; 4] {
        first4(&self.saddr)
    }

    /// The IPv4 destination (meaningful for [`Family::V4`] only).
    #[inline(always)]
    pub fn daddr4(&self) -> [u8; 4] {
        first4(&self.daddr)
    }

    /// The `SRC_RATE` key of the client: its /32, or its /64 (one host's worth of IPv6
    /// addresses, which an attacker gets for free).
    #[inline(always)]
    pub fn src_key(&self) -> SrcKey {
        let s = &self.saddr;
        match self.family {
            Family::V4 => SrcKey {
                family: 4,
                _pad: 0,
                addr: [s[0], s[1], s[2], s[3], 0, 0, 0, 0],
            },
            Family::V6 => SrcKey {
                family: 6,
                _pad: 0,
                addr: [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]],
            },
        }
    }

    /// Both ends are unicast, non-loopback, specified addresses, so answering the SYN
    /// sends a unicast reply from an address that can own a connection. The kernel would
    /// drop SYNs that fail this too.
    #[inline(always)]
    pub fn reflectable(&self) -> bool {
        match self.family {
            Family::V4 => unicast4(self.saddr[0]) && unicast4(self.daddr[0]),
            Family::V6 => unicast6(&self.saddr) && unicast6(&self.daddr),
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
fn unicast6(a: &[u8; 16]) -> bool {
    let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    a[0] != 0xff && !(hi == 0 && lo <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut mc = u;
        mc[0] = 0xff;
        assert!(!ok6(u, mc));
    }
}
