//! `synguard`: the controller and CLI.

mod attach;
mod auto;
mod check;
mod cli;
mod daemon;
mod iface;
mod keys;
mod listeners;
mod lists;
mod local_addrs;
mod metrics;
mod pinned_maps;
mod ports;
mod rtnl;
mod run_state;
mod settings;
mod state_dir;
mod stats;
mod status;

use anyhow::{Result, bail};
use clap::Parser;

use crate::{
    cli::{Cli, Cmd, ListOp},
    iface::IfaceName,
    lists::List,
    run_state::RunState,
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // Short-lived commands die quietly on a closed pipe (`synguard stats | head`), as
        // Unix tools do. The daemon keeps Rust's default (ignored), so a scraper hanging up
        // can never kill it.
        use nix::sys::signal::{SigHandler, Signal, signal};
        // SAFETY: SIG_DFL installs no handler, so none of signal(2)'s handler-safety rules
        // apply; no other thread exists yet. nix marks every disposition change unsafe.
        if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
            log::debug!("cannot restore the default SIGPIPE action: {e}");
        }
    }
    if let Err(e) = dispatch(cli.cmd) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run(args) => daemon::run(args.resolve()?),
        Cmd::Set { iface, key, value } => settings::set_live(&iface, &key, &value),
        Cmd::Allow { op } => list_op(List::Allow, op),
        Cmd::Deny { op } => list_op(List::Deny, op),
        Cmd::Stats {
            iface,
            json,
            watch,
            sample,
        } => stats::stats(&iface, json, watch, sample),
        Cmd::Status { iface, json } => status::status(&iface, json),
        Cmd::Check { iface, ports } => check::print(&check::run_checks(iface.as_ref(), ports)),
        Cmd::Detach { iface, force } => detach(&iface, force),
    }
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

fn detach(iface: &IfaceName, force: bool) -> Result<()> {
    let dir = state_dir::existing_dir(iface)?;
    if state_dir::try_lock(&dir)?.is_none() {
        let who = RunState::live_pid(iface)
            .map(|pid| format!(" (pid {pid})"))
            .unwrap_or_default();
        if !force {
            bail!(
                "a synguard daemon{who} is running on {iface}: stop it with SIGTERM or SIGINT \
                 (it detaches on exit), or pass --force"
            );
        }
        log::warn!("detaching under a running daemon{who} (--force); it will exit");
    }
    attach::detach(&dir)?;
    RunState::remove(iface);
    println!("detached synguard from {iface}");
    Ok(())
}
