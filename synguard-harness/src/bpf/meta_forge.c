/* A hostile XDP program for the foreign-metadata test: it writes metadata in front of a
 * frame that claims to be synguard's hand-off for that very frame, then bounces the frame
 * back over the veth with XDP_TX, so it reaches the peer's XDP program (synguard) with the
 * metadata in front of it, as a frame redirected by another program would.
 *
 * It acts on IPv4 TCP ACKs (no SYN/RST/FIN, IHL 5, untagged) to port 8081 only; everything
 * else passes. No headers, so it builds without kernel or libc BPF headers. */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

struct xdp_md {
	u32 data;
	u32 data_end;
	u32 data_meta;
};

static long (*bpf_xdp_adjust_meta)(struct xdp_md *ctx, int delta) = (void *)54;

#define PORT 8081

__attribute__((section("xdp"), used)) int sg_meta_forge(struct xdp_md *ctx)
{
	u8 *data = (u8 *)(unsigned long)ctx->data;
	u8 *end = (u8 *)(unsigned long)ctx->data_end;
	if (data + 14 + 20 + 20 > end)
		return 2;
	if (data[12] != 0x08 || data[13] != 0x00 || data[14] != 0x45 || data[14 + 9] != 6)
		return 2;
	u8 *th = data + 34;
	if (((th[2] << 8) | th[3]) != PORT || (th[13] & 0x17) != 0x10)
		return 2;
	u32 seq = ((u32)th[4] << 24) | ((u32)th[5] << 16) | ((u32)th[6] << 8) | th[7];
	u32 ack = ((u32)th[8] << 24) | ((u32)th[9] << 16) | ((u32)th[10] << 8) | th[11];
	u16 sport = (th[0] << 8) | th[1];
	if (bpf_xdp_adjust_meta(ctx, -32))
		return 2;
	u8 *meta = (u8 *)(unsigned long)ctx->data_meta;
	data = (u8 *)(unsigned long)ctx->data;
	if (meta + 32 > data)
		return 2;
	/* synguard's CookieMeta, little-endian: magic "SGK1", no timestamps, MSS 1460, no
	 * window scale, SACK or ECN, and this segment's seq, ack and ports. */
	u32 *w = (u32 *)meta;
	w[0] = 0x53474b31;
	w[1] = 0;
	w[2] = 0;
	w[3] = 1460;
	w[4] = 0;
	w[5] = seq;
	w[6] = ack;
	w[7] = (u32)sport | ((u32)PORT << 16);
	return 3; /* XDP_TX */
}

char _license[] __attribute__((section("license"), used)) = "GPL";
