//! Live test of auto mode's forged-ACK trigger: a pure forged-ACK flood (no SYN at all) at
//! an `auto` server engages it, after which the forged ACKs are dropped in XDP
//! (`cookie_ack_invalid`) instead of passed (`ack_passed_unengaged`), so the kernel stops
//! answering each with an RST toward its spoofed source.
//!
//! Needs root; fails under CI without it and skips otherwise.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use synguard_common::maps::Counter;
use synguard_harness::synguard::engaged;
use synguard_harness::synguard::test_run_args;
use synguard_harness::{
    Counters, Family, FloodKind, FloodOptions, Synguard, Topology, TopologyOptions,
    exclusive_cores, flood, netns, root_or_skip,
};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// TCP OutRsts of namespace `ns`, from its /proc/net/snmp.
fn out_rsts(ns: &str) -> Result<u64> {
    let out = netns::command(ns, "cat").arg("/proc/net/snmp").output()?;
    let text = String::from_utf8(out.stdout)?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().context("no Tcp header")?,
        tcp.next().context("no Tcp values")?,
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "OutRsts")
        .context("no OutRsts")?;
    Ok(values
        .split_whitespace()
        .nth(i)
        .context("short Tcp line")?
        .parse()?)
}

#[test]
fn a_pure_forged_ack_flood_engages_auto_mode_and_stops_the_rsts() -> Result<()> {
    if !root_or_skip("a_pure_forged_ack_flood_engages_auto_mode") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let topo = Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })?;
    let port = PORT.to_string();
    // Default thresholds: ack_rate_on 1000/s; the SYN trigger cannot fire, no SYN is sent.
    let _daemon = Synguard::new(BIN, &topo.srv.netns)
        .owned_by(topo.id())
        .start(topo.server_iface(), &test_run_args("auto", &port, &[]))?;
    let server = topo.start_server(PORT)?;
    let iface = topo.server_iface().to_string();
    let ns = topo.srv.netns.clone();
    assert!(!engaged(&iface)?);

    // Stopped as soon as the engaged window is measured; long enough for a slow start of
    // the generator on a loaded box.
    let opts = FloodOptions::new(FloodKind::Ack, Family::V4, PORT, Duration::from_secs(40));
    let running = flood::start(&topo, &opts)?;
    // Engaging takes one 100 ms sample once the flood arrives; the margin is for the
    // generator's start-up on a busy 2-core box.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engaged(&iface)? {
        if Instant::now() > deadline {
            let c = Counters::read(&iface)?;
            bail!(
                "auto mode did not engage on the forged-ACK flood: {:?}",
                c.nonzero()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Engaged: over the next two seconds, forged ACKs are dropped, none is passed, and the
    // kernel sends (almost) no RST.
    thread::sleep(Duration::from_millis(300));
    let (before, rsts0) = (Counters::read(&iface)?, out_rsts(&ns)?);
    thread::sleep(Duration::from_secs(2));
    let (d, rsts) = (
        Counters::read(&iface)?.delta(&before),
        out_rsts(&ns)? - rsts0,
    );
    let still = engaged(&iface)?;
    let report = running.stop()?;
    println!(
        "flood: {report:?}\nengaged window: RSTs {rsts}, counters {:?}",
        d.nonzero()
    );
    assert!(still, "auto mode let go during the flood");
    let dropped = d.get(Counter::CookieAckInvalid);
    assert!(dropped > 1000, "forged ACKs not dropped: {:?}", d.nonzero());
    assert_eq!(d.get(Counter::AckPassedUnengaged), 0, "{:?}", d.nonzero());
    assert_eq!(d.get(Counter::SynSeen), 0, "the flood held a SYN");
    // Flat: the only RSTs left would be from ACKs that slipped through; none do.
    assert!(
        rsts <= dropped / 1000,
        "{rsts} RSTs for {dropped} forged ACKs"
    );
    assert_eq!(server.stop().accepted, 0);
    Ok(())
}
