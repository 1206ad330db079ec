//! Compiles the harness's small BPF objects with clang. A missing clang must not break the
//! workspace build (only the helpers that load them need it), so failure leaves empty objects
//! that the runtime reports as a clear error.
use std::{env, fs, path::PathBuf, process::Command};

/// (source under src/bpf, object name in OUT_DIR)
const OBJECTS: &[(&str, &str)] = &[
    ("xdp_pass.c", "xdp_pass.o"),
    ("bench_xdp.c", "bench_xdp.o"),
    ("softirq.c", "softirq.o"),
];

fn main() {
    println!("cargo:rerun-if-env-changed=CLANG");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let candidates = match env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => vec!["clang-22".to_string(), "clang".to_string()],
    };
    for (src, obj) in OBJECTS {
        let src = format!("src/bpf/{src}");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(obj);
        let built = candidates.iter().any(|clang| {
            let status = Command::new(clang)
                .args(["-target", "bpf", "-O2", "-g0", "-c", &src, "-o"])
                .arg(&out)
                .status();
            matches!(status, Ok(s) if s.success())
        });
        if !built {
            println!(
                "cargo:warning=could not compile {src} with {candidates:?}; the helpers that \
                 load it will be unavailable (install clang-22 or set CLANG)"
            );
            fs::write(&out, b"").expect("write empty BPF object");
        }
    }
}
