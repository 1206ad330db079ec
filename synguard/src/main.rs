//! `synguard`: the controller and CLI.

mod attach;
mod auto;
mod check;
mod cli;
mod config;
mod daemon;
mod events;
mod handoff;
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
mod service;
mod settings;
mod state_dir;
mod stats;
mod status;
mod top;
mod xdp_dispatcher;

use anyhow::{Result, bail};
use clap::Parser;

use crate::{
    cli::{Cli, Cmd, ListOp},
    iface::IfaceName,
    lists::List,
    run_state::RunState,
};

fn main() {
    let cli = Cli::parse();
    service::init_logging(cli.log_level, cli.log_format);
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
    let is_check = matches!(cli.cmd, Cmd::Check { .. });
    if let Err(e) = dispatch(cli.cmd) {
        // Under journald, as an error-priority line.
        let prio = if service::stderr_is_journal() {
            "<3>"
        } else {
            ""
        };
        eprintln!("{prio}error: {e:#}");
        let code = match service::exit_code(&e) {
            service::exit::ERROR if is_check => service::exit::CHECK_FAILED,
            c => c,
        };
        std::process::exit(code);
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run(args) => daemon::run(&args, args.resolve()?),
        Cmd::Set { iface, key, value } => settings::set_live(&iface, &key, &value),
        Cmd::Allow { op } => list_op(List::Allow, op),
        Cmd::Deny { op } => list_op(List::Deny, op),
        Cmd::Stats {
            iface,
            json,
            watch,
            sample,
        } => stats::stats(&state_dir::iface_or_only(iface)?, json, watch, sample),
        Cmd::Status { iface, json } => match iface {
            Some(iface) => status::status(&iface, json),
            None => status::status_all(json),
        },
        Cmd::Events {
            iface,
            json,
            reason,
            count,
        } => events::events(&state_dir::iface_or_only(iface)?, json, reason, count),
        Cmd::Top {
            iface,
            json,
            once,
            n,
            interval,
        } => top::top(&state_dir::iface_or_only(iface)?, json, once, n, interval),
        Cmd::Check {
            config: Some(path), ..
        } => check_config(&path),
        Cmd::Check {
            iface, ports, json, ..
        } => {
            let r = check::run_checks(iface.as_ref(), ports);
            if json {
                check::print_json(&r)
            } else {
                check::print(&r)
            }
        }
        Cmd::Detach { iface, all, force } => match (iface, all) {
            (Some(iface), _) => detach(&iface, force),
            (None, true) => detach_all(force),
            (None, false) => bail!("give --iface IF or --all"),
        },
        Cmd::GenerateAssets { dir } => generate_assets(&dir),
    }
}

/// `check --config FILE`: parse and validate the file as `run` would, and say what it sets.
fn check_config(path: &std::path::Path) -> Result<()> {
    let args = cli::RunArgs {
        config: Some(path.to_path_buf()),
        ..Default::default()
    };
    let o = args.resolve()?;
    // `run` refuses a bad key file before anything else, so this does too.
    if let Some(k) = &o.key_file {
        keys::Secret::read(k)?;
    }
    let list = |l: Option<&[ipnet::IpNet]>| match l {
        Some(v) => format!("{} entries (owned by the file)", v.len()),
        None => "not in the file (managed live)".into(),
    };
    println!(
        "{}: ok: iface {}, mode {}, ports {}, allow {}, deny {}",
        path.display(),
        o.ifaces()
            .map(IfaceName::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        o.tunables.mode,
        o.tunables.ports,
        list(o.allow.as_deref()),
        list(o.deny.as_deref())
    );
    if let Some(k) = &o.key_file {
        println!(
            "{}: key file {} ok (owner-only, 32 bytes)",
            path.display(),
            k.display()
        );
    }
    Ok(())
}

/// `detach --all`: every instance with a pin directory (package removal).
fn detach_all(force: bool) -> Result<()> {
    let instances = state_dir::instances()?;
    if instances.is_empty() {
        println!(
            "nothing to detach: no instance under {}",
            synguard_common::maps::names::PIN_ROOT
        );
        return Ok(());
    }
    let mut failed = Vec::new();
    for iface in instances {
        if let Err(e) = detach(&iface, force) {
            eprintln!("error: {iface}: {e:#}");
            failed.push(iface.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("could not detach {}", failed.join(", "));
    }
    Ok(())
}

/// Man pages (one per subcommand) and bash/zsh/fish completions, for the package.
fn generate_assets(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    let man = dir.join("man");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "synguard", &comp)?;
    }
    println!(
        "wrote man pages to {} and completions to {}",
        man.display(),
        comp.display()
    );
    Ok(())
}

fn list_op(list: List, op: ListOp) -> Result<()> {
    match op {
        ListOp::Add { iface, cidrs } => {
            for m in lists::add(&iface, list, &cidrs)? {
                println!("{m}");
            }
            println!("{}", not_in_config(&iface, list));
        }
        ListOp::Del { iface, cidrs } => {
            for m in lists::del(&iface, list, &cidrs)? {
                println!("{m}");
            }
            println!("{}", not_in_config(&iface, list));
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

/// What a live list change means for the config file the daemon on `iface` runs from.
fn not_in_config(iface: &IfaceName, list: List) -> String {
    let path = RunState::load(iface).and_then(|r| r.config);
    let owned = path
        .as_deref()
        .and_then(|p| config::ServiceConfig::load(Some(p)).ok())
        .is_some_and(|c| c.list(list).is_some());
    config::NotInConfig {
        list,
        path: path.as_deref(),
        owned,
    }
    .to_string()
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
        log::warn!(
            "detaching under a running daemon{who} (--force): it stops serving {iface}, and \
             exits if {iface} is its first interface"
        );
    }
    // The interface may be gone; then no dispatcher holds synguard on it either.
    attach::detach(&dir, iface::ifindex(iface).ok())?;
    RunState::remove(iface);
    println!("detached synguard from {iface}");
    Ok(())
}
