//! `cargo xtask bench`: BPF_PROG_TEST_RUN ns/packet per path against the floors, and
//! softirq CPU per SYN with legit success for four protections under one flood, side by
//! side; written to target/bench/bench.{json,md} and, on request, README's Benchmark section.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use synguard_common::maps::Handoff;
use synguard_harness::{
    Topology, TopologyOptions,
    scenario::{self, Floor, Protection, ScenarioOptions, ScenarioReport, Window},
    synguard::{Daemon, DaemonOptions},
};

use crate::{
    demo::{XdpModeArg, prepare, run_scenarios},
    testrun::{self, MicroReport, Which},
    ui::{self, Bars},
};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Single test runs per case (each is one BPF_PROG_TEST_RUN with repeat = 1).
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: u64,
    /// Legit connections per end-to-end scenario.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,
    /// Skip the end-to-end scenarios.
    #[arg(long)]
    pub no_e2e: bool,
    /// Rewrite README.md's "## Benchmark" section with this run's tables.
    #[arg(long)]
    pub update_readme: bool,
}

#[derive(Debug, Serialize)]
struct Machine {
    kernel: String,
    cpu: String,
    cpus: usize,
    date: String,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// Slowest SYN path's net mean over the reflector's net mean (target <= 2).
    syn_vs_reflector: Option<f64>,
    /// The same with the test-run overhead left in (both sides pay it per packet).
    syn_vs_reflector_gross: Option<f64>,
    /// synguard softirq ns per SYN over kernel syncookies' (target <= 0.1).
    softirq_vs_kernel: Option<f64>,
    /// The same after subtracting the XDP_DROP floor (what the wire costs) from both.
    softirq_vs_kernel_above_floor: Option<f64>,
}

#[derive(Debug, Serialize)]
struct FloorResult {
    floor: Floor,
    label: &'static str,
    window: Window,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    machine: Machine,
    micro: MicroReport,
    floors: Vec<FloorResult>,
    e2e: Vec<ScenarioReport>,
    ratios: Ratios,
}

const PORT: u16 = 8080;
/// The charts' file names, in target/bench and (with --update-readme) docs/.
const CDF_SVG: &str = "bench-connect-cdf.svg";
const RATES_SVG: &str = "bench-rates.svg";

const FLOOR_NOTE: &str = "\
- floors: the same flood into a server veth whose native XDP program only drops (XDP_DROP) or
  only bounces frames back with swapped MACs (XDP_TX): what trafgen, the bridge and the veths
  cost per SYN, under which no protection can go here. \"above the floor\" subtracts the
  XDP_DROP floor, leaving what the server side itself spends.";

pub fn bench(args: &BenchArgs) -> Result<()> {
    let bin = prepare()?;
    let machine = machine();
    println!(
        "xtask: bench on {} ({} CPUs), kernel {}",
        machine.cpu, machine.cpus, machine.kernel
    );
    let micro = micro(&bin, args)?;
    let mut opts = ScenarioOptions::demo();
    opts.clients = args.clients;
    opts.install_signal_handlers = false;
    let floors = if args.no_e2e {
        Vec::new()
    } else {
        floors(&opts)?
    };
    let e2e = if args.no_e2e {
        Vec::new()
    } else {
        run_scenarios(
            &opts,
            &[
                Protection::NoProtection,
                Protection::KernelCookies,
                Protection::NftSynproxy,
                Protection::Synguard {
                    bin: bin.clone(),
                    xdp_mode: args.xdp_mode.into(),
                    handoff: None,
                },
                // What 6.0-6.8 get: the kernel's own cookie in XDP.
                Protection::Synguard {
                    bin,
                    xdp_mode: args.xdp_mode.into(),
                    handoff: Some(Handoff::KernelCookie),
                },
            ],
        )?
    };
    let ratios = ratios(&micro, &floors, &e2e);
    let (micro_md, e2e_md) = print_tables(&micro, &floors, &e2e, &ratios);
    let report = BenchReport {
        machine,
        micro,
        floors,
        e2e,
        ratios,
    };
    let dir = crate::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report, &micro_md, &e2e_md);
    std::fs::write(dir.join("bench.md"), &md)?;
    let charts = [
        (CDF_SVG, crate::charts::connect_cdf(&report.e2e)),
        (RATES_SVG, crate::charts::rates(&report.e2e)),
    ];
    for (name, svg) in &charts {
        std::fs::write(dir.join(name), svg)?;
    }
    println!(
        "xtask: written {0}/bench.json, {0}/bench.md, {0}/{CDF_SVG} and {0}/{RATES_SVG}",
        dir.display()
    );
    if args.update_readme {
        update_readme(&md)?;
        let docs = crate::root().join("docs");
        std::fs::create_dir_all(&docs)?;
        if !report.e2e.is_empty() {
            for (name, svg) in &charts {
                std::fs::write(docs.join(name), svg)?;
            }
        }
        println!("xtask: README.md's Benchmark section and the charts in docs/ updated");
    }
    Ok(())
}

fn micro(bin: &std::path::Path, args: &BenchArgs) -> Result<MicroReport> {
    let t = Topology::new(TopologyOptions {
        install_signal_handlers: false,
        xdp_pass_on_server_peer: true,
        ..Default::default()
    })?;
    let daemon = Daemon::start(&t, &DaemonOptions::new(bin, PORT, args.xdp_mode.into()))?;
    let bars = Bars::new();
    let bar = bars.counter("BPF_PROG_TEST_RUN", args.runs);
    let r = testrun::run(&t, PORT, args.runs, &bar);
    bar.finish();
    daemon.stop()?;
    t.teardown()?;
    r
}

fn floors(opts: &ScenarioOptions) -> Result<Vec<FloorResult>> {
    let bars = Bars::new();
    [Floor::XdpDrop, Floor::XdpReflect]
        .into_iter()
        .map(|f| {
            let bar = bars.scenario(f.label());
            let window = scenario::floor(opts, f, &|p| bar.update(p))?;
            bar.finish(&format!(
                "done: {} SYN/s in, {:.0} ns softirq per SYN",
                ui::si(window.arrived_pps()),
                window.softirq_ns_per_pkt()
            ));
            Ok(FloorResult {
                floor: f,
                label: f.label(),
                window,
            })
        })
        .collect()
}

/// The XDP_DROP floor's softirq ns per SYN.
fn drop_floor(floors: &[FloorResult]) -> Option<f64> {
    floors
        .iter()
        .find(|f| f.floor == Floor::XdpDrop)
        .map(|f| f.window.softirq_ns_per_pkt())
}

fn ratios(m: &MicroReport, floors: &[FloorResult], e2e: &[ScenarioReport]) -> Ratios {
    let reflector = m.cases.iter().find(|c| c.program == Which::Reflector);
    let syn = m
        .cases
        .iter()
        .filter(|c| c.program == Which::Synguard && c.name.starts_with("SYN ") && c.verdict == "TX")
        .max_by(|a, b| a.mean_ns.total_cmp(&b.mean_ns));
    let per_syn = |prefix: &str| {
        e2e.iter()
            .find(|r| r.protection.starts_with(prefix))
            .map(|r| r.syn.softirq_ns_per_pkt())
    };
    Ratios {
        syn_vs_reflector: syn
            .zip(reflector)
            .map(|(s, r)| s.net_mean_ns / r.net_mean_ns.max(0.1)),
        syn_vs_reflector_gross: syn
            .zip(reflector)
            .map(|(s, r)| s.mean_ns / r.mean_ns.max(0.1)),
        softirq_vs_kernel: per_syn("synguard")
            .zip(per_syn("kernel syncookies"))
            .map(|(s, k)| s / k.max(1.0)),
        softirq_vs_kernel_above_floor: per_syn("synguard")
            .zip(per_syn("kernel syncookies"))
            .zip(drop_floor(floors))
            .map(|((s, k), f)| (s - f).max(0.0) / (k - f).max(1.0)),
    }
}

type Rows = Vec<(String, Vec<String>)>;

/// Prints the tables; returns them as Markdown.
fn print_tables(
    m: &MicroReport,
    floors: &[FloorResult],
    e2e: &[ScenarioReport],
    r: &Ratios,
) -> (String, String) {
    let refl = m.cases.iter().find(|c| c.program == Which::Reflector);
    let header: Vec<String> = [
        "verdict",
        "median ns",
        "mean ns",
        "p99 ns",
        "net mean ns",
        "x reflector net",
        "x reflector gross",
    ]
    .map(String::from)
    .to_vec();
    let rows: Rows = m
        .cases
        .iter()
        .map(|c| {
            let verdict = if c.verdict == c.expected {
                c.verdict.to_string()
            } else {
                format!("{} (want {})", c.verdict, c.expected)
            };
            let (net, gross) = match (c.program, refl) {
                (Which::Noop, _) | (_, None) => ("-".into(), "-".into()),
                (_, Some(r)) => (
                    format!("{:.1}", c.net_mean_ns / r.net_mean_ns.max(0.1)),
                    format!("{:.2}", c.mean_ns / r.mean_ns.max(0.1)),
                ),
            };
            (
                c.name.clone(),
                vec![
                    verdict,
                    format!("{:.0}", c.median_ns),
                    format!("{:.1}", c.mean_ns),
                    format!("{:.0}", c.p99_ns),
                    format!("{:.1}", c.net_mean_ns),
                    net,
                    gross,
                ],
            )
        })
        .collect();
    println!(
        "\nBPF_PROG_TEST_RUN, {} single runs per case on CPU {} (mean of the fastest 99%; \
         net = minus the no-op's mean, the kernel's per-run overhead)",
        m.runs_per_case, m.cpu
    );
    println!("{}", ui::table(&header, &rows));
    for (name, why) in &m.skipped {
        println!("skipped {name}: {why}");
    }
    for p in &m.programs {
        println!(
            "{}: {} verified insns, {} B xlated, {} B jited",
            p.name,
            p.verified_insns.map_or("?".into(), |v| v.to_string()),
            p.xlated_bytes.map_or("?".into(), |v| v.to_string()),
            p.jited_bytes.map_or("?".into(), |v| v.to_string()),
        );
    }
    let micro_md = ui::markdown(&header, &rows);
    let mut e2e_md = String::new();
    if !e2e.is_empty() {
        let header: Vec<String> = e2e.iter().map(|r| r.protection.clone()).collect();
        let kernel = e2e
            .iter()
            .find(|r| r.protection == "kernel syncookies")
            .map(|r| r.syn.softirq_ns_per_pkt());
        let mut rows = ui::scenario_rows(e2e);
        rows.push((
            "softirq per SYN vs kernel syncookies".into(),
            e2e.iter()
                .map(|r| match kernel {
                    Some(k) if k > 0.0 => format!("{:.2}x", r.syn.softirq_ns_per_pkt() / k),
                    _ => "-".into(),
                })
                .collect(),
        ));
        if let Some(f) = drop_floor(floors) {
            rows.push((
                "softirq per SYN above the XDP_DROP floor".into(),
                e2e.iter()
                    .map(|r| format!("{:.0} ns", r.syn.softirq_ns_per_pkt() - f))
                    .collect(),
            ));
            rows.push((
                "  vs kernel syncookies".into(),
                e2e.iter()
                    .map(|r| match kernel {
                        Some(k) if k - f > 1.0 => {
                            format!("{:.2}x", (r.syn.softirq_ns_per_pkt() - f) / (k - f))
                        }
                        _ => "-".into(),
                    })
                    .collect(),
            ));
        }
        // The floors: the same flood into a server veth that only drops, or only reflects.
        let mut cols = header.clone();
        let mut all_rows = rows;
        if !floors.is_empty() {
            cols = floors
                .iter()
                .map(|f| f.label.to_string())
                .chain(cols)
                .collect();
            for (label, values) in all_rows.iter_mut() {
                let fill: Vec<String> = floors
                    .iter()
                    .map(|f| match label.as_str() {
                        "SYNs in /s" => ui::si(f.window.arrived_pps()),
                        "SYN+ACKs out /s" if f.floor == Floor::XdpReflect => {
                            format!("({} TX)", ui::si(f.window.arrived_pps()))
                        }
                        "softirq CPU per SYN" => {
                            format!("{:.0} ns", f.window.softirq_ns_per_pkt())
                        }
                        "  (/proc/stat, sampled)" => {
                            format!("{:.0} ns", f.window.procstat_ns_per_pkt())
                        }
                        "softirq CPU per SYN+ACK sent" if f.floor == Floor::XdpReflect => {
                            format!("{:.0} ns", f.window.softirq_ns_per_pkt())
                        }
                        _ => "-".into(),
                    })
                    .collect();
                values.splice(0..0, fill);
            }
        }
        let (header, rows) = (cols, all_rows);
        println!("\nEnd to end, one max-rate SYN flood per column");
        println!("{}", ui::table(&header, &rows));
        println!("{}\n{FLOOR_NOTE}", ui::METHOD_NOTE);
        if ui::synguard_sent_nothing(e2e) {
            println!("{}", ui::NO_COOKIES_NOTE);
        }
        e2e_md = ui::markdown(&header, &rows);
    }
    let fmt = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.2}x"));
    println!(
        "\nTargets (measures, not assertions): SYN path {} the reflector floor net, {} gross \
         (target <= 2x); softirq per SYN {} kernel syncookies, {} above the XDP_DROP floor \
         (target <= 0.1x)",
        fmt(r.syn_vs_reflector),
        fmt(r.syn_vs_reflector_gross),
        fmt(r.softirq_vs_kernel),
        fmt(r.softirq_vs_kernel_above_floor)
    );
    (micro_md, e2e_md)
}

fn markdown(r: &BenchReport, micro_md: &str, e2e_md: &str) -> String {
    let fmt = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.2}x"));
    let mut s = format!(
        "## Benchmark\n\n`cargo xtask bench` on {} ({} CPUs), Linux {}, {}. \
         Full results: `target/bench/bench.json`.\n\n\
         `BPF_PROG_TEST_RUN`, {} single runs per case (`repeat = 1`; mean of the fastest 99%; \
         net = minus the no-op XDP_PASS program's mean, which is the kernel's per-run overhead):\n\n{micro_md}\n",
        r.machine.cpu, r.machine.cpus, r.machine.kernel, r.machine.date, r.micro.runs_per_case
    );
    for (name, why) in &r.micro.skipped {
        s.push_str(&format!("- skipped {name}: {why}\n"));
    }
    if r.micro.cases.iter().any(|c| c.verdict != c.expected) {
        s.push_str(
            "- a verdict other than the expected one means the measured build's XDP program \
             does not implement that path: its time is not that path's cost.\n",
        );
    }
    if ui::synguard_sent_nothing(&r.e2e) {
        s.push_str(&format!("\n{}\n", ui::NO_COOKIES_NOTE));
    }
    if !e2e_md.is_empty() {
        s.push_str(&format!(
            "\nEnd to end under a max-rate spoofed SYN flood from the veth harness (one column \
             per protection, same flood):\n\n{e2e_md}\n{}\n{FLOOR_NOTE}\n\n\
             ![Connect-time CDFs of the legit clients under the flood](docs/{CDF_SVG})\n\n\
             ![SYNs in and SYN+ACKs out over the measurement window](docs/{RATES_SVG})\n",
            ui::METHOD_NOTE
        ));
    }
    s.push_str(&format!(
        "\nTargets: SYN path {} the reflector floor net of the test-run overhead, {} with it \
         (target <= 2x); softirq per SYN {} kernel syncookies, {} above the XDP_DROP floor \
         (target <= 0.1x).\n",
        fmt(r.ratios.syn_vs_reflector),
        fmt(r.ratios.syn_vs_reflector_gross),
        fmt(r.ratios.softirq_vs_kernel),
        fmt(r.ratios.softirq_vs_kernel_above_floor)
    ));
    s
}

/// Replaces README's "## Benchmark" section, or appends it.
fn update_readme(section: &str) -> Result<()> {
    let path: PathBuf = crate::root().join("README.md");
    let text = std::fs::read_to_string(&path).context("reading README.md")?;
    std::fs::write(&path, replace_section(&text, section))?;
    Ok(())
}

/// `text` with its "## Benchmark" section (up to the next "## " heading) replaced by
/// `section`, or with `section` appended if there is none.
fn replace_section(text: &str, section: &str) -> String {
    let section = section.trim_end();
    let start = if text.starts_with("## Benchmark\n") {
        Some(0)
    } else {
        text.find("\n## Benchmark\n").map(|i| i + 1)
    };
    match start {
        Some(start) => {
            let after = start + "## Benchmark\n".len();
            let end = text[after..]
                .find("\n## ")
                .map_or(text.len(), |i| after + i + 1);
            let rest = &text[end..];
            let sep = if rest.is_empty() { "\n" } else { "\n\n" };
            format!("{}{section}{sep}{rest}", &text[..start])
        }
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        kernel,
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        date,
    }
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn benchmark_section_is_replaced_or_appended() {
        let new = "## Benchmark\n\nnew table\n";
        assert_eq!(
            replace_section("# t\n\n## A\n\na\n", new),
            "# t\n\n## A\n\na\n\n## Benchmark\n\nnew table\n"
        );
        let once = replace_section("# t\n\n## Benchmark\n\nold\n\n## Z\n\nz\n", new);
        assert_eq!(once, "# t\n\n## Benchmark\n\nnew table\n\n## Z\n\nz\n");
        assert_eq!(replace_section(&once, new), once);
        let last = replace_section("# t\n\n## Benchmark\n\nold\n", new);
        assert_eq!(last, "# t\n\n## Benchmark\n\nnew table\n");
    }
}
