//! The systemd units in packaging/: `systemd-analyze verify` accepts them without a single
//! warning (an unknown or misspelt directive is only a warning there, so any output fails),
//! and they keep the contracts the daemon implements (tests/service.rs): Type=notify,
//! SIGHUP reload, SIGTERM stop (detach) vs SIGUSR2 restart (handover), the watchdog, and
//! only the capabilities BPF needs. No root needed.

use std::{path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_synguard");
const UNITS: [&str; 2] = ["synguard.service", "synguard@.service"];

fn unit(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn systemd_analyze_verifies_the_units() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing: run `cargo xtask setup` (Debian package systemd)"
        );
        eprintln!("skipping: no systemd-analyze (cargo xtask setup installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("synguard-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in UNITS {
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let text = unit(name).replace("/usr/bin/synguard", BIN);
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        // --man=no: the man page is the package's (tests/service_package.rs).
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&p)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stderr.trim().is_empty(), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_units_keep_the_daemons_contracts() {
    for name in UNITS {
        let text = unit(name);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let has = |l: &str| lines.contains(&l);
        for want in [
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillSignal=SIGTERM",
            "RestartKillSignal=SIGUSR2",
            "RuntimeDirectoryPreserve=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/sys/fs/bpf",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN",
        ] {
            assert!(has(want), "{name} lacks {want}");
        }
        assert!(
            lines.iter().any(|l| l.starts_with("WatchdogSec=")),
            "{name}: no watchdog"
        );
        assert!(
            lines.iter().any(
                |l| l.starts_with("ExecStart=/usr/bin/synguard run ") && l.contains("--config")
            ),
            "{name}: ExecStart"
        );
    }
}

/// `check --config FILE` validates as `run` would: the shipped default config is valid once
/// `iface` is set (and not before: the service must not start on a guess), a bad value is
/// exit 4 with the reason.
#[test]
fn check_config_validates_like_run() {
    let dir = std::env::temp_dir().join(format!("synguard-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let shipped = unit("synguard.toml");
    let (c, out) = check("shipped.toml", &shipped);
    assert_eq!(c, Some(4), "{out}");
    assert!(out.contains("--iface is required"), "{out}");
    let (c, out) = check("set.toml", &format!("iface = \"eth0\"\n{shipped}"));
    assert_eq!(c, Some(0), "{out}");
    assert!(
        out.contains(
            "ok: iface eth0, mode auto, ports 80,443, allow 0 entries (owned by the file)"
        ),
        "{out}"
    );
    let (c, out) = check("bad.toml", "iface = \"eth0\"\ndeny = [\"10.1.2.3/8\"]\n");
    assert_eq!(c, Some(4), "{out}");
    assert!(out.contains("did you mean 10.0.0.0/8"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
