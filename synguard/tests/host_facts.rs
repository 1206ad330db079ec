//! Host facts synguard must follow (issue 7, items 7, 9, 11): the MSS it advertises comes
//! from the interface MTU and follows it live; `run` refuses (or fixes) the sysctls the
//! handoff needs; ECN follows net.ipv4.tcp_ecn; netfilter rulesets that drop cookie ACKs
//! are reported, and accept them with the documented mark rule.
//!
//! They need root; without it they fail under CI and skip otherwise.

use std::{
    net::{Ipv6Addr, SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use synguard_common::{
    flags,
    maps::{Counter, names},
    testutil::{Reply, Seg, linux_syn_options, linux_syn_options6, read_reply},
};
use synguard_harness::synguard::test_run_args;
use synguard_harness::{
    Daemon, RawSock,
    fixture::{PAIR_V4_NET, VethPair, pin_dir},
    netns, root_or_skip,
};

const PORT: u16 = 8081;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// A dual-stack listener on a's PORT that never accepts: synguard answers only for a
/// plain-TCP listener.
fn listen(pair: &VethPair) -> Result<TcpListener> {
    netns::in_netns(&pair.a.netns, || {
        Ok(TcpListener::bind(SocketAddr::from((
            Ipv6Addr::UNSPECIFIED,
            PORT,
        )))?)
    })
}

fn start(pair: &VethPair, extra: &[&str]) -> Result<Daemon> {
    pair.synguard(BIN, &pair.a)
        .start(&pair.a.iface, &test_run_args("always", "8081", extra))
}

/// A client SYN from b's /24 (host .50, which b does not own, so b's stack ignores our
/// SYN+ACK) or /64 to a's PORT, with `flags` (ECE|CWR for an ECN-setup SYN).
fn syn_frame(pair: &VethPair, v6: bool, flags: u8, seq: u32) -> Vec<u8> {
    let mut s = if v6 { Seg::syn6() } else { Seg::syn4() };
    if v6 {
        let mut src = pair.b.ipv6.octets();
        src[15] = 50;
        s.src = src;
        s.dst = pair.a.ipv6.octets();
        s.options = linux_syn_options6(0x1234_5678);
    } else {
        let [n0, n1, n2] = PAIR_V4_NET;
        s.src[..4].copy_from_slice(&[n0, n1, n2, 50]);
        s.dst[..4].copy_from_slice(&pair.a.ipv4.octets());
        s.options = linux_syn_options(0x1234_5678);
    }
    s.dport = PORT;
    s.sport = 40000 + (seq % 20000) as u16;
    s.seq = seq;
    s.flags = flags;
    let mut f = s.frame();
    f[..6].copy_from_slice(&pair.a.mac);
    f[6..12].copy_from_slice(&pair.b.mac);
    f
}

/// Sends a SYN from b and returns our SYN+ACK, if one comes within a second.
fn syn_ack(pair: &VethPair, v6: bool, flags: u8, seq: u32) -> Result<Option<Reply>> {
    let syn = syn_frame(pair, v6, flags, seq);
    let ack = seq.wrapping_add(1).to_be_bytes();
    let reply = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        sock.send(&syn)?;
        // Ours: SYN+ACK acking this SYN (ack field at 38 / 58 into the frame).
        let at = if v6 { 14 + 40 + 8 } else { 14 + 20 + 8 };
        sock.recv_matching(Duration::from_secs(1), |f| {
            f.len() >= at + 6 && f[at..at + 4] == ack && f[at + 5] & 0x12 == 0x12
        })
    })?;
    Ok(reply.map(|r| read_reply(&r)))
}

/// The MSS option's value in `options`.
fn mss_of(r: &Reply) -> Option<u16> {
    let o = &r.options;
    let mut i = 0;
    while i < o.len() {
        match o[i] {
            0 => return None,
            1 => i += 1,
            2 if i + 3 < o.len() => return Some(u16::from_be_bytes([o[i + 2], o[i + 3]])),
            _ if i + 1 < o.len() && o[i + 1] >= 2 => i += o[i + 1] as usize,
            _ => return None,
        }
    }
    None
}

fn advertised(pair: &VethPair, seq: u32) -> Result<(Option<u16>, Option<u16>)> {
    let v4 = syn_ack(pair, false, flags::SYN, seq)?
        .as_ref()
        .and_then(mss_of);
    let v6 = syn_ack(pair, true, flags::SYN, seq + 1)?
        .as_ref()
        .and_then(mss_of);
    Ok((v4, v6))
}

fn set_mtu(netns_name: &str, iface: &str, mtu: u32) -> Result<()> {
    netns::ip(&[
        "-n",
        netns_name,
        "link",
        "set",
        "dev",
        iface,
        "mtu",
        &mtu.to_string(),
    ])?;
    Ok(())
}

#[test]
fn advertised_mss_follows_the_interface_mtu_live_and_the_clamp_wins() -> Result<()> {
    if !root_or_skip("advertised_mss_follows_the_interface_mtu") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    for s in [&pair.a, &pair.b] {
        set_mtu(&s.netns, &s.iface, 1400)?;
    }
    let _listener = listen(&pair)?;
    let daemon = start(&pair, &[])?;
    assert_eq!(
        advertised(&pair, 1000)?,
        (Some(1360), Some(1340)),
        "MTU 1400"
    );

    for s in [&pair.a, &pair.b] {
        set_mtu(&s.netns, &s.iface, 9000)?;
    }
    let changed = Instant::now();
    let mut seq = 2000;
    let got = loop {
        let got = advertised(&pair, seq)?;
        seq += 2;
        if got == (Some(8960), Some(8940)) || changed.elapsed() > Duration::from_secs(3) {
            break got;
        }
    };
    let took = changed.elapsed();
    println!("MTU 9000 took effect within {took:?}");
    assert_eq!(got, (Some(8960), Some(8940)), "MTU 9000");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let sg = pair.synguard(BIN, &pair.a);
    sg.ok(&["set", "--iface", &pair.a.iface, "adv_mss4", "1200"])?;
    sg.ok(&["set", "--iface", &pair.a.iface, "adv_mss6", "1300"])?;
    assert_eq!(advertised(&pair, 3000)?, (Some(1200), Some(1300)), "clamps");
    daemon.stop()?;
    Ok(())
}

#[test]
fn run_refuses_without_tcp_sack_and_fix_sysctls_sets_it() -> Result<()> {
    if !root_or_skip("run_refuses_without_tcp_sack") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    netns::set_sysctl(&pair.a.netns, "net.ipv4.tcp_sack", "0")?;
    let sg = pair.synguard(BIN, &pair.a);
    let mut args = vec!["run", "--iface", &pair.a.iface];
    args.extend(test_run_args("always", "8081", &[]));
    let err = sg.fails(&args)?;
    assert!(
        err.contains("sysctl -w net.ipv4.tcp_sack=1"),
        "no fix in the refusal: {err}"
    );
    assert!(err.contains("--fix-sysctls"), "{err}");
    let pins = pin_dir(&pair.a.iface);
    assert!(!Path::new(&pins).exists(), "a refused run left {pins:?}");

    let _listener = listen(&pair)?;
    let daemon = start(&pair, &["--fix-sysctls"])?;
    assert_eq!(
        netns::get_sysctl(&pair.a.netns, "net.ipv4.tcp_sack")?.trim(),
        "1"
    );
    let log = daemon.log();
    assert!(
        log.contains("net.ipv4.tcp_sack=1"),
        "change not logged: {log}"
    );
    daemon.stop()?;
    Ok(())
}

#[test]
fn ecn_follows_net_ipv4_tcp_ecn() -> Result<()> {
    if !root_or_skip("ecn_follows_net_ipv4_tcp_ecn") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let ecn_syn = flags::SYN | flags::ECE | flags::CWR;
    let _listener = listen(&pair)?;
    netns::set_sysctl(&pair.a.netns, "net.ipv4.tcp_ecn", "0")?;
    let daemon = start(&pair, &[])?;
    let r = syn_ack(&pair, false, ecn_syn, 100)?.context("no SYN+ACK, tcp_ecn=0")?;
    assert_eq!(r.flags, flags::SYN | flags::ACK, "tcp_ecn=0: ECE answered");

    // Re-read within a second (SYSCTL_POLL) while running.
    netns::set_sysctl(&pair.a.netns, "net.ipv4.tcp_ecn", "2")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seq = 200;
    let r = loop {
        let r = syn_ack(&pair, false, ecn_syn, seq)?.context("no SYN+ACK, tcp_ecn=2")?;
        seq += 1;
        if r.flags & flags::ECE != 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        r.flags,
        flags::SYN | flags::ACK | flags::ECE,
        "tcp_ecn=2: ECN not accepted"
    );
    daemon.stop()?;
    Ok(())
}

/// A server on a's PORT that answers "ping" with "pong" on each connection it accepts.
struct PongServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PongServer {
    fn start(listener: TcpListener) -> Result<PongServer> {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        listener.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut req = [0u8; 4];
                        if c.read_exact(&mut req).is_ok() && &req == b"ping" {
                            let _ = c.write_all(b"pong");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(PongServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PongServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` connections from b to a's PORT, each sending "ping" and waiting for "pong": how many
/// got it.
fn pings(pair: &VethPair, n: usize) -> Result<usize> {
    use std::io::{Read, Write};
    let to = SocketAddr::from((pair.a.ipv4, PORT));
    netns::in_netns(&pair.b.netns, || {
        let mut ok = 0;
        for _ in 0..n {
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
            else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_millis(1500)))?;
            let mut reply = [0u8; 4];
            if s.write_all(b"ping").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"pong"
            {
                ok += 1;
            }
        }
        Ok(ok)
    })
}

const DROPPING_RULES: &str = "
        ct state invalid counter drop
        tcp flags & (syn|ack) != syn ct state new counter drop";

/// The README's rules, with the default handoff_mark/handoff_mask: the handed-off ACK by its
/// skb mark, copied to the conntrack entry it creates, and the flow's later packets (still
/// `ct state new` until the server first replies) by that.
const MARK_ACCEPT: &str = "meta mark & 0xffff == 0x5347 ct mark set meta mark counter accept
        ct mark & 0xffff == 0x5347 counter accept";

fn ruleset(mark_first: bool) -> String {
    format!(
        "flush ruleset
table inet sgfilter {{
    chain input {{
        type filter hook input priority 0; policy accept;
        {}
        {DROPPING_RULES}
    }}
}}",
        if mark_first { MARK_ACCEPT } else { "" }
    )
}

#[test]
fn netfilter_accepts_cookie_acks_by_the_handoff_mark() -> Result<()> {
    if !root_or_skip("netfilter_accepts_cookie_acks_by_the_handoff_mark") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let listener = netns::in_netns(&pair.a.netns, || {
        Ok(TcpListener::bind((pair.a.ipv4, PORT))?)
    })?;
    let _server = PongServer::start(listener)?;
    netns::nft(&pair.a.netns, &ruleset(false))?;
    let daemon = start(&pair, &[])?;

    let sg = pair.synguard(BIN, &pair.a);
    let check = sg.output(&["check", "--iface", &pair.a.iface])?;
    let report = String::from_utf8_lossy(&check.stdout);
    println!("{report}");
    assert!(
        report.contains("drops ct state new")
            && report.contains("meta mark & 0xffff == 0x5347 ct mark set meta mark accept"),
        "check did not name the rule: {report}"
    );

    let without = pings(&pair, 3)?;
    assert_eq!(
        without, 0,
        "the ruleset should drop cookie ACKs without the mark rule"
    );

    netns::nft(&pair.a.netns, &ruleset(true))?;
    let check = sg.output(&["check", "--iface", &pair.a.iface])?;
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!report.contains("drops ct state"), "{report}");
    let n = 10;
    let with = pings(&pair, n)?;
    let c = daemon.counters()?;
    let rules = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{}", pair.a.netns),
            "nft",
            "list",
            "ruleset",
        ])
        .output()?;
    println!("{}", String::from_utf8_lossy(&rules.stdout));
    println!(
        "without the mark rule 0/3, with it {with}/{n}; counters {:?}",
        c.nonzero()
    );
    assert_eq!(with, n);
    assert!(c.get(synguard_common::maps::Counter::ReqskAssigned) >= n as u64);
    daemon.stop()?;
    Ok(())
}

#[test]
fn check_fails_on_nf_conntrack_tcp_loose_0() -> Result<()> {
    if !root_or_skip("check_fails_on_nf_conntrack_tcp_loose_0") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    // A ct rule loads conntrack, which the sysctl belongs to.
    netns::nft(&pair.a.netns, &ruleset(true))?;
    netns::set_sysctl(&pair.a.netns, "net.netfilter.nf_conntrack_tcp_loose", "0")?;
    let out = pair.synguard(BIN, &pair.a).output(&["check"])?;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("FAIL  net.netfilter.nf_conntrack_tcp_loose")
            && report.contains("sysctl -w net.netfilter.nf_conntrack_tcp_loose=1"),
        "{report}"
    );
    Ok(())
}

/// A connect from b to a's PORT over IPv4; whether the handshake completed on b's side.
fn connect(pair: &VethPair) -> Result<bool> {
    netns::in_netns(&pair.b.netns, || {
        Ok(std::net::TcpStream::connect_timeout(
            &SocketAddr::from((pair.a.ipv4, PORT)),
            Duration::from_secs(2),
        )
        .is_ok())
    })
}

fn xdp_mode(pair: &VethPair) -> Result<String> {
    let out = pair
        .synguard(BIN, &pair.a)
        .ok(&["status", "--iface", &pair.a.iface, "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["xdp"]["mode"].as_str().unwrap_or("?").to_string())
}

/// Native XDP hands cookie ACKs to TC through the `HANDOFF` map, not the XDP metadata area,
/// so it needs no driver support for metadata (hv_netvsc has none): every handshake is
/// assigned, and TC takes every entry out again.
#[test]
fn native_xdp_hands_off_through_the_map_and_tc_takes_every_entry() -> Result<()> {
    if !root_or_skip("native_xdp_hands_off_through_the_map") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    // Native XDP_TX on a veth delivers only while the peer runs a native XDP program.
    synguard_harness::xdp::attach_pass(&pair.b.netns, &pair.b.iface)?;
    let _listener = listen(&pair)?;
    let daemon = pair.synguard(BIN, &pair.a).start(
        &pair.a.iface,
        &[
            "--ports",
            "8081",
            "--mode",
            "always",
            "--xdp-mode",
            "native",
            "--metrics",
            "off",
        ],
    )?;
    assert_eq!(xdp_mode(&pair)?, "native");
    let before = daemon.counters()?;
    for _ in 0..5 {
        assert!(connect(&pair)?);
    }
    let d = daemon.counters()?.delta(&before);
    assert_eq!(d.get(Counter::CookieSent), 5, "{d:?}");
    assert_eq!(d.get(Counter::ReqskAssigned), 5, "{d:?}");
    assert_eq!(d.get(Counter::TcAckNoHandoff), 0, "{d:?}");
    let path = pin_dir(&pair.a.iface).join(names::HANDOFF);
    let map = aya::maps::MapData::from_pin(&path)?;
    let left: aya::maps::HashMap<_, [u8; 48], [u8; 32]> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(map))?;
    assert_eq!(left.keys().count(), 0, "HANDOFF entries left behind");
    daemon.stop()?;
    Ok(())
}

/// Whether `iface` in `netns_name` strips VLAN tags on receive (`ethtool -k`'s
/// rx-vlan-offload), read from the kernel's own report.
fn rx_vlan_offload(netns_name: &str, iface: &str) -> Result<bool> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns_name, "ethtool", "-k", iface])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text.contains("rx-vlan-offload: on"))
}

/// A VLAN over a tag-stripping interface: the tag reaches XDP out of band (the NIC's
/// descriptor, the skb), so a SYN to the VLAN's address looks untagged, and a SYN+ACK made
/// from it in place would leave untagged. The daemon reads rx-vlan-offload at start, as
/// `ethtool -k` reports it, says what it does about it, and with stripping on leaves the
/// addresses of VLAN devices over the interface to the kernel. veth has the feature, and
/// `ethtool -K rxvlan` switches it. (This test kernel has no 802.1Q devices, so the VLAN
/// address rule itself is covered by iface's unit test of `is_vlan_over`.)
#[test]
fn vlan_tag_stripping_is_detected_as_ethtool_reports_it() -> Result<()> {
    if !root_or_skip("vlan_tag_stripping_is_detected_as_ethtool_reports_it") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let (ns, a) = (&pair.a.netns, &pair.a.iface);
    assert!(rx_vlan_offload(ns, a)?, "veth strips by default");
    let _listener = listen(&pair)?;
    let daemon = start(&pair, &[])?;
    let log = daemon.stop()?;
    assert!(
        log.contains("strips VLAN tags on receive (rx-vlan-offload on)")
            && log.contains("left to the kernel"),
        "{log}"
    );
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", a, "rxvlan", "off"])
        .status()?;
    assert!(st.success());
    assert!(!rx_vlan_offload(ns, a)?);
    let daemon = start(&pair, &[])?;
    // Untagged SYNs to the interface's own address are answered either way.
    assert!(connect(&pair)?);
    let log = daemon.stop()?;
    assert!(log.contains("does not strip VLAN tags"), "{log}");
    Ok(())
}

/// Metadata another program left in front of a frame is not synguard's, and TC never reads
/// the metadata area: it hands off only what XDP stored in `HANDOFF`. `sg_meta_forge` on b
/// writes metadata claiming to be synguard's hand-off for an ACK (right magic, seq, ack
/// and ports, in the layout synguard once used) and bounces the ACK back into a, whose
/// native synguard (auto, not engaged) passes the ACK, which has no valid cookie. Checked
/// against the code that trusted such metadata unless XDP cleared it (clearing disabled):
/// TC assigned the first forged ACK to the listener (reqsk_assigned 1: a connection from a
/// spoofed address; the other two then met its socket).
#[test]
fn foreign_metadata_is_never_read_and_tc_hands_nothing_off() -> Result<()> {
    if !root_or_skip("foreign_metadata_is_never_read_and_tc_hands_nothing_off") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    synguard_harness::xdp::attach_meta_forge(&pair.b.netns, &pair.b.iface)?;
    let listener = listen(&pair)?;
    listener.set_nonblocking(true)?;
    let daemon = pair.synguard(BIN, &pair.a).start(
        &pair.a.iface,
        &[
            "--ports",
            "8081",
            "--mode",
            "auto",
            "--xdp-mode",
            "native",
            "--metrics",
            "off",
        ],
    )?;
    let before = daemon.counters()?;
    let mut s = Seg::syn4();
    let [n0, n1, n2] = PAIR_V4_NET;
    s.src[..4].copy_from_slice(&[n0, n1, n2, 50]);
    s.dst[..4].copy_from_slice(&pair.a.ipv4.octets());
    s.dport = PORT;
    s.sport = 40001;
    s.seq = 0x1000_0001;
    s.ack = 0x2000_0001;
    s.flags = flags::ACK;
    s.options = Vec::new();
    let mut f = s.frame();
    f[..6].copy_from_slice(&pair.a.mac);
    f[6..12].copy_from_slice(&pair.b.mac);
    // Sent from a towards b, whose forge program sends it back into a.
    netns::in_netns(&pair.a.netns, || {
        let sock = RawSock::open(&pair.a.iface)?;
        for _ in 0..3 {
            sock.send(&f)?;
        }
        Ok(())
    })?;
    let mut d = daemon.counters()?.delta(&before);
    let deadline = Instant::now() + Duration::from_secs(2);
    while d.get(Counter::PacketsSeen) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        d = daemon.counters()?.delta(&before);
    }
    assert_eq!(d.get(Counter::AckPassedUnengaged), 3, "{d:?}");
    assert_eq!(d.get(Counter::TcAckNoHandoff), 3, "{d:?}");
    assert_eq!(d.get(Counter::ReqskAssigned), 0, "{d:?}");
    assert!(
        listener.accept().is_err(),
        "a forged ACK became a connection"
    );
    daemon.stop()?;
    Ok(())
}
