//! `cargo xtask vmtest`: the reduced live suite (`vmguest`) on Debian's own kernels, each
//! booted under qemu from its package with a busybox initramfs, and on the host kernel
//! directly; one table of kernel x mode x check, judged against [`expect`].
//!
//! - Kernels: the newest `linux-image-6.1.0-*-cloud-amd64-unsigned` and
//!   `linux-image-6.12.*+deb12-cloud-amd64-unsigned` in the apt lists, unpacked once into
//!   `target/vmtest/kernels/`.
//! - Each VM: `-nographic -no-reboot`, `panic=-1`, console on ttyS0 and results on ttyS1,
//!   both kept in `target/vmtest/runs/<kernel>/` with qemu's own stderr.
//! - Results: the tables on stdout, every row in `target/vmtest/results.json`.
//! - Exit status: non-zero when any row differs from [`expect::expected`], in either
//!   direction. A kernel that starts to pass is flipped there, in the same change.

pub mod expect;
mod initramfs;
mod kernel;
mod qemu;
pub mod report;
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use qemu::Accel;
use report::{Line, Outcome, Parsed};

/// A kernel the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLine {
    /// Debian 12's kernel.
    V6_1,
    /// Debian 13's line, from bookworm's backports of it.
    V6_12,
    /// Whatever this machine runs, without a VM.
    Host,
}

impl KernelLine {
    fn label(self) -> &'static str {
        match self {
            KernelLine::V6_1 => "6.1",
            KernelLine::V6_12 => "6.12",
            KernelLine::Host => "host",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    Host,
    All,
}

#[derive(clap::Args)]
pub struct VmtestArgs {
    /// Which kernel(s) to run the suite on.
    #[arg(long, value_enum, default_value = "all")]
    kernel: KernelArg,
    /// Keep each VM's initramfs next to its logs in target/vmtest/runs/.
    #[arg(long)]
    keep: bool,
    /// KVM or TCG; auto uses KVM only when a boot under it works.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Longest a VM may run, boot and suite together, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1536)]
    memory: u32,
    /// Write the kernel support table of this run (every kernel) into README.md.
    #[arg(long)]
    update_readme: bool,
    /// Fail when README.md's support table differs from this run's (`cargo xtask test`).
    #[arg(long)]
    check_readme: bool,
    /// Run nothing: make the support table from a saved run's results.json (of every
    /// kernel), e.g. to `--update-readme` from a CI run.
    #[arg(long)]
    from_results: Option<PathBuf>,
}

impl Default for VmtestArgs {
    /// What `cargo xtask test` runs: every kernel, as the flags' defaults say.
    fn default() -> Self {
        VmtestArgs {
            kernel: KernelArg::All,
            keep: false,
            accel: Accel::Auto,
            timeout: 600,
            memory: 1536,
            update_readme: false,
            check_readme: true,
            from_results: None,
        }
    }
}

/// The XDP modes the attached checks run in: generic, which every kernel and NIC has, and
/// veth's native driver mode.
const XDP_MODES: &[&str] = &["generic", "native"];

/// One kernel's run.
struct Run {
    line: KernelLine,
    /// Package name, or "host".
    source: String,
    accel: String,
    boot_time: Option<Duration>,
    total_time: Duration,
    parsed: Parsed,
    /// Why the run is incomplete, when it is.
    trouble: Option<String>,
    logs: PathBuf,
}

pub fn vmtest(a: &VmtestArgs) -> Result<()> {
    if let Some(path) = &a.from_results {
        let rows: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        return support_table(a, &rows, true);
    }
    crate::setup::setup()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("vmtest needs root: the host-kernel run builds network namespaces");
    }
    let lines: Vec<KernelLine> = match a.kernel {
        KernelArg::V6_1 => vec![KernelLine::V6_1],
        KernelArg::V6_12 => vec![KernelLine::V6_12],
        KernelArg::Host => vec![KernelLine::Host],
        KernelArg::All => vec![KernelLine::V6_1, KernelLine::V6_12, KernelLine::Host],
    };
    crate::setup::run(crate::cargo().args(["build", "--release", "-p", "synguard"]))?;
    crate::setup::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "xtask",
        "--bin",
        "vmguest",
    ]))?;
    let release = crate::root().join("target/release");
    let bins = Bins {
        synguard: release.join("synguard"),
        suite: release.join("vmguest"),
    };
    let mut accel = a.accel;
    let mut why_tcg = None;
    let mut runs = Vec::new();
    for line in lines {
        let logs = crate::root().join("target/vmtest/runs").join(line.label());
        std::fs::create_dir_all(&logs)?;
        let run = match line {
            KernelLine::Host => run_host(&bins, &logs),
            _ => run_vm(line, &bins, a, (&mut accel, &mut why_tcg), &logs),
        };
        runs.push(run.unwrap_or_else(|e| Run {
            line,
            source: "-".into(),
            accel: "-".into(),
            boot_time: None,
            total_time: Duration::ZERO,
            parsed: Parsed::default(),
            trouble: Some(format!("{e:#}")),
            logs,
        }));
    }
    let rows = report(&runs)?;
    support_table(a, &rows, a.kernel == KernelArg::All)
}

/// Writes the support table of `rows` to target/vmtest/support.md, and into README.md or
/// against it as `a` says (only from a run over every kernel, `all`).
fn support_table(a: &VmtestArgs, rows: &[serde_json::Value], all: bool) -> Result<()> {
    let table = support::table(rows);
    let md = crate::root().join("target/vmtest/support.md");
    std::fs::create_dir_all(md.parent().context("target/vmtest")?)?;
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    let readme = crate::root().join("README.md");
    if a.update_readme {
        if !all {
            bail!("--update-readme needs a run over every kernel (--kernel all)");
        }
        support::update_readme(&readme, &table)?;
        println!("vmtest: wrote the support table into {}", readme.display());
    } else if a.check_readme && all {
        support::check_readme(&readme, &table)?;
        println!("vmtest: README.md's support table matches this run");
    }
    Ok(())
}

struct Bins {
    synguard: PathBuf,
    suite: PathBuf,
}

fn guest_args() -> String {
    XDP_MODES
        .iter()
        .map(|m| format!("--xdp-mode {m}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_vm(
    line: KernelLine,
    bins: &Bins,
    a: &VmtestArgs,
    (accel, why_tcg): (&mut Accel, &mut Option<String>),
    logs: &Path,
) -> Result<Run> {
    let k = kernel::fetch(line)?;
    let initrd = logs.join("initramfs.cpio.gz");
    initramfs::build(&k, &bins.synguard, &bins.suite, &guest_args(), &initrd)
        .with_context(|| format!("building the initramfs for {}", k.package))?;
    println!("vmtest: booting {} ({})", k.package, k.release);
    let vm = qemu::Vm {
        vmlinuz: &k.vmlinuz,
        initrd: &initrd,
        dir: logs,
        memory_mib: a.memory,
        timeout: Duration::from_secs(a.timeout),
    };
    let b = qemu::boot_with(&vm, accel, why_tcg)?;
    if !a.keep {
        let _ = std::fs::remove_file(&initrd);
    }
    let parsed = report::parse(&std::fs::read_to_string(&b.results).unwrap_or_default());
    let console = std::fs::read_to_string(&b.console).unwrap_or_default();
    let trouble = if parsed.complete {
        None
    } else if b.timed_out {
        Some(format!("timed out after {:.0?}", b.total_time))
    } else if b.boot_time.is_none() {
        Some(format!(
            "never reached /init; console tail: {}",
            tail(&console, 3)
        ))
    } else {
        Some(format!(
            "the suite did not finish; console tail: {}",
            tail(&console, 3)
        ))
    };
    let mut trouble = trouble;
    for l in console
        .lines()
        .filter(|l| l.contains("VMTEST-MODULE-FAILED"))
    {
        let t = trouble.get_or_insert_with(String::new);
        t.push_str(l.trim());
        t.push(' ');
    }
    Ok(Run {
        line,
        source: k.package,
        accel: match why_tcg {
            Some(why) if b.accel == Accel::Tcg => format!("tcg ({why})"),
            _ => b.accel.name().into(),
        },
        boot_time: b.boot_time,
        total_time: b.total_time,
        parsed,
        trouble,
        logs: logs.to_path_buf(),
    })
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// The host kernel: the same suite, straight on this machine, in namespaces of its own.
fn run_host(bins: &Bins, logs: &Path) -> Result<Run> {
    println!("vmtest: running the suite on the host kernel");
    let start = Instant::now();
    let out = Command::new(&bins.suite)
        .arg("--synguard")
        .arg(&bins.synguard)
        .args(["--ip", "/usr/sbin/ip"])
        .args(XDP_MODES.iter().flat_map(|m| ["--xdp-mode", m]))
        // On the host kernel every mode is also forced (issue 13).
        .args([
            "--handoff",
            "auto",
            "--handoff",
            "kfunc",
            "--handoff",
            "kernel-cookie",
            "--handoff",
            "filter",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running vmguest on the host")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let results = logs.join("results.log");
    std::fs::write(&results, &text)?;
    std::fs::write(logs.join("stderr.log"), &out.stderr)?;
    let parsed = report::parse(&text);
    let trouble = (!parsed.complete).then(|| {
        format!(
            "the suite did not finish ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 3)
        )
    });
    Ok(Run {
        line: KernelLine::Host,
        source: "host".into(),
        accel: "none".into(),
        boot_time: None,
        total_time: start.elapsed(),
        parsed,
        trouble,
        logs: logs.to_path_buf(),
    })
}

/// (xdp mode, check) pairs a complete run reports, in order.
fn expected_rows() -> Vec<(&'static str, &'static str)> {
    let mut rows = vec![("-", report::CHECK)];
    for m in XDP_MODES {
        rows.push((m, report::ATTACH));
        rows.extend(report::ATTACHED_CHECKS.iter().map(|c| (*m, *c)));
    }
    for c in [report::SHARE_XDP_FILTER_FIRST, report::SHARE_SYNGUARD_FIRST] {
        rows.push((report::SHARE_MODE, c));
    }
    rows
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "skip",
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// Prints the tables, writes results.json and returns its rows; fails on a mismatch.
fn report(runs: &[Run]) -> Result<Vec<serde_json::Value>> {
    let mut checks = Table::new();
    checks
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(180)
        .set_header(vec![
            "kernel", "xdp mode", "check", "result", "expected", "", "detail",
        ]);
    let mut mismatches = Vec::new();
    let mut insns_of = Vec::new();
    // The same rows for machines: the README's support table is to be made from them.
    let mut json_rows = Vec::new();
    for r in runs {
        let release = r
            .parsed
            .lines
            .iter()
            .find_map(|l| match l {
                Line::Kernel { release } => Some(release.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "?".into());
        let kernel = format!("{} ({release})", r.line.label());
        let mut insns = Vec::new();
        for l in &r.parsed.lines {
            if let Line::Check {
                check,
                outcome,
                detail,
                xdp_mode,
                ..
            } = l
                && check == "setup"
            {
                checks.add_row(vec![
                    kernel.clone(),
                    xdp_mode.clone(),
                    check.clone(),
                    outcome_name(*outcome).into(),
                    "pass".into(),
                    "MISMATCH".into(),
                    detail.clone(),
                ]);
                mismatches.push(format!("{kernel}: setup: {detail}"));
            }
        }
        if r.parsed.lines.is_empty() {
            // Nothing ran: one row says why, not one per check.
            let why = r.trouble.clone().unwrap_or_else(|| "no output".into());
            checks.add_row(vec![
                kernel.clone(),
                "-".into(),
                "(run)".into(),
                "FAIL".into(),
                "results".into(),
                "MISMATCH".into(),
                why.clone(),
            ]);
            mismatches.push(format!("{kernel}: no results: {why}"));
            insns_of.push(insns);
            continue;
        }
        let mut rows = Vec::new();
        for (mode, check) in expected_rows() {
            let want = expect::expected(r.line, mode, check);
            let got = r.parsed.lines.iter().find_map(|l| match l {
                Line::Check {
                    xdp_mode,
                    check: c,
                    outcome,
                    detail,
                    insns,
                    ..
                } if xdp_mode == mode && c == check => Some((*outcome, detail.clone(), *insns)),
                _ => None,
            });
            let (result, detail, ok) = match &got {
                Some((o, d, n)) => {
                    if let Some(n) = n {
                        let rejected = if *o == Outcome::Pass {
                            ""
                        } else {
                            ", rejected"
                        };
                        insns.push(format!("{n} ({mode}{rejected})"));
                    }
                    (outcome_name(*o).to_string(), d.clone(), want.met_by(*o, d))
                }
                None => (
                    "missing".into(),
                    r.trouble.clone().unwrap_or_default(),
                    false,
                ),
            };
            if !ok {
                mismatches.push(format!(
                    "{kernel}: {check} ({mode}): {result}, expected {}{}",
                    want.describe(),
                    if matches!(got, Some((o, _, _)) if o != Outcome::Fail) {
                        " (update xtask/src/vmtest/expect.rs if this is the fix landing)"
                    } else {
                        ""
                    }
                ));
            }
            json_rows.push(serde_json::json!({
                "kernel": r.line.label(),
                "release": release,
                "source": r.source,
                "accel": r.accel,
                "xdp_mode": mode,
                "check": check,
                "result": result,
                "expected": want.describe(),
                "as_expected": ok,
                "detail": detail,
                "insns": got.as_ref().and_then(|g| g.2),
            }));
            let skipped = ok && want == expect::Expect::Skip;
            rows.push((
                [mode.to_string(), check.to_string(), result],
                want,
                ok,
                detail,
                skipped,
            ));
        }
        // Checks skipped as expected, one after another for the same reason: one row.
        let mut i = 0;
        while i < rows.len() {
            let (cells, want, ok, detail, skipped) = &rows[i];
            let mut j = i + 1;
            while *skipped
                && j < rows.len()
                && rows[j].4
                && rows[j].0[0] == cells[0]
                && rows[j].3 == *detail
            {
                j += 1;
            }
            let check = if j - i > 1 {
                format!("{} .. {} ({} checks)", cells[1], rows[j - 1].0[1], j - i)
            } else {
                cells[1].clone()
            };
            checks.add_row(vec![
                kernel.clone(),
                cells[0].clone(),
                check,
                cells[2].clone(),
                want.describe(),
                if *ok { "ok".into() } else { "MISMATCH".into() },
                detail.clone(),
            ]);
            i = j;
        }
        insns_of.push(insns);
    }

    let mut summary = Table::new();
    summary
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(180)
        .set_header(vec![
            "kernel",
            "source",
            "accel",
            "boot",
            "boot + suite",
            "XDP verified insns",
            "logs",
            "trouble",
        ]);
    for (r, insns) in runs.iter().zip(&insns_of) {
        summary.add_row(vec![
            r.line.label().to_string(),
            r.source.clone(),
            r.accel.clone(),
            secs(r.boot_time),
            secs(Some(r.total_time)),
            if insns.is_empty() {
                "- (not loaded)".into()
            } else {
                insns.join(", ")
            },
            r.logs.display().to_string(),
            r.trouble.clone().unwrap_or_default(),
        ]);
    }
    println!("{checks}");
    println!("{summary}");
    let json_path = crate::root().join("target/vmtest/results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json_rows)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("vmtest: results in {}", json_path.display());
    if !mismatches.is_empty() {
        bail!(
            "{} result(s) differ from what is expected:\n  {}",
            mismatches.len(),
            mismatches.join("\n  ")
        );
    }
    println!("vmtest: every result is as expected");
    Ok(json_rows)
}
