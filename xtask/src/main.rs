//! `cargo xtask`: setup, builds, tests, the demo and the benchmark.

mod bench;
mod charts;
mod demo;
mod fuzz;
mod package;
mod packets;
mod setup;
mod signals;
mod soak;
mod testrun;
mod ui;
mod vmtest;

use std::{path::PathBuf, process::Command};

use anyhow::Result;
use clap::{Parser, Subcommand};
use setup::run;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: toolchain components, LLVM 22, clang-22, bpf-linker, harness tools.
    Setup,
    /// Build the eBPF object and the synguard binary that embeds it.
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// Formatting, clippy, rustdoc, unused dependencies, unit/property tests, the root/netns
    /// integration tests, short fuzz runs and the VM kernels.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The veth harness without and with synguard under a max-rate SYN flood: one table.
    Demo(demo::DemoArgs),
    /// BPF_PROG_TEST_RUN ns/packet per path, and softirq CPU per SYN for four protections.
    Bench(bench::BenchArgs),
    /// Forged-ACK floods at an idle and at an engaged server: spoofed sockets against the
    /// bound the cookie implies (not in CI; minutes at the default counts).
    Soak(soak::SoakArgs),
    /// Run the cargo-fuzz targets (cargo-fuzz installed on first use) for a bounded time each.
    Fuzz(fuzz::FuzzArgs),
    /// The live suite on Debian's 6.1 and 6.12 kernels under qemu, and on the host kernel.
    Vmtest(vmtest::VmtestArgs),
    /// The Debian package (cargo-deb): binary, units, default config, man pages,
    /// completions, maintainer scripts. A release build: minutes.
    Package,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::setup(),
        Cmd::BuildEbpf { release } => {
            setup::setup()?;
            let mut c = cargo();
            c.args(["build", "-p", "synguard"]);
            if release {
                c.arg("--release");
            }
            run(&mut c)
        }
        Cmd::Test { args } => test(&args),
        Cmd::Demo(args) => demo::demo(&args),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Soak(args) => soak::soak(&args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Vmtest(args) => vmtest::vmtest(&args),
        Cmd::Package => package::package(),
    }
}

fn test(args: &[String]) -> Result<()> {
    setup::setup()?;
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root {
        if std::env::var_os("CI").is_some() {
            anyhow::bail!(
                "CI is set but not running as root: the netns integration tests cannot run"
            );
        }
        println!("xtask: not root, so the netns integration tests will report themselves skipped");
    }
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "fmt",
        "--check",
        "--manifest-path",
        "synguard-ebpf/Cargo.toml",
    ]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate is outside the workspace (its own target): check it on that target.
    run(cargo()
        .current_dir(root().join("synguard-ebpf"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["clippy", "--release", "--target", "bpfel-unknown-none"])
        .args([
            "-Z",
            "build-std=core",
            "--target-dir",
            "../target/bpf-clippy",
        ])
        .args(["--", "-D", "warnings"]))?;
    // Broken intra-doc links and malformed docs fail the build, like any other warning.
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    // Unused dependencies, in every crate of the tree (the eBPF and fuzz crates included).
    // Run as its own binary: invoked through cargo from inside `cargo xtask`, it takes the
    // subcommand name for a directory to scan.
    run(Command::new("cargo-machete").current_dir(root()))?;
    // The netns tests share two cores and the kernel's network stack; two at a time keeps
    // their timing honest.
    run(cargo()
        .args(["test", "--workspace", "--no-fail-fast", "--"])
        .args(["--test-threads", "2"])
        .args(args))?;
    if !args.is_empty() {
        // A filtered run is a developer's subset: the fuzzers and VMs are not part of it.
        return Ok(());
    }
    // Each fuzz target briefly (`cargo xtask fuzz` runs them longer), then the reduced live
    // suite on Debian's 6.1 and 6.12 kernels and on the host's.
    fuzz::run_targets(fuzz::TARGETS, std::time::Duration::from_secs(20))?;
    vmtest::vmtest(&vmtest::VmtestArgs::default())?;
    // The Debian package, from the release build vmtest just made: built, inspected,
    // installed and removed in a throwaway root.
    package::package()?;
    run(cargo().args([
        "test",
        "-p",
        "synguard",
        "--test",
        "service_package",
        "--",
        "--ignored",
    ]))
}
