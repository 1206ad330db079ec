//! Live data-path tests: real kernel clients and a real server on veth, synguard's XDP and
//! TC programs in between, and the counters, sockets and packets that result.
//!
//! Every test builds its own namespaces (per-run names) and tears them down on drop, even
//! when an assertion fails. They need root; without it they fail under CI and skip
//! otherwise.

use std::{
    collections::HashMap,
    io::Write,
    net::TcpStream,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use synguard_common::{
    flags::{self, FlagVerdict},
    maps::{Counter, State, names},
    testutil::{Seg, linux_syn_options, read_reply},
};
use synguard_harness::{
    ClientOptions, Family, FloodKind, FloodOptions, NsChild, Role, Topology, TopologyOptions,
    exclusive_cores, flood, netns, root_or_skip,
};

const PORT: u16 = 8080;

/// A topology with a server on PORT and synguard attached to the server's veth.
struct Fixture {
    daemon: Option<NsChild>,
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
        let daemon = start_daemon(&topo.srv.netns, topo.server_iface(), mode, ports, extra)?;
        Ok(Fixture {
            daemon: Some(daemon),
            topo,
        })
    }

    fn counters(&self) -> Result<Counters> {
        Counters::read(self.topo.server_iface())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.stop(Duration::from_secs(5));
        }
    }
}

fn pin_dir(iface: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/synguard").join(iface)
}

/// Runs `synguard run` in `ns` and waits until both programs are attached.
fn start_daemon(ns: &str, iface: &str, mode: &str, ports: &str, extra: &[&str]) -> Result<NsChild> {
    let mut cmd = netns::command(ns, env!("CARGO_BIN_EXE_synguard"));
    cmd.args(["run", "--iface", iface, "--ports", ports, "--mode", mode]);
    // No metrics endpoint: the bare test namespaces have no loopback up.
    cmd.args(["--xdp-mode", "generic", "--metrics", "off"])
        .args(extra);
    let mut child = NsChild::spawn(&mut cmd, false, None)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pin_dir(iface).join("link_tc").exists() {
        if let Some(status) = child.try_wait()? {
            bail!("synguard run exited early: {status}");
        }
        if Instant::now() > deadline {
            bail!("synguard did not attach to {iface} within 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// Runs a `synguard` command (`args`, then `--iface iface`) in `ns`; its stderr on failure.
fn synguard_cli(ns: &str, iface: &str, args: &[&str]) -> Result<()> {
    let out = netns::command(ns, env!("CARGO_BIN_EXE_synguard"))
        .args(args)
        .args(["--iface", iface])
        .output()?;
    if !out.status.success() {
        bail!(
            "synguard {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Per-reason counters summed over CPUs, read straight from the pinned map.
#[derive(Clone, Debug, Default)]
struct Counters(HashMap<&'static str, u64>);

impl Counters {
    fn read(iface: &str) -> Result<Counters> {
        let data = MapData::from_pin(pin_dir(iface).join(names::COUNTERS))
            .context("opening the pinned COUNTERS map")?;
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
        let mut out = HashMap::new();
        for &c in Counter::ALL {
            out.insert(c.name(), map.get(&(c as u32), 0)?.iter().sum());
        }
        Ok(Counters(out))
    }

    fn get(&self, c: Counter) -> u64 {
        self.0[c.name()]
    }

    /// What changed since `before`, as (name, delta) for every counter that moved.
    fn delta(&self, before: &Counters) -> HashMap<&'static str, u64> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let d = v - before.0[k];
                (d != 0).then_some((*k, d))
            })
            .collect()
    }
}

/// An nftables rule in `ns` counting SYNs to PORT that reach the IP input path, i.e. that
/// got past XDP to the kernel's listener.
fn install_syn_counter(ns: &str) -> Result<()> {
    let rules = format!(
        "table inet sgtest {{\n chain input {{\n type filter hook input priority -300;\n \
         tcp dport {PORT} tcp flags & (syn | ack) == syn counter\n }}\n}}\n"
    );
    let out = netns::command(ns, "nft")
        .args(["-f", "-"])
        .stdin_str(&rules)?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
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

trait StdinStr {
    fn stdin_str(&mut self, input: &str) -> Result<std::process::Output>;
}

impl StdinStr for Command {
    fn stdin_str(&mut self, input: &str) -> Result<std::process::Output> {
        use std::process::Stdio;
        let mut child = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }
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
    assert_eq!(d.get("cookie_sent").copied(), Some(total), "{d:?}");
    assert_eq!(d.get("cookie_ack_valid").copied(), Some(total), "{d:?}");
    assert_eq!(d.get("reqsk_assigned").copied(), Some(total), "{d:?}");
    for absent in [
        "syn_passed",
        "reqsk_failed",
        "cookie_ack_invalid",
        "malformed",
    ] {
        assert_eq!(d.get(absent), None, "{absent} moved: {d:?}");
    }
    assert!(
        d.get("established_pass").copied().unwrap_or(0) > total,
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

/// Two namespaces joined by one veth pair, no bridge: frames sent raw from `b` reach
/// synguard on `a` exactly as written (with their VLAN tag in the data).
struct Pair {
    a: String,
    b: String,
    a_if: String,
    b_if: String,
}

impl Pair {
    fn new() -> Result<Pair> {
        let tag = format!("{:x}{:x}", std::process::id(), fastrand_u16());
        let p = Pair {
            a: format!("sgp{tag}a"),
            b: format!("sgp{tag}b"),
            a_if: format!("sgp{tag}a"),
            b_if: format!("sgp{tag}b"),
        };
        run(Command::new("ip").args(["netns", "add", &p.a]))?;
        run(Command::new("ip").args(["netns", "add", &p.b]))?;
        run(Command::new("ip").args([
            "link", "add", &p.a_if, "netns", &p.a, "type", "veth", "peer", "name", &p.b_if,
            "netns", &p.b,
        ]))?;
        for (ns, i, addr) in [
            (&p.a, &p.a_if, "198.18.9.1/24"),
            (&p.b, &p.b_if, "198.18.9.2/24"),
        ] {
            run(Command::new("ip").args(["-n", ns, "link", "set", i, "up"]))?;
            run(Command::new("ip").args(["-n", ns, "addr", "add", addr, "dev", i]))?;
        }
        Ok(p)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

fn fastrand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (t.subsec_nanos() ^ (t.as_secs() as u32)) as u16
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// An AF_PACKET socket on `iface` in the calling thread's namespace that reports the VLAN
/// tag the kernel strips on receive (PACKET_AUXDATA).
struct RawSock {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSock {
    fn open(iface: &str) -> Result<RawSock> {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(iface)?;
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            bail!("no interface {iface}");
        }
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex;
        let one: libc::c_int = 1;
        unsafe {
            if libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                size_of_val(&sll) as u32,
            ) != 0
            {
                bail!("bind: {}", std::io::Error::last_os_error());
            }
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                &one as *const _ as *const libc::c_void,
                4,
            );
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                size_of_val(&tv) as u32,
            );
        }
        Ok(RawSock { fd, ifindex })
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                size_of_val(&sll) as u32,
            )
        };
        if n != frame.len() as isize {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next incoming frame (with its VLAN tag put back in place, if it had one) that
    /// `keep` accepts, within `timeout`.
    fn recv_matching(
        &self,
        timeout: Duration,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut buf = [0u8; 2048];
            let mut ctrl = [0u8; 256];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = size_of_val(&from) as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctrl.as_mut_ptr().cast();
            msg.msg_controllen = ctrl.len();
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n < 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut frame = buf[..n as usize].to_vec();
            // SAFETY: walking the control messages recvmsg filled in.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux =
                            (libc::CMSG_DATA(c) as *const libc::tpacket_auxdata).read_unaligned();
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            let mut tag = tpid.to_be_bytes().to_vec();
                            tag.extend(aux.tp_vlan_tci.to_be_bytes());
                            frame.splice(12..12, tag);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            if keep(&frame) {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }
}

fn mac_of(ns: &str, iface: &str) -> Result<[u8; 6]> {
    synguard_harness::netns::link_mac(ns, iface)
}

/// A client SYN from b to a's PORT, with Linux's usual options.
fn syn_frame(p: &Pair, vlan: Option<u16>, flags: u8, seq: u32) -> Result<Vec<u8>> {
    syn_frame_from(p, 50, vlan, flags, seq)
}

/// As [`syn_frame`], from 198.18.9.`src`: an address b does not own, so b's stack ignores
/// our SYN+ACK instead of answering it with a RST (which synguard would count), while the
/// raw socket still sees it.
fn syn_frame_from(p: &Pair, src: u8, vlan: Option<u16>, flags: u8, seq: u32) -> Result<Vec<u8>> {
    let mut s = Seg::syn4();
    s.vlan = vlan;
    s.src[..4].copy_from_slice(&[198, 18, 9, src]);
    s.dst[..4].copy_from_slice(&[198, 18, 9, 1]);
    s.dport = PORT;
    s.sport = 40000 + (seq % 20000) as u16;
    s.seq = seq;
    s.flags = flags;
    s.options = linux_syn_options(0x1234_5678);
    let mut f = s.frame();
    f[..6].copy_from_slice(&mac_of(&p.a, &p.a_if)?);
    f[6..12].copy_from_slice(&mac_of(&p.b, &p.b_if)?);
    Ok(f)
}

#[test]
fn vlan_tagged_syn_gets_a_syn_ack_with_the_same_tag() -> Result<()> {
    if !root_or_skip("vlan_tagged_syn") {
        return Ok(());
    }
    let pair = Pair::new()?;
    let mut daemon = start_daemon(&pair.a, &pair.a_if, "always", &PORT.to_string(), &[])?;
    let (b, b_if) = (pair.b.clone(), pair.b_if.clone());
    let syn = syn_frame(&pair, Some(0x2064), flags::SYN, 0xdead_beef)?;
    let reply = netns::in_netns(&b, move || {
        let sock = RawSock::open(&b_if)?;
        sock.send(&syn)?;
        sock.recv_matching(Duration::from_secs(2), |f| {
            f.len() > 60 && f[12..14] == [0x81, 0x00]
        })
    })?;
    let _ = daemon.stop(Duration::from_secs(5));
    let reply = reply.context("no tagged reply to a tagged SYN")?;
    let r = read_reply(&reply);
    assert_eq!(r.vlan, Some(0x2064), "tag changed");
    assert_eq!(r.flags, flags::SYN | flags::ACK);
    assert_eq!(r.ack, 0xdead_beef_u32.wrapping_add(1));
    assert_eq!(r.dst_mac, mac_of(&pair.b, &pair.b_if)?);
    assert_eq!(r.src, [198, 18, 9, 1]);
    assert_eq!(r.dst, [198, 18, 9, 50]);
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
    let pair = Pair::new()?;
    let mut daemon = start_daemon(&pair.a, &pair.a_if, "always", &PORT.to_string(), &[])?;
    let (b, b_if) = (pair.b.clone(), pair.b_if.clone());
    let a_if = pair.a_if.clone();
    let frames: Vec<Vec<u8>> = (0..=255u8)
        .map(|f| syn_frame(&pair, None, f, 1000 + u32::from(f)))
        .collect::<Result<_>>()?;
    let result = netns::in_netns(&b, move || {
        let sock = RawSock::open(&b_if)?;
        let mut wrong = Vec::new();
        for (f, frame) in frames.iter().enumerate() {
            let f = f as u8;
            let before = Counters::read(&a_if)?;
            sock.send(frame)?;
            let want = expected_counter(f);
            let deadline = Instant::now() + Duration::from_secs(2);
            let delta = loop {
                let d = Counters::read(&a_if)?.delta(&before);
                if d.contains_key(want.name()) || Instant::now() > deadline {
                    break d;
                }
                thread::sleep(Duration::from_millis(2));
            };
            let verdict_counters: Vec<_> = delta
                .iter()
                .filter(|(k, _)| !["packets_seen", "syn_seen"].contains(k))
                .collect();
            if verdict_counters != [(&want.name(), &1)] {
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
    let _ = daemon.stop(Duration::from_secs(5));
    assert!(
        result.is_empty(),
        "{} combinations misjudged:\n{}",
        result.len(),
        result.join("\n")
    );
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
    // 10^7 forged ACKs, each checked against two keys with at least 24 MAC bits: on average
    // 2 * 10^7 / 2^24 = 1.19 pass by chance. P(more than 10) is about 10^-6.
    opts.count = Some(10_000_000);
    let report = flood::run(&fx.topo, &opts)?;
    let d = fx.counters()?.delta(&before);
    println!("forged ACK flood: {report:?}\ncounter deltas: {d:?}");
    let invalid = d.get("cookie_ack_invalid").copied().unwrap_or(0);
    let valid = d.get("cookie_ack_valid").copied().unwrap_or(0);
    assert!(invalid > 1_000_000, "the flood barely arrived: {d:?}");
    assert!(valid <= 10, "{valid} forged ACKs passed the cookie check");
    assert!(d.get("reqsk_assigned").copied().unwrap_or(0) <= valid);
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
    let with = bulk_round_trip(&fx.topo, BYTES).with_context(|| {
        format!(
            "through synguard; counters {:?}",
            fx.counters().map(|c| c.0)
        )
    })?;
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
    fx.daemon
        .take()
        .expect("daemon")
        .stop(Duration::from_secs(5))?;
    let without = bulk_round_trip(&fx.topo, BYTES)?;
    println!(
        "bulk, {} MiB each way: {with:.2} s through synguard, {without:.2} s without ({:.0} vs {:.0} MiB/s)",
        BYTES >> 20,
        2.0 * (BYTES >> 20) as f64 / with,
        2.0 * (BYTES >> 20) as f64 / without
    );
    Ok(())
}

/// `STATE.engaged`, as the controller's hysteresis last set it.
fn engaged(iface: &str) -> Result<bool> {
    let data = MapData::from_pin(pin_dir(iface).join(names::STATE))?;
    let state: Array<_, State> = Array::try_from(Map::Array(data))?;
    Ok(state.get(&0, 0)?.engaged != 0)
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
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
    assert!(
        during.get("cookie_sent").copied().unwrap_or(0) > 200,
        "{during:?}"
    );
    assert_eq!(during.get("syn_passed"), None, "{during:?}");
    assert!(
        during.get("cookie_ack_valid").copied().unwrap_or(0) >= 20,
        "{during:?}"
    );
    assert!(
        during.get("reqsk_assigned").copied().unwrap_or(0) >= 20,
        "{during:?}"
    );

    // After the flood, the hysteresis lets go and the kernel answers again.
    wait_for("auto mode to disengage", Duration::from_secs(10), || {
        Ok(!engaged(&iface)?)
    })?;
    let before = fx.counters()?;
    clients(20)?;
    let after = fx.counters()?.delta(&before);
    assert_eq!(after.get("cookie_sent"), None, "{after:?}");
    assert!(
        after.get("syn_passed").copied().unwrap_or(0) >= 20,
        "{after:?}"
    );
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
    let synguard = |args: &[&str]| synguard_cli(&fx.topo.srv.netns, &iface, args);
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
    assert!(d.get("deny").copied().unwrap_or(0) >= 3, "{d:?}");
    assert_eq!(d.get("cookie_sent"), None, "{d:?}");

    // The allow list wins over the deny list, and bypasses the cookie.
    synguard(&["allow", "add", &cli_addr])?;
    let before = fx.counters()?;
    assert_eq!(clients(5)?, 5);
    let d = fx.counters()?.delta(&before);
    assert!(d.get("allow").copied().unwrap_or(0) >= 5, "{d:?}");
    assert_eq!(d.get("cookie_sent"), None, "{d:?}");

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
    assert_eq!(d.get("cookie_sent").copied(), Some(5), "{d:?}");
    assert_eq!(d.get("deny"), None, "{d:?}");
    assert_eq!(d.get("allow"), None, "{d:?}");
    Ok(())
}

/// Sends each frame from b and returns the counter deltas on a's synguard once the last
/// one has been seen, and how long that took.
fn send_and_count(
    pair: &Pair,
    frames: Vec<Vec<u8>>,
) -> Result<(HashMap<&'static str, u64>, Duration)> {
    let (b, b_if, a_if) = (pair.b.clone(), pair.b_if.clone(), pair.a_if.clone());
    let n = frames.len() as u64;
    netns::in_netns(&b, move || {
        let before = Counters::read(&a_if)?;
        let sock = RawSock::open(&b_if)?;
        let t = Instant::now();
        for f in &frames {
            sock.send(f)?;
        }
        wait_for("every frame to be judged", Duration::from_secs(5), || {
            Ok(Counters::read(&a_if)?.get(Counter::SynSeen) >= before.get(Counter::SynSeen) + n)
        })?;
        Ok((Counters::read(&a_if)?.delta(&before), t.elapsed()))
    })
}

#[test]
fn per_source_limit_and_synack_cap_apply_on_a_live_veth() -> Result<()> {
    if !root_or_skip("per_source_limit_and_synack_cap") {
        return Ok(());
    }
    let pair = Pair::new()?;
    // 10 SYN/s per source with a bucket of 10; no machine-wide cap yet.
    let mut daemon = start_daemon(
        &pair.a,
        &pair.a_if,
        "always",
        &PORT.to_string(),
        &["--src-syn-rate", "10", "--src-syn-burst", "10"],
    )?;
    let run = || -> Result<()> {
        // 100 SYNs from one source in a few milliseconds: the bucket's 10, then drops.
        let frames = (0..100)
            .map(|i| syn_frame(&pair, None, flags::SYN, 7000 + i))
            .collect::<Result<_>>()?;
        let (d, took) = send_and_count(&pair, frames)?;
        let (sent, limited) = (
            d["cookie_sent"],
            d.get("rate_limited").copied().unwrap_or(0),
        );
        // The bucket's 10, plus what 10/s refills while the frames were being sent.
        let refill = (took.as_secs_f64() * 10.0).ceil() as u64;
        assert!((10..=10 + refill).contains(&sent), "{d:?} in {took:?}");
        assert_eq!(sent + limited, 100, "{d:?}");

        // The machine-wide SYN+ACK cap: 10/s is stored per CPU (rounded up), and each
        // CPU's bucket starts with one second's worth, so at most 10 get through in total.
        synguard_cli(&pair.a, &pair.a_if, &["set", "src_syn_rate", "0"])?;
        synguard_cli(&pair.a, &pair.a_if, &["set", "synack_rate", "10"])?;
        // Distinct sources, so only the cap can bite.
        let frames = (0..100u32)
            .map(|i| syn_frame_from(&pair, 100 + i as u8, None, flags::SYN, 9000 + i))
            .collect::<Result<_>>()?;
        let (d, _) = send_and_count(&pair, frames)?;
        let (sent, capped) = (
            d["cookie_sent"],
            d.get("synack_cap_hit").copied().unwrap_or(0),
        );
        assert!(sent <= 10, "cap exceeded: {d:?}");
        assert!(sent >= 1, "{d:?}");
        assert_eq!(sent + capped, 100, "{d:?}");
        assert_eq!(d.get("rate_limited"), None, "{d:?}");
        Ok(())
    };
    let result = run();
    let _ = daemon.stop(Duration::from_secs(5));
    result
}
