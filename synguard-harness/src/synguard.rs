//! Running the `synguard` daemon on the server veth, and reading its pinned counters.
//!
//! The daemon is started with `nsenter --net` (never `ip netns exec`, whose private `/sys`
//! would hide the pins) and stopped with SIGINT, on which it detaches and removes its pin
//! directory. If it cannot do so (killed by teardown, crashed), [`Daemon`]'s drop removes the
//! pins itself: the link is dead with the veth anyway, but pinned maps would stay in memory.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, PerCpuArray};
use nix::sys::signal::Signal;
use synguard_common::maps::{COUNTER_COUNT, Counter, names};

use crate::{cleanup, process::NsChild, topology::Topology};

/// Where synguard pins everything for `iface` (one home: synguard's `pins::dir`).
pub fn pin_dir(iface: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/synguard").join(iface)
}

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
}

impl DaemonOptions {
    pub fn new(bin: impl Into<PathBuf>, port: u16, xdp_mode: XdpMode) -> Self {
        Self {
            bin: bin.into(),
            ports: port.to_string(),
            mode: "always".into(),
            xdp_mode,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-reason totals over all CPUs, indexed by [`Counter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters(pub Vec<u64>);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0.get(c as usize).copied().unwrap_or(0)
    }

    /// `self - earlier`, per counter.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .zip(earlier.0.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        )
    }

    /// (name, value) for every counter, in ABI order.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

/// Reads the pinned per-CPU `COUNTERS` map of the instance on `iface`.
pub fn read_counters(iface: &str) -> Result<Counters> {
    let path = pin_dir(iface).join(names::COUNTERS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    let mut out = vec![0u64; COUNTER_COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(Counters(out))
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
        remove_pins(iface);
    }
}

fn remove_pins(iface: &str) {
    let dir = pin_dir(iface);
    if dir.is_dir()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("synguard-harness: removing {}: {e}", dir.display());
    }
}

/// A running `synguard run` on the topology's server veth.
pub struct Daemon {
    child: Option<NsChild>,
    pid: i32,
    iface: String,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon in srv and waits until it says it is attached.
    pub fn start(t: &Topology, opts: &DaemonOptions) -> Result<Daemon> {
        let iface = t.server_iface().to_string();
        if !opts.bin.is_file() {
            bail!(
                "synguard binary {} not found (build it: cargo build --release -p synguard)",
                opts.bin.display()
            );
        }
        let mut cmd = crate::netns::command(t.netns(crate::Role::Srv), &opts.bin);
        cmd.args(["run", "--iface", &iface, "--ports", &opts.ports])
            .args(["--mode", &opts.mode, "--xdp-mode", opts.xdp_mode.as_str()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Own group: a terminal's Ctrl-C must not make it detach before the caller has
        // taken its final counter snapshot; the caller stops it.
        let mut child = t.spawn(&mut cmd, true)?;
        let pid = child.pid();
        live().push((pid, iface.clone()));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.take_stderr().context("daemon stderr")?;
        {
            let log = log.clone();
            thread::Builder::new()
                .name("synguard-log".into())
                .spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                        l.push_str(&line);
                        l.push('\n');
                    }
                })?;
        }
        let mut d = Daemon {
            child: Some(child),
            pid,
            iface,
            log,
        };
        let deadline = Instant::now() + opts.start_timeout;
        loop {
            if d.log().contains("synguard attached to") {
                return Ok(d);
            }
            let exited = d.child.as_mut().expect("child").try_wait()?;
            if let Some(st) = exited {
                // Let the log thread drain the pipe.
                thread::sleep(Duration::from_millis(100));
                bail!("synguard run exited ({st}) before attaching:\n{}", d.log());
            }
            if Instant::now() >= deadline {
                bail!(
                    "synguard run did not attach within {:?}:\n{}",
                    opts.start_timeout,
                    d.log()
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

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.iface)
    }

    /// SIGINT (the daemon detaches and removes its pins), SIGKILL after 5 s; returns the log.
    pub fn stop(mut self) -> Result<String> {
        self.shutdown()?;
        Ok(self.log())
    }

    fn shutdown(&mut self) -> Result<()> {
        let r = match self.child.take() {
            Some(mut c) => c.stop(Duration::from_secs(5)).map(|_| ()),
            None => Ok(()),
        };
        live().retain(|(p, _)| *p != self.pid);
        remove_pins(&self.iface);
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
