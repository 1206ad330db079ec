// SPDX-License-Identifier: MIT OR Apache-2.0
//
// synguard's XDP dispatcher: the program that lets synguard and other XDP programs share one
// interface. It follows version 2 of libxdp's multi-program protocol (xdp-tools,
// lib/libxdp/protocol.org), written from that description, so libxdp's users (xdp-filter,
// xdp-loader) recognise it, join it and replace it, as synguard joins and replaces theirs.
//
// Ten global stub functions, prog0..prog9, are the slots: a component is an EXT program
// that replaces one. The dispatcher calls the enabled slots in order and goes on to the
// next only when the slot's return code is in its chain-call mask. The loader
// (synguard/src/xdp_dispatcher.rs) fills `conf` before loading; it is read-only to the
// program, so the verifier drops the slots that are not enabled.
//
// Compiled to an object by synguard/build.rs with clang-22 and embedded in the binary.

typedef unsigned char __u8;
typedef unsigned int __u32;

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#define XDP_ABORTED 0
#define XDP_PASS 2
#define SLOTS 10
// What an empty slot returns: the top bit of every slot's chain-call mask.
#define EMPTY_SLOT_RETVAL 31
#define BPF_FUNC_xdp_adjust_meta 54

#define SEC(name) __attribute__((section(name), used))

// The protocol's config layout (124 bytes); the loader's mirror is DispatcherConfig.
struct xdp_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[SLOTS];
	__u32 run_prios[SLOTS];
	__u32 program_flags[SLOTS];
};

volatile const struct xdp_dispatcher_config conf = {};

static long (*const xdp_adjust_meta)(struct xdp_md *ctx, int delta) =
	(void *)BPF_FUNC_xdp_adjust_meta;

// An empty slot passes on. The call to a packet-changing helper is never taken (`ret` is
// 31), but it marks the slot as one that may change packet data: Linux >= 6.13 lets an EXT
// program that changes packet data replace only such a function. synguard's own program
// does not change packet data, but a neighbour joining synguard's dispatcher may.
#define SLOT(n)                                                   \
	__attribute__((noinline)) int prog##n(struct xdp_md *ctx) \
	{                                                         \
		volatile int ret = EMPTY_SLOT_RETVAL;             \
		if (!ctx)                                         \
			return XDP_ABORTED;                       \
		if (ret == 0)                                     \
			xdp_adjust_meta(ctx, 0);                  \
		return ret;                                       \
	}
SLOT(0)
SLOT(1)
SLOT(2)
SLOT(3)
SLOT(4)
SLOT(5)
SLOT(6)
SLOT(7)
SLOT(8)
SLOT(9)

#define RUN(n)                                              \
	if (conf.num_progs_enabled < (n) + 1)               \
		return XDP_PASS;                            \
	ret = prog##n(ctx);                                 \
	if (!((1U << ret) & conf.chain_call_actions[(n)])) \
		return ret;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	int ret;

	RUN(0)
	RUN(1)
	RUN(2)
	RUN(3)
	RUN(4)
	RUN(5)
	RUN(6)
	RUN(7)
	RUN(8)
	RUN(9)
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
