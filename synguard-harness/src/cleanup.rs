//! Registry of everything a harness run creates, so it can be removed however the run ends.
//!
//! A *fixture* here is a set of namespaces with their links and the files a run left in bpffs
//! or `/run` ([`crate::Topology`], [`crate::fixture::VethPair`]). Four paths lead to teardown,
//! and all of them go through `teardown_topology`, which takes a fixture's record out of the
//! registry under the lock before acting, so each is torn down exactly once whichever path
//! gets there first:
//! - `Drop` of the fixture (normal end and unwinding panics);
//! - a panic hook, for the topologies the panicking thread owns. It runs *before* unwinding, so
//!   cleanup happens even if unwinding later aborts (double panic, `panic = "abort"`);
//! - a SIGINT/SIGTERM/SIGHUP handler thread that tears everything down and then lets the signal
//!   take its default action;
//! - an `atexit` hook, for runs that end through `process::exit` without dropping (the test
//!   harness does so on failure).
//!
//! Child processes are registered too, and are only ever signalled while registered. A child is
//! unregistered before it is reaped, so its PID cannot have been reused by an unrelated process
//! when we signal it.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, MutexGuard, Once},
    thread::{self, ThreadId},
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

use crate::netns;

#[derive(Debug, Clone)]
pub(crate) struct TopologyRecord {
    pub id: u64,
    pub owner: ThreadId,
    /// Deleted in order; the hub (holding the bridge and all peers) comes last.
    pub namespaces: Vec<String>,
    /// (namespace, interface) pairs deleted explicitly before the namespaces, so the links go
    /// away even if some process still pins a namespace.
    pub links: Vec<(String, String)>,
    /// Pin directories and run-state files, removed after the children are killed and before
    /// the links: a pinned map outlives its interface and would stay in kernel memory.
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct ChildRecord {
    /// The child leads its own process group; signal the whole group.
    group: bool,
    topology: Option<u64>,
}

#[derive(Default)]
struct Registry {
    topologies: Vec<TopologyRecord>,
    children: HashMap<i32, ChildRecord>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    // A panic while holding the lock must not stop later cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = registry();
    f(g.get_or_insert_with(Registry::default))
}

pub(crate) fn register_topology(rec: TopologyRecord) {
    with_registry(|r| r.topologies.push(rec));
}

/// Adds a link that fixture `id` created after the fact (e.g. a test's extra bridge), so a
/// failing test removes it too. Returns false if the fixture is already gone.
pub(crate) fn add_link(id: u64, netns: &str, iface: &str) -> bool {
    with_registry(|r| match r.topologies.iter_mut().find(|t| t.id == id) {
        Some(t) => {
            t.links.push((netns.to_string(), iface.to_string()));
            true
        }
        None => false,
    })
}

/// Adds a pin directory or file to remove when fixture `id` is torn down.
pub(crate) fn add_path(id: u64, path: PathBuf) -> bool {
    with_registry(|r| match r.topologies.iter_mut().find(|t| t.id == id) {
        Some(t) => {
            if !t.paths.contains(&path) {
                t.paths.push(path);
            }
            true
        }
        None => false,
    })
}

pub(crate) fn register_child(pid: i32, group: bool, topology: Option<u64>) {
    with_registry(|r| r.children.insert(pid, ChildRecord { group, topology }));
}

/// Removes a child from the registry. Call before reaping it.
pub(crate) fn unregister_child(pid: i32) {
    with_registry(|r| r.children.remove(&pid));
}

/// Signals a registered child (or its group). Returns false if it is not registered, i.e. it
/// was already reaped and its PID must not be touched.
pub(crate) fn signal_child(pid: i32, sig: Signal) -> bool {
    with_registry(|r| match r.children.get(&pid) {
        Some(c) => {
            send(pid, c.group, sig);
            true
        }
        None => false,
    })
}

fn send(pid: i32, group: bool, sig: Signal) {
    let p = Pid::from_raw(pid);
    // ESRCH just means it is already gone (a zombie still accepts signals, so no reuse issue).
    let _ = if group { killpg(p, sig) } else { kill(p, sig) };
}

/// True once the child has exited; does not reap it (WNOWAIT), so the PID stays reserved.
pub(crate) fn child_exited(pid: i32) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    // An error (ECHILD: not our child, or already reaped) counts as gone, as before.
    !matches!(
        waitid(Id::Pid(Pid::from_raw(pid)), flags),
        Ok(WaitStatus::StillAlive)
    )
}

/// Kills the registered children that belong to `topology` (all if `None`) and waits, bounded,
/// for them to exit. They are reaped by their owners.
fn kill_children(topology: Option<u64>) {
    let pids: Vec<i32> = with_registry(|r| {
        r.children
            .iter()
            .filter(|(_, c)| topology.is_none() || c.topology == topology)
            .map(|(&pid, c)| {
                send(pid, c.group, Signal::SIGKILL);
                pid
            })
            .collect()
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    for pid in pids {
        while !child_exited(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Tears down topology `id` if it is still registered. Idempotent.
pub(crate) fn teardown_topology(id: u64) -> Result<()> {
    let rec = with_registry(|r| {
        let i = r.topologies.iter().position(|t| t.id == id)?;
        Some(r.topologies.remove(i))
    });
    match rec {
        Some(rec) => destroy(&rec),
        None => Ok(()),
    }
}

fn destroy(rec: &TopologyRecord) -> Result<()> {
    kill_children(Some(rec.id));
    let mut errors = Vec::new();
    for path in &rec.paths {
        let r = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {e}", path.display()));
        }
    }
    // If listing fails, try every deletion anyway rather than skip them.
    let existing = netns::list_netns().ok();
    let exists = |ns: &String| existing.as_ref().is_none_or(|e| e.contains(ns));
    for (ns, iface) in &rec.links {
        if !exists(ns) {
            continue;
        }
        // Deleting one end of a veth removes its peer, so a missing device is expected.
        if let Err(e) = netns::ip(&["-n", ns, "link", "del", "dev", iface]) {
            let msg = e.to_string();
            if !msg.contains("Cannot find device") && !msg.contains("does not exist") {
                errors.push(msg);
            }
        }
    }
    for ns in &rec.namespaces {
        if !exists(ns) {
            continue;
        }
        if let Err(e) = netns::ip(&["netns", "del", ns]) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("teardown incomplete: {}", errors.join("; ")))
    }
}

/// Tears down every registered topology and kills every registered child.
pub fn teardown_all() {
    kill_children(None);
    let recs = with_registry(|r| std::mem::take(&mut r.topologies));
    for rec in recs {
        if let Err(e) = destroy(&rec) {
            eprintln!("synguard-harness: {e:#}");
        }
    }
}

fn teardown_owned_by(owner: ThreadId) {
    let recs = with_registry(|r| {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topologies)
            .into_iter()
            .partition(|t| t.owner == owner);
        r.topologies = rest;
        mine
    });
    for rec in recs {
        if let Err(e) = destroy(&rec) {
            eprintln!("synguard-harness: {e:#}");
        }
    }
}

/// Number of topologies still registered (for diagnostics and tests).
pub fn live_topologies() -> usize {
    with_registry(|r| r.topologies.len())
}

extern "C" fn at_exit() {
    teardown_all();
}

/// Installs the signal handler thread, the panic hook and the atexit hook, once per process.
///
/// The signal handler ends the process after cleanup (default action of the signal). A program
/// that wants to handle Ctrl-C itself should call [`teardown_all`] from its own handler and
/// create topologies with `TopologyOptions::install_signal_handlers = false`; the panic and
/// exit hooks are installed regardless.
pub fn install_hooks(signals: bool) {
    static HOOKS: Once = Once::new();
    static SIGNALS: Once = Once::new();
    HOOKS.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            teardown_owned_by(thread::current().id());
        }));
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(at_exit);
        }
    });
    if signals {
        SIGNALS.call_once(|| {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
                Ok(mut sigs) => {
                    let r = thread::Builder::new().name("harness-signals".into()).spawn(
                        move || {
                            if let Some(sig) = sigs.forever().next() {
                                eprintln!(
                                    "synguard-harness: signal {sig}, tearing down {} topologies",
                                    live_topologies()
                                );
                                teardown_all();
                                let _ = signal_hook::low_level::emulate_default_handler(sig);
                                std::process::exit(128 + sig);
                            }
                        },
                    );
                    if let Err(e) = r {
                        eprintln!("synguard-harness: no signal cleanup thread: {e}");
                    }
                }
                Err(e) => eprintln!("synguard-harness: cannot install signal handlers: {e}"),
            }
        });
    }
}
