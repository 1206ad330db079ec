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
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

#[path = "support/monitor_names.rs"]
mod monitor_names;
#[path = "support/promtool.rs"]
mod promtool;
use promtool::promtool_check_metrics;
use synguard_common::maps::names;
use synguard_harness::{
    Daemon, Signal, Synguard, VethPair, netns, netns::in_netns, pin_dir, root_or_skip,
    run_state_file,
};

const BIN: &str = env!("CARGO_BIN_EXE_synguard");

/// A [`VethPair`]: `srv` holds `a` (where synguard runs) and `peer` holds `b` (its veth
/// peer). The pair's teardown removes namespaces, links, pins and run state however the test
/// ends; daemons stop when their [`Daemon`] handles drop.
struct Lab {
    pair: VethPair,
    srv: String,
    peer: String,
    a: String,
    b: String,
    /// synguard in `srv` and in `peer`.
    sg: Synguard,
    peer_sg: Synguard,
    /// A per-test directory for config files.
    files: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let pair = VethPair::new().expect("building the veth pair");
        let files = pair.temp_path("cli").expect("registering the files dir");
        fs::create_dir_all(&files).unwrap();
        Lab {
            srv: pair.a.netns.clone(),
            peer: pair.b.netns.clone(),
            a: pair.a.iface.clone(),
            b: pair.b.iface.clone(),
            sg: pair.synguard(BIN, &pair.a),
            peer_sg: pair.synguard(BIN, &pair.b),
            files,
            pair,
        }
    }

    /// Runs `synguard ARGS` in the srv namespace.
    fn sg(&self, args: &[&str]) -> Output {
        self.sg.output(args).expect("running synguard")
    }

    fn ok(&self, args: &[&str]) -> String {
        self.sg.ok(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs a command that must fail, and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        self.sg.fails(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `synguard run ARGS` in srv, protecting `iface`.
    fn spawn(&self, iface: &str, args: &[&str]) -> Daemon {
        self.sg.spawn(iface, args).expect("spawning synguard run")
    }

    fn status(&self, iface: &str) -> Option<Value> {
        let out = self.sg(&["status", "--iface", iface, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
    }

    /// Waits until daemon `d` says it is attached (after any program takeover) and `status`
    /// reports it attached and running on `iface`.
    fn wait_attached(&self, d: &mut Daemon, iface: &str) -> Value {
        // The run state (and so status's daemon_pid) can be written before the programs are
        // swapped in; the daemon's own "attached" line comes after.
        d.wait_attached(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.status(iface)
                && s["attached"] == true
                && s["daemon_running"] == true
                && s["daemon_pid"] == d.pid()
            {
                return s;
            }
            if let Some(st) = d.try_wait().unwrap() {
                panic!("daemon exited early ({st}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon never attached:\n{}",
                d.log()
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
        let to = (self.pair.a.ipv4, 9);
        in_netns(&self.peer, || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..n {
                let _ = s.send_to(b"synguard-test", to);
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .expect("sending UDP from the peer");
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn wait_exit(d: &mut Daemon) -> std::process::ExitStatus {
    d.wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn wait_exit_ok(d: &mut Daemon) {
    let st = wait_exit(d);
    assert!(st.success(), "daemon exited with {st}:\n{}", d.log());
}

#[test]
fn run_attaches_pins_and_sigterm_detaches() {
    if !root_or_skip("run_attaches_pins_and_sigterm_detaches") {
        return;
    }
    let lab = Lab::new();
    let a = lab.a.clone();
    let mut d = lab.spawn(
        &a,
        &["--iface", &a, "--ports", "80,443", "--mode", "always"],
    );
    let s = lab.wait_attached(&mut d, &a);
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

    let dir = pin_dir(&a);
    for name in [
        names::CONFIG,
        names::KEYS,
        names::STATE,
        names::PORTS,
        names::ALLOW4,
        names::ALLOW6,
        names::DENY4,
        names::DENY6,
        names::COUNTERS,
        names::XDP_LINK,
        names::TC_LINK,
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
    // Without --iface, stats takes the host's only instance: this one, unless a test
    // running beside this one has its own, and then it names both and asks for --iface.
    let out = lab.sg(&["stats", "--json", "--sample", "0s"]);
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
        assert_eq!(v["iface"], a.as_str(), "{v}");
    } else {
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("synguard instances (") && e.contains(a.as_str()) && e.contains("--iface"),
            "{e}"
        );
    }

    d.signal(Signal::SIGTERM);
    wait_exit_ok(&mut d);
    assert!(!dir.exists(), "SIGTERM must remove the pins");
    assert!(!run_state_file(&a).exists());
    let e = lab.fails(&["status", "--iface", &a]);
    assert!(e.contains("synguard is not running on"), "{e}");
}

#[test]
fn set_changes_config_and_rejects_bad_values() {
    if !root_or_skip("set_changes_config_and_rejects_bad_values") {
        return;
    }
    let lab = Lab::new();
    let a = lab.a.clone();
    let mut d = lab.spawn(&a, &["--iface", &a, "--metrics", "off"]);
    lab.wait_attached(&mut d, &a);

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
    let lab = Lab::new();
    let a = lab.a.clone();
    let mut d = lab.spawn(&a, &["--iface", &a, "--metrics", "off"]);
    lab.wait_attached(&mut d, &a);

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
    let lab = Lab::new();
    let a = lab.a.clone();
    let dir = pin_dir(&a);
    let cfg = lab.files.join("bad.toml");
    fs::write(&cfg, "mode = \"always\"\nportz = \"80\"\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let missing = lab.files.join("missing.toml");
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
    let good = lab.files.join("good.toml");
    fs::write(
        &good,
        format!(
            "iface = \"{a}\"\nmode = \"monitor\"\nports = [8080]\nttl = 10\nmetrics = \"off\"\n"
        ),
    )
    .unwrap();
    let mut d = lab.spawn(&a, &["--config", good.to_str().unwrap(), "--ttl", "20"]);
    let s = lab.wait_attached(&mut d, &a);
    assert_eq!(
        (s["mode"].as_str(), s["ports"].as_str(), s["ttl"].as_u64()),
        (Some("monitor"), Some("8080"), Some(20))
    );

    // A second daemon on the same interface is refused and disturbs nothing.
    let e = lab.fails(&["run", "--iface", &a, "--metrics", "off"]);
    assert!(e.contains("already running"), "{e}");
    let e = lab.fails(&["detach", "--iface", &a]);
    assert!(e.contains("is running on"), "{e}");
    let s2 = lab.wait_attached(&mut d, &a);
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
    let listener = in_netns(&lab.srv, || Ok(TcpListener::bind("0.0.0.0:8080")?)).unwrap();
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
    // The same checks as JSON, with the same exit code.
    let out = lab.sg(&["check", "--iface", &a, "--json"]);
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    assert_eq!(j["failures"], 0, "{j}");
    let checks = j["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "listener :8080" && c["result"] == "ok"),
        "{j}"
    );
    let out = lab.sg(&["check", "--iface", &a, "--ports", "8099", "--json"]);
    assert!(!out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    assert!(j["failures"].as_u64().unwrap() >= 1, "{j}");
    assert!(
        j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["result"] == "fail"
                && c["detail"]
                    .as_str()
                    .unwrap()
                    .contains("nothing listens on TCP port 8099")),
        "{j}"
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
    let lab = Lab::new();
    let a = lab.a.clone();
    let mut d = lab.spawn(
        &a,
        &["--iface", &a, "--key-rotation", "2s", "--metrics", "off"],
    );
    lab.wait_attached(&mut d, &a);
    lab.ok(&["set", "--iface", &a, "ttl", "33"]);
    lab.ok(&["deny", "add", "--iface", &a, "203.0.113.0/24"]);
    // Let a rotation or two happen so the epoch is past 1 (the first is due 2 s after the
    // start; waited for rather than slept on, so a loaded machine only makes it slower).
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.status(&a).and_then(|s| s["key_epoch"].as_u64()) < Some(2) {
        assert!(Instant::now() < deadline, "no key rotation within 15 s");
        thread::sleep(Duration::from_millis(100));
    }
    lab.send_udp(10);
    let s1 = lab.status(&a).unwrap();
    let c1 = lab.counters(&a)["counters"]["packets_seen"]
        .as_u64()
        .unwrap();
    assert!(c1 >= 10);
    let epoch1 = s1["key_epoch"].as_u64().unwrap();
    assert!(epoch1 >= 2, "{s1}");

    d.signal(Signal::SIGKILL);
    wait_exit(&mut d);
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
    let mut d2 = lab.spawn(
        &a,
        &[
            "--iface",
            &a,
            "--key-rotation",
            "60s",
            "--metrics",
            "off",
            "--ttl",
            "33",
        ],
    );
    let s2 = lab.wait_attached(&mut d2, &a);
    assert!(
        d2.log().contains("took over the pinned links"),
        "{}",
        d2.log()
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
    d2.signal(Signal::SIGTERM);
    wait_exit_ok(&mut d2);
    assert!(!pin_dir(&a).exists());
    let mut d3 = lab.spawn(&a, &["--iface", &a, "--metrics", "off", "--keep-attached"]);
    let s3 = lab.wait_attached(&mut d3, &a);
    d3.signal(Signal::SIGINT);
    wait_exit_ok(&mut d3);
    let s4 = lab.status(&a).unwrap();
    assert_eq!(s4["attached"], true);
    assert_eq!(s4["xdp"]["link_id"], s3["xdp"]["link_id"]);

    // detach removes programs and pins.
    let out = lab.ok(&["detach", "--iface", &a]);
    assert!(out.contains("detached"), "{out}");
    assert!(!pin_dir(&a).exists());
    let link = netns::ip(&["-n", &lab.srv, "link", "show", &a]).unwrap();
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
    let lab = Lab::new();
    let (a, b) = (lab.a.clone(), lab.b.clone());
    // The peer (in the other namespace) gets a native XDP program: synguard itself.
    let mut pd = lab
        .peer_sg
        .spawn(
            &b,
            &["--iface", &b, "--xdp-mode", "native", "--metrics", "off"],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab
            .peer_sg
            .output(&["status", "--iface", &b, "--json"])
            .unwrap();
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
            pd.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let mut d = lab.spawn(&a, &["--iface", &a, "--metrics", "off"]);
    let s = lab.wait_attached(&mut d, &a);
    assert_eq!(s["xdp"]["mode"], "native", "{s}");
    let why = s["xdp_reason"].as_str().unwrap();
    assert!(
        why.contains("runs a native XDP program") && why.contains(&b),
        "{why}"
    );
    d.signal(Signal::SIGTERM);
    wait_exit_ok(&mut d);
    pd.signal(Signal::SIGTERM);
    wait_exit_ok(&mut pd);
}

#[test]
fn metrics_endpoint_serves_counters_on_loopback() {
    if !root_or_skip("metrics_endpoint_serves_counters_on_loopback") {
        return;
    }
    let lab = Lab::new();
    let a = lab.a.clone();
    let mut d = lab.spawn(&a, &["--iface", &a, "--ports", "80"]);
    lab.wait_attached(&mut d, &a);
    lab.send_udp(5);
    let get = |path: &'static str| {
        in_netns(&lab.srv, || {
            let mut s = TcpStream::connect("127.0.0.1:9531")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })
        .expect("metrics endpoint")
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let i = format!("iface=\"{a}\"");
    for needle in [
        format!("synguard_packets_total{{{i}}} "),
        format!("synguard_syns_total{{{i}}} "),
        format!("synguard_verdicts_total{{{i},reason=\"cookie_sent\",action=\"tx\"}}"),
        format!("synguard_verdicts_total{{{i},reason=\"synack_cap_hit\",action=\"drop\"}}"),
        format!("synguard_verdicts_total{{{i},reason=\"syn_passed\",action=\"pass\"}}"),
        format!("synguard_handoffs_total{{{i},outcome=\"reqsk_assigned\"}}"),
        format!("synguard_engaged{{{i}}} 0"),
        format!("synguard_mode{{{i},mode=\"auto\"}} 1"),
        format!("synguard_mode{{{i},mode=\"monitor\"}} 0"),
        format!("synguard_key_epoch{{{i}}} 1"),
        format!("synguard_key_rotated_timestamp_seconds{{{i}}} "),
        format!("synguard_engaged_transitions_total{{{i}}} 0"),
        // The lab's veth has no XDP program on its peer, so auto mode picks generic.
        format!("synguard_xdp_attached{{{i},mode=\"generic\"}} 1"),
        format!("synguard_list_entries{{{i},list=\"deny4\"}} 0"),
        format!("synguard_src_rate_entries{{{i}}} 0"),
        format!("synguard_program_run_seconds_total{{{i},program=\"xdp\"}}"),
        format!("synguard_program_runs_total{{{i},program=\"tc\"}}"),
        "synguard_build_info{version=".to_string(),
        format!("synguard_syn_rate{{{i}}}"),
        format!("synguard_listener_sockets{{{i},state=\"syn_recv\"}}"),
        format!("synguard_listener_sockets{{{i},state=\"time_wait\"}}"),
    ] {
        assert!(body.contains(&needle), "missing {needle}:\n{body}");
    }
    // Totals are not verdicts: sum(synguard_verdicts_total) counts frames, not frames and
    // SYNs twice.
    assert!(!body.contains("reason=\"packets_seen\""), "{body}");
    assert!(!body.contains("reason=\"syn_seen\""), "{body}");
    // The XDP program ran (the UDP frames) while the daemon held BPF stats on.
    let runs: u64 = body
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "synguard_program_runs_total{{{i},program=\"xdp\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(runs >= 5, "xdp runs {runs}:\n{body}");
    promtool_check_metrics(body.split_once("\r\n\r\n").unwrap().1);
    // Every series monitor/ (dashboard and alert rules) queries is in a live scrape.
    for name in monitor_names::monitor_metric_names() {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "monitor/ queries {name}, which the daemon does not export:\n{body}"
        );
    }
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    d.signal(Signal::SIGTERM);
    wait_exit_ok(&mut d);
}

#[test]
fn auto_xdp_mode_falls_back_to_generic_when_the_driver_has_no_native_xdp() {
    if !root_or_skip("auto_xdp_mode_falls_back_to_generic_when_the_driver_has_no_native_xdp") {
        return;
    }
    let lab = Lab::new();
    // A bridge: not a veth, and its driver has no native XDP (this kernel has no dummy).
    // Registered before it exists: a failing test removes it, its pins and its run state.
    let bridge = lab.pair.link_name('d');
    lab.pair.register_link(&lab.srv, &bridge).unwrap();
    netns::ip(&["-n", &lab.srv, "link", "add", &bridge, "type", "bridge"]).unwrap();
    netns::ip(&["-n", &lab.srv, "link", "set", &bridge, "up"]).unwrap();

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
    assert!(!pin_dir(&bridge).exists(), "failed run left pins");

    let mut d = lab.spawn(&bridge, &["--iface", &bridge, "--metrics", "off"]);
    let s = lab.wait_attached(&mut d, &bridge);
    assert_eq!(s["xdp"]["mode"], "generic", "{s}");
    let why = s["xdp_reason"].as_str().unwrap();
    assert!(why.contains("native attach failed"), "{why}");
    assert!(
        d.log().contains("falling back to generic XDP"),
        "{}",
        d.log()
    );
    d.signal(Signal::SIGTERM);
    wait_exit_ok(&mut d);
    assert!(!pin_dir(&bridge).exists());
}
