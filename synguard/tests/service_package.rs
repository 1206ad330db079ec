//! The Debian package `cargo xtask package` built: its control fields and contents
//! (dpkg-deb), `synguard --version` and `man synguard` from what it installs, and an install
//! and removal with dpkg into a throwaway root (`dpkg --root`, whose maintainer scripts run
//! chrooted there with busybox as /bin/sh), never touching the host's /etc or bpffs.
//!
//! It needs the package built first, so it is `#[ignore]`d in a plain `cargo test`:
//! `cargo xtask test` builds it (`cargo xtask package`) and then runs this with `--ignored`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

fn deb() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask package` first)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("no .deb: run `cargo xtask package` first")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "needs `cargo xtask package` (a release build) first"]
fn the_package_holds_everything_and_installs_and_removes() {
    let deb = deb();
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for f in [
        "Package: synguard",
        "Section: net",
        "Architecture: amd64",
        "Depends: libc6",
        " prerm",
        " postinst",
        " postrm",
        " conffiles",
    ] {
        assert!(info.contains(f), "control lacks {f:?}:\n{info}");
    }
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in [
        "./usr/bin/synguard",
        "./lib/systemd/system/synguard.service",
        "./lib/systemd/system/synguard@.service",
        "./etc/synguard/synguard.toml",
        "./usr/share/man/man1/synguard.1.gz",
        "./usr/share/man/man1/synguard-run.1.gz",
        "./usr/share/bash-completion/completions/synguard",
        "./usr/share/zsh/vendor-completions/_synguard",
        "./usr/share/fish/vendor_completions.d/synguard.fish",
    ] {
        assert!(contents.contains(f), "package lacks {f}:\n{contents}");
    }

    // A throwaway root: dpkg's database, busybox as /bin/sh for the maintainer scripts, and
    // the libraries the installed binary links against (prerm runs it there), copied by hand,
    // so libc6 is not in that dpkg database: --force-depends.
    let root = std::env::temp_dir().join(format!("synguard-dpkg-root-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "bin",
        "usr/bin",
        "tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    run(Command::new("mknod")
        .args(["-m", "666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"]));
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static (cargo xtask setup)");
    for applet in ["sh", "rm", "[", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tmp_bin = root.join("synguard.extracted");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp_bin));
    let bin = tmp_bin.join("usr/bin/synguard");
    let ldd = run(Command::new("ldd").arg(&bin));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dst = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(lib, &dst).unwrap();
    }
    fs::remove_dir_all(&tmp_bin).unwrap();

    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-not-root",
                "--force-bad-path",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    let installed = root.join("usr/bin/synguard");
    let version = run(Command::new(&installed).arg("--version"));
    assert!(version.starts_with("synguard "), "{version}");
    let man = run(Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(root.join("usr/share/man/man1/synguard.1.gz"))
        .env("MANWIDTH", "80"));
    assert!(man.contains("synguard") && man.contains("run"), "{man}");
    let conf = fs::read_to_string(root.join("etc/synguard/synguard.toml")).unwrap();
    assert!(conf.contains("deny = []"), "{conf}");

    // Removal runs prerm, which runs `synguard detach --all --force` in the root (no bpffs
    // mounted there: nothing to detach, and nothing on the host is touched).
    let out = dpkg(&["-r", "synguard"]);
    assert!(
        out.contains("nothing to detach"),
        "prerm did not detach:\n{out}"
    );
    assert!(!installed.exists());
    assert!(
        root.join("etc/synguard/synguard.toml").exists(),
        "conffile removed before purge"
    );
    dpkg(&["-P", "synguard"]);
    assert!(!root.join("etc/synguard/synguard.toml").exists());
    fs::remove_dir_all(&root).unwrap();
}

/// lintian (Debian's package checker) finds nothing: no error, no warning, no info tag
/// except the ones the package overrides, each with its reason in
/// packaging/debian/lintian-overrides.
#[test]
#[ignore = "needs `cargo xtask package` (a release build) first"]
fn lintian_reports_nothing_but_the_explained_overrides() {
    let deb = deb();
    let out = Command::new("lintian")
        .args(["--info", "--display-info", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && !l.starts_with("N:"))
        .collect();
    assert!(
        tags.is_empty(),
        "lintian on {}:\n{}\n{}",
        deb.display(),
        tags.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let overrides = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/debian/lintian-overrides"),
    )
    .unwrap();
    // Every override has a comment that says why.
    let mut why = false;
    for line in overrides.lines() {
        match line.trim() {
            l if l.starts_with('#') => why = true,
            "" => why = false,
            l => {
                assert!(why, "override without a reason: {l}");
                why = false;
            }
        }
    }
}
