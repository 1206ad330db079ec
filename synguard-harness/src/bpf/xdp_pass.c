/* Minimal XDP_PASS program. It exists only so that a veth has *some* native XDP program:
 * on veth, an XDP_TX/XDP_REDIRECT frame is delivered only if the receiving peer runs XDP.
 * No headers are included so that it builds without kernel/libc bpf headers installed. */
struct xdp_md;

__attribute__((section("xdp"), used)) int sg_xdp_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return 2; /* XDP_PASS */
}

char _license[] __attribute__((section("license"), used)) = "GPL";
