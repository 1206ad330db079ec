//! Typed access to the maps a running (or crashed) `synguard run` pinned for an interface,
//! for the commands that act on it from another process (set, allow/deny, stats, status)
//! and for the metrics endpoint. [`PinnedMaps::snapshot`] is the one read of everything
//! they report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{Array, LpmTrie, Map, MapData, PerCpuArray};
use synguard_common::maps::{Config, Counter, KeySlot, PORT_WORDS, State, names};

use crate::{
    iface::IfaceName,
    ports::PortSet,
    settings::{self, Tunables},
    state_dir,
};

pub struct PinnedMaps {
    pub dir: PathBuf,
}

/// Everything the pinned maps say, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `CONFIG[0]` as stored (synack_rate per CPU).
    pub config: Config,
    /// The same in operator units, with the ports.
    pub tunables: Tunables,
    pub state: State,
    pub keys: [KeySlot; 2],
    /// Every counter, summed over CPUs, in [`Counter::ALL`] order.
    pub counters: Vec<(Counter, u64)>,
}

impl Snapshot {
    /// The key XDP mints with.
    pub fn active_key(&self) -> KeySlot {
        self.keys[(self.state.active_key & 1) as usize]
    }
}

impl PinnedMaps {
    /// The pins of a synguard instance on `iface`, or a clear "not running" error.
    pub fn open(iface: &IfaceName) -> Result<PinnedMaps> {
        Ok(PinnedMaps {
            dir: state_dir::existing_dir(iface)?,
        })
    }

    pub fn at(dir: &Path) -> PinnedMaps {
        PinnedMaps {
            dir: dir.to_path_buf(),
        }
    }

    pub fn map(&self, name: &str) -> Result<MapData> {
        let path = self.dir.join(name);
        MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
    }

    pub fn array<T: aya::Pod>(&self, name: &str) -> Result<Array<MapData, T>> {
        Ok(Array::try_from(Map::Array(self.map(name)?))?)
    }

    pub fn lpm_trie<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> Result<LpmTrie<MapData, K, V>> {
        Ok(LpmTrie::try_from(Map::LpmTrie(self.map(name)?))?)
    }

    pub fn config_map(&self) -> Result<Array<MapData, Config>> {
        self.array(names::CONFIG)
    }

    pub fn ports_map(&self) -> Result<Array<MapData, u64>> {
        self.array(names::PORTS)
    }

    pub fn ports(&self) -> Result<PortSet> {
        read_ports(&self.ports_map()?)
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

    pub fn snapshot(&self) -> Result<Snapshot> {
        let config = self.config_map()?.get(&0, 0).context("reading CONFIG")?;
        let state = self
            .array::<State>(names::STATE)?
            .get(&0, 0)
            .context("reading STATE")?;
        let keys = self.array::<KeySlot>(names::KEYS)?;
        let keys = [keys.get(&0, 0)?, keys.get(&1, 0)?];
        let tunables = Tunables::from_config(&config, self.ports()?, settings::ncpus()?);
        Ok(Snapshot {
            config,
            tunables,
            state,
            keys,
            counters: self.counters()?,
        })
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
