//! Live tests of the handoff modes (issue 13), each forced with `--handoff` on the host
//! kernel: real kernel clients exchanging data through synguard, the counters that say who
//! answered, forged ACKs where the mode validates them, and the refusals.
//!
//! Need root; without it they fail under CI and skip otherwise.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Result;
use nix::sys::socket::{Backlog, listen};
use synguard_common::maps::{Counter, names};
use synguard_harness::netns::in_netns;
use synguard_harness::synguard::{pin_dir, test_run_args};
use synguard_harness::{
    ClientOptions, Counters, Daemon, Family, FloodKind, FloodOptions, Role, Server, ServerOptions,
    Synguard, Topology, TopologyOptions, flood, root_or_skip,
};

const PORT: u16 = 8443;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");
/// Handshakes per family.
const N: usize = 10;
/// Forged segments per kind.
const FORGED: u64 = 2000;

fn topology() -> Result<Topology> {
    Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })
}

/// `synguard run --mode always --handoff HANDOFF` on the server veth, attached.
fn start(topo: &Topology, handoff: &str) -> Result<Daemon> {
    let port = PORT.to_string();
    Synguard::new(BIN, &topo.srv.netns)
        .owned_by(topo.id())
        .start(
            topo.server_iface(),
            &test_run_args("always", &port, &["--handoff", handoff]),
        )
}

/// N real connections per family, each sending and receiving data; all must succeed.
fn handshakes(topo: &Topology) -> Result<()> {
    handshakes_with(topo, None)
}

/// [`handshakes`], `concurrency` at a time (None: the client's default).
fn handshakes_with(topo: &Topology, concurrency: Option<usize>) -> Result<()> {
    for family in [Family::V4, Family::V6] {
        let mut opts = ClientOptions::new(topo.server_addr(family, PORT), N);
        if let Some(c) = concurrency {
            opts.concurrency = c;
        }
        opts.request_bytes = 4096;
        opts.response_bytes = 16 * 1024;
        let report = topo.run_clients(&opts)?;
        assert_eq!(report.ok(), N, "{family:?}: failures {:?}", report.errors());
    }
    Ok(())
}

/// `FORGED` segments of `kind` (random numbers, spoofed sources) at the server port.
fn forge(topo: &Topology, kind: FloodKind) -> Result<()> {
    let mut opts = FloodOptions::new(kind, Family::V4, PORT, Duration::from_secs(20));
    opts.count = Some(FORGED);
    opts.rate_pps = Some(20_000);
    flood::run(topo, &opts)?;
    Ok(())
}

fn status(topo: &Topology) -> Result<serde_json::Value> {
    let out = Synguard::new(BIN, &topo.srv.netns).ok(&[
        "status",
        "--iface",
        topo.server_iface(),
        "--json",
    ])?;
    Ok(serde_json::from_str(&out)?)
}

/// `daemon`, forced into `handoff` (one without TC), says so in its log and `status`, is
/// attached, and pinned no TC link.
fn assert_attached_without_tc(topo: &Topology, daemon: &Daemon, handoff: &str) -> Result<()> {
    assert!(
        !pin_dir(topo.server_iface()).join(names::TC_LINK).exists(),
        "the {handoff} handoff attached TC"
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!("handoff {handoff}: forced by --handoff {handoff}")),
        "{log}"
    );
    let st = status(topo)?;
    assert_eq!(st["handoff"], handoff, "{st}");
    assert_eq!(st["attached"], true, "{st}");
    assert!(st["tc"].is_null(), "{st}");
    Ok(())
}

/// Filter handoff, engaged: every SYN goes to the kernel (`syn_to_kernel`), which completes
/// the handshakes itself; XDP sends no SYN+ACK, no TC program is attached, and forged
/// ACKs go to the kernel (`ack_to_kernel`), which opens nothing for them. Forged RSTs and
/// invalid flags are still dropped in XDP.
///
/// On the code before the filter handoff, `--handoff` did not exist and synguard refused
/// to start; forced to the kfunc handoff (the old path), the same SYNs are `cookie_sent`
/// and the same ACKs `cookie_ack_invalid`, as the next test shows.
#[test]
fn filter_handoff_leaves_handshakes_to_the_kernel_and_keeps_the_filters() -> Result<()> {
    if !root_or_skip("filter_handoff_leaves_handshakes_to_the_kernel") {
        return Ok(());
    }
    let topo = topology()?;
    let daemon = start(&topo, "filter")?;
    let iface = topo.server_iface().to_string();
    assert_attached_without_tc(&topo, &daemon, "filter")?;

    let server = topo.start_server(PORT)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    let d = Counters::read(&iface)?.delta(&before);
    let total = 2 * N as u64;
    assert_eq!(d.get(Counter::SynToKernel), total, "{:?}", d.nonzero());
    for absent in [
        Counter::CookieSent,
        Counter::CookieAckValid,
        Counter::ReqskAssigned,
        Counter::CookieAckInvalid,
        Counter::SynPassed,
    ] {
        assert_eq!(
            d.get(absent),
            0,
            "{} moved: {:?}",
            absent.name(),
            d.nonzero()
        );
    }

    let before = Counters::read(&iface)?;
    forge(&topo, FloodKind::Ack)?;
    forge(&topo, FloodKind::Rst)?;
    forge(&topo, FloodKind::Flags(0x03))?; // SYN+FIN
    let d = Counters::read(&iface)?.delta(&before);
    println!("forged segments, filter handoff: {:?}", d.nonzero());
    assert_eq!(d.get(Counter::AckToKernel), FORGED, "{:?}", d.nonzero());
    assert_eq!(d.get(Counter::CookieAckInvalid), 0, "{:?}", d.nonzero());
    assert_eq!(d.get(Counter::NoSocketDrop), FORGED, "{:?}", d.nonzero());
    assert_eq!(d.get(Counter::FlagSynFin), FORGED, "{:?}", d.nonzero());
    let st = server.stop();
    assert_eq!(
        st.accepted,
        2 * N as u64,
        "a forged ACK opened a connection: {st:?}"
    );
    Ok(())
}

/// Kfunc handoff, forced: XDP answers every SYN (`cookie_sent`), TC hands every ACK over
/// (`reqsk_assigned`), and forged ACKs are dropped (`cookie_ack_invalid`). The control for
/// the filter test: the same traffic, the other mode's counters.
#[test]
fn kfunc_handoff_forced_answers_in_xdp_and_drops_forged_acks() -> Result<()> {
    if !root_or_skip("kfunc_handoff_forced_answers_in_xdp") {
        return Ok(());
    }
    let topo = topology()?;
    let daemon = start(&topo, "kfunc")?;
    let iface = topo.server_iface().to_string();
    assert!(pin_dir(&iface).join(names::TC_LINK).exists());
    assert!(
        daemon
            .log()
            .contains("handoff kfunc: forced by --handoff kfunc"),
        "{}",
        daemon.log()
    );
    assert_eq!(status(&topo)?["handoff"], "kfunc");

    let server = topo.start_server(PORT)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    let d = Counters::read(&iface)?.delta(&before);
    let total = 2 * N as u64;
    assert_eq!(d.get(Counter::CookieSent), total, "{:?}", d.nonzero());
    assert_eq!(d.get(Counter::ReqskAssigned), total, "{:?}", d.nonzero());
    assert_eq!(d.get(Counter::SynToKernel), 0, "{:?}", d.nonzero());

    let before = Counters::read(&iface)?;
    forge(&topo, FloodKind::Ack)?;
    let d = Counters::read(&iface)?.delta(&before);
    assert_eq!(
        d.get(Counter::CookieAckInvalid),
        FORGED,
        "{:?}",
        d.nonzero()
    );
    assert_eq!(d.get(Counter::AckToKernel), 0, "{:?}", d.nonzero());
    assert_eq!(server.stop().accepted, 2 * N as u64);
    Ok(())
}

/// `auto` on this kernel (which has the kfunc) picks kfunc by probing, and says why; an
/// unknown mode is refused before anything is created.
#[test]
fn auto_picks_by_probe_and_bad_modes_are_refused() -> Result<()> {
    if !root_or_skip("auto_picks_by_probe_and_bad_modes_are_refused") {
        return Ok(());
    }
    let topo = topology()?;
    let iface = topo.server_iface().to_string();
    let port = PORT.to_string();
    let sg = Synguard::new(BIN, &topo.srv.netns).owned_by(topo.id());
    for (mode, why) in [
        (
            "fast",
            "handoff must be one of auto, kfunc, kernel-cookie, filter",
        ),
        (
            "kernel",
            "handoff must be one of auto, kfunc, kernel-cookie, filter",
        ),
    ] {
        let mut args = vec!["run", "--iface", iface.as_str()];
        args.extend(test_run_args("always", &port, &["--handoff", mode]));
        let err = sg.fails(&args)?;
        assert!(err.contains(why), "--handoff {mode}: {err}");
        assert!(!pin_dir(&iface).exists(), "--handoff {mode} left pins");
    }
    let check = sg.ok(&["check"]).or_else(|_| -> Result<String> {
        // `check` fails on unrelated host facts in a bare namespace; its report is on stdout.
        let out = sg.output(&["check"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })?;
    assert!(
        check.contains("kfunc (auto: bpf_sk_assign_tcp_reqsk in vmlinux BTF)"),
        "{check}"
    );

    let daemon = start(&topo, "auto")?;
    assert!(
        daemon
            .log()
            .contains("handoff kfunc: auto: bpf_sk_assign_tcp_reqsk in vmlinux BTF"),
        "{}",
        daemon.log()
    );
    Ok(())
}

/// A restart over the pinned links of a filter run (SIGUSR2, then `run` again): forcing
/// kfunc, which needs a TC link, is refused, changing nothing; forcing filter keeps it; and
/// `auto` takes the links over in the best mode without TC (the kernel here would give a
/// fresh `auto` the kfunc): kernel-cookie, whose program replaces the filter one in the
/// pinned link, and XDP then answers with the kernel's cookie.
/// Before the filter handoff, a pin directory with an XDP link and no TC link was "stale".
#[test]
fn a_takeover_keeps_the_filter_handoff_of_the_pinned_links() -> Result<()> {
    if !root_or_skip("a_takeover_keeps_the_filter_handoff") {
        return Ok(());
    }
    let topo = topology()?;
    let iface = topo.server_iface().to_string();
    let port = PORT.to_string();
    let mut d1 = start(&topo, "filter")?;
    d1.signal(synguard_harness::Signal::SIGUSR2);
    let st = d1.wait_exit(Duration::from_secs(20))?;
    assert!(st.success(), "SIGUSR2 exit {st}:\n{}", d1.log());
    assert!(pin_dir(&iface).join(names::XDP_LINK).exists());
    assert!(!pin_dir(&iface).join(names::TC_LINK).exists());

    let sg = Synguard::new(BIN, &topo.srv.netns).owned_by(topo.id());
    let mut args = vec!["run", "--iface", iface.as_str()];
    args.extend(test_run_args("always", &port, &["--handoff", "kfunc"]));
    let err = sg.fails(&args)?;
    assert!(
        err.contains("have no TC link, which a takeover cannot add"),
        "{err}"
    );
    assert!(
        pin_dir(&iface).join(names::XDP_LINK).exists(),
        "the refusal removed the link"
    );

    let d2 = start(&topo, "filter")?;
    let log = d2.log();
    assert!(log.contains("took over the pinned links"), "{log}");
    assert!(log.contains(", handoff filter,"), "{log}");
    assert_eq!(status(&topo)?["handoff"], "filter");
    let server = topo.start_server(PORT)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    let d = Counters::read(&iface)?.delta(&before);
    assert_eq!(
        d.get(Counter::SynToKernel),
        2 * N as u64,
        "{:?}",
        d.nonzero()
    );
    assert_eq!(d.get(Counter::CookieSent), 0, "{:?}", d.nonzero());
    server.stop();

    // `auto` takes the links over in the best mode without TC this kernel has: the
    // kernel-cookie program replaces the filter one in the pinned XDP link.
    let mut d2 = d2;
    d2.signal(synguard_harness::Signal::SIGUSR2);
    let st = d2.wait_exit(Duration::from_secs(20))?;
    assert!(st.success(), "SIGUSR2 exit {st}:\n{}", d2.log());
    topo.set_sysctl(Role::Srv, "net.ipv4.tcp_syncookies", "2")?;
    let d3 = start(&topo, "auto")?;
    let log = d3.log();
    assert!(log.contains("took over the pinned links"), "{log}");
    assert!(log.contains(", handoff kernel-cookie,"), "{log}");
    assert_eq!(status(&topo)?["handoff"], "kernel-cookie");
    let server = topo.start_server(PORT)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    let d = Counters::read(&iface)?.delta(&before);
    assert_all_answered(&d, "after the takeover");
    server.stop();
    drop(d3);
    drop(d2);
    drop(d1);
    Ok(())
}

/// The kernel-cookie daemon, forced, with `net.ipv4.tcp_syncookies` set to `syncookies` in
/// srv first.
fn start_kernel_cookie(topo: &Topology, syncookies: &str) -> Result<Daemon> {
    topo.set_sysctl(Role::Srv, "net.ipv4.tcp_syncookies", syncookies)?;
    start(topo, "kernel-cookie")
}

/// After [`handshakes`] under `tcp_syncookies=2`: XDP answered every SYN with the kernel's
/// cookie, and every ACK carried one.
fn assert_all_answered(d: &Counters, what: &str) {
    let total = 2 * N as u64;
    for (c, want) in [
        (Counter::SynSeen, total),
        (Counter::CookieSent, total),
        (Counter::CookieAckValid, total),
        (Counter::KernelCookieDeclined, 0),
        (Counter::ReqskAssigned, 0),
    ] {
        assert_eq!(d.get(c), want, "{what}: {}: {:?}", c.name(), d.nonzero());
    }
}

/// Kernel-cookie handoff with `tcp_syncookies=2`: XDP answers every SYN with the cookie the
/// kernel mints on the listener (`cookie_sent`), checks each ACK against it
/// (`cookie_ack_valid`), and the kernel completes every handshake: no TC program, nothing
/// handed off, connections concurrent. Forged ACKs are dropped.
///
/// On the code before it, `--handoff kernel-cookie` was refused.
#[test]
fn kernel_cookie_handoff_answers_with_the_kernels_cookie() -> Result<()> {
    if !root_or_skip("kernel_cookie_handoff_answers_with_the_kernels_cookie") {
        return Ok(());
    }
    let topo = topology()?;
    let daemon = start_kernel_cookie(&topo, "2")?;
    let iface = topo.server_iface().to_string();
    assert_attached_without_tc(&topo, &daemon, "kernel-cookie")?;
    // `check` on the running instance says what its handoff makes of tcp_syncookies, though
    // `auto` would pick kfunc on this kernel. Its report is on stdout, passing or not (a
    // bare namespace fails unrelated host checks).
    let out = Synguard::new(BIN, &topo.srv.netns).output(&["check", "--iface", &iface])?;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("net.ipv4.tcp_syncookies (kernel-cookie)")
            && report.contains("2: the kernel answers every SYN with a cookie"),
        "{report}"
    );

    let server = topo.start_server(PORT)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    let d = Counters::read(&iface)?.delta(&before);
    println!("handshakes, kernel-cookie handoff: {:?}", d.nonzero());
    assert_all_answered(&d, "tcp_syncookies=2");

    let before = Counters::read(&iface)?;
    forge(&topo, FloodKind::Ack)?;
    let d = Counters::read(&iface)?.delta(&before);
    assert_eq!(
        d.get(Counter::CookieAckInvalid),
        FORGED,
        "{:?}",
        d.nonzero()
    );
    assert_eq!(d.get(Counter::CookieAckValid), 0, "{:?}", d.nonzero());
    assert_eq!(
        server.stop().accepted,
        2 * N as u64,
        "a forged ACK opened a connection"
    );
    Ok(())
}

/// The safety rule of the kernel-cookie handoff: XDP answers a SYN only where the kernel
/// would answer it with a cookie itself, or the kernel would reset the ACK. With
/// `tcp_syncookies=1` and room in the SYN queue the kernel would not, so every SYN goes to
/// it (`kernel_cookie_declined`) and completes through its SYN queue; with 0, set while the
/// daemon runs, the same. Back at 2, XDP answers again.
///
/// On the code before this rule (XDP minting with `bpf_tcp_raw_gen_syncookie_*` whatever
/// the listener's state), every one of these handshakes was reset: 10 of 10 IPv4
/// connections failed with "Connection reset by peer" under `tcp_syncookies=1`.
#[test]
fn kernel_cookie_handoff_answers_only_where_the_kernel_would_send_a_cookie() -> Result<()> {
    if !root_or_skip("kernel_cookie_handoff_answers_only_where_the_kernel_would") {
        return Ok(());
    }
    let topo = topology()?;
    let _daemon = start_kernel_cookie(&topo, "1")?;
    let iface = topo.server_iface().to_string();
    let server = topo.start_server(PORT)?;
    let total = 2 * N as u64;
    for syncookies in ["1", "0"] {
        topo.set_sysctl(Role::Srv, "net.ipv4.tcp_syncookies", syncookies)?;
        let before = Counters::read(&iface)?;
        handshakes(&topo)?;
        let d = Counters::read(&iface)?.delta(&before);
        println!("tcp_syncookies={syncookies}: {:?}", d.nonzero());
        assert_eq!(
            d.get(Counter::KernelCookieDeclined),
            total,
            "tcp_syncookies={syncookies}: {:?}",
            d.nonzero()
        );
        assert_eq!(d.get(Counter::CookieSent), 0, "{:?}", d.nonzero());
    }
    topo.set_sysctl(Role::Srv, "net.ipv4.tcp_syncookies", "2")?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    assert_all_answered(&Counters::read(&iface)?.delta(&before), "back at 2");
    assert_eq!(server.stop().accepted, 3 * total);
    Ok(())
}

/// A full accept queue: the kernel drops a SYN it has no room for, and the client retries;
/// a cookie XDP sent anyway would leave a client that believes it is connected while the
/// kernel drops its ACK. So XDP declines while the queue is full, and answers the client's
/// retry once the application has accepted.
///
/// On the code before this rule the third SYN was answered at once (`cookie_sent`).
#[test]
fn kernel_cookie_handoff_declines_while_the_accept_queue_is_full() -> Result<()> {
    if !root_or_skip("kernel_cookie_handoff_declines_while_the_accept_queue_is_full") {
        return Ok(());
    }
    let topo = topology()?;
    let _daemon = start_kernel_cookie(&topo, "2")?;
    let iface = topo.server_iface().to_string();
    let addr = topo.server_addr(Family::V4, PORT);
    // Backlog 1: the kernel counts the queue full once it holds two connections.
    let listener = in_netns(&topo.srv.netns, || {
        let l = TcpListener::bind(addr)?;
        listen(&l, Backlog::new(1)?)?;
        Ok(l)
    })?;
    let cli = topo.cli.netns.clone();
    let connect = move || {
        in_netns(&cli, || {
            Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(10))?)
        })
    };
    let _queued = [connect()?, connect()?];
    let before = Counters::read(&iface)?;
    let third = std::thread::spawn(connect);
    std::thread::sleep(Duration::from_millis(500));
    let d = Counters::read(&iface)?.delta(&before);
    println!("accept queue full: {:?}", d.nonzero());
    assert!(
        d.get(Counter::KernelCookieDeclined) >= 1,
        "{:?}",
        d.nonzero()
    );
    assert_eq!(d.get(Counter::CookieSent), 0, "{:?}", d.nonzero());
    assert!(
        !third.is_finished(),
        "connected while the accept queue was full"
    );
    for _ in 0..2 {
        listener.accept()?;
    }
    let _third = third.join().expect("connect thread")?;
    let d = Counters::read(&iface)?.delta(&before);
    println!("after accept: {:?}", d.nonzero());
    assert_eq!(
        d.get(Counter::CookieSent),
        1,
        "the retry: {:?}",
        d.nonzero()
    );
    listener.accept()?;
    Ok(())
}

/// A reuseport group keeps one overflow stamp for all its sockets, and the kernel reads
/// that one: three `SO_REUSEPORT` listeners per address, and XDP answers every SYN with a
/// cookie minted on whichever socket of the group its lookup picks; the kernel takes every
/// ACK, whichever socket it reaches.
#[test]
fn kernel_cookie_handoff_serves_reuseport_groups() -> Result<()> {
    if !root_or_skip("kernel_cookie_handoff_serves_reuseport_groups") {
        return Ok(());
    }
    let topo = topology()?;
    let _daemon = start_kernel_cookie(&topo, "2")?;
    let iface = topo.server_iface().to_string();
    let mut opts = ServerOptions::new(
        PORT,
        vec![
            topo.server_addr(Family::V4, PORT).ip(),
            topo.server_addr(Family::V6, PORT).ip(),
        ],
    );
    opts.reuseport = 3;
    let server = Server::start(&topo.srv.netns, opts)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    let d = Counters::read(&iface)?.delta(&before);
    println!("reuseport groups: {:?}", d.nonzero());
    assert_all_answered(&d, "reuseport groups");
    assert_eq!(server.stop().accepted, 2 * N as u64);
    Ok(())
}

/// The key both ends of the signed test connection use.
const MD5_KEY: &[u8] = b"synguard-md5-test-key";

/// `TCP_MD5SIG` on `fd` for the peer at `peer` (IPv4): the kernel's `struct tcp_md5sig`,
/// the peer's `sockaddr_in` in its 128-byte `sockaddr_storage`, then flags, prefix length,
/// key length, ifindex and the key (80 bytes at most). No crate has the struct.
fn set_md5(fd: &impl std::os::fd::AsRawFd, peer: std::net::Ipv4Addr) -> Result<()> {
    let mut sig = [0u8; 216];
    sig[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sig[4..8].copy_from_slice(&peer.octets());
    sig[130..132].copy_from_slice(&(MD5_KEY.len() as u16).to_ne_bytes());
    sig[136..136 + MD5_KEY.len()].copy_from_slice(MD5_KEY);
    // SAFETY: `sig` is a live buffer of the struct's 216 bytes; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            sig.as_ptr().cast(),
            sig.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        anyhow::bail!("TCP_MD5SIG: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A real TCP-MD5 connection (RFC 2385, as BGP peers use): the listener and the client
/// share a key, so the kernel signs its SYN+ACK and drops an unsigned one. synguard leaves
/// the signed SYN to the kernel (`tcp_signature`) in both handoffs that answer SYNs, and
/// passes the ACK of the kernel's cookie (`tcp_syncookies=2`: `kernel_cookie_pass` under
/// kfunc, `cookie_ack_valid` under kernel-cookie). Then data flows.
///
/// On the code before, XDP answered the SYN with an unsigned SYN+ACK, which the client
/// discarded, so the connect timed out; under kfunc the ACK of a kernel cookie was also
/// dropped in `always` mode.
#[test]
fn signed_syns_are_left_to_the_kernel_which_signs_its_answer() -> Result<()> {
    if !root_or_skip("signed_syns_are_left_to_the_kernel") {
        return Ok(());
    }
    for handoff in ["kfunc", "kernel-cookie"] {
        let topo = topology()?;
        topo.set_sysctl(Role::Srv, "net.ipv4.tcp_syncookies", "2")?;
        let _daemon = start(&topo, handoff)?;
        let iface = topo.server_iface().to_string();
        let addr = topo.server_addr(Family::V4, PORT);
        let cli_ip = topo.cli.ipv4;
        let listener = in_netns(&topo.srv.netns, || {
            let l = TcpListener::bind(addr)?;
            set_md5(&l, cli_ip)?;
            Ok(l)
        })?;
        let before = Counters::read(&iface)?;
        let mut client = in_netns(&topo.cli.netns, || {
            use nix::sys::socket::{
                AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt,
            };
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            set_md5(&fd, topo.srv.ipv4)?;
            // connect(2) gives up after this, rather than after every SYN retry.
            setsockopt(
                &fd,
                sockopt::SendTimeout,
                &nix::sys::time::TimeVal::new(5, 0),
            )?;
            let std::net::SocketAddr::V4(v4) = addr else {
                unreachable!("an IPv4 server address")
            };
            connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))
                .map_err(|e| anyhow::anyhow!("{handoff}: signed connect: {e}"))?;
            Ok(TcpStream::from(fd))
        })?;
        let (mut conn, _) = listener.accept()?;
        use std::io::{Read, Write};
        client.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        let d = Counters::read(&iface)?.delta(&before);
        println!("{handoff}, signed connection: {:?}", d.nonzero());
        assert_eq!(
            d.get(Counter::TcpSignature),
            1,
            "{handoff}: {:?}",
            d.nonzero()
        );
        assert_eq!(
            d.get(Counter::CookieSent),
            0,
            "{handoff}: {:?}",
            d.nonzero()
        );
        let passed = d.get(Counter::KernelCookiePass) + d.get(Counter::CookieAckValid);
        assert_eq!(passed, 1, "{handoff}: the ACK: {:?}", d.nonzero());
    }
    Ok(())
}

/// `net.ipv4.tcp_timestamps=0` (a hardening guide's setting) leaves the kfunc handoff
/// nothing to restore synguard's cookie options with, so `run` refuses it, naming the fix;
/// the kernel-cookie handoff needs no such sysctl (XDP's SYN+ACK carries no options the
/// kernel must decode), so it runs, and XDP answers every SYN.
///
/// On the code before, every handoff was refused without it.
#[test]
fn only_the_kfunc_handoff_needs_the_option_sysctls() -> Result<()> {
    if !root_or_skip("only_the_kfunc_handoff_needs_the_option_sysctls") {
        return Ok(());
    }
    let topo = topology()?;
    topo.set_sysctl(Role::Srv, "net.ipv4.tcp_timestamps", "0")?;
    let iface = topo.server_iface().to_string();
    let port = PORT.to_string();
    let mut args = vec!["run", "--iface", iface.as_str()];
    args.extend(test_run_args("always", &port, &["--handoff", "kfunc"]));
    let err = Synguard::new(BIN, &topo.srv.netns)
        .owned_by(topo.id())
        .fails(&args)?;
    assert!(
        err.contains("the kfunc handoff needs these sysctls")
            && err.contains("sysctl -w net.ipv4.tcp_timestamps=1"),
        "{err}"
    );
    assert!(!pin_dir(&iface).exists(), "the refusal left pins");

    let _daemon = start_kernel_cookie(&topo, "2")?;
    let server = topo.start_server(PORT)?;
    let before = Counters::read(&iface)?;
    handshakes(&topo)?;
    assert_all_answered(&Counters::read(&iface)?.delta(&before), "tcp_timestamps=0");
    assert_eq!(server.stop().accepted, 2 * N as u64);
    Ok(())
}
