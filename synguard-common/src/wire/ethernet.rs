//! Ethernet II with at most one 802.1Q or 802.1ad tag.
//!
//! Double tagging (802.1ad outer + 802.1Q inner) reports the inner tag's TPID as the
//! ethertype, which is not IP, so such frames are left to the kernel.

use crate::packet::Packet;

pub const HEADER_LEN: usize = 14;
pub const TAG_LEN: usize = 4;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Where the network layer starts and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the L3 header from the start of the frame.
    pub l3_off: usize,
    /// Ethertype of the L3 payload (after the tag, if any).
    pub ethertype: u16,
    /// A VLAN tag sits between the MACs and the ethertype.
    pub tagged: bool,
}

impl Frame {
    /// `None` when the frame is too short to hold its Ethernet header (and tag).
    #[inline(always)]
    pub fn parse<P: Packet + ?Sized>(p: &P) -> Option<Frame> {
        let outer = p.load_be16(12)?;
        if outer == ETHERTYPE_VLAN || outer == ETHERTYPE_QINQ {
            Some(Frame {
                l3_off: HEADER_LEN + TAG_LEN,
                ethertype: p.load_be16(HEADER_LEN + 2)?,
                tagged: true,
            })
        } else {
            Some(Frame {
                l3_off: HEADER_LEN,
                ethertype: outer,
                tagged: false,
            })
        }
    }
}

/// Swaps destination and source MAC so the frame goes back where it came from. The tag,
/// if any, is left alone: the reply belongs to the same VLAN.
#[inline(always)]
pub fn swap_macs<P: Packet + ?Sized>(p: &mut P) -> Option<()> {
    let dst = p.load::<6>(0)?;
    let src = p.load::<6>(6)?;
    p.store(0, src)?;
    p.store(6, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tpid: Option<u16>, ethertype: u16) -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        if let Some(t) = tpid {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x2a]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0x45; 20]);
        f
    }

    #[test]
    fn untagged_and_tagged() {
        let f = frame(None, ETHERTYPE_IPV6);
        assert_eq!(
            Frame::parse(&f[..]),
            Some(Frame {
                l3_off: 14,
                ethertype: 0x86dd,
                tagged: false
            })
        );
        for tpid in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
            let f = frame(Some(tpid), ETHERTYPE_IPV4);
            assert_eq!(
                Frame::parse(&f[..]),
                Some(Frame {
                    l3_off: 18,
                    ethertype: 0x0800,
                    tagged: true
                })
            );
        }
        // Double tag: the inner TPID is what we see, and it is not IP.
        let mut f = frame(Some(ETHERTYPE_QINQ), ETHERTYPE_VLAN);
        f.splice(18..18, [0x00, 0x07, 0x08, 0x00]);
        assert_eq!(
            Frame::parse(&f[..]).map(|e| e.ethertype),
            Some(ETHERTYPE_VLAN)
        );
    }

    #[test]
    fn truncated() {
        let f = frame(Some(ETHERTYPE_VLAN), ETHERTYPE_IPV4);
        assert!(Frame::parse(&f[..13]).is_none());
        assert!(Frame::parse(&f[..17]).is_none());
        assert!(Frame::parse(&f[..18]).is_some());
    }

    #[test]
    fn swap_keeps_tag() {
        let mut f = frame(Some(ETHERTYPE_VLAN), ETHERTYPE_IPV4);
        let before = f.clone();
        swap_macs(&mut f[..]).unwrap();
        assert_eq!(&f[0..6], &before[6..12]);
        assert_eq!(&f[6..12], &before[0..6]);
        assert_eq!(&f[12..], &before[12..]);
    }
}
