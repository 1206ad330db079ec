//! `synguard`: the controller and CLI.

mod keys;
mod loader;
mod pins;

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use clap::{Parser, Subcommand};
use log::info;
use synguard_common::maps::{Config, Counter, Mode, PORT_WORDS, names, port_bit};

#[derive(Parser)]
#[command(name = "synguard", version, about = "XDP SYN-cookie flood mitigator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Monitor,
    Auto,
    Always,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Monitor => Mode::Monitor,
            ModeArg::Auto => Mode::Auto,
            ModeArg::Always => Mode::Always,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Load, attach and run until SIGINT/SIGTERM, rotating the cookie key.
    Run {
        #[arg(long)]
        iface: String,
        /// Protected ports: a comma-separated list of ports and ranges, e.g. 80,443,8000-8080.
        #[arg(long, value_parser = parse_ports, default_value = "80,443")]
        ports: PortList,
        #[arg(long, value_enum, default_value = "auto")]
        mode: ModeArg,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: loader::XdpModeArg,
        /// Seconds between cookie key rotations; a cookie stays valid for at least this long.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        key_rotation: u64,
        /// Window scale we advertise in SYN+ACKs (0-14).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(0..=14))]
        wscale: u8,
    },
    /// Print per-reason counters.
    Stats {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        json: bool,
    },
    /// Detach the programs and remove the pins (after a crashed daemon).
    Detach {
        #[arg(long)]
        iface: String,
    },
}

/// A parsed `--ports` value.
#[derive(Clone, Debug)]
struct PortList(Vec<u16>);

/// Parses "80,443,8000-8080" into a flat list; rejects port 0, empty items and reversed ranges.
fn parse_ports(s: &str) -> Result<PortList, String> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item, item),
        };
        let p = |v: &str| -> Result<u16, String> {
            match v.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("invalid port {v:?} in {s:?}: expected 1-65535")),
                Ok(n) => Ok(n),
            }
        };
        let (lo, hi) = (p(lo)?, p(hi)?);
        if lo > hi {
            return Err(format!("invalid port range {item:?}: start is above end"));
        }
        out.extend(lo..=hi);
    }
    Ok(PortList(out))
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            iface,
            ports,
            mode,
            xdp_mode,
            key_rotation,
            wscale,
        } => run(
            &iface,
            &ports.0,
            mode.into(),
            xdp_mode,
            Duration::from_secs(key_rotation),
            wscale,
        ),
        Cmd::Stats { iface, json } => stats(&iface, json),
        Cmd::Detach { iface } => {
            let dir = pins::existing_dir(&iface)?;
            loader::detach(&dir)?;
            println!("detached synguard from {iface}");
            Ok(())
        }
    }
}

fn run(
    iface: &str,
    ports: &[u16],
    mode: Mode,
    xdp_mode: loader::XdpModeArg,
    rotation: Duration,
    wscale: u8,
) -> Result<()> {
    let xdp_mode = loader::choose_mode(iface, xdp_mode)?;
    let dir = pins::ensure_dir(iface)?;
    if dir.join(pins::XDP_LINK).exists() {
        bail!(
            "synguard is already attached to {iface} (pins in {}); run `synguard detach --iface {iface}` first",
            dir.display()
        );
    }
    let mut ebpf = loader::load(&dir)?;
    let mut config: Array<_, Config> = Array::try_from(take(&mut ebpf, names::CONFIG)?)?;
    config.set(
        0,
        &Config {
            mode: mode as u32,
            ..Config::DEFAULT
        },
        0,
    )?;
    let mut port_map: Array<_, u64> = Array::try_from(take(&mut ebpf, names::PORTS)?)?;
    let mut words = vec![0u64; PORT_WORDS as usize];
    for &p in ports {
        let (w, bit) = port_bit(p);
        words[w as usize] |= bit;
    }
    for (i, w) in words.iter().enumerate() {
        port_map.set(i as u32, w, 0)?;
    }
    let mut ring = keys::KeyRing::new(
        Array::try_from(take(&mut ebpf, names::KEYS)?)?,
        Array::try_from(take(&mut ebpf, names::STATE)?)?,
    );
    let reused = ring.init_or_reuse(wscale)?;
    info!(
        "cookie key epoch {} ({})",
        ring.active()?.epoch,
        if reused { "reused" } else { "new" }
    );

    if let Err(e) = loader::attach(&mut ebpf, iface, xdp_mode, &dir) {
        let _ = loader::detach(&dir);
        return Err(e);
    }
    info!(
        "synguard attached to {iface} ({xdp_mode:?}), mode {mode:?}, {} protected ports",
        ports.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(rotation);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
                _ = tick.tick() => {
                    let k = ring.rotate(wscale)?;
                    log::debug!("rotated cookie key to epoch {}", k.epoch);
                }
            }
        }
        anyhow::Ok(())
    });
    info!("detaching from {iface}");
    loader::detach(&dir)?;
    result
}

fn take(ebpf: &mut aya::Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from object"))
}

fn stats(iface: &str, json: bool) -> Result<()> {
    let dir = pins::existing_dir(iface)?;
    let counters = read_counters(&dir)?;
    if json {
        let body: Vec<String> = counters
            .iter()
            .map(|(c, v)| format!("\"{}\":{v}", c.name()))
            .collect();
        println!("{{{}}}", body.join(","));
    } else {
        for (c, v) in &counters {
            println!("{:<24} {v}", c.name());
        }
    }
    Ok(())
}

/// Sums the per-CPU counters from the pinned COUNTERS map.
fn read_counters(dir: &Path) -> Result<Vec<(Counter, u64)>> {
    let data = MapData::from_pin(dir.join(names::COUNTERS)).context("opening pinned COUNTERS")?;
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
    Counter::ALL
        .iter()
        .map(|&c| Ok((c, map.get(&(c as u32), 0)?.iter().sum())))
        .collect()
}
