// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Kfunc declarations for synguard-ebpf. This is the only C in the synguard programs (the test
// harness has BPF objects of its own in C): rustc cannot place an `extern` function in the
// `.ksyms` section, which is where aya looks for kfunc externs to
// resolve against kernel BTF. Compiled to LLVM bitcode by synguard/build.rs and linked into
// the Rust object by bpf-linker, which inlines the wrappers (always_inline) at their call
// sites, so the final object holds plain kfunc calls.
//
// Structs are declared complete (not forward declarations): aya checks that each pointee is
// of the same BTF kind as the kernel's type, and a forward declaration is a different kind.
// Their members are never accessed here, so only bpf_tcp_req_attrs spells out its layout.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;

struct __sk_buff {
	__u32 len;
};

struct sock {
	__u32 __opaque;
};

/* Layout of the kernel's struct bpf_tcp_req_attrs (include/net/tcp.h, kernel >= 6.9). The Rust
 * side is synguard_common::handoff::TcpReqAttrs, which asserts the same size and offsets. */
struct bpf_tcp_req_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

_Static_assert(sizeof(struct bpf_tcp_req_attrs) == 20,
	       "struct bpf_tcp_req_attrs must match the kernel's and TcpReqAttrs: 20 bytes");
_Static_assert(__builtin_offsetof(struct bpf_tcp_req_attrs, mss) == 8, "mss at 8");
_Static_assert(__builtin_offsetof(struct bpf_tcp_req_attrs, usec_ts_ok) == 16, "usec_ts_ok at 16");

// Weak: on a kernel without the kfunc (before 6.9) aya poisons the call instead of refusing
// the whole object, so the XDP program still loads for the filter handoff, which never loads
// the TC program. Where it exists, it resolves exactly as a strong extern would.
extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk,
				   struct bpf_tcp_req_attrs *attrs, int attrs__sz)
	__attribute__((section(".ksyms"), weak));

__attribute__((always_inline)) int synguard_sk_assign_tcp_reqsk(struct __sk_buff *skb,
							       struct sock *sk,
							       struct bpf_tcp_req_attrs *attrs)
{
	return bpf_sk_assign_tcp_reqsk(skb, sk, attrs, sizeof(*attrs));
}
