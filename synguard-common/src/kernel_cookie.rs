//! The kernel-cookie handoff ([`crate::maps::Handoff::KernelCookie`], Linux 6.0+ without
//! `bpf_sk_assign_tcp_reqsk`): XDP answers a SYN with the cookie the kernel itself would
//! send (`bpf_tcp_raw_gen_syncookie_ipv4/6`), checks the returning ACK with
//! `bpf_tcp_raw_check_syncookie_ipv4/6`, and the kernel completes the handshake in
//! `cookie_v4_check`/`cookie_v6_check`, as for a cookie it sent.
//!
//! Two things decide whether the kernel takes such an ACK, and this module holds both:
//!
//! - **The listener's SYN-overflow stamp.** The kernel checks a cookie only on a listener
//!   that overflowed recently (`tcp_synq_no_recent_overflow`: the stamp, in jiffies, from
//!   one second before to `TCP_SYNCOOKIE_VALID` = 120 s after now; a reuseport group keeps
//!   one stamp for all its sockets). Elsewhere the ACK meets a bare listener, which resets
//!   it. So XDP answers a SYN only while [`overflow_recent`] holds for the stamp it reads
//!   from the listener at that moment, and otherwise passes the SYN to the kernel, which
//!   answers it itself. With `net.ipv4.tcp_syncookies=2` the kernel's own answer refreshes
//!   the stamp (every cookie it mints does), so about one SYN per listener per
//!   [`OVERFLOW_FRESH_JIFFIES`] reaches it; with `1` only a real queue overflow does.
//!   Reading the stamp itself, not a clock of our own, covers a listener that was just
//!   created (its stamp is old) and a sysctl changed under us.
//! - **What the cookie can carry.** The kernel decodes window scaling, SACK and ECN from
//!   the timestamp the ACK echoes, minus a per-host secret offset (`secure_tcp_ts_off`,
//!   with `net.ipv4.tcp_timestamps=1`) that XDP cannot compute. So XDP's SYN+ACK carries an
//!   MSS option only ([`answer_options`]): the client sends no timestamps, and the kernel
//!   builds the connection with the cookie's MSS, no window scaling (a 64 KiB window), no
//!   SACK and no ECN. SYNs that reach the kernel (not engaged, or a stale stamp) keep all
//!   their options.

use crate::flow::Flow;
use crate::wire::tcp_options::TcpOptions;

/// The smallest `CONFIG_HZ` Linux offers (100; the others are 250, 300 and 1000). XDP
/// cannot know the kernel's, so the window below is counted at this rate, which makes it
/// shorter in seconds, never longer, on any other.
pub const MIN_HZ: u32 = 100;

/// How recent, in jiffies, the stamp must be for XDP to answer: 60 s at `HZ=100`, 6 s at
/// `HZ=1000`. The kernel accepts cookies up to 120 s after the stamp (at any HZ), so an
/// answered client has at least another 60 s to send its ACK.
pub const OVERFLOW_FRESH_JIFFIES: u32 = 60 * MIN_HZ;

/// Whether a listener whose overflow stamp is `stamp` takes a kernel cookie now, and for
/// at least 60 s more: `now - stamp` in `[0, OVERFLOW_FRESH_JIFFIES)`, in the kernel's own
/// wrapping 32-bit jiffies (`now` is `bpf_jiffies64()` truncated, as the kernel truncates
/// `jiffies`). A subset of the kernel's window for every `HZ >= MIN_HZ`.
#[inline(always)]
pub fn overflow_recent(now: u32, stamp: u32) -> bool {
    now.wrapping_sub(stamp) < OVERFLOW_FRESH_JIFFIES
}

/// Options of XDP's SYN+ACK in this handoff, as an offer to
/// [`crate::wire::tcp_options::synack_options`]: the MSS only (see the module doc).
#[inline(always)]
pub fn answer_options(offered: &TcpOptions) -> TcpOptions {
    TcpOptions {
        mss: offered.mss,
        ..TcpOptions::NONE
    }
}

/// Room for `struct ipv6hdr`, the larger IP header.
pub const IP_ROOM: usize = 40;
/// A TCP header with one MSS option.
pub const TCP_ROOM: usize = 24;

/// What `bpf_tcp_raw_gen_syncookie_*` reads, built in a per-CPU map slot
/// (`COOKIE_SCRATCH`): the helper needs the TCP header's length to equal its data offset,
/// which the verifier cannot bound against a packet pointer, so XDP hands it these
/// constant-size copies instead. The helper reads the addresses, the ports, the sequence
/// number and the MSS option, and nothing else; everything else here is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieHeaders {
    /// `struct iphdr` (addresses at 12 and 16) or `struct ipv6hdr` (at 8 and 24).
    pub ip: [u8; IP_ROOM],
    /// `struct tcphdr`, then the MSS option when there is one.
    pub tcp: [u8; TCP_ROOM],
}

impl Default for CookieHeaders {
    fn default() -> CookieHeaders {
        CookieHeaders {
            ip: [0; IP_ROOM],
            tcp: [0; TCP_ROOM],
        }
    }
}

impl CookieHeaders {
    /// Writes the headers of a SYN of `flow` (source = the client) with sequence number
    /// `seq` and MSS option `mss` (0: none, for which the kernel assumes 536), and returns
    /// the TCP header's length to pass the helper: 24 with the option, 20 without.
    #[inline(always)]
    pub fn fill(&mut self, flow: &Flow, seq: u32, mss: u16) -> u32 {
        self.ip = [0; IP_ROOM];
        if flow.is_v6() {
            self.ip[0] = 0x60;
            self.ip[8..24].copy_from_slice(&flow.src.octets());
            self.ip[24..40].copy_from_slice(&flow.dst.octets());
        } else {
            self.ip[0] = 0x45;
            self.ip[12..16].copy_from_slice(&flow.src.v4_octets());
            self.ip[16..20].copy_from_slice(&flow.dst.v4_octets());
        }
        self.tcp = [0; TCP_ROOM];
        self.tcp[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
        self.tcp[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
        self.tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        // SYN.
        self.tcp[13] = 0x02;
        if mss == 0 {
            self.tcp[12] = 5 << 4;
            return 20;
        }
        self.tcp[12] = 6 << 4;
        let [hi, lo] = mss.to_be_bytes();
        self.tcp[20..24].copy_from_slice(&[2, 4, hi, lo]);
        24
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The kernel's test, `!tcp_synq_no_recent_overflow`: `time_between32(now, stamp - HZ,
    /// stamp + 2 * 60 * HZ)`.
    fn kernel_takes(now: u32, stamp: u32, hz: u32) -> bool {
        let lo = stamp.wrapping_sub(hz);
        let hi = stamp.wrapping_add(120 * hz);
        now.wrapping_sub(lo) <= hi.wrapping_sub(lo)
    }

    proptest! {
        /// Whenever XDP answers, the kernel takes the ACK at once and still 60 s later
        /// (at the kernel's real HZ), whatever the wrap.
        #[test]
        fn recent_is_inside_the_kernels_window(
            now: u32,
            stamp: u32,
            hz in prop::sample::select(vec![100u32, 250, 300, 1000]),
        ) {
            if overflow_recent(now, stamp) {
                prop_assert!(kernel_takes(now, stamp, hz));
                // An ACK up to 60 s after the SYN+ACK.
                prop_assert!(kernel_takes(now.wrapping_add(60 * hz), stamp, hz));
            }
        }
    }

    #[test]
    fn recent_window_edges() {
        assert!(overflow_recent(1000, 1000));
        assert!(overflow_recent(1000 + OVERFLOW_FRESH_JIFFIES - 1, 1000));
        assert!(!overflow_recent(1000 + OVERFLOW_FRESH_JIFFIES, 1000));
        // A stamp ahead of now (a racing refresh on another CPU) is not taken: the kernel
        // would, but only by a second.
        assert!(!overflow_recent(999, 1000));
        // Across the 32-bit wrap.
        assert!(overflow_recent(5, u32::MAX - 5));
        // A listener that never overflowed has stamp 0: old, except in the minute after
        // jiffies wraps to 0, where the kernel takes it too.
        assert!(!overflow_recent(0x8000_0000, 0));
    }

    #[test]
    fn answer_carries_the_mss_only() {
        let offered = TcpOptions {
            mss: 1460,
            wscale: 7,
            sack_ok: true,
            ts: true,
            tsval: 1,
            tsecr: 0,
        };
        assert_eq!(
            answer_options(&offered),
            TcpOptions {
                mss: 1460,
                ..TcpOptions::NONE
            }
        );
    }

    #[test]
    fn headers_v4() {
        let f = Flow::v4([198, 18, 0, 2], [198, 18, 0, 1], 40000, 80);
        let mut h = CookieHeaders::default();
        assert_eq!(h.fill(&f, 0x0102_0304, 1460), 24);
        assert_eq!(h.ip[0], 0x45);
        assert_eq!(&h.ip[12..20], &[198, 18, 0, 2, 198, 18, 0, 1]);
        assert_eq!(
            h.tcp,
            [
                0x9c, 0x40, 0, 80, 1, 2, 3, 4, 0, 0, 0, 0, 0x60, 0x02, 0, 0, 0, 0, 0, 0, 2, 4,
                0x05, 0xb4
            ]
        );
        // Without an MSS option: a bare header, and no stale option bytes behind it.
        assert_eq!(h.fill(&f, 7, 0), 20);
        assert_eq!(h.tcp[12], 0x50);
        assert_eq!(&h.tcp[20..], &[0; 4]);
    }

    #[test]
    fn headers_v6() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        src[15] = 2;
        let mut dst = src;
        dst[15] = 1;
        let f = Flow::v6(src, dst, 1, 443);
        let mut h = CookieHeaders::default();
        // A v4 fill before must leave nothing behind.
        h.fill(&Flow::v4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), 1, 536);
        assert_eq!(h.fill(&f, 9, 1440), 24);
        assert_eq!(h.ip[0], 0x60);
        assert_eq!(&h.ip[1..8], &[0; 7]);
        assert_eq!(&h.ip[8..24], &src);
        assert_eq!(&h.ip[24..40], &dst);
        assert_eq!(&h.tcp[..4], &[0, 1, 1, 187]);
    }
}
