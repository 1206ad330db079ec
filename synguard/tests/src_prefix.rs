//! Live test of `src_prefix6`: IPv6 sources in different /64s of one /48 share one
//! per-source bucket at `--src-prefix6 48`, and get one each once `synguard set` puts it
//! back to 64.
//!
//! Needs root; fails under CI without it and skips otherwise.

use std::{net::TcpListener, thread, time::Duration};

use anyhow::{Result, bail};
use synguard_common::{
    flags,
    maps::Counter,
    testutil::{Seg, linux_syn_options6},
};
use synguard_harness::synguard::test_run_args;
use synguard_harness::{Counters, RawSock, VethPair, netns, root_or_skip};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// A SYN to a's PORT from 2001:2:0:`subnet`::50 (inside the test range 2001:2::/48).
fn syn_from_subnet(p: &VethPair, subnet: u8, sport: u16) -> Vec<u8> {
    let mut s = Seg::syn6();
    s.src = [0x20, 0x01, 0, 2, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, 0, 0x50];
    s.dst = p.a.ipv6.octets();
    s.dport = PORT;
    s.sport = sport;
    s.flags = flags::SYN;
    s.options = linux_syn_options6(0x1234_5678);
    let mut f = s.frame();
    f[..6].copy_from_slice(&p.a.mac);
    f[6..12].copy_from_slice(&p.b.mac);
    f
}

/// Sends one SYN from each of `subnets`; returns how many were rate-limited.
fn limited(p: &VethPair, subnets: std::ops::Range<u8>) -> Result<u64> {
    let before = Counters::read(&p.a.iface)?;
    let n = subnets.len() as u64;
    netns::in_netns(&p.b.netns, || {
        let sock = RawSock::open(&p.b.iface)?;
        for s in subnets.clone() {
            sock.send(&syn_from_subnet(p, s, 40000 + u16::from(s)))?;
        }
        Ok(())
    })?;
    for _ in 0..100 {
        let d = Counters::read(&p.a.iface)?.delta(&before);
        if d.get(Counter::SynSeen) >= n {
            return Ok(d.get(Counter::RateLimited));
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("the SYNs did not arrive")
}

#[test]
fn src_prefix6_groups_ipv6_sources_live() -> Result<()> {
    if !root_or_skip("src_prefix6_groups_ipv6_sources_live") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let _listener = netns::in_netns(&pair.a.netns, || Ok(TcpListener::bind(("::", PORT))?))?;
    let ports = PORT.to_string();
    // One SYN a second per source, a bucket of 2: the third SYN of one source is limited.
    let daemon = pair.synguard(BIN, &pair.a).start(
        &pair.a.iface,
        &test_run_args(
            "always",
            &ports,
            &[
                "--src-syn-rate",
                "1",
                "--src-syn-burst",
                "2",
                "--src-prefix6",
                "48",
            ],
        ),
    )?;
    // Six /64s of one /48: one source at /48, so four of the six are over its bucket.
    assert_eq!(limited(&pair, 10..16)?, 4);
    let out = netns::command(&pair.a.netns, BIN)
        .args(["set", "--iface", &pair.a.iface, "src_prefix6", "64"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Six fresh /64s: six sources, none over its bucket.
    assert_eq!(limited(&pair, 20..26)?, 0);
    daemon.stop()?;
    Ok(())
}
