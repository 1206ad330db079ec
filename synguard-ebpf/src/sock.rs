//! Socket lookups shared by XDP and TC.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple},
    helpers::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_skc_to_mptcp_sock},
};
use synguard_common::{flow::Flow, wire::Addr};

/// `TCP_LISTEN` in the kernel's `enum tcp_states`.
pub const TCP_LISTEN: u32 = 10;

/// A socket reference from `bpf_skc_lookup_tcp`, released on drop so no path can leak it
/// (the verifier rejects a program that might).
pub struct SockRef(*mut bpf_sock);

impl SockRef {
    /// Looks up the socket that `flow` (source = the remote peer) belongs to: an
    /// established, time-wait or request socket if there is one, else the listener.
    /// `ctx` is the XDP or TC context pointer.
    #[inline(always)]
    pub fn lookup(ctx: *mut c_void, flow: &Flow) -> Option<SockRef> {
        // `struct bpf_sock_tuple` as nine network-order words, every one of them defined: a
        // union left partly unwritten on the IPv4 path lets LLVM store uninitialised
        // registers into it, which the verifier rejects.
        let s = words(&flow.src);
        let d = words(&flow.dst);
        let ports = u32::from(flow.src_port.to_be()) | (u32::from(flow.dst_port.to_be()) << 16);
        let (mut tuple, size) = if flow.is_v6() {
            ([s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], ports], 36)
        } else {
            // IPv4 addresses are the first word; the tuple is src, dst, ports.
            ([s[0], d[0], ports, 0, 0, 0, 0, 0, 0], 12)
        };
        // SAFETY: tuple is a live stack value of 36 bytes, at least `size`; the helper returns
        // null or a referenced socket, which SockRef releases.
        let sk = unsafe {
            bpf_skc_lookup_tcp(
                ctx,
                tuple.as_mut_ptr().cast::<bpf_sock_tuple>(),
                size,
                BPF_F_CURRENT_NETNS as u64,
                0,
            )
        };
        if sk.is_null() {
            None
        } else {
            Some(SockRef(sk))
        }
    }

    #[inline(always)]
    pub fn state(&self) -> u32 {
        // SAFETY: non-null, referenced socket from the lookup.
        unsafe { (*self.0).state }
    }

    /// Whether this is an MPTCP socket (an MPTCP listener's TCP listener is one):
    /// `bpf_skc_to_mptcp_sock` is non-null exactly for a full TCP socket with
    /// `sk_is_mptcp`.
    #[inline(always)]
    pub fn is_mptcp(&self) -> bool {
        // SAFETY: non-null, referenced socket from the lookup; the result borrows it and
        // is only compared with null.
        !unsafe { bpf_skc_to_mptcp_sock(self.as_ptr()) }.is_null()
    }

    #[inline(always)]
    pub fn as_ptr(&self) -> *mut c_void {
        self.0 as *mut c_void
    }
}

impl Drop for SockRef {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the reference came from bpf_skc_lookup_tcp and is released exactly once.
        unsafe { bpf_sk_release(self.0 as *mut c_void) };
    }
}

/// The address as the four network-order words `bpf_sock_tuple` holds. `Addr` keeps the
/// bytes as two little-endian u64 words, so each splits into two u32 words in memory order.
#[inline(always)]
fn words(a: &Addr) -> [u32; 4] {
    [
        a.0[0] as u32,
        (a.0[0] >> 32) as u32,
        a.0[1] as u32,
        (a.0[1] >> 32) as u32,
    ]
}
