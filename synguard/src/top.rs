//! `synguard top`: the sources dropped or rate-limited the most, from `SRC_DROPS` (per-source
//! drop counts, written by XDP on drops only) and `SRC_RATE` (the per-source SYN buckets),
//! refreshed the way `top` is.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, PerCpuHashMap};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use synguard_common::maps::{SrcDrops, SrcKey, TokenBucket, names};

use crate::{iface::IfaceName, pinned_maps::PinnedMaps};

/// One source's row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    /// `a.b.c.d/32`, or the IPv6 prefix the per-source limit counts as one source.
    pub source: String,
    /// Frames counted under a drop reason (monitor mode: that it would have dropped).
    pub drops: u64,
    /// Of those, SYNs over the per-source budget.
    pub rate_limited: u64,
    /// Drops a second over the last refresh (absent on the first sample).
    pub drops_per_sec: Option<f64>,
    /// Tokens left in the source's `SRC_RATE` bucket as last written (absent: no bucket).
    pub bucket_tokens: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Sample<'a> {
    iface: &'a str,
    interval_secs: f64,
    /// Sources in the maps (the rows are the first `-n` of them).
    sources_seen: usize,
    sources: Vec<Row>,
}

/// The operator's name of a source key: its /32, or its IPv6 prefix of `prefix6` bits.
pub fn source_name(k: &SrcKey, prefix6: u8) -> String {
    match k.family {
        4 => format!(
            "{}/32",
            Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3])
        ),
        _ => {
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&k.addr);
            let bits = if prefix6 == 0 || prefix6 > 64 {
                64
            } else {
                prefix6
            };
            format!("{}/{bits}", Ipv6Addr::from(a))
        }
    }
}

/// Every source of either map, by its key's bytes: its key, its drops summed over CPUs, and
/// its SRC_RATE bucket level.
type Sources = BTreeMap<[u8; 16], (SrcKey, SrcDrops, Option<f64>)>;

/// Per-source totals: SRC_DROPS summed over CPUs, and the SRC_RATE bucket levels.
fn read(p: &PinnedMaps) -> Result<Sources> {
    let key_bytes = |k: &SrcKey| {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&k.family.to_le_bytes());
        b[8..].copy_from_slice(&k.addr);
        b
    };
    let mut out = BTreeMap::new();
    let drops = PerCpuHashMap::<_, SrcKey, SrcDrops>::try_from(Map::PerCpuLruHashMap(
        p.map(names::SRC_DROPS)?,
    ))
    .context("opening SRC_DROPS")?;
    // An LRU entry can be evicted between the key walk and its lookup: skip it.
    for (k, per_cpu) in drops.iter().filter_map(Result::ok) {
        let mut sum = SrcDrops::default();
        for d in per_cpu.iter() {
            sum.drops += d.drops;
            sum.rate_limited += d.rate_limited;
            sum.last_ns = sum.last_ns.max(d.last_ns);
        }
        out.insert(key_bytes(&k), (k, sum, None));
    }
    let rate =
        HashMap::<_, SrcKey, TokenBucket>::try_from(Map::LruHashMap(p.map(names::SRC_RATE)?))
            .context("opening SRC_RATE")?;
    for (k, b) in rate.iter().filter_map(Result::ok) {
        let tokens = b.nanotokens as f64 / 1e9;
        out.entry(key_bytes(&k))
            .or_insert((k, SrcDrops::default(), None))
            .2 = Some(tokens);
    }
    Ok(out)
}

/// The `n` rows to show: by drop rate when there is one, then total drops, then rate-limited
/// SYNs, then the emptiest bucket.
pub fn rank(mut rows: Vec<Row>, n: usize) -> Vec<Row> {
    rows.sort_by(|a, b| {
        let r = |x: &Row| x.drops_per_sec.unwrap_or(0.0);
        r(b).total_cmp(&r(a))
            .then(b.drops.cmp(&a.drops))
            .then(b.rate_limited.cmp(&a.rate_limited))
            .then(
                a.bucket_tokens
                    .unwrap_or(f64::MAX)
                    .total_cmp(&b.bucket_tokens.unwrap_or(f64::MAX)),
            )
            .then(a.source.cmp(&b.source))
    });
    rows.truncate(n);
    rows
}

pub fn top(iface: &IfaceName, json: bool, once: bool, n: usize, interval: Duration) -> Result<()> {
    let p = PinnedMaps::open(iface)?;
    let mut prev: Option<(BTreeMap<[u8; 16], u64>, Instant)> = None;
    loop {
        let prefix6 = p.snapshot()?.config.src_prefix6;
        let now = Instant::now();
        let cur = read(&p)?;
        let dt = prev
            .as_ref()
            .map_or(0.0, |(_, t)| now.duration_since(*t).as_secs_f64());
        let rows: Vec<Row> = cur
            .iter()
            .map(|(kb, (k, d, tokens))| Row {
                source: source_name(k, prefix6),
                drops: d.drops,
                rate_limited: d.rate_limited,
                drops_per_sec: prev.as_ref().filter(|_| dt > 0.0).map(|(p, _)| {
                    d.drops.saturating_sub(p.get(kb).copied().unwrap_or(0)) as f64 / dt
                }),
                bucket_tokens: *tokens,
            })
            .collect();
        let seen = rows.len();
        let rows = rank(rows, n);
        if json {
            let s = Sample {
                iface: iface.as_str(),
                interval_secs: dt,
                sources_seen: seen,
                sources: rows,
            };
            println!("{}", serde_json::to_string(&s)?);
        } else {
            if !once {
                // Home and clear, as top redraws.
                print!("\x1b[H\x1b[2J");
            }
            print_table(iface, seen, &rows, dt);
        }
        if once {
            return Ok(());
        }
        prev = Some((
            cur.iter().map(|(kb, (_, d, _))| (*kb, d.drops)).collect(),
            now,
        ));
        thread::sleep(interval);
    }
}

fn print_table(iface: &IfaceName, seen: usize, rows: &[Row], dt: f64) {
    println!(
        "synguard top on {iface}: {seen} sources with drops or a SYN bucket{}",
        if dt > 0.0 {
            format!(", rates over {dt:.1}s")
        } else {
            String::new()
        }
    );
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "source",
        "drops",
        "drops/s",
        "rate_limited",
        "bucket tokens",
    ]);
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    for r in rows {
        t.add_row(vec![
            Cell::new(&r.source),
            Cell::new(r.drops).set_alignment(CellAlignment::Right),
            Cell::new(opt(r.drops_per_sec)).set_alignment(CellAlignment::Right),
            Cell::new(r.rate_limited).set_alignment(CellAlignment::Right),
            Cell::new(opt(r.bucket_tokens)).set_alignment(CellAlignment::Right),
        ]);
    }
    println!("{t}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, drops: u64, rate: Option<f64>) -> Row {
        Row {
            source: source.into(),
            drops,
            rate_limited: 0,
            drops_per_sec: rate,
            bucket_tokens: None,
        }
    }

    #[test]
    fn sources_are_named_by_their_key() {
        let k = SrcKey {
            family: 4,
            _pad: 0,
            addr: [198, 18, 0, 9, 0, 0, 0, 0],
        };
        assert_eq!(source_name(&k, 64), "198.18.0.9/32");
        let k6 = SrcKey {
            family: 6,
            _pad: 0,
            addr: [0x20, 0x01, 0, 2, 0, 0, 0, 7],
        };
        assert_eq!(source_name(&k6, 64), "2001:2:0:7::/64");
        assert_eq!(source_name(&k6, 48), "2001:2:0:7::/48");
    }

    #[test]
    fn the_busiest_source_comes_first() {
        let r = rank(
            vec![
                row("a", 10, Some(1.0)),
                row("b", 5, Some(9.0)),
                row("c", 50, Some(1.0)),
            ],
            2,
        );
        assert_eq!(
            r.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        let r = rank(vec![row("a", 10, None), row("c", 50, None)], 5);
        assert_eq!(r[0].source, "c");
    }
}
