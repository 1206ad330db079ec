//! `synguard stats`: per-reason totals and rates, plus listener states.

use std::{collections::BTreeMap, thread, time::Duration, time::Instant};

use anyhow::Result;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use synguard_common::maps::Counter;

use crate::{
    iface::{self, IfaceName},
    listeners::{self, ListenerStates},
    pinned_maps::PinnedMaps,
};

#[derive(Serialize)]
/// One `stats` sample, as printed.
struct Sample {
    iface: String,
    mode: &'static str,
    engaged: bool,
    ports: String,
    /// Seconds the rates were measured over (0: no rates).
    interval_secs: f64,
    counters: BTreeMap<&'static str, u64>,
    rates: BTreeMap<&'static str, f64>,
    /// Absent when the interface is not in the caller's network namespace.
    listeners: Option<ListenerStates>,
}

pub fn stats(
    iface: &IfaceName,
    json: bool,
    watch: Option<Duration>,
    sample: Duration,
) -> Result<()> {
    let p = PinnedMaps::open(iface)?;
    let in_netns = iface::ifindex(iface).is_ok();
    let mut prev = p.counters()?;
    let mut t_prev = Instant::now();
    let first_wait = watch.unwrap_or(sample);
    if !first_wait.is_zero() {
        thread::sleep(first_wait);
    }
    loop {
        let snap = p.snapshot()?;
        let cur = snap.counters;
        let now = Instant::now();
        let dt = if first_wait.is_zero() {
            0.0
        } else {
            now.duration_since(t_prev).as_secs_f64()
        };
        let ports = snap.tunables.ports;
        let out = Sample {
            iface: iface.to_string(),
            mode: snap.tunables.mode.name(),
            engaged: snap.state.engaged != 0,
            ports: ports.to_string(),
            interval_secs: dt,
            counters: cur.iter().map(|(c, v)| (c.name(), *v)).collect(),
            rates: if dt > 0.0 {
                cur.iter()
                    .zip(&prev)
                    .map(|((c, v), (_, v0))| (c.name(), v.saturating_sub(*v0) as f64 / dt))
                    .collect()
            } else {
                BTreeMap::new()
            },
            listeners: in_netns.then(|| listeners::read(&ports)),
        };
        if json {
            println!("{}", serde_json::to_string(&out)?);
        } else {
            print_table(&out, &cur);
        }
        let Some(every) = watch else { break };
        prev = cur;
        t_prev = now;
        thread::sleep(every);
    }
    Ok(())
}

fn print_table(s: &Sample, order: &[(Counter, u64)]) {
    println!(
        "synguard on {}: mode {}, {}, ports {}",
        s.iface,
        s.mode,
        if s.engaged { "engaged" } else { "not engaged" },
        s.ports
    );
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    let rate_hdr = if s.interval_secs > 0.0 {
        format!("rate/s ({:.1}s)", s.interval_secs)
    } else {
        "rate/s".into()
    };
    t.set_header(vec!["reason", "total", rate_hdr.as_str()]);
    for (c, v) in order {
        let rate = s
            .rates
            .get(c.name())
            .map(|r| format!("{r:.1}"))
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            Cell::new(c.name()),
            Cell::new(v).set_alignment(CellAlignment::Right),
            Cell::new(rate).set_alignment(CellAlignment::Right),
        ]);
    }
    println!("{t}");
    match &s.listeners {
        Some(l) => {
            let mut t = Table::new();
            t.load_style(UTF8_FULL_CONDENSED);
            t.set_header(vec!["socket state (protected ports)", "count"]);
            for (name, v) in l.fields() {
                t.add_row(vec![
                    Cell::new(name.to_ascii_uppercase()),
                    Cell::new(v).set_alignment(CellAlignment::Right),
                ]);
            }
            println!("{t}");
        }
        None => println!(
            "listener states: {} is not in this network namespace; run stats inside it \
             (nsenter --net=...) to see them",
            s.iface
        ),
    }
}
