//! Operator settings: one parser and one validator for every place a setting comes from
//! (`run` flags, the TOML config file, and `synguard set`), and their mapping onto the
//! `CONFIG` map's [`Config`].

use std::{fmt, net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use synguard_common::maps::{Config, Mode};

use crate::ports::{self, PortSet};

/// A setting that lives in the pinned maps and can be changed live with `synguard set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Mode,
    Ports,
    SynRateOn,
    SynRateOff,
    SrcSynRate,
    SrcSynBurst,
    SynackRate,
    AdvMss4,
    AdvMss6,
    SynackWindow,
    Ttl,
    Ecn,
    Wscale,
}

/// Largest rate or burst we accept, to keep every product in the data path far from overflow.
const MAX_RATE: u64 = 1_000_000_000;

impl Key {
    pub const ALL: &'static [Key] = &[
        Key::Mode,
        Key::Ports,
        Key::SynRateOn,
        Key::SynRateOff,
        Key::SrcSynRate,
        Key::SrcSynBurst,
        Key::SynackRate,
        Key::AdvMss4,
        Key::AdvMss6,
        Key::SynackWindow,
        Key::Ttl,
        Key::Ecn,
        Key::Wscale,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Key::Mode => "mode",
            Key::Ports => "ports",
            Key::SynRateOn => "syn_rate_on",
            Key::SynRateOff => "syn_rate_off",
            Key::SrcSynRate => "src_syn_rate",
            Key::SrcSynBurst => "src_syn_burst",
            Key::SynackRate => "synack_rate",
            Key::AdvMss4 => "adv_mss4",
            Key::AdvMss6 => "adv_mss6",
            Key::SynackWindow => "synack_window",
            Key::Ttl => "ttl",
            Key::Ecn => "ecn",
            Key::Wscale => "wscale",
        }
    }

    /// Accepts `syn_rate_on` and `syn-rate-on`.
    pub fn from_name(s: &str) -> Result<Key, String> {
        let norm = s.trim().replace('-', "_").to_ascii_lowercase();
        Key::ALL
            .iter()
            .copied()
            .find(|k| k.name() == norm)
            .ok_or_else(|| format!("unknown setting {s:?}; valid settings: {}", key_list()))
    }

    /// Inclusive range of a numeric setting.
    const fn range(self) -> Option<(u64, u64)> {
        Some(match self {
            Key::SynRateOn => (1, MAX_RATE),
            Key::SynRateOff | Key::SrcSynRate | Key::SrcSynBurst | Key::SynackRate => (0, MAX_RATE),
            // RFC 1122/879: every IPv4 host must accept 536; IPv6's minimum MTU 1280 - 60.
            Key::AdvMss4 => (536, 65495),
            Key::AdvMss6 => (1220, 65475),
            Key::SynackWindow => (1, 65535),
            Key::Ttl => (1, 255),
            // RFC 7323: a shift above 14 is invalid.
            Key::Wscale => (0, 14),
            Key::Mode | Key::Ports | Key::Ecn => return None,
        })
    }

    /// What a numeric setting means, for error messages.
    const fn hint(self) -> &'static str {
        match self {
            Key::SynRateOn => "SYN/s above which auto mode engages",
            Key::SynRateOff => "SYN/s below which auto mode disengages",
            Key::SrcSynRate => "SYN/s per source, 0 = no per-source limit",
            Key::SrcSynBurst => "SYNs per source bucket, 0 = one second's worth",
            Key::SynackRate => "SYN+ACK/s machine-wide, 0 = no cap",
            Key::AdvMss4 => "IPv4 MSS we advertise",
            Key::AdvMss6 => "IPv6 MSS we advertise",
            Key::SynackWindow => "receive window of our SYN+ACK, never 0",
            Key::Ttl => "IPv4 TTL / IPv6 hop limit of our SYN+ACK",
            Key::Wscale => "window scale shift we advertise",
            Key::Mode => "monitor, auto or always",
            Key::Ports => "comma-separated ports and ranges, e.g. 80,443,8000-8080",
            Key::Ecn => "on or off",
        }
    }

    /// Parses and range-checks a value for this setting.
    pub fn parse(self, value: &str) -> Result<Setting, String> {
        let v = value.trim();
        let value = match self {
            Key::Mode => Value::Mode(parse_mode(v)?),
            Key::Ports => Value::Ports(ports::parse(v).map_err(|e| format!("ports: {e}"))?),
            Key::Ecn => Value::Bool(parse_bool(v).ok_or_else(|| {
                format!("ecn must be on or off (also true/false, yes/no, 1/0), got {value:?}")
            })?),
            _ => {
                let (lo, hi) = self.range().expect("numeric key");
                let n: i128 = v.parse().map_err(|_| {
                    format!(
                        "{} must be a whole number between {lo} and {hi} ({}), got {value:?}",
                        self.name(),
                        self.hint()
                    )
                })?;
                if n < i128::from(lo) || n > i128::from(hi) {
                    return Err(format!(
                        "{} must be between {lo} and {hi} ({}), got {n}",
                        self.name(),
                        self.hint()
                    ));
                }
                Value::Num(n as u32)
            }
        };
        Ok(Setting { key: self, value })
    }
}

fn key_list() -> String {
    Key::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "monitor" => Ok(Mode::Monitor),
        "auto" => Ok(Mode::Auto),
        "always" => Ok(Mode::Always),
        _ => Err(format!(
            "mode must be one of monitor, auto, always; got {s:?}"
        )),
    }
}

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Monitor => "monitor",
        Mode::Auto => "auto",
        Mode::Always => "always",
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Mode(Mode),
    Ports(PortSet),
    Num(u32),
    Bool(bool),
}

/// One parsed, range-checked setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: Key,
    pub value: Value,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Mode(m) => write!(f, "{} = {}", self.key.name(), mode_name(*m)),
            Value::Ports(p) => write!(f, "{} = {p}", self.key.name()),
            Value::Num(n) => write!(f, "{} = {n}", self.key.name()),
            Value::Bool(b) => write!(f, "{} = {}", self.key.name(), if *b { "on" } else { "off" }),
        }
    }
}

/// A clap value parser for the `run` flag of `key`, so flags, the file and `set` share one
/// set of rules and messages.
pub fn flag(key: Key) -> impl Fn(&str) -> Result<Setting, String> + Clone + Send + Sync + 'static {
    move |s: &str| key.parse(s)
}

/// Everything `CONFIG` and `PORTS` hold, in operator units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunables {
    pub mode: Mode,
    pub ports: PortSet,
    pub syn_rate_on: u32,
    pub syn_rate_off: u32,
    pub src_syn_rate: u32,
    pub src_syn_burst: u32,
    /// Machine-wide SYN+ACK/s cap (0 = none); `CONFIG` holds it per CPU.
    pub synack_rate: u32,
    pub adv_mss4: u16,
    pub adv_mss6: u16,
    pub synack_window: u16,
    pub ttl: u8,
    pub ecn: bool,
    pub wscale: u8,
}

pub const DEFAULT_PORTS: &str = "80,443";

impl Default for Tunables {
    fn default() -> Self {
        let mut t = Tunables::from_config(&Config::DEFAULT, PortSet::empty(), 1);
        t.mode = Mode::Auto;
        t.ports = ports::parse(DEFAULT_PORTS).expect("default ports");
        t
    }
}

impl Tunables {
    pub fn apply(&mut self, s: &Setting) {
        match (&s.value, s.key) {
            (Value::Mode(m), _) => self.mode = *m,
            (Value::Ports(p), _) => self.ports = p.clone(),
            (Value::Bool(b), _) => self.ecn = *b,
            (Value::Num(n), k) => {
                let n = *n;
                match k {
                    Key::SynRateOn => self.syn_rate_on = n,
                    Key::SynRateOff => self.syn_rate_off = n,
                    Key::SrcSynRate => self.src_syn_rate = n,
                    Key::SrcSynBurst => self.src_syn_burst = n,
                    Key::SynackRate => self.synack_rate = n,
                    // The ranges in Key::range keep these casts lossless.
                    Key::AdvMss4 => self.adv_mss4 = n as u16,
                    Key::AdvMss6 => self.adv_mss6 = n as u16,
                    Key::SynackWindow => self.synack_window = n as u16,
                    Key::Ttl => self.ttl = n as u8,
                    Key::Wscale => self.wscale = n as u8,
                    Key::Mode | Key::Ports | Key::Ecn => unreachable!("not numeric"),
                }
            }
        }
    }

    /// Rules between settings; each value is already range-checked by [`Key::parse`].
    pub fn validate(&self) -> Result<(), String> {
        if self.syn_rate_off > self.syn_rate_on {
            return Err(format!(
                "syn_rate_off ({}) must not be above syn_rate_on ({}): auto mode engages above \
                 syn_rate_on and disengages below syn_rate_off",
                self.syn_rate_off, self.syn_rate_on
            ));
        }
        if self.ports.is_empty() {
            return Err("no protected ports".into());
        }
        Ok(())
    }

    /// `CONFIG[0]` for these settings on a machine with `ncpus` possible CPUs.
    pub fn to_config(&self, ncpus: u32) -> Config {
        Config {
            mode: self.mode as u32,
            syn_rate_on: self.syn_rate_on,
            syn_rate_off: self.syn_rate_off,
            src_syn_rate: self.src_syn_rate,
            src_syn_burst: self.src_syn_burst,
            synack_rate_per_cpu: per_cpu(self.synack_rate, ncpus),
            adv_mss4: self.adv_mss4,
            adv_mss6: self.adv_mss6,
            synack_window: self.synack_window,
            ttl: self.ttl,
            ecn: self.ecn as u8,
            wscale: self.wscale,
            _pad: [0; 3],
        }
    }

    /// The operator's view of a `CONFIG[0]` read back from the map.
    pub fn from_config(c: &Config, ports: PortSet, ncpus: u32) -> Self {
        Tunables {
            mode: Mode::from_u32(c.mode).unwrap_or(Mode::Monitor),
            ports,
            syn_rate_on: c.syn_rate_on,
            syn_rate_off: c.syn_rate_off,
            src_syn_rate: c.src_syn_rate,
            src_syn_burst: c.src_syn_burst,
            synack_rate: c.synack_rate_per_cpu.saturating_mul(ncpus.max(1)),
            adv_mss4: c.adv_mss4,
            adv_mss6: c.adv_mss6,
            synack_window: c.synack_window,
            ttl: c.ttl,
            ecn: c.ecn != 0,
            wscale: c.wscale,
        }
    }
}

/// The per-CPU share of a machine-wide rate, rounded up so the sum never undercuts it.
pub fn per_cpu(rate: u32, ncpus: u32) -> u32 {
    rate.div_ceil(ncpus.max(1))
}

/// Number of CPUs that share the machine-wide SYN+ACK cap: the online ones, since only they
/// run the XDP program. (Dividing by the possible CPUs would undercut the cap wherever more
/// CPUs are possible than online, as on many VMs; here both are usually equal.)
pub fn ncpus() -> Result<u32> {
    let online = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    Ok((online.len() as u32).max(1))
}

/// The XDP attach mode the operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native where the driver can really transmit with XDP_TX, generic otherwise.
    Auto,
    Native,
    Generic,
}

pub fn parse_xdp_mode(s: &str) -> Result<XdpModeArg, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(XdpModeArg::Auto),
        "native" | "drv" | "driver" => Ok(XdpModeArg::Native),
        "generic" | "skb" => Ok(XdpModeArg::Generic),
        _ => Err(format!(
            "xdp_mode must be one of auto, native, generic; got {s:?}"
        )),
    }
}

/// Where the Prometheus endpoint listens; `None` when disabled with `--metrics off`.
pub fn parse_metrics(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if matches!(s, "off" | "none" | "") {
        return Ok(None);
    }
    s.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("metrics must be an address:port such as 127.0.0.1:9531 (or off), got {s:?}")
    })
}

pub const DEFAULT_METRICS: &str = "127.0.0.1:9531";
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(60);

/// Key rotation period: 1 s to 24 h, in humantime form ("60s", "5m") or plain seconds.
pub fn parse_rotation(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            format!("key_rotation must be a duration such as 60s or 5m, got {s:?}: {e}")
        })?,
    };
    if d < Duration::from_secs(1) || d > Duration::from_secs(86400) {
        return Err(format!(
            "key_rotation must be between 1s and 24h, got {}",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

/// What a config file holds: any subset of the `run` flags. Unknown keys are errors.
#[derive(Clone, Debug, Default)]
pub struct FileConfig {
    pub iface: Option<String>,
    pub metrics: Option<Option<SocketAddr>>,
    pub xdp_mode: Option<XdpModeArg>,
    pub key_rotation: Option<Duration>,
    pub keep_attached: Option<bool>,
    pub settings: Vec<Setting>,
}

const FILE_ONLY_KEYS: &[&str] = &[
    "iface",
    "metrics",
    "xdp_mode",
    "key_rotation",
    "keep_attached",
];

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<FileConfig> {
        let table: toml::Table = toml::from_str(text).context("invalid TOML")?;
        let mut fc = FileConfig::default();
        for (k, v) in &table {
            let key = k.replace('-', "_");
            let as_str = |v: &toml::Value| -> Result<String> {
                match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    toml::Value::Boolean(b) => Ok(b.to_string()),
                    other => bail!(
                        "{k}: expected a string or a number, got a {}",
                        other.type_str()
                    ),
                }
            };
            match key.as_str() {
                "iface" => match v {
                    toml::Value::String(s) => fc.iface = Some(s.clone()),
                    _ => bail!("iface: expected a string"),
                },
                "metrics" => {
                    fc.metrics = Some(parse_metrics(&as_str(v)?).map_err(anyhow::Error::msg)?)
                }
                "xdp_mode" => {
                    fc.xdp_mode = Some(parse_xdp_mode(&as_str(v)?).map_err(anyhow::Error::msg)?)
                }
                "key_rotation" => {
                    fc.key_rotation = Some(parse_rotation(&as_str(v)?).map_err(anyhow::Error::msg)?)
                }
                "keep_attached" => match v {
                    toml::Value::Boolean(b) => fc.keep_attached = Some(*b),
                    _ => bail!("keep_attached: expected true or false"),
                },
                "ports" => {
                    let set = match v {
                        toml::Value::Array(items) => {
                            let nums: Option<Vec<i64>> =
                                items.iter().map(toml::Value::as_integer).collect();
                            let nums = nums.context("ports: the array must hold port numbers")?;
                            ports::from_list(&nums).map_err(|e| anyhow::anyhow!("ports: {e}"))?
                        }
                        v => {
                            ports::parse(&as_str(v)?).map_err(|e| anyhow::anyhow!("ports: {e}"))?
                        }
                    };
                    fc.settings.push(Setting {
                        key: Key::Ports,
                        value: Value::Ports(set),
                    });
                }
                _ => {
                    let Ok(key) = Key::from_name(&key) else {
                        bail!(
                            "unknown key {k:?}; valid keys: {}, {}",
                            FILE_ONLY_KEYS.join(", "),
                            key_list()
                        );
                    };
                    fc.settings
                        .push(key.parse(&as_str(v)?).map_err(anyhow::Error::msg)?);
                }
            }
        }
        Ok(fc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(key: &str, v: &str) -> String {
        Key::from_name(key).unwrap().parse(v).unwrap_err()
    }

    #[test]
    fn keys_parse_and_validate() {
        assert_eq!(Key::from_name("syn-rate-on").unwrap(), Key::SynRateOn);
        assert!(
            Key::from_name("bogus")
                .unwrap_err()
                .contains("unknown setting")
        );
        assert!(err("wscale", "15").contains("between 0 and 14"));
        assert!(err("wscale", "-1").contains("between 0 and 14"));
        assert!(err("adv_mss4", "535").contains("between 536 and 65495"));
        assert!(err("adv_mss6", "1000").contains("between 1220"));
        assert!(err("synack_window", "0").contains("between 1 and 65535"));
        assert!(err("ttl", "0").contains("between 1 and 255"));
        assert!(err("ttl", "256").contains("between 1 and 255"));
        assert!(err("syn_rate_on", "fast").contains("whole number"));
        assert!(err("syn_rate_on", "0").contains("between 1"));
        assert!(err("mode", "sometimes").contains("monitor, auto, always"));
        assert!(err("ecn", "maybe").contains("on or off"));
        assert!(err("ports", "0").contains("expected 1-65535"));
        let s = Key::Ttl.parse("32").unwrap();
        assert_eq!(s.value, Value::Num(32));
        assert_eq!(s.to_string(), "ttl = 32");
        assert_eq!(Key::Ecn.parse("off").unwrap().value, Value::Bool(false));
        assert_eq!(
            Key::Mode.parse("Always").unwrap().value,
            Value::Mode(Mode::Always)
        );
    }

    #[test]
    fn cross_field_rules() {
        let mut t = Tunables::default();
        assert!(t.validate().is_ok());
        t.apply(&Key::SynRateOff.parse("2000").unwrap());
        let e = t.validate().unwrap_err();
        assert!(
            e.contains("syn_rate_off (2000) must not be above syn_rate_on (1000)"),
            "{e}"
        );
        t.apply(&Key::SynRateOn.parse("2000").unwrap());
        assert!(t.validate().is_ok());
    }

    #[test]
    fn config_round_trip_and_per_cpu_rate() {
        assert_eq!(per_cpu(1000, 3), 334);
        assert_eq!(per_cpu(0, 4), 0);
        assert_eq!(per_cpu(7, 0), 7);
        let mut t = Tunables::default();
        for (k, v) in [
            ("mode", "always"),
            ("synack_rate", "1000"),
            ("adv_mss4", "1400"),
            ("ttl", "32"),
            ("ecn", "off"),
            ("wscale", "9"),
        ] {
            t.apply(&Key::from_name(k).unwrap().parse(v).unwrap());
        }
        let c = t.to_config(2);
        assert_eq!(c.synack_rate_per_cpu, 500);
        assert_eq!(c.mode, Mode::Always as u32);
        assert_eq!((c.adv_mss4, c.ttl, c.ecn, c.wscale), (1400, 32, 0, 9));
        assert_eq!(Tunables::from_config(&c, t.ports.clone(), 2), t);
    }

    #[test]
    fn defaults() {
        let t = Tunables::default();
        assert_eq!(t.mode, Mode::Auto);
        assert_eq!(t.ports.to_string(), "80,443");
        assert_eq!(t.wscale, 7);
        assert_eq!(
            parse_metrics(DEFAULT_METRICS).unwrap().unwrap().port(),
            9531
        );
        assert_eq!(parse_metrics("off").unwrap(), None);
        assert!(parse_metrics("localhost").is_err());
    }

    #[test]
    fn rotation_durations() {
        assert_eq!(parse_rotation("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_rotation("5m").unwrap(), Duration::from_secs(300));
        assert!(
            parse_rotation("0s")
                .unwrap_err()
                .contains("between 1s and 24h")
        );
        assert!(
            parse_rotation("2days")
                .unwrap_err()
                .contains("between 1s and 24h")
        );
        assert!(parse_rotation("soon").is_err());
    }

    #[test]
    fn toml_files() {
        let fc = FileConfig::parse(
            r#"
            iface = "eth0"
            ports = [80, 443]
            mode = "always"
            syn_rate_on = 5000
            syn-rate-off = 100
            ecn = false
            xdp_mode = "generic"
            key_rotation = "30s"
            metrics = "off"
            keep_attached = true
            "#,
        )
        .unwrap();
        assert_eq!(fc.iface.as_deref(), Some("eth0"));
        assert_eq!(fc.xdp_mode, Some(XdpModeArg::Generic));
        assert_eq!(fc.key_rotation, Some(Duration::from_secs(30)));
        assert_eq!(fc.metrics, Some(None));
        assert_eq!(fc.keep_attached, Some(true));
        let mut t = Tunables::default();
        for s in &fc.settings {
            t.apply(s);
        }
        assert_eq!(
            (t.mode, t.syn_rate_on, t.syn_rate_off, t.ecn),
            (Mode::Always, 5000, 100, false)
        );
        assert_eq!(t.ports.to_string(), "80,443");

        let fc = FileConfig::parse("ports = \"22,8000-8001\"\nwscale = 3").unwrap();
        assert_eq!(fc.settings.len(), 2);

        for (bad, needle) in [
            ("bogus = 1", "unknown key \"bogus\""),
            ("wscale = 15", "between 0 and 14"),
            ("ports = []", "empty"),
            ("ports = [0]", "expected 1-65535"),
            ("mode = \"fast\"", "monitor, auto, always"),
            ("syn_rate_on = [1]", "expected a string or a number"),
            ("iface = 3", "iface: expected a string"),
            ("key_rotation = \"0s\"", "between 1s and 24h"),
            ("this is not toml", "invalid TOML"),
        ] {
            let e = format!("{:#}", FileConfig::parse(bad).unwrap_err());
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }
}
