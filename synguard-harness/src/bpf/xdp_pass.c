/* Minimal XDP programs for the harness; no headers so it builds without kernel/libc bpf headers.
 *
 * sg_xdp_pass: on veth, an XDP_TX/XDP_REDIRECT frame is delivered only if the receiving peer
 * runs XDP; this no-op on the peer makes synguard's native XDP_TX deliver.
 * sg_xdp_drop: a sink that costs nothing, to measure what the flood generator alone reaches. */
struct xdp_md;

__attribute__((section("xdp"), used)) int sg_xdp_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return 2; /* XDP_PASS */
}

__attribute__((section("xdp.drop"), used)) int sg_xdp_drop(struct xdp_md *ctx)
{
	(void)ctx;
	return 1; /* XDP_DROP */
}

char _license[] __attribute__((section("license"), used)) = "GPL";
