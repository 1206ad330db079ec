//! `synguard`: the controller and CLI.

mod auto;
mod bpfsys;
mod check;
mod cli;
mod daemon;
mod keys;
mod listeners;
mod lists;
mod loader;
mod metrics;
mod netlink;
mod pinned;
mod pins;
mod ports;
mod settings;
mod stats;
mod status;

use anyhow::{Result, bail};
use clap::Parser;

use crate::{
    cli::{Cli, Cmd, ListOp},
    lists::List,
    pinned::Pinned,
    pins::RunState,
    settings::{Key, Tunables, Value},
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // Short-lived commands die quietly on a closed pipe (`synguard stats | head`), as
        // Unix tools do. The daemon keeps Rust's default (ignored), so a scraper hanging up
        // can never kill it.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(e) = dispatch(cli.cmd) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run(args) => daemon::run(args.resolve()?),
        Cmd::Set { iface, key, value } => set(&iface, &key, &value),
        Cmd::Allow { op } => list_op(List::Allow, op),
        Cmd::Deny { op } => list_op(List::Deny, op),
        Cmd::Stats {
            iface,
            json,
            watch,
            sample,
        } => stats::stats(&iface, json, watch, sample),
        Cmd::Status { iface, json } => status::status(&iface, json),
        Cmd::Check { iface, ports } => check::print(&check::run_checks(iface.as_deref(), ports)),
        Cmd::Detach { iface, force } => detach(&iface, force),
    }
}

/// `synguard set`: parse and validate against the live configuration, then write once.
fn set(iface: &str, key: &str, value: &str) -> Result<()> {
    let key = Key::from_name(key).map_err(anyhow::Error::msg)?;
    let setting = key.parse(value).map_err(anyhow::Error::msg)?;
    let p = Pinned::open(iface)?;
    let ncpus = settings::ncpus()?;
    let mut cfg_map = p.config_map()?;
    let cur = cfg_map.get(&0, 0)?;
    let mut t = Tunables::from_config(&cur, p.ports()?, ncpus);
    t.apply(&setting);
    t.validate()
        .map_err(|e| anyhow::anyhow!("refusing {setting}: {e}"))?;
    if let Value::Ports(ports) = &setting.value {
        pinned::write_ports(&mut p.ports_map()?, ports)?;
    } else {
        let mut new = t.to_config(ncpus);
        if key != Key::SynackRate {
            // Keep the stored per-CPU value exactly; re-deriving it could round it.
            new.synack_rate_per_cpu = cur.synack_rate_per_cpu;
        }
        cfg_map.set(0, &new, 0)?;
    }
    println!("{iface}: {setting}");
    match key {
        Key::Wscale => println!(
            "note: wscale applies to keys minted from the next rotation on{}; cookies in flight \
             keep the wscale they were minted with",
            RunState::load(iface)
                .map(|r| format!(" (every {}s)", r.rotation_secs))
                .unwrap_or_default()
        ),
        Key::SynackRate => println!(
            "stored as {} SYN+ACK/s per CPU on {ncpus} CPUs",
            settings::per_cpu(t.synack_rate, ncpus)
        ),
        _ => {}
    }
    Ok(())
}

fn list_op(list: List, op: ListOp) -> Result<()> {
    match op {
        ListOp::Add { iface, cidrs } => {
            for m in lists::add(&iface, list, &cidrs)? {
                println!("{m}");
            }
        }
        ListOp::Del { iface, cidrs } => {
            for m in lists::del(&iface, list, &cidrs)? {
                println!("{m}");
            }
        }
        ListOp::List { iface, json } => {
            let entries = lists::list(&iface, list)?;
            if json {
                let v: Vec<String> = entries.iter().map(|n| n.to_string()).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                for n in entries {
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}

fn detach(iface: &str, force: bool) -> Result<()> {
    let dir = pins::existing_dir(iface)?;
    if pins::try_lock(&dir)?.is_none() {
        let who = RunState::load(iface)
            .filter(|r| pins::is_synguard(r.pid))
            .map(|r| format!(" (pid {})", r.pid))
            .unwrap_or_default();
        if !force {
            bail!(
                "a synguard daemon{who} is running on {iface}: stop it with SIGTERM or SIGINT \
                 (it detaches on exit), or pass --force"
            );
        }
        log::warn!("detaching under a running daemon{who} (--force); it will exit");
    }
    loader::detach(&dir)?;
    RunState::remove(iface);
    println!("detached synguard from {iface}");
    Ok(())
}
