//! `cargo xtask package`: the Debian package, with cargo-deb. Builds the release binary
//! (the eBPF object embedded), writes the man pages and completions with the binary's own
//! `generate-assets`, and packs them with the units and the default config
//! (`[package.metadata.deb]` in synguard/Cargo.toml). `cargo xtask test` runs it after
//! vmtest (whose release build it reuses), then `cargo test -p synguard --test
//! service_package -- --ignored`, which checks the result.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, setup};

pub fn package() -> Result<()> {
    setup::cargo_tool("cargo-deb")?;
    let r = root();
    setup::run(cargo().args(["build", "--release", "-p", "synguard"]))?;
    let assets = r.join("target/package");
    let _ = std::fs::remove_dir_all(&assets);
    setup::run(
        Command::new(r.join("target/release/synguard"))
            .arg("generate-assets")
            .arg(&assets),
    )?;
    // Debian ships man pages gzipped, reproducibly (-n: no name or time stamp).
    for e in std::fs::read_dir(assets.join("man"))? {
        let p = e?.path();
        setup::run(Command::new("gzip").args(["-9nf"]).arg(&p))?;
    }
    setup::run(cargo().args(["deb", "-p", "synguard", "--no-build"]))?;
    let deb = std::fs::read_dir(r.join("target/debian"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("cargo deb wrote no .deb")?;
    if !deb.is_file() {
        bail!("no package at {}", deb.display());
    }
    add_md5sums(&deb)?;
    println!("package: {}", deb.display());
    Ok(())
}

/// cargo-deb writes no `DEBIAN/md5sums`, which `dpkg --verify` (debsums) checks installed
/// files against: unpack, add it, and pack again with dpkg-deb.
fn add_md5sums(deb: &std::path::Path) -> Result<()> {
    let work = deb.with_extension("unpacked");
    let _ = std::fs::remove_dir_all(&work);
    setup::run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&work))?;
    setup::run(
        Command::new("sh")
            .arg("-c")
            .arg(
                "find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z \
                 | xargs -0 md5sum > DEBIAN/md5sums",
            )
            .current_dir(&work),
    )?;
    setup::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&work)
            .arg(deb),
    )?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
