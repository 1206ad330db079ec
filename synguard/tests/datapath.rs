//! Live data-path tests: real kernel clients and a real server on veth, synguard's XDP and
//! TC programs in between, and the counters, sockets and packets that result.
//!
//! Every test builds its own namespaces (per-run names) and tears them down on drop, even
//! when an assertion fails. They need root; without it they fail under CI and skip
//! otherwise.

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData};
use synguard_common::{
    flags::{self, FlagVerdict},
    maps::{Config, Counter, names},
    testutil::{Seg, linux_syn_options, read_reply},
};
use synguard_harness::synguard::test_run_args;
use synguard_harness::synguard::{engaged, wait_for};
use synguard_harness::{
    ClientOptions, Counters, Daemon, Family, FloodKind, FloodOptions, RawSock, Role, Synguard,
    Topology, TopologyOptions, VethPair, exclusive_cores, fixture::PAIR_V4_NET, flood, netns,
    pin_dir, pin_thread_to_cpu, root_or_skip,
};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// A topology with a server on PORT and synguard attached to the server's veth.
struct Fixture {
    daemon: Option<Daemon>,
    topo: Topology,
}

impl Fixture {
    fn start(mode: &str, ports: &str) -> Result<Fixture> {
        Self::start_with(mode, ports, &[])
    }

    fn start_with(mode: &str, ports: &str, extra: &[&str]) -> Result<Fixture> {
        let topo = Topology::new(TopologyOptions {
            server_rps: false,
            ..Default::default()
        })?;
        let daemon = Synguard::new(BIN, &topo.srv.netns)
            .owned_by(topo.id())
            .start(topo.server_iface(), &test_run_args(mode, ports, extra))?;
        Ok(Fixture {
            daemon: Some(daemon),
            topo,
        })
    }

    fn counters(&self) -> Result<Counters> {
        Counters::read(self.topo.server_iface())
    }
}

/// An nftables rule in `ns` counting SYNs to PORT that reach the IP input path, i.e. that
/// got past XDP to the kernel's listener.
fn install_syn_counter(ns: &str) -> Result<()> {
    let rules = format!(
        "table inet sgtest {{\n chain input {{\n type filter hook input priority -300;\n \
         tcp dport {PORT} tcp flags & (syn | ack) == syn counter\n }}\n}}\n"
    );
    netns::nft(ns, &rules)
}

fn syns_reaching_kernel(ns: &str) -> Result<u64> {
    let out = netns::command(ns, "nft")
        .args(["list", "table", "inet", "sgtest"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .split("counter packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no counter in nft output")?;
    Ok(n.parse()?)
}

#[test]
fn kernel_clients_complete_handshakes_through_xdp_cookies_v4_and_v6() -> Result<()> {
    if !root_or_skip("kernel_clients_complete_handshakes") {
        return Ok(());
    }
    let fx = Fixture::start("always", &PORT.to_string())?;
    let server = fx.topo.start_server(PORT)?;
    install_syn_counter(&fx.topo.srv.netns)?;
    let before = fx.counters()?;

    const N: usize = 25;
    for family in [Family::V4, Family::V6] {
        let mut opts = ClientOptions::new(fx.topo.server_addr(family, PORT), N);
        opts.request_bytes = 64 * 1024;
        opts.response_bytes = 256 * 1024;
        let report = fx.topo.run_clients(&opts)?;
        assert_eq!(report.ok(), N, "{family:?}: failures {:?}", report.errors());
    }

    let d = fx.counters()?.delta(&before);
    let total = 2 * N as u64;
    // Every handshake was answered by XDP and handed over by TC, none by the kernel.
    assert_eq!(d.get(Counter::CookieSent), total, "{d:?}");
    assert_eq!(d.get(Counter::CookieAckValid), total, "{d:?}");
    assert_eq!(d.get(Counter::ReqskAssigned), total, "{d:?}");
    for absent in [
        Counter::SynPassed,
        Counter::ReqskFailed,
        Counter::CookieAckInvalid,
        Counter::Malformed,
        // TC found XDP's HANDOFF entry for each ACK.
        Counter::TcAckNoHandoff,
    ] {
        assert_eq!(d.get(absent), 0, "{} moved: {d:?}", absent.name());
    }
    assert!(
        d.get(Counter::EstablishedPass) > total,
        "data segments: {d:?}"
    );
    assert_eq!(
        syns_reaching_kernel(&fx.topo.srv.netns)?,
        0,
        "a SYN reached the listener"
    );
    let st = server.stop();
    assert_eq!(st.accepted, total);
    assert_eq!(st.served, total, "{st:?}");
    Ok(())
}

/// Opens a connection from cli and keeps it open while `f` inspects the server side.
fn with_open_connection<T>(
    fx: &Fixture,
    family: Family,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let addr = fx.topo.server_addr(family, PORT);
    let stream: TcpStream = netns::in_netns(&fx.topo.cli.netns, || {
        Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?)
    })?;
    // Half a request: the server keeps reading, so the connection stays established.
    (&stream).write_all(b"hello")?;
    thread::sleep(Duration::from_millis(200));
    let r = f();
    drop(stream);
    r
}

/// `ss -tino` on the server (iproute2 6.1 lists `ts sack` only with -o) for established connections on PORT.
fn server_ss(fx: &Fixture) -> Result<String> {
    let out = fx.topo.output(
        Role::Srv,
        "ss",
        &[
            "-tinoH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{PORT}"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn negotiated_options_survive_the_cookie_with_and_without_timestamps() -> Result<()> {
    if !root_or_skip("negotiated_options_survive") {
        return Ok(());
    }
    let fx = Fixture::start("always", &PORT.to_string())?;
    let _server = fx.topo.start_server(PORT)?;

    for family in [Family::V4, Family::V6] {
        let ss = with_open_connection(&fx, family, || server_ss(&fx))?;
        println!("{family:?} with timestamps, server ss -ti:\n{ss}");
        assert!(ss.contains("wscale:"), "no window scaling: {ss}");
        assert!(ss.contains(" sack"), "no SACK: {ss}");
        assert!(ss.contains(" ts "), "no timestamps: {ss}");
    }

    // Linux's own cookies (and the selftests') lose wscale and SACK when the client sends
    // no timestamps; ours carry them in the ISN.
    fx.topo
        .set_sysctl(Role::Cli, "net.ipv4.tcp_timestamps", "0")?;
    for family in [Family::V4, Family::V6] {
        let ss = with_open_connection(&fx, family, || server_ss(&fx))?;
        println!("{family:?} without timestamps, server ss -ti:\n{ss}");
        assert!(ss.contains("wscale:"), "window scaling lost: {ss}");
        assert!(ss.contains(" sack"), "SACK lost: {ss}");
        assert!(!ss.contains(" ts "), "timestamps appeared: {ss}");
    }
    let c = fx.counters()?;
    assert_eq!(c.get(Counter::ReqskAssigned), 4);
    assert_eq!(c.get(Counter::SynPassed), 0);
    Ok(())
}

/// A client SYN from b to a's PORT, with Linux's usual options.
fn syn_frame(p: &VethPair, vlan: Option<u16>, flags: u8, seq: u32) -> Vec<u8> {
    syn_frame_from(p, 50, vlan, flags, seq)
}

/// As [`syn_frame`], from host `src` of the pair's /24: an address b does not own, so b's
/// stack ignores our SYN+ACK instead of answering it with a RST (which synguard would count),
/// while the raw socket still sees it.
fn syn_frame_from(p: &VethPair, src: u8, vlan: Option<u16>, flags: u8, seq: u32) -> Vec<u8> {
    let mut s = Seg::syn4();
    s.vlan = vlan;
    let [n0, n1, n2] = PAIR_V4_NET;
    s.src[..4].copy_from_slice(&[n0, n1, n2, src]);
    s.dst[..4].copy_from_slice(&p.a.ipv4.octets());
    s.dport = PORT;
    s.sport = 40000 + (seq % 20000) as u16;
    s.seq = seq;
    s.flags = flags;
    s.options = linux_syn_options(0x1234_5678);
    let mut f = s.frame();
    f[..6].copy_from_slice(&p.a.mac);
    f[6..12].copy_from_slice(&p.b.mac);
    f
}

/// synguard on the pair's `a` end, protecting PORT, and a listener on a's PORT that never
/// accepts: synguard answers a SYN only when a plain-TCP listener holds its port.
fn start_on_pair(pair: &VethPair, extra: &[&str]) -> Result<(Daemon, TcpListener)> {
    let listener = netns::in_netns(&pair.a.netns, || {
        Ok(TcpListener::bind((pair.a.ipv4, PORT))?)
    })?;
    let ports = PORT.to_string();
    let daemon = pair
        .synguard(BIN, &pair.a)
        .start(&pair.a.iface, &test_run_args("always", &ports, extra))?;
    Ok((daemon, listener))
}

#[test]
fn vlan_tagged_syn_gets_a_syn_ack_with_the_same_tag() -> Result<()> {
    if !root_or_skip("vlan_tagged_syn") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let (daemon, _listener) = start_on_pair(&pair, &[])?;
    let syn = syn_frame(&pair, Some(0x2064), flags::SYN, 0xdead_beef);
    let reply = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        sock.send(&syn)?;
        sock.recv_matching(Duration::from_secs(2), |f| {
            f.len() > 60 && f[12..14] == [0x81, 0x00]
        })
    })?;
    daemon.stop()?;
    let reply = reply.context("no tagged reply to a tagged SYN")?;
    let r = read_reply(&reply);
    assert_eq!(r.vlan, Some(0x2064), "tag changed");
    assert_eq!(r.flags, flags::SYN | flags::ACK);
    assert_eq!(r.ack, 0xdead_beef_u32.wrapping_add(1));
    assert_eq!(r.dst_mac, pair.b.mac);
    assert_eq!(r.src, pair.a.ipv4.octets());
    let [n0, n1, n2] = PAIR_V4_NET;
    assert_eq!(r.dst, [n0, n1, n2, 50]);
    assert_ne!(r.window, 0);
    // read_reply verifies the IPv4 and TCP checksums by recomputation.
    Ok(())
}

/// The counter the flag table says a segment with `f` must move, when no socket exists.
fn expected_counter(f: u8) -> Counter {
    match flags::verdict(f) {
        FlagVerdict::Invalid(r) => r.counter(),
        FlagVerdict::Syn => Counter::CookieSent,
        FlagVerdict::Ack => Counter::CookieAckInvalid,
        FlagVerdict::Rst | FlagVerdict::SynAck => Counter::NoSocketDrop,
    }
}

#[test]
fn all_256_flag_combinations_get_their_table_verdict_on_a_live_veth() -> Result<()> {
    if !root_or_skip("all_256_flag_combinations") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let (daemon, _listener) = start_on_pair(&pair, &[])?;
    let a_if = pair.a.iface.clone();
    let frames: Vec<Vec<u8>> = (0..=255u8)
        .map(|f| syn_frame(&pair, None, f, 1000 + u32::from(f)))
        .collect();
    let result = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        let mut wrong = Vec::new();
        for (f, frame) in frames.iter().enumerate() {
            let f = f as u8;
            let before = Counters::read(&a_if)?;
            sock.send(frame)?;
            let want = expected_counter(f);
            let deadline = Instant::now() + Duration::from_secs(2);
            let delta = loop {
                let d = Counters::read(&a_if)?.delta(&before);
                if d.get(want) != 0 || Instant::now() > deadline {
                    break d;
                }
                thread::sleep(Duration::from_millis(2));
            };
            let verdict_counters: Vec<_> = delta
                .nonzero()
                .into_iter()
                .filter(|(c, _)| ![Counter::PacketsSeen, Counter::SynSeen].contains(c))
                .collect();
            if verdict_counters != [(want, 1)] {
                wrong.push(format!(
                    "flags {f:#04x}: want {} +1, got {delta:?}",
                    want.name()
                ));
            }
            if want == Counter::CookieSent {
                let syn_ack = sock.recv_matching(Duration::from_secs(1), |r| {
                    let syn_ack = flags::SYN | flags::ACK;
                    // ECN-setup SYNs are answered with ECE as well.
                    r.len() >= 54 && r[47] & (syn_ack | flags::RST) == syn_ack
                })?;
                if syn_ack.is_none() {
                    wrong.push(format!(
                        "flags {f:#04x}: SYN class but no SYN+ACK came back"
                    ));
                }
            }
        }
        Ok(wrong)
    })?;
    daemon.stop()?;
    assert!(
        result.is_empty(),
        "{} combinations misjudged:\n{}",
        result.len(),
        result.join("\n")
    );
    Ok(())
}

/// Linux processes any RST-bearing segment as an RST for the flow's own socket, whatever
/// PSH, URG, SYN or FIN say: each such flag byte, sent on the 4-tuple of an established
/// connection (through our cookie), must reach the kernel, not be dropped.
#[test]
fn rst_bearing_flags_reach_an_established_socket_on_a_live_veth() -> Result<()> {
    if !root_or_skip("rst_bearing_flags_reach_an_established_socket") {
        return Ok(());
    }
    use flags::{ACK, FIN, PSH, RST, SYN, URG};
    let pair = VethPair::new()?;
    let (daemon, _listener) = start_on_pair(&pair, &[])?;
    let a_if = pair.a.iface.clone();
    let cases = [
        RST | PSH,
        RST | URG,
        RST | PSH | URG,
        FIN | RST,
        FIN | RST | ACK,
        SYN | RST,
        SYN | FIN | RST | PSH | ACK | URG,
    ];
    let wrong = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        let mut wrong = Vec::new();
        for f in cases {
            // A connection per case: the RST may end it.
            let stream =
                TcpStream::connect_timeout(&(pair.a.ipv4, PORT).into(), Duration::from_secs(5))?;
            let local = stream.local_addr()?;
            thread::sleep(Duration::from_millis(50));
            let mut s = Seg::syn4();
            s.src[..4].copy_from_slice(&pair.b.ipv4.octets());
            s.dst[..4].copy_from_slice(&pair.a.ipv4.octets());
            s.sport = local.port();
            s.dport = PORT;
            s.flags = f;
            s.seq = 0x4000_0000;
            s.options = vec![];
            let mut frame = s.frame();
            frame[..6].copy_from_slice(&pair.a.mac);
            frame[6..12].copy_from_slice(&pair.b.mac);
            let before = Counters::read(&a_if)?;
            sock.send(&frame)?;
            let deadline = Instant::now() + Duration::from_secs(2);
            let delta = loop {
                let d = Counters::read(&a_if)?.delta(&before);
                if d.get(Counter::EstablishedPass) != 0 || Instant::now() > deadline {
                    break d;
                }
                thread::sleep(Duration::from_millis(2));
            };
            let dropped: Vec<_> = delta
                .nonzero()
                .into_iter()
                .filter(|(c, _)| c.name().starts_with("flag_") || *c == Counter::NoSocketDrop)
                .collect();
            if delta.get(Counter::EstablishedPass) == 0 || !dropped.is_empty() {
                wrong.push(format!("flags {f:#04x}: got {delta:?}"));
            }
            drop(stream);
        }
        Ok(wrong)
    })?;
    daemon.stop()?;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

#[test]
fn forged_acks_create_no_sockets() -> Result<()> {
    if !root_or_skip("forged_acks_create_no_sockets") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let fx = Fixture::start("always", &PORT.to_string())?;
    let server = fx.topo.start_server(PORT)?;
    let before = fx.counters()?;
    let mut opts = FloodOptions::new(FloodKind::Ack, Family::V4, PORT, Duration::from_secs(60));
    // 10^7 forged ACKs. Nothing here mints a cookie, so no key slot accepts any (MINTED);
    // were both slots minted with, two keys of 27 MAC bits would let 2 * 10^7 / 2^27 = 0.15
    // pass by chance on average, and P(more than 10) is below 10^-14.
    opts.count = Some(10_000_000);
    let report = flood::run(&fx.topo, &opts)?;
    let d = fx.counters()?.delta(&before);
    println!("forged ACK flood: {report:?}\ncounter deltas: {d:?}");
    let invalid = d.get(Counter::CookieAckInvalid);
    let valid = d.get(Counter::CookieAckValid);
    assert!(invalid > 1_000_000, "the flood barely arrived: {d:?}");
    assert!(valid <= 10, "{valid} forged ACKs passed the cookie check");
    assert!(d.get(Counter::ReqskAssigned) <= valid);
    let st = server.stop();
    assert!(st.accepted <= valid, "{st:?}");
    Ok(())
}

/// The bulk stream repeats this many bytes: a prime, so chunk boundaries never line up
/// with it and a lost or repeated segment shows up as a mismatch.
const PATTERN_LEN: usize = 65_521;

/// Two periods of the pattern, so any window of up to one period is a plain slice.
fn pattern() -> Vec<u8> {
    (0..2 * PATTERN_LEN as u64)
        .map(|i| ((i % PATTERN_LEN as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Writes `total` bytes of the pattern.
fn send_pattern(s: &mut TcpStream, pat: &[u8], total: u64) -> Result<()> {
    let mut sent = 0u64;
    while sent < total {
        let at = (sent % PATTERN_LEN as u64) as usize;
        let n = (PATTERN_LEN as u64).min(total - sent) as usize;
        s.write_all(&pat[at..at + n])?;
        sent += n as u64;
    }
    Ok(())
}

/// Reads to EOF, checking every byte against the pattern; returns the count.
fn recv_pattern(s: &mut TcpStream, pat: &[u8]) -> Result<u64> {
    let (mut got, mut buf) = (0u64, vec![0u8; PATTERN_LEN]);
    loop {
        let n = std::io::Read::read(s, &mut buf)?;
        if n == 0 {
            return Ok(got);
        }
        let at = (got % PATTERN_LEN as u64) as usize;
        if buf[..n] != pat[at..at + n] {
            bail!("stream corrupted within bytes {got}..{}", got + n as u64);
        }
        got += n as u64;
    }
}

/// One connection from cli to srv moving `total` bytes each way; returns the seconds taken.
fn bulk_round_trip(topo: &Topology, total: u64) -> Result<f64> {
    let addr = topo.server_addr(Family::V4, PORT + 1);
    let listener = netns::in_netns(&topo.srv.netns, || Ok(std::net::TcpListener::bind(addr)?))?;
    let server = thread::spawn(move || -> Result<u64> {
        let pat = pattern();
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let got = recv_pattern(&mut s, &pat)?;
        send_pattern(&mut s, &pat, total)?;
        Ok(got)
    });
    let t = Instant::now();
    let downloaded = netns::in_netns(&topo.cli.netns, || {
        let pat = pattern();
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        send_pattern(&mut c, &pat, total)?;
        c.shutdown(std::net::Shutdown::Write)?;
        recv_pattern(&mut c, &pat)
    });
    let secs = t.elapsed().as_secs_f64();
    // The server's error, if any, says more than the client's reset.
    let uploaded = server
        .join()
        .expect("server thread")
        .context("server side")?;
    let downloaded = downloaded.context("client side")?;
    assert_eq!((uploaded, downloaded), (total, total));
    Ok(secs)
}

#[test]
fn bulk_transfer_over_an_established_flow_is_unaffected() -> Result<()> {
    if !root_or_skip("bulk_transfer") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    const BYTES: u64 = 512 << 20;
    let mut fx = Fixture::start("always", &format!("{PORT},{}", PORT + 1))?;
    let with = bulk_round_trip(&fx.topo, BYTES)
        .with_context(|| format!("through synguard; counters {:?}", fx.counters()))?;
    let c = fx.counters()?;
    // The handshake went through the cookie path; every later segment was a known flow.
    assert_eq!(c.get(Counter::ReqskAssigned), 1, "{c:?}");
    assert!(c.get(Counter::EstablishedPass) > 10_000, "{c:?}");
    for bad in [
        Counter::CookieAckInvalid,
        Counter::Malformed,
        Counter::NoSocketDrop,
    ] {
        assert_eq!(c.get(bad), 0, "{}: {c:?}", bad.name());
    }
    fx.daemon.take().expect("daemon").stop()?;
    let without = bulk_round_trip(&fx.topo, BYTES)?;
    println!(
        "bulk, {} MiB each way: {with:.2} s through synguard, {without:.2} s without ({:.0} vs {:.0} MiB/s)",
        BYTES >> 20,
        2.0 * (BYTES >> 20) as f64 / with,
        2.0 * (BYTES >> 20) as f64 / without
    );
    Ok(())
}

#[test]
fn auto_mode_engages_under_a_flood_and_handshakes_complete_throughout() -> Result<()> {
    if !root_or_skip("auto_mode_engages") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let fx = Fixture::start_with(
        "auto",
        &PORT.to_string(),
        &["--syn-rate-on", "2000", "--syn-rate-off", "500"],
    )?;
    let _server = fx.topo.start_server(PORT)?;
    let iface = fx.topo.server_iface().to_string();
    let clients = |n| -> Result<()> {
        let report = fx.topo.run_clients(&ClientOptions::new(
            fx.topo.server_addr(Family::V4, PORT),
            n,
        ))?;
        assert_eq!(report.ok(), n, "{:?}", report.errors());
        Ok(())
    };

    // Below the trigger the kernel answers: handshakes complete, no cookie is sent.
    clients(20)?;
    let quiet = fx.counters()?;
    assert!(!engaged(&iface)?);
    assert_eq!(quiet.get(Counter::CookieSent), 0, "{quiet:?}");
    assert!(quiet.get(Counter::SynPassed) >= 20, "{quiet:?}");

    // A spoofed flood far above syn_rate_on engages cookies; legit clients still connect,
    // now through them.
    // At full rate: trafgen's paced mode stalls when the cores are busy with other tests.
    let opts = FloodOptions::new(FloodKind::Syn, Family::V4, PORT, Duration::from_secs(30));
    let flood = flood::start(&fx.topo, &opts)?;
    let arriving = quiet.get(Counter::SynSeen) + 10_000;
    wait_for("the flood to arrive", Duration::from_secs(10), || {
        Ok(fx.counters()?.get(Counter::SynSeen) > arriving)
    })?;
    wait_for("auto mode to engage", Duration::from_secs(5), || {
        engaged(&iface)
    })?;
    let before = fx.counters()?;
    clients(20)?;
    // At least half a second of flood in the window, whatever the clients took.
    thread::sleep(Duration::from_millis(500));
    let during = fx.counters()?.delta(&before);
    let report = flood.stop()?;
    println!("flood while engaged: {report:?}\ncounter deltas: {during:?}");
    // Far more cookies than the 20 clients account for: the flood's SYNs are answered too.
    assert!(during.get(Counter::CookieSent) > 200, "{during:?}");
    assert_eq!(during.get(Counter::SynPassed), 0, "{during:?}");
    assert!(during.get(Counter::CookieAckValid) >= 20, "{during:?}");
    assert!(during.get(Counter::ReqskAssigned) >= 20, "{during:?}");

    // After the flood, the hysteresis lets go and the kernel answers again.
    wait_for("auto mode to disengage", Duration::from_secs(10), || {
        Ok(!engaged(&iface)?)
    })?;
    let before = fx.counters()?;
    clients(20)?;
    let after = fx.counters()?.delta(&before);
    assert_eq!(after.get(Counter::CookieSent), 0, "{after:?}");
    assert!(after.get(Counter::SynPassed) >= 20, "{after:?}");
    Ok(())
}

#[test]
fn deny_and_allow_lists_apply_on_the_live_path() -> Result<()> {
    if !root_or_skip("deny_and_allow_lists_apply") {
        return Ok(());
    }
    let fx = Fixture::start("always", &PORT.to_string())?;
    let _server = fx.topo.start_server(PORT)?;
    let iface = fx.topo.server_iface().to_string();
    let sg = Synguard::new(BIN, &fx.topo.srv.netns);
    let synguard = |args: &[&str]| sg.ok(&[args, &["--iface", &iface]].concat());
    let clients = |n: usize| -> Result<usize> {
        let mut opts = ClientOptions::new(fx.topo.server_addr(Family::V4, PORT), n);
        opts.timeout = Duration::from_secs(1);
        Ok(fx.topo.run_clients(&opts)?.ok())
    };
    let cli_addr = fx.topo.cli.ipv4.to_string();

    // Denied: every SYN from the client's /24 is dropped and counted.
    synguard(&["deny", "add", "198.18.1.0/24"])?;
    let before = fx.counters()?;
    assert_eq!(clients(3)?, 0, "denied clients connected");
    let d = fx.counters()?.delta(&before);
    assert!(d.get(Counter::Deny) >= 3, "{d:?}");
    assert_eq!(d.get(Counter::CookieSent), 0, "{d:?}");

    // The allow list wins over the deny list, and bypasses the cookie.
    synguard(&["allow", "add", &cli_addr])?;
    let before = fx.counters()?;
    assert_eq!(clients(5)?, 5);
    let d = fx.counters()?.delta(&before);
    assert!(d.get(Counter::Allow) >= 5, "{d:?}");
    assert_eq!(d.get(Counter::CookieSent), 0, "{d:?}");

    // Emptied again: the daemon clears LIST_FLAGS within a tick, and cookies are back.
    synguard(&["allow", "del", &cli_addr])?;
    synguard(&["deny", "del", "198.18.1.0/24"])?;
    let flags_clear = || -> Result<bool> {
        let data = MapData::from_pin(pin_dir(&iface).join(names::LIST_FLAGS))?;
        let flags: Array<_, u32> = Array::try_from(Map::Array(data))?;
        Ok((0..4).all(|i| flags.get(&i, 0).is_ok_and(|f| f == 0)))
    };
    wait_for("LIST_FLAGS to clear", Duration::from_secs(2), flags_clear)?;
    let before = fx.counters()?;
    assert_eq!(clients(5)?, 5);
    let d = fx.counters()?.delta(&before);
    assert_eq!(d.get(Counter::CookieSent), 5, "{d:?}");
    assert_eq!(d.get(Counter::Deny), 0, "{d:?}");
    assert_eq!(d.get(Counter::Allow), 0, "{d:?}");
    Ok(())
}

/// Sends each frame from b (on CPU `cpu` if given) and returns the counter deltas on a's
/// synguard once the last one has been judged, and how long that took.
fn send_and_count(
    pair: &VethPair,
    cpu: Option<usize>,
    frames: &[Vec<u8>],
) -> Result<(Counters, Duration)> {
    let n = frames.len() as u64;
    let a_if = &pair.a.iface;
    netns::in_netns(&pair.b.netns, || {
        if let Some(cpu) = cpu {
            pin_thread_to_cpu(cpu)?;
        }
        let before = Counters::read(a_if)?;
        let sock = RawSock::open(&pair.b.iface)?;
        let t = Instant::now();
        for f in frames {
            sock.send(f)?;
        }
        wait_for("every frame to be judged", Duration::from_secs(5), || {
            Ok(Counters::read(a_if)?.get(Counter::SynSeen) >= before.get(Counter::SynSeen) + n)
        })?;
        Ok((Counters::read(a_if)?.delta(&before), t.elapsed()))
    })
}

/// The CONFIG synguard stored for the data path on `iface`.
fn stored_config(iface: &str) -> Result<Config> {
    let data = MapData::from_pin(pin_dir(iface).join(names::CONFIG))?;
    let config: Array<_, Config> = Array::try_from(Map::Array(data))?;
    Ok(config.get(&0, 0)?)
}

#[test]
fn per_source_limit_and_synack_cap_apply_on_a_live_veth() -> Result<()> {
    if !root_or_skip("per_source_limit_and_synack_cap") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    // 10 SYN/s per source with a bucket of 10; no machine-wide cap yet.
    let (daemon, _listener) =
        start_on_pair(&pair, &["--src-syn-rate", "10", "--src-syn-burst", "10"])?;
    let sg = pair.synguard(BIN, &pair.a);
    let set = |k: &str, v: &str| sg.ok(&["set", k, v, "--iface", &pair.a.iface]);

    // 100 SYNs from one source in a few milliseconds: the bucket's 10, then drops.
    let frames: Vec<_> = (0..100)
        .map(|i| syn_frame(&pair, None, flags::SYN, 7000 + i))
        .collect();
    let (d, took) = send_and_count(&pair, None, &frames)?;
    let (sent, limited) = (d.get(Counter::CookieSent), d.get(Counter::RateLimited));
    // The bucket's 10, plus what 10/s refills while the frames were being sent.
    let refill = (took.as_secs_f64() * 10.0).ceil() as u64;
    assert!((10..=10 + refill).contains(&sent), "{d:?} in {took:?}");
    assert_eq!(sent + limited, 100, "{d:?}");

    // The machine-wide SYN+ACK cap: 10/s overall, stored per CPU (rounded up) because each
    // CPU keeps its own bucket, which starts with one second's worth.
    const CAP: u64 = 10;
    set("src_syn_rate", "0")?;
    set("synack_rate", &CAP.to_string())?;
    let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let per_cpu = CAP.div_ceil(cpus.len() as u64);
    // Catches a controller that stores the machine-wide rate (or anything else) per CPU:
    // every CPU would then admit the whole cap.
    assert_eq!(
        u64::from(stored_config(&pair.a.iface)?.synack_rate_per_cpu),
        per_cpu,
        "per-CPU SYN+ACK rate for a cap of {CAP} on {} CPUs",
        cpus.len()
    );
    // Send from every CPU in turn, the sender pinned: on a veth the receive path (and
    // generic XDP) runs in the sender's softirq context, so each burst drains exactly one
    // CPU's bucket. Distinct sources, so only the cap can bite.
    let mut admitted = 0;
    for (k, &cpu) in cpus.iter().enumerate() {
        let frames: Vec<_> = (0..100u32)
            .map(|i| {
                syn_frame_from(
                    &pair,
                    100 + i as u8,
                    None,
                    flags::SYN,
                    9000 + 100 * k as u32 + i,
                )
            })
            .collect();
        let (d, took) = send_and_count(&pair, Some(cpu as usize), &frames)?;
        let (sent, capped) = (d.get(Counter::CookieSent), d.get(Counter::SynackCapHit));
        // What one CPU's bucket refills (per_cpu per second) while the burst was sent.
        let refill = (took.as_secs_f64() * per_cpu as f64).ceil() as u64;
        // Catches a bucket that ignores the cap (100 sent), or that is not per CPU: a shared
        // or undivided bucket lets this CPU take more than its share, or leaves nothing for
        // the CPUs after the first.
        assert!(
            (per_cpu..=per_cpu + refill).contains(&sent),
            "CPU {cpu}: {sent} SYN+ACKs admitted, its share of the cap is {per_cpu}: {d:?}"
        );
        assert_eq!(sent + capped, 100, "CPU {cpu}: {d:?}");
        assert_eq!(d.get(Counter::RateLimited), 0, "CPU {cpu}: {d:?}");
        admitted += sent;
    }
    // Over all CPUs, the machine-wide cap holds: at most CAP plus the rounding up
    // (under one per CPU) and the refill, and at least CAP.
    let slack = cpus.len() as u64 * per_cpu - CAP;
    assert!(
        (CAP..=CAP + slack + cpus.len() as u64).contains(&admitted),
        "{admitted} SYN+ACKs admitted over {} CPUs under a cap of {CAP}",
        cpus.len()
    );
    daemon.stop()?;
    Ok(())
}
