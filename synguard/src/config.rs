//! The service's config file: the `run` options and live settings of
//! [`crate::settings::FileConfig`], plus what only a file can hold: the allow and deny lists and the
//! interfaces. `run` makes the maps match it at start and again on SIGHUP (see `daemon`).
//!
//! A list key present in the file owns that list: the daemon makes the trie hold exactly
//! its entries (`deny = []` empties it). A list key left out leaves the list to
//! `synguard allow|deny add|del`, as it is in the pins.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use synguard_common::maps::LIST_ENTRIES;

use crate::{
    iface::IfaceName,
    lists::{self, List},
    settings::FileConfig,
};

/// Where `run` looks when no `--config` is given. A missing file there is fine (defaults
/// and flags only); a missing `--config FILE` is an error.
pub const DEFAULT_PATH: &str = "/etc/synguard/synguard.toml";

/// The keys this module takes out of the file before [`FileConfig`] reads the rest.
const KEYS: &[&str] = &["allow", "deny", "interfaces"];

/// A parsed, validated config file.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    /// The file it came from; `None` when there was none (no --config, no default file).
    pub path: Option<PathBuf>,
    pub file: FileConfig,
    /// `Some` when the file owns the list (the key is present).
    pub allow: Option<Vec<IpNet>>,
    pub deny: Option<Vec<IpNet>>,
    /// `interfaces = [...]`: the interfaces to protect (one per daemon for now).
    pub interfaces: Option<Vec<IfaceName>>,
}

impl ServiceConfig {
    /// `--config FILE` (which must exist), else the default path if it exists, else nothing.
    pub fn load(explicit: Option<&Path>) -> Result<ServiceConfig> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from(DEFAULT_PATH);
                match std::fs::metadata(&p) {
                    Ok(_) => p,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(ServiceConfig::default());
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("reading the default config file {DEFAULT_PATH}")));
                    }
                }
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut c = ServiceConfig::parse(&text)
            .with_context(|| format!("config file {}", path.display()))?;
        c.path = Some(path);
        Ok(c)
    }

    pub fn parse(text: &str) -> Result<ServiceConfig> {
        let mut table: toml::Table = toml::from_str(text).context("invalid TOML")?;
        let allow = table
            .remove("allow")
            .map(|v| cidrs(List::Allow, &v))
            .transpose()?;
        let deny = table
            .remove("deny")
            .map(|v| cidrs(List::Deny, &v))
            .transpose()?;
        let interfaces = table
            .remove("interfaces")
            .map(|v| interfaces(&v))
            .transpose()?;
        let file = FileConfig::from_table(&table, KEYS)?;
        if let (Some(one), Some(many)) = (&file.iface, &interfaces)
            && many.as_slice() != std::slice::from_ref(one)
        {
            bail!("iface = {one:?} and interfaces = {many:?} disagree; give one of them");
        }
        Ok(ServiceConfig {
            path: None,
            file,
            allow,
            deny,
            interfaces,
        })
    }

    /// The interfaces this file names (`iface`, or `interfaces`), if any: one daemon serves
    /// them all, the first holding the maps they share.
    pub fn interfaces(&self) -> Result<Option<Vec<IfaceName>>> {
        match (&self.file.iface, &self.interfaces) {
            (Some(i), _) => Ok(Some(vec![i.clone()])),
            (None, None) => Ok(None),
            (None, Some(v)) if v.is_empty() => {
                bail!("interfaces = []: name at least one interface")
            }
            (None, Some(v)) => Ok(Some(v.clone())),
        }
    }

    pub fn list(&self, l: List) -> Option<&[IpNet]> {
        match l {
            List::Allow => self.allow.as_deref(),
            List::Deny => self.deny.as_deref(),
        }
    }
}

fn cidrs(list: List, v: &toml::Value) -> Result<Vec<IpNet>> {
    let name = list.name();
    let toml::Value::Array(items) = v else {
        bail!("{name}: expected an array of CIDRs, such as {name} = [\"192.0.2.0/24\"]");
    };
    let mut out: Vec<IpNet> = Vec::new();
    for item in items {
        let toml::Value::String(s) = item else {
            bail!("{name}: every entry must be a string, got {item}");
        };
        let net = lists::parse_cidr(s).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    // Each address family has its own trie of LIST_ENTRIES entries.
    for (fam, n) in [
        ("IPv4", out.iter().filter(|n| n.addr().is_ipv4()).count()),
        ("IPv6", out.iter().filter(|n| n.addr().is_ipv6()).count()),
    ] {
        if n > LIST_ENTRIES as usize {
            bail!("{name}: {n} {fam} entries; the list holds at most {LIST_ENTRIES}");
        }
    }
    out.sort();
    Ok(out)
}

fn interfaces(v: &toml::Value) -> Result<Vec<IfaceName>> {
    let toml::Value::Array(items) = v else {
        bail!("interfaces: expected an array of interface names, such as interfaces = [\"eth0\"]");
    };
    let mut out = Vec::new();
    for item in items {
        let toml::Value::String(s) = item else {
            bail!("interfaces: every entry must be a string, got {item}");
        };
        let n: IfaceName = s.parse().map_err(|e| anyhow::anyhow!("interfaces: {e}"))?;
        if out.contains(&n) {
            bail!("interfaces: {n} is named twice");
        }
        out.push(n);
    }
    Ok(out)
}

/// How a change relates to the config file, for the messages of `allow/deny add|del`.
pub struct NotInConfig<'a> {
    pub list: List,
    pub path: Option<&'a Path>,
    /// Whether that file owns the list (has the key).
    pub owned: bool,
}

impl fmt::Display for NotInConfig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.list.name();
        match (self.path, self.owned) {
            (Some(p), true) => write!(
                f,
                "note: this change is not in the config file {}: the next reload (SIGHUP) or \
                 restart puts the {l} list back to its `{l} = [...]`; edit it there to keep it",
                p.display()
            ),
            (Some(p), false) => write!(
                f,
                "note: this change is not in the config file {} (it has no `{l} = [...]`, so \
                 the {l} list is managed live and kept until `synguard detach`)",
                p.display()
            ),
            (None, _) => write!(
                f,
                "note: this change is not in a config file (the daemon runs without one); it \
                 is kept until `synguard detach`"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_interfaces_parse() {
        let c = ServiceConfig::parse(
            r#"
            interfaces = ["eth0"]
            ports = [80]
            allow = ["192.0.2.7", "2001:db8::/32", "192.0.2.7/32"]
            deny = []
            "#,
        )
        .unwrap();
        assert_eq!(c.interfaces().unwrap().unwrap()[0].as_str(), "eth0");
        let allow: Vec<String> = c.allow.unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(allow, ["192.0.2.7/32", "2001:db8::/32"]);
        assert_eq!(c.deny, Some(vec![]));
        assert_eq!(c.file.settings.len(), 1);
        let c = ServiceConfig::parse("mode = \"always\"").unwrap();
        assert!(c.allow.is_none() && c.deny.is_none() && c.interfaces().unwrap().is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (bad, needle) in [
            ("allow = \"10.0.0.0/8\"", "expected an array of CIDRs"),
            ("deny = [1]", "every entry must be a string"),
            ("deny = [\"10.1.2.3/8\"]", "host bits"),
            ("deny = [\"banana\"]", "invalid CIDR"),
            ("interfaces = [\"a/b\"]", "invalid interface name"),
            ("interfaces = [\"a\", \"a\"]", "named twice"),
            ("interfaces = \"eth0\"", "expected an array"),
            ("iface = \"a\"\ninterfaces = [\"b\"]", "disagree"),
            ("bogus = 1", "valid keys: allow, deny, interfaces, iface"),
        ] {
            let e = format!("{:#}", ServiceConfig::parse(bad).unwrap_err());
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        let many = ServiceConfig::parse("interfaces = [\"a\", \"b\"]").unwrap();
        let names: Vec<String> = many
            .interfaces()
            .unwrap()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let e = ServiceConfig::parse("interfaces = []").unwrap();
        assert!(
            e.interfaces()
                .unwrap_err()
                .to_string()
                .contains("at least one")
        );
        let big: Vec<String> = (0..=LIST_ENTRIES)
            .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
            .collect();
        let e = ServiceConfig::parse(&format!("deny = [{}]", big.join(","))).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn an_explicit_missing_file_is_an_error_the_default_is_not() {
        let e = ServiceConfig::load(Some(Path::new("/nonexistent/synguard.toml"))).unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent/synguard.toml"),
            "{e:#}"
        );
        if !Path::new(DEFAULT_PATH).exists() {
            assert!(ServiceConfig::load(None).unwrap().path.is_none());
        }
    }
}
