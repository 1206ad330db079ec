//! `synguard run`: load, attach (or take over a previous run's pinned links), then rotate
//! keys and drive auto mode until SIGINT/SIGTERM.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use log::{info, warn};
use synguard_common::maps::{Config, Counter, Mode, names};

use crate::{
    attach::{self, Existing},
    auto::{self, Hysteresis, RateMeter, Rates, Thresholds, Transition},
    check,
    iface::{self, IfaceName, XdpHook, XdpMode, XdpRequest},
    keys, lists, local_addrs,
    metrics::{self, Live},
    pinned_maps,
    run_state::{self, RunState},
    settings::{self, Tunables},
    state_dir,
};

/// Everything `run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub iface: IfaceName,
    pub tunables: Tunables,
    pub metrics: Option<SocketAddr>,
    pub xdp_mode: XdpRequest,
    pub rotation: Duration,
    pub keep_attached: bool,
    /// Set the required sysctls instead of refusing to start without them.
    pub fix_sysctls: bool,
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
}

pub fn run(o: RunOpts) -> Result<()> {
    // Everything that can be checked is checked before anything is created or written.
    o.tunables.validate().map_err(anyhow::Error::msg)?;
    let ifindex = iface::ifindex(&o.iface)?;
    iface::require_ethernet(&o.iface, ifindex)?;
    check::require_kernel()?;
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

    let mut att = match setup(&o, &dir, ifindex, ncpus, live) {
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
    };
    if let Err(e) = rs.store(&o.iface) {
        warn!("cannot record run state: {e:#}");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(event_loop(&o, &dir, &mut att, &mut rs, metrics_listener));
    if o.keep_attached {
        info!(
            "leaving synguard attached to {} (--keep-attached): pins and keys stay in {}; \
             start `synguard run` again to take over, or `synguard detach` to remove",
            o.iface,
            dir.display()
        );
    } else {
        info!("detaching from {}", o.iface);
        if dir.is_dir() {
            attach::detach(&dir)?;
        }
        RunState::remove(&o.iface);
    }
    result
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
fn setup(o: &RunOpts, dir: &Path, ifindex: u32, ncpus: u32, live: bool) -> Result<Attached> {
    let choice = if live {
        None
    } else {
        // Native and generic XDP cannot be active together, and a foreign program holds
        // the hook: say so plainly instead of failing the attach with EBUSY.
        if let Some((id, how)) = iface::xdp_occupant(ifindex)? {
            anyhow::bail!(
                "{} already has a {how} XDP program (id {id}) that synguard did not pin; \
                 remove it first (ip link set dev {} xdp off)",
                o.iface,
                o.iface
            );
        }
        Some(iface::choose_mode(&o.iface, o.xdp_mode)?)
    };
    let mut ebpf = attach::load(dir)?;
    // Before attaching: XDP answers no SYN until it knows the host's addresses and MAC.
    local_addrs::start(
        take(&mut ebpf, names::LOCAL_ADDRS)?,
        take(&mut ebpf, names::IFACES)?,
        ifindex,
    )?;
    let mut config: Array<MapData, Config> = Array::try_from(take(&mut ebpf, names::CONFIG)?)?;
    config.set(0, &o.tunables.to_config(ncpus), 0)?;
    let mut ports: Array<MapData, u64> = Array::try_from(take(&mut ebpf, names::PORTS)?)?;
    pinned_maps::write_ports(&mut ports, &o.tunables.ports)?;
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
        attach::replace(&mut ebpf, dir)?;
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
        let got = attach::attach(&mut ebpf, &o.iface, &choice, dir)?;
        info!("{}: XDP {}: {}", o.iface, got.mode, got.reason);
        (Some(got.mode), got.reason)
    };
    info!(
        "synguard attached to {}, mode {}, ports {}",
        o.iface, o.tunables.mode, o.tunables.ports
    );
    Ok(Attached {
        ring,
        config,
        counters,
        mode,
        reason,
        key_rotated_unix,
    })
}

async fn event_loop(
    o: &RunOpts,
    dir: &Path,
    att: &mut Attached,
    rs: &mut RunState,
    metrics_listener: Option<std::net::TcpListener>,
) -> Result<()> {
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
                live.clone(),
            ));
            info!("metrics on http://{addr}/metrics");
            Some(AbortOnDrop(tokio::spawn(metrics::serve(l, reg))))
        }
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

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

    // Next rotation: one period after the active key was installed (maybe by a previous run).
    let age = Duration::from_secs(run_state::unix_now().saturating_sub(att.key_rotated_unix));
    let first = o.rotation.saturating_sub(age);
    let rotate_at = tokio::time::sleep(first);
    tokio::pin!(rotate_at);

    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM"); break; }
            _ = sigint.recv() => { info!("SIGINT"); break; }
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
                log::debug!("rotated cookie key to epoch {} (wscale {})", k.epoch, k.wscale);
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
                if watch_peer && now.duration_since(last_peer_check) >= Duration::from_secs(5) {
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
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
