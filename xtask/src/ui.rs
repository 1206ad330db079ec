//! Progress bars and the scenario table, shared by demo and bench.

use std::time::Duration;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use synguard_harness::scenario::{Phase, Progress, ScenarioReport};

/// One progress line per scenario.
pub struct Bars {
    multi: MultiProgress,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
        }
    }

    /// A bar for one scenario, and the callback that drives it.
    pub fn scenario(&self, label: &str) -> ScenarioBar {
        let bar = self.multi.add(ProgressBar::new(1000));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>22.bold} [{bar:28}] {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        ScenarioBar { bar }
    }

    /// A bar for a counted loop (test runs).
    pub fn counter(&self, label: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>22.bold} [{bar:28}] {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar
    }
}

pub struct ScenarioBar {
    bar: ProgressBar,
}

impl ScenarioBar {
    pub fn update(&self, p: &Progress) {
        let frac = match p.phase {
            Phase::Setup => 0.0,
            Phase::SynFlood if p.clients_total > 0 => {
                p.clients_done as f64 / p.clients_total as f64
            }
            Phase::AckFlood => {
                (p.elapsed.as_secs_f64() / p.expected.as_secs_f64().max(1e-9)).min(1.0)
            }
            _ => 1.0,
        };
        self.bar.set_position((frac * 1000.0) as u64);
        let rate = p
            .arrival_pps
            .map(|r| format!(", {:.0}k pkt/s in", r / 1e3))
            .unwrap_or_default();
        let msg = match p.phase {
            Phase::SynFlood => format!(
                "{} {:.1}s: clients {}/{} ok of {} done{rate}",
                p.phase.name(),
                p.elapsed.as_secs_f64(),
                p.clients_ok,
                p.clients_done,
                p.clients_total
            ),
            Phase::AckFlood => format!("{} {:.1}s", p.phase.name(), p.elapsed.as_secs_f64()),
            _ => p.phase.name().to_string(),
        };
        self.bar.set_message(msg);
    }

    pub fn finish(&self, msg: &str) {
        self.bar.set_position(1000);
        self.bar.finish_with_message(msg.to_string());
    }
}

pub fn si(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn opt_ms(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 1.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.3} ms"),
        None => "-".into(),
    }
}

/// The per-scenario rows of the demo and bench table: (row label, value per report).
pub fn scenario_rows(reports: &[ScenarioReport]) -> Vec<(String, Vec<String>)> {
    let row = |label: &str, f: &dyn Fn(&ScenarioReport) -> String| {
        (label.to_string(), reports.iter().map(f).collect())
    };
    vec![
        row("legit connections ok", &|r| {
            format!("{}/{}", r.clients_ok, r.clients_total)
        }),
        row("connect p50", &|r| opt_ms(r.connect_p50_ms)),
        row("connect p99", &|r| opt_ms(r.connect_p99_ms)),
        row("SYNs in /s", &|r| si(r.syn.arrived_pps())),
        row("SYN+ACKs out /s", &|r| si(r.synack_pps())),
        row(
            "forged ACKs dropped",
            &|r| match (&r.ack, r.forged_acks_dropped) {
                (None, _) => "-".into(),
                (Some(a), Some(d)) => format!("{} of {}", si(d as f64), si(a.arrived as f64)),
                (Some(a), None) => format!(
                    "0 of {} ({} RSTs)",
                    si(a.arrived as f64),
                    si(r.ack_rsts as f64)
                ),
            },
        ),
        row("softirq CPU per SYN", &|r| {
            format!("{:.0} ns", r.syn.softirq_ns_per_pkt())
        }),
        row("  (/proc/stat, sampled)", &|r| {
            format!("{:.0} ns", r.syn.procstat_ns_per_pkt())
        }),
        // Per arrival, a protection that answers fewer SYNs (the kernel leaves the rest in a
        // full backlog) looks cheaper; per answer shows what each SYN+ACK costs.
        row("softirq CPU per SYN+ACK sent", &|r| {
            if r.synack_out == 0 {
                "-".into()
            } else {
                format!(
                    "{:.0} ns",
                    r.syn.softirq_net_ns as f64 / r.synack_out as f64
                )
            }
        }),
    ]
}

pub fn table(header: &[String], rows: &[(String, Vec<String>)]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut h = vec![Cell::new("")];
    h.extend(header.iter().map(Cell::new));
    t.set_header(h);
    for (label, values) in rows {
        let mut r = vec![Cell::new(label)];
        r.extend(
            values
                .iter()
                .map(|v| Cell::new(v).set_alignment(CellAlignment::Right)),
        );
        t.add_row(r);
    }
    t
}

/// A GitHub-flavoured Markdown table of the same rows.
pub fn markdown(header: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut s = format!("| | {} |\n|---|", header.join(" | "));
    s.push_str(&"---:|".repeat(header.len()));
    s.push('\n');
    for (label, values) in rows {
        s.push_str(&format!("| {} | {} |\n", label.trim(), values.join(" | ")));
    }
    s
}

/// True if a synguard run answered no SYN at all.
pub fn synguard_sent_nothing(reports: &[ScenarioReport]) -> bool {
    reports
        .iter()
        .any(|r| r.protection.starts_with("synguard") && r.synack_out == 0)
}

/// What the rows mean, printed under the tables.
pub const METHOD_NOTE: &str = "\
- SYNs in: frames arriving at the server veth (rx_packets + rx_dropped), per second of the
  measurement window (after a 1 s warm-up, until the clients are done).
- SYN+ACKs out: synguard: its cookie_sent counter; kernel and nft: the server veth's tx_packets.
- forged ACKs: a separate random-ACK flood. synguard: cookie_ack_invalid; nft: packets through
  the synproxy rule; the kernel answers them with RSTs (Tcp OutRsts).
- softirq CPU per SYN: NET_RX + NET_TX softirq time over all CPUs, exact (BPF on the
  softirq_entry/exit tracepoints), divided by the SYNs that arrived. It includes the bridge and
  the replies' way back to atk, the same in every column. /proc/stat's tick-sampled softirq time
  is the cross-check. Per SYN+ACK sent: the same time divided by the SYN+ACKs, since a
  protection that answers fewer SYNs (the kernel drops the rest in its full backlog) looks
  cheaper per arrival.";

/// Said under any table whose synguard column has no SYN+ACK in it.
pub const NO_COOKIES_NOTE: &str = "Note: synguard sent no SYN+ACK in this run: the measured build's \
XDP program does not answer SYNs yet, so its column is the kernel behind a pass-through XDP \
program, not synguard's cost.";
