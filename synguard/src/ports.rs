//! Protected port sets: parsing "80,443,8000-8080", and the 65536-bit `PORTS` bitmap.

use std::fmt;

use synguard_common::maps::{PORT_WORDS, port_bit};

/// A set of TCP ports, stored exactly as the `PORTS` map holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: Box<[u64]>,
}

impl PortSet {
    pub fn empty() -> Self {
        PortSet {
            words: vec![0u64; PORT_WORDS as usize].into_boxed_slice(),
        }
    }

    /// Builds a set from the bitmap words read back from the `PORTS` map.
    pub fn from_words(words: Vec<u64>) -> Self {
        let mut words = words;
        words.resize(PORT_WORDS as usize, 0);
        PortSet {
            words: words.into_boxed_slice(),
        }
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn insert(&mut self, port: u16) {
        let (w, bit) = port_bit(port);
        self.words[w as usize] |= bit;
    }

    pub fn contains(&self, port: u16) -> bool {
        let (w, bit) = port_bit(port);
        self.words[w as usize] & bit != 0
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|&p| self.contains(p))
    }

    /// The set as inclusive ranges, ascending.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for p in self.iter() {
            match out.last_mut() {
                Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
                _ => out.push((p, p)),
            }
        }
        out
    }
}

impl fmt::Display for PortSet {
    /// The compact form `parse` accepts: "80,443,8000-8080".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges()
            .into_iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet({self})")
    }
}

/// Parses "80,443,8000-8080". Rejects port 0, empty items, reversed ranges and an empty list.
pub fn parse(s: &str) -> Result<PortSet, String> {
    let mut set = PortSet::empty();
    if s.trim().is_empty() {
        return Err("the port list is empty: give at least one port, e.g. 80,443".into());
    }
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty item in port list {s:?}"));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item, item),
        };
        let (lo, hi) = (port(lo, s)?, port(hi, s)?);
        if lo > hi {
            return Err(format!(
                "invalid port range {item:?}: start {lo} is above end {hi}"
            ));
        }
        for p in lo..=hi {
            set.insert(p);
        }
    }
    Ok(set)
}

/// Builds a set from a list of numbers, as a config file's `ports = [80, 443]` gives it.
pub fn from_list(list: &[i64]) -> Result<PortSet, String> {
    if list.is_empty() {
        return Err("the port list is empty: give at least one port, e.g. [80, 443]".into());
    }
    let mut set = PortSet::empty();
    for &p in list {
        match u16::try_from(p) {
            Ok(p) if p != 0 => set.insert(p),
            _ => return Err(format!("invalid port {p}: expected 1-65535")),
        }
    }
    Ok(set)
}

fn port(v: &str, whole: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {v:?} in {whole:?}: expected 1-65535")),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let s = parse("80, 443,8000-8003").unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [80, 443, 8000, 8001, 8002, 8003]
        );
        assert_eq!(s.to_string(), "80,443,8000-8003");
        assert_eq!(s.len(), 6);
        assert!(s.contains(443) && !s.contains(444));
    }

    #[test]
    fn covers_the_edges() {
        let s = parse("1,65535").unwrap();
        assert!(s.contains(1) && s.contains(65535));
        assert_eq!(s.to_string(), "1,65535");
        assert_eq!(parse("1-65535").unwrap().len(), 65535);
    }

    #[test]
    fn rejects_bad_lists() {
        for (bad, needle) in [
            ("", "empty"),
            ("80,", "empty item"),
            ("0", "expected 1-65535"),
            ("65536", "expected 1-65535"),
            ("http", "expected 1-65535"),
            ("90-80", "start 90 is above end 80"),
            ("-5", "expected 1-65535"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn words_round_trip() {
        let s = parse("22,80,443,9000-9100").unwrap();
        let back = PortSet::from_words(s.words().to_vec());
        assert_eq!(s, back);
        assert_eq!(from_list(&[80, 443]).unwrap(), parse("443,80").unwrap());
        assert!(from_list(&[0]).is_err());
        assert!(from_list(&[70000]).is_err());
        assert!(from_list(&[]).is_err());
    }
}
