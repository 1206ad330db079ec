//! Ethernet II with up to [`MAX_TAGS`] VLAN tags, 802.1Q or 802.1ad in any order, VID 0
//! (priority tags) included.
//!
//! A deeper stack reports the third tag's TPID as the ethertype: [`is_tag`] tells the
//! dissector so, which treats the frame as uninspectable rather than as not IP.

use crate::packet::Packet;

pub const HEADER_LEN: usize = 14;
pub const TAG_LEN: usize = 4;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// VLAN tags parsed before the ethertype: QinQ's two. The kernel strips every tag it
/// has a device for, and every VID-0 tag, so deeper stacks can still reach a listener.
pub const MAX_TAGS: usize = 2;

/// `ethertype` is a VLAN tag's TPID.
#[inline(always)]
pub fn is_tag(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

/// Where the network layer starts and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the L3 header from the start of the frame.
    pub l3_off: usize,
    /// Ethertype of the L3 payload (after the tags, if any); a TPID ([`is_tag`]) when
    /// more than [`MAX_TAGS`] tags are stacked.
    pub ethertype: u16,
    /// VLAN tags between the MACs and the ethertype (at most [`MAX_TAGS`]).
    pub tags: u8,
}

impl Frame {
    /// `None` when the frame is too short to hold its Ethernet header (and tags).
    /// Unrolled: two constant-offset steps, no loop for the verifier to follow.
    #[inline(always)]
    pub fn parse<P: Packet + ?Sized>(p: &P) -> Option<Frame> {
        let outer = p.load_be16(12)?;
        if !is_tag(outer) {
            return Some(Frame {
                l3_off: HEADER_LEN,
                ethertype: outer,
                tags: 0,
            });
        }
        let inner = p.load_be16(HEADER_LEN + 2)?;
        if !is_tag(inner) {
            return Some(Frame {
                l3_off: HEADER_LEN + TAG_LEN,
                ethertype: inner,
                tags: 1,
            });
        }
        Some(Frame {
            l3_off: HEADER_LEN + 2 * TAG_LEN,
            ethertype: p.load_be16(HEADER_LEN + TAG_LEN + 2)?,
            tags: 2,
        })
    }
}

/// Swaps destination and source MAC so the frame goes back where it came from. The tags,
/// if any, are left alone: the reply belongs to the same VLANs.
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
                tags: 0
            })
        );
        for tpid in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
            let f = frame(Some(tpid), ETHERTYPE_IPV4);
            assert_eq!(
                Frame::parse(&f[..]),
                Some(Frame {
                    l3_off: 18,
                    ethertype: 0x0800,
                    tags: 1
                })
            );
        }
        // Two tags, either TPID in either place, VID 0 included.
        for (outer, inner) in [
            (ETHERTYPE_QINQ, ETHERTYPE_VLAN),
            (ETHERTYPE_VLAN, ETHERTYPE_QINQ),
            (ETHERTYPE_VLAN, ETHERTYPE_VLAN),
        ] {
            let mut f = frame(Some(outer), inner);
            f.splice(18..18, [0x00, 0x00, 0x08, 0x00]);
            assert_eq!(
                Frame::parse(&f[..]),
                Some(Frame {
                    l3_off: 22,
                    ethertype: 0x0800,
                    tags: 2
                })
            );
        }
        // Three: the third TPID is what we see.
        let mut f = frame(Some(ETHERTYPE_QINQ), ETHERTYPE_VLAN);
        f.splice(18..18, [0x00, 0x07, 0x81, 0x00, 0x00, 0x00, 0x08, 0x00]);
        let e = Frame::parse(&f[..]).unwrap();
        assert!(is_tag(e.ethertype));
        assert_eq!(e.tags, 2);
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
