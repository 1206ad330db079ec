//! The flood scenario shared by `cargo xtask demo`, `cargo xtask bench` and the tests: one
//! protection setup, a max-rate spoofed SYN flood with legit clients connecting through it,
//! then a forged-ACK flood, and what each cost.
//!
//! How each number is measured (all over a steady-state window that starts after the flood's
//! warm-up and ends when the clients are done, never before `min_window`):
//! - **SYNs in/s**: frames arriving at the server veth, `rx_packets + rx_dropped` (what the
//!   server accepted plus what its backlog dropped, as on a NIC), per second.
//! - **SYN+ACKs out/s**: synguard: its `cookie_sent` counter; kernel and nft: the server
//!   veth's `tx_packets` (the few legit data segments are noise against 10^5/s).
//! - **softirq CPU per SYN**: NET_RX + NET_TX softirq nanoseconds over all CPUs (the BPF
//!   meter in [`crate::softirq`]) divided by the SYNs that arrived. It covers everything the
//!   packets cost in softirq on this host: the bridge, the server's receive path and the
//!   replies' way back to atk, which is the same for every protection. `/proc/stat`'s
//!   tick-sampled softirq time is reported alongside as a cross-check.
//! - **forged ACKs**: a separate ACK flood phase with random sequence/ack numbers; synguard:
//!   `cookie_ack_invalid`; nft synproxy: its rule counter; the kernel answers them with RSTs
//!   (`Tcp: OutRsts`) rather than dropping them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{
    Family, FloodKind, FloodOptions, LinkStats, Role, Topology, TopologyOptions,
    client::{ClientOptions, ClientProgress, ClientReport},
    flood, netns,
    softirq::{ProcStat, SoftirqMeter, SoftirqSample},
    synguard::{Counters, Daemon, DaemonOptions, XdpMode},
};
use synguard_common::maps::{Counter, Handoff};

/// What stands between the flood and the listener.
#[derive(Debug, Clone)]
pub enum Protection {
    /// Kernel TCP with `tcp_syncookies=0`: the SYN queue alone.
    NoProtection,
    /// Kernel TCP with `tcp_syncookies=1`, Linux's default.
    KernelCookies,
    /// nftables `synproxy` in front of the listener (conntrack, cookies in netfilter).
    NftSynproxy,
    /// synguard, mode `always`, in `handoff` (None: what `auto` picks), with
    /// `tcp_syncookies=2` for the kernel-cookie handoff (as README recommends) and 1 else.
    Synguard {
        bin: PathBuf,
        xdp_mode: XdpMode,
        handoff: Option<Handoff>,
    },
}

impl Protection {
    /// Short label for tables and JSON keys.
    pub fn label(&self) -> String {
        match self {
            Protection::NoProtection => "none".into(),
            Protection::KernelCookies => "kernel syncookies".into(),
            Protection::NftSynproxy => "nft synproxy".into(),
            Protection::Synguard {
                xdp_mode,
                handoff: None,
                ..
            } => format!("synguard ({})", xdp_mode.as_str()),
            Protection::Synguard {
                xdp_mode,
                handoff: Some(h),
                ..
            } => format!("synguard ({}, {h})", xdp_mode.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    pub port: u16,
    pub family: Family,
    /// Legit connections made under the SYN flood, and how many at once.
    pub clients: usize,
    pub concurrency: usize,
    /// Budget for one legit connection (connect, send, receive).
    pub client_timeout: Duration,
    pub response_bytes: usize,
    /// Flood time before the measurement window starts.
    pub warmup: Duration,
    /// The window lasts at least this long, even if the clients finish earlier ...
    pub min_window: Duration,
    /// ... and at most this long; no client starts after `max_window - client_timeout`.
    pub max_window: Duration,
    /// Length of the forged-ACK phase (zero: skipped).
    pub ack_flood: Duration,
    /// SYNs carry MSS, SACK-permitted, timestamps and window scale.
    pub syn_options: bool,
    /// See [`TopologyOptions::install_signal_handlers`].
    pub install_signal_handlers: bool,
}

impl ScenarioOptions {
    /// The demo's scenario: 200 clients under a max-rate flood.
    pub fn demo() -> Self {
        Self {
            port: 8080,
            family: Family::V4,
            clients: 200,
            concurrency: 25,
            client_timeout: Duration::from_secs(4),
            response_bytes: 4096,
            warmup: Duration::from_secs(1),
            min_window: Duration::from_secs(6),
            max_window: Duration::from_secs(16),
            ack_flood: Duration::from_secs(3),
            syn_options: false,
            install_signal_handlers: true,
        }
    }
}

/// Where a run is, for progress displays.
#[derive(Debug, Clone)]
pub struct Progress {
    pub phase: Phase,
    /// Time in the phase so far, and its expected length.
    pub elapsed: Duration,
    pub expected: Duration,
    pub clients_done: usize,
    pub clients_ok: usize,
    pub clients_total: usize,
    /// Arrival rate at the server veth over the last tick, if known.
    pub arrival_pps: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Setup,
    SynFlood,
    AckFlood,
    Teardown,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setting up",
            Phase::SynFlood => "SYN flood + clients",
            Phase::AckFlood => "forged-ACK flood",
            Phase::Teardown => "tearing down",
        }
    }
}

/// Counters at one instant.
struct Snapshot {
    at: Instant,
    link: LinkStats,
    softirq: SoftirqSample,
    procstat: ProcStat,
    netstat: BTreeMap<String, u64>,
    synguard: Option<Counters>,
    nft_synproxied: Option<u64>,
}

/// One flood phase's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub secs: f64,
    /// Frames that reached the server veth (accepted + dropped in its backlog).
    pub arrived: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    /// NET_RX + NET_TX softirq time over all CPUs, ns (BPF meter).
    pub softirq_net_ns: u64,
    /// All softirq vectors, ns (BPF meter).
    pub softirq_all_ns: u64,
    /// `/proc/stat` softirq, ns (tick-sampled).
    pub softirq_procstat_ns: u64,
    /// Kernel counters of the srv namespace that moved (`TcpExt.*`, `Tcp.*`).
    pub netstat: BTreeMap<String, u64>,
    /// synguard's counters that moved.
    pub synguard: BTreeMap<String, u64>,
    /// Packets through the nft synproxy rule.
    pub nft_synproxied: Option<u64>,
}

impl Window {
    pub fn arrived_pps(&self) -> f64 {
        self.arrived as f64 / self.secs.max(1e-9)
    }

    /// Network softirq ns per frame that arrived.
    pub fn softirq_ns_per_pkt(&self) -> f64 {
        self.softirq_net_ns as f64 / (self.arrived.max(1)) as f64
    }

    pub fn procstat_ns_per_pkt(&self) -> f64 {
        self.softirq_procstat_ns as f64 / (self.arrived.max(1)) as f64
    }

    fn netstat(&self, k: &str) -> u64 {
        self.netstat.get(k).copied().unwrap_or(0)
    }

    fn synguard(&self, c: Counter) -> u64 {
        self.synguard.get(c.name()).copied().unwrap_or(0)
    }
}

/// Everything one scenario run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub protection: String,
    pub clients_ok: usize,
    pub clients_total: usize,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    /// Distinct client errors with counts.
    pub client_errors: Vec<(String, usize)>,
    pub syn: Window,
    /// SYN+ACKs sent during the SYN window, and how they were counted.
    pub synack_out: u64,
    pub synack_source: &'static str,
    pub ack: Option<Window>,
    /// Forged ACKs the protection dropped (None: it does not drop them).
    pub forged_acks_dropped: Option<u64>,
    /// RSTs the server sent during the ACK phase.
    pub ack_rsts: u64,
    /// Where synguard attached, if it ran.
    pub synguard_log: Option<String>,
    /// Connect times of the legit connections that succeeded, ms, ascending (the CDF's
    /// points; the failed ones are `clients_total - connect_ms.len()`).
    pub connect_ms: Vec<f64>,
    /// Rates over the SYN window, one point per half second.
    pub timeline: Vec<RatePoint>,
}

/// Rates at the server over one interval of the SYN window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RatePoint {
    /// End of the interval, seconds since the window opened.
    pub t_secs: f64,
    /// Frames arriving at the server veth, /s.
    pub syn_in_pps: f64,
    /// SYN+ACKs out, /s, counted as `synack_source` says.
    pub synack_out_pps: f64,
}

impl ScenarioReport {
    pub fn synack_pps(&self) -> f64 {
        self.synack_out as f64 / self.syn.secs.max(1e-9)
    }
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

/// Runs the scenario with `protection` in a fresh topology, which is torn down on return.
pub fn run(
    opts: &ScenarioOptions,
    protection: &Protection,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ScenarioReport> {
    let mut p = Progress {
        phase: Phase::Setup,
        elapsed: Duration::ZERO,
        expected: Duration::ZERO,
        clients_done: 0,
        clients_ok: 0,
        clients_total: opts.clients,
        arrival_pps: None,
    };
    progress(&p);
    let topo = scenario_topology(opts)?;
    // The legit clients all share one address. After one success the kernel would count it as
    // a "proven" peer and reserve the last quarter of the SYN queue for it even without
    // cookies; real clients are many unproven peers, so no peer is remembered here.
    topo.set_sysctl(Role::Srv, "net.ipv4.tcp_no_metrics_save", "1")?;
    let syncookies = match protection {
        Protection::NoProtection => "0",
        Protection::Synguard {
            handoff: Some(Handoff::KernelCookie),
            ..
        } => "2",
        _ => "1",
    };
    topo.set_sysctl(Role::Srv, "net.ipv4.tcp_syncookies", syncookies)?;
    if matches!(protection, Protection::NftSynproxy) {
        nft_synproxy(&topo, opts)?;
    }
    let server = topo.start_server(opts.port)?;
    let daemon = match protection {
        Protection::Synguard {
            bin,
            xdp_mode,
            handoff,
        } => Some(Daemon::start(
            &topo,
            &DaemonOptions {
                handoff: *handoff,
                ..DaemonOptions::new(bin, opts.port, *xdp_mode)
            },
        )?),
        _ => None,
    };
    let target = topo.server_addr(opts.family, opts.port);
    // A broken setup must fail here with its own errors, not later as "0/200 under flood".
    let pre = topo.run_clients(&ClientOptions::new(target, 3))?;
    if pre.ok() != pre.total() {
        bail!(
            "{}: connections fail even without a flood: {:?}",
            protection.label(),
            pre.errors()
        );
    }
    let meter = SoftirqMeter::new()?;
    let snap = |topo: &Topology| -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            link: topo.server_stats()?,
            softirq: meter.sample()?,
            procstat: ProcStat::read()?,
            netstat: read_netstat(topo.netns(Role::Srv))?,
            synguard: daemon.as_ref().map(|d| d.counters()).transpose()?,
            nft_synproxied: if matches!(protection, Protection::NftSynproxy) {
                Some(nft_counter(topo)?)
            } else {
                None
            },
        })
    };

    // SYN flood with legit clients.
    let mut fo = FloodOptions::new(
        FloodKind::Syn,
        opts.family,
        opts.port,
        opts.warmup + opts.max_window + Duration::from_secs(5),
    );
    fo.syn_options = opts.syn_options;
    let running = flood::start(&topo, &fo)?;
    p.phase = Phase::SynFlood;
    p.expected = opts.min_window;
    let t_flood = Instant::now();
    while t_flood.elapsed() < opts.warmup {
        p.elapsed = t_flood.elapsed();
        progress(&p);
        thread::sleep(Duration::from_millis(100));
    }
    let s0 = snap(&topo)?;
    let cp = Arc::new(ClientProgress::default());
    let mut co = ClientOptions::new(target, opts.clients);
    co.concurrency = opts.concurrency;
    co.timeout = opts.client_timeout;
    co.response_bytes = opts.response_bytes;
    co.deadline = opts.max_window.saturating_sub(opts.client_timeout);
    co.progress = Some(cp.clone());
    let mut timeline = Vec::new();
    let (clients, s1) = thread::scope(|s| -> Result<(ClientReport, Snapshot)> {
        let h = s.spawn(|| topo.run_clients(&co));
        let mut last = (Instant::now(), s0.link);
        let synack_count = |l: &crate::netns::LinkStats| -> u64 {
            match &daemon {
                Some(d) => d.counters().map_or(0, |c| c.get(Counter::CookieSent)),
                None => l.tx_packets,
            }
        };
        let mut last_synacks = synack_count(&s0.link);
        loop {
            thread::sleep(Duration::from_millis(250));
            let el = s0.at.elapsed();
            p.elapsed = el;
            p.clients_done = cp.done.load(Ordering::Relaxed);
            p.clients_ok = cp.ok.load(Ordering::Relaxed);
            if last.0.elapsed() >= Duration::from_millis(500)
                && let Ok(l) = topo.server_stats()
            {
                let n = (l.rx_packets + l.rx_dropped)
                    .saturating_sub(last.1.rx_packets + last.1.rx_dropped);
                let dt = last.0.elapsed().as_secs_f64();
                p.arrival_pps = Some(n as f64 / dt);
                let synacks = synack_count(&l);
                timeline.push(RatePoint {
                    t_secs: s0.at.elapsed().as_secs_f64(),
                    syn_in_pps: n as f64 / dt,
                    synack_out_pps: synacks.saturating_sub(last_synacks) as f64 / dt,
                });
                last_synacks = synacks;
                last = (Instant::now(), l);
            }
            progress(&p);
            if (h.is_finished() && el >= opts.min_window) || el >= opts.max_window {
                break;
            }
        }
        // The window closes before the flood stops, so it is all flood.
        let s1 = snap(&topo)?;
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        Ok((r, s1))
    })?;
    let flood_rep = running.stop()?;
    if flood_rep.srv_rx + flood_rep.srv_rx_dropped == 0 {
        bail!(
            "the SYN flood never reached the server: {}",
            flood_rep.generator_log
        );
    }
    let syn = window(&s0, &s1);
    let (synack_out, synack_source) = match daemon {
        Some(_) => (syn.synguard(Counter::CookieSent), "cookie_sent"),
        None => (syn.tx_packets, "server veth tx_packets"),
    };

    // Forged ACKs.
    let (ack, forged_acks_dropped, ack_rsts) = if opts.ack_flood.is_zero() {
        (None, None, 0)
    } else {
        p.phase = Phase::AckFlood;
        p.expected = opts.ack_flood;
        p.arrival_pps = None;
        let a0 = snap(&topo)?;
        let running = flood::start(
            &topo,
            &FloodOptions::new(FloodKind::Ack, opts.family, opts.port, opts.ack_flood),
        )?;
        while a0.at.elapsed() < opts.ack_flood {
            p.elapsed = a0.at.elapsed();
            progress(&p);
            thread::sleep(Duration::from_millis(100));
        }
        running.wait()?;
        let a1 = snap(&topo)?;
        let w = window(&a0, &a1);
        let dropped = match protection {
            Protection::Synguard { .. } => Some(w.synguard(Counter::CookieAckInvalid)),
            Protection::NftSynproxy => w.nft_synproxied,
            _ => None,
        };
        let rsts = w.netstat("Tcp.OutRsts");
        (Some(w), dropped, rsts)
    };

    p.phase = Phase::Teardown;
    p.expected = Duration::ZERO;
    progress(&p);
    let synguard_log = daemon.map(|d| d.stop()).transpose()?;
    drop(meter);
    server.stop();
    topo.teardown()?;
    Ok(ScenarioReport {
        protection: protection.label(),
        clients_ok: clients.ok(),
        clients_total: clients.total(),
        connect_p50_ms: ms(clients.connect_percentile(50.0)),
        connect_p99_ms: ms(clients.connect_percentile(99.0)),
        client_errors: clients.errors(),
        syn,
        synack_out,
        synack_source,
        ack,
        forged_acks_dropped,
        ack_rsts,
        synguard_log,
        connect_ms: clients
            .connect_times()
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
        timeline,
    })
}

fn window(a: &Snapshot, b: &Snapshot) -> Window {
    let d = b.softirq.since(&a.softirq);
    let moved = |x: &BTreeMap<String, u64>, y: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        y.iter()
            .filter_map(|(k, v)| {
                let dv = v.saturating_sub(x.get(k).copied().unwrap_or(0));
                (dv > 0).then(|| (k.clone(), dv))
            })
            .collect()
    };
    let synguard = match (&a.synguard, &b.synguard) {
        (Some(x), Some(y)) => y
            .delta(x)
            .nonzero()
            .into_iter()
            .map(|(c, v)| (c.name().to_string(), v))
            .collect(),
        _ => BTreeMap::new(),
    };
    Window {
        secs: (b.at - a.at).as_secs_f64(),
        arrived: (b.link.rx_packets + b.link.rx_dropped)
            .saturating_sub(a.link.rx_packets + a.link.rx_dropped),
        rx_dropped: b.link.rx_dropped.saturating_sub(a.link.rx_dropped),
        tx_packets: b.link.tx_packets.saturating_sub(a.link.tx_packets),
        softirq_net_ns: d.net_ns(),
        softirq_all_ns: d.all_ns(),
        softirq_procstat_ns: b.procstat.softirq_ns_since(&a.procstat),
        netstat: moved(&a.netstat, &b.netstat),
        synguard,
        nft_synproxied: match (a.nft_synproxied, b.nft_synproxied) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x)),
            _ => None,
        },
    }
}

/// `TcpExt.*`, `Tcp.*`, `IpExt.*`… counters of `netns` from `/proc/net/{netstat,snmp}`.
pub fn read_netstat(netns: &str) -> Result<BTreeMap<String, u64>> {
    netns::in_netns(netns, || {
        let mut out = BTreeMap::new();
        // thread-self: /proc/self/net would show the main thread's namespace.
        for f in ["netstat", "snmp"] {
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))?;
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.chunks(2) {
                let [names, values] = pair else { continue };
                let (Some((proto, names)), Some((_, values))) =
                    (names.split_once(':'), values.split_once(':'))
                else {
                    continue;
                };
                for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(v) = v.parse::<u64>() {
                        out.insert(format!("{proto}.{n}"), v);
                    }
                }
            }
        }
        Ok(out)
    })
}

const NFT_TABLE: &str = "sgh_synproxy";
const NFT_COUNTER: &str = "synproxied";

/// The nftables synproxy setup from nft's documentation: untracked SYNs to the port go to
/// synproxy, which answers with cookies; only a valid cookie ACK makes it open the
/// connection to the listener. Invalid conntrack state is dropped.
fn nft_synproxy(t: &Topology, o: &ScenarioOptions) -> Result<()> {
    let mss = match o.family {
        Family::V4 => 1460,
        Family::V6 => 1440,
    };
    let port = o.port;
    let ruleset = format!(
        "table inet {NFT_TABLE} {{
  counter {NFT_COUNTER} {{ }}
  chain pre {{
    type filter hook prerouting priority raw; policy accept;
    tcp dport {port} tcp flags & (fin|syn|rst|ack) == syn notrack
  }}
  chain in {{
    type filter hook input priority filter; policy accept;
    tcp dport {port} ct state invalid,untracked counter name \"{NFT_COUNTER}\" synproxy mss {mss} wscale 7 timestamp sack-perm
    ct state invalid drop
  }}
}}
"
    );
    netns::nft(t.netns(Role::Srv), &ruleset)?;
    // Without this, conntrack picks up a bare ACK as ESTABLISHED ("loose") and synproxy
    // never sees it; the sysctl exists once the ruleset has loaded conntrack.
    t.set_sysctl(Role::Srv, "net.netfilter.nf_conntrack_tcp_loose", "0")?;
    Ok(())
}

fn nft_counter(t: &Topology) -> Result<u64> {
    let out = t.output(
        Role::Srv,
        "nft",
        &["-j", "list", "counter", "inet", NFT_TABLE, NFT_COUNTER],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse nft -j")?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .context("no packets in nft counter output")
}

/// The cheapest things a server veth can do with the flood, measured like a protection: what
/// the wire itself (trafgen, the bridge, the veth pair) costs per SYN, below which no
/// protection can go in this harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Floor {
    /// An XDP_DROP program on the server veth (native).
    XdpDrop,
    /// The MAC-swap XDP_TX reflector (native): every SYN answered in XDP by the cheapest
    /// possible program, with the reply's way back to atk.
    XdpReflect,
}

impl Floor {
    pub fn label(self) -> &'static str {
        match self {
            Floor::XdpDrop => "floor: XDP_DROP",
            Floor::XdpReflect => "floor: XDP_TX reflector",
        }
    }
}

/// Floods the server veth with `floor` attached for `warmup + min_window` and measures the
/// window like [`run`] does (no clients, no ACK phase).
pub fn floor(
    opts: &ScenarioOptions,
    which: Floor,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Window> {
    let mut p = Progress {
        phase: Phase::Setup,
        elapsed: Duration::ZERO,
        expected: opts.min_window,
        clients_done: 0,
        clients_ok: 0,
        clients_total: 0,
        arrival_pps: None,
    };
    progress(&p);
    let topo = scenario_topology(opts)?;
    let _reflector = match which {
        Floor::XdpDrop => {
            crate::xdp::attach_drop(topo.netns(Role::Srv), topo.server_iface())?;
            None
        }
        Floor::XdpReflect => Some(attach_reflector(&topo)?),
    };
    let meter = SoftirqMeter::new()?;
    let snap = || -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            link: topo.server_stats()?,
            softirq: meter.sample()?,
            procstat: ProcStat::read()?,
            netstat: read_netstat(topo.netns(Role::Srv))?,
            synguard: None,
            nft_synproxied: None,
        })
    };
    let mut fo = FloodOptions::new(
        FloodKind::Syn,
        opts.family,
        opts.port,
        opts.warmup + opts.min_window + Duration::from_secs(5),
    );
    fo.syn_options = opts.syn_options;
    let running = flood::start(&topo, &fo)?;
    p.phase = Phase::SynFlood;
    let t0 = Instant::now();
    while t0.elapsed() < opts.warmup {
        thread::sleep(Duration::from_millis(100));
    }
    let s0 = snap()?;
    while s0.at.elapsed() < opts.min_window {
        p.elapsed = s0.at.elapsed();
        progress(&p);
        thread::sleep(Duration::from_millis(100));
    }
    let s1 = snap()?;
    running.stop()?;
    p.phase = Phase::Teardown;
    progress(&p);
    drop(_reflector);
    drop(meter);
    topo.teardown()?;
    Ok(window(&s0, &s1))
}

/// Attaches `sg_bench_reflect` natively to the server veth; detached when the handle drops.
fn attach_reflector(topo: &Topology) -> Result<aya::Ebpf> {
    let iface = topo.server_iface().to_string();
    // The attach resolves the interface in the calling thread's namespace.
    netns::in_netns(topo.netns(Role::Srv), move || {
        let mut ebpf =
            aya::Ebpf::load(crate::xdp::bench_xdp_obj()?).context("loading bench_xdp.o")?;
        let p: &mut aya::programs::Xdp = ebpf
            .program_mut("sg_bench_reflect")
            .context("no sg_bench_reflect")?
            .try_into()?;
        p.load()?;
        let name = std::ffi::CString::new(iface)?;
        p.attach(name.as_c_str(), aya::programs::XdpMode::Driver)
            .context("attaching the reflector")?;
        Ok(ebpf)
    })
}

/// The topology every scenario and floor runs on.
fn scenario_topology(opts: &ScenarioOptions) -> Result<Topology> {
    Topology::new(TopologyOptions {
        install_signal_handlers: opts.install_signal_handlers,
        server_rps: true,
        // The same wire for every protection: native XDP_TX on the server veth needs an XDP
        // program on its peer, so the peer has one in every run.
        xdp_pass_on_server_peer: true,
    })
}
