//! `BPF_PROG_TEST_RUN` timing of synguard's XDP paths against two floors.
//!
//! A test run with `repeat > 1` reruns the program on the buffer the previous run rewrote
//! (a SYN becomes a SYN+ACK after the first run), so every sample here is a single run
//! (`repeat = 1`, fresh input each time), and the kernel's reported duration is that one run.
//! That duration includes the kernel's own per-run overhead (bh disable/enable, two clock
//! reads), so an XDP_PASS no-op run the same way is the zero point subtracted from all.
//! Cases run interleaved in chunks on one pinned CPU, so drift hits them all alike.
//!
//! Test runs execute in the caller's network namespace (the loopback device's queue), and
//! synguard's socket lookups do too: the runs happen on a thread inside srv, where a real
//! connection to the protected port exists for the established-ACK path.

use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{Program, TestRun, TestRunOptions, Xdp},
};
use indicatif::ProgressBar;
use serde::Serialize;
use synguard_common::maps::Config;
use synguard_harness::{Topology, netns, pin_dir, pin_thread_to_cpu, xdp::bench_xdp_obj};

use crate::packets::{self, Flags, Flow, SynAck};

const XDP_ACTIONS: [&str; 5] = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"];

fn action(v: u32) -> &'static str {
    XDP_ACTIONS.get(v as usize).copied().unwrap_or("?")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Which {
    Noop,
    Reflector,
    Synguard,
}

struct Case {
    name: String,
    which: Which,
    frame: Vec<u8>,
    expect: u32,
    /// `Config::test_flags` while this case runs: the bench-only switches that take one
    /// rule's lookup out of the SYN path, to show what it costs.
    test_flags: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub program: Which,
    pub verdict: &'static str,
    pub expected: &'static str,
    pub runs: u64,
    pub median_ns: f64,
    /// Mean of the fastest 99% of runs.
    pub mean_ns: f64,
    pub p99_ns: f64,
    /// Minus the no-op floor's median / mean.
    pub net_median_ns: f64,
    pub net_mean_ns: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgStats {
    pub name: String,
    pub verified_insns: Option<u32>,
    pub xlated_bytes: Option<u32>,
    pub jited_bytes: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MicroReport {
    pub runs_per_case: u64,
    pub cpu: usize,
    pub cases: Vec<CaseResult>,
    pub programs: Vec<ProgStats>,
    /// Cases that could not be built, and why.
    pub skipped: Vec<(String, String)>,
}

/// Where the eBPF object that synguard embeds is built (synguard/build.rs).
pub fn synguard_object() -> std::path::PathBuf {
    crate::root().join("target/bpf/bpfel-unknown-none/release/synguard")
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    match ebpf.program(name) {
        Some(Program::Xdp(x)) => Ok(x),
        _ => bail!("no XDP program {name}"),
    }
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?;
    p.load().with_context(|| format!("loading {name}"))
}

/// A `struct xdp_md` for the test run: the whole frame as data, received on `ifindex`, so
/// programs that check the ingress interface (synguard's own-MAC check) see the server veth.
fn xdp_md(frame_len: usize, ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    // data = 0, data_end, data_meta = 0, ingress_ifindex, rx_queue_index = 0, egress = 0.
    md[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

fn once(p: &Xdp, frame: &[u8], out: &mut [u8], ifindex: u32) -> Result<(u32, u32, usize)> {
    let md = xdp_md(frame.len(), ifindex);
    let r = p.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ctx_in: Some(&md),
        repeat: 1,
        ..Default::default()
    })?;
    Ok((
        r.return_value,
        r.duration.as_nanos() as u32,
        r.data_size_out as usize,
    ))
}

/// Runs the micro-benchmark in `t`'s srv namespace, against the synguard instance attached
/// to its server veth (the test-run copy shares its pinned maps: config, keys, ports).
pub fn run(t: &Topology, port: u16, runs: u64, bar: &ProgressBar) -> Result<MicroReport> {
    let obj = synguard_object();
    if !obj.is_file() {
        bail!(
            "{} is missing (cargo build --release -p synguard)",
            obj.display()
        );
    }
    let pins = pin_dir(t.server_iface());
    let srv = t.srv.clone();
    let cli = t.cli.clone();
    let srv_addr: SocketAddr = (srv.ipv4, port).into();
    // A real connection to the protected port, for the established-ACK lookup.
    let listener = netns::in_netns(&srv.netns, || Ok(TcpListener::bind(srv_addr)?))?;
    // synguard answers a SYN only for a listener: one for the IPv6 SYN cases too.
    let _listener6 = netns::in_netns(&srv.netns, || Ok(TcpListener::bind((srv.ipv6, port))?))?;
    let client = netns::in_netns(&cli.netns, || Ok(TcpStream::connect(srv_addr)?))?;
    let (_server_side, _) = listener.accept()?;
    let est_src = client.local_addr()?;

    let srv_ns = srv.netns.clone();
    netns::in_netns(&srv_ns, move || {
        let cpu = pin_to_last_cpu()?;
        let mut sg = EbpfLoader::new()
            .default_map_pin_directory(&pins)
            .load_file(&obj)
            .context("loading the synguard object for test runs")?;
        load_xdp(&mut sg, synguard_common::maps::names::XDP_PROG)?;
        let mut sg_config: Array<MapData, Config> = Array::try_from(
            sg.take_map(synguard_common::maps::names::CONFIG)
                .context("CONFIG missing from the synguard object")?,
        )?;
        let mut floor = Ebpf::load(bench_xdp_obj()?).context("loading the floor programs")?;
        load_xdp(&mut floor, "sg_bench_pass")?;
        load_xdp(&mut floor, "sg_bench_reflect")?;
        let prog = |w: Which| -> Result<&Xdp> {
            match w {
                Which::Noop => xdp(&floor, "sg_bench_pass"),
                Which::Reflector => xdp(&floor, "sg_bench_reflect"),
                Which::Synguard => xdp(&sg, synguard_common::maps::names::XDP_PROG),
            }
        };

        let ifindex = nix::net::if_::if_nametoindex(srv.iface.as_str())
            .with_context(|| format!("no interface {} in {}", srv.iface, srv.netns))?;
        let (cases, skipped) = cases(&srv, &cli, port, est_src, prog(Which::Synguard)?, ifindex)?;
        let mut samples: Vec<Vec<u32>> = vec![Vec::with_capacity(runs as usize); cases.len()];
        let mut verdicts = vec![None; cases.len()];
        let mut out = vec![0u8; 4096];
        let mut flags_now = 0u8;
        bar.set_length(runs * cases.len() as u64);
        let chunk = 10_000u64.min(runs.max(1));
        let mut done = 0;
        while done < runs {
            let n = chunk.min(runs - done);
            for (i, c) in cases.iter().enumerate() {
                if c.test_flags != flags_now {
                    set_test_flags(&mut sg_config, c.test_flags)?;
                    flags_now = c.test_flags;
                }
                let p = prog(c.which)?;
                for _ in 0..n {
                    let (v, ns, _) = once(p, &c.frame, &mut out, ifindex)?;
                    verdicts[i].get_or_insert(v);
                    samples[i].push(ns);
                }
                bar.inc(n);
            }
            done += n;
        }
        set_test_flags(&mut sg_config, 0)?;
        let stats: Vec<(f64, f64, f64)> = samples.iter_mut().map(|s| summarize(s)).collect();
        let (floor_med, floor_mean) = cases
            .iter()
            .position(|c| c.which == Which::Noop)
            .map_or((0.0, 0.0), |i| (stats[i].0, stats[i].1));
        let results = cases
            .iter()
            .zip(&stats)
            .zip(&verdicts)
            .map(|((c, &(median, mean, p99)), v)| CaseResult {
                name: c.name.clone(),
                program: c.which,
                verdict: action(v.unwrap_or(u32::MAX)),
                expected: action(c.expect),
                runs,
                median_ns: median,
                mean_ns: mean,
                p99_ns: p99,
                net_median_ns: median - floor_med,
                net_mean_ns: mean - floor_mean,
            })
            .collect();
        let programs = [
            ("synguard_xdp", prog(Which::Synguard)?),
            ("reflector", prog(Which::Reflector)?),
        ]
        .into_iter()
        .map(|(name, p)| {
            let info = p.info().ok();
            ProgStats {
                name: name.into(),
                verified_insns: info.as_ref().and_then(|i| i.verified_instruction_count()),
                xlated_bytes: info.as_ref().and_then(|i| i.size_translated()),
                jited_bytes: info.as_ref().map(|i| i.size_jitted()),
            }
        })
        .collect();
        Ok(MicroReport {
            runs_per_case: runs,
            cpu,
            cases: results,
            programs,
            skipped,
        })
    })
}

/// (median, mean, p99) of single-run durations, ns. The mean leaves out the slowest 1%
/// (interrupts and other tenants landing inside a run); it is what gives sub-ns resolution,
/// since each sample is whole nanoseconds and the median moves in steps of one.
fn summarize(s: &mut [u32]) -> (f64, f64, f64) {
    if s.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    s.sort_unstable();
    let at = |q: f64| f64::from(s[((s.len() - 1) as f64 * q).round() as usize]);
    let kept = &s[..(s.len() * 99 / 100).max(1)];
    let mean = kept.iter().map(|&x| f64::from(x)).sum::<f64>() / kept.len() as f64;
    (at(0.5), mean, at(0.99))
}

/// Pins the calling thread to the last CPU: the one the harness steers RPS to is idle
/// while no flood runs, and a fixed CPU keeps caches and frequency comparable across cases.
fn set_test_flags(config: &mut Array<MapData, Config>, flags: u8) -> Result<()> {
    let mut c = config.get(&0, 0)?;
    c.test_flags = flags;
    config.set(0, &c, 0)?;
    Ok(())
}

fn pin_to_last_cpu() -> Result<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = n - 1;
    pin_thread_to_cpu(cpu)?;
    Ok(cpu)
}

type Skipped = Vec<(String, String)>;

fn cases(
    srv: &synguard_harness::Endpoint,
    cli: &synguard_harness::Endpoint,
    port: u16,
    est_src: SocketAddr,
    sg: &Xdp,
    ifindex: u32,
) -> Result<(Vec<Case>, Skipped)> {
    const TX: u32 = 3;
    const PASS: u32 = 2;
    const DROP: u32 = 1;
    let flow = |v6: bool, sport: u16| Flow {
        src_mac: cli.mac,
        dst_mac: srv.mac,
        src: if v6 {
            (cli.ipv6, sport).into()
        } else {
            (cli.ipv4, sport).into()
        },
        dst: if v6 {
            (srv.ipv6, port).into()
        } else {
            (srv.ipv4, port).into()
        },
    };
    let syn_flags = Flags {
        syn: true,
        ..Default::default()
    };
    let ack_flags = Flags {
        ack: true,
        ..Default::default()
    };
    let isn = 0x1234_5678u32;
    let tsval = 0x0101_0101u32;
    let syn = |v6: bool, ts: bool| -> Result<Vec<u8>> {
        let mss = if v6 { 1440 } else { 1460 };
        packets::build(
            &flow(v6, 40_000),
            syn_flags,
            isn,
            0,
            64_240,
            &packets::syn_options(mss, ts.then_some(tsval)),
        )
    };
    let mut cases = vec![
        Case {
            name: "no-op XDP_PASS (zero point)".into(),
            which: Which::Noop,
            frame: syn(false, true)?,
            expect: PASS,
            test_flags: 0,
        },
        Case {
            name: "MAC-swap XDP_TX reflector (floor)".into(),
            which: Which::Reflector,
            frame: syn(false, true)?,
            expect: TX,
            test_flags: 0,
        },
    ];
    let mut skipped = Vec::new();
    for (v6, ts) in [(false, true), (false, false), (true, true), (true, false)] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let tsn = if ts { "timestamps" } else { "no timestamps" };
        let frame = syn(v6, ts)?;
        cases.push(Case {
            name: format!("SYN -> SYN+ACK, {fam}, {tsn}"),
            which: Which::Synguard,
            frame: frame.clone(),
            expect: TX,
            test_flags: 0,
        });
        // The cookie ACK answers the SYN+ACK the program just produced.
        let mut out = vec![0u8; 4096];
        let (v, _, len) = once(sg, &frame, &mut out, ifindex)?;
        let name = format!("cookie ACK (valid), {fam}, {tsn}");
        let sa: SynAck = match (v, packets::parse_synack(&out[..len])) {
            (TX, Ok(sa)) if sa.ack == isn.wrapping_add(1) => sa,
            (v, r) => {
                let why = match r {
                    Ok(sa) => format!("its SYN+ACK acks {:#x}, not ISN+1", sa.ack),
                    Err(e) => format!("{e:#}"),
                };
                skipped.push((
                    name,
                    format!("the SYN got {}, no SYN+ACK to answer: {why}", action(v)),
                ));
                continue;
            }
        };
        let opts = packets::ack_options(tsval + 1, sa.tsval);
        let ack = |opts: &[u8]| {
            packets::build(
                &flow(v6, 40_000),
                ack_flags,
                isn.wrapping_add(1),
                sa.seq.wrapping_add(1),
                502,
                opts,
            )
        };
        cases.push(Case {
            name,
            which: Which::Synguard,
            frame: ack(&opts)?,
            expect: PASS,
            test_flags: 0,
        });
        // The same cookie ACK with the walk made longest: 40 option bytes, every step of the
        // walk one byte (NOPs), the timestamps (if any) last.
        if !v6 {
            cases.push(Case {
                name: format!("cookie ACK (valid), {fam}, {tsn}, worst-case options"),
                which: Which::Synguard,
                frame: ack(&packets::worst_ack_options(
                    ts.then(|| (tsval + 1, sa.tsval)),
                ))?,
                expect: PASS,
                test_flags: 0,
            });
        }
    }
    // The SYN whose options walk is longest: 40 NOPs, 40 one-byte steps (it is answered
    // with the defaults, as Linux would), and 40 bytes in Linux's options with NOPs in
    // front, so every option is parsed at the end of the longest walk that holds them.
    for (what, opts) in [
        ("40 NOPs", packets::nops(40)),
        ("NOPs then MSS, SACK-perm, timestamps, wscale", {
            let linux = packets::syn_options(1460, Some(tsval));
            let mut o = packets::nops(40 - linux.len());
            o.extend(linux.iter().filter(|&&b| b != 1));
            o.resize(40, 1);
            o
        }),
    ] {
        cases.push(Case {
            name: format!("SYN -> SYN+ACK, IPv4, worst-case options ({what})"),
            which: Which::Synguard,
            frame: packets::build(&flow(false, 40_002), syn_flags, isn, 0, 64_240, &opts)?,
            expect: TX,
            test_flags: 0,
        });
    }
    // The SYN path's cost per rule: the IPv4 timestamps SYN with one lookup taken out.
    let base = syn(false, true)?;
    for (what, flags) in [
        // The base row again, next to the others: what order and neighbours alone change.
        ("all rules (as above, rerun here)", 0),
        ("without the socket lookup", Config::TEST_BENCH_NO_SOCKET),
        (
            "without the local-address lookup",
            Config::TEST_BENCH_NO_LOCAL,
        ),
        (
            "without either",
            Config::TEST_BENCH_NO_SOCKET | Config::TEST_BENCH_NO_LOCAL,
        ),
    ] {
        cases.push(Case {
            name: format!("SYN -> SYN+ACK, IPv4, timestamps, {what} (bench knob)"),
            which: Which::Synguard,
            frame: base.clone(),
            expect: TX,
            test_flags: flags,
        });
    }
    let est = Flow {
        src: est_src,
        ..flow(false, est_src.port())
    };
    cases.push(Case {
        name: "ACK of an established flow, IPv4".into(),
        which: Which::Synguard,
        frame: packets::build(&est, ack_flags, 0x4000_0000, 0x5000_0000, 502, &[])?,
        expect: PASS,
        test_flags: 0,
    });
    cases.push(Case {
        name: "invalid flags (SYN+FIN), IPv4".into(),
        which: Which::Synguard,
        frame: packets::build(
            &flow(false, 40_001),
            Flags {
                syn: true,
                fin: true,
                ..Default::default()
            },
            isn,
            0,
            64_240,
            &[],
        )?,
        expect: DROP,
        test_flags: 0,
    });
    Ok((cases, skipped))
}
