//! Access to the maps a running (or crashed) `synguard run` pinned for an interface, for
//! the commands that act on it from another process: set, allow/deny, stats, status.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use synguard_common::maps::{Config, Counter, KeySlot, PORT_WORDS, State, names};

use crate::{pins, ports::PortSet};

pub struct Pinned {
    pub dir: PathBuf,
}

fn open(dir: &Path, name: &str) -> Result<MapData> {
    let path = dir.join(name);
    MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
}

impl Pinned {
    /// The pins of a synguard instance on `iface`, or a clear "not running" error.
    pub fn open(iface: &str) -> Result<Pinned> {
        Ok(Pinned {
            dir: pins::existing_dir(iface)?,
        })
    }

    pub fn at(dir: &Path) -> Pinned {
        Pinned {
            dir: dir.to_path_buf(),
        }
    }

    pub fn map(&self, name: &str) -> Result<MapData> {
        open(&self.dir, name)
    }

    pub fn config_map(&self) -> Result<Array<MapData, Config>> {
        Ok(Array::try_from(Map::Array(self.map(names::CONFIG)?))?)
    }

    pub fn config(&self) -> Result<Config> {
        Ok(self.config_map()?.get(&0, 0)?)
    }

    pub fn ports_map(&self) -> Result<Array<MapData, u64>> {
        Ok(Array::try_from(Map::Array(self.map(names::PORTS)?))?)
    }

    pub fn ports(&self) -> Result<PortSet> {
        read_ports(&self.ports_map()?)
    }

    pub fn state(&self) -> Result<State> {
        let m: Array<MapData, State> = Array::try_from(Map::Array(self.map(names::STATE)?))?;
        Ok(m.get(&0, 0)?)
    }

    pub fn keys(&self) -> Result<[KeySlot; 2]> {
        let m: Array<MapData, KeySlot> = Array::try_from(Map::Array(self.map(names::KEYS)?))?;
        Ok([m.get(&0, 0)?, m.get(&1, 0)?])
    }

    pub fn counters_map(&self) -> Result<PerCpuArray<MapData, u64>> {
        Ok(PerCpuArray::try_from(Map::PerCpuArray(
            self.map(names::COUNTERS)?,
        ))?)
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        read_counters(&self.counters_map()?)
    }
}

pub fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Vec<(Counter, u64)>> {
    Counter::ALL
        .iter()
        .map(|&c| Ok((c, read_counter(map, c)?)))
        .collect()
}

pub fn read_counter(map: &PerCpuArray<MapData, u64>, c: Counter) -> Result<u64> {
    Ok(map
        .get(&(c as u32), 0)
        .with_context(|| format!("reading counter {}", c.name()))?
        .iter()
        .sum())
}

pub fn read_ports(map: &Array<MapData, u64>) -> Result<PortSet> {
    let words = (0..PORT_WORDS)
        .map(|i| map.get(&i, 0))
        .collect::<Result<Vec<u64>, _>>()
        .context("reading PORTS")?;
    Ok(PortSet::from_words(words))
}

/// Rewrites the `PORTS` bitmap to `new`, touching only the words that change, so ports in
/// both the old and the new set stay protected throughout.
pub fn write_ports(map: &mut Array<MapData, u64>, new: &PortSet) -> Result<()> {
    let old = read_ports(map)?;
    for (i, (&o, &n)) in old.words().iter().zip(new.words()).enumerate() {
        if o != n {
            map.set(i as u32, &n, 0).context("writing PORTS")?;
        }
    }
    Ok(())
}
