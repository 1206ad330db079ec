/* XDP programs the benchmark loads with aya (no headers, so a bare clang builds it).
 *
 * sg_bench_pass: the no-op floor. BPF_PROG_TEST_RUN's reported time includes the kernel's
 * own per-run overhead (bh disable/enable, two clock reads); running this the same way
 * measures that overhead, and the benchmark subtracts it from every other program's time.
 * sg_bench_reflect: the cheapest useful XDP_TX program (swap the MACs, bounce the frame):
 * the floor synguard's SYN path is compared with. */
struct xdp_md {
	unsigned int data;
	unsigned int data_end;
};

__attribute__((section("xdp"), used)) int sg_bench_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return 2; /* XDP_PASS */
}

__attribute__((section("xdp"), used)) int sg_bench_reflect(struct xdp_md *ctx)
{
	/* 16-bit accesses, as xdp-tutorial's reflectors do: frames start 2-byte aligned. */
	unsigned short *p = (unsigned short *)(long)ctx->data;
	unsigned short *end = (unsigned short *)(long)ctx->data_end;
	unsigned short a, b, c;

	if (p + 7 > end)
		return 1; /* XDP_DROP */
	a = p[0];
	b = p[1];
	c = p[2];
	p[0] = p[3];
	p[1] = p[4];
	p[2] = p[5];
	p[3] = a;
	p[4] = b;
	p[5] = c;
	return 3; /* XDP_TX */
}

char _license[] __attribute__((section("license"), used)) = "GPL";
