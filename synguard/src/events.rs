//! `synguard events`: the sampled drops of the `EVENTS` ring buffer (1 in `event_sample`
//! drops of each reason, per CPU), one line each, the way tcpdump prints packets.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use aya::maps::{Map, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use synguard_common::maps::{Action, Class, Counter, DropEvent, VLAN_NONE, names};

use crate::{iface::IfaceName, pinned_maps::PinnedMaps};

/// The reasons an event can carry: those counted for a dropped frame.
pub fn drop_reasons() -> impl Iterator<Item = Counter> {
    Counter::ALL
        .iter()
        .copied()
        .filter(|c| c.class() == Class::Verdict(Action::Drop))
}

/// `--reason`: a drop reason by name, or an error that lists them.
pub fn parse_reason(s: &str) -> Result<Counter, String> {
    let list = || {
        drop_reasons()
            .map(Counter::name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match Counter::ALL.iter().find(|c| c.name() == s.trim()) {
        Some(&c) if c.class() == Class::Verdict(Action::Drop) => Ok(c),
        Some(_) => Err(format!(
            "{s:?} is not a drop reason, so no event carries it; drop reasons: {}",
            list()
        )),
        None => Err(format!("unknown reason {s:?}; drop reasons: {}", list())),
    }
}

/// One event as printed (`--json`: one object a line).
#[derive(Debug, Serialize, PartialEq)]
pub struct Event {
    /// Unix time, seconds.
    pub ts: f64,
    pub iface: String,
    pub reason: &'static str,
    /// `drop`, or `pass` for a frame monitor mode passed under a drop reason.
    pub action: &'static str,
    /// Absent for a frame whose TCP header was never located (`uninspectable`).
    pub src: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// tcpdump's notation: S, F, R, P, U, E, W, and `.` for ACK.
    pub flags: Option<String>,
    /// VLAN IDs, outer first.
    pub vlan: Vec<u16>,
}

/// tcpdump's flag letters, in its order.
pub fn flag_letters(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
        (0x10, '.'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() { "none".into() } else { s }
}

impl Event {
    /// `e` as read from the ring; `mono_to_unix` is what to add to CLOCK_MONOTONIC
    /// nanoseconds to get Unix time.
    pub fn decode(e: &DropEvent, iface: &str, mono_to_unix: f64) -> Option<Event> {
        let reason = *Counter::ALL.get(e.reason as usize)?;
        let src = match e.family {
            4 => Some(IpAddr::V4(Ipv4Addr::new(
                e.src[0], e.src[1], e.src[2], e.src[3],
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(e.src))),
            _ => None,
        };
        Some(Event {
            ts: e.ts_ns as f64 / 1e9 + mono_to_unix,
            iface: iface.to_string(),
            reason: reason.name(),
            action: if e.passed != 0 { "pass" } else { "drop" },
            src,
            dst_port: src.map(|_| e.dst_port),
            flags: src.map(|_| flag_letters(e.tcp_flags)),
            vlan: e.vlan.iter().copied().filter(|&v| v != VLAN_NONE).collect(),
        })
    }

    /// One tcpdump-like line: time, interface, source > port, flags, VLANs, reason, action.
    pub fn line(&self) -> String {
        let secs = self.ts.rem_euclid(86400.0);
        let (h, m, s) = (
            (secs / 3600.0) as u64,
            (secs % 3600.0 / 60.0) as u64,
            secs % 60.0,
        );
        let mut l = format!("{h:02}:{m:02}:{s:09.6} {}", self.iface);
        match (self.src, self.dst_port) {
            (Some(src), Some(port)) => l.push_str(&format!(" {src} > port {port}")),
            _ => l.push_str(" (headers not inspected)"),
        }
        if let Some(f) = &self.flags {
            l.push_str(&format!(" Flags [{f}]"));
        }
        for v in &self.vlan {
            l.push_str(&format!(" vlan {v}"));
        }
        l.push_str(&format!(
            " {} {}",
            self.reason,
            if self.action == "pass" {
                "passed (monitor mode)"
            } else {
                "dropped"
            }
        ));
        l
    }
}

/// Seconds to add to CLOCK_MONOTONIC to get Unix time, now.
fn mono_to_unix() -> Result<f64> {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    Ok(unix - (mono.tv_sec() as f64 + mono.tv_nsec() as f64 / 1e9))
}

/// Streams events until interrupted (or `count` of them are printed). Events already in
/// the ring when it starts are from before; they are skipped, as tcpdump shows only what
/// arrives after it starts. The ring has one reader position: two `events` at once share
/// the events between them. A daemon serving several interfaces shares one ring among
/// them; only `iface`'s events are shown (by ifindex, when `iface` is in this network
/// namespace).
pub fn events(
    iface: &IfaceName,
    json: bool,
    reason: Option<Counter>,
    count: Option<u64>,
) -> Result<()> {
    let p = PinnedMaps::open(iface)?;
    let mut ring = RingBuf::try_from(Map::RingBuf(p.map(names::EVENTS)?))
        .context("opening the EVENTS ring buffer")?;
    let skipped = std::iter::from_fn(|| ring.next().map(|_| ())).count();
    let sample = p.snapshot()?.config.event_sample;
    let what = reason.map_or("all drop reasons".into(), |r| r.name().to_string());
    if sample == 0 {
        eprintln!(
            "warning: event_sample is 0 on {iface}: no events are sent; \
             `synguard set --iface {iface} event_sample N` sends 1 in N"
        );
    }
    eprintln!(
        "listening on {iface}: {what}, 1 in {sample} drops of each reason per CPU \
         (skipped {skipped} older events)"
    );
    let offset = mono_to_unix()?;
    let ifindex = crate::iface::ifindex(iface).ok();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<DropEvent>() {
                continue;
            }
            // SAFETY: the ring holds DropEvents (written by XDP, which only writes that
            // type), each at least this long, as just checked; read_unaligned makes no
            // alignment assumption, and any bit pattern is a valid DropEvent.
            let e: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            if reason.is_some_and(|r| r as u32 != e.reason)
                || ifindex.is_some_and(|i| i != e.ifindex)
            {
                continue;
            }
            let Some(ev) = Event::decode(&e, iface.as_str(), offset) else {
                continue;
            };
            let mut out = stdout.lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&ev)?)?;
            } else {
                writeln!(out, "{}", ev.line())?;
            }
            out.flush()?;
            printed += 1;
            if count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
        let fd = ring.as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(500u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting on the EVENTS ring buffer"),
        }
        if !p.dir.is_dir() {
            anyhow::bail!("synguard was detached from {iface}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_checked_and_listed() {
        assert_eq!(parse_reason("flag_syn_fin"), Ok(Counter::FlagSynFin));
        assert_eq!(parse_reason("rate_limited"), Ok(Counter::RateLimited));
        let e = parse_reason("bogus").unwrap_err();
        assert!(e.contains("unknown reason \"bogus\""), "{e}");
        assert!(
            e.contains("flag_syn_fin") && e.contains("rate_limited"),
            "{e}"
        );
        assert!(!e.contains("syn_passed"), "{e}");
        let e = parse_reason("syn_passed").unwrap_err();
        assert!(e.contains("not a drop reason"), "{e}");
    }

    #[test]
    fn an_event_prints_like_tcpdump() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 18, 0, 7]);
        let e = DropEvent {
            ts_ns: 3_723_500_000_000,
            src,
            reason: Counter::FlagSynFin as u32,
            ifindex: 3,
            dst_port: 8080,
            vlan: [10, VLAN_NONE],
            family: 4,
            tcp_flags: 0x03,
            passed: 0,
            _pad: [0; 7],
        };
        let ev = Event::decode(&e, "eth0", 0.0).unwrap();
        assert_eq!(
            ev.line(),
            "01:02:03.500000 eth0 198.18.0.7 > port 8080 Flags [SF] vlan 10 flag_syn_fin dropped"
        );
        let j = serde_json::to_value(&ev).unwrap();
        assert_eq!(j["src"], "198.18.0.7");
        assert_eq!(j["vlan"], serde_json::json!([10]));
        assert_eq!(j["action"], "drop");
        let none = DropEvent {
            family: 0,
            reason: Counter::Uninspectable as u32,
            passed: 1,
            ..e
        };
        let ev = Event::decode(&none, "eth0", 0.0).unwrap();
        assert!(ev.src.is_none() && ev.flags.is_none());
        assert!(ev.line().ends_with("uninspectable passed (monitor mode)"));
        assert_eq!(flag_letters(0x12), "S.");
    }
}
