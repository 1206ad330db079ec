/* A legacy cls_bpf classifier for `tc filter add dev IF ingress bpf da obj FILE sec classifier`:
 * drops every packet. Tests use it to show that synguard's TC program hands the packet on to
 * the rest of the ingress chain instead of ending it. No headers, like xdp_pass.c. */
struct __sk_buff;

__attribute__((section("classifier"), used)) int sg_tc_drop(struct __sk_buff *skb)
{
	(void)skb;
	return 2; /* TC_ACT_SHOT */
}

char _license[] __attribute__((section("license"), used)) = "GPL";
