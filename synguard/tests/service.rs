//! The daemon's side of the service contracts, live on veth: the config file as the source
//! of truth (lists at start), SIGHUP reloads (good and bad), the SIGUSR2 handover a restart
//! uses (no gap, same keys), sd_notify readiness/status/watchdog through a test
//! NOTIFY_SOCKET, and journald priority prefixes. systemd does not run here; these drive
//! the same signals, sockets and environment it would.
//!
//! Root only; without it they skip (and fail under CI), like the other live tests.

use std::{
    fs,
    net::TcpListener,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use synguard_common::{
    flags,
    maps::{Counter, names},
    testutil::{Seg, read_reply},
};
use synguard_harness::synguard::wait_for;
use synguard_harness::{
    ClientOptions, Counters, Family, RawSock, Role, Signal, Synguard, Topology, TopologyOptions,
    VethPair, fixture::PAIR_V4_NET, netns, pin_dir, process::NsChild, root_or_skip,
};

/// The binary under test; `SYNGUARD_TEST_BIN` points these tests at another build (e.g. an
/// older one, to see which contracts it breaks).
fn bin() -> &'static str {
    static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::env::var("SYNGUARD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_synguard").into())
    });
    &BIN
}
const PORT: u16 = 8080;
const PORT2: u16 = 8081;

/// A `synguard run` whose stdout and stderr go to one file, so the test sees exactly the
/// bytes journald would (and can hand it a JOURNAL_STREAM naming that file).
struct Run {
    child: NsChild,
    log: PathBuf,
}

impl Run {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "synguard exited ({st}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "synguard did not log {needle:?} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log occurrences of `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    fn exit(&mut self, sig: Signal) -> Result<ExitStatus> {
        self.child.signal(sig);
        self.child
            .wait_timeout(Duration::from_secs(10))?
            .with_context(|| format!("synguard did not exit on {sig}:\n{}", self.log()))
    }
}

/// Spawns `cmd` (a `synguard run` in some namespace) with its output in `log`, and waits
/// until it is attached (its log says so and the TC link is pinned).
fn spawn(
    cmd: &mut Command,
    spawn: impl FnOnce(&mut Command) -> Result<NsChild>,
    log: &Path,
    iface: &str,
) -> Result<Run> {
    let f = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .env("RUST_LOG", "info");
    let mut r = Run {
        child: spawn(cmd)?,
        log: log.to_path_buf(),
    };
    r.wait_log("synguard attached to", Duration::from_secs(30))?;
    wait_for("the TC link pin", Duration::from_secs(10), || {
        Ok(pin_dir(iface).join(names::TC_LINK).exists())
    })?;
    Ok(r)
}

/// A per-test directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("synguard-service-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn list(sg: &Synguard, which: &str, iface: &str) -> Result<Vec<String>> {
    Ok(serde_json::from_str(
        &sg.ok(&[which, "list", "--iface", iface, "--json"])?,
    )?)
}

/// The config file owns the lists and ports at start; SIGHUP applies a changed deny list and
/// changed ports live (the data path follows, seen with real handshakes and counters); a
/// broken file is refused with a log line, changes nothing, and the daemon stays up.
#[test]
fn config_owns_the_lists_and_sighup_applies_it_live() -> Result<()> {
    if !root_or_skip("config_owns_the_lists_and_sighup_applies_it_live") {
        return Ok(());
    }
    let topo = Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })?;
    let iface = topo.server_iface().to_string();
    let dir = Dir::new(topo.suffix());
    let c = topo.cli.ipv4.octets();
    let cli_net = format!("{}.{}.{}.0/24", c[0], c[1], c[2]);
    let conf = |ports: &str, allow: &str, deny: &str| {
        format!(
            "iface = \"{iface}\"\nmode = \"always\"\nxdp_mode = \"generic\"\nmetrics = \"off\"\n\
             ports = [{ports}]\nallow = [{allow}]\ndeny = [{deny}]\n"
        )
    };
    let path = dir.file(
        "synguard.toml",
        &conf(
            &PORT.to_string(),
            "\"192.0.2.0/24\"",
            &format!("\"{cli_net}\""),
        ),
    );
    let sg = Synguard::new(bin(), &topo.srv.netns);
    let _s1 = topo.start_server(PORT)?;
    let _s2 = topo.start_server(PORT2)?;
    let mut cmd = topo.command(Role::Srv, bin());
    cmd.args(["run", "--config", path.to_str().unwrap()]);
    let mut d = spawn(
        &mut cmd,
        |c| topo.spawn(c, true),
        &dir.0.join("log"),
        &iface,
    )?;
    let clients = |port: u16, n: usize| -> Result<(usize, Counters)> {
        let before = Counters::read(&iface)?;
        let mut opts = ClientOptions::new(topo.server_addr(Family::V4, port), n);
        opts.timeout = Duration::from_secs(1);
        let ok = topo.run_clients(&opts)?.ok();
        Ok((ok, Counters::read(&iface)?.delta(&before)))
    };

    // At start: the lists are the file's, and the deny list drops the client's /24.
    assert_eq!(list(&sg, "deny", &iface)?, std::slice::from_ref(&cli_net));
    assert_eq!(list(&sg, "allow", &iface)?, ["192.0.2.0/24"]);
    let (ok, d1) = clients(PORT, 3)?;
    assert_eq!(ok, 0, "denied clients connected: {d1:?}");
    assert!(d1.get(Counter::Deny) >= 3, "{d1:?}");

    // A live change works, and says it is not in the file.
    let out = sg.ok(&["deny", "add", "--iface", &iface, "203.0.113.0/24"])?;
    assert!(
        out.contains("not in the config file") && out.contains(path.to_str().unwrap()),
        "{out}"
    );

    // SIGHUP with the deny list emptied and the ports moved to PORT2.
    fs::write(&path, conf(&PORT2.to_string(), "", ""))?;
    d.child.signal(Signal::SIGHUP);
    d.wait_log("change(s)", Duration::from_secs(10))?;
    let log = d.log();
    assert!(log.contains("reload: ports = 8081 (was 8080)"), "{log}");
    assert!(
        log.contains(&format!("removed {cli_net} from the deny list")),
        "{log}"
    );
    assert!(
        log.contains("removed 203.0.113.0/24 from the deny list"),
        "{log}"
    );
    assert!(
        log.contains("removed 192.0.2.0/24 from the allow list"),
        "{log}"
    );
    assert!(list(&sg, "deny", &iface)?.is_empty());
    assert!(list(&sg, "allow", &iface)?.is_empty());
    // PORT is no longer protected (the kernel answers), PORT2 is (cookies).
    let (ok, d2) = clients(PORT, 5)?;
    assert_eq!(ok, 5, "{d2:?}");
    assert_eq!(d2.get(Counter::CookieSent), 0, "{d2:?}");
    assert_eq!(d2.get(Counter::Deny), 0, "{d2:?}");
    let (ok, d3) = clients(PORT2, 5)?;
    assert_eq!(ok, 5, "{d3:?}");
    assert_eq!(d3.get(Counter::CookieSent), 5, "{d3:?}");

    // Broken files: each refused with the reason, nothing changes, the daemon stays up.
    for (i, bad) in [
        format!(
            "{}ttl = 0\n",
            conf(&PORT.to_string(), "", &format!("\"{cli_net}\""))
        ),
        "this is not toml".to_string(),
        conf(&PORT.to_string(), "", "\"10.1.2.3/8\""),
        conf(&PORT.to_string(), "", "").replace(&iface, "other0"),
    ]
    .iter()
    .enumerate()
    {
        fs::write(&path, bad)?;
        let refused = d.count("reload refused");
        d.child.signal(Signal::SIGHUP);
        wait_for("the refusal", Duration::from_secs(10), || {
            Ok(d.count("reload refused") > refused)
        })?;
        assert!(
            d.child.try_wait()?.is_none(),
            "daemon died on bad config {i}"
        );
        assert!(
            list(&sg, "deny", &iface)?.is_empty(),
            "bad config {i} applied"
        );
        let (ok, dd) = clients(PORT2, 2)?;
        assert_eq!(
            (ok, dd.get(Counter::CookieSent)),
            (2, 2),
            "bad config {i}: {dd:?}"
        );
    }
    let log = d.log();
    for needle in [
        "ttl must be between 1 and 255",
        "invalid TOML",
        "host bits",
        "cannot move",
    ] {
        assert!(log.contains(needle), "{needle}: {log}");
    }
    // SIGTERM still detaches (systemctl stop).
    assert!(d.exit(Signal::SIGTERM)?.success(), "{}", d.log());
    assert!(!pin_dir(&iface).exists());
    Ok(())
}

/// A SYN from host `src` of the pair's /24 (which b does not own, so b's stack ignores the
/// SYN+ACK) to a's PORT, no options.
fn seg(pair: &VethPair, src: u8, sport: u16, seq: u32, ack: u32, fl: u8) -> Vec<u8> {
    let mut s = Seg::syn4();
    let [n0, n1, n2] = PAIR_V4_NET;
    s.src[..4].copy_from_slice(&[n0, n1, n2, src]);
    s.dst[..4].copy_from_slice(&pair.a.ipv4.octets());
    s.sport = sport;
    s.dport = PORT;
    s.seq = seq;
    s.ack = ack;
    s.flags = fl;
    s.options = Vec::new();
    let mut f = s.frame();
    f[..6].copy_from_slice(&pair.a.mac);
    f[6..12].copy_from_slice(&pair.b.mac);
    f
}

/// Sends a SYN from b and returns synguard's SYN+ACK cookie (its sequence number).
fn cookie(pair: &VethPair, sport: u16, isn: u32) -> Result<u32> {
    let syn = seg(pair, 50, sport, isn, 0, flags::SYN);
    let reply = netns::in_netns(&pair.b.netns, || {
        let sock = RawSock::open(&pair.b.iface)?;
        sock.send(&syn)?;
        sock.recv_matching(Duration::from_secs(2), |f| {
            f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[36..38] == sport.to_be_bytes()
        })
    })?
    .context("no SYN+ACK")?;
    let r = read_reply(&reply);
    assert_eq!(r.flags, flags::SYN | flags::ACK);
    assert_eq!(r.ack, isn.wrapping_add(1));
    Ok(r.seq)
}

/// What the handshake-completing ACK for `cookie` moves on a's synguard.
fn ack(pair: &VethPair, sport: u16, isn: u32, cookie: u32) -> Result<Counters> {
    let before = Counters::read(&pair.a.iface)?;
    let f = seg(
        pair,
        50,
        sport,
        isn.wrapping_add(1),
        cookie.wrapping_add(1),
        flags::ACK,
    );
    netns::in_netns(&pair.b.netns, || RawSock::open(&pair.b.iface)?.send(&f))?;
    let a = pair.a.iface.clone();
    wait_for("the ACK to be judged", Duration::from_secs(5), || {
        let d = Counters::read(&a)?.delta(&before);
        Ok(d.get(Counter::CookieAckValid) + d.get(Counter::CookieAckInvalid) > 0)
    })?;
    Ok(Counters::read(&pair.a.iface)?.delta(&before))
}

/// SIGUSR2 (the unit's RestartKillSignal): the daemon exits 0 and leaves everything
/// attached, so XDP keeps answering SYNs with no daemon; the next run takes over the same
/// keys, so the ACK of a cookie minted before the restart is accepted, and the lists and
/// counters are still there.
#[test]
fn a_handover_restart_keeps_answering_and_keeps_the_keys() -> Result<()> {
    if !root_or_skip("a_handover_restart_keeps_answering_and_keeps_the_keys") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let dir = Dir::new(pair.suffix());
    let iface = pair.a.iface.clone();
    let _listener = netns::in_netns(&pair.a.netns, || {
        Ok(TcpListener::bind((pair.a.ipv4, PORT))?)
    })?;
    let path = dir.file(
        "synguard.toml",
        &format!(
            "iface = \"{iface}\"\nmode = \"always\"\nports = [{PORT}]\nxdp_mode = \"generic\"\n\
             metrics = \"off\"\ndeny = [\"203.0.113.0/24\"]\n"
        ),
    );
    let run = |log: &str| -> Result<Run> {
        let mut cmd = pair.command(&pair.a.netns, bin());
        cmd.args(["run", "--config", path.to_str().unwrap()]);
        spawn(&mut cmd, |c| pair.spawn(c, true), &dir.0.join(log), &iface)
    };
    let sg = pair.synguard(bin(), &pair.a);
    let mut d1 = run("log1")?;
    let c1 = cookie(&pair, 41000, 0x1111_0000)?;
    let epoch = |sg: &Synguard| -> Result<u64> {
        let s: serde_json::Value =
            serde_json::from_str(&sg.ok(&["status", "--iface", &iface, "--json"])?)?;
        s["key_epoch"].as_u64().context("key_epoch")
    };
    let e1 = epoch(&sg)?;

    let st = d1.exit(Signal::SIGUSR2)?;
    assert!(st.success(), "SIGUSR2 exit {st}:\n{}", d1.log());
    assert!(
        d1.log().contains("leaving synguard attached"),
        "{}",
        d1.log()
    );
    assert!(pin_dir(&iface).join(names::XDP_LINK).exists());
    // No daemon: the programs still answer.
    let before = Counters::read(&iface)?;
    cookie(&pair, 41001, 0x2222_0000)?;
    assert_eq!(
        Counters::read(&iface)?
            .delta(&before)
            .get(Counter::CookieSent),
        1
    );

    let d2 = run("log2")?;
    let log = d2.log();
    assert!(log.contains("took over the pinned links"), "{log}");
    assert!(log.contains("reused from the pinned maps"), "{log}");
    assert_eq!(epoch(&sg)?, e1, "keys replaced");
    let d = ack(&pair, 41000, 0x1111_0000, c1)?;
    assert_eq!(
        d.get(Counter::CookieAckValid),
        1,
        "pre-restart cookie refused: {d:?}"
    );
    // The control: a wrong cookie is refused.
    let d = ack(&pair, 41002, 0x3333_0000, c1 ^ 0x5a5a)?;
    assert_eq!(d.get(Counter::CookieAckInvalid), 1, "{d:?}");
    assert_eq!(list(&sg, "deny", &iface)?, ["203.0.113.0/24"]);
    drop(d2);
    Ok(())
}

/// Readiness through a NOTIFY_SOCKET the test binds (READY=1 with a STATUS= line, WATCHDOG=1
/// at half of WATCHDOG_USEC, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM),
/// and under a JOURNAL_STREAM naming its stderr, `<N>` priority prefixes and no timestamps.
#[test]
fn notify_socket_and_journal_stream() -> Result<()> {
    if !root_or_skip("notify_socket_and_journal_stream") {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let pair = VethPair::new()?;
    let dir = Dir::new(&format!("n{}", pair.suffix()));
    let iface = pair.a.iface.clone();
    let sock_path = dir.0.join("notify");
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let path = dir.file(
        "synguard.toml",
        &format!("iface = \"{iface}\"\nxdp_mode = \"generic\"\nmetrics = \"off\"\n"),
    );
    let log = dir.0.join("log");
    fs::File::create(&log)?;
    let meta = fs::metadata(&log)?;
    let mut cmd = pair.command(&pair.a.netns, bin());
    cmd.args(["run", "--config", path.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    // Append to the file whose dev:ino JOURNAL_STREAM names.
    let f = fs::OpenOptions::new().append(true).open(&log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .env("RUST_LOG", "info");
    let mut d = Run {
        child: pair.spawn(&mut cmd, true)?,
        log: log.clone(),
    };
    let mut msgs: Vec<String> = Vec::new();
    let mut recv_until = |what: &str, d: &mut Run| -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                if let Some(m) = msgs.last().filter(|m| m.lines().any(|l| l == what)) {
                    return Ok(m.clone());
                }
            }
            if let Some(st) = d.child.try_wait()? {
                bail!("exited ({st}) before {what}: {msgs:?}\n{}", d.log());
            }
            if Instant::now() > deadline {
                bail!("no {what}: {msgs:?}\n{}", d.log());
            }
        }
    };
    let ready = recv_until("READY=1", &mut d)?;
    assert!(
        ready.contains(&format!("STATUS=protecting {iface} (mode auto")),
        "{ready}"
    );
    assert!(
        pin_dir(&iface).join(names::TC_LINK).exists(),
        "READY=1 before attaching"
    );
    recv_until("WATCHDOG=1", &mut d)?;
    recv_until("WATCHDOG=1", &mut d)?;

    fs::write(&path, "bogus = 1\n")?;
    d.child.signal(Signal::SIGHUP);
    recv_until("RELOADING=1", &mut d)?;
    recv_until("READY=1", &mut d)?;
    d.child.signal(Signal::SIGTERM);
    recv_until("STOPPING=1", &mut d)?;
    let st = d
        .child
        .wait_timeout(Duration::from_secs(10))?
        .context("no exit")?;
    assert!(st.success(), "{st}");

    let text = d.log();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("synguard attached to")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("<3>")
            && l.contains("reload refused")
            && l.contains("unknown key")),
        "{text}"
    );
    for l in text.lines() {
        assert!(
            l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>',
            "line without a priority: {l:?}"
        );
        // env_logger's own format starts with "[2026-...": the journal stamps lines itself.
        assert!(
            !l[3..].starts_with('['),
            "timestamped under journald: {l:?}"
        );
    }
    Ok(())
}

/// The restart check: under a spoofed SYN flood, 200 legitimate handshakes run
/// across a `systemctl restart` (SIGUSR2 to the old daemon, a new one taking over), and not
/// one is lost; the config's deny list is still in place after it.
#[test]
fn a_restart_under_a_syn_flood_loses_no_handshake() -> Result<()> {
    if !root_or_skip("a_restart_under_a_syn_flood_loses_no_handshake") {
        return Ok(());
    }
    let _heavy = synguard_harness::exclusive_cores();
    let topo = Topology::new(TopologyOptions {
        server_rps: false,
        ..Default::default()
    })?;
    let iface = topo.server_iface().to_string();
    let dir = Dir::new(&format!("f{}", topo.suffix()));
    let path = dir.file(
        "synguard.toml",
        &format!(
            "iface = \"{iface}\"\nmode = \"always\"\nports = [{PORT}]\nxdp_mode = \"generic\"\n\
             metrics = \"off\"\ndeny = [\"203.0.113.0/24\"]\n"
        ),
    );
    let _server = topo.start_server(PORT)?;
    let run = |log: &str| -> Result<Run> {
        let mut cmd = topo.command(Role::Srv, bin());
        cmd.args(["run", "--config", path.to_str().unwrap()]);
        spawn(&mut cmd, |c| topo.spawn(c, true), &dir.0.join(log), &iface)
    };
    let mut d1 = run("log1")?;
    let opts = synguard_harness::FloodOptions::new(
        synguard_harness::FloodKind::Syn,
        Family::V4,
        PORT,
        Duration::from_secs(60),
    );
    let flood = synguard_harness::flood::start(&topo, &opts)?;
    // trafgen can take a while to start on a loaded 2-core machine.
    wait_for("the flood to arrive", Duration::from_secs(30), || {
        Ok(Counters::read(&iface)?.get(Counter::SynSeen) > 10_000)
    })?;
    let before = Counters::read(&iface)?;
    // 40 rounds of 5 handshakes, 50 ms apart, with the restart after the 10th: some complete
    // while the old daemon exits, while no daemon runs and during the takeover, and the last
    // 20 rounds after it.
    let done = std::sync::atomic::AtomicUsize::new(0);
    // The second half runs only once the new daemon has attached, however long a loaded
    // machine makes the takeover: handshakes on both sides of it.
    let attached = std::sync::atomic::AtomicBool::new(false);
    let (ok, d2, done_at_exit, done_at_attach) = thread::scope(|s| -> Result<_> {
        let clients = s.spawn(|| -> Result<usize> {
            let mut ok = 0;
            for round in 0..40 {
                if round == 20 {
                    wait_for("the new daemon", Duration::from_secs(60), || {
                        Ok(attached.load(std::sync::atomic::Ordering::Relaxed))
                    })?;
                }
                let mut o = ClientOptions::new(topo.server_addr(Family::V4, PORT), 5);
                o.concurrency = 5;
                let r = topo.run_clients(&o)?;
                ok += r.ok();
                if r.ok() != 5 {
                    println!("lost handshakes: {:?}", r.errors());
                }
                done.fetch_add(5, std::sync::atomic::Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
            Ok(ok)
        });
        wait_for("50 handshakes", Duration::from_secs(60), || {
            Ok(done.load(std::sync::atomic::Ordering::Relaxed) >= 50)
        })?;
        let st = d1.exit(Signal::SIGUSR2)?;
        assert!(st.success(), "{st}\n{}", d1.log());
        let done_at_exit = done.load(std::sync::atomic::Ordering::Relaxed);
        let d2 = run("log2");
        attached.store(true, std::sync::atomic::Ordering::Relaxed);
        let d2 = d2?;
        let done_at_attach = done.load(std::sync::atomic::Ordering::Relaxed);
        let ok = clients
            .join()
            .map_err(|_| anyhow::anyhow!("clients panicked"))??;
        Ok((ok, d2, done_at_exit, done_at_attach))
    })?;
    println!(
        "old daemon gone after {done_at_exit}, new one attached after {done_at_attach} of 200"
    );
    let delta = Counters::read(&iface)?.delta(&before);
    let fr = flood.stop()?;
    println!("flood: {fr:?}\ncounters: {delta:?}");
    assert!(
        done_at_exit < 200 && done_at_attach <= 100,
        "{done_at_exit} {done_at_attach}"
    );
    assert_eq!(ok, 200, "handshakes lost across the restart");
    assert!(
        d2.log().contains("took over the pinned links"),
        "{}",
        d2.log()
    );
    assert!(delta.get(Counter::CookieSent) > 200, "{delta:?}");
    assert!(delta.get(Counter::ReqskAssigned) >= 200, "{delta:?}");
    assert_eq!(delta.get(Counter::SynPassed), 0, "{delta:?}");
    let sg = Synguard::new(bin(), &topo.srv.netns);
    assert_eq!(list(&sg, "deny", &iface)?, ["203.0.113.0/24"]);
    Ok(())
}

/// Exit codes and permission errors: a non-root user is told it is a permission problem
/// (exit 5, naming the capabilities), not "not running"; a missing instance is exit 3; a
/// bad flag 2; a missing explicit --config 1.
#[test]
fn exit_codes_tell_not_running_from_permission_and_failure() -> Result<()> {
    if !root_or_skip("exit_codes_tell_not_running_from_permission_and_failure") {
        return Ok(());
    }
    let code = |cmd: &mut Command| -> Result<(i32, String)> {
        let out = cmd.output()?;
        Ok((
            out.status.code().context("killed")?,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (c, e) = code(Command::new(bin()).args(["status", "--iface", "sgnone0"]))?;
    assert_eq!(c, 3, "{e}");
    assert!(e.contains("not running on sgnone0"), "{e}");
    let (c, e) = code(Command::new(bin()).args(["status", "--iface", "a/b"]))?;
    assert_eq!(c, 2, "{e}");
    let (c, e) = code(Command::new(bin()).args(["run", "--config", "/nonexistent/synguard.toml"]))?;
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("/nonexistent/synguard.toml"), "{e}");
    // As nobody: bpffs (0700) hides whether the pins exist; that is a permission problem.
    let nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin())
        .args(args);
        c
    };
    if std::fs::metadata(names::PIN_ROOT).is_ok() {
        let (c, e) = code(&mut nobody(&["stats", "--iface", "sgnone0"]))?;
        assert_eq!(c, 5, "{e}");
        assert!(
            e.contains("permission denied") && e.contains("CAP_BPF"),
            "{e}"
        );
    }
    let (c, e) = code(&mut nobody(&["run", "--iface", "lo"]))?;
    assert_eq!(c, 5, "{e}");
    assert!(
        e.contains("permission denied") && e.contains("missing CAP_NET_ADMIN"),
        "{e}"
    );
    Ok(())
}
