//! The harness's small BPF programs (`src/bpf/*.c`), compiled with clang-22 on first use.
//!
//! Not in a build script: on a fresh machine the harness is compiled (as part of xtask)
//! before `cargo xtask setup` has installed clang, and cargo does not re-run a build script
//! when clang appears later. The C sources are embedded; compiling them takes milliseconds.

use std::{path::PathBuf, process::Command, sync::OnceLock};

use anyhow::{Context, Result, anyhow};

/// One of the harness's BPF objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Obj {
    /// XDP_PASS (section `xdp`) and XDP_DROP (section `xdp.drop`) for veth peers.
    XdpPass,
    /// The benchmark's floors: `sg_bench_pass` and the MAC-swap `sg_bench_reflect`.
    BenchXdp,
    /// The softirq meter on the softirq_entry/exit raw tracepoints.
    Softirq,
    /// A legacy cls_bpf classifier (section `classifier`) that drops everything.
    TcDrop,
    /// `sg_meta_forge` (section `xdp`): writes fake synguard metadata in front of ACKs to
    /// port 8081 and bounces them back with XDP_TX (the foreign-metadata test).
    MetaForge,
}

const OBJS: [(Obj, &str, &str); 5] = [
    (Obj::XdpPass, "xdp_pass", include_str!("bpf/xdp_pass.c")),
    (Obj::BenchXdp, "bench_xdp", include_str!("bpf/bench_xdp.c")),
    (Obj::Softirq, "softirq", include_str!("bpf/softirq.c")),
    (Obj::TcDrop, "tc_drop", include_str!("bpf/tc_drop.c")),
    (
        Obj::MetaForge,
        "meta_forge",
        include_str!("bpf/meta_forge.c"),
    ),
];

/// Where this process keeps the compiled objects; removed when the process exits.
fn dir() -> Result<&'static tempfile::TempDir> {
    static DIR: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("sgh-bpf-")
            .tempdir()
            .map_err(|e| format!("temp dir for BPF objects: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// A compiled object: its file and its bytes.
type Compiled = (PathBuf, Vec<u8>);

fn compile(name: &str, source: &str) -> Result<Compiled> {
    let dir = dir()?.path();
    let src = dir.join(format!("{name}.c"));
    let obj = dir.join(format!("{name}.o"));
    std::fs::write(&src, source)?;
    let candidates = match std::env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => vec!["clang-22".into(), "clang".into()],
    };
    for clang in &candidates {
        let out = Command::new(clang)
            .args(["-target", "bpf", "-O2", "-g0", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let bytes = std::fs::read(&obj).context("reading the compiled object")?;
                return Ok((obj, bytes));
            }
            Ok(o) => {
                return Err(anyhow!(
                    "{clang} failed on {name}.c: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Err(_) => continue,
        }
    }
    Err(anyhow!(
        "no C compiler for BPF ({candidates:?}); run `cargo xtask setup` or set CLANG"
    ))
}

fn get(which: Obj) -> Result<&'static Compiled> {
    static CACHE: [OnceLock<Result<Compiled, String>>; OBJS.len()] =
        [const { OnceLock::new() }; OBJS.len()];
    let i = OBJS.iter().position(|(o, ..)| *o == which).expect("listed");
    let (_, name, source) = OBJS[i];
    CACHE[i]
        .get_or_init(|| compile(name, source).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// The object's ELF bytes.
pub fn bytes(which: Obj) -> Result<&'static [u8]> {
    Ok(&get(which)?.1)
}

/// The object's file, for tools that load by path (`ip link set … xdp obj FILE`).
pub fn path(which: Obj) -> Result<&'static std::path::Path> {
    Ok(&get(which)?.0)
}
