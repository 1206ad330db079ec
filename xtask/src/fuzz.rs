//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets in `fuzz/`, each for a bounded
//! time. The committed seeds in `fuzz/seeds/<target>` are read; what libFuzzer finds goes
//! to `target/fuzz-corpus/<target>`, and a crash to `fuzz/artifacts/<target>`, where it
//! stays for a unit test to be written from it.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::{cargo, root, run, setup};

/// Every target in fuzz/fuzz_targets, one per parser or check that sees attacker bytes.
pub const TARGETS: &[&str] = &["dissect", "tcp_options", "pipeline", "cookie"];

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Targets to run (default: all).
    pub targets: Vec<String>,
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &args.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", "));
            }
        }
        args.targets.iter().map(String::as_str).collect()
    };
    run_targets(&targets, Duration::from_secs(args.secs))
}

/// Runs each target for `time`; fails on the first crash, leak or timeout libFuzzer reports.
pub fn run_targets(targets: &[&str], time: Duration) -> Result<()> {
    setup::fuzz_tools()?;
    for t in targets {
        let corpus = root().join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let seeds = root().join("fuzz/seeds").join(t);
        println!("fuzz: {t} for {}s", time.as_secs());
        // cargo-fuzz's sanitizer flags are unstable options; as for the eBPF build,
        // RUSTC_BOOTSTRAP unlocks them on the pinned compiler, so fuzzing needs no nightly
        // (and no nightly new enough for the workspace's rust-version need exist).
        run(cargo()
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run"])
            .args(["--fuzz-dir", "fuzz", t])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", time.as_secs()))
            .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"]))?;
    }
    Ok(())
}
