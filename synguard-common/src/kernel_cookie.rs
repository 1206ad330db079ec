//! The kernel-cookie handoff ([`crate::maps::Handoff::KernelCookie`], Linux 6.0+ without
//! `bpf_sk_assign_tcp_reqsk`): XDP asks the flow's listener for the cookie the kernel itself
//! would answer the SYN with (`bpf_tcp_gen_syncookie`), sends it as its SYN+ACK's ISN,
//! checks the returning ACK with `bpf_tcp_raw_check_syncookie_ipv4/6`, and the kernel
//! completes the handshake in `cookie_v4_check`/`cookie_v6_check`, as for a cookie it sent.
//!
//! Two things decide whether the kernel takes such an ACK, and both are the kernel's own:
//!
//! - **Whether it would send a cookie at all.** `bpf_tcp_gen_syncookie` runs the kernel's
//!   own decision on the listener (`tcp_get_syncookie_mss`): it mints only with
//!   `net.ipv4.tcp_syncookies=2`, or with 1 while the listener's SYN queue is full; never
//!   with 0, nor while the accept queue is full; and it applies the listener's `TCP_MAXSEG`.
//!   Each cookie it mints refreshes the listener's SYN-overflow stamp (its reuseport
//!   group's, for a group), which the kernel checks before it takes a cookie ACK
//!   (`tcp_synq_no_recent_overflow`, 2 minutes). Where it declines, XDP passes the SYN to
//!   the kernel, which handles it exactly as without synguard. So XDP answers exactly the
//!   SYNs the kernel alone would have answered with a cookie.
//! - **What the cookie can carry.** The kernel decodes window scaling, SACK and ECN from
//!   the timestamp the ACK echoes, minus a per-host secret offset (`secure_tcp_ts_off`,
//!   with `net.ipv4.tcp_timestamps=1`) that XDP cannot compute. So XDP's SYN+ACK carries an
//!   MSS option only ([`answer_options`]): the client sends no timestamps, and the kernel
//!   builds the connection with the cookie's MSS (the kernel's cookie table: 536, 1300,
//!   1440, 1460 for IPv4; 1220, 1420, 1440, 8940 for IPv6), no window scaling (a 64 KiB
//!   window), no SACK and no ECN. SYNs that reach the kernel keep all their options.

use crate::flow::Flow;
use crate::wire::tcp_options::TcpOptions;

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

/// What `bpf_tcp_gen_syncookie` reads, built in a per-CPU map slot (`COOKIE_SCRATCH`): the
/// helper needs the TCP header's length to equal its data offset, which the verifier cannot
/// bound against a packet pointer, so XDP hands it these constant-size copies instead. The
/// helper reads the IP version, the addresses, the ports, the flags (a SYN), the sequence
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
    /// `seq` and MSS option `mss` (0: none, for which the kernel assumes its default), and
    /// returns the IP and the TCP header's length to pass the helper: 20 or 40, and 24 with
    /// the option or 20 without.
    #[inline(always)]
    pub fn fill(&mut self, flow: &Flow, seq: u32, mss: u16) -> (u32, u32) {
        self.ip = [0; IP_ROOM];
        let ip_len = if flow.is_v6() { 40 } else { 20 };
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
            return (ip_len, 20);
        }
        self.tcp[12] = 6 << 4;
        let [hi, lo] = mss.to_be_bytes();
        self.tcp[20..24].copy_from_slice(&[2, 4, hi, lo]);
        (ip_len, 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_carries_the_mss_only() {
        let offered = TcpOptions {
            mss: 1460,
            wscale: 7,
            sack_ok: true,
            ts: true,
            tsval: 1,
            tsecr: 0,
            signed: false,
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
        assert_eq!(h.fill(&f, 0x0102_0304, 1460), (20, 24));
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
        assert_eq!(h.fill(&f, 7, 0), (20, 20));
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
        assert_eq!(h.fill(&f, 9, 1440), (40, 24));
        assert_eq!(h.ip[0], 0x60);
        assert_eq!(&h.ip[1..8], &[0; 7]);
        assert_eq!(&h.ip[8..24], &src);
        assert_eq!(&h.ip[24..40], &dst);
        assert_eq!(&h.tcp[..4], &[0, 1, 1, 187]);
    }
}
