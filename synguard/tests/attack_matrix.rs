//! The attack matrix: hostile frame shapes sent at a protected port of
//! `synguard run --mode always` on a veth pair, each checked against synguard's counters
//! and against the server's own stack, which must not deliver any of them to TCP.
//!
//! "Reached the listener" is read from the server namespace's `Tcp InSegs` (every segment
//! that gets to TCP's receive path, where a listener would take it), and an nftables
//! input-hook counter on the port is reported next to it. A shape synguard answers with
//! a SYN+ACK counts as stopped only if `cookie_sent` moved and InSegs did not.
//!
//! Needs root; without it the test fails under CI and skips otherwise.

use std::{
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use synguard_common::{
    flags,
    maps::Counter,
    testutil::{Seg, linux_syn_options, linux_syn_options6, ref_checksum},
};
use synguard_harness::synguard::test_run_args;
use synguard_harness::{Counters, RawSock, VethPair, fixture::PAIR_V4_NET, netns, root_or_skip};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// What a shape must move.
#[derive(Clone, Debug)]
enum Expect {
    /// Exactly this reason.
    Reason(Counter),
    /// Some reason (not a total): shapes whose exact counter belongs to another rule set
    /// (reflection, options lenience) and may be refined there.
    AnyReason,
    /// Nothing but `packets_seen`: not TCP to us at this layer (non-first fragments,
    /// tunnel payloads), left to the kernel, which cannot deliver it to the listener.
    Unseen,
}

struct Shape {
    name: &'static str,
    frame: Vec<u8>,
    expect: Expect,
    /// The kernel's input hook sees this one and drops it later itself (a Routing header
    /// with segments left, a group destination MAC), so the nft counter may move.
    kernel_drops_later: bool,
}

fn v4_src() -> [u8; 4] {
    let [n0, n1, n2] = PAIR_V4_NET;
    // Not b's address: b's stack ignores our SYN+ACKs instead of resetting them.
    [n0, n1, n2, 50]
}

fn syn4(pair: &VethPair) -> Seg {
    let mut s = Seg::syn4();
    s.src[..4].copy_from_slice(&v4_src());
    s.dst[..4].copy_from_slice(&pair.a.ipv4.octets());
    s.dport = PORT;
    s.options = linux_syn_options(0x1234_5678);
    s
}

fn syn6(pair: &VethPair) -> Seg {
    let mut s = Seg::syn6();
    let mut src = pair.b.ipv6.octets();
    src[15] = 0x50;
    s.src = src;
    s.dst = pair.a.ipv6.octets();
    s.dport = PORT;
    s.options = linux_syn_options6(0x1234_5678);
    s
}

/// The frame of `s`, addressed from b to `dst_mac`.
fn framed(pair: &VethPair, s: &Seg, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut f = s.frame();
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&pair.b.mac);
    f
}

fn opts(n: u8) -> Vec<u8> {
    let mut h = vec![0u8; (usize::from(n) + 1) * 8];
    h[1] = n;
    h[2] = 1;
    h[3] = h.len() as u8 - 4;
    h
}

fn frag6(offset: u16, more: bool) -> Vec<u8> {
    let [a, b] = ((offset << 3) | u16::from(more)).to_be_bytes();
    vec![0, 0, a, b, 0, 0, 0x12, 0x34]
}

fn routing6(left: u8) -> Vec<u8> {
    vec![0, 0, 4, left, 0, 0, 0, 0]
}

/// An IPv4 header (no options) for `payload`, protocol `proto`, from b's side to a.
fn ipv4_header(pair: &VethPair, proto: u8, frag: u16, payload_len: usize) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x77, 0x77]);
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&v4_src());
    ip.extend_from_slice(&pair.a.ipv4.octets());
    let c = ref_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// An IPv4 frame b -> a with protocol `proto` and `payload` after the IP header.
fn ipv4_frame(pair: &VethPair, proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = pair.a.mac.to_vec();
    f.extend_from_slice(&pair.b.mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ipv4_header(pair, proto, frag, payload.len()));
    f.extend_from_slice(payload);
    f
}

fn shapes(pair: &VethPair) -> Vec<Shape> {
    let a_mac = pair.a.mac;
    let mut v = Vec::new();
    let mut add = |name, frame, expect, kernel_drops_later| {
        v.push(Shape {
            name,
            frame,
            expect,
            kernel_drops_later,
        })
    };
    use Expect::*;
    let sent = Reason(Counter::CookieSent);

    // IPv4 options.
    let mut s = syn4(pair);
    s.ip_options = vec![1, 1, 1, 0];
    add(
        "ipv4 options NOP NOP NOP EOL",
        framed(pair, &s, a_mac),
        sent.clone(),
        false,
    );
    let mut s = syn4(pair);
    s.ip_options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // record route
    add(
        "ipv4 option record route",
        framed(pair, &s, a_mac),
        sent.clone(),
        false,
    );
    let mut s = syn4(pair);
    s.ip_options = vec![0x44, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // timestamp
    add(
        "ipv4 option timestamp",
        framed(pair, &s, a_mac),
        sent.clone(),
        false,
    );

    // IPv4 fragments: the TCP header in the first one, the rest without a port.
    let tcp = {
        let f = syn4(pair).frame();
        f[34..].to_vec()
    };
    add(
        "ipv4 first fragment",
        ipv4_frame(pair, 6, 0x2000, &tcp),
        Reason(Counter::Fragment),
        false,
    );
    add(
        "ipv4 tiny first fragment (8 bytes: ports and seq)",
        ipv4_frame(pair, 6, 0x2000, &tcp[..8]),
        Reason(Counter::Fragment),
        false,
    );
    add(
        "ipv4 middle fragment",
        ipv4_frame(pair, 6, 0x2000 | 4, &tcp[..16]),
        Unseen,
        false,
    );
    add(
        "ipv4 last fragment",
        ipv4_frame(pair, 6, 4, &tcp[..16]),
        Unseen,
        false,
    );
    add(
        "ipv4 overlapping fragment (offset 8, rewrites the flags)",
        ipv4_frame(pair, 6, 1, &tcp[8..24]),
        Unseen,
        false,
    );
    let mut ack = syn4(pair);
    ack.flags = flags::ACK;
    ack.ack = 0x4242_4242;
    ack.frag = 0x2000;
    add(
        "ipv4 first fragment of an ACK",
        framed(pair, &ack, a_mac),
        Reason(Counter::Fragment),
        false,
    );

    // Data offset and option lengths.
    let mut f = framed(pair, &syn4(pair), a_mac);
    f[34 + 12] = 0x40;
    add("data offset 4", f, Reason(Counter::Malformed), false);
    let mut f = framed(pair, &syn4(pair), a_mac);
    f[34 + 12] = 0xf0;
    add(
        "data offset 15 past the segment",
        f,
        Reason(Counter::Malformed),
        false,
    );
    let mut s = syn4(pair);
    s.options = vec![2, 0xff, 0x05, 0xb4, 4, 2, 1, 1];
    add(
        "MSS option length 255",
        framed(pair, &s, a_mac),
        AnyReason,
        false,
    );
    let mut s = syn4(pair);
    s.options = vec![3, 0, 7, 1, 2, 4, 5, 0xb4];
    add(
        "window-scale option length 0",
        framed(pair, &s, a_mac),
        AnyReason,
        false,
    );
    let mut s = syn4(pair);
    s.options = vec![8, 40, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1];
    add(
        "timestamp option length 40",
        framed(pair, &s, a_mac),
        AnyReason,
        false,
    );

    // VLAN stacks.
    let tagged = |outer: Vec<(u16, u16)>, vlan: Option<u16>| {
        let mut s = syn4(pair);
        s.outer_tags = outer;
        s.vlan = vlan;
        framed(pair, &s, a_mac)
    };
    add("802.1Q tag", tagged(vec![], Some(100)), sent.clone(), false);
    add("802.1Q VID 0", tagged(vec![], Some(0)), sent.clone(), false);
    add(
        "802.1ad tag",
        tagged(vec![(0x88a8, 100)], None),
        sent.clone(),
        false,
    );
    add(
        "802.1ad + 802.1Q",
        tagged(vec![(0x88a8, 100)], Some(7)),
        sent.clone(),
        false,
    );
    add(
        "802.1Q + 802.1ad",
        tagged(vec![(0x8100, 100), (0x88a8, 7)], None),
        sent.clone(),
        false,
    );
    add(
        "two VID-0 tags",
        tagged(vec![(0x8100, 0)], Some(0)),
        sent.clone(),
        false,
    );
    add(
        "three tags",
        tagged(vec![(0x88a8, 1), (0x8100, 2)], Some(3)),
        Reason(Counter::Uninspectable),
        false,
    );

    // IPv6 extension headers.
    let chained = |chain: Vec<(u8, Vec<u8>)>, flags: u8| {
        let mut s = syn6(pair);
        s.ext_headers = chain;
        s.flags = flags;
        s.ack = if flags & flags::ACK != 0 {
            0x4242_4242
        } else {
            0
        };
        framed(pair, &s, a_mac)
    };
    let syn = flags::SYN;
    add(
        "ipv6 hop-by-hop",
        chained(vec![(0, opts(0))], syn),
        sent.clone(),
        false,
    );
    add(
        "ipv6 destination options",
        chained(vec![(60, opts(1))], syn),
        sent.clone(),
        false,
    );
    add(
        "ipv6 routing, 0 segments left",
        chained(vec![(43, routing6(0))], syn),
        sent.clone(),
        false,
    );
    add(
        "ipv6 routing, segments left",
        chained(vec![(43, routing6(1))], syn),
        Reason(Counter::Ipv6RoutingPass),
        true,
    );
    add(
        "ipv6 atomic fragment",
        chained(vec![(44, frag6(0, false))], syn),
        sent.clone(),
        false,
    );
    add(
        "ipv6 first fragment",
        chained(vec![(44, frag6(0, true))], syn),
        Reason(Counter::Fragment),
        false,
    );
    add(
        "ipv6 non-first fragment",
        chained(vec![(44, frag6(3, false))], syn),
        Unseen,
        false,
    );
    let four = vec![
        (0, opts(0)),
        (60, opts(0)),
        (43, routing6(0)),
        (44, frag6(0, false)),
    ];
    add(
        "ipv6 chain of 4 (HBH, DO, RH, atomic fragment)",
        chained(four.clone(), syn),
        sent.clone(),
        false,
    );
    let mut five = four.clone();
    five.push((60, opts(0)));
    add(
        "ipv6 chain of 5 (beyond the bound)",
        chained(five, syn),
        Reason(Counter::Uninspectable),
        false,
    );
    add(
        "ipv6 chain of 136 bytes (beyond the bound)",
        chained(vec![(0, opts(1)), (60, opts(14))], syn),
        Reason(Counter::Uninspectable),
        false,
    );
    let mut f = chained(vec![], syn);
    f[14 + 6] = 0; // Hop-by-Hop, whose length byte (the source port) runs past the end
    add(
        "ipv6 header running past the packet",
        f,
        Reason(Counter::Uninspectable),
        false,
    );
    add(
        "ipv6 SYN+FIN behind hop-by-hop",
        chained(vec![(0, opts(0))], flags::SYN | flags::FIN),
        Reason(Counter::FlagSynFin),
        false,
    );
    add(
        "ipv6 forged ACK behind destination options",
        chained(vec![(60, opts(0))], flags::ACK),
        Reason(Counter::CookieAckInvalid),
        false,
    );
    add(
        "ipv6 RST behind a routing header",
        chained(vec![(43, routing6(0))], flags::RST),
        Reason(Counter::NoSocketDrop),
        false,
    );

    // Tunnels: the inner SYN is not looked at here (protect the decapsulated device).
    let inner = syn4(pair).frame();
    add("IPIP", ipv4_frame(pair, 4, 0, &inner[14..]), Unseen, false);
    let mut gre = vec![0, 0, 0x08, 0x00];
    gre.extend_from_slice(&inner[14..]);
    add("GRE", ipv4_frame(pair, 47, 0, &gre), Unseen, false);
    let mut vx_inner = inner.clone();
    vx_inner[..6].copy_from_slice(&a_mac);
    let mut udp = vec![0x15, 0xb3, 0x12, 0xb5];
    udp.extend_from_slice(&((8 + 8 + vx_inner.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0, 0x08, 0, 0, 0, 0, 0, 0x2a, 0]);
    udp.extend_from_slice(&vx_inner);
    add("VXLAN", ipv4_frame(pair, 17, 0, &udp), Unseen, false);

    // LAND and group MACs.
    let mut s = syn4(pair);
    s.src = s.dst;
    s.sport = PORT;
    add(
        "LAND (src == dst)",
        framed(pair, &s, a_mac),
        AnyReason,
        false,
    );
    add(
        "broadcast destination MAC",
        framed(pair, &syn4(pair), [0xff; 6]),
        Reason(Counter::NotOurMac),
        true,
    );
    add(
        "IPv4 multicast destination MAC",
        framed(pair, &syn4(pair), [0x01, 0x00, 0x5e, 0, 0, 1]),
        Reason(Counter::NotOurMac),
        true,
    );
    add(
        "IPv6 multicast destination MAC",
        framed(pair, &syn6(pair), [0x33, 0x33, 0, 0, 0, 1]),
        Reason(Counter::NotOurMac),
        true,
    );
    // The control: a SYN to an unprotected port, which synguard leaves alone and the
    // kernel's TCP receives (and resets). Proves the InSegs measurement sees deliveries.
    let mut s = syn4(pair);
    s.dport = PORT + 1;
    add(
        "control: SYN to an unprotected port",
        framed(pair, &s, a_mac),
        Unseen,
        false,
    );
    v
}

/// The control shape's name: the one frame that must reach TCP.
const CONTROL: &str = "control: SYN to an unprotected port";

/// `Tcp InSegs` of namespace `ns`: segments that reached TCP's receive path.
fn tcp_in_segs(ns: &str) -> Result<u64> {
    let out = netns::command(ns, "cat").arg("/proc/net/snmp").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().context("no Tcp header")?,
        tcp.next().context("no Tcp values")?,
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "InSegs")
        .context("no InSegs")?;
    Ok(values
        .split_whitespace()
        .nth(i)
        .context("short Tcp line")?
        .parse()?)
}

fn install_port_counter(ns: &str) -> Result<()> {
    netns::nft(
        ns,
        &format!(
            "table inet sgmatrix {{\n chain input {{\n type filter hook input priority -300;\n \
             tcp dport {PORT} counter\n }}\n}}\n"
        ),
    )
}

fn port_counter(ns: &str) -> Result<u64> {
    let out = netns::command(ns, "nft")
        .args(["list", "table", "inet", "sgmatrix"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .split("counter packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no counter in nft output")?;
    Ok(n.parse()?)
}

const TOTALS: [Counter; 2] = [Counter::PacketsSeen, Counter::SynSeen];

#[test]
fn hostile_frame_shapes_never_reach_the_listener() -> Result<()> {
    if !root_or_skip("hostile_frame_shapes_never_reach_the_listener") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let (l4, l6) = netns::in_netns(&pair.a.netns, || {
        Ok((
            TcpListener::bind((pair.a.ipv4, PORT))?,
            TcpListener::bind((pair.a.ipv6, PORT))?,
        ))
    })?;
    install_port_counter(&pair.a.netns)?;
    let ports = PORT.to_string();
    let daemon = pair
        .synguard(BIN, &pair.a)
        .start(&pair.a.iface, &test_run_args("always", &ports, &[]))?;
    let a_if = pair.a.iface.clone();
    let shapes = shapes(&pair);
    assert!(shapes.len() > 30, "{} shapes", shapes.len());
    let rows = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        let mut rows = Vec::new();
        for shape in &shapes {
            let (segs0, nft0) = (tcp_in_segs(&pair.a.netns)?, port_counter(&pair.a.netns)?);
            let before = Counters::read(&a_if)?;
            sock.send(&shape.frame)?;
            let deadline = Instant::now() + Duration::from_secs(2);
            let delta = loop {
                let d = Counters::read(&a_if)?.delta(&before);
                let done = match &shape.expect {
                    Expect::Reason(c) => d.get(*c) != 0,
                    Expect::AnyReason => d.nonzero().iter().any(|(c, _)| !TOTALS.contains(c)),
                    Expect::Unseen => d.get(Counter::PacketsSeen) != 0,
                };
                if done || Instant::now() > deadline {
                    break d;
                }
                thread::sleep(Duration::from_millis(2));
            };
            // Give the server's stack time to deliver whatever XDP passed.
            thread::sleep(Duration::from_millis(30));
            let segs = tcp_in_segs(&pair.a.netns)? - segs0;
            let nft = port_counter(&pair.a.netns)? - nft0;
            let reasons: Vec<(Counter, u64)> = delta
                .nonzero()
                .into_iter()
                .filter(|(c, _)| !TOTALS.contains(c))
                .collect();
            rows.push((shape, reasons, segs, nft));
        }
        Ok(rows)
    })?;
    daemon.stop()?;
    // Nothing completed a handshake either.
    for l in [&l4, &l6] {
        l.set_nonblocking(true)?;
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a connection reached the listener"
        );
    }

    let mut wrong = Vec::new();
    println!(
        "{:<58} {:<28} {:>6} {:>4}",
        "shape", "counter", "InSegs", "nft"
    );
    for (shape, reasons, segs, nft) in &rows {
        let names: Vec<String> = reasons
            .iter()
            .map(|(c, n)| format!("{}+{n}", c.name()))
            .collect();
        println!(
            "{:<58} {:<28} {:>6} {:>4}",
            shape.name,
            if names.is_empty() {
                "(packets_seen only)".to_string()
            } else {
                names.join(",")
            },
            segs,
            nft
        );
        let ok = match &shape.expect {
            Expect::Reason(c) => reasons.as_slice() == [(*c, 1)],
            Expect::AnyReason => reasons.len() == 1 && reasons[0].1 == 1,
            Expect::Unseen => reasons.is_empty(),
        };
        if !ok {
            wrong.push(format!(
                "{}: want {:?}, got {reasons:?}",
                shape.name, shape.expect
            ));
        }
        if shape.name == CONTROL {
            if *segs != 1 {
                wrong.push(format!(
                    "control: {segs} InSegs, not 1: the measurement is blind"
                ));
            }
        } else if *segs != 0 {
            wrong.push(format!("{}: reached TCP ({segs} InSegs)", shape.name));
        }
        if *nft != 0 && !shape.kernel_drops_later {
            wrong.push(format!("{}: reached the input hook ({nft})", shape.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// The `n`th (from 0) `counter packets N` of nft table `table` in `ns`.
fn nft_counter(ns: &str, table: &str, n: usize) -> Result<u64> {
    let out = netns::command(ns, "nft")
        .args(["list", "table", "inet", table])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split("counter packets ")
        .nth(n + 1)
        .and_then(|s| s.split_whitespace().next())
        .context("no such counter in nft output")?;
    Ok(v.parse()?)
}

/// A TCP socket from b's namespace to `dst`, every segment of which carries an IPv6
/// Destination Options header (IPV6_DSTOPTS, one PadN option).
fn connect_with_dest_opts(dst: std::net::Ipv6Addr) -> Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below or closed on error.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0) };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just opened and is owned from here on.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let dstopts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
    // SAFETY: a valid fd and an 8-byte buffer of the given length.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_DSTOPTS,
            dstopts.as_ptr().cast(),
            dstopts.len() as libc::socklen_t,
        )
    };
    anyhow::ensure!(r == 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
    // SAFETY: zeroed sockaddr_in6 is a valid value; the fields are set below.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = PORT.to_be();
    sa.sin6_addr.s6_addr = dst.octets();
    // SAFETY: `sa` is a live sockaddr_in6 of the length passed.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(r == 0, "connect: {}", std::io::Error::last_os_error());
    Ok(stream)
}

/// A kernel client whose every segment carries a Destination Options header completes
/// its handshakes through synguard's cookies: the SYN+ACK without the header, the cookie
/// ACK behind it handed to the listener, and no SYN reaching the server's stack.
#[test]
fn handshakes_behind_ipv6_destination_options_complete_through_cookies() -> Result<()> {
    use std::io::{Read, Write};
    if !root_or_skip("handshakes_behind_ipv6_destination_options") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let listener = netns::in_netns(&pair.a.netns, || {
        Ok(TcpListener::bind((pair.a.ipv6, PORT))?)
    })?;
    netns::nft(
        &pair.a.netns,
        &format!(
            "table inet sgdo {{\n chain input {{\n type filter hook input priority -300;\n \
             tcp dport {PORT} tcp flags & (syn | ack) == syn counter\n \
             exthdr dst exists tcp dport {PORT} counter\n }}\n}}\n"
        ),
    )?;
    let ports = PORT.to_string();
    let daemon = pair
        .synguard(BIN, &pair.a)
        .start(&pair.a.iface, &test_run_args("always", &ports, &[]))?;
    let before = Counters::read(&pair.a.iface)?;
    const N: usize = 5;
    let server = thread::spawn(move || -> Result<usize> {
        let mut ok = 0;
        for _ in 0..N {
            let (mut s, _) = listener.accept()?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b)?;
            if &b == b"ping" {
                s.write_all(b"pong")?;
                ok += 1;
            }
        }
        Ok(ok)
    });
    let clients = netns::in_netns(&pair.b.netns, || {
        let mut ok = 0;
        for _ in 0..N {
            let mut s = connect_with_dest_opts(pair.a.ipv6)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"ping")?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b)?;
            ok += usize::from(&b == b"pong");
        }
        Ok(ok)
    })?;
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    let d = Counters::read(&pair.a.iface)?.delta(&before);
    daemon.stop()?;
    assert_eq!((clients, served), (N, N), "{d:?}");
    assert_eq!(d.get(Counter::CookieSent), N as u64, "{d:?}");
    assert_eq!(d.get(Counter::CookieAckValid), N as u64, "{d:?}");
    assert_eq!(d.get(Counter::ReqskAssigned), N as u64, "{d:?}");
    assert_eq!(d.get(Counter::SynPassed), 0, "{d:?}");
    assert_eq!(
        nft_counter(&pair.a.netns, "sgdo", 0)?,
        0,
        "a SYN reached the stack"
    );
    assert!(
        nft_counter(&pair.a.netns, "sgdo", 1)? >= 2 * N as u64,
        "the client's segments carried no Destination Options header"
    );
    Ok(())
}

/// A first fragment of a flow the kernel already has a socket for is the kernel's
/// (`established_pass`), engaged or not; one of a flow without a socket is dropped.
#[test]
fn first_fragments_of_established_flows_pass() -> Result<()> {
    use std::io::Read;
    if !root_or_skip("first_fragments_of_established_flows_pass") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let listener = netns::in_netns(&pair.a.netns, || {
        Ok(TcpListener::bind((pair.a.ipv4, PORT))?)
    })?;
    let ports = PORT.to_string();
    let daemon = pair
        .synguard(BIN, &pair.a)
        .start(&pair.a.iface, &test_run_args("always", &ports, &[]))?;
    let client = netns::in_netns(&pair.b.netns, || {
        Ok(std::net::TcpStream::connect((pair.a.ipv4, PORT))?)
    })?;
    let (mut accepted, _) = listener.accept()?;
    let cport = client.local_addr()?.port();
    // A first fragment (MF, offset 0) of an ACK on that flow, and one on a flow that has
    // no socket (another source port).
    let fragment = |sport: u16| {
        let mut s = Seg::syn4();
        s.src[..4].copy_from_slice(&pair.b.ipv4.octets());
        s.dst[..4].copy_from_slice(&pair.a.ipv4.octets());
        s.sport = sport;
        s.dport = PORT;
        s.flags = flags::ACK;
        s.ack = 1;
        s.options = vec![];
        s.payload = vec![0x55; 64];
        s.frag = 0x2000;
        framed(&pair, &s, pair.a.mac)
    };
    let (own, stray) = (fragment(cport), fragment(cport.wrapping_add(1)));
    let counts = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        let mut out = Vec::new();
        for f in [&own, &stray] {
            let before = Counters::read(&pair.a.iface)?;
            sock.send(f)?;
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let d = Counters::read(&pair.a.iface)?.delta(&before);
                let r: Vec<_> = d
                    .nonzero()
                    .into_iter()
                    .filter(|(c, _)| !TOTALS.contains(c))
                    .collect();
                if !r.is_empty() || Instant::now() > deadline {
                    out.push(r);
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(out)
    })?;
    daemon.stop()?;
    accepted.set_nonblocking(true)?;
    let _ = accepted.read(&mut [0u8; 8]);
    drop(client);
    assert_eq!(counts[0], [(Counter::EstablishedPass, 1)], "own flow");
    assert_eq!(counts[1], [(Counter::Fragment, 1)], "flow without a socket");
    Ok(())
}
