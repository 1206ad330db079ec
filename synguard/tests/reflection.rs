//! Live reflection tests: SYNs whose answer would reflect (LAND, IPv4-mapped IPv6, a
//! directed broadcast of one of the server's subnets, one there at start and one added
//! while the daemon runs) get no SYN+ACK from an engaged synguard, and
//! each is counted under `reflection`; a plain SYN on the same wire is answered, so the
//! capture can see a SYN+ACK when there is one.
//!
//! Needs root; fails under CI without it and skips otherwise.

use std::{net::TcpListener, thread, time::Duration, time::Instant};

use anyhow::{Context, Result};
use synguard_common::{
    flags,
    maps::Counter,
    testutil::{Seg, linux_syn_options, linux_syn_options6},
};
use synguard_harness::synguard::test_run_args;
use synguard_harness::{Counters, RawSock, VethPair, fixture::PAIR_V4_NET, netns, root_or_skip};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// A second subnet on the server end, with its broadcast address set (`brd +`): the
/// source of the directed-broadcast SYN.
const BCAST_NET_ADDR: &str = "198.19.77.1/24";
const BCAST_ADDR: [u8; 4] = [198, 19, 77, 255];
/// A subnet added while the daemon runs: its broadcast is learnt from the RTM_NEWADDR event.
const LATE_NET_ADDR: &str = "198.19.78.1/25";
const LATE_BCAST_ADDR: [u8; 4] = [198, 19, 78, 127];

/// A SYN to a's PORT from `src` (4 or 16 bytes), addressed to `dst`, MACs of the pair.
fn syn(p: &VethPair, src: &[u8], dst: &[u8], sport: u16) -> Vec<u8> {
    let mut s = if src.len() == 16 {
        Seg::syn6()
    } else {
        Seg::syn4()
    };
    s.src = [0; 16];
    s.dst = [0; 16];
    s.src[..src.len()].copy_from_slice(src);
    s.dst[..dst.len()].copy_from_slice(dst);
    s.dport = PORT;
    s.sport = sport;
    s.flags = flags::SYN;
    s.options = if s.v6 {
        linux_syn_options6(0x1234_5678)
    } else {
        linux_syn_options(0x1234_5678)
    };
    let mut f = s.frame();
    f[..6].copy_from_slice(&p.a.mac);
    f[6..12].copy_from_slice(&p.b.mac);
    f
}

fn is_syn_ack(f: &[u8]) -> bool {
    // TCP only: the peer's own ICMPv6 (a router solicitation as the link comes up) is no
    // SYN+ACK, whatever byte sits where TCP's flags would.
    let tcp_flags = match f.get(12..14) {
        Some([0x08, 0x00]) if f.get(14 + 9) == Some(&6) => f.get(14 + 20 + 13),
        Some([0x86, 0xdd]) if f.get(14 + 6) == Some(&6) => f.get(14 + 40 + 13),
        _ => None,
    };
    tcp_flags
        .is_some_and(|&t| t & (flags::SYN | flags::ACK | flags::RST) == flags::SYN | flags::ACK)
}

#[test]
fn reflection_prone_syns_get_no_syn_ack() -> Result<()> {
    if !root_or_skip("reflection_prone_syns_get_no_syn_ack") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    netns::command(&pair.a.netns, "ip")
        .args([
            "addr",
            "add",
            BCAST_NET_ADDR,
            "brd",
            "+",
            "dev",
            &pair.a.iface,
        ])
        .status()
        .context("ip addr add")?
        .success()
        .then_some(())
        .context("adding the broadcast subnet")?;
    let _listener = netns::in_netns(&pair.a.netns, || Ok(TcpListener::bind(("::", PORT))?))?;
    let ports = PORT.to_string();
    let daemon = pair
        .synguard(BIN, &pair.a)
        .start(&pair.a.iface, &test_run_args("always", &ports, &[]))?;
    netns::command(&pair.a.netns, "ip")
        .args([
            "addr",
            "add",
            LATE_NET_ADDR,
            "brd",
            "+",
            "dev",
            &pair.a.iface,
        ])
        .status()
        .context("ip addr add")?
        .success()
        .then_some(())
        .context("adding the late broadcast subnet")?;
    // The address event reaches the daemon's rtnetlink thread within milliseconds.
    thread::sleep(Duration::from_millis(300));
    let a4 = pair.a.ipv4.octets();
    let a6 = pair.a.ipv6.octets();
    let [n0, n1, n2] = PAIR_V4_NET;
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&[n0, n1, n2, 60]);
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("LAND", syn(&pair, &a4, &a4, 41001)),
        ("LAND v6", syn(&pair, &a6, &a6, 41002)),
        ("v4-mapped source", syn(&pair, &mapped, &a6, 41003)),
        ("directed broadcast", syn(&pair, &BCAST_ADDR, &a4, 41004)),
        (
            "directed broadcast of a subnet added live",
            syn(&pair, &LATE_BCAST_ADDR, &a4, 41006),
        ),
    ];
    // From an address b does not own, so b's stack ignores the SYN+ACK.
    let control = syn(&pair, &[n0, n1, n2, 50], &a4, 41005);
    let a_if = pair.a.iface.clone();
    let result = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        let mut wrong = Vec::new();
        for (what, frame) in &hostile {
            let before = Counters::read(&a_if)?;
            sock.send(frame)?;
            if let Some(r) = sock.recv_matching(Duration::from_millis(700), is_syn_ack)? {
                wrong.push(format!("{what}: a SYN+ACK left: {r:02x?}"));
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            let d = loop {
                let d = Counters::read(&a_if)?.delta(&before);
                if d.get(Counter::Reflection) != 0 || Instant::now() > deadline {
                    break d;
                }
                thread::sleep(Duration::from_millis(5));
            };
            if d.get(Counter::Reflection) != 1 || d.get(Counter::CookieSent) != 0 {
                wrong.push(format!("{what}: want reflection +1, got {d:?}"));
            }
        }
        sock.send(&control)?;
        if sock
            .recv_matching(Duration::from_secs(2), is_syn_ack)?
            .is_none()
        {
            wrong.push("control SYN: no SYN+ACK came back".into());
        }
        Ok(wrong)
    })?;
    daemon.stop()?;
    assert!(result.is_empty(), "{result:#?}");
    Ok(())
}
