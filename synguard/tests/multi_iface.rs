//! One daemon serving two interfaces (issue 10): a SYN answered on one interface may have its
//! ACK come back on the other (asymmetric routing, bonding without a bond device, two
//! uplinks), and the ACK must still be handed off, because the interfaces share one key
//! ring and one MINTED. The control runs the old way, one daemon per interface with keys of
//! its own: the same ACK is then a forgery to the second interface, and dropped.
//!
//! The peer sends raw frames, so the SYN provably leaves on one link and the ACK on the
//! other; the server is a real listener, and a completed handshake is a socket `accept`
//! returns.

use std::{
    net::TcpListener,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use synguard_common::{
    flags,
    maps::{Counter, names},
    testutil::{Reply, Seg, read_reply},
};
use synguard_harness::{
    Counters, Daemon, RawSock, Signal, VethPair,
    fixture::PAIR_V4_NET,
    netns, pin_dir, root_or_skip,
    synguard::{test_run_args, wait_for},
};

#[path = "support/promtool.rs"]
mod promtool;

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");
/// The peer's source address: inside the pair's /24 but owned by nobody, so the peer's own
/// stack does not answer our SYN+ACK with a RST.
const CLIENT_HOST: u8 = 50;

/// The pair, plus a second veth link between the same two namespaces.
struct TwoLinks {
    pair: VethPair,
    /// The second link's end in the server namespace (`a`), and the peer's end.
    a2: String,
    b2: String,
    a2_mac: [u8; 6],
    b2_mac: [u8; 6],
}

impl TwoLinks {
    fn new() -> Result<TwoLinks> {
        let pair = VethPair::new()?;
        let (a2, b2) = (pair.link_name('m'), pair.link_name('n'));
        // Registered first, so a failure below still removes it and its pins.
        pair.register_link(&pair.a.netns, &a2)?;
        netns::ip(&[
            "-n",
            &pair.a.netns,
            "link",
            "add",
            &a2,
            "type",
            "veth",
            "peer",
            "name",
            &b2,
            "netns",
            &pair.b.netns,
        ])?;
        netns::ip(&["-n", &pair.a.netns, "link", "set", &a2, "up"])?;
        netns::ip(&["-n", &pair.b.netns, "link", "set", &b2, "up"])?;
        // The ACK arrives on a link that does not carry the route back: that is the point.
        for conf in ["all", "default", a2.as_str(), pair.a.iface.as_str()] {
            netns::set_sysctl(
                &pair.a.netns,
                &format!("net.ipv4.conf.{conf}.rp_filter"),
                "0",
            )?;
        }
        let a2_mac = netns::link_mac(&pair.a.netns, &a2)?;
        let b2_mac = netns::link_mac(&pair.b.netns, &b2)?;
        Ok(TwoLinks {
            pair,
            a2,
            b2,
            a2_mac,
            b2_mac,
        })
    }

    fn listener(&self) -> Result<TcpListener> {
        let l = netns::in_netns(&self.pair.a.netns, || {
            Ok(TcpListener::bind((self.pair.a.ipv4, PORT))?)
        })?;
        l.set_nonblocking(true)?;
        Ok(l)
    }

    /// A SYN on the first link, its SYN+ACK read back there, and the ACK sent on the second
    /// link. Returns the client port.
    fn split_handshake(&self, sport: u16) -> Result<u16> {
        let (syn, r) = self.syn_on_first_link(sport, 0x1357_9bdf)?;
        self.ack_on_second_link(&syn, &r)?;
        Ok(sport)
    }

    /// A SYN from the client's `sport` on the first link, and the SYN+ACK read back there.
    fn syn_on_first_link(&self, sport: u16, seq: u32) -> Result<(Seg, Reply)> {
        let p = &self.pair;
        let [n0, n1, n2] = PAIR_V4_NET;
        let mut s = Seg::syn4();
        s.src[..4].copy_from_slice(&[n0, n1, n2, CLIENT_HOST]);
        s.dst[..4].copy_from_slice(&p.a.ipv4.octets());
        s.sport = sport;
        s.dport = PORT;
        s.seq = seq;
        s.flags = flags::SYN;
        // MSS only: no timestamps, so the ACK needs no TSecr.
        s.options = vec![2, 4, 0x05, 0xb4];
        let mut syn = s.frame();
        syn[..6].copy_from_slice(&p.a.mac);
        syn[6..12].copy_from_slice(&p.b.mac);
        let synack = netns::in_netns(&p.b.netns, || {
            let sock = RawSock::open(&p.b.iface)?;
            sock.send(&syn)?;
            sock.recv_matching(Duration::from_secs(3), |f| {
                f.len() >= 54
                    && f[12..14] == [0x08, 0x00]
                    && f[47] == flags::SYN | flags::ACK
                    && u16::from_be_bytes([f[36], f[37]]) == sport
            })
        })?
        .context("no SYN+ACK on the first link")?;
        let r = read_reply(&synack);
        if r.ack != s.seq.wrapping_add(1) {
            bail!("SYN+ACK acknowledges {:#x}, not our SYN", r.ack);
        }
        Ok((s, r))
    }

    /// The ACK of `syn`'s SYN+ACK `r`, sent on the second link.
    fn ack_on_second_link(&self, syn: &Seg, r: &Reply) -> Result<()> {
        let mut ack = syn.clone();
        ack.flags = flags::ACK;
        ack.seq = syn.seq.wrapping_add(1);
        ack.ack = r.seq.wrapping_add(1);
        ack.options = vec![];
        let mut frame = ack.frame();
        frame[..6].copy_from_slice(&self.a2_mac);
        frame[6..12].copy_from_slice(&self.b2_mac);
        netns::in_netns(&self.pair.b.netns, || RawSock::open(&self.b2)?.send(&frame))
    }
}

/// Waits up to 3 s for a connection from the client's port.
fn accepted(l: &TcpListener, sport: u16) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match l.accept() {
            Ok((_, peer)) if peer.port() == sport => return Ok(true),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

fn wait_pins(iface: &str) -> Result<()> {
    let dir = pin_dir(iface);
    wait_for(
        &format!("{iface}'s link pins"),
        Duration::from_secs(30),
        || Ok(dir.join(names::XDP_LINK).exists() && dir.join(names::TC_LINK).exists()),
    )
}

fn same_map(a: &Path, b: &Path) -> Result<bool> {
    use aya::maps::MapData;
    Ok(MapData::from_pin(a)?.info()?.id() == MapData::from_pin(b)?.info()?.id())
}

#[test]
fn one_daemon_hands_off_an_ack_that_arrives_on_its_other_interface() -> Result<()> {
    if !root_or_skip("one_daemon_two_interfaces") {
        return Ok(());
    }
    let t = TwoLinks::new()?;
    let l = t.listener()?;
    let ports = PORT.to_string();
    netns::ip(&["-n", &t.pair.a.netns, "link", "set", "lo", "up"])?;
    let args = [
        "--ports",
        &ports,
        "--mode",
        "always",
        "--xdp-mode",
        "generic",
        "--metrics",
        "127.0.0.1:9531",
        "--iface",
        &t.a2,
    ];
    let daemon: Daemon = t
        .pair
        .synguard(BIN, &t.pair.a)
        .start(&t.pair.a.iface, &args)?;
    wait_pins(&t.a2)?;
    // `status` without --iface shows every instance, these two with one key ring.
    let out = t.pair.synguard(BIN, &t.pair.a).ok(&["status", "--json"])?;
    let all: serde_json::Value = serde_json::from_str(&out)?;
    let mine: Vec<&serde_json::Value> = all
        .as_array()
        .context("status --json without --iface is an array")?
        .iter()
        .filter(|s| s["iface"] == t.pair.a.iface.as_str() || s["iface"] == t.a2.as_str())
        .collect();
    assert_eq!(mine.len(), 2, "{out}");
    assert!(mine.iter().all(|s| s["attached"] == true), "{out}");
    assert_eq!(mine[0]["key_epoch"], mine[1]["key_epoch"], "{out}");
    // The second interface holds the same keys and MINTED, and its own counters.
    let (d1, d2) = (pin_dir(&t.pair.a.iface), pin_dir(&t.a2));
    for shared in [
        names::KEYS,
        names::MINTED,
        names::STATE,
        names::CONFIG,
        names::DENY4,
    ] {
        assert!(
            same_map(&d1.join(shared), &d2.join(shared))?,
            "{shared} not shared"
        );
    }
    assert!(!same_map(
        &d1.join(names::COUNTERS),
        &d2.join(names::COUNTERS)
    )?);

    let (c1, c2) = (Counters::read(&t.pair.a.iface)?, Counters::read(&t.a2)?);
    let mut failed = Vec::new();
    for i in 0..5u16 {
        let sport = t.split_handshake(41000 + i)?;
        if !accepted(&l, sport)? {
            failed.push(sport);
        }
    }
    let (d1, d2) = (
        Counters::read(&t.pair.a.iface)?.delta(&c1),
        Counters::read(&t.a2)?.delta(&c2),
    );
    let scrape = netns::in_netns(&t.pair.a.netns, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9531")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })?;
    let log = daemon.stop()?;
    let body = scrape.split_once("\r\n\r\n").context("no HTTP body")?.1;
    promtool::promtool_check_metrics(body);
    // One exposition, each family once, a label set per interface.
    for i in [&t.pair.a.iface, &t.a2] {
        assert!(
            body.contains(&format!(
                "synguard_xdp_attached{{iface=\"{i}\",mode=\"generic\"}} 1"
            )),
            "{i} missing:\n{body}"
        );
    }
    assert!(
        body.contains(&format!(
            "synguard_handoffs_total{{iface=\"{}\",outcome=\"reqsk_assigned\"}} 5",
            t.a2
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "synguard_verdicts_total{{iface=\"{}\",reason=\"cookie_sent\",action=\"tx\"}} 5",
            t.pair.a.iface
        )),
        "{body}"
    );
    assert!(
        failed.is_empty(),
        "handshakes from ports {failed:?} did not complete; first link {:?}, second {:?}\n{log}",
        d1.nonzero(),
        d2.nonzero()
    );
    assert_eq!(d1.get(Counter::CookieSent), 5, "{:?}", d1.nonzero());
    assert_eq!(d2.get(Counter::CookieAckValid), 5, "{:?}", d2.nonzero());
    assert_eq!(d2.get(Counter::ReqskAssigned), 5, "{:?}", d2.nonzero());
    // SIGTERM detached both.
    assert!(!pin_dir(&t.pair.a.iface).exists() && !pin_dir(&t.a2).exists());
    Ok(())
}

/// The control, and what the old code could do at best: a daemon per interface. The ACK is
/// a forgery to the second one (another key ring), so no handshake completes: the test
/// above can tell the two setups apart.
#[test]
fn separate_daemons_per_interface_drop_the_ack_from_the_other_link() -> Result<()> {
    if !root_or_skip("separate_daemons_two_interfaces") {
        return Ok(());
    }
    let t = TwoLinks::new()?;
    let l = t.listener()?;
    let ports = PORT.to_string();
    let args = test_run_args("always", &ports, &[]);
    let first = t
        .pair
        .synguard(BIN, &t.pair.a)
        .start(&t.pair.a.iface, &args)?;
    let second = t.pair.synguard(BIN, &t.pair.a).start(&t.a2, &args)?;
    let c2 = Counters::read(&t.a2)?;
    let sport = t.split_handshake(42000)?;
    let completed = accepted(&l, sport)?;
    let d2 = Counters::read(&t.a2)?.delta(&c2);
    second.stop()?;
    first.stop()?;
    assert!(!completed, "the ACK completed with separate key rings");
    assert_eq!(d2.get(Counter::CookieAckInvalid), 1, "{:?}", d2.nonzero());
    assert_eq!(d2.get(Counter::ReqskAssigned), 0);
    Ok(())
}

/// A config reload adds and removes the second interface live; the first keeps running.
#[test]
fn reload_adds_and_removes_an_interface() -> Result<()> {
    if !root_or_skip("reload_adds_and_removes_an_interface") {
        return Ok(());
    }
    let t = TwoLinks::new()?;
    let l = t.listener()?;
    let cfg = t.pair.temp_path("multi.toml")?;
    let write = |ifaces: &[&str]| -> Result<()> {
        let list: Vec<String> = ifaces.iter().map(|i| format!("{i:?}")).collect();
        std::fs::write(
            &cfg,
            format!(
                "interfaces = [{}]\nports = [{PORT}]\nmode = \"always\"\nxdp_mode = \"generic\"\nmetrics = \"off\"\n",
                list.join(", ")
            ),
        )?;
        Ok(())
    };
    write(&[&t.pair.a.iface])?;
    let cfg_s = cfg.to_string_lossy().into_owned();
    let mut daemon = t
        .pair
        .synguard(BIN, &t.pair.a)
        .spawn(&t.pair.a.iface, &["--config", &cfg_s])?;
    daemon.wait_attached(Duration::from_secs(30))?;
    assert!(!pin_dir(&t.a2).exists());

    write(&[&t.pair.a.iface, &t.a2])?;
    daemon.signal(Signal::SIGHUP);
    wait_pins(&t.a2).with_context(|| daemon.log())?;
    let sport = t.split_handshake(43000)?;
    assert!(
        accepted(&l, sport)?,
        "no handoff on the added interface\n{}",
        daemon.log()
    );

    write(&[&t.pair.a.iface])?;
    daemon.signal(Signal::SIGHUP);
    wait_for(
        "the removed interface's pins to go",
        Duration::from_secs(10),
        || Ok(!pin_dir(&t.a2).exists()),
    )?;
    assert!(
        synguard_harness::xdp::attached_prog_id(&t.pair.a.netns, &t.a2)?.is_none(),
        "XDP still attached to the removed interface"
    );
    // A bad interface name in a reload changes nothing: the first interface keeps going.
    write(&[&t.pair.a.iface, "sgnosuchif0"])?;
    daemon.signal(Signal::SIGHUP);
    thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.try_wait()?.is_none(),
        "the daemon died on a bad reload"
    );
    assert!(pin_dir(&t.pair.a.iface).join(names::XDP_LINK).exists());
    let log = daemon.stop()?;
    assert!(log.contains("sgnosuchif0"), "{log}");
    assert!(log.contains("reload refused"), "{log}");
    Ok(())
}

/// SIGUSR2 leaves both interfaces attached; the next daemon takes both over with the same
/// keys, so a SYN answered before the restart completes on the other interface after it.
#[test]
fn a_handover_restart_takes_over_every_interface() -> Result<()> {
    if !root_or_skip("a_handover_restart_takes_over_every_interface") {
        return Ok(());
    }
    let t = TwoLinks::new()?;
    let l = t.listener()?;
    let ports = PORT.to_string();
    let args = test_run_args("always", &ports, &["--iface", &t.a2]);
    let sg = t.pair.synguard(BIN, &t.pair.a);
    let mut first = sg.start(&t.pair.a.iface, &args)?;
    wait_pins(&t.a2)?;
    // A SYN answered by the first daemon, on the first link ...
    let (syn, synack) = t.syn_on_first_link(44000, 0x2468_ace0)?;
    first.signal(Signal::SIGUSR2);
    let status = first.wait_exit(Duration::from_secs(10))?;
    assert!(status.success(), "{}", first.log());
    for i in [&t.pair.a.iface, &t.a2] {
        assert!(
            pin_dir(i).join(names::XDP_LINK).exists(),
            "{i} lost its link"
        );
    }
    let second = sg.start(&t.pair.a.iface, &args)?;
    wait_for(
        "the second daemon to take over",
        Duration::from_secs(10),
        || Ok(second.log().matches("took over the pinned links").count() == 2),
    )?;
    // ... and its ACK, after the restart, on the second link.
    t.ack_on_second_link(&syn, &synack)?;
    let ok = accepted(&l, 44000)?;
    let log = second.stop()?;
    assert!(ok, "the ACK after the restart was not handed off\n{log}");
    Ok(())
}
