/* Per-CPU softirq time, by vector, from the irq:softirq_entry/exit raw tracepoints.
 *
 * This kernel has no CONFIG_IRQ_TIME_ACCOUNTING, so /proc/stat's softirq column is tick
 * sampled (HZ 250, reported in 10 ms units); these counters are exact nanoseconds. Softirqs
 * never nest on one CPU, so one start timestamp per CPU suffices. */
typedef unsigned int u32;
typedef unsigned long long u64;

#define NR_SOFTIRQS 10

struct bpf_map_def {
	u32 type;
	u32 key_size;
	u32 value_size;
	u32 max_entries;
	u32 map_flags;
};

struct softirq_acc {
	u64 start;
	u64 ns[NR_SOFTIRQS];
	u64 count[NR_SOFTIRQS];
};

struct bpf_map_def __attribute__((section("maps"), used)) SG_SOFTIRQ = {
	.type = 6, /* BPF_MAP_TYPE_PERCPU_ARRAY */
	.key_size = sizeof(u32),
	.value_size = sizeof(struct softirq_acc),
	.max_entries = 1,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static u64 (*bpf_ktime_get_ns)(void) = (void *)5;

struct raw_tp_args {
	u64 args[1];
};

__attribute__((section("raw_tracepoint/softirq_entry"), used)) int
sg_softirq_entry(struct raw_tp_args *ctx)
{
	u32 key = 0;
	struct softirq_acc *a = bpf_map_lookup_elem(&SG_SOFTIRQ, &key);

	(void)ctx;
	if (a)
		a->start = bpf_ktime_get_ns();
	return 0;
}

__attribute__((section("raw_tracepoint/softirq_exit"), used)) int
sg_softirq_exit(struct raw_tp_args *ctx)
{
	u32 key = 0;
	u64 vec = ctx->args[0];
	struct softirq_acc *a = bpf_map_lookup_elem(&SG_SOFTIRQ, &key);

	if (!a || !a->start)
		return 0;
	if (vec < NR_SOFTIRQS) {
		a->ns[vec] += bpf_ktime_get_ns() - a->start;
		a->count[vec] += 1;
	}
	a->start = 0;
	return 0;
}

char _license[] __attribute__((section("license"), used)) = "GPL";
