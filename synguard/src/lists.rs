//! `synguard allow|deny add|del|list`: the ALLOW4/ALLOW6/DENY4/DENY6 LPM tries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, MapData, MapError, lpm_trie::Key, lpm_trie::LpmTrie};
use ipnet::IpNet;
use synguard_common::maps::{LIST_ENTRIES, ListSlot, names};

use crate::{iface::IfaceName, pinned_maps::PinnedMaps};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum List {
    Allow,
    Deny,
}

impl List {
    pub fn name(self) -> &'static str {
        match self {
            List::Allow => "allow",
            List::Deny => "deny",
        }
    }
    /// The LIST_FLAGS slots of its IPv4 and IPv6 tries.
    fn slots(self) -> (ListSlot, ListSlot) {
        match self {
            List::Allow => (ListSlot::Allow4, ListSlot::Allow6),
            List::Deny => (ListSlot::Deny4, ListSlot::Deny6),
        }
    }

    fn maps(self) -> (&'static str, &'static str) {
        match self {
            List::Allow => (names::ALLOW4, names::ALLOW6),
            List::Deny => (names::DENY4, names::DENY6),
        }
    }
}

/// Parses a CIDR or a bare address (as /32 or /128). Host bits must be clear, so a typo such
/// as 10.1.2.3/8 is caught instead of silently meaning 10.0.0.0/8.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                return Err(format!(
                    "invalid CIDR {s:?}: expected an address or address/prefix such as \
                     192.0.2.0/24 or 2001:db8::/32"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{s} has host bits set beyond the /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(net)
}

type Trie4 = LpmTrie<MapData, [u8; 4], u8>;
type Trie6 = LpmTrie<MapData, [u8; 16], u8>;

fn tries(p: &PinnedMaps, list: List) -> Result<(Trie4, Trie6)> {
    let (n4, n6) = list.maps();
    Ok((p.lpm_trie(n4)?, p.lpm_trie(n6)?))
}

/// Every entry of an LPM trie pair, v4 first.
fn entries(t4: &Trie4, t6: &Trie6) -> Result<Vec<IpNet>> {
    let mut out = Vec::new();
    for k in t4.keys() {
        let k = k.context("listing IPv4 entries")?;
        out.push(IpNet::new(
            IpAddr::V4(Ipv4Addr::from(k.data())),
            k.prefix_len() as u8,
        )?);
    }
    for k in t6.keys() {
        let k = k.context("listing IPv6 entries")?;
        out.push(IpNet::new(
            IpAddr::V6(Ipv6Addr::from(k.data())),
            k.prefix_len() as u8,
        )?);
    }
    out.sort();
    Ok(out)
}

pub fn list(iface: &IfaceName, list: List) -> Result<Vec<IpNet>> {
    let p = PinnedMaps::open(iface)?;
    let (t4, t6) = tries(&p, list)?;
    entries(&t4, &t6)
}

/// Adds every CIDR, or none: all are parsed first.
pub fn add(iface: &IfaceName, list: List, cidrs: &[String]) -> Result<Vec<String>> {
    let nets = parse_all(cidrs)?;
    let p = PinnedMaps::open(iface)?;
    let (mut t4, mut t6) = tries(&p, list)?;
    let existing = entries(&t4, &t6)?;
    let mut flags = flags_map(&p)?;
    let new: Vec<&IpNet> = nets.iter().filter(|n| !existing.contains(n)).collect();
    if existing.len() + new.len() > LIST_ENTRIES as usize {
        bail!(
            "the {} list would hold {} entries; its capacity is {LIST_ENTRIES}",
            list.name(),
            existing.len() + new.len()
        );
    }
    let mut msgs = Vec::new();
    for net in &nets {
        if existing.contains(net) {
            msgs.push(format!("{net} is already in the {} list", list.name()));
            continue;
        }
        let r = match net {
            IpNet::V4(n) => t4.insert(
                &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
                &1,
                0,
            ),
            IpNet::V6(n) => t6.insert(
                &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
                &1,
                0,
            ),
        };
        r.with_context(|| format!("adding {net} to the {} list", list.name()))?;
        // Only ever 1 from here: clearing is the daemon's job (see `ListFlags`).
        let (s4, s6) = list.slots();
        let slot = if net.addr().is_ipv4() { s4 } else { s6 };
        flags
            .set(slot as u32, &1, 0)
            .with_context(|| format!("flagging the {} list as in use", list.name()))?;
        msgs.push(format!("added {net} to the {} list", list.name()));
    }
    Ok(msgs)
}

/// Removes every CIDR; fails without removing anything if one is not in the list.
pub fn del(iface: &IfaceName, list: List, cidrs: &[String]) -> Result<Vec<String>> {
    let nets = parse_all(cidrs)?;
    let p = PinnedMaps::open(iface)?;
    let (mut t4, mut t6) = tries(&p, list)?;
    let existing = entries(&t4, &t6)?;
    for net in &nets {
        if !existing.contains(net) {
            bail!(
                "{net} is not in the {} list of {iface} (see `synguard {} list --iface {iface}`)",
                list.name(),
                list.name()
            );
        }
    }
    let mut msgs = Vec::new();
    for net in &nets {
        let r = match net {
            IpNet::V4(n) => t4.remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets())),
            IpNet::V6(n) => t6.remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets())),
        };
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("removing {net} from the {} list", list.name())));
            }
        }
        msgs.push(format!("removed {net} from the {} list", list.name()));
    }
    Ok(msgs)
}

fn flags_map(p: &PinnedMaps) -> Result<Array<MapData, u32>> {
    p.array(names::LIST_FLAGS)
}

/// The daemon's view of the lists: it recounts them and keeps `LIST_FLAGS` true, so the data
/// path looks up only the tries that hold entries. (The semantics are on
/// `synguard_common::maps::ListSlot`.)
pub struct ListFlags {
    tries: [(ListSlot, TrieAny); 4],
    flags: Array<MapData, u32>,
}

enum TrieAny {
    V4(Trie4),
    V6(Trie6),
}

impl TrieAny {
    fn is_empty(&self) -> Result<bool> {
        let first = match self {
            TrieAny::V4(t) => t.keys().next().map(|k| k.map(|_| ())),
            TrieAny::V6(t) => t.keys().next().map(|k| k.map(|_| ())),
        };
        Ok(first.transpose().context("listing a trie")?.is_none())
    }
}

impl ListFlags {
    pub fn open(iface: &IfaceName) -> Result<ListFlags> {
        let p = PinnedMaps::open(iface)?;
        let (a4, a6) = tries(&p, List::Allow)?;
        let (d4, d6) = tries(&p, List::Deny)?;
        Ok(ListFlags {
            tries: [
                (ListSlot::Allow4, TrieAny::V4(a4)),
                (ListSlot::Allow6, TrieAny::V6(a6)),
                (ListSlot::Deny4, TrieAny::V4(d4)),
                (ListSlot::Deny6, TrieAny::V6(d6)),
            ],
            flags: flags_map(&p)?,
        })
    }

    /// Writes each slot's flag from its trie's contents.
    pub fn refresh(&mut self) -> Result<()> {
        for (slot, trie) in &self.tries {
            let v = u32::from(!trie.is_empty()?);
            if self.flags.get(&(*slot as u32), 0)? != v {
                self.flags.set(*slot as u32, &v, 0)?;
            }
        }
        Ok(())
    }
}

fn parse_all(cidrs: &[String]) -> Result<Vec<IpNet>> {
    if cidrs.is_empty() {
        bail!("give at least one CIDR");
    }
    let mut out = Vec::new();
    for c in cidrs {
        let n = parse_cidr(c).map_err(anyhow::Error::msg)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("192.0.2.0/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_cidr("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().prefix_len(), 0);
        let e = parse_cidr("10.1.2.3/8").unwrap_err();
        assert!(e.contains("host bits") && e.contains("10.0.0.0/8"), "{e}");
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "banana",
            "10.0.0/8",
            "",
            "1.2.3.4/-1",
        ] {
            assert!(
                parse_cidr(bad).unwrap_err().contains("invalid CIDR"),
                "{bad}"
            );
        }
    }
}
