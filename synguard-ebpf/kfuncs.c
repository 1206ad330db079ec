// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Kfunc declarations and CO-RE field reads for synguard-ebpf. This is the only C in the
// synguard programs (the test harness has BPF objects of its own in C): rustc cannot place
// an `extern` function in the `.ksyms` section, which is where aya looks for kfunc externs to
// resolve against kernel BTF, nor emit CO-RE relocations for a kernel struct's fields. Compiled to LLVM bitcode by synguard/build.rs and linked into
// the Rust object by bpf-linker, which inlines the wrappers (always_inline) at their call
// sites, so the final object holds plain kfunc calls.
//
// Structs are declared complete (not forward declarations): aya checks that each pointee is
// of the same BTF kind as the kernel's type, and a forward declaration is a different kind.
// The kernel structs below name only the members read here, marked preserve_access_index:
// clang records each access as a CO-RE relocation, and aya rewrites its offset to the running
// kernel's layout at load time, so no offset here is this kernel's or any other's.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;

struct __sk_buff {
	__u32 len;
};

struct sock_reuseport {
	unsigned int synq_overflow_ts;
} __attribute__((preserve_access_index));

struct sock_common {
	unsigned char skc_reuseport : 1;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	struct sock_reuseport *sk_reuseport_cb;
} __attribute__((preserve_access_index));

struct tcp_options_received {
	int ts_recent_stamp;
} __attribute__((preserve_access_index));

// Begins with its struct sock (inet_connection_sock, inet_sock, sock), as the kernel's does.
struct tcp_sock {
	struct tcp_options_received rx_opt;
} __attribute__((preserve_access_index));

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

// clang's __builtin_preserve_field_info kinds (the BPF_CORE_* relocation kinds).
#define SYNGUARD_FIELD_BYTE_OFFSET 0
#define SYNGUARD_FIELD_BYTE_SIZE 1
#define SYNGUARD_FIELD_LSHIFT_U64 4
#define SYNGUARD_FIELD_RSHIFT_U64 5

// The listener's SYN-overflow stamp (jiffies), as the kernel's tcp_synq_no_recent_overflow()
// reads it before it takes a cookie ACK: a reuseport listener's group keeps one in
// sock_reuseport.synq_overflow_ts, any other listener in tcp_sock.rx_opt.ts_recent_stamp.
// `tp` is the non-null result of bpf_skc_to_tcp_sock() on a referenced listener.
__attribute__((always_inline)) unsigned int synguard_listener_overflow_stamp(struct tcp_sock *tp)
{
	struct sock *sk = (struct sock *)tp;
	unsigned long long reuseport = 0;
	unsigned int off = __builtin_preserve_field_info(sk->__sk_common.skc_reuseport,
							 SYNGUARD_FIELD_BYTE_OFFSET);
	unsigned int size = __builtin_preserve_field_info(sk->__sk_common.skc_reuseport,
							  SYNGUARD_FIELD_BYTE_SIZE);
	const unsigned char *at = (const unsigned char *)sk + off;

	// A bitfield: load the bytes that hold it, then shift it out, as the relocations say.
	switch (size) {
	case 1:
		reuseport = *(const unsigned char *)at;
		break;
	case 2:
		reuseport = *(const unsigned short *)at;
		break;
	case 4:
		reuseport = *(const unsigned int *)at;
		break;
	default:
		reuseport = *(const unsigned long long *)at;
		break;
	}
	reuseport <<= __builtin_preserve_field_info(sk->__sk_common.skc_reuseport,
						    SYNGUARD_FIELD_LSHIFT_U64);
	reuseport >>= __builtin_preserve_field_info(sk->__sk_common.skc_reuseport,
						    SYNGUARD_FIELD_RSHIFT_U64);
	if (reuseport) {
		struct sock_reuseport *reuse = sk->sk_reuseport_cb;

		if (reuse)
			return reuse->synq_overflow_ts;
	}
	return (unsigned int)tp->rx_opt.ts_recent_stamp;
}
