//! `cargo xtask demo`: the same flood scenario without and with synguard, one table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use synguard_harness::{
    scenario::{self, Protection, ScenarioOptions, ScenarioReport},
    synguard::XdpMode,
};

use crate::ui::{self, Bars};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Legit connections made under the flood.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// XDP attach mode for synguard (native needs the veth peer's XDP program, which the
    /// harness installs).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,
    /// Also write the reports as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum XdpModeArg {
    Native,
    Generic,
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        }
    }
}

/// Setup, the release build of synguard, root check, Ctrl-C handling and stale cleanup:
/// what demo and bench both need before their first topology. Returns the synguard binary.
pub fn prepare() -> Result<PathBuf> {
    crate::setup::setup()?;
    synguard_harness::ensure_root().context("demo and bench build network namespaces")?;
    println!("xtask: building synguard (release)");
    crate::setup::run(crate::cargo().args(["build", "--release", "-p", "synguard"]))?;
    crate::signals::install()?;
    let stale = synguard_harness::cleanup_stale()?;
    if !stale.is_empty() {
        println!(
            "xtask: removed {} namespaces left by dead runs",
            stale.len()
        );
    }
    Ok(crate::root().join("target/release/synguard"))
}

/// Runs each protection in turn under one set of progress bars.
pub fn run_scenarios(
    opts: &ScenarioOptions,
    protections: &[Protection],
) -> Result<Vec<ScenarioReport>> {
    let bars = Bars::new();
    let mut reports = Vec::new();
    for p in protections {
        let bar = bars.scenario(&p.label());
        let r = scenario::run(opts, p, &|pr| bar.update(pr))
            .with_context(|| format!("scenario {}", p.label()))?;
        bar.finish(&format!(
            "done: {}/{} ok, {} SYN/s in",
            r.clients_ok,
            r.clients_total,
            ui::si(r.syn.arrived_pps())
        ));
        reports.push(r);
    }
    Ok(reports)
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    let bin = prepare()?;
    let mut opts = ScenarioOptions::demo();
    opts.clients = args.clients;
    opts.install_signal_handlers = false;
    println!(
        "xtask: {} legit connections under a max-rate spoofed SYN flood, then a forged-ACK \
         flood; first without synguard (kernel syncookies), then with it (mode always)",
        opts.clients
    );
    let reports = run_scenarios(
        &opts,
        &[
            Protection::KernelCookies,
            Protection::Synguard {
                bin,
                xdp_mode: args.xdp_mode.into(),
                handoff: None,
            },
        ],
    )?;
    let header: Vec<String> = reports.iter().map(|r| r.protection.clone()).collect();
    println!("{}", ui::table(&header, &ui::scenario_rows(&reports)));
    println!("{}", ui::METHOD_NOTE);
    if ui::synguard_sent_nothing(&reports) {
        println!("{}", ui::NO_COOKIES_NOTE);
    }
    for r in &reports {
        if !r.client_errors.is_empty() {
            println!("{} client errors: {:?}", r.protection, r.client_errors);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)?;
        println!("xtask: reports written to {}", path.display());
    }
    Ok(())
}
