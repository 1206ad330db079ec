//! `synguard run`: load, attach (or take over a previous run's pinned links), then rotate
//! keys and drive auto mode until a signal says to stop.
//!
//! Signals: SIGHUP reloads the config file (validated first; a bad one changes nothing).
//! SIGTERM and SIGINT detach and exit (`systemctl stop`), unless `--keep-attached`.
//! SIGUSR2 exits and leaves everything attached for the next run (`systemctl restart`, via
//! the unit's `RestartKillSignal=`): no gap, same keys, counters and lists.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use ipnet::IpNet;
use log::{error, info, warn};
use synguard_common::maps::{Config, Counter, Handoff, Mode, names};

use crate::{
    attach::{self, Existing},
    auto::{self, Hysteresis, RateMeter, Rates, Thresholds, Transition},
    check,
    cli::RunArgs,
    handoff,
    iface::{self, IfaceName, XdpHook, XdpMode, XdpRequest},
    keys,
    lists::{self, List},
    local_addrs,
    metrics::{self, Live},
    pinned_maps,
    run_state::{self, RunState},
    service,
    settings::{self, Key, Tunables},
    state_dir,
    xdp_dispatcher::{self, Hook, XdpAttach},
};

/// Everything `run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunOpts {
    /// The first interface: the maps its daemon shares across interfaces live in its pin
    /// directory.
    pub iface: IfaceName,
    /// The other interfaces this daemon serves, with the same maps but their own counters.
    pub also: Vec<IfaceName>,
    pub tunables: Tunables,
    pub metrics: Option<SocketAddr>,
    pub xdp_mode: XdpRequest,
    /// `--handoff`: resolved against the kernel's probes (or the pinned run) by `run`.
    pub handoff: handoff::Request,
    pub xdp_attach: XdpAttach,
    pub xdp_priority: u32,
    pub rotation: Duration,
    /// Shared cookie secret (`--key-file`); `None`: a random key per host.
    pub key_file: Option<PathBuf>,
    pub keep_attached: bool,
    /// Set the required sysctls instead of refusing to start without them.
    pub fix_sysctls: bool,
    /// The config file these came from, reloaded on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// The lists the config file owns (`None`: the key is absent, the list is managed live).
    pub allow: Option<Vec<IpNet>>,
    pub deny: Option<Vec<IpNet>>,
    /// Settings given as flags: they override the file, on reload too.
    pub flag_settings: Vec<Key>,
}

impl RunOpts {
    /// Every interface this daemon serves, the first one first.
    pub fn ifaces(&self) -> impl Iterator<Item = &IfaceName> {
        std::iter::once(&self.iface).chain(&self.also)
    }

    pub fn list(&self, l: List) -> Option<&[IpNet]> {
        match l {
            List::Allow => self.allow.as_deref(),
            List::Deny => self.deny.as_deref(),
        }
    }

    fn config_name(&self) -> String {
        self.config_path
            .as_ref()
            .map_or_else(|| "no config file".into(), |p| p.display().to_string())
    }
}

/// How the event loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// SIGTERM/SIGINT: detach unless --keep-attached.
    Stop,
    /// SIGUSR2: leave everything for the next run.
    Handover,
}

fn take(ebpf: &mut aya::Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from object"))
}

/// One interface the daemon serves.
struct Member {
    iface: IfaceName,
    ifindex: u32,
    dir: PathBuf,
    _lock: state_dir::DaemonLock,
    counters: PerCpuArray<MapData, u64>,
    /// `None` when a takeover cannot tell the pinned link's mode.
    mode: Option<XdpMode>,
    reason: String,
    /// Whether this run attached it (false: it took over a previous run's links).
    fresh: bool,
    /// Native XDP on a veth only transmits while the peer keeps a native XDP program.
    watch_peer: bool,
    peer_ok: bool,
}

impl Member {
    fn served(&self) -> metrics::Served {
        metrics::Served {
            iface: self.iface.to_string(),
            dir: self.dir.clone(),
            xdp_mode: self.mode,
        }
    }
}

struct Attached {
    ring: keys::KeyRing,
    config: Array<MapData, Config>,
    key_rotated_unix: u64,
    /// The shared secret(s) with `--key-file`.
    secrets: Option<keys::SecretSchedule>,
    /// The handoff mode of every interface the daemon serves.
    handoff: handoff::Choice,
    /// `members[0]` is [`RunOpts::iface`]: the maps the interfaces share are pinned in its
    /// directory, and every other member pins the same maps in its own
    /// ([`names::PER_IFACE`] excepted).
    members: Vec<Member>,
}

impl Attached {
    fn served(&self) -> Vec<metrics::Served> {
        self.members.iter().map(Member::served).collect()
    }

    /// Sum of a counter over every interface.
    fn counter(&self, c: Counter) -> Result<u64> {
        self.members.iter().try_fold(0u64, |sum, m| {
            Ok(sum.saturating_add(pinned_maps::read_counter(&m.counters, c)?))
        })
    }

    fn names(&self) -> String {
        let v: Vec<&str> = self.members.iter().map(|m| m.iface.as_str()).collect();
        v.join(", ")
    }
}

/// Records each member's run state: shared key schedule, its own XDP mode.
fn store_run_state(rs: &RunState, att: &Attached) {
    for m in &att.members {
        let r = RunState {
            xdp_mode: m.mode,
            xdp_reason: m.reason.clone(),
            ..rs.clone()
        };
        if let Err(e) = r.store(&m.iface) {
            warn!("{}: cannot record run state: {e:#}", m.iface);
        }
    }
}

/// An interface's pin directory, created and locked, before anything is loaded.
struct Claim {
    iface: IfaceName,
    ifindex: u32,
    dir: PathBuf,
    dir_existed: bool,
    lock: state_dir::DaemonLock,
    /// Its links are pinned and attached (a previous run's): take them over.
    live: bool,
    /// Only its TC link is pinned and attached: a previous run in a dispatcher, whose TC
    /// link takes the new program in place.
    tc_pinned: bool,
    /// Taking over pinned links: whether they include a TC link (the handoff of the run that
    /// pinned them).
    existing_tc: Option<bool>,
}

impl Claim {
    fn new(iface: &IfaceName, ifindex: u32) -> Result<Claim> {
        let dir_existed = state_dir::dir(iface).is_dir();
        let dir = state_dir::ensure_dir(iface)?;
        let lock = state_dir::lock(&dir, iface)?;
        let existing = attach::existing_links(&dir, ifindex)?;
        if existing == Existing::Stale {
            warn!(
                "{iface}: removing stale link pins in {} (not attached to this interface any more)",
                dir.display()
            );
            attach::remove_link_pins(&dir)?;
        }
        Ok(Claim {
            iface: iface.clone(),
            ifindex,
            dir,
            dir_existed,
            lock,
            live: matches!(existing, Existing::Live { .. }),
            tc_pinned: matches!(existing, Existing::Dispatcher { .. }),
            existing_tc: match existing {
                Existing::Live { tc, .. } => Some(tc.is_some()),
                Existing::Dispatcher { .. } => Some(true),
                _ => None,
            },
        })
    }

    /// After a failed setup: leaves nothing half-attached, and drops the pin directory if
    /// this run made it. A taken-over interface stays as the previous run left it.
    fn undo(&self) {
        if !self.live && !self.tc_pinned {
            let _ = attach::remove_link_pins(&self.dir);
            if !self.dir_existed {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// Detaches what this run attached fresh, after a later step of the start failed.
fn undo_members(members: &[Member]) {
    for m in members.iter().filter(|m| m.fresh) {
        if let Err(e) = attach::detach(&m.dir, Some(m.ifindex)) {
            warn!("{}: detaching after the failed start: {e:#}", m.iface);
        }
    }
}

pub fn run(args: &RunArgs, o: RunOpts) -> Result<()> {
    // Everything that can be checked is checked before anything is created or written.
    o.tunables.validate().map_err(anyhow::Error::msg)?;
    require_capabilities()?;
    let mut ifindexes = Vec::new();
    for name in o.ifaces() {
        let ifindex = iface::ifindex(name)?;
        iface::require_ethernet(name, ifindex)?;
        ifindexes.push(ifindex);
    }
    let probes = handoff::Probes::run();
    // A fresh attach needs the programs' mode only; fail before anything is created.
    let fresh_choice = handoff::choose(o.handoff, &probes).map_err(anyhow::Error::msg)?;
    // The fresh choice is the takeover's too wherever a TC link can be pinned (kfunc).
    require_sysctls(o.fix_sysctls, fresh_choice.mode)?;
    let secrets = match &o.key_file {
        Some(p) => Some(keys::SecretSchedule::new(p.clone(), keys::Secret::read(p)?)),
        None => None,
    };
    let ncpus = settings::ncpus()?;
    let metrics_listener = match o.metrics {
        Some(addr) => Some(std::net::TcpListener::bind(addr).with_context(|| {
            format!(
                "binding the metrics endpoint {addr} (in use by another synguard in this \
                 network namespace? pass --metrics ADDR or --metrics off)"
            )
        })?),
        None => None,
    };

    // The runtime and the signal streams before anything is attached: a signal that comes
    // once the pins exist (a supervisor's SIGHUP right after start) is queued for the loop,
    // never met by its default action (SIGHUP's ends the process).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let _in_rt = rt.enter();
        Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        }
    };
    let first = Claim::new(&o.iface, ifindexes[0])?;
    // A takeover keeps the mode of the pinned links; the other interfaces take the first's.
    let hc = match first.existing_tc {
        Some(with_tc) => match handoff::for_takeover(
            o.handoff,
            with_tc,
            RunState::load(&o.iface).map(|r| r.handoff_reason),
            &probes,
        ) {
            Ok(c) => c,
            Err(e) => {
                first.undo();
                anyhow::bail!(e);
            }
        },
        None => fresh_choice,
    };
    info!("{}: handoff {}: {}", o.iface, hc.mode, hc.reason);
    if hc.mode == Handoff::KernelCookie
        && let check::Outcome::Warn(w) =
            check::kernel_cookie_syncookies(check::sysctl(check::SYNCOOKIES))
    {
        warn!("{}: {}: {w}", o.iface, check::SYNCOOKIES);
    }
    let (ring, config, key_rotated_unix, (counters, mode, reason)) =
        match setup(&o, &first, ncpus, secrets.as_ref(), &hc) {
            Ok(a) => a,
            Err(e) => {
                first.undo();
                return Err(e);
            }
        };
    let mut att = Attached {
        ring,
        config,
        key_rotated_unix,
        secrets,
        handoff: hc,
        members: vec![Member::new(first, counters, mode, reason)],
    };
    for (name, &ifindex) in o.also.iter().zip(&ifindexes[1..]) {
        match join(&o, &att.members[0].dir, name, ifindex, &att.handoff) {
            Ok(m) => att.members.push(m),
            Err(e) => {
                undo_members(&att.members);
                return Err(e);
            }
        }
    }

    let mut rs = RunState {
        pid: std::process::id(),
        started_unix: run_state::unix_now(),
        key_rotated_unix: att.key_rotated_unix,
        key_epoch: att.ring.active()?.epoch,
        rotation_secs: o.rotation.as_secs(),
        xdp_mode: att.members[0].mode,
        xdp_reason: att.members[0].reason.clone(),
        config: o.config_path.clone(),
        pid_ns: state_dir::pid_ns(),
        key_file: o.key_file.clone(),
        handoff: att.handoff.mode.name().into(),
        handoff_reason: att.handoff.reason.clone(),
    };
    store_run_state(&rs, &att);

    let mut o = o;
    let result = rt.block_on(event_loop(
        args,
        &mut o,
        &mut att,
        &mut rs,
        metrics_listener,
        signals,
    ));
    let how = match &result {
        Ok(Exit::Handover) => "SIGUSR2",
        _ if o.keep_attached => "--keep-attached",
        _ => "",
    };
    let names = att.names();
    if !how.is_empty() {
        service::stopping(&format!("exiting; {names} stays protected"));
        for m in &att.members {
            info!(
                "leaving synguard attached to {} ({}): programs, keys, counters and lists stay \
                 in {}; start `synguard run` again to take over, or `synguard detach` to remove",
                m.iface,
                how,
                m.dir.display()
            );
        }
    } else {
        service::stopping(&format!("detaching from {names}"));
        // The first interface last: the others' pins of the shared maps go first.
        for m in att.members.iter().rev() {
            info!("detaching from {}", m.iface);
            if m.dir.is_dir() {
                attach::detach(&m.dir, Some(m.ifindex))?;
            }
            RunState::remove(&m.iface);
        }
    }
    result.map(|_| ())
}

/// Refuses to start, naming what is missing, without the capabilities `run` needs. The
/// alternative is a bpf(2) EPERM deep in loading, or "not running" on a 0700 bpffs.
fn require_capabilities() -> Result<()> {
    // capability.h numbers.
    const CAPS: [(u32, &str); 4] = [
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(()); // no /proc: let the operations themselves say
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return Ok(());
    };
    let missing: Vec<&str> = CAPS
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(service::permission(format!(
            "starting `synguard run` (missing {})",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Makes the lists the config owns hold exactly its entries: removals first (so the trie
/// never overflows), then additions. Each change is logged at info.
pub fn sync_lists(o: &RunOpts) -> Result<()> {
    for l in [List::Allow, List::Deny] {
        let Some(want) = o.list(l) else { continue };
        let have = lists::list(&o.iface, l)?;
        let gone: Vec<String> = have
            .iter()
            .filter(|n| !want.contains(n))
            .map(ToString::to_string)
            .collect();
        let new: Vec<String> = want
            .iter()
            .filter(|n| !have.contains(n))
            .map(ToString::to_string)
            .collect();
        if !gone.is_empty() {
            for m in lists::del(&o.iface, l, &gone)? {
                info!("{}: {m} (not in {})", o.iface, o.config_name());
            }
        }
        if !new.is_empty() {
            for m in lists::add(&o.iface, l, &new)? {
                info!("{}: {m} (from {})", o.iface, o.config_name());
            }
        }
    }
    Ok(())
}

/// Refuses to start, with every fix in the message, while a sysctl of
/// [`check::REQUIRED_SYSCTLS`] that the `mode` handoff needs is off in this network
/// namespace; with `fix`, sets it instead and logs the change. Before anything is created,
/// so a refusal leaves nothing behind.
fn require_sysctls(fix: bool, mode: Handoff) -> Result<()> {
    let mut wrong = Vec::new();
    for s in check::REQUIRED_SYSCTLS.iter().filter(|s| s.needed_by(mode)) {
        let Err(e) = s.probe() else { continue };
        if fix {
            s.fix()
                .map_err(|w| anyhow::anyhow!("--fix-sysctls: {} {e}: {w}", s.name))?;
            info!("--fix-sysctls: set {}={} (it {e})", s.name, s.min);
        } else {
            wrong.push(format!("{} {e}", s.name));
        }
    }
    if !wrong.is_empty() {
        anyhow::bail!(
            "the {mode} handoff needs these sysctls in this network namespace (or pass \
             --fix-sysctls to set them):\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(())
}

/// What one attach step leaves: the interface's counters, and its XDP mode with the reason.
type Attach = (PerCpuArray<MapData, u64>, Option<XdpMode>, String);

/// The first interface: loads (creating or reusing the maps in its pin directory), writes
/// the settings, lists and keys, and attaches (or takes over).
fn setup(
    o: &RunOpts,
    c: &Claim,
    ncpus: u32,
    secrets: Option<&keys::SecretSchedule>,
    hc: &handoff::Choice,
) -> Result<(keys::KeyRing, Array<MapData, Config>, u64, Attach)> {
    let (mut ebpf, choice, via_dispatcher) = load_member(o, c, hc)?;
    let mut config: Array<MapData, Config> = Array::try_from(take(&mut ebpf, names::CONFIG)?)?;
    let mut cfg = o.tunables.to_config(ncpus);
    cfg.handoff = hc.mode as u8;
    config.set(0, &cfg, 0)?;
    let mut ports: Array<MapData, u64> = Array::try_from(take(&mut ebpf, names::PORTS)?)?;
    pinned_maps::write_ports(&mut ports, &o.tunables.ports)?;
    // The maps are pinned: the lists are in place before XDP sees a packet.
    sync_lists(o)?;
    let mut ring = keys::KeyRing::new(
        Array::try_from(take(&mut ebpf, names::KEYS)?)?,
        Array::try_from(take(&mut ebpf, names::STATE)?)?,
        Array::try_from(take(&mut ebpf, names::MINTED)?)?,
    );
    let key_rotated_unix = if let Some(s) = secrets {
        let (now, period) = (run_state::unix_now(), o.rotation.as_secs());
        let plan = keys::plan(now, period, keys::skew_margin(period));
        let changed = ring.apply_plan(plan, s, o.tunables.wscale)?;
        info!(
            "cookie keys from the shared secret in {}: epochs {} and {}, minting {} ({}; \
             tolerated clock skew {}s)",
            s.path.display(),
            plan.epochs[0],
            plan.epochs[1],
            plan.epochs[plan.active as usize],
            if changed {
                "installed"
            } else {
                "already in the pinned maps"
            },
            keys::skew_margin(period)
        );
        now - now % period.max(1)
    } else {
        let reused = ring.init_or_reuse(o.tunables.wscale)?;
        let epoch = ring.active()?.epoch;
        info!(
            "cookie key epoch {epoch} ({})",
            if reused {
                "reused from the pinned maps"
            } else {
                "new"
            }
        );
        // Keep the previous run's rotation schedule when its record matches the pinned
        // keys, so a restart neither shortens a key's life nor resets it.
        match RunState::load(&o.iface) {
            Some(prev) if reused && prev.key_epoch == epoch => prev.key_rotated_unix,
            _ => run_state::unix_now(),
        }
    };
    let attached = attach_member(o, c, ebpf, choice, via_dispatcher, hc)?;
    Ok((ring, config, key_rotated_unix, attached))
}

/// Another interface for the same daemon: pins the maps the first interface holds (all but
/// [`names::PER_IFACE`]) in its own directory, so the same keys, MINTED marks, settings and
/// lists serve both and a cookie minted on one validates on the other; then loads and
/// attaches as for the first.
fn join(
    o: &RunOpts,
    first_dir: &Path,
    name: &IfaceName,
    ifindex: u32,
    hc: &handoff::Choice,
) -> Result<Member> {
    let c = Claim::new(name, ifindex)?;
    let attached = share_maps(first_dir, &c)
        .and_then(|()| load_member(o, &c, hc))
        .and_then(|(ebpf, choice, via)| attach_member(o, &c, ebpf, choice, via, hc));
    match attached {
        Ok((counters, mode, reason)) => {
            info!("{name}: served by this daemon with the maps of {}", o.iface);
            Ok(Member::new(c, counters, mode, reason))
        }
        Err(e) => {
            c.undo();
            Err(e.context(format!("adding interface {name}")))
        }
    }
}

/// Pins each shared map of `first_dir` in `c`'s directory, or checks that the pin already
/// there is the same map (a previous run of this daemon). A directory holding maps of its
/// own (another daemon's keys and lists) is refused: merging would drop them silently.
fn share_maps(first_dir: &Path, c: &Claim) -> Result<()> {
    use synguard_common::maps::SPECS;
    for spec in SPECS.iter().filter(|s| !names::PER_IFACE.contains(&s.name)) {
        let (src, dst) = (first_dir.join(spec.name), c.dir.join(spec.name));
        let theirs = MapData::from_pin(&src)
            .with_context(|| format!("opening the shared map {}", src.display()))?;
        if dst.exists() {
            let mine =
                MapData::from_pin(&dst).with_context(|| format!("opening {}", dst.display()))?;
            if mine.info()?.id() != theirs.info()?.id() {
                anyhow::bail!(
                    "{} holds synguard maps of its own ({} is not {}'s): it was protected by \
                     another daemon, with other keys and lists; `synguard detach --iface {}` \
                     it first, so that this daemon serves it with its maps",
                    c.iface,
                    dst.display(),
                    first_dir.display(),
                    c.iface
                );
            }
        } else {
            theirs
                .pin(&dst)
                .with_context(|| format!("pinning {} at {}", src.display(), dst.display()))?;
        }
    }
    state_dir::restrict(&c.dir)
}

/// Loads the object for one interface with the maps in its pin directory, after the checks
/// that need nothing loaded, and starts following the host's addresses for it. Returns the
/// object, the XDP mode to attach in (`None`: taking over), and whether through a
/// dispatcher.
fn load_member(
    o: &RunOpts,
    c: &Claim,
    hc: &handoff::Choice,
) -> Result<(aya::Ebpf, Option<iface::ModeChoice>, bool)> {
    let (name, ifindex, live) = (&c.iface, c.ifindex, c.live);
    // Through a dispatcher (sharing the hook), when asked to or when one is already there.
    let shared = !live
        && match o.xdp_attach {
            XdpAttach::Link => false,
            XdpAttach::Dispatcher => true,
            XdpAttach::Auto => matches!(xdp_dispatcher::hook(ifindex)?, Hook::Dispatcher { .. }),
        };
    let choice = if live {
        None
    } else {
        // Native and generic XDP cannot be active together, and a foreign program holds
        // the hook: say so plainly instead of failing the attach with EBUSY.
        if !shared && let Some((id, how)) = iface::xdp_occupant(ifindex)? {
            anyhow::bail!(
                "{name} already has a {how} XDP program (id {id}) that synguard did not pin; \
                 remove it first (ip link set dev {name} xdp off), or load it through libxdp \
                 (xdp-loader) and start synguard with --xdp-attach dispatcher to share the hook"
            );
        }
        Some(iface::choose_mode(name, o.xdp_mode)?)
    };
    let mut ebpf = attach::load(&c.dir, shared, hc.mode)?;
    let strips_vlan = iface::strips_vlan_tags(name)?;
    if strips_vlan {
        info!(
            "{name}: strips VLAN tags on receive (rx-vlan-offload on): XDP sees VLAN frames \
             untagged and could only answer them untagged, so SYNs to the addresses of VLAN \
             devices over it are left to the kernel (not_local); `ethtool -K {name} rxvlan off` \
             lets synguard answer them, with their tags"
        );
    } else {
        info!(
            "{name}: does not strip VLAN tags (rx-vlan-offload off): tagged SYNs are answered \
             with their tags"
        );
    }
    // Before attaching: XDP answers no SYN until it knows the host's addresses and MAC.
    local_addrs::start(
        take(&mut ebpf, names::LOCAL_ADDRS)?,
        take(&mut ebpf, names::IFACES)?,
        ifindex,
        strips_vlan,
    )?;
    Ok((ebpf, choice, shared))
}

/// Attaches one interface (or replaces the programs of its pinned links, taking over).
/// Returns its counters and the XDP mode with the reason.
fn attach_member(
    o: &RunOpts,
    c: &Claim,
    mut ebpf: aya::Ebpf,
    choice: Option<iface::ModeChoice>,
    via_dispatcher: bool,
    hc: &handoff::Choice,
) -> Result<Attach> {
    let (name, ifindex, dir) = (&c.iface, c.ifindex, c.dir.as_path());
    let counters = PerCpuArray::try_from(take(&mut ebpf, names::COUNTERS)?)?;
    let (mode, reason) = if c.live {
        attach::replace(&mut ebpf, dir, hc.mode.needs_tc())?;
        let [xdp_pin, _] = state_dir::link_pins(dir);
        let xdp = attach::pinned_link(&xdp_pin)?.context("XDP link pin vanished")?;
        let mode = match iface::xdp_hook(ifindex, xdp.prog_id) {
            Ok(XdpHook::Ours(m)) => Some(m),
            _ => None,
        };
        let shown = mode.map_or("unknown", XdpMode::name);
        let prev_reason = RunState::load(name)
            .map(|r| r.xdp_reason)
            .unwrap_or_else(|| "mode of the pinned link".into());
        if let XdpRequest::Exactly(w) = o.xdp_mode
            && Some(w) != mode
        {
            warn!(
                "{name}: --xdp-mode {w} ignored: the pinned XDP link stays in {shown} mode (a \
                 link cannot change mode; `synguard detach` and start again to switch)"
            );
        }
        info!(
            "{name}: took over the pinned links of a previous run: programs replaced in place \
             (no detach gap), XDP {shown}, maps/keys/counters reused"
        );
        (mode, prev_reason)
    } else {
        let choice = choice.context("no XDP mode chosen for a fresh attach")?;
        if c.tc_pinned && !via_dispatcher {
            // A previous run shared the hook; this one attaches alone, with a TC link of
            // its own.
            warn!("{name}: leaving the XDP dispatcher of the previous run (--xdp-attach link)");
            if xdp_dispatcher::leave(ifindex)? {
                info!("{name}: left the XDP dispatcher");
            }
            attach::remove_link_pins(dir)?;
        }
        let got = if via_dispatcher {
            attach::attach_shared(
                &mut ebpf,
                name,
                ifindex,
                &choice,
                o.xdp_priority,
                dir,
                hc.mode.needs_tc(),
            )?
        } else {
            attach::attach(&mut ebpf, name, &choice, dir, hc.mode.needs_tc())?
        };
        info!("{name}: XDP {}: {}", got.mode, got.reason);
        (Some(got.mode), got.reason)
    };
    info!(
        "synguard attached to {name}, mode {}, handoff {}, ports {}",
        o.tunables.mode, hc.mode, o.tunables.ports
    );
    Ok((counters, mode, reason))
}

impl Member {
    fn new(
        c: Claim,
        counters: PerCpuArray<MapData, u64>,
        mode: Option<XdpMode>,
        reason: String,
    ) -> Member {
        let watch_peer =
            mode == Some(XdpMode::Native) && matches!(iface::veth_peer(&c.iface), Ok(Some(_)));
        Member {
            iface: c.iface,
            ifindex: c.ifindex,
            dir: c.dir,
            _lock: c.lock,
            counters,
            mode,
            reason,
            fresh: !c.live,
            watch_peer,
            peer_ok: true,
        }
    }
}

/// The signals the event loop acts on, registered before the programs attach.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

async fn event_loop(
    args: &RunArgs,
    o: &mut RunOpts,
    att: &mut Attached,
    rs: &mut RunState,
    metrics_listener: Option<std::net::TcpListener>,
    signals: Signals,
) -> Result<Exit> {
    let live = Arc::new(Live::default());
    live.set_key_rotated(rs.key_rotated_unix);
    live.set_served(att.served());
    // The kernel accounts run_time/run_cnt of every program while this fd is open, for
    // synguard_program_run_seconds_total; without it (old kernel, no CAP) they stay 0.
    let _stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!("cannot enable BPF run-time stats (program CPU metrics stay 0): {e}");
            None
        }
    };
    let _server = match metrics_listener {
        Some(l) => {
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            if !addr.ip().is_loopback() {
                warn!(
                    "metrics endpoint on non-loopback {addr}: anyone who can reach it sees the \
                     counters and key epoch"
                );
            }
            let l = tokio::net::TcpListener::from_std(l)?;
            let reg = Arc::new(metrics::registry(att.handoff.clone(), live.clone()));
            info!("metrics on http://{addr}/metrics, health on http://{addr}/healthz");
            let health = health_check(live.clone(), att.handoff.mode.needs_tc());
            Some(AbortOnDrop(tokio::spawn(metrics::serve(l, reg, health))))
        }
        None => None,
    };
    let Signals {
        term: mut sigterm,
        int: mut sigint,
        hup: mut sighup,
        usr2: mut sigusr2,
    } = signals;
    // WATCHDOG=1 from the loop itself: a wedged loop (no rotation, no auto mode) stops it.
    let mut watchdog = service::watchdog_interval().map(|d| {
        info!("systemd watchdog: pinging every {d:?}");
        let mut i = tokio::time::interval(d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });

    // Tries reused from a previous run may hold entries the (maybe new) flags don't show.
    let mut list_flags = lists::ListFlags::open(&o.iface)?;
    list_flags.refresh()?;
    let mut sample = tokio::time::interval(auto::SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut meter = RateMeter::default();
    let mut ack_meter = RateMeter::default();
    let mut hyst = Hysteresis::new(att.ring.engaged()?);
    let mut last_dir_check = Instant::now();
    let mut last_peer_check = Instant::now();

    // Next rotation: one period after the active key was installed (maybe by a previous run).
    // With a key file: at the next change of the shared schedule instead.
    let first = match att.secrets {
        Some(_) => until_next_plan(o.rotation),
        None => {
            let age =
                Duration::from_secs(run_state::unix_now().saturating_sub(att.key_rotated_unix));
            o.rotation.saturating_sub(age)
        }
    };
    let rotate_at = tokio::time::sleep(first);
    tokio::pin!(rotate_at);
    let (key_tx, mut key_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _key_watch = match &att.secrets {
        Some(s) => Some(watch_key_file(&s.path, key_tx)?),
        None => None,
    };
    service::ready(&status_line(o, att, rs, hyst.engaged));

    let exit = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM"); break Exit::Stop; }
            _ = sigint.recv() => { info!("SIGINT"); break Exit::Stop; }
            _ = sigusr2.recv() => {
                info!("SIGUSR2: exiting for a restart, leaving everything attached");
                break Exit::Handover;
            }
            _ = sighup.recv() => {
                service::reloading();
                let old_rotation = o.rotation;
                match reload(args, o, att) {
                    Ok(n) => info!("reloaded {}: {n} change(s)", o.config_name()),
                    Err(e) => error!(
                        "reload refused, nothing changed: {e:#}"
                    ),
                }
                live.set_served(att.served());
                if o.rotation != old_rotation && att.secrets.is_none() {
                    let age = Duration::from_secs(run_state::unix_now().saturating_sub(rs.key_rotated_unix));
                    rotate_at.as_mut().reset(tokio::time::Instant::now() + o.rotation.saturating_sub(age));
                    rs.rotation_secs = o.rotation.as_secs();
                }
                rs.config = o.config_path.clone();
                store_run_state(rs, att);
                service::ready(&status_line(o, att, rs, hyst.engaged));
            }
            Some(_) = async {
                match watchdog.as_mut() {
                    Some(w) => Some(w.tick().await),
                    None => std::future::pending().await,
                }
            } => service::watchdog(),
            Some(()) = key_rx.recv() => {
                while key_rx.try_recv().is_ok() {}
                if let Some(s) = att.secrets.as_mut() {
                    reread_key_file(&o.iface, s, o.rotation);
                }
            }
            _ = &mut rotate_at => {
              if att.secrets.is_some() {
                let cfg = att.config.get(&0, 0)?;
                let (now, period) = (run_state::unix_now(), o.rotation.as_secs());
                let plan = keys::plan(now, period, keys::skew_margin(period));
                if let Some(s) = &att.secrets
                    && att.ring.apply_plan(plan, s, cfg.wscale.min(14))?
                {
                    let k = att.ring.active()?;
                    if k.epoch != rs.key_epoch {
                        rs.key_rotated_unix = now - now % period.max(1);
                        live.set_key_rotated(rs.key_rotated_unix);
                        rs.key_epoch = k.epoch;
                        store_run_state(rs, att);
                        info!("{}: minting with shared-secret epoch {}", att.names(), k.epoch);
                        service::status(&status_line(o, att, rs, hyst.engaged));
                    } else {
                        info!(
                            "{}: installed shared-secret epoch {} ahead of its start",
                            att.names(),
                            plan.epochs[(plan.active ^ 1) as usize]
                        );
                    }
                }
                rotate_at.as_mut().reset(tokio::time::Instant::now() + until_next_plan(o.rotation));
                continue;
              }
                // wscale comes from CONFIG, so `synguard set wscale` applies from here on.
                let cfg = att.config.get(&0, 0)?;
                let k = att.ring.rotate(cfg.wscale.min(14))?;
                rs.key_rotated_unix = run_state::unix_now();
                live.set_key_rotated(rs.key_rotated_unix);
                rs.key_epoch = k.epoch;
                store_run_state(rs, att);
                info!("{}: rotated the cookie key to epoch {} (wscale {})", att.names(), k.epoch, k.wscale);
                service::status(&status_line(o, att, rs, hyst.engaged));
                rotate_at.as_mut().reset(tokio::time::Instant::now() + o.rotation);
            }
            scheduled = sample.tick() => {
                live.tick_ran_late(tokio::time::Instant::now().saturating_duration_since(scheduled));
                live.beat();
                let now = Instant::now();
                if let Err(e) = list_flags.refresh() {
                    warn!("{}: cannot recount the allow/deny lists: {e:#}", o.iface);
                }
                // The daemon's interfaces share one engaged state: it follows their sum.
                let syn = att.counter(Counter::SynSeen)?;
                // One continuous count of forged ACKs, whichever side of the engage.
                let forged_acks = att.counter(Counter::AckPassedUnengaged)?
                    .saturating_add(att.counter(Counter::CookieAckInvalid)?);
                let ack_rate = ack_meter.sample(forged_acks, now);
                if let Some(rate) = meter.sample(syn, now) {
                    live.set_syn_rate(rate);
                    let cfg = att.config.get(&0, 0)?;
                    let th = Thresholds::of(&cfg);
                    let rates = Rates { syn: rate, forged_ack: ack_rate.unwrap_or(0.0) };
                    if let Some(t) = hyst.update(rates, th, now) {
                        att.ring.set_engaged(t == Transition::Engage)?;
                        service::status(&status_line(o, att, rs, t == Transition::Engage));
                        live.add_transition();
                        let mode = Mode::from_u32(cfg.mode);
                        let mode_name = mode.map_or("?", Mode::name);
                        match t {
                            Transition::Engage => info!(
                                "{}: engaged: {} (SYN {rate:.0}/s, syn_rate_on {}; forged ACK {:.0}/s, ack_rate_on {}) (mode {mode_name}{})",
                                att.names(), th.trigger(rates).unwrap_or("?"), cfg.syn_rate_on,
                                rates.forged_ack, cfg.ack_rate_on,
                                if mode == Some(Mode::Auto) { ": answering SYNs with cookies" } else { ": no effect outside auto" }
                            ),
                            Transition::Disengage => info!(
                                "{}: disengaged: SYN rate {rate:.0}/s below syn_rate_off {} and forged-ACK rate {:.0}/s below ack_rate_off {} for {:?} (mode {mode_name})",
                                att.names(), cfg.syn_rate_off, rates.forged_ack, cfg.ack_rate_off, auto::HOLD
                            ),
                        }
                    }
                }
                if now.duration_since(last_peer_check) >= Duration::from_secs(5) {
                    last_peer_check = now;
                    for m in att.members.iter_mut().filter(|m| m.watch_peer && m.mode == Some(XdpMode::Native)) {
                        if let Ok(Some((peer, prog))) = iface::veth_peer(&m.iface) {
                            if m.peer_ok && prog.is_none() {
                                warn!(
                                    "{}: the veth peer {peer} no longer runs a native XDP program: it \
                                     drops our native XDP_TX SYN+ACKs. Restart with --xdp-mode generic \
                                     (`synguard detach` first), or put a native XDP program back on {peer}",
                                    m.iface
                                );
                            } else if !m.peer_ok && prog.is_some() {
                                info!("{}: the veth peer {peer} runs a native XDP program again", m.iface);
                            }
                            m.peer_ok = prog.is_some();
                        }
                    }
                }
                if now.duration_since(last_dir_check) >= Duration::from_secs(1) {
                    last_dir_check = now;
                    if !att.members[0].dir.is_dir() {
                        anyhow::bail!(
                            "the pin directory {} was removed (synguard detach --force?); exiting",
                            att.members[0].dir.display()
                        );
                    }
                    // Another interface detached under us: serve the rest.
                    let before = att.members.len();
                    att.members.retain(|m| {
                        let kept = m.dir.is_dir();
                        if !kept {
                            warn!(
                                "{}: its pin directory {} was removed (synguard detach?); no \
                                 longer serving it",
                                m.iface,
                                m.dir.display()
                            );
                            RunState::remove(&m.iface);
                        }
                        kept
                    });
                    if att.members.len() != before {
                        o.also = att.members[1..].iter().map(|m| m.iface.clone()).collect();
                        live.set_served(att.served());
                    }
                }
            }
        }
    };
    Ok(exit)
}

/// The event loop ticks every [`auto::SAMPLE`]; /healthz fails once it has not for this
/// long (a loop blocked or stuck, e.g. on a hung map syscall).
const HEALTH_STALE: Duration = Duration::from_secs(5);

/// GET /healthz: 200 while the event loop ticks and both program links are attached to the
/// interface (read from their pins, as a restart would find them), 503 with the reason
/// otherwise.
fn health_check(live: Arc<Live>, with_tc: bool) -> metrics::Health {
    Arc::new(move || {
        let since = live.since_beat();
        if since > HEALTH_STALE {
            return Err(format!(
                "event loop stalled: no tick for {}",
                if since == Duration::MAX {
                    "ever".to_string()
                } else {
                    format!("{:.1}s", since.as_secs_f64())
                }
            ));
        }
        let mut ok = Vec::new();
        for m in live.served() {
            let name = &m.iface;
            let ifindex = name
                .parse::<IfaceName>()
                .map_err(|e| format!("{name}: {e}"))
                .and_then(|n| iface::ifindex(&n).map_err(|e| format!("{name}: {e:#}")))?;
            match attach::existing_links(&m.dir, ifindex) {
                Ok(Existing::Live { xdp, tc: Some(tc) }) => {
                    ok.push(format!("{name}: XDP link {} and TC link {}", xdp.id, tc.id));
                }
                Ok(Existing::Live { xdp, tc: None }) if !with_tc => {
                    ok.push(format!(
                        "{name}: XDP link {} (no TC in this handoff)",
                        xdp.id
                    ));
                }
                Ok(Existing::Live { .. }) => {
                    return Err(format!("{name}: programs not attached: no TC link"));
                }
                // A handoff without TC, in a dispatcher, pins nothing.
                Ok(Existing::None) if !with_tc => match xdp_dispatcher::hook(ifindex) {
                    Ok(Hook::Dispatcher { prog_id, .. }) => {
                        ok.push(format!(
                            "{name}: XDP dispatcher {prog_id} (no TC in this handoff)"
                        ));
                    }
                    _ => return Err(format!("{name}: programs not attached: no link pins")),
                },
                // Sharing the hook: the dispatcher holds the XDP program, no link pin.
                Ok(Existing::Dispatcher { tc }) => match xdp_dispatcher::hook(ifindex) {
                    Ok(Hook::Dispatcher { prog_id, .. }) => {
                        ok.push(format!(
                            "{name}: XDP dispatcher {prog_id} and TC link {}",
                            tc.id
                        ));
                    }
                    _ => return Err(format!("{name}: programs not attached: no XDP dispatcher")),
                },
                Ok(Existing::None) => {
                    return Err(format!("{name}: programs not attached: no link pins"));
                }
                Ok(Existing::Stale) => {
                    return Err(format!(
                        "{name}: programs not attached: link pins missing or stale"
                    ));
                }
                Err(e) => return Err(format!("{name}: cannot read the link pins: {e:#}")),
            }
        }
        if ok.is_empty() {
            return Err("no interface served".into());
        }
        Ok(format!("ok: {}", ok.join("; ")))
    })
}

/// How long until [`keys::plan`] changes (a little after, so the new second has begun).
fn until_next_plan(rotation: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let period = rotation.as_secs().max(1);
    let next = keys::next_change(now.as_secs(), period, keys::skew_margin(period));
    Duration::from_secs(next).saturating_sub(now) + Duration::from_millis(5)
}

/// Watches the key file's directory (a Kubernetes Secret volume replaces the file by
/// swapping its `..data` symlink, which a watch on the file itself would miss) and sends
/// one `()` per batch of events.
fn watch_key_file(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<notify::INotifyWatcher> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut w = notify::INotifyWatcher::new(
        move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = tx.send(());
            }
        },
        notify::Config::default(),
    )
    .context("starting the key file watcher (inotify)")?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {} for key file changes", dir.display()))?;
    info!("watching {} for changes of the key file", dir.display());
    Ok(w)
}

/// Something changed in the key file's directory: a valid new secret takes over at the
/// first epoch not yet installed; a bad file is refused and the current secret stays.
fn reread_key_file(iface: &IfaceName, s: &mut keys::SecretSchedule, rotation: Duration) {
    let new = match keys::Secret::read(&s.path) {
        Ok(n) => n,
        Err(e) => {
            error!("{iface}: key file changed but is refused, keeping the current secret: {e:#}");
            return;
        }
    };
    let (now, period) = (run_state::unix_now(), rotation.as_secs());
    if let Some(from) = s.change(new, now, period, keys::skew_margin(period)) {
        info!(
            "{iface}: new secret in {}: it mints from epoch {from} (unix {}); the keys of the \
             old one stay valid until then and one period longer",
            s.path.display(),
            u64::from(from) * period.max(1)
        );
    }
}

/// The STATUS= line systemctl status shows.
fn status_line(o: &RunOpts, att: &Attached, rs: &RunState, engaged: bool) -> String {
    format!(
        "protecting {} (mode {}{}, ports {}), key epoch {}",
        att.names(),
        o.tunables.mode,
        if engaged { ", engaged" } else { "" },
        o.tunables.ports,
        rs.key_epoch
    )
}

/// SIGHUP: re-reads the config file with the same flags, validates it whole, then applies
/// what changed, logging each change. Returns the number of changes. An `Err` means nothing
/// was applied (except a map write failing midway, which the error says).
fn reload(args: &RunArgs, o: &mut RunOpts, att: &mut Attached) -> Result<usize> {
    info!("SIGHUP: reloading {}", o.config_name());
    let new = args.resolve()?;
    if new.iface != o.iface {
        anyhow::bail!(
            "the config names {} first but this daemon's first interface is {}, whose pin \
             directory holds the maps its interfaces share: a running daemon cannot move it; \
             add or remove the other interfaces, or restart the daemon",
            new.iface,
            o.iface
        );
    }
    // Interfaces to add are checked before anything changes.
    let added: Vec<(IfaceName, u32)> = new
        .also
        .iter()
        .filter(|n| !o.also.contains(n))
        .map(|n| {
            let ifindex = iface::ifindex(n)?;
            iface::require_ethernet(n, ifindex)?;
            Ok((n.clone(), ifindex))
        })
        .collect::<Result<_>>()?;
    let ncpus = settings::ncpus()?;
    let p = pinned_maps::PinnedMaps::at(&state_dir::dir(&o.iface));
    let cur_cfg = att.config.get(&0, 0)?;
    let cur_ports = p.ports()?;
    let cur = Tunables::from_config(&cur_cfg, cur_ports.clone(), ncpus);
    let mut changes = 0;
    let mut cfg = cur_cfg;
    for &k in Key::ALL {
        let (was, now) = (cur.get(k), new.tunables.get(k));
        let changed = if k == Key::Ports {
            cur_ports != new.tunables.ports
        } else {
            // Compared as stored, so a per-CPU rate that rounds the same is no change.
            let mut c = cfg;
            now.store(&mut c, ncpus);
            let changed = c != cfg;
            cfg = c;
            changed
        };
        if changed {
            changes += 1;
            let prefix = format!("{} = ", k.name());
            let old = was.to_string();
            info!(
                "{}: reload: {now} (was {})",
                o.iface,
                old.strip_prefix(&prefix).unwrap_or(&old)
            );
            if k == Key::Wscale {
                info!(
                    "{}: reload: wscale applies from the next key rotation",
                    o.iface
                );
            }
        }
    }
    if cfg != cur_cfg {
        att.config.set(0, &cfg, 0).context("writing CONFIG")?;
    }
    if cur_ports != new.tunables.ports {
        pinned_maps::write_ports(&mut p.ports_map()?, &new.tunables.ports)?;
    }
    for k in &new.flag_settings {
        log::debug!(
            "{}: {} is given as a flag, which overrides the file",
            o.iface,
            k.name()
        );
    }
    for l in [List::Allow, List::Deny] {
        if o.list(l).is_some() && new.list(l).is_none() {
            info!(
                "{}: reload: the config no longer has `{} = [...]`; the {} list stays as it \
                 is, managed live",
                o.iface,
                l.name(),
                l.name()
            );
        }
    }
    let before: Vec<Vec<IpNet>> = [List::Allow, List::Deny]
        .iter()
        .map(|&l| lists::list(&o.iface, l).unwrap_or_default())
        .collect();
    sync_lists(&new)?;
    for (i, &l) in [List::Allow, List::Deny].iter().enumerate() {
        if new.list(l).is_some_and(|w| w != before[i].as_slice()) {
            changes += 1;
        }
    }
    if new.rotation != o.rotation && o.key_file.is_none() {
        changes += 1;
        info!(
            "{}: reload: key_rotation = {} (was {})",
            o.iface,
            humantime::format_duration(new.rotation),
            humantime::format_duration(o.rotation)
        );
    }
    if new.keep_attached != o.keep_attached {
        changes += 1;
        info!("{}: reload: keep_attached = {}", o.iface, new.keep_attached);
    }
    if new.metrics != o.metrics {
        warn!(
            "{}: reload: metrics changes from {:?} to {:?} only with a restart; still serving \
             the old one",
            o.iface, o.metrics, new.metrics
        );
    }
    if new.xdp_mode != o.xdp_mode {
        warn!(
            "{}: reload: xdp_mode {:?} applies only to a fresh attach (`synguard detach`, then \
             start); the link keeps its mode",
            o.iface, new.xdp_mode
        );
    }
    // Interfaces last: the settings and lists above are already the new ones they get.
    let mut i = 1;
    while i < att.members.len() {
        if new.also.contains(&att.members[i].iface) {
            i += 1;
            continue;
        }
        let m = att.members.remove(i);
        changes += 1;
        info!("{}: reload: no longer in the config; detaching", m.iface);
        attach::detach(&m.dir, Some(m.ifindex))
            .with_context(|| format!("detaching {}", m.iface))?;
        RunState::remove(&m.iface);
    }
    let first_dir = att.members[0].dir.clone();
    if new.key_file != o.key_file {
        warn!(
            "{}: reload: key_file changes from {:?} to {:?} only with a restart; the watched \
             file stays {:?}",
            o.iface, o.key_file, new.key_file, o.key_file
        );
    }
    let mut new = new;
    if o.key_file.is_some() && new.rotation != o.rotation {
        // The epoch numbers of a shared secret come from the period: every host must
        // change it at once, so only a restart of each does.
        warn!(
            "{}: reload: with a key file, key_rotation changes only with a restart (every \
             host must agree on it); keeping {}",
            o.iface,
            humantime::format_duration(o.rotation)
        );
        new.rotation = o.rotation;
    }
    if new.handoff != o.handoff {
        warn!(
            "{}: reload: handoff {} applies only to a fresh attach (`synguard detach`, then \
             start); the programs keep the {} handoff",
            o.iface, new.handoff, att.handoff.mode
        );
    }
    let keep = (
        o.metrics,
        o.xdp_mode,
        o.fix_sysctls,
        o.key_file.clone(),
        o.handoff,
    );
    *o = new;
    (o.metrics, o.xdp_mode, o.fix_sysctls, o.key_file, o.handoff) = keep;
    let mut failed = None;
    for (name, ifindex) in added {
        match join(o, &first_dir, &name, ifindex, &att.handoff) {
            Ok(m) => {
                changes += 1;
                info!("{name}: reload: added");
                att.members.push(m);
            }
            Err(e) => {
                error!("{name}: reload: cannot add it: {e:#}");
                failed.get_or_insert(e);
            }
        }
    }
    // What the daemon serves, whatever failed.
    o.also = att.members[1..].iter().map(|m| m.iface.clone()).collect();
    match failed {
        Some(e) => Err(e.context(format!(
            "reload applied except adding an interface ({changes} change(s) made)"
        ))),
        None => Ok(changes),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
