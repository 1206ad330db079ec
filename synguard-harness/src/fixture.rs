//! The building blocks every harness fixture shares, and the smallest fixture: two namespaces
//! joined by one veth pair ([`VethPair`]).
//!
//! - naming: per-run unique namespace and link names ([`NETNS_PREFIX`], a pid, a counter and
//!   random characters), so concurrent runs never collide and stale ones can be found;
//! - creation: namespaces with loopback up, a veth pair created directly inside its two
//!   namespaces, addresses from the benchmarking ranges (198.18.0.0/15, 2001:2::/48);
//! - cleanup: everything is registered in [`crate::cleanup`] *before* it exists, so drop,
//!   panic, SIGINT/SIGTERM/SIGHUP and exit all remove it, including the links, synguard pin
//!   directories and run-state files a test adds later ([`VethPair::register_link`],
//!   [`VethPair::register_synguard_state`]).
//!
//! [`crate::Topology`] (srv, cli, atk around a bridge) is built from the same blocks.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    thread,
};

use anyhow::{Context, Result, bail};
use synguard_common::maps::names;

use crate::{
    cleanup::{self, TopologyRecord},
    netns,
    process::NsChild,
    synguard::Synguard,
};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A fresh fixture id (unique in the registry) and name suffix: pid (≤ 5 base36 chars for
/// pid_max 2^22) + counter + 3 random chars, ≤ 10 chars, unique across concurrent processes
/// (pid), fixtures within one (counter) and PID reuse (random).
pub(crate) fn new_run() -> (u64, String) {
    let ctr = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "{}{}{}",
        base36(u64::from(std::process::id())),
        base36(ctr % 1296),
        base36(36 * 36 + fastrand::u64(0..36 * 36 * 35)).split_off(1)
    );
    (ctr | (u64::from(std::process::id()) << 32), suffix)
}

/// Prefix of every namespace name the harness creates.
pub const NETNS_PREFIX: &str = "sgh-";

/// Name of namespace `role` of the run with `suffix`. It also spells the pid, so
/// [`cleanup_stale`] can tell whose it is.
pub(crate) fn netns_name(suffix: &str, role: &str) -> String {
    format!("{NETNS_PREFIX}{}-{suffix}-{role}", std::process::id())
}

/// A per-run path under the temp directory, for files a test writes (key files, configs).
pub(crate) fn temp_path_for(suffix: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sgh-{suffix}-{name}"))
}

/// `ip netns add NAME` and loopback up.
pub(crate) fn add_netns(name: &str) -> Result<()> {
    netns::ip(&["netns", "add", name])?;
    netns::ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// A veth pair created directly inside its two namespaces (nothing appears in the root one).
pub(crate) fn add_veth(a_netns: &str, a_iface: &str, b_netns: &str, b_iface: &str) -> Result<()> {
    netns::ip(&[
        "link", "add", a_iface, "netns", a_netns, "type", "veth", "peer", "name", b_iface, "netns",
        b_netns,
    ])?;
    Ok(())
}

/// Gives `iface` in `netns` an IPv4 and an IPv6 address (no DAD: usable at once) and brings
/// it up.
pub(crate) fn address_and_up(
    netns_name: &str,
    iface: &str,
    v4: (Ipv4Addr, u8),
    v6: (Ipv6Addr, u8),
) -> Result<()> {
    let (v4, v6) = (format!("{}/{}", v4.0, v4.1), format!("{}/{}", v6.0, v6.1));
    netns::ip(&["-n", netns_name, "addr", "add", &v4, "dev", iface])?;
    netns::ip(&[
        "-n", netns_name, "-6", "addr", "add", &v6, "dev", iface, "nodad",
    ])?;
    netns::ip(&["-n", netns_name, "link", "set", iface, "up"])?;
    Ok(())
}

/// synguard's pin directory for `iface` (`PIN_ROOT/IFACE`).
pub fn pin_dir(iface: &str) -> PathBuf {
    Path::new(names::PIN_ROOT).join(iface)
}

/// synguard's run-state file for `iface` (`RUN_DIR/IFACE.json`).
pub fn run_state_file(iface: &str) -> PathBuf {
    Path::new(names::RUN_DIR).join(format!("{iface}.json"))
}

/// The pair's /24 (inside 198.18.0.0/15): `a` is .1, `b` is .2, and the rest of the /24 is
/// free for frames from addresses neither side owns.
pub const PAIR_V4_NET: [u8; 3] = [198, 18, 9];
pub const PAIR_V4_PREFIX: u8 = 24;
/// The pair's /64 (inside 2001:2::/48): `a` is ::1, `b` is ::2.
pub const PAIR_V6_PREFIX: u8 = 64;

/// One end of a [`VethPair`].
#[derive(Debug, Clone)]
pub struct Side {
    pub netns: String,
    pub iface: String,
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

/// Two fresh namespaces joined by one veth pair, no bridge: a frame sent on one end arrives
/// on the other exactly as written. Synguard runs on `a` in the tests; `b` is the peer.
/// Dropping it (or any teardown path of [`crate::cleanup`]) removes the namespaces, the links
/// and every registered pin directory and run-state file.
#[derive(Debug)]
pub struct VethPair {
    id: u64,
    suffix: String,
    pub a: Side,
    pub b: Side,
    torn_down: bool,
}

impl VethPair {
    pub fn new() -> Result<VethPair> {
        ensure_root()?;
        cleanup::install_hooks(true);
        let (id, suffix) = new_run();
        let [n0, n1, n2] = PAIR_V4_NET;
        let side = |tag: &str, host: u8| Side {
            netns: netns_name(&suffix, tag),
            iface: format!("sgv{tag}{suffix}"),
            mac: [0; 6],
            ipv4: Ipv4Addr::new(n0, n1, n2, host),
            ipv6: Ipv6Addr::new(0x2001, 2, 0, 9, 0, 0, 0, u16::from(host)),
        };
        let mut pair = VethPair {
            id,
            a: side("a", 1),
            b: side("b", 2),
            suffix,
            torn_down: false,
        };
        // Registered before anything exists, so a failure or signal half-way still cleans up.
        let mut paths = Vec::new();
        for s in [&pair.a, &pair.b] {
            paths.push(pin_dir(&s.iface));
            paths.push(run_state_file(&s.iface));
        }
        cleanup::register_topology(TopologyRecord {
            id,
            owner: thread::current().id(),
            namespaces: vec![pair.a.netns.clone(), pair.b.netns.clone()],
            links: vec![(pair.a.netns.clone(), pair.a.iface.clone())],
            paths,
        });
        pair.build()
            .with_context(|| format!("building veth pair {}", pair.suffix))?;
        Ok(pair)
    }

    fn build(&mut self) -> Result<()> {
        add_netns(&self.a.netns)?;
        add_netns(&self.b.netns)?;
        add_veth(&self.a.netns, &self.a.iface, &self.b.netns, &self.b.iface)?;
        for s in [&mut self.a, &mut self.b] {
            address_and_up(
                &s.netns,
                &s.iface,
                (s.ipv4, PAIR_V4_PREFIX),
                (s.ipv6, PAIR_V6_PREFIX),
            )?;
            s.mac = netns::link_mac(&s.netns, &s.iface)?;
        }
        Ok(())
    }

    /// Id of this fixture in the cleanup registry.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The per-run suffix in every name.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// A per-run name for another interface a test creates (≤ 15 chars), e.g. a bridge.
    pub fn link_name(&self, tag: char) -> String {
        format!("sgx{tag}{}", self.suffix)
    }

    /// Registers an interface the test created in `netns`, and synguard's pins and run state
    /// for it, so a failing test removes them too.
    pub fn register_link(&self, netns_name: &str, iface: &str) -> Result<()> {
        if !cleanup::add_link(self.id, netns_name, iface) {
            bail!("veth pair {} is already torn down", self.suffix);
        }
        self.register_synguard_state(iface)
    }

    /// Registers synguard's pin directory and run-state file for `iface` for removal.
    pub fn register_synguard_state(&self, iface: &str) -> Result<()> {
        for p in [pin_dir(iface), run_state_file(iface)] {
            if !cleanup::add_path(self.id, p) {
                bail!("veth pair {} is already torn down", self.suffix);
            }
        }
        Ok(())
    }

    /// A per-run path under the temp directory for files the test writes (key files,
    /// configs); registered for removal.
    pub fn temp_path(&self, name: &str) -> Result<PathBuf> {
        let p = temp_path_for(&self.suffix, name);
        self.register_path(p.clone())?;
        Ok(p)
    }

    /// Registers a file or directory the test created (e.g. config files) for removal.
    pub fn register_path(&self, path: impl Into<PathBuf>) -> Result<()> {
        if !cleanup::add_path(self.id, path.into()) {
            bail!("veth pair {} is already torn down", self.suffix);
        }
        Ok(())
    }

    /// The `synguard` binary `bin`, run in `side`'s namespace and owned by this fixture.
    pub fn synguard(&self, bin: impl Into<PathBuf>, side: &Side) -> Synguard {
        Synguard::new(bin, &side.netns).owned_by(self.id)
    }

    /// A `Command` running `program` inside `netns` (its network namespace only).
    pub fn command(&self, netns_name: &str, program: &str) -> Command {
        netns::command(netns_name, program)
    }

    /// Spawns `cmd`; it is ended by PID when the handle drops, and on teardown at the latest.
    pub fn spawn(&self, cmd: &mut Command, own_group: bool) -> Result<NsChild> {
        NsChild::spawn(cmd, own_group, Some(self.id))
    }

    /// Tears the pair down now and reports any leftover. Dropping does the same silently.
    pub fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        cleanup::teardown_topology(self.id)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        if !self.torn_down
            && let Err(e) = cleanup::teardown_topology(self.id)
        {
            eprintln!("synguard-harness: {e:#}");
        }
    }
}

/// Deletes `sgh-<pid>-…` namespaces left behind by harness processes that no longer exist
/// (e.g. killed with SIGKILL, which no handler can catch). Namespaces of live processes,
/// including this one, are left alone. Returns the names removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in netns::list_netns()? {
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = stale_pid(rest) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        netns::ip(&["netns", "del", &name])?;
        removed.push(name);
    }
    Ok(removed)
}

fn stale_pid(rest: &str) -> Option<u32> {
    rest.split('-').next()?.parse().ok()
}

/// Writes `/sys/<rel>` as seen from network namespace `netns`.
///
/// sysfs shows the network namespace of whoever mounted it, and `ip netns exec` mounts a fresh
/// one for the namespace. Its private `/sys` (which hides bpffs pins) is harmless for a
/// one-shot write.
pub fn write_sysfs(netns: &str, rel: &str, value: &str) -> Result<()> {
    if rel.contains("..") || value.contains('\'') {
        bail!("refusing sysfs path {rel:?} / value {value:?}");
    }
    netns::run_checked(Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "sh",
        "-c",
        &format!("echo '{value}' > /sys/{rel}"),
    ]))?;
    Ok(())
}

/// Fails with a clear message unless running as root.
pub fn ensure_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the veth harness needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
    }
    Ok(())
}

/// Held by tests that saturate the two cores (floods, bulk transfers): run together they
/// starve each other's traffic, and a starved flood measures nothing. One lock per test
/// process, which is what a test binary is.
pub fn exclusive_cores() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding it leaves nothing to clean up.
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The root-test policy for every test crate: true when `test` may run; without root it
/// panics when `CI` is set (CI must not pass by skipping), and otherwise prints a skip
/// straight to fd 2, past libtest's capture, so the skip is seen.
pub fn root_or_skip(test: &str) -> bool {
    if ensure_root().is_ok() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: needs root (network namespaces, veth, BPF), and CI is set: refusing to skip"
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (network namespaces, veth, BPF)"
    );
    false
}

/// Pins the calling thread to `cpu`. Frames a thread sends on a veth are received (and run
/// through generic XDP) in its own softirq context, so pinning the sender decides which CPU's
/// per-CPU state the data path uses.
pub fn pin_thread_to_cpu(cpu: usize) -> Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} out of range"))?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("sched_setaffinity to CPU {cpu}"))?;
    Ok(())
}
