//! The one buffer abstraction all packet logic runs over.
//!
//! Every access is a constant-size read or write checked against the end of the packet,
//! which is the shape the BPF verifier accepts. The same generic code runs over an XDP/TC
//! context ([`RawPacket`]) in the kernel and over a byte slice in host tests. The other
//! shapes the verifier needs are in [`crate::verifier`].

/// A packet buffer with bounds-checked, constant-size access.
pub trait Packet {
    /// The `N` bytes at `off`, or `None` if any of them lies past the end of the packet.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// Overwrites the `N` bytes at `off`; `None` (and nothing written) if out of bounds.
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()>;

    #[inline(always)]
    fn load_u8(&self, off: usize) -> Option<u8> {
        Some(self.load::<1>(off)?[0])
    }
    #[inline(always)]
    fn load_be16(&self, off: usize) -> Option<u16> {
        Some(u16::from_be_bytes(self.load::<2>(off)?))
    }
    #[inline(always)]
    fn load_be32(&self, off: usize) -> Option<u32> {
        Some(u32::from_be_bytes(self.load::<4>(off)?))
    }
    #[inline(always)]
    fn store_be16(&mut self, off: usize, v: u16) -> Option<()> {
        self.store(off, v.to_be_bytes())
    }
    #[inline(always)]
    fn store_be32(&mut self, off: usize, v: u32) -> Option<()> {
        self.store(off, v.to_be_bytes())
    }
}

/// A packet given by its start and end addresses, as XDP (`data`, `data_end`) and TC
/// (`skb->data`, `skb->data_end`) hand it over.
///
/// The comparison `start + off + N > end` is kept in pointer form on purpose: the verifier
/// tracks packet pointers against `data_end`, not lengths.
#[derive(Clone, Copy)]
pub struct RawPacket {
    start: usize,
    end: usize,
}

impl RawPacket {
    /// # Safety
    /// `start..end` must be a readable and writable byte range for as long as the value is
    /// used: the XDP/TC packet window, or a live host buffer.
    #[inline(always)]
    pub unsafe fn new(start: usize, end: usize) -> Self {
        RawPacket { start, end }
    }

    #[inline(always)]
    pub fn start(&self) -> usize {
        self.start
    }

    #[inline(always)]
    pub fn end(&self) -> usize {
        self.end
    }
}

impl Packet for RawPacket {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: p..p+N lies inside start..end, which `new`'s contract makes readable.
        Some(unsafe { (p as *const [u8; N]).read_unaligned() })
    }

    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: as in `load`; `new`'s contract makes the range writable.
        unsafe { (p as *mut [u8; N]).write_unaligned(bytes) };
        Some(())
    }
}

impl Packet for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }

    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        self.get_mut(off..off.checked_add(N)?)?
            .copy_from_slice(&bytes);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_and_raw_agree_on_bounds() {
        let mut buf = [1u8, 2, 3, 4, 5];
        // SAFETY: `buf` is a live local of 5 bytes, and `raw` is only read while `buf` is
        // not being written.
        let raw = unsafe { RawPacket::new(buf.as_ptr() as usize, buf.as_ptr() as usize + 5) };
        for off in 0..8 {
            assert_eq!(buf[..].load::<2>(off), raw.load::<2>(off), "off {off}");
            assert_eq!(buf[..].load::<4>(off), raw.load::<4>(off), "off {off}");
        }
        assert_eq!(buf[..].load_be16(3), Some(0x0405));
        assert!(buf[..].store::<2>(4, [9, 9]).is_none());
        assert_eq!(buf, [1, 2, 3, 4, 5], "a failed store writes nothing");
        buf[..].store_be16(3, 0xabcd).unwrap();
        assert_eq!(buf, [1, 2, 3, 0xab, 0xcd]);
        assert!(buf[..].load::<1>(usize::MAX).is_none());
    }
}
