//! The `synguard` binary in a namespace: CLI commands ([`Synguard`]), daemons ([`Daemon`]) and
//! the pinned per-reason counters ([`Counters`]).
//!
//! Everything runs with `nsenter --net` (never `ip netns exec`, whose private `/sys` would hide
//! the pins). A daemon is stopped by its PID with SIGTERM, on which it detaches and removes its
//! pin directory, and SIGKILL after a grace period. If it cannot clean up (killed, crashed),
//! [`Daemon`]'s drop removes the pins and run state itself: the link is dead with the veth
//! anyway, but pinned maps would stay in memory.

use std::{
    fmt,
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use nix::sys::signal::Signal;
use synguard_common::maps::{COUNTER_COUNT, Config, Counter, State, names};

pub use crate::fixture::{pin_dir, run_state_file};
use crate::{cleanup, netns, process::NsChild, topology::Topology};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The `synguard` binary.
    pub bin: PathBuf,
    pub ports: String,
    /// `monitor`, `auto` or `always`.
    pub mode: String,
    pub xdp_mode: XdpMode,
    /// How long to wait for "attached".
    pub start_timeout: Duration,
    /// `--handoff` (the daemon's `auto` without it).
    pub handoff: Option<synguard_common::maps::Handoff>,
}

impl DaemonOptions {
    pub fn new(bin: impl Into<PathBuf>, port: u16, xdp_mode: XdpMode) -> Self {
        Self {
            bin: bin.into(),
            ports: port.to_string(),
            mode: "always".into(),
            xdp_mode,
            start_timeout: Duration::from_secs(30),
            handoff: None,
        }
    }
}

/// Per-reason counters of one synguard instance, summed over CPUs, as read from its pinned
/// per-CPU `COUNTERS` map. The one counter type of the tests, the scenario and xtask.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Counters([u64; COUNTER_COUNT as usize]);

impl Counters {
    /// Reads the pinned `COUNTERS` map of the instance on `iface`.
    pub fn read(iface: &str) -> Result<Counters> {
        let path = pin_dir(iface).join(names::COUNTERS);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
        let mut out = [0u64; COUNTER_COUNT as usize];
        for (&c, slot) in Counter::ALL.iter().zip(out.iter_mut()) {
            *slot = map.get(&(c as u32), 0)?.iter().sum();
        }
        Ok(Counters(out))
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// What each counter moved since `before` (`self - before`).
    pub fn delta(&self, before: &Counters) -> Counters {
        let mut d = *self;
        for (v, b) in d.0.iter_mut().zip(before.0) {
            *v = v.saturating_sub(b);
        }
        d
    }

    /// (name, value) for every counter, in ABI order.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }

    /// The counters that are not zero (for a delta: the ones that moved).
    pub fn nonzero(&self) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c, self.get(c)))
            .filter(|&(_, v)| v != 0)
            .collect()
    }
}

/// Only the counters that are not zero, by name: a delta prints as what moved.
impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.nonzero().into_iter().map(|(c, v)| (c.name(), v)))
            .finish()
    }
}

/// Daemons started by this process and not yet reaped: (pid, iface).
static LIVE: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(i32, String)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asks every daemon this process started to detach (SIGINT), waits up to `grace` for them,
/// and removes whatever pins remain. For a program's own Ctrl-C handler: call it before
/// [`crate::teardown_all`], which kills children outright.
pub fn stop_all_daemons(grace: Duration) {
    let daemons: Vec<(i32, String)> = live().clone();
    for (pid, _) in &daemons {
        cleanup::signal_child(*pid, Signal::SIGINT);
    }
    let deadline = Instant::now() + grace;
    for (pid, iface) in &daemons {
        while !cleanup::child_exited(*pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        remove_state(iface);
    }
}

/// Removes what a daemon on `iface` may have left: its pin directory and run-state file.
fn remove_state(iface: &str) {
    let dir = pin_dir(iface);
    if dir.is_dir()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("synguard-harness: removing {}: {e}", dir.display());
    }
    let _ = std::fs::remove_file(run_state_file(iface));
}

/// The `synguard` binary, run in one network namespace.
#[derive(Debug, Clone)]
pub struct Synguard {
    bin: PathBuf,
    netns: String,
    /// The fixture whose teardown kills its daemons.
    owner: Option<u64>,
    /// A program (with arguments) the binary runs under, e.g. `unshare` for fresh mount
    /// and PID namespaces like a container's.
    wrapper: Vec<String>,
}

impl Synguard {
    pub fn new(bin: impl Into<PathBuf>, netns: &str) -> Synguard {
        Synguard {
            bin: bin.into(),
            netns: netns.to_string(),
            owner: None,
            wrapper: Vec::new(),
        }
    }

    /// Runs the binary as `WRAPPER... BIN ARGS` (still in the network namespace).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Synguard {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Daemons started from here are killed when fixture `id` is torn down.
    pub fn owned_by(mut self, id: u64) -> Synguard {
        self.owner = Some(id);
        self
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `synguard ARGS` in the namespace, logging at info.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = netns::command(&self.netns, w);
                c.args(rest).arg(&self.bin);
                c
            }
            None => netns::command(&self.netns, &self.bin),
        };
        c.args(args).env("RUST_LOG", "info").stdin(Stdio::null());
        c
    }

    /// Runs `synguard ARGS` to completion.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        let mut c = self.command(args);
        c.output().with_context(|| format!("running {c:?}"))
    }

    /// Runs `synguard ARGS`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "synguard {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).context("synguard's stdout is not UTF-8")
    }

    /// Runs `synguard ARGS`, which must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if out.status.success() {
            bail!(
                "synguard {} should have failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        String::from_utf8(out.stderr).context("synguard's stderr is not UTF-8")
    }

    /// Spawns `synguard run RUN_ARGS` without waiting for it to attach. `iface` is the
    /// interface the arguments (or its config file) protect: where its pins are read and
    /// removed.
    pub fn spawn(&self, iface: &str, run_args: &[&str]) -> Result<Daemon> {
        if !self.bin.is_file() {
            bail!(
                "synguard binary {} not found (build it: cargo build -p synguard)",
                self.bin.display()
            );
        }
        let mut cmd = self.command(&[&["run"], run_args].concat());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // Own group: a terminal's Ctrl-C must not make it detach before the caller has
        // taken its final counter snapshot; the caller stops it.
        let mut child = NsChild::spawn(&mut cmd, true, self.owner)?;
        let pid = child.pid();
        live().push((pid, iface.to_string()));
        let log = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.take_stdout().context("daemon stdout")?),
            Box::new(child.take_stderr().context("daemon stderr")?),
        ];
        for pipe in pipes {
            let log = log.clone();
            thread::Builder::new()
                .name("synguard-log".into())
                .spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                        l.push_str(&line);
                        l.push('\n');
                    }
                })?;
        }
        Ok(Daemon {
            child: Some(child),
            pid,
            iface: iface.to_string(),
            log,
        })
    }

    /// Starts `synguard run --iface IFACE RUN_ARGS` and waits until it is attached.
    pub fn start(&self, iface: &str, run_args: &[&str]) -> Result<Daemon> {
        let mut d = self.spawn(iface, &[&["--iface", iface], run_args].concat())?;
        d.wait_attached(Duration::from_secs(30))?;
        Ok(d)
    }
}

/// `STATE.engaged` of the synguard instance on `iface`, as its controller's hysteresis last
/// set it.
pub fn engaged(iface: &str) -> Result<bool> {
    let path = pin_dir(iface).join(names::STATE);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let state: Array<_, State> = Array::try_from(Map::Array(data))?;
    Ok(state.get(&0, 0)?.engaged != 0)
}

/// `Config::handoff` of the instance on `iface` (a `Handoff` as u8), from its pinned `CONFIG`.
pub fn handoff(iface: &str) -> Result<u8> {
    let path = pin_dir(iface).join(names::CONFIG);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let config: Array<_, Config> = Array::try_from(Map::Array(data))?;
    Ok(config.get(&0, 0)?.handoff)
}

/// Sets `Config::test_flags` (e.g. `Config::TEST_BENCH_NO_SOCKET`) of the instance on `iface`
/// in its pinned `CONFIG`: the test-only switches no setting writes.
pub fn set_test_flags(iface: &str, flags: u8) -> Result<()> {
    let path = pin_dir(iface).join(names::CONFIG);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut config: Array<_, Config> = Array::try_from(Map::Array(data))?;
    let mut c = config.get(&0, 0)?;
    c.test_flags = flags;
    config.set(0, &c, 0)?;
    Ok(())
}

/// Polls `cond` every 50 ms until it holds; fails naming `what` once `timeout` passes.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The `synguard run` arguments the live tests share: `ports` protected in `mode`, generic
/// XDP (which every veth transmits with), no metrics endpoint (the bare test namespaces have
/// no loopback up), then `extra`.
pub fn test_run_args<'a>(mode: &'a str, ports: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--ports", ports, "--mode", mode, "--xdp-mode", "generic"];
    v.extend(["--metrics", "off"]);
    v.extend(extra);
    v
}

/// A `synguard run` this process started. Dropping it stops it (SIGTERM, then SIGKILL) and
/// removes whatever pins and run state it left.
pub struct Daemon {
    child: Option<NsChild>,
    pid: i32,
    iface: String,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon on the topology's server veth and waits until it is attached.
    pub fn start(t: &Topology, opts: &DaemonOptions) -> Result<Daemon> {
        let iface = t.server_iface().to_string();
        let sg = Synguard::new(&opts.bin, t.netns(crate::Role::Srv)).owned_by(t.id());
        let mut args = vec![
            "--iface",
            &iface,
            "--ports",
            &opts.ports,
            "--mode",
            &opts.mode,
            "--xdp-mode",
            opts.xdp_mode.as_str(),
        ];
        if let Some(h) = opts.handoff {
            args.extend(["--handoff", h.name()]);
        }
        let mut d = sg.spawn(&iface, &args)?;
        d.wait_attached(opts.start_timeout)?;
        Ok(d)
    }

    /// Waits until the daemon logged that it is attached and its TC link is pinned (none in
    /// the handoffs without TC); fails with its log if it exits first or
    /// `timeout` passes.
    pub fn wait_attached(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let tc_link = pin_dir(&self.iface).join(names::TC_LINK);
        loop {
            let log = self.log();
            if log.contains("synguard attached to")
                && (tc_link.exists()
                    || synguard_common::maps::Handoff::ALL
                        .iter()
                        .any(|h| !h.needs_tc() && log.contains(&format!(", handoff {h},"))))
            {
                return Ok(());
            }
            if let Some(st) = self.try_wait()? {
                // Let the log threads drain the pipes.
                thread::sleep(Duration::from_millis(100));
                bail!(
                    "synguard run exited ({st}) before attaching:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "synguard run did not attach to {} within {timeout:?}:\n{}",
                    self.iface,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Everything the daemon printed so far (stdout and stderr, by line).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn counters(&self) -> Result<Counters> {
        Counters::read(&self.iface)
    }

    /// Sends `sig` to the daemon by PID, if it has not been reaped.
    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            c.signal(sig);
        }
    }

    /// The exit status once the daemon has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the daemon to exit; fails with its log otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let c = self.child.as_mut().context("daemon already stopped")?;
        match c.wait_timeout(timeout)? {
            Some(st) => Ok(st),
            None => bail!(
                "synguard (pid {}) did not exit within {timeout:?}:\n{}",
                self.pid,
                self.log()
            ),
        }
    }

    /// SIGTERM (the daemon detaches and removes its pins), SIGKILL after 5 s; returns the log.
    pub fn stop(mut self) -> Result<String> {
        self.shutdown()?;
        Ok(self.log())
    }

    fn shutdown(&mut self) -> Result<()> {
        let r = match self.child.take() {
            Some(mut c) => c
                .stop_with(Signal::SIGTERM, Duration::from_secs(5))
                .map(|_| ()),
            None => Ok(()),
        };
        live().retain(|(p, _)| *p != self.pid);
        remove_state(&self.iface);
        r
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("synguard-harness: stopping synguard: {e:#}");
        }
    }
}
