//! `synguard status`: is it attached, how, and with what settings.

use anyhow::Result;
use serde::Serialize;
use synguard_common::maps::Mode;

use crate::{
    bpfsys, loader,
    pinned::Pinned,
    pins::{self, RunState},
    settings::{self, Tunables},
};

#[derive(Serialize)]
pub struct LinkOut {
    pub link_id: u32,
    pub prog_id: u32,
    /// XDP only: "native" or "generic", as netlink reports it.
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
    pub mode: String,
    pub engaged: bool,
    pub key_epoch: u32,
    /// Seconds since the active key was installed, when the daemon recorded it.
    pub key_age_secs: Option<u64>,
    pub key_rotation_secs: Option<u64>,
    /// Window scale of the active key, and the one the next rotation will use.
    pub wscale_active: u8,
    pub ports: String,
    pub syn_rate_on: u32,
    pub syn_rate_off: u32,
    pub src_syn_rate: u32,
    pub src_syn_burst: u32,
    pub synack_rate: u32,
    pub synack_rate_per_cpu: u32,
    pub adv_mss4: u16,
    pub adv_mss6: u16,
    pub synack_window: u16,
    pub ttl: u8,
    pub ecn: bool,
    pub wscale: u8,
}

pub fn gather(iface: &str) -> Result<StatusOut> {
    let p = Pinned::open(iface)?;
    let ifindex = loader::ifindex(iface).ok();
    let link = |name: &str| bpfsys::pinned_link(&p.dir.join(name)).ok().flatten();
    let (xdp, tc) = (link(pins::XDP_LINK), link(pins::TC_LINK));
    let here = |l: &Option<bpfsys::LinkStat>| match (l, ifindex) {
        (Some(l), Some(i)) => l.ifindex == i,
        _ => false,
    };
    let attached = here(&xdp) && here(&tc);
    let xdp_out = xdp.map(|l| LinkOut {
        link_id: l.id,
        prog_id: l.prog_id,
        mode: ifindex.and_then(|i| loader::attached_mode(i, l.prog_id).ok().map(String::from)),
    });
    let tc_out = tc.map(|l| LinkOut {
        link_id: l.id,
        prog_id: l.prog_id,
        mode: None,
    });
    let rs = RunState::load(iface);
    // Probing the daemon lock could make a concurrently starting `run` fail, so look at the
    // recorded pid instead.
    let daemon = rs
        .as_ref()
        .map(|r| r.pid)
        .filter(|&pid| pins::is_synguard(pid));
    let ncpus = settings::ncpus()?;
    let cfg = p.config()?;
    let t = Tunables::from_config(&cfg, p.ports()?, ncpus);
    let st = p.state()?;
    let keys = p.keys()?;
    let active = keys[(st.active_key & 1) as usize];
    Ok(StatusOut {
        iface: iface.to_string(),
        pin_dir: p.dir.display().to_string(),
        attached,
        xdp: xdp_out,
        tc: tc_out,
        daemon_running: daemon.is_some(),
        daemon_pid: daemon,
        xdp_reason: rs.as_ref().map(|r| r.xdp_reason.clone()),
        mode: Mode::from_u32(cfg.mode)
            .map(settings::mode_name)
            .unwrap_or("unknown")
            .to_string(),
        engaged: st.engaged != 0,
        key_epoch: active.epoch,
        key_age_secs: rs
            .as_ref()
            .map(|r| pins::unix_now().saturating_sub(r.key_rotated_unix)),
        key_rotation_secs: rs.as_ref().map(|r| r.rotation_secs),
        wscale_active: active.wscale,
        ports: t.ports.to_string(),
        syn_rate_on: t.syn_rate_on,
        syn_rate_off: t.syn_rate_off,
        src_syn_rate: t.src_syn_rate,
        src_syn_burst: t.src_syn_burst,
        synack_rate: t.synack_rate,
        synack_rate_per_cpu: cfg.synack_rate_per_cpu,
        adv_mss4: t.adv_mss4,
        adv_mss6: t.adv_mss6,
        synack_window: t.synack_window,
        ttl: t.ttl,
        ecn: t.ecn,
        wscale: t.wscale,
    })
}

pub fn status(iface: &str, json: bool) -> Result<()> {
    let s = gather(iface)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("interface     {}", s.iface);
    println!("pins          {}", s.pin_dir);
    match (&s.xdp, s.attached) {
        (Some(x), true) => println!(
            "attached      yes: XDP {} (prog {}, link {}), TC ingress via TCX (prog {})",
            x.mode.as_deref().unwrap_or("?"),
            x.prog_id,
            x.link_id,
            s.tc.as_ref().map(|t| t.prog_id).unwrap_or(0)
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
    match s.daemon_pid {
        Some(pid) => println!("daemon        running (pid {pid})"),
        None if s.attached => println!(
            "daemon        not running: the programs stay attached through the pinned links \
             (keys no longer rotate; restart `synguard run` or `synguard detach`)"
        ),
        None => println!("daemon        not running"),
    }
    println!("mode          {} (engaged: {})", s.mode, yn(s.engaged));
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
    println!("key           epoch {}{age}{every}", s.key_epoch);
    if s.wscale_active == s.wscale {
        println!("wscale        {}", s.wscale);
    } else {
        println!(
            "wscale        {} (set to {}; applies from the next key rotation)",
            s.wscale_active, s.wscale
        );
    }
    println!("ports         {}", s.ports);
    println!(
        "auto trigger  on above {} SYN/s, off below {} SYN/s",
        s.syn_rate_on, s.syn_rate_off
    );
    println!(
        "limits        per source {} SYN/s (burst {}), SYN+ACK cap {}",
        if s.src_syn_rate == 0 {
            "unlimited".to_string()
        } else {
            s.src_syn_rate.to_string()
        },
        s.src_syn_burst,
        if s.synack_rate == 0 {
            "none".to_string()
        } else {
            format!("{}/s ({} per CPU)", s.synack_rate, s.synack_rate_per_cpu)
        }
    );
    println!(
        "syn+ack       mss4 {}, mss6 {}, window {}, ttl {}, ecn {}",
        s.adv_mss4,
        s.adv_mss6,
        s.synack_window,
        s.ttl,
        if s.ecn { "on" } else { "off" }
    );
    Ok(())
}
