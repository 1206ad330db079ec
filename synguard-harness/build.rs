//! Compiles the dummy XDP_PASS object with clang. A missing clang must not break the workspace
//! build (only the XDP helper needs it), so failure leaves an empty object that the runtime
//! reports as a clear error.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=src/bpf/xdp_pass.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("xdp_pass.o");
    let candidates = match env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => vec!["clang-22".to_string(), "clang".to_string()],
    };
    for clang in &candidates {
        let status = Command::new(clang)
            .args([
                "-target",
                "bpf",
                "-O2",
                "-g0",
                "-c",
                "src/bpf/xdp_pass.c",
                "-o",
            ])
            .arg(&out)
            .status();
        if matches!(status, Ok(s) if s.success()) {
            return;
        }
    }
    println!(
        "cargo:warning=could not compile src/bpf/xdp_pass.c with {candidates:?}; \
         XDP_PASS helper will be unavailable (install clang-22 or set CLANG)"
    );
    fs::write(&out, b"").expect("write empty xdp object");
}
