//! Softirq CPU time, host-wide, for "softirq CPU per SYN".
//!
//! Two sources, read together:
//! - [`SoftirqMeter`]: exact nanoseconds per softirq vector, summed over CPUs, from a tiny
//!   BPF program on the `irq:softirq_entry`/`softirq_exit` raw tracepoints
//!   (`src/bpf/softirq.c`). Kernels without `CONFIG_IRQ_TIME_ACCOUNTING` (this one) only
//!   *sample* softirq time at each tick, so this is the primary source. Its own cost (two
//!   raw tracepoint calls per softirq run, a few tens of ns) is inside what it measures, the
//!   same for every scenario.
//! - [`ProcStat`]: the softirq column of `/proc/stat` (USER_HZ ticks), as a cross-check that
//!   needs nothing loaded.
//!
//! Both are host-wide: anything else the machine does in softirq during the window counts.

use std::time::Instant;

use anyhow::{Context, Result};
use aya::{Ebpf, maps::PerCpuArray, programs::RawTracePoint};

pub const NR_SOFTIRQS: usize = 10;
/// Softirq vector numbers (include/linux/interrupt.h).
pub const NET_TX: usize = 2;
pub const NET_RX: usize = 3;

/// Mirrors `struct softirq_acc` in softirq.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    start: u64,
    ns: [u64; NR_SOFTIRQS],
    count: [u64; NR_SOFTIRQS],
}

// SAFETY: repr(C), only u64 fields, no padding.
unsafe impl aya::Pod for Acc {}

/// Totals over all CPUs at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftirqSample {
    pub ns: [u64; NR_SOFTIRQS],
    pub count: [u64; NR_SOFTIRQS],
}

impl SoftirqSample {
    /// Network softirq time (NET_RX + NET_TX), ns.
    pub fn net_ns(&self) -> u64 {
        self.ns[NET_RX] + self.ns[NET_TX]
    }

    pub fn all_ns(&self) -> u64 {
        self.ns.iter().sum()
    }

    /// `self - earlier`, per field.
    pub fn since(&self, earlier: &SoftirqSample) -> SoftirqSample {
        let mut d = SoftirqSample::default();
        for i in 0..NR_SOFTIRQS {
            d.ns[i] = self.ns[i].saturating_sub(earlier.ns[i]);
            d.count[i] = self.count[i].saturating_sub(earlier.count[i]);
        }
        d
    }
}

/// The loaded, attached accumulator. Dropping it detaches and unloads it.
pub struct SoftirqMeter {
    ebpf: Ebpf,
}

impl SoftirqMeter {
    pub fn new() -> Result<Self> {
        let mut ebpf = Ebpf::load(crate::bpfobj::bytes(crate::bpfobj::Obj::Softirq)?)
            .context("loading the softirq meter")?;
        for (prog, tp) in [
            ("sg_softirq_entry", "softirq_entry"),
            ("sg_softirq_exit", "softirq_exit"),
        ] {
            let p: &mut RawTracePoint = ebpf
                .program_mut(prog)
                .with_context(|| format!("no program {prog}"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {prog}"))?;
            p.attach(tp)
                .with_context(|| format!("attaching {prog} to {tp}"))?;
        }
        Ok(Self { ebpf })
    }

    /// Current totals over all CPUs.
    pub fn sample(&self) -> Result<SoftirqSample> {
        let map: PerCpuArray<_, Acc> =
            PerCpuArray::try_from(self.ebpf.map("SG_SOFTIRQ").context("no map SG_SOFTIRQ")?)?;
        let mut s = SoftirqSample::default();
        for acc in map.get(&0, 0)?.iter() {
            for i in 0..NR_SOFTIRQS {
                s.ns[i] += acc.ns[i];
                s.count[i] += acc.count[i];
            }
        }
        Ok(s)
    }
}

/// The softirq column of `/proc/stat`, summed over CPUs, in USER_HZ ticks.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub softirq_ticks: u64,
    /// All non-idle time (user+nice+system+irq+softirq+steal), ticks.
    pub busy_ticks: u64,
    pub at: Instant,
}

impl ProcStat {
    pub fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat")?;
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no cpu line in /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        Ok(Self {
            softirq_ticks: g(6),
            busy_ticks: g(0) + g(1) + g(2) + g(5) + g(6) + g(7),
            at: Instant::now(),
        })
    }

    /// Ticks per second for the tick values (USER_HZ).
    pub fn hz() -> u64 {
        match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(hz)) if hz > 0 => hz as u64,
            _ => 100,
        }
    }

    /// Softirq nanoseconds between `earlier` and `self`.
    pub fn softirq_ns_since(&self, earlier: &ProcStat) -> u64 {
        self.softirq_ticks.saturating_sub(earlier.softirq_ticks) * 1_000_000_000 / Self::hz()
    }
}
