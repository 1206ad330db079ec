//! `cargo xtask setup`: makes a bare machine of this kind ready, idempotently, and says
//! what it does. A machine that has everything pays only for a few quick checks.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The toolchain rust-toolchain.toml pins; its LLVM (22) must match bpf-linker's.
const TOOLCHAIN: &str = "1.98.0";
const COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages, and the command in each that proves it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    ("zlib1g-dev", "/usr/include/zlib.h"),
    ("libzstd-dev", "/usr/include/zstd.h"),
    ("clang-22", "/usr/bin/clang-22"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("netsniff-ng", "/usr/sbin/trafgen"),
    ("nftables", "/usr/sbin/nft"),
    ("hping3", "/usr/sbin/hping3"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("curl", "/usr/bin/curl"),
    ("util-linux", "/usr/bin/nsenter"),
];

pub fn setup() -> Result<()> {
    components()?;
    packages()?;
    bpf_linker()?;
    kernel_note();
    Ok(())
}

fn components() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", TOOLCHAIN])
        .output()
        .context("running rustup (is rustup installed?)")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l.starts_with(&format!("{c}-")) || l == *c)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "setup: installing Rust {TOOLCHAIN} components: {}",
        missing.join(" ")
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add", "--toolchain", TOOLCHAIN])
        .args(&missing);
    run(&mut cmd)
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root || !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "missing packages: {}\n  setup cannot install them here ({}). Run:\n    sudo sh -c '{command}'",
            missing.join(" "),
            if is_root { "no apt-get" } else { "not root" }
        );
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    // Without LLVM_PREFIX the build finds Debian's default LLVM 14 and fails.
    println!("setup: building bpf-linker against LLVM 22 (takes a few minutes, once)");
    run(Command::new("cargo")
        .args([
            &format!("+{TOOLCHAIN}"),
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX))
    .context(format!(
        "installing bpf-linker; to do it by hand: LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --no-default-features --features llvm-22"
    ))
}

fn kernel_note() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 9) {
        println!(
            "setup: note: kernel {} has no bpf_sk_assign_tcp_reqsk (needs >= 6.9); the handoff and live tests will not work here",
            release.trim()
        );
    }
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "{:?} {:?} failed: {status}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        );
    }
    Ok(())
}
