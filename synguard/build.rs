//! Builds the eBPF object and embeds it in the `synguard` binary, so one binary is all a
//! user installs. Steps: the kfunc shim (C) to LLVM bitcode with clang-22, then the
//! synguard-ebpf crate for bpfel-unknown-none with bpf-linker, which links the bitcode in;
//! and the XDP dispatcher (C) to a BPF object of its own.
//!
//! The nested cargo uses its own target dir (target/bpf) so it never waits on the outer
//! build's lock, and so debug, release and clippy builds share one eBPF build.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The clang whose LLVM major matches Rust 1.98's (22), so the bitcode links cleanly.
const CLANG: &str = "clang-22";

/// A prebuilt eBPF object to embed instead of building one, for packagers without clang-22
/// and bpf-linker (e.g. the object of a build on another machine:
/// target/bpf/bpfel-unknown-none/release/synguard).
const PREBUILT: &str = "SYNGUARD_PREBUILT_EBPF";

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed={PREBUILT}");
    if let Some(p) = env::var_os(PREBUILT) {
        let object = PathBuf::from(p);
        let head =
            std::fs::read(&object).with_context(|| format!("{PREBUILT}={}", object.display()))?;
        // ELF, 64-bit, little-endian, e_machine EM_BPF (247): what bpfel-unknown-none emits.
        if head.len() < 20
            || &head[..4] != b"\x7fELF"
            || head[4] != 2
            || head[5] != 1
            || u16::from_le_bytes([head[18], head[19]]) != 247
        {
            bail!(
                "{PREBUILT}={} is not a little-endian 64-bit BPF ELF object",
                object.display()
            );
        }
        println!("cargo:rerun-if-changed={}", object.display());
        println!(
            "cargo:rustc-env=SYNGUARD_EBPF_OBJECT={}",
            object.canonicalize()?.display()
        );
        return Ok(());
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?.to_path_buf();
    let ebpf_dir = root.join("synguard-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "kfuncs.c",
        "dispatcher.c",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(p).display());
    }
    for p in ["src", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("synguard-common").join(p).display()
        );
    }

    let bitcode = out_dir.join("kfuncs.bc");
    run(Command::new(CLANG)
        .args(["-target", "bpf", "-O2", "-g", "-emit-llvm", "-c"])
        .arg(ebpf_dir.join("kfuncs.c"))
        .arg("-o")
        .arg(&bitcode))
    .with_context(|| format!("compiling the kfunc shim with {CLANG} (run `cargo xtask setup`)"))?;

    // The XDP dispatcher (xdp_dispatcher.rs loads it when synguard shares the hook): a
    // plain object, loaded on its own.
    let dispatcher = out_dir.join("dispatcher.o");
    run(Command::new(CLANG)
        .args(["-target", "bpf", "-O2", "-g", "-c"])
        .arg(ebpf_dir.join("dispatcher.c"))
        .arg("-o")
        .arg(&dispatcher))
    .with_context(|| format!("compiling the XDP dispatcher with {CLANG}"))?;
    println!(
        "cargo:rustc-env=SYNGUARD_DISPATCHER_OBJECT={}",
        dispatcher.display()
    );

    let target_dir = root.join("target").join("bpf");
    let rustflags = [
        "-C",
        "debuginfo=2",
        "-C",
        "link-arg=--btf",
        "-C",
        &format!("link-arg={}", bitcode.display()),
    ]
    .join("\x1f");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's compiler settings (clippy's wrapper, host rustflags, coverage
    // instrumentation) must not leak into the BPF build; --btf must be given exactly once.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    run(&mut cmd)
        .context("building synguard-ebpf (is bpf-linker installed? run `cargo xtask setup`)")?;

    let object = target_dir.join("bpfel-unknown-none/release/synguard");
    if !object.exists() {
        bail!("eBPF build produced no object at {}", object.display());
    }
    println!("cargo:rustc-env=SYNGUARD_EBPF_OBJECT={}", object.display());
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let prog = Path::new(cmd.get_program()).display().to_string();
    cmd.get_args()
        .fold(prog, |acc, a| format!("{acc} {}", a.to_string_lossy()))
}
