//! `cargo xtask soak`: forged-ACK floods long enough to measure what the cookie's MAC
//! allows (not in CI: the full counts run for minutes).
//!
//! 1. **Idle.** `--acks` (default 10^7) forged ACKs at an `auto`-mode server that never
//!    engages. It has minted no cookie, so no key slot can accept one: the bound is 0.
//! 2. **Engaged.** `--engaged-acks` (default 10^8) forged ACKs without timestamps at an
//!    `always`-mode server that keeps both key slots minted (a legitimate connection every
//!    second, keys rotated every `--rotation`). Without timestamps an ACK's cookie carries
//!    27 MAC bits, tried against two slots, so each forged ACK is accepted with probability
//!    p = 2 * 2^-27 = 2^-26, and N of them open Poisson(N * 2^-26) sockets: 1.49 for
//!    N = 10^8. The run fails above the 99.9 % quantile of that distribution (6 for 10^8;
//!    a 1-in-1000 false alarm), which a weaker cookie (the old 24 bits: mean 11.9) exceeds.
//!
//! Spoofed sockets are the listener's accepts less the legitimate connections made. Floods
//! longer than the harness's 10-minute bound run as several floods.

use std::{
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::Args;
use comfy_table::Table;
use synguard_common::maps::Counter;
use synguard_harness::{
    Counters, Family, FloodKind, FloodOptions, Synguard, Topology, TopologyOptions, flood,
    flood::MAX_DURATION, netns,
};

const PORT: u16 = 8080;
/// MAC bits of a cookie ACK without timestamps, and the key slots it is tried against.
const MAC_BITS_NO_TS: i32 = 27;
const KEY_SLOTS: f64 = 2.0;

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Forged ACKs at the idle `auto` server (e.g. 1e6 for a short run; 0 skips it).
    #[arg(long, value_parser = count, default_value = "1e7")]
    pub acks: u64,
    /// Forged ACKs without timestamps at the engaged `always` server (0 skips it).
    #[arg(long, value_parser = count, default_value = "1e8")]
    pub engaged_acks: u64,
    /// Key rotation of the engaged server (both slots stay minted).
    #[arg(long, default_value = "20s")]
    pub rotation: String,
}

/// A packet count: an integer or a float such as 1e7.
fn count(s: &str) -> Result<u64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a count (try 1e6 or 1000000)"))?;
    if !(0.0..=1e12).contains(&v) || v.fract() != 0.0 {
        return Err(format!("{s:?}: a whole number of packets up to 1e12"));
    }
    Ok(v as u64)
}

/// The smallest k with P(Poisson(mean) <= k) >= q.
fn poisson_quantile(mean: f64, q: f64) -> u64 {
    let (mut k, mut term) = (0u64, (-mean).exp());
    let mut cdf = term;
    while cdf < q {
        k += 1;
        term *= mean / k as f64;
        cdf += term;
    }
    k
}

struct Row {
    phase: &'static str,
    sent: u64,
    judged: u64,
    valid: u64,
    spoofed: u64,
    expected: f64,
    bound: u64,
    secs: f64,
}

pub fn soak(a: &SoakArgs) -> Result<()> {
    let bin = crate::demo::prepare()?;
    let mut rows = Vec::new();
    if a.acks > 0 {
        rows.push(phase(
            &bin,
            "idle auto",
            a.acks,
            "auto",
            &["--ack-rate-on", "1000000000"],
        )?);
    }
    if a.engaged_acks > 0 {
        rows.push(phase(
            &bin,
            "engaged always",
            a.engaged_acks,
            "always",
            &["--key-rotation", &a.rotation],
        )?);
    }
    let mut t = Table::new();
    t.set_header([
        "phase",
        "forged ACKs sent",
        "judged by XDP",
        "forged cookie_ack_valid",
        "spoofed sockets",
        "expected",
        "bound (99.9%)",
        "seconds",
    ]);
    for r in &rows {
        t.add_row([
            r.phase.to_string(),
            r.sent.to_string(),
            r.judged.to_string(),
            r.valid.to_string(),
            r.spoofed.to_string(),
            format!("{:.3}", r.expected),
            r.bound.to_string(),
            format!("{:.0}", r.secs),
        ]);
    }
    println!("{t}");
    for r in &rows {
        if r.spoofed > r.bound {
            bail!(
                "{}: {} spoofed sockets, above the bound {}",
                r.phase,
                r.spoofed,
                r.bound
            );
        }
    }
    Ok(())
}

fn phase(
    bin: &std::path::Path,
    name: &'static str,
    acks: u64,
    mode: &str,
    extra: &[&str],
) -> Result<Row> {
    let topo = Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })?;
    let port = PORT.to_string();
    let mut args = vec!["--ports", &port, "--mode", mode, "--xdp-mode", "generic"];
    args.extend(["--metrics", "off"]);
    args.extend(extra);
    let daemon = Synguard::new(bin, &topo.srv.netns)
        .owned_by(topo.id())
        .start(topo.server_iface(), &args)?;
    let server = topo.start_server(PORT)?;
    let iface = topo.server_iface().to_string();
    let engaged = mode == "always";

    // Engaged: legitimate connections keep the active key slot minted, and across a
    // rotation the previous one too.
    let stop = Arc::new(AtomicBool::new(false));
    let legit = Arc::new(AtomicU64::new(0));
    let minter = engaged.then(|| {
        let (stop, legit) = (stop.clone(), legit.clone());
        let (ns, addr) = (topo.cli.netns.clone(), topo.server_addr(Family::V4, PORT));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = netns::in_netns(&ns, || {
                    Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
                });
                if matches!(ok, Ok(true)) {
                    legit.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    });
    if engaged {
        // Two rotations' worth of minting is not needed up front; one handshake is.
        thread::sleep(Duration::from_secs(2));
    }

    let before = Counters::read(&iface)?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < acks {
        let mut opts = FloodOptions::new(FloodKind::Ack, Family::V4, PORT, MAX_DURATION);
        opts.count = Some(acks - sent);
        let r = flood::run(&topo, &opts)?;
        let n = r.generator_sent.unwrap_or(0);
        println!("xtask soak: {name}: {n} forged ACKs in {:?}", r.elapsed);
        if n == 0 {
            bail!("{name}: the flood sent nothing: {r:?}");
        }
        sent += n;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(m) = minter {
        let _ = m.join();
    }
    // Let the last handshakes and accepts settle.
    thread::sleep(Duration::from_secs(1));
    let d = Counters::read(&iface)?.delta(&before);
    let st = server.stop();
    daemon.stop()?;
    let legit = legit.load(Ordering::Relaxed);
    let judged = if engaged {
        d.get(Counter::CookieAckInvalid) + d.get(Counter::CookieAckValid)
    } else {
        d.get(Counter::AckPassedUnengaged)
    };
    let spoofed = st.accepted.saturating_sub(legit);
    let (expected, bound) = if engaged {
        let mean = judged as f64 * KEY_SLOTS * 2f64.powi(-MAC_BITS_NO_TS);
        (mean, poisson_quantile(mean, 0.999))
    } else {
        // Nothing minted: no slot can accept a cookie.
        (0.0, 0)
    };
    println!(
        "xtask soak: {name}: counters {:?}; server {st:?}; legitimate {legit}",
        d.nonzero()
    );
    topo.teardown()?;
    Ok(Row {
        phase: name,
        sent,
        judged,
        // Each legitimate SYN answered in the window brings one valid cookie ACK.
        valid: d
            .get(Counter::CookieAckValid)
            .saturating_sub(d.get(Counter::CookieSent)),
        spoofed,
        expected,
        bound,
        secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_in_both_forms() {
        assert_eq!(count("1e6"), Ok(1_000_000));
        assert_eq!(count("12345"), Ok(12_345));
        assert!(count("1.5").is_err());
        assert!(count("-1").is_err());
        assert!(count("x").is_err());
    }

    #[test]
    fn the_bound_for_1e8_acks_is_6() {
        let mean = 1e8 * KEY_SLOTS * 2f64.powi(-MAC_BITS_NO_TS);
        assert!((mean - 1.49).abs() < 0.01, "{mean}");
        assert_eq!(poisson_quantile(mean, 0.999), 6);
        assert_eq!(poisson_quantile(0.0, 0.999), 0);
    }
}
