//! Live forgery tests: spoofed cookie ACKs at a real listener behind synguard on veth.
//!
//! A cookie ACK is accepted only against a key slot that synguard has minted with
//! (`MINTED`, see `synguard_common::maps::minted_mark`), so an `auto`-mode server that
//! never engaged has minted nothing and accepts no cookie at all, whatever the forger
//! sends. These tests need root; without it they fail under CI and skip otherwise.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use synguard_common::maps::Counter;
use synguard_harness::synguard::{engaged, wait_for};
use synguard_harness::{
    Counters, Daemon, Family, FloodKind, FloodOptions, Synguard, Topology, TopologyOptions,
    exclusive_cores, flood, netns, root_or_skip,
};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// `synguard run --mode MODE` on the topology's server veth, attached (generic XDP, no
/// metrics endpoint: the bare test namespaces have no loopback up). Dropping the daemon
/// stops it and removes its pins, even when an assertion fails.
fn start_daemon(topo: &Topology, mode: &str, extra: &[&str]) -> Result<Daemon> {
    let port = PORT.to_string();
    let mut args = vec!["--ports", &port, "--mode", mode, "--xdp-mode", "generic"];
    args.extend(["--metrics", "off"]);
    args.extend(extra);
    Synguard::new(BIN, &topo.srv.netns)
        .owned_by(topo.id())
        .start(topo.server_iface(), &args)
}

/// Forged ACKs (random sequence and acknowledgment numbers, no timestamps, random spoofed
/// sources) at an idle `auto`-mode server that never engaged: not one is taken for a
/// cookie, and the listener accepts no connection.
///
/// Count: up to 10^7, bounded by 40 s so the test stays under a minute on CI's 2 cores.
/// Unengaged, every forged ACK passes to the kernel, which answers it with an RST, so the
/// flood runs at about 10^5 pps on a busy 2-core box: about 4.5 * 10^6 ACKs in the 40 s
/// (measured 2026-12). The test requires at least 10^6 to have been judged, which holds
/// with other builds competing for the cores.
///
/// Were both key slots minted with, each ACK would face two slots of 27 MAC bits:
/// 10^7 * 2^-26 = 0.15 expected false accepts (1.2 with the old 24-bit cookie; the issue
/// measured 1). So this run alone cannot prove the 2^-26 rate, which the host tests in
/// synguard-common show exactly. What it proves is the idle case: nothing minted, so 0
/// accepted and 0 sockets, at any count. The full 10^7 and the 10^8 engaged run
/// belong in an xtask command.
#[test]
fn forged_acks_at_an_idle_auto_server_open_no_socket() -> Result<()> {
    if !root_or_skip("forged_acks_at_an_idle_auto_server_open_no_socket") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let topo = Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })?;
    // A forged-ACK flood engages auto mode at ack_rate_on (tests/auto_forged_ack.rs); this
    // test is about the server that stays idle, so the trigger is out of reach.
    let _daemon = start_daemon(&topo, "auto", &["--ack-rate-on", "1000000000"])?;
    let server = topo.start_server(PORT)?;
    let iface = topo.server_iface().to_string();
    let before = Counters::read(&iface)?;

    let mut opts = FloodOptions::new(FloodKind::Ack, Family::V4, PORT, Duration::from_secs(40));
    opts.count = Some(10_000_000);
    let report = flood::run(&topo, &opts)?;
    let d = Counters::read(&iface)?.delta(&before);
    println!(
        "forged ACK flood: {:?} sent, {} arrived in {:?}\ncounter deltas: {:?}",
        report.generator_sent,
        report.arrived(),
        report.elapsed,
        d.named()
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .collect::<Vec<_>>()
    );

    let judged = d.get(Counter::AckPassedUnengaged);
    assert!(
        judged >= 1_000_000,
        "only {judged} forged ACKs reached the cookie check: {report:?}"
    );
    assert_eq!(d.get(Counter::CookieSent), 0, "auto mode engaged");
    assert_eq!(
        d.get(Counter::CookieAckValid),
        0,
        "a forged ACK passed as a cookie"
    );
    assert_eq!(d.get(Counter::ReqskAssigned), 0);
    // Never engaged: every forged ACK is the kernel's, none is dropped as a bad cookie.
    assert_eq!(d.get(Counter::CookieAckInvalid), 0);
    let st = server.stop();
    assert_eq!(
        st.accepted, 0,
        "the listener accepted a spoofed connection: {st:?}"
    );
    Ok(())
}

/// Runs `program args` in `ns`; its stderr on failure.
fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<()> {
    let out = netns::command(ns, program).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A connection whose SYN the kernel answered with its own cookie just before auto mode
/// engaged still completes: its first ACK, held back until synguard is engaged, carries
/// no cookie of synguard's, but `bpf_tcp_raw_check_syncookie_ipv4` vouches for the
/// kernel's, and the segment is passed (`kernel_cookie_pass`) instead of dropped.
///
/// The server namespace sets `tcp_syncookies = 2`, so the kernel answers every SYN with a
/// cookie; the client namespace drops its own pure ACKs to the port, so the handshake's
/// ACK never leaves and the first segment the server sees is the client's data, which
/// acknowledges the cookie. Before this path existed that segment was dropped as a bad
/// cookie and the listener never accepted.
#[test]
fn kernel_cookies_minted_before_an_engage_still_complete() -> Result<()> {
    if !root_or_skip("kernel_cookies_minted_before_an_engage_still_complete") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let topo = Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })?;
    run_in(
        &topo.srv.netns,
        "sysctl",
        &["-qw", "net.ipv4.tcp_syncookies=2"],
    )?;
    let _daemon = start_daemon(
        &topo,
        "auto",
        &["--syn-rate-on", "200", "--syn-rate-off", "100"],
    )?;
    let iface = topo.server_iface().to_string();
    let addr = topo.server_addr(Family::V4, PORT);
    let listener = netns::in_netns(&topo.srv.netns, || Ok(TcpListener::bind(addr)?))?;
    listener.set_nonblocking(true)?;

    // The client's pure ACKs to the port go nowhere: no flags but ACK.
    let port = PORT.to_string();
    for args in [
        &["add", "table", "inet", "hold"][..],
        &[
            "add",
            "chain",
            "inet",
            "hold",
            "out",
            "{ type filter hook output priority 0; }",
        ],
        &[
            "add", "rule", "inet", "hold", "out", "tcp", "dport", &port, "tcp", "flags", "==",
            "ack", "drop",
        ],
    ] {
        run_in(&topo.cli.netns, "nft", args)?;
    }
    let mut client = netns::in_netns(&topo.cli.netns, || {
        Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?)
    })?;
    let before = Counters::read(&iface)?;
    assert!(!engaged(&iface)?, "engaged before the flood");
    assert_eq!(
        before.get(Counter::CookieSent),
        0,
        "synguard answered the client's SYN"
    );

    // A spoofed SYN flood well above syn_rate_on engages cookies.
    let mut opts = FloodOptions::new(FloodKind::Syn, Family::V4, PORT, Duration::from_secs(20));
    opts.rate_pps = Some(2000);
    let flood = flood::start(&topo, &opts)?;
    let result = (|| -> Result<Vec<u8>> {
        wait_for("auto mode to engage", Duration::from_secs(10), || {
            engaged(&iface)
        })?;
        client.write_all(b"hello")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut s, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("the listener accepted nothing within 5 s");
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("accept"),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut got = [0u8; 5];
        s.read_exact(&mut got)?;
        assert!(engaged(&iface)?, "disengaged during the test");
        Ok(got.to_vec())
    })();
    flood.stop()?;
    let d = Counters::read(&iface)?.delta(&before);
    println!(
        "counter deltas: {:?}",
        d.named()
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(result?, b"hello");
    // Counted only while engaged: the segment was judged with cookies on.
    assert!(d.get(Counter::KernelCookiePass) >= 1, "{d:?}");
    assert_eq!(
        d.get(Counter::ReqskAssigned),
        0,
        "handed off as synguard's cookie"
    );
    Ok(())
}
