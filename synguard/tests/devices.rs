//! `synguard run` refuses a non-Ethernet device: on a tun device (link type NONE: raw IP
//! frames) it fails before attaching, naming the link type and the device to protect.
//!
//! Needs root; fails under CI without it and skips otherwise.

use anyhow::Result;
use synguard_harness::{VethPair, netns, root_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_synguard");

#[test]
fn run_refuses_a_tun_device() -> Result<()> {
    if !root_or_skip("run_refuses_a_tun_device") {
        return Ok(());
    }
    // The pair only provides a fresh namespace (removed with the tun in it on drop).
    let pair = VethPair::new()?;
    let tun = pair.link_name('t');
    netns::run_checked(
        netns::command(&pair.a.netns, "ip").args(["tuntap", "add", "dev", &tun, "mode", "tun"]),
    )?;
    netns::run_checked(netns::command(&pair.a.netns, "ip").args(["link", "set", &tun, "up"]))?;
    let out = netns::command(&pair.a.netns, BIN)
        .args([
            "run",
            "--iface",
            &tun,
            "--ports",
            "8080",
            "--metrics",
            "off",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "run on a tun device succeeded: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{tun} is not an Ethernet device")),
        "{stderr}"
    );
    assert!(stderr.contains("NONE"), "{stderr}");
    assert!(stderr.contains("decapsulated Ethernet device"), "{stderr}");
    // Nothing was attached or pinned.
    let links = netns::command(&pair.a.netns, "ip")
        .args(["-d", "link", "show", &tun])
        .output()?;
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("xdp"),
        "an XDP program was attached"
    );
    Ok(())
}
