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
use synguard_common::maps::{Config, Counter, Mode, names};

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
    pub iface: IfaceName,
    pub tunables: Tunables,
    pub metrics: Option<SocketAddr>,
    pub xdp_mode: XdpRequest,
    /// `--handoff`: resolved against the kernel's probes (or the pinned run) by `run`.
    pub handoff: handoff::Request,
    pub xdp_attach: XdpAttach,
    pub xdp_priority: u32,
    pub rotation: Duration,
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

struct Attached {
    ring: keys::KeyRing,
    config: Array<MapData, Config>,
    counters: PerCpuArray<MapData, u64>,
    /// `None` when a takeover cannot tell the pinned link's mode.
    mode: Option<XdpMode>,
    reason: String,
    key_rotated_unix: u64,
    handoff: handoff::Choice,
}

pub fn run(args: &RunArgs, o: RunOpts) -> Result<()> {
    // Everything that can be checked is checked before anything is created or written.
    o.tunables.validate().map_err(anyhow::Error::msg)?;
    require_capabilities()?;
    let ifindex = iface::ifindex(&o.iface)?;
    iface::require_ethernet(&o.iface, ifindex)?;
    let probes = handoff::Probes::run();
    // A fresh attach needs the programs' mode only; fail before anything is created.
    let fresh_choice = handoff::choose(o.handoff, &probes).map_err(anyhow::Error::msg)?;
    require_sysctls(o.fix_sysctls)?;
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

    let dir_existed = state_dir::dir(&o.iface).is_dir();
    let dir = state_dir::ensure_dir(&o.iface)?;
    let _lock = state_dir::lock(&dir, &o.iface)?;
    let existing = attach::existing_links(&dir, ifindex)?;
    if existing == Existing::Stale {
        warn!(
            "{}: removing stale link pins in {} (not attached to this interface any more)",
            o.iface,
            dir.display()
        );
        attach::remove_link_pins(&dir)?;
    }
    let live = matches!(existing, Existing::Live { .. });
    let choice = match existing {
        Existing::Live { tc, .. } => handoff::for_takeover(
            o.handoff,
            tc.is_some(),
            RunState::load(&o.iface).map(|r| r.handoff_reason),
        )
        .map_err(anyhow::Error::msg)?,
        _ => fresh_choice,
    };
    info!("{}: handoff {}: {}", o.iface, choice.mode, choice.reason);

    let mut att = match setup(&o, &dir, ifindex, ncpus, live, choice) {
        Ok(a) => a,
        Err(e) => {
            if !live {
                // Leave nothing half-attached; drop the pin directory if we made it.
                let _ = attach::remove_link_pins(&dir);
                if !dir_existed {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            return Err(e);
        }
    };

    let mut rs = RunState {
        pid: std::process::id(),
        started_unix: run_state::unix_now(),
        key_rotated_unix: att.key_rotated_unix,
        key_epoch: att.ring.active()?.epoch,
        rotation_secs: o.rotation.as_secs(),
        xdp_mode: att.mode,
        xdp_reason: att.reason.clone(),
        config: o.config_path.clone(),
        handoff: att.handoff.mode.name().into(),
        handoff_reason: att.handoff.reason.clone(),
    };
    if let Err(e) = rs.store(&o.iface) {
        warn!("cannot record run state: {e:#}");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut o = o;
    let result = rt.block_on(event_loop(
        args,
        &mut o,
        &dir,
        &mut att,
        &mut rs,
        metrics_listener,
    ));
    let how = match &result {
        Ok(Exit::Handover) => "SIGUSR2",
        _ if o.keep_attached => "--keep-attached",
        _ => "",
    };
    if !how.is_empty() {
        service::stopping(&format!("exiting; {} stays protected", o.iface));
        info!(
            "leaving synguard attached to {} ({}): programs, keys, counters and lists stay in \
             {}; start `synguard run` again to take over, or `synguard detach` to remove",
            o.iface,
            how,
            dir.display()
        );
    } else {
        service::stopping(&format!("detaching from {}", o.iface));
        info!("detaching from {}", o.iface);
        if dir.is_dir() {
            attach::detach(&dir, Some(ifindex))?;
        }
        RunState::remove(&o.iface);
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
/// [`check::REQUIRED_SYSCTLS`] is off in this network namespace; with `fix`, sets it instead
/// and logs the change. Before anything is created, so a refusal leaves nothing behind.
fn require_sysctls(fix: bool) -> Result<()> {
    let mut wrong = Vec::new();
    for s in check::REQUIRED_SYSCTLS {
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
            "the cookie handoff needs these sysctls in this network namespace (or pass \
             --fix-sysctls to set them):\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(())
}

/// Loads, writes the settings, sets up keys and attaches (or replaces).
fn setup(
    o: &RunOpts,
    dir: &Path,
    ifindex: u32,
    ncpus: u32,
    live: bool,
    handoff: handoff::Choice,
) -> Result<Attached> {
    let with_tc = handoff.mode.needs_tc();
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
                "{} already has a {how} XDP program (id {id}) that synguard did not pin; \
                 remove it first (ip link set dev {} xdp off), or load it through libxdp \
                 (xdp-loader) and start synguard with --xdp-attach dispatcher to share the hook",
                o.iface,
                o.iface
            );
        }
        Some(iface::choose_mode(&o.iface, o.xdp_mode)?)
    };
    let mut ebpf = attach::load(dir, shared, handoff.mode)?;
    let strips_vlan = iface::strips_vlan_tags(&o.iface)?;
    if strips_vlan {
        info!(
            "{}: strips VLAN tags on receive (rx-vlan-offload on): XDP sees VLAN frames \
             untagged and could only answer them untagged, so SYNs to the addresses of VLAN \
             devices over it are left to the kernel (not_local); `ethtool -K {} rxvlan off` \
             lets synguard answer them, with their tags",
            o.iface, o.iface
        );
    } else {
        info!(
            "{}: does not strip VLAN tags (rx-vlan-offload off): tagged SYNs are answered \
             with their tags",
            o.iface
        );
    }
    // Before attaching: XDP answers no SYN until it knows the host's addresses and MAC.
    local_addrs::start(
        take(&mut ebpf, names::LOCAL_ADDRS)?,
        take(&mut ebpf, names::IFACES)?,
        ifindex,
        strips_vlan,
    )?;
    let mut config: Array<MapData, Config> = Array::try_from(take(&mut ebpf, names::CONFIG)?)?;
    let mut cfg = o.tunables.to_config(ncpus);
    cfg.handoff = handoff.mode as u8;
    config.set(0, &cfg, 0)?;
    let mut ports: Array<MapData, u64> = Array::try_from(take(&mut ebpf, names::PORTS)?)?;
    pinned_maps::write_ports(&mut ports, &o.tunables.ports)?;
    // The maps are pinned: the lists are in place before XDP sees a packet.
    sync_lists(o)?;
    let counters = PerCpuArray::try_from(take(&mut ebpf, names::COUNTERS)?)?;
    let mut ring = keys::KeyRing::new(
        Array::try_from(take(&mut ebpf, names::KEYS)?)?,
        Array::try_from(take(&mut ebpf, names::STATE)?)?,
    );
    let reused = ring.init_or_reuse(o.tunables.wscale)?;
    let epoch = ring.active()?.epoch;
    // Keep the previous run's rotation schedule when its record matches the pinned keys,
    // so a restart neither shortens a key's life nor resets it.
    let key_rotated_unix = match RunState::load(&o.iface) {
        Some(prev) if reused && prev.key_epoch == epoch => prev.key_rotated_unix,
        _ => run_state::unix_now(),
    };
    info!(
        "cookie key epoch {epoch} ({})",
        if reused {
            "reused from the pinned maps"
        } else {
            "new"
        }
    );

    let (mode, reason) = if live {
        attach::replace(&mut ebpf, dir, with_tc)?;
        let [xdp_pin, _] = state_dir::link_pins(dir);
        let xdp = attach::pinned_link(&xdp_pin)?.context("XDP link pin vanished")?;
        let mode = match iface::xdp_hook(ifindex, xdp.prog_id) {
            Ok(XdpHook::Ours(m)) => Some(m),
            _ => None,
        };
        let shown = mode.map_or("unknown", XdpMode::name);
        let prev_reason = RunState::load(&o.iface)
            .map(|r| r.xdp_reason)
            .unwrap_or_else(|| "mode of the pinned link".into());
        if let XdpRequest::Exactly(w) = o.xdp_mode
            && Some(w) != mode
        {
            warn!(
                "{}: --xdp-mode {w} ignored: the pinned XDP link stays in {shown} mode (a link \
                 cannot change mode; `synguard detach` and start again to switch)",
                o.iface
            );
        }
        info!(
            "{}: took over the pinned links of a previous run: programs replaced in place \
             (no detach gap), XDP {shown}, maps/keys/counters reused",
            o.iface
        );
        (mode, prev_reason)
    } else {
        let choice = choice.context("no XDP mode chosen for a fresh attach")?;
        let got = if shared {
            attach::attach_shared(
                &mut ebpf,
                &o.iface,
                ifindex,
                &choice,
                o.xdp_priority,
                dir,
                with_tc,
            )?
        } else {
            attach::attach(&mut ebpf, &o.iface, &choice, dir, with_tc)?
        };
        info!("{}: XDP {}: {}", o.iface, got.mode, got.reason);
        (Some(got.mode), got.reason)
    };
    info!(
        "synguard attached to {}, mode {}, handoff {}, ports {}",
        o.iface, o.tunables.mode, handoff.mode, o.tunables.ports
    );
    Ok(Attached {
        ring,
        config,
        counters,
        mode,
        reason,
        key_rotated_unix,
        handoff,
    })
}

async fn event_loop(
    args: &RunArgs,
    o: &mut RunOpts,
    dir: &Path,
    att: &mut Attached,
    rs: &mut RunState,
    metrics_listener: Option<std::net::TcpListener>,
) -> Result<Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let live = Arc::new(Live::default());
    live.set_key_rotated(rs.key_rotated_unix);
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
            let reg = Arc::new(metrics::registry(
                PathBuf::from(dir),
                o.iface.to_string(),
                att.mode,
                att.handoff.clone(),
                live.clone(),
            ));
            info!("metrics on http://{addr}/metrics");
            Some(AbortOnDrop(tokio::spawn(metrics::serve(l, reg))))
        }
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
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
    // Native XDP on a veth only transmits while the peer keeps a native XDP program.
    let watch_peer =
        att.mode == Some(XdpMode::Native) && matches!(iface::veth_peer(&o.iface), Ok(Some(_)));
    let mut peer_ok = true;
    // Native XDP's metadata probe: the first cookie ACK shows whether the driver supports
    // XDP metadata (nothing reports it before a frame arrives). Counted from here, since a
    // previous run's pinned counters may already hold some.
    let mut meta_refused = pinned_maps::read_counter(&att.counters, Counter::MetaUnsupported)?;

    // Next rotation: one period after the active key was installed (maybe by a previous run).
    let age = Duration::from_secs(run_state::unix_now().saturating_sub(att.key_rotated_unix));
    let first = o.rotation.saturating_sub(age);
    let rotate_at = tokio::time::sleep(first);
    tokio::pin!(rotate_at);
    service::ready(&status_line(o, rs, hyst.engaged));

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
                if o.rotation != old_rotation {
                    let age = Duration::from_secs(run_state::unix_now().saturating_sub(rs.key_rotated_unix));
                    rotate_at.as_mut().reset(tokio::time::Instant::now() + o.rotation.saturating_sub(age));
                    rs.rotation_secs = o.rotation.as_secs();
                }
                rs.config = o.config_path.clone();
                if let Err(e) = rs.store(&o.iface) {
                    warn!("cannot record run state: {e:#}");
                }
                service::ready(&status_line(o, rs, hyst.engaged));
            }
            Some(_) = async {
                match watchdog.as_mut() {
                    Some(w) => Some(w.tick().await),
                    None => std::future::pending().await,
                }
            } => service::watchdog(),
            _ = &mut rotate_at => {
                // wscale comes from CONFIG, so `synguard set wscale` applies from here on.
                let cfg = att.config.get(&0, 0)?;
                let k = att.ring.rotate(cfg.wscale.min(14))?;
                rs.key_rotated_unix = run_state::unix_now();
                live.set_key_rotated(rs.key_rotated_unix);
                rs.key_epoch = k.epoch;
                if let Err(e) = rs.store(&o.iface) {
                    warn!("cannot record run state: {e:#}");
                }
                info!("{}: rotated the cookie key to epoch {} (wscale {})", o.iface, k.epoch, k.wscale);
                service::status(&status_line(o, rs, hyst.engaged));
                rotate_at.as_mut().reset(tokio::time::Instant::now() + o.rotation);
            }
            _ = sample.tick() => {
                let now = Instant::now();
                if let Err(e) = list_flags.refresh() {
                    warn!("{}: cannot recount the allow/deny lists: {e:#}", o.iface);
                }
                let syn = pinned_maps::read_counter(&att.counters, Counter::SynSeen)?;
                // One continuous count of forged ACKs, whichever side of the engage.
                let forged_acks = pinned_maps::read_counter(&att.counters, Counter::AckPassedUnengaged)?
                    .saturating_add(pinned_maps::read_counter(&att.counters, Counter::CookieAckInvalid)?);
                let ack_rate = ack_meter.sample(forged_acks, now);
                if let Some(rate) = meter.sample(syn, now) {
                    live.set_syn_rate(rate);
                    let cfg = att.config.get(&0, 0)?;
                    let th = Thresholds::of(&cfg);
                    let rates = Rates { syn: rate, forged_ack: ack_rate.unwrap_or(0.0) };
                    if let Some(t) = hyst.update(rates, th, now) {
                        att.ring.set_engaged(t == Transition::Engage)?;
                        service::status(&status_line(o, rs, t == Transition::Engage));
                        live.add_transition();
                        let mode = Mode::from_u32(cfg.mode);
                        let mode_name = mode.map_or("?", Mode::name);
                        match t {
                            Transition::Engage => info!(
                                "{}: engaged: {} (SYN {rate:.0}/s, syn_rate_on {}; forged ACK {:.0}/s, ack_rate_on {}) (mode {mode_name}{})",
                                o.iface, th.trigger(rates).unwrap_or("?"), cfg.syn_rate_on,
                                rates.forged_ack, cfg.ack_rate_on,
                                if mode == Some(Mode::Auto) { ": answering SYNs with cookies" } else { ": no effect outside auto" }
                            ),
                            Transition::Disengage => info!(
                                "{}: disengaged: SYN rate {rate:.0}/s below syn_rate_off {} and forged-ACK rate {:.0}/s below ack_rate_off {} for {:?} (mode {mode_name})",
                                o.iface, cfg.syn_rate_off, rates.forged_ack, cfg.ack_rate_off, auto::HOLD
                            ),
                        }
                    }
                }
                if att.mode == Some(XdpMode::Native) {
                    let n = pinned_maps::read_counter(&att.counters, Counter::MetaUnsupported)?;
                    if n > meta_refused {
                        fall_back_to_generic(o, dir, att, rs, n - meta_refused)?;
                    }
                    meta_refused = n;
                }
                if watch_peer && att.mode == Some(XdpMode::Native) && now.duration_since(last_peer_check) >= Duration::from_secs(5) {
                    last_peer_check = now;
                    if let Ok(Some((peer, prog))) = iface::veth_peer(&o.iface) {
                        if peer_ok && prog.is_none() {
                            warn!(
                                "{}: the veth peer {peer} no longer runs a native XDP program: it \
                                 drops our native XDP_TX SYN+ACKs. Restart with --xdp-mode generic \
                                 (`synguard detach` first), or put a native XDP program back on {peer}",
                                o.iface
                            );
                        } else if !peer_ok && prog.is_some() {
                            info!("{}: the veth peer {peer} runs a native XDP program again", o.iface);
                        }
                        peer_ok = prog.is_some();
                    }
                }
                if now.duration_since(last_dir_check) >= Duration::from_secs(1) {
                    last_dir_check = now;
                    if !dir.is_dir() {
                        anyhow::bail!(
                            "the pin directory {} was removed (synguard detach --force?); exiting",
                            dir.display()
                        );
                    }
                }
            }
        }
    };
    Ok(exit)
}

/// The STATUS= line systemctl status shows.
fn status_line(o: &RunOpts, rs: &RunState, engaged: bool) -> String {
    format!(
        "protecting {} (mode {}{}, ports {}), key epoch {}",
        o.iface,
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
            "the config names interface {} but this daemon protects {}: a running daemon \
             cannot move; start one for {} instead",
            new.iface,
            o.iface,
            new.iface
        );
    }
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
    if new.rotation != o.rotation {
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
    if new.handoff != o.handoff {
        warn!(
            "{}: reload: handoff {} applies only to a fresh attach (`synguard detach`, then \
             start); the programs keep the {} handoff",
            o.iface, new.handoff, att.handoff.mode
        );
    }
    let keep = (o.metrics, o.xdp_mode, o.fix_sysctls, o.handoff);
    *o = new;
    (o.metrics, o.xdp_mode, o.fix_sysctls, o.handoff) = keep;
    Ok(changes)
}

/// The metadata probe failed: native XDP on this driver cannot hand cookie ACKs to TC (the
/// driver has no XDP metadata support), so every cookie handshake would fail. Generic XDP
/// always has metadata; move there and say why.
fn fall_back_to_generic(
    o: &RunOpts,
    dir: &Path,
    att: &mut Attached,
    rs: &mut RunState,
    refused: u64,
) -> Result<()> {
    let why = format!(
        "native XDP cannot hand cookie ACKs to TC: bpf_xdp_adjust_meta refused {refused} (the driver {} has no XDP metadata support), so generic",
        iface::driver_name(&o.iface).unwrap_or_else(|_| "?".into())
    );
    let [xdp_pin, _] = state_dir::link_pins(dir);
    if !xdp_pin.exists() {
        // In a dispatcher the mode is every member's: synguard cannot move it alone. Said
        // once a run: the refusals go on with every cookie ACK.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        warn!(
            "{}: {}; synguard shares a native XDP dispatcher, whose mode it cannot change \
             alone: reload the interface's XDP programs in generic mode (xdp-loader \
             --mode skb, synguard --xdp-mode generic)",
            o.iface,
            why.trim_end_matches(", so generic")
        );
        return Ok(());
    }
    warn!("{}: {why}; re-attaching XDP in generic mode", o.iface);
    attach::reattach_xdp(dir, &o.iface, XdpMode::Generic, att.handoff.mode)
        .context("falling back to generic XDP")?;
    att.mode = Some(XdpMode::Generic);
    att.reason = format!("{}; then {why}", att.reason);
    rs.xdp_mode = att.mode;
    rs.xdp_reason = att.reason.clone();
    if let Err(e) = rs.store(&o.iface) {
        warn!("cannot record run state: {e:#}");
    }
    info!("{}: XDP generic: {}", o.iface, att.reason);
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
