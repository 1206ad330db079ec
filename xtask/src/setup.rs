//! `cargo xtask setup`: makes a bare machine of this kind ready, idempotently, and says
//! what it does. A machine that has everything pays only for a few quick checks.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

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
    // promtool: `promtool check metrics` on a live scrape (synguard/tests/metrics.rs).
    ("prometheus", "/usr/bin/promtool"),
    ("curl", "/usr/bin/curl"),
    ("util-linux", "/usr/bin/nsenter"),
    // xdp-filter (libxdp): the neighbour that shares the XDP hook in the coexistence tests.
    ("xdp-tools", "/usr/sbin/xdp-filter"),
    // vmtest: Debian's kernels under qemu, with a busybox initramfs.
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    // The service tests: systemd-analyze verify on the units; dpkg-deb and man for the
    // package (`cargo xtask package`).
    ("systemd", "/usr/bin/systemd-analyze"),
    ("dpkg", "/usr/bin/dpkg-deb"),
    ("man-db", "/usr/bin/man"),
    // lintian on the package (synguard/tests/service_package.rs).
    ("lintian", "/usr/bin/lintian"),
];

/// The `[toolchain]` table of rust-toolchain.toml: the one place the Rust version (whose
/// LLVM, 22, must match bpf-linker's) and its components are written down.
#[derive(serde::Deserialize)]
struct ToolchainFile {
    toolchain: Toolchain,
}

#[derive(serde::Deserialize)]
pub struct Toolchain {
    pub channel: String,
    #[serde(default)]
    pub components: Vec<String>,
}

/// The pinned toolchain, read from rust-toolchain.toml at the workspace root.
pub fn toolchain() -> Result<Toolchain> {
    let path = crate::root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: ToolchainFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.toolchain)
}

pub fn setup() -> Result<()> {
    let tc = toolchain()?;
    components(&tc)?;
    packages()?;
    bpf_linker(&tc.channel)?;
    cargo_tool("cargo-machete")?;
    // `cargo xtask package`.
    cargo_tool("cargo-deb")?;
    kernel_note();
    Ok(())
}

fn components(tc: &Toolchain) -> Result<()> {
    let out = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            &tc.channel,
        ])
        .output()
        .context("running rustup (is rustup installed?)")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = tc
        .components
        .iter()
        .map(String::as_str)
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
        "setup: installing Rust {} components: {}",
        tc.channel,
        missing.join(" ")
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add", "--toolchain", &tc.channel])
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
    let is_root = nix::unistd::geteuid().is_root();
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

/// Whether `program args` runs and exits 0: how setup tells a tool is installed.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bpf_linker(channel: &str) -> Result<()> {
    if succeeds("bpf-linker", &["--version"]) {
        return Ok(());
    }
    // Without LLVM_PREFIX the build finds Debian's default LLVM 14 and fails.
    println!("setup: building bpf-linker against LLVM 22 (takes a few minutes, once)");
    run(Command::new("cargo")
        .args([
            &format!("+{channel}"),
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

/// Installs the cargo subcommand `krate` (whose binary has the crate's name) from
/// crates.io unless it already runs.
pub fn cargo_tool(krate: &str) -> Result<()> {
    if succeeds(krate, &["--version"]) {
        return Ok(());
    }
    println!("setup: installing {krate} (takes a minute, once)");
    run(Command::new("cargo").args(["install", krate, "--locked"])).with_context(|| {
        format!("installing {krate}; to do it by hand: cargo install {krate} --locked")
    })
}

/// cargo-fuzz, for `cargo xtask fuzz` and the short fuzz runs of `cargo xtask test`.
pub fn fuzz_tools() -> Result<()> {
    cargo_tool("cargo-fuzz")
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
