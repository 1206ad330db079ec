//! Ctrl-C for demo and bench: the harness's own handler would end the process without
//! letting synguard detach, so xtask installs one that stops the daemons first (they
//! remove their pins), then tears every topology down.

use std::{thread, time::Duration};

use anyhow::Result;
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

/// Installs the handler. Topologies must then be created with
/// `install_signal_handlers: false`.
pub fn install() -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("xtask-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("\nxtask: interrupted, stopping synguard and tearing down");
                synguard_harness::synguard::stop_all_daemons(Duration::from_secs(5));
                synguard_harness::teardown_all();
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}
