//! `synguard status`: is it attached, how, and with what settings.

use anyhow::Result;
use serde::Serialize;

use crate::{
    attach::{self, LinkStat},
    iface::{self, IfaceName},
    pinned_maps::PinnedMaps,
    run_state::{self, RunState},
    service,
    settings::Tunables,
    state_dir,
};
use synguard_common::maps::Handoff;

#[derive(Serialize)]
pub struct LinkOut {
    pub link_id: u32,
    pub prog_id: u32,
    /// XDP only: "native" or "generic" (or what else holds the hook), as netlink reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Serialize)]
pub struct StatusOut {
    pub iface: String,
    pub pin_dir: String,
    /// Both programs attached to this interface through the pinned links.
    pub attached: bool,
    pub xdp: Option<LinkOut>,
    pub tc: Option<LinkOut>,
    pub daemon_running: bool,
    pub daemon_pid: Option<u32>,
    /// Why the daemon chose its XDP mode.
    pub xdp_reason: Option<String>,
    /// The handoff mode of the pinned programs (`CONFIG`), and why the daemon chose it.
    pub handoff: String,
    pub handoff_reason: Option<String>,
    pub engaged: bool,
    pub key_epoch: u32,
    /// Seconds since the active key was installed, when the daemon recorded it.
    pub key_age_secs: Option<u64>,
    pub key_rotation_secs: Option<u64>,
    /// The shared secret's file when the keys come from one (`--key-file`); `None`: a
    /// random key of this host.
    pub key_file: Option<String>,
    /// Window scale of the active key; `wscale` is the one the next rotation will use.
    pub wscale_active: u8,
    /// What `CONFIG` holds for the machine-wide `synack_rate`.
    pub synack_rate_per_cpu: u32,
    /// Every live setting, one field each, named as `synguard set` names them.
    #[serde(flatten)]
    pub settings: Tunables,
}

pub fn gather(iface: &IfaceName) -> Result<StatusOut> {
    let p = PinnedMaps::open(iface)?;
    let ifindex = iface::ifindex(iface).ok();
    let [xdp_pin, tc_pin] = state_dir::link_pins(&p.dir);
    let xdp = attach::pinned_link(&xdp_pin).ok().flatten();
    let tc = attach::pinned_link(&tc_pin).ok().flatten();
    let here = |l: &Option<LinkStat>| match (l, ifindex) {
        (Some(l), Some(i)) => l.ifindex == i,
        _ => false,
    };
    let snap = p.snapshot()?;
    let handoff = Handoff::from_u8(snap.config.handoff);
    // Without TC (the kernel-cookie and filter handoffs), the XDP link alone is the
    // attachment.
    let attached = here(&xdp) && (here(&tc) || !handoff.needs_tc());
    let xdp_out = xdp.map(|l| LinkOut {
        link_id: l.id,
        prog_id: l.prog_id,
        mode: ifindex.and_then(|i| iface::xdp_hook(i, l.prog_id).ok().map(|h| h.to_string())),
    });
    let tc_out = tc.map(|l| LinkOut {
        link_id: l.id,
        prog_id: l.prog_id,
        mode: None,
    });
    let rs = RunState::load(iface);
    // Probing the daemon lock could make a concurrently starting `run` fail, so look at the
    // recorded pid instead (only from the daemon's own PID namespace: another's pids,
    // a pod's, name other processes here).
    let daemon = RunState::live_pid(iface);
    let snap = p.snapshot()?;
    let active = snap.active_key();
    Ok(StatusOut {
        iface: iface.to_string(),
        pin_dir: p.dir.display().to_string(),
        attached,
        xdp: xdp_out,
        tc: tc_out,
        daemon_running: daemon.is_some(),
        daemon_pid: daemon,
        xdp_reason: rs.as_ref().map(|r| r.xdp_reason.clone()),
        handoff: handoff.name().into(),
        handoff_reason: rs
            .as_ref()
            .map(|r| r.handoff_reason.clone())
            .filter(|r| !r.is_empty()),
        engaged: snap.state.engaged != 0,
        key_epoch: active.epoch,
        key_age_secs: rs
            .as_ref()
            .map(|r| run_state::unix_now().saturating_sub(r.key_rotated_unix)),
        key_rotation_secs: rs.as_ref().map(|r| r.rotation_secs),
        key_file: rs
            .as_ref()
            .and_then(|r| r.key_file.as_ref())
            .map(|p| p.display().to_string()),
        wscale_active: active.wscale,
        synack_rate_per_cpu: snap.config.synack_rate_per_cpu,
        settings: snap.tunables,
    })
}

/// `status` without `--iface`: every instance (a JSON array with `--json`), or "not
/// running" (exit 3) when there is none.
pub fn status_all(json: bool) -> Result<()> {
    let instances = state_dir::instances()?;
    if instances.is_empty() {
        return Err(anyhow::Error::new(service::NotRunning(format!(
            "synguard is not running on any interface: no instance under {}",
            synguard_common::maps::names::PIN_ROOT
        ))));
    }
    let all = instances.iter().map(gather).collect::<Result<Vec<_>>>()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for (i, s) in all.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_text(s);
    }
    Ok(())
}

pub fn status(iface: &IfaceName, json: bool) -> Result<()> {
    let s = gather(iface)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print_text(&s);
    Ok(())
}

fn print_text(s: &StatusOut) {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let t = &s.settings;
    println!("interface     {}", s.iface);
    println!("pins          {}", s.pin_dir);
    match (&s.xdp, s.attached) {
        (Some(x), true) => println!(
            "attached      yes: XDP {} (prog {}, link {}), {}",
            x.mode.as_deref().unwrap_or("?"),
            x.prog_id,
            x.link_id,
            match &s.tc {
                Some(t) => format!("TC ingress via TCX (prog {})", t.prog_id),
                None => format!("no TC ({} handoff)", s.handoff),
            }
        ),
        (Some(_), false) => println!(
            "attached      no: links are pinned but not attached to {} here (interface gone, \
             or in another network namespace)",
            s.iface
        ),
        (None, _) => println!("attached      no"),
    }
    if let Some(r) = &s.xdp_reason {
        println!("xdp choice    {r}");
    }
    match &s.handoff_reason {
        Some(r) => println!("handoff       {} ({r})", s.handoff),
        None => println!("handoff       {}", s.handoff),
    }
    match s.daemon_pid {
        Some(pid) => println!("daemon        running (pid {pid})"),
        None if s.attached => println!(
            "daemon        not running: the programs stay attached through the pinned links \
             (keys no longer rotate; restart `synguard run` or `synguard detach`)"
        ),
        None => println!("daemon        not running"),
    }
    println!("mode          {} (engaged: {})", t.mode, yn(s.engaged));
    let age = s
        .key_age_secs
        .map(|a| {
            format!(
                ", age {}",
                humantime::format_duration(std::time::Duration::from_secs(a))
            )
        })
        .unwrap_or_default();
    let every = s
        .key_rotation_secs
        .map(|r| {
            format!(
                ", rotates every {}",
                humantime::format_duration(std::time::Duration::from_secs(r))
            )
        })
        .unwrap_or_default();
    let source = match &s.key_file {
        Some(f) => format!(", shared secret from {f}"),
        None => String::new(),
    };
    println!("key           epoch {}{age}{every}{source}", s.key_epoch);
    if s.wscale_active == t.wscale {
        println!("wscale        {}", t.wscale);
    } else {
        println!(
            "wscale        {} (set to {}; applies from the next key rotation)",
            s.wscale_active, t.wscale
        );
    }
    println!("ports         {}", t.ports);
    println!(
        "auto trigger  on above {} SYN/s or {} forged ACK/s, off below {} SYN/s and {} forged ACK/s",
        t.syn_rate_on, t.ack_rate_on, t.syn_rate_off, t.ack_rate_off
    );
    println!(
        "limits        per source (IPv6 per /{}) {} SYN/s (burst {}), SYN+ACK cap {}",
        t.src_prefix6,
        if t.src_syn_rate == 0 {
            "unlimited".to_string()
        } else {
            t.src_syn_rate.to_string()
        },
        t.src_syn_burst,
        if t.synack_rate == 0 {
            "none".to_string()
        } else {
            format!("{}/s ({} per CPU)", t.synack_rate, s.synack_rate_per_cpu)
        }
    );
    println!(
        "syn+ack       mss4 {}, mss6 {}, window {}, ttl {}, ecn {}",
        t.adv_mss4,
        t.adv_mss6,
        t.synack_window,
        t.ttl,
        if t.ecn { "on" } else { "off" }
    );
}
