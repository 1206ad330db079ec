//! The 4-tuple of a TCP flow, always seen from the client (source = the SYN's sender), and
//! the policy that hangs on it: the per-source rate key and whether a SYN may be answered.
//! Field names follow the wire ([`TcpHeader`](crate::wire::tcp::TcpHeader)): `src`, `dst`,
//! `src_port`, `dst_port`.

use crate::maps::{LocalAddrKey, SrcKey};
use crate::wire::Addr;

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
    /// The client's port.
    pub src_port: u16,
    /// The server's port.
    pub dst_port: u16,
}

impl Flow {
    #[inline(always)]
    pub fn v4(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> Flow {
        Flow {
            family: Family::V4,
            src: Addr::from_v4(src),
            dst: Addr::from_v4(dst),
            src_port,
            dst_port,
        }
    }

    #[inline(always)]
    pub fn v6(src: [u8; 16], dst: [u8; 16], src_port: u16, dst_port: u16) -> Flow {
        Flow {
            family: Family::V6,
            src: Addr::from_v6(src),
            dst: Addr::from_v6(dst),
            src_port,
            dst_port,
        }
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.family == Family::V6
    }

    /// The `LOCAL_ADDRS` key of the destination.
    #[inline(always)]
    pub fn dst_local_key(&self) -> LocalAddrKey {
        LocalAddrKey {
            family: if self.is_v6() { 6 } else { 4 },
            addr: self.dst.octets(),
        }
    }

    /// The `SRC_RATE` key of the client: its /32, or its IPv6 address masked to `prefix6`
    /// bits (`Config::src_prefix6`, 48..=64; 0 or more than 64 mean 64): one site's or one
    /// host's worth of addresses, which an attacker gets for free.
    #[inline(always)]
    pub fn src_key(&self, prefix6: u8) -> SrcKey {
        match self.family {
            Family::V4 => SrcKey {
                family: 4,
                _pad: 0,
                addr: (self.src.0[0] & 0xffff_ffff).to_le_bytes(),
            },
            Family::V6 => {
                let bits = if prefix6 == 0 || prefix6 > 64 {
                    64
                } else {
                    u32::from(prefix6)
                };
                // The first 8 bytes in network order, so the mask keeps the leading bits.
                let top = u64::from_be_bytes(self.src.0[0].to_le_bytes());
                SrcKey {
                    family: 6,
                    _pad: 0,
                    addr: (top & (u64::MAX << (64 - bits))).to_be_bytes(),
                }
            }
        }
    }

    /// Both ends are unicast, non-loopback, specified addresses, and distinct (not LAND),
    /// so answering the SYN sends one unicast reply to an address that can own a
    /// connection, never back to this host or to a group. The kernel would drop SYNs that
    /// fail this too. Directed-broadcast sources need the host's subnets: see
    /// [`Flow::src_broadcast_key`].
    #[inline(always)]
    pub fn reflectable(&self) -> bool {
        let ends = match self.family {
            Family::V4 => unicast4(self.src.first_octet()) && unicast4(self.dst.first_octet()),
            Family::V6 => unicast6(&self.src) && unicast6(&self.dst),
        };
        ends && self.src != self.dst
    }

    /// The `LOCAL_ADDRS` key under which the daemon records a directed-broadcast address
    /// equal to this SYN's source ([`crate::maps::LOCAL_ADDR_BROADCAST`]): IPv4 only, as
    /// IPv6 has no broadcast.
    #[inline(always)]
    pub fn src_broadcast_key(&self) -> Option<LocalAddrKey> {
        match self.family {
            Family::V4 => Some(LocalAddrKey {
                family: 4,
                addr: self.src.octets(),
            }),
            Family::V6 => None,
        }
    }
}

/// Not 0/8 ("this network"), 127/8 (loopback), or 224/3 (multicast, reserved, and the
/// limited broadcast 255.255.255.255).
#[inline(always)]
fn unicast4(first_octet: u8) -> bool {
    first_octet != 0 && first_octet != 127 && first_octet < 224
}

/// Not ff00::/8 (multicast), nor in ::/96 (unspecified ::, loopback ::1 and the deprecated
/// IPv4-compatible addresses) or ::ffff:0:0/96 (IPv4-mapped: a reply would leave as IPv4
/// to whatever the low 32 bits name, broadcast or loopback included).
#[inline(always)]
fn unicast6(a: &Addr) -> bool {
    // Bytes 8..12 are the low 32 bits of the little-endian second word.
    let bytes_8_to_12 = a.0[1] & 0xffff_ffff;
    let v4_embedding = a.0[0] == 0 && (bytes_8_to_12 == 0 || bytes_8_to_12 == 0xffff_0000);
    a.first_octet() != 0xff && !v4_embedding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dst_local_keys_match_what_the_daemon_writes() {
        let f = Flow::v4([198, 18, 1, 1], [198, 18, 0, 1], 1, 2);
        assert_eq!(f.dst_local_key(), LocalAddrKey::v4([198, 18, 0, 1]));
        let d6 = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let f = Flow::v6([0; 16], d6, 1, 2);
        assert_eq!(f.dst_local_key(), LocalAddrKey::v6(d6));
    }

    #[test]
    fn src_keys() {
        let f = Flow::v4([192, 0, 2, 7], [10, 0, 0, 1], 1234, 80);
        assert_eq!(
            f.src_key(64),
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
        s6[6] = 0xab;
        let f = Flow::v6(s6, [1; 16], 1, 2);
        assert_eq!(f.src_key(64).addr, [0x20, 0x01, 0, 0, 0, 0, 0xab, 0x99]);
        assert_eq!(f.src_key(0), f.src_key(64), "0 reads as 64");
        assert_eq!(f.src_key(56).addr, [0x20, 0x01, 0, 0, 0, 0, 0xab, 0]);
        assert_eq!(f.src_key(52).addr, [0x20, 0x01, 0, 0, 0, 0, 0xa0, 0]);
        assert_eq!(f.src_key(48).addr, [0x20, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.src_key(48).family, 6);
        let v4 = Flow::v4([192, 0, 2, 7], [10, 0, 0, 1], 1, 2);
        assert_eq!(v4.src_key(48), v4.src_key(64), "IPv4 keys ignore it");
    }

    #[test]
    fn broadcast_keys_are_the_source_as_local_addrs_holds_it() {
        let f = Flow::v4([198, 18, 255, 255], [198, 18, 0, 1], 1, 2);
        assert_eq!(
            f.src_broadcast_key(),
            Some(LocalAddrKey::v4([198, 18, 255, 255]))
        );
        assert_eq!(Flow::v6([1; 16], [2; 16], 1, 2).src_broadcast_key(), None);
    }

    #[test]
    fn reflectable() {
        let ok = |s: [u8; 4], d: [u8; 4]| Flow::v4(s, d, 1, 2).reflectable();
        assert!(ok([10, 1, 2, 3], [10, 0, 0, 1]));
        assert!(!ok([10, 0, 0, 1], [10, 0, 0, 1]), "LAND");
        assert!(!ok([0, 0, 0, 0], [10, 0, 0, 1]));
        assert!(!ok([127, 0, 0, 1], [10, 0, 0, 1]));
        assert!(!ok([224, 0, 0, 1], [10, 0, 0, 1]));
        assert!(!ok([255, 255, 255, 255], [10, 0, 0, 1]));
        assert!(!ok([10, 1, 2, 3], [239, 1, 1, 1]));
        let mut u = [0u8; 16];
        u[0] = 0xfd;
        u[15] = 9;
        let ok6 = |s: [u8; 16], d: [u8; 16]| Flow::v6(s, d, 1, 2).reflectable();
        let mut lo = [0u8; 16];
        assert!(!ok6(lo, u));
        lo[15] = 1;
        assert!(!ok6(lo, u));
        lo[15] = 2;
        assert!(!ok6(lo, u), "::/96 (v4-compatible) is never answered");
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1];
        assert!(!ok6(mapped, u), "v4-mapped");
        let mut near = mapped;
        near[9] = 1;
        assert!(ok6(near, u), "::1:ffff:c612:1 is not v4-mapped");
        assert!(!ok6(u, u), "LAND");
        let mut u2 = u;
        u2[15] = 10;
        assert!(ok6(u2, u));
        lo[15] = 1;
        lo[0] = 1;
        assert!(ok6(lo, u));
        let mut mc = u;
        mc[0] = 0xff;
        assert!(!ok6(u, mc));
    }
}
