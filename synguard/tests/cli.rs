//! Root integration tests for the `synguard` binary's control plane.
//!
//! Each test builds its own pair of network namespaces joined by a veth pair (names unique
//! per process and test), runs the real binary inside with `nsenter --net=/run/netns/NAME`
//! (never `ip netns exec`, whose private /sys would hide the pins), and removes everything
//! in a Drop guard, on failure too: daemons, pins, run-state files and namespaces.
//!
//! The data path is not exercised here beyond "packets are counted"; cookie behaviour is
//! tested elsewhere. Without root these tests skip, unless CI is set, where they fail.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use synguard_harness::root_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_synguard");
static SEQ: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces: `srv` holds `a` (where synguard runs, 198.18.N.1) and `peer` holds `b`
/// (its veth peer, 198.18.N.2).
struct Lab {
    srv: String,
    peer: String,
    a: String,
    b: String,
    n: u32,
    daemons: Vec<Child>,
    logs: PathBuf,
    /// More interfaces in `srv` that synguard may have pinned.
    extra_ifaces: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let logs = std::env::temp_dir().join(format!("synguard-cli-{tag}"));
        fs::create_dir_all(&logs).unwrap();
        let lab = Lab {
            srv: format!("sgt{tag}s"),
            peer: format!("sgt{tag}p"),
            a: format!("sg{tag}a"),
            b: format!("sg{tag}b"),
            n: n % 250,
            daemons: Vec::new(),
            logs,
            extra_ifaces: Vec::new(),
        };
        // From here on, Drop cleans up whatever got created.
        ip(&["netns", "add", &lab.srv]);
        ip(&["netns", "add", &lab.peer]);
        ip(&[
            "-n", &lab.srv, "link", "add", &lab.a, "type", "veth", "peer", "name", &lab.b, "netns",
            &lab.peer,
        ]);
        let (a4, b4) = (
            format!("198.18.{}.1/24", lab.n),
            format!("198.18.{}.2/24", lab.n),
        );
        ip(&["-n", &lab.srv, "addr", "add", &a4, "dev", &lab.a]);
        ip(&["-n", &lab.peer, "addr", "add", &b4, "dev", &lab.b]);
        for (ns, dev) in [(&lab.srv, &lab.a), (&lab.peer, &lab.b)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// Runs `synguard ARGS` in the srv namespace.
    fn sg(&self, args: &[&str]) -> Output {
        self.sg_in(&self.srv.clone(), args)
    }

    fn sg_in(&self, ns: &str, args: &[&str]) -> Output {
        self.cmd(ns, args).output().expect("running synguard")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.sg(args);
        assert!(
            out.status.success(),
            "synguard {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail, and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.sg(args);
        assert!(
            !out.status.success(),
            "synguard {} should have failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Starts `synguard run` in namespace `ns`; returns its index in `daemons`.
    fn spawn_in(&mut self, ns: &str, args: &[&str]) -> usize {
        let i = self.daemons.len();
        let log = fs::File::create(self.log_path(i)).unwrap();
        let child = self
            .cmd(ns, &[&["run"], args].concat())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning synguard run");
        self.daemons.push(child);
        i
    }

    fn spawn(&mut self, args: &[&str]) -> usize {
        let ns = self.srv.clone();
        self.spawn_in(&ns, args)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.logs.join(format!("daemon{i}.log"))
    }

    fn log(&self, i: usize) -> String {
        fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn signal(&mut self, i: usize, sig: i32) {
        // SAFETY: kill on our own child's pid (nsenter execs synguard in place).
        unsafe { libc::kill(self.daemons[i].id() as i32, sig) };
    }

    fn wait(&mut self, i: usize) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.daemons[i].try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {i} did not exit:\n{}",
                self.log(i)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self, iface: &str) -> Option<Value> {
        let out = self.sg(&["status", "--iface", iface, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
    }

    /// Waits until `status` reports the daemon `i` attached and running on `iface`.
    fn wait_attached(&mut self, i: usize, iface: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.status(iface)
                && s["attached"] == true
                && s["daemon_running"] == true
                && s["daemon_pid"] == self.daemons[i].id()
            {
                return s;
            }
            if let Some(st) = self.daemons[i].try_wait().unwrap() {
                panic!("daemon {i} exited early ({st}):\n{}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "daemon {i} never attached:\n{}",
                self.log(i)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn counters(&self, iface: &str) -> Value {
        let out = self.ok(&["stats", "--iface", iface, "--json", "--sample", "0s"]);
        serde_json::from_str(out.lines().next().unwrap()).unwrap()
    }

    /// Sends `n` UDP datagrams from the peer namespace to `a`, through the veth.
    fn send_udp(&self, n: usize) {
        let to = format!("198.18.{}.1:9", self.n);
        in_netns(&self.peer, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..n {
                let _ = s.send_to(b"synguard-test", &to);
                thread::sleep(Duration::from_millis(2));
            }
        });
    }

    fn pin_dir(iface: &str) -> PathBuf {
        Path::new("/sys/fs/bpf/synguard").join(iface)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        for iface in [self.a.clone(), self.b.clone()] {
            let ns = if iface == self.a {
                &self.srv
            } else {
                &self.peer
            };
            let _ = self.sg_in(ns, &["detach", "--iface", &iface, "--force"]);
            let _ = fs::remove_dir_all(Lab::pin_dir(&iface));
            let _ = fs::remove_file(format!("/run/synguard/{iface}.json"));
        }
        for ns in [&self.srv, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.logs);
    }
}

/// Runs `f` on a thread that joined network namespace `ns` (setns affects one thread).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let f_ns = fs::File::open(&path).expect("opening netns");
        // SAFETY: setns on a valid namespace fd, for this thread only.
        let rc = unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn wait_exit_ok(lab: &mut Lab, i: usize) {
    let st = lab.wait(i);
    assert!(st.success(), "daemon exited with {st}:\n{}", lab.log(i));
}

#[test]
fn run_attaches_pins_and_sigterm_detaches() {
    if !root_or_skip("run_attaches_pins_and_sigterm_detaches") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.a.clone();
    let d = lab.spawn(&["--iface", &a, "--ports", "80,443", "--mode", "always"]);
    let s = lab.wait_attached(d, &a);
    // A veth whose peer has no XDP program: auto must pick generic, and say why.
    assert_eq!(s["xdp"]["mode"], "generic", "{s}");
    assert!(
        s["xdp_reason"]
            .as_str()
            .unwrap()
            .contains("no native XDP program"),
        "{s}"
    );
    assert_eq!(s["mode"], "always");
    assert_eq!(s["ports"], "80,443");
    assert!(s["key_epoch"].as_u64().unwrap() >= 1);

    let dir = Lab::pin_dir(&a);
    for name in [
        "CONFIG", "KEYS", "STATE", "PORTS", "ALLOW4", "ALLOW6", "DENY4", "DENY6", "COUNTERS",
        "link_xdp", "link_tc",
    ] {
        let p = dir.join(name);
        assert!(p.exists(), "missing pin {}", p.display());
        assert_eq!(mode_of(&p), 0o600, "{}", p.display());
    }

    // Packets through the veth are counted.
    lab.send_udp(20);
    let c = lab.counters(&a);
    assert!(c["counters"]["packets_seen"].as_u64().unwrap() >= 20, "{c}");
    assert!(c["listeners"].is_object(), "{c}");

    // The human-readable forms work too.
    let table = lab.ok(&["stats", "--iface", &a, "--sample", "100ms"]);
    assert!(
        table.contains("packets_seen") && table.contains("SYN_RECV"),
        "{table}"
    );
    let st = lab.ok(&["status", "--iface", &a]);
    assert!(st.contains("attached      yes: XDP generic"), "{st}");

    lab.signal(d, libc::SIGTERM);
    wait_exit_ok(&mut lab, d);
    assert!(!dir.exists(), "SIGTERM must remove the pins");
    assert!(!Path::new(&format!("/run/synguard/{a}.json")).exists());
    let e = lab.fails(&["status", "--iface", &a]);
    assert!(e.contains("synguard is not running on"), "{e}");
}

#[test]
fn set_changes_config_and_rejects_bad_values() {
    if !root_or_skip("set_changes_config_and_rejects_bad_values") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.a.clone();
    let d = lab.spawn(&["--iface", &a, "--metrics", "off"]);
    lab.wait_attached(d, &a);

    for (k, v) in [
        ("mode", "monitor"),
        ("ttl", "32"),
        ("syn_rate_on", "5000"),
        ("syn-rate-off", "4000"),
        ("adv_mss4", "1400"),
        ("adv_mss6", "1380"),
        ("synack_window", "29200"),
        ("ecn", "off"),
        ("src_syn_rate", "100"),
        ("src_syn_burst", "20"),
        ("synack_rate", "1001"),
        ("ports", "22,8000-8002"),
        ("wscale", "9"),
    ] {
        let out = lab.ok(&["set", "--iface", &a, k, v]);
        assert!(out.contains(&a), "{out}");
    }
    let s = lab.status(&a).unwrap();
    assert_eq!(s["mode"], "monitor");
    assert_eq!(s["ttl"], 32);
    assert_eq!(s["syn_rate_on"], 5000);
    assert_eq!(s["syn_rate_off"], 4000);
    assert_eq!(s["adv_mss4"], 1400);
    assert_eq!(s["adv_mss6"], 1380);
    assert_eq!(s["synack_window"], 29200);
    assert_eq!(s["ecn"], false);
    assert_eq!(s["src_syn_rate"], 100);
    assert_eq!(s["src_syn_burst"], 20);
    assert_eq!(s["ports"], "22,8000-8002");
    // Stored per CPU, rounded up: at least the machine-wide rate, never less.
    let ncpu = s["synack_rate"].as_u64().unwrap() / s["synack_rate_per_cpu"].as_u64().unwrap();
    assert_eq!(
        s["synack_rate_per_cpu"].as_u64().unwrap(),
        1001u64.div_ceil(ncpu)
    );
    // wscale applies from the next rotation: the active key keeps its own.
    assert_eq!(s["wscale"], 9);
    assert_eq!(s["wscale_active"], 7);

    let before = lab.status(&a).unwrap();
    for (args, needle) in [
        (vec!["wscale", "15"], "wscale must be between 0 and 14"),
        (
            vec!["syn_rate_off", "6000"],
            "syn_rate_off (6000) must not be above syn_rate_on (5000)",
        ),
        (
            vec!["syn_rate_on", "100"],
            "must not be above syn_rate_on (100)",
        ),
        (
            vec!["adv_mss4", "535"],
            "adv_mss4 must be between 536 and 65495",
        ),
        (
            vec!["synack_window", "0"],
            "synack_window must be between 1 and 65535",
        ),
        (vec!["ttl", "0"], "ttl must be between 1 and 255"),
        (vec!["ttl", "256"], "ttl must be between 1 and 255"),
        (vec!["ttl", "x"], "whole number"),
        (
            vec!["mode", "sometimes"],
            "mode must be one of monitor, auto, always",
        ),
        (vec!["ecn", "maybe"], "ecn must be on or off"),
        (vec!["ports", "0"], "expected 1-65535"),
        (vec!["ports", "90-80"], "start 90 is above end 80"),
        (vec!["nonsense", "1"], "unknown setting \"nonsense\""),
    ] {
        let e = lab.fails(&[&["set", "--iface", &a], &args[..]].concat());
        assert!(e.contains(needle), "set {args:?}: {e}");
    }
    let after = lab.status(&a).unwrap();
    for k in [
        "mode",
        "ports",
        "ttl",
        "wscale",
        "syn_rate_on",
        "syn_rate_off",
        "adv_mss4",
        "synack_window",
        "ecn",
    ] {
        assert_eq!(before[k], after[k], "{k} changed by a rejected set");
    }

    // set on an interface synguard does not run on.
    let e = lab.fails(&["set", "--iface", "sgnope0", "ttl", "3"]);
    assert!(e.contains("synguard is not running on sgnope0"), "{e}");
}

#[test]
fn allow_and_deny_round_trip() {
    if !root_or_skip("allow_and_deny_round_trip") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.a.clone();
    let d = lab.spawn(&["--iface", &a, "--metrics", "off"]);
    lab.wait_attached(d, &a);

    let list = |lab: &Lab, which: &str| -> Vec<String> {
        serde_json::from_str(&lab.ok(&[which, "list", "--iface", &a, "--json"])).unwrap()
    };
    assert!(list(&lab, "allow").is_empty());
    lab.ok(&[
        "allow",
        "add",
        "--iface",
        &a,
        "192.0.2.0/24",
        "2001:db8::/32",
        "198.51.100.7",
    ]);
    lab.ok(&[
        "deny",
        "add",
        "--iface",
        &a,
        "203.0.113.0/24",
        "2001:db8:dead::/48",
    ]);
    assert_eq!(
        list(&lab, "allow"),
        ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32"]
    );
    assert_eq!(list(&lab, "deny"), ["203.0.113.0/24", "2001:db8:dead::/48"]);
    // Adding twice is harmless.
    let out = lab.ok(&["allow", "add", "--iface", &a, "192.0.2.0/24"]);
    assert!(out.contains("already"), "{out}");

    // Bad input: specific errors, nothing changes (all CIDRs are checked first).
    for (args, needle) in [
        (
            vec!["allow", "add", "10.0.0.0/8", "10.1.2.3/8"],
            "host bits set",
        ),
        (
            vec!["allow", "add", "10.0.0.0/8", "banana"],
            "invalid CIDR \"banana\"",
        ),
        (vec!["deny", "add", "10.0.0.0/33"], "invalid CIDR"),
        (vec!["deny", "add", "2001:db8::/129"], "invalid CIDR"),
        (
            vec!["allow", "del", "192.0.2.0/24", "10.9.9.0/24"],
            "10.9.9.0/24 is not in the allow list",
        ),
    ] {
        let full = [
            &args[..1],
            &args[1..2],
            &["--iface", a.as_str()],
            &args[2..],
        ]
        .concat();
        let e = lab.fails(&full);
        assert!(e.contains(needle), "{full:?}: {e}");
    }
    assert_eq!(
        list(&lab, "allow"),
        ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32"]
    );
    assert_eq!(list(&lab, "deny"), ["203.0.113.0/24", "2001:db8:dead::/48"]);

    lab.ok(&[
        "allow",
        "del",
        "--iface",
        &a,
        "198.51.100.7",
        "2001:db8::/32",
    ]);
    lab.ok(&["deny", "del", "--iface", &a, "2001:db8:dead::/48"]);
    assert_eq!(list(&lab, "allow"), ["192.0.2.0/24"]);
    assert_eq!(list(&lab, "deny"), ["203.0.113.0/24"]);
    let plain = lab.ok(&["deny", "list", "--iface", &a]);
    assert_eq!(plain.trim(), "203.0.113.0/24");
}

#[test]
fn bad_run_inputs_fail_and_change_nothing() {
    if !root_or_skip("bad_run_inputs_fail_and_change_nothing") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.a.clone();
    let dir = Lab::pin_dir(&a);
    let cfg = lab.logs.join("bad.toml");
    fs::write(&cfg, "mode = \"always\"\nportz = \"80\"\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let missing = lab.logs.join("missing.toml");
    let missing_s = missing.to_str().unwrap().to_string();
    for (args, needle) in [
        (
            vec!["run", "--iface", "sgnope0"],
            "no such interface in this network namespace: sgnope0",
        ),
        (
            vec!["run", "--iface", &a, "--wscale", "15"],
            "between 0 and 14",
        ),
        (
            vec!["run", "--iface", &a, "--ports", "80,0"],
            "expected 1-65535",
        ),
        (
            vec!["run", "--iface", &a, "--syn-rate-on", "10"],
            "syn_rate_off (500) must not be above syn_rate_on (10)",
        ),
        (
            vec!["run", "--iface", &a, "--adv-mss6", "1000"],
            "adv_mss6 must be between 1220",
        ),
        (
            vec!["run", "--iface", &a, "--xdp-mode", "turbo"],
            "xdp_mode must be one of auto, native, generic",
        ),
        (
            vec!["run", "--iface", &a, "--config", &cfg_s],
            "unknown key \"portz\"",
        ),
        (
            vec!["run", "--iface", &a, "--config", &missing_s],
            "reading config file",
        ),
        (vec!["run", "--ports", "80"], "--iface is required"),
        (vec!["stats", "--iface", &a], "synguard is not running on"),
        (vec!["detach", "--iface", &a], "synguard is not running on"),
        (
            vec!["allow", "list", "--iface", &a],
            "synguard is not running on",
        ),
    ] {
        let e = lab.fails(&args);
        assert!(e.contains(needle), "{args:?}: {e}");
        assert!(!dir.exists(), "{args:?} left pins behind");
    }

    // A good config file is taken, and flags override it.
    let good = lab.logs.join("good.toml");
    fs::write(
        &good,
        format!(
            "iface = \"{a}\"\nmode = \"monitor\"\nports = [8080]\nttl = 10\nmetrics = \"off\"\n"
        ),
    )
    .unwrap();
    let d = lab.spawn(&["--config", good.to_str().unwrap(), "--ttl", "20"]);
    let s = lab.wait_attached(d, &a);
    assert_eq!(
        (s["mode"].as_str(), s["ports"].as_str(), s["ttl"].as_u64()),
        (Some("monitor"), Some("8080"), Some(20))
    );

    // A second daemon on the same interface is refused and disturbs nothing.
    let e = lab.fails(&["run", "--iface", &a, "--metrics", "off"]);
    assert!(e.contains("already running"), "{e}");
    let e = lab.fails(&["detach", "--iface", &a]);
    assert!(e.contains("is running on"), "{e}");
    let s2 = lab.wait_attached(d, &a);
    assert_eq!(s["xdp"]["prog_id"], s2["xdp"]["prog_id"]);

    // check: a missing listener is a failure with a reason, a present one passes.
    let out = lab.sg(&["check", "--iface", &a, "--ports", "8080"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing listens on TCP port 8080"), "{text}");
    assert!(
        text.contains("kfunc") && text.contains("net.ipv4.tcp_syncookies"),
        "{text}"
    );
    let srv = lab.srv.clone();
    let listener = in_netns(&srv, || TcpListener::bind("0.0.0.0:8080").unwrap());
    let out = lab.sg(&["check", "--iface", &a]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("listener :8080") && text.contains("all checks passed"),
        "{text}"
    );
    let st = lab.counters(&a);
    assert_eq!(st["listeners"]["listen"], 1, "{st}");
    drop(listener);
}

#[test]
fn sigkill_keeps_programs_and_restart_reuses_keys_and_counters() {
    if !root_or_skip("sigkill_keeps_programs_and_restart_reuses_keys_and_counters") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.a.clone();
    let d = lab.spawn(&["--iface", &a, "--key-rotation", "2s", "--metrics", "off"]);
    lab.wait_attached(d, &a);
    lab.ok(&["set", "--iface", &a, "ttl", "33"]);
    lab.ok(&["deny", "add", "--iface", &a, "203.0.113.0/24"]);
    // Let a rotation or two happen so the epoch is past 1.
    thread::sleep(Duration::from_millis(2500));
    lab.send_udp(10);
    let s1 = lab.status(&a).unwrap();
    let c1 = lab.counters(&a)["counters"]["packets_seen"]
        .as_u64()
        .unwrap();
    assert!(c1 >= 10);
    let epoch1 = s1["key_epoch"].as_u64().unwrap();
    assert!(epoch1 >= 2, "{s1}");

    lab.signal(d, libc::SIGKILL);
    lab.wait(d);
    // The pinned links keep the programs attached with nobody running.
    let s = lab.status(&a).unwrap();
    assert_eq!(s["attached"], true, "{s}");
    assert_eq!(s["daemon_running"], false, "{s}");
    assert_eq!(s["xdp"]["prog_id"], s1["xdp"]["prog_id"]);
    lab.send_udp(5);
    let c2 = lab.counters(&a)["counters"]["packets_seen"]
        .as_u64()
        .unwrap();
    assert!(
        c2 >= c1 + 5,
        "programs stopped counting after SIGKILL: {c1} -> {c2}"
    );

    // A restart takes over the same links (same link ids, new programs), keys and counters.
    let d2 = lab.spawn(&[
        "--iface",
        &a,
        "--key-rotation",
        "60s",
        "--metrics",
        "off",
        "--ttl",
        "33",
    ]);
    let s2 = lab.wait_attached(d2, &a);
    assert!(
        lab.log(d2).contains("took over the pinned links"),
        "{}",
        lab.log(d2)
    );
    assert_eq!(
        s2["xdp"]["link_id"], s1["xdp"]["link_id"],
        "XDP link replaced, not reused"
    );
    assert_eq!(
        s2["tc"]["link_id"], s1["tc"]["link_id"],
        "TC link replaced, not reused"
    );
    assert_ne!(
        s2["xdp"]["prog_id"], s1["xdp"]["prog_id"],
        "program not replaced"
    );
    let epoch2 = s2["key_epoch"].as_u64().unwrap();
    assert!(
        epoch2 >= epoch1,
        "keys were reset: epoch {epoch1} -> {epoch2}"
    );
    assert!(
        epoch2 <= epoch1 + 2,
        "unexpected epoch jump {epoch1} -> {epoch2}"
    );
    let c3 = lab.counters(&a)["counters"]["packets_seen"]
        .as_u64()
        .unwrap();
    assert!(c3 >= c2, "counters were reset: {c2} -> {c3}");
    assert_eq!(s2["ttl"], 33);
    let deny: Vec<String> =
        serde_json::from_str(&lab.ok(&["deny", "list", "--iface", &a, "--json"])).unwrap();
    assert_eq!(deny, ["203.0.113.0/24"], "deny list lost across restart");

    // --keep-attached: a clean exit that leaves everything for the next run.
    lab.signal(d2, libc::SIGTERM);
    wait_exit_ok(&mut lab, d2);
    assert!(!Lab::pin_dir(&a).exists());
    let d3 = lab.spawn(&["--iface", &a, "--metrics", "off", "--keep-attached"]);
    let s3 = lab.wait_attached(d3, &a);
    lab.signal(d3, libc::SIGINT);
    wait_exit_ok(&mut lab, d3);
    let s4 = lab.status(&a).unwrap();
    assert_eq!(s4["attached"], true);
    assert_eq!(s4["xdp"]["link_id"], s3["xdp"]["link_id"]);

    // detach removes programs and pins.
    let out = lab.ok(&["detach", "--iface", &a]);
    assert!(out.contains("detached"), "{out}");
    assert!(!Lab::pin_dir(&a).exists());
    let link = Command::new("ip")
        .args(["-n", &lab.srv, "link", "show", &a])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdp"),
        "XDP still attached after detach: {link}"
    );
}

#[test]
fn auto_xdp_mode_is_native_when_the_veth_peer_runs_native_xdp() {
    if !root_or_skip("auto_xdp_mode_is_native_when_the_veth_peer_runs_native_xdp") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b, peer) = (lab.a.clone(), lab.b.clone(), lab.peer.clone());
    // The peer (in the other namespace) gets a native XDP program: synguard itself.
    let pd = lab.spawn_in(
        &peer,
        &["--iface", &b, "--xdp-mode", "native", "--metrics", "off"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab.sg_in(&peer, &["status", "--iface", &b, "--json"]);
        if out.status.success() {
            let s: Value = serde_json::from_slice(&out.stdout).unwrap();
            if s["attached"] == true {
                assert_eq!(s["xdp"]["mode"], "native", "{s}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "peer daemon never attached:\n{}",
            lab.log(pd)
        );
        thread::sleep(Duration::from_millis(100));
    }
    let d = lab.spawn(&["--iface", &a, "--metrics", "off"]);
    let s = lab.wait_attached(d, &a);
    assert_eq!(s["xdp"]["mode"], "native", "{s}");
    let why = s["xdp_reason"].as_str().unwrap();
    assert!(
        why.contains("runs a native XDP program") && why.contains(&b),
        "{why}"
    );
    lab.signal(d, libc::SIGTERM);
    wait_exit_ok(&mut lab, d);
    lab.signal(pd, libc::SIGTERM);
    wait_exit_ok(&mut lab, pd);
}

#[test]
fn metrics_endpoint_serves_counters_on_loopback() {
    if !root_or_skip("metrics_endpoint_serves_counters_on_loopback") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.a.clone();
    let d = lab.spawn(&["--iface", &a, "--ports", "80"]);
    lab.wait_attached(d, &a);
    lab.send_udp(5);
    let get = |path: &'static str| {
        let srv = lab.srv.clone();
        in_netns(&srv, move || {
            let mut s = TcpStream::connect("127.0.0.1:9531").expect("metrics endpoint");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        })
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for needle in [
        "synguard_packets_total{reason=\"syn_seen\"}",
        "synguard_packets_total{reason=\"packets_seen\"}",
        "synguard_engaged 0",
        "synguard_key_epoch 1",
        "synguard_syn_rate",
        "synguard_listener_sockets{state=\"syn_recv\"}",
        "synguard_listener_sockets{state=\"time_wait\"}",
    ] {
        assert!(body.contains(needle), "missing {needle}:\n{body}");
    }
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    lab.signal(d, libc::SIGTERM);
    wait_exit_ok(&mut lab, d);
}

#[test]
fn auto_xdp_mode_falls_back_to_generic_when_the_driver_has_no_native_xdp() {
    if !root_or_skip("auto_xdp_mode_falls_back_to_generic_when_the_driver_has_no_native_xdp") {
        return;
    }
    let mut lab = Lab::new();
    // A bridge: not a veth, and its driver has no native XDP (this kernel has no dummy).
    let bridge = format!("{}d", &lab.a[..lab.a.len() - 1]);
    lab.extra_ifaces.push(bridge.clone());
    ip(&["-n", &lab.srv, "link", "add", &bridge, "type", "bridge"]);
    ip(&["-n", &lab.srv, "link", "set", &bridge, "up"]);

    // Explicit native: a clear failure that leaves nothing behind.
    let e = lab.fails(&[
        "run",
        "--iface",
        &bridge,
        "--xdp-mode",
        "native",
        "--metrics",
        "off",
    ]);
    assert!(
        e.contains("attaching XDP to") && e.contains("native mode"),
        "{e}"
    );
    assert!(!Lab::pin_dir(&bridge).exists(), "failed run left pins");

    let d = lab.spawn(&["--iface", &bridge, "--metrics", "off"]);
    let s = lab.wait_attached(d, &bridge);
    assert_eq!(s["xdp"]["mode"], "generic", "{s}");
    let why = s["xdp_reason"].as_str().unwrap();
    assert!(why.contains("native attach failed"), "{why}");
    assert!(
        lab.log(d).contains("falling back to generic XDP"),
        "{}",
        lab.log(d)
    );
    lab.signal(d, libc::SIGTERM);
    wait_exit_ok(&mut lab, d);
    assert!(!Lab::pin_dir(&bridge).exists());
}
