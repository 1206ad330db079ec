//! Operator settings. The `settings!` macro below is the one table of the live settings (those in
//! the `CONFIG` and `PORTS` maps, changeable with `synguard set`): one row per setting, from
//! which come the [`Key`] names, ranges and messages, the `run` flags ([`SettingFlags`]),
//! the `set` help, the TOML keys, the [`Tunables`] <-> [`Config`] mapping and the status
//! JSON. The rules between settings are in [`Tunables::validate`]; the three settings that
//! are special (`synack_rate` is stored per CPU, `wscale` applies from the next key
//! rotation, `ports` lives in `PORTS`) are special in their row and in [`set_live`].

use std::{fmt, net::SocketAddr, time::Duration};

use anyhow::{Result, bail};
use synguard_common::maps::{Config, Mode};

use crate::{
    iface::{IfaceName, XdpRequest},
    pinned_maps::{self, PinnedMaps},
    ports::{self, PortSet},
    run_state::RunState,
};

/// Largest rate or burst we accept, to keep every product in the data path far from overflow.
const MAX_RATE: u64 = 1_000_000_000;

/// Generates everything about the live settings from one row each:
/// `Key => field: Type { default, range, hint (error messages), flag (`run --help`),
/// about (`set --help`), stored: config(field) | per_cpu(field) | ports_map }`.
macro_rules! settings {
    ($(
        $(#[$meta:meta])*
        $Key:ident => $name:ident : $T:ty {
            default: $default:literal,
            range: $range:expr,
            hint: $hint:literal,
            flag: $flag:literal,
            about: $about:literal,
            stored: $how:ident $(($field:ident))?,
        },
    )*) => {
        /// A setting that lives in the pinned maps and can be changed live with `synguard set`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Key {
            $($(#[$meta])* $Key,)*
        }

        impl Key {
            pub const ALL: &'static [Key] = &[$(Key::$Key,)*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(Key::$Key => stringify!($name),)*
                }
            }

            const fn meta(self) -> Meta {
                match self {
                    $(Key::$Key => Meta {
                        name: stringify!($name),
                        range: $range,
                        hint: $hint,
                    },)*
                }
            }

            /// The operator default, as the operator would write it.
            pub const fn default_text(self) -> &'static str {
                match self {
                    $(Key::$Key => $default,)*
                }
            }

            /// One line of `synguard set --help`.
            const fn about(self) -> &'static str {
                match self {
                    $(Key::$Key => $about,)*
                }
            }

            /// Parses and range-checks a value for this setting.
            pub fn parse(self, value: &str) -> Result<Setting, String> {
                match self {
                    $(Key::$Key => <$T as Kind>::parse(value, &self.meta()).map(Setting::$Key),)*
                }
            }

            /// Parses a value from the TOML config file (`key` as the file spells it).
            fn parse_toml(self, key: &str, value: &toml::Value) -> Result<Setting, String> {
                match self {
                    $(Key::$Key => <$T as Kind>::from_toml(key, value, &self.meta())
                        .map(Setting::$Key),)*
                }
            }
        }

        /// One parsed, range-checked setting.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Setting {
            $($Key($T),)*
        }

        impl Setting {
            pub fn key(&self) -> Key {
                match self {
                    $(Setting::$Key(_) => Key::$Key,)*
                }
            }

            /// Writes this setting's share of `CONFIG[0]` (nothing for settings kept elsewhere).
            pub fn store(&self, c: &mut Config, ncpus: u32) {
                match self {
                    $(Setting::$Key(v) => stored!(store $how $(($field))?, c, v, ncpus),)*
                }
            }
        }

        impl fmt::Display for Setting {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Setting::$Key(v) => write!(f, "{} = {}", stringify!($name), v.show()),)*
                }
            }
        }

        /// Everything `CONFIG` and `PORTS` hold, in operator units.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Tunables {
            $(pub $name: $T,)*
        }

        impl Default for Tunables {
            /// The operator defaults of the table.
            fn default() -> Self {
                // A unit test parses every default, so this cannot fail at run time.
                Tunables {
                    $($name: match <$T as Kind>::parse(Key::$Key.default_text(), &Key::$Key.meta()) {
                        Ok(v) => v,
                        Err(e) => unreachable!("settings table default: {e}"),
                    },)*
                }
            }
        }

        impl Tunables {
            /// The value of one setting.
            pub fn get(&self, k: Key) -> Setting {
                match k {
                    $(Key::$Key => Setting::$Key(self.$name.clone()),)*
                }
            }

            pub fn apply(&mut self, s: &Setting) {
                match s {
                    $(Setting::$Key(v) => self.$name = v.clone(),)*
                }
            }

            /// `CONFIG[0]` for these settings on a machine with `ncpus` CPUs.
            pub fn to_config(&self, ncpus: u32) -> Config {
                // Fields no row stores (padding) keep their DEFAULT, zero.
                let mut c = Config::DEFAULT;
                $(Setting::$Key(self.$name.clone()).store(&mut c, ncpus);)*
                c
            }

            /// The operator's view of a `CONFIG[0]` read back from the map.
            pub fn from_config(c: &Config, ports: PortSet, ncpus: u32) -> Self {
                let _ = ncpus;
                Tunables {
                    $($name: stored!(load $how $(($field))?, c, ports, ncpus),)*
                }
            }
        }

        /// Status JSON: one field per setting, named as the table names it.
        impl serde::Serialize for Tunables {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(Key::ALL.len()))?;
                $(m.serialize_entry(stringify!($name), &self.$name.json())?;)*
                m.end()
            }
        }

        /// The `run` flag of every setting. Each is optional: unset flags leave the value
        /// of the config file, or the default.
        #[derive(clap::Args, Clone, Debug, Default)]
        pub struct SettingFlags {
            $(
                #[arg(
                    long,
                    value_name = "VALUE",
                    help = concat!($flag, " [default: ", $default, "]"),
                    value_parser = flag(Key::$Key),
                )]
                pub $name: Option<Setting>,
            )*
        }

        impl SettingFlags {
            pub fn iter(&self) -> impl Iterator<Item = &Setting> {
                [$(&self.$name,)*].into_iter().flatten()
            }
        }
    };
}
/// The storage column of the table: where a setting lives and how it converts.
macro_rules! stored {
    (store config($field:ident), $c:ident, $v:ident, $n:ident) => {
        $c.$field = Stored::to_field($v.clone())
    };
    (store per_cpu($field:ident), $c:ident, $v:ident, $n:ident) => {
        $c.$field = per_cpu(*$v, $n)
    };
    (store ports_map, $c:ident, $v:ident, $n:ident) => {{
        // PORTS is written by `pinned_maps::write_ports`.
        let _ = $v;
    }};
    (load config($field:ident), $c:ident, $ports:ident, $n:ident) => {
        Stored::from_field($c.$field)
    };
    (load per_cpu($field:ident), $c:ident, $ports:ident, $n:ident) => {
        $c.$field.saturating_mul($n.max(1))
    };
    (load ports_map, $c:ident, $ports:ident, $n:ident) => {
        $ports
    };
}

// The table. Adding a live setting is one row here (plus the `Config` field and its use in
// the data path).
settings! {
    Mode => mode: Mode {
        default: "auto",
        range: None,
        hint: "monitor, auto or always",
        flag: "monitor, auto or always",
        about: "monitor | auto | always",
        stored: config(mode),
    },
    Ports => ports: PortSet {
        default: "80,443",
        range: None,
        hint: "comma-separated ports and ranges, e.g. 80,443,8000-8080",
        flag: "Protected ports",
        about: "e.g. 80,443,8000-8080 (rewrites the PORTS bitmap)",
        stored: ports_map,
    },
    SynRateOn => syn_rate_on: u32 {
        default: "1000",
        range: Some((1, MAX_RATE)),
        hint: "SYN/s above which auto mode engages",
        flag: "Auto mode engages above this many SYN/s",
        about: "auto mode engages above this many SYN/s (1..1e9)",
        stored: config(syn_rate_on),
    },
    SynRateOff => syn_rate_off: u32 {
        default: "500",
        range: Some((0, MAX_RATE)),
        hint: "SYN/s below which auto mode disengages",
        flag: "Auto mode disengages below this many SYN/s",
        about: "... and disengages below this many (0..syn_rate_on)",
        stored: config(syn_rate_off),
    },
    // A forged-ACK flood never raises the SYN rate; passed to the kernel, each forged ACK
    // gets an RST toward its spoofed source. Stale ACKs of legit closed flows stay far
    // below 1000/s.
    AckRateOn => ack_rate_on: u32 {
        default: "1000",
        range: Some((1, MAX_RATE)),
        hint: "forged ACK/s above which auto mode engages",
        flag: "Auto mode also engages above this many forged ACK/s",
        about: "auto mode also engages above this many forged ACK/s (1..1e9)",
        stored: config(ack_rate_on),
    },
    AckRateOff => ack_rate_off: u32 {
        default: "500",
        range: Some((0, MAX_RATE)),
        hint: "forged ACK/s below which (and SYNs below syn_rate_off) auto mode disengages",
        flag: "Auto mode disengages when forged ACK/s are below this (and SYN/s below theirs)",
        about: "... and disengages only below this and syn_rate_off (0..ack_rate_on)",
        stored: config(ack_rate_off),
    },
    SrcSynRate => src_syn_rate: u32 {
        default: "0",
        range: Some((0, MAX_RATE)),
        hint: "SYN/s per source, 0 = no per-source limit",
        flag: "Per-source SYN/s, 0 = no limit",
        about: "per-source SYN/s, 0 = no limit",
        stored: config(src_syn_rate),
    },
    SrcSynBurst => src_syn_burst: u32 {
        default: "0",
        range: Some((0, MAX_RATE)),
        hint: "SYNs per source bucket, 0 = one second's worth",
        flag: "Per-source bucket depth, 0 = one second's worth",
        about: "per-source bucket depth, 0 = one second's worth",
        stored: config(src_syn_burst),
    },
    // /64 is one host's (or one LAN's) worth of IPv6 addresses; /48 is a whole site's, for
    // attackers that rotate through a larger allocation.
    SrcPrefix6 => src_prefix6: u8 {
        default: "64",
        range: Some((48, 64)),
        hint: "IPv6 prefix length the per-source limit counts as one source",
        flag: "IPv6 prefix length of one per-source limit, 48-64",
        about: "IPv6 prefix of one per-source limit (48..64)",
        stored: config(src_prefix6),
    },
    // 250000/s: every SYN+ACK answers one spoofed SYN at about its size (1:1), so this
    // bounds the reflected traffic one flood can make us send to at most ~240 Mbit/s on the
    // wire (94-byte IPv6 SYN+ACKs, with preamble and gap): a quarter of 1 GbE, 2.4% of
    // 10 GbE. A legitimate burst needs one per new connection, tens of thousands a second
    // on a busy front end. README "SYN+ACK cap".
    SynackRate => synack_rate: u32 {
        default: "250000",
        range: Some((0, MAX_RATE)),
        hint: "SYN+ACK/s machine-wide, 0 = no cap",
        flag: "Machine-wide SYN+ACK/s cap, 0 = none",
        about: "machine-wide SYN+ACK/s cap, 0 = none (stored per CPU, rounded up)",
        stored: per_cpu(synack_rate_per_cpu),
    },
    // RFC 1122/879: every IPv4 host must accept 536; IPv6's minimum MTU 1280 - 60. The
    // advertised MSS is the ingress interface's MTU less 40 (IPv4) or 60 (IPv6) bytes of
    // headers, at most this clamp; the default, the largest legal value, lets the MTU decide.
    AdvMss4 => adv_mss4: u16 {
        default: "65495",
        range: Some((536, 65495)),
        hint: "IPv4 MSS clamp (the MTU - 40 decides below it)",
        flag: "Upper bound on the IPv4 MSS we advertise; below it the interface MTU - 40 decides",
        about: "clamp on the MSS advertised over IPv4, which is MTU - 40 below it (536..65495)",
        stored: config(adv_mss4),
    },
    AdvMss6 => adv_mss6: u16 {
        default: "65475",
        range: Some((1220, 65475)),
        hint: "IPv6 MSS clamp (the MTU - 60 decides below it)",
        flag: "Upper bound on the IPv6 MSS we advertise; below it the interface MTU - 60 decides",
        about: "clamp on the MSS advertised over IPv6, which is MTU - 60 below it (1220..65475)",
        stored: config(adv_mss6),
    },
    SynackWindow => synack_window: u16 {
        default: "65535",
        range: Some((1, 65535)),
        hint: "receive window of our SYN+ACK, never 0",
        flag: "SYN+ACK receive window",
        about: "SYN+ACK receive window (1..65535)",
        stored: config(synack_window),
    },
    Ttl => ttl: u8 {
        default: "64",
        range: Some((1, 255)),
        hint: "IPv4 TTL / IPv6 hop limit of our SYN+ACK",
        flag: "SYN+ACK TTL / hop limit",
        about: "TTL / hop limit of SYN+ACKs (1..255)",
        stored: config(ttl),
    },
    Ecn => ecn: bool {
        default: "on",
        range: None,
        hint: "on or off",
        flag: "Accept ECN setup: on or off",
        about: "on | off",
        stored: config(ecn),
    },
    // RFC 7323: a shift above 14 is invalid.
    Wscale => wscale: u8 {
        default: "7",
        range: Some((0, 14)),
        hint: "window scale shift we advertise",
        flag: "Window scale we advertise, 0-14",
        about: "window scale (0..14); applies from the next key rotation, so cookies\n\
                already in flight keep the one they were minted with",
        stored: config(wscale),
    },
    // 1 in 1000: a 1 Mpps flood of one reason makes 1000 events/s per CPU, tens of kB/s a
    // reader keeps up with, and the 256 kB ring holds 4 s of them; only the sampled drops
    // pay for the ring buffer write. 1 shows every drop (for tests and slow floods).
    EventSample => event_sample: u32 {
        default: "1000",
        range: Some((0, 0xffff_ffff)),
        hint: "1 in how many drops of each reason `synguard events` sees, 0 = none",
        flag: "Send 1 in this many drops of each reason (per CPU) to `synguard events`, 0 = off",
        about: "1 in N drops of each reason (per CPU) to `synguard events`, 0 = off",
        stored: config(event_sample),
    },
    // 0x5347 ("SG") in the low 16 bits; see the README's netfilter section.
    HandoffMark => handoff_mark: u32 {
        default: "21319",
        range: Some((0, 0xffff_ffff)),
        hint: "skb mark bits TC sets on handed-off cookie ACKs, 0 = none",
        flag: "skb mark (within handoff_mask) TC sets on every cookie ACK it hands off, so \
               netfilter can accept it; 0 = off (0x... accepted)",
        about: "skb mark TC sets (within handoff_mask) on handed-off cookie ACKs, 0 = off;\n\
                accept them before conntrack: meta mark & MASK == MARK accept",
        stored: config(handoff_mark),
    },
    HandoffMask => handoff_mask: u32 {
        default: "65535",
        range: Some((1, 0xffff_ffff)),
        hint: "the skb mark bits handoff_mark owns",
        flag: "skb mark bits handoff_mark owns; the others are kept (0x... accepted)",
        about: "skb mark bits handoff_mark owns (the others are kept)",
        stored: config(handoff_mask),
    },
}

/// What error messages say about a setting.
struct Meta {
    name: &'static str,
    /// Inclusive range of a numeric setting.
    range: Option<(u64, u64)>,
    hint: &'static str,
}

/// A setting's value type: how it is parsed, shown and reported.
trait Kind: Sized + Clone {
    fn parse(value: &str, meta: &Meta) -> Result<Self, String>;
    fn show(&self) -> String;
    fn json(&self) -> serde_json::Value;

    /// A TOML value: strings, numbers and booleans go through [`Kind::parse`].
    fn from_toml(key: &str, v: &toml::Value, meta: &Meta) -> Result<Self, String> {
        Self::parse(&toml_text(key, v)?, meta)
    }
}

/// A TOML scalar as the text a flag would give.
fn toml_text(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "{key}: expected a string or a number, got a {}",
            other.type_str()
        )),
    }
}

macro_rules! numeric_kind {
    ($($t:ty),*) => {$(
        impl Kind for $t {
            fn parse(value: &str, meta: &Meta) -> Result<Self, String> {
                let (lo, hi) = meta.range.unwrap_or((0, <$t>::MAX as u64));
                let v = value.trim();
                let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(hex) => i128::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                let n: i128 = n.map_err(|_| {
                    format!(
                        "{} must be a whole number between {lo} and {hi} ({}), got {value:?}",
                        meta.name, meta.hint
                    )
                })?;
                if n < i128::from(lo) || n > i128::from(hi) {
                    return Err(format!(
                        "{} must be between {lo} and {hi} ({}), got {n}",
                        meta.name, meta.hint
                    ));
                }
                <$t>::try_from(n).map_err(|_| {
                    format!("{} must be at most {}, got {n}", meta.name, <$t>::MAX)
                })
            }
            fn show(&self) -> String {
                self.to_string()
            }
            fn json(&self) -> serde_json::Value {
                (*self).into()
            }
        }
    )*};
}
numeric_kind!(u8, u16, u32);

impl Kind for Mode {
    fn parse(value: &str, _: &Meta) -> Result<Self, String> {
        let s = value.trim();
        Mode::from_name(s.trim())
            .ok_or_else(|| format!("mode must be one of monitor, auto, always; got {s:?}"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn json(&self) -> serde_json::Value {
        self.name().into()
    }
}

impl Kind for bool {
    fn parse(value: &str, meta: &Meta) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(format!(
                "{} must be on or off (also true/false, yes/no, 1/0), got {value:?}",
                meta.name
            )),
        }
    }
    fn show(&self) -> String {
        if *self { "on" } else { "off" }.into()
    }
    fn json(&self) -> serde_json::Value {
        (*self).into()
    }
}

impl Kind for PortSet {
    fn parse(value: &str, meta: &Meta) -> Result<Self, String> {
        ports::parse(value.trim()).map_err(|e| format!("{}: {e}", meta.name))
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn json(&self) -> serde_json::Value {
        self.to_string().into()
    }
    /// A config file may also give `ports = [80, 443]`.
    fn from_toml(key: &str, v: &toml::Value, meta: &Meta) -> Result<Self, String> {
        match v {
            toml::Value::Array(items) => {
                let nums: Option<Vec<i64>> = items.iter().map(toml::Value::as_integer).collect();
                let nums =
                    nums.ok_or_else(|| format!("{}: the array must hold port numbers", meta.name))?;
                ports::from_list(&nums).map_err(|e| format!("{}: {e}", meta.name))
            }
            v => Self::parse(&toml_text(key, v)?, meta),
        }
    }
}

/// How a `CONFIG` field holds a setting's value.
trait Stored<S> {
    fn to_field(self) -> S;
    fn from_field(s: S) -> Self;
}

impl<T> Stored<T> for T {
    fn to_field(self) -> T {
        self
    }
    fn from_field(s: T) -> T {
        s
    }
}

impl Stored<u32> for Mode {
    fn to_field(self) -> u32 {
        self as u32
    }
    fn from_field(s: u32) -> Mode {
        Mode::from_u32(s).unwrap_or(Mode::Monitor)
    }
}

impl Stored<u8> for bool {
    fn to_field(self) -> u8 {
        self as u8
    }
    fn from_field(s: u8) -> bool {
        s != 0
    }
}

impl Key {
    /// Accepts `syn_rate_on` and `syn-rate-on`.
    pub fn from_name(s: &str) -> Result<Key, String> {
        let norm = s.trim().replace('-', "_").to_ascii_lowercase();
        Key::ALL
            .iter()
            .copied()
            .find(|k| k.name() == norm)
            .ok_or_else(|| format!("unknown setting {s:?}; valid settings: {}", key_list()))
    }
}

fn key_list() -> String {
    Key::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The "Settings:" section of `synguard set --help`.
pub fn set_help() -> String {
    let mut out = String::from("Settings:");
    for &k in Key::ALL {
        let about = k.about().replace('\n', &format!("\n{:17}", ""));
        out.push_str(&format!("\n  {:<14} {about}", k.name()));
    }
    out
}

/// A clap value parser for the `run` flag of `key`, so flags, the file and `set` share one
/// set of rules and messages.
fn flag(key: Key) -> impl Fn(&str) -> Result<Setting, String> + Clone + Send + Sync + 'static {
    move |s: &str| key.parse(s)
}

impl Tunables {
    /// Rules between settings; each value is already range-checked by [`Key::parse`].
    pub fn validate(&self) -> Result<(), String> {
        if self.syn_rate_off > self.syn_rate_on {
            return Err(format!(
                "syn_rate_off ({}) must not be above syn_rate_on ({}): auto mode engages above \
                 syn_rate_on and disengages below syn_rate_off",
                self.syn_rate_off, self.syn_rate_on
            ));
        }
        if self.ack_rate_off > self.ack_rate_on {
            return Err(format!(
                "ack_rate_off ({}) must not be above ack_rate_on ({}): auto mode engages above \
                 ack_rate_on and disengages below ack_rate_off",
                self.ack_rate_off, self.ack_rate_on
            ));
        }
        if self.ports.is_empty() {
            return Err("no protected ports".into());
        }
        if self.handoff_mark & !self.handoff_mask != 0 {
            return Err(format!(
                "handoff_mark ({:#x}) has bits outside handoff_mask ({:#x})",
                self.handoff_mark, self.handoff_mask
            ));
        }
        Ok(())
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

/// `synguard set`: parse and validate against the live configuration, then write once.
pub fn set_live(iface: &IfaceName, key: &str, value: &str) -> Result<()> {
    let key = Key::from_name(key).map_err(anyhow::Error::msg)?;
    let setting = key.parse(value).map_err(anyhow::Error::msg)?;
    let p = PinnedMaps::open(iface)?;
    let ncpus = ncpus()?;
    let mut cfg_map = p.config_map()?;
    let cur = cfg_map.get(&0, 0)?;
    let mut t = Tunables::from_config(&cur, p.ports()?, ncpus);
    t.apply(&setting);
    t.validate()
        .map_err(|e| anyhow::anyhow!("refusing {setting}: {e}"))?;
    if let Setting::Ports(ports) = &setting {
        pinned_maps::write_ports(&mut p.ports_map()?, ports)?;
    } else {
        // Only this setting's field changes: re-deriving the others could round the stored
        // per-CPU SYN+ACK rate.
        let mut new = cur;
        setting.store(&mut new, ncpus);
        cfg_map.set(0, &new, 0)?;
    }
    println!("{iface}: {setting}");
    match setting {
        Setting::Wscale(_) => println!(
            "note: wscale applies to keys minted from the next rotation on{}; cookies in flight \
             keep the wscale they were minted with",
            RunState::load(iface)
                .map(|r| format!(" (every {}s)", r.rotation_secs))
                .unwrap_or_default()
        ),
        Setting::SynackRate(rate) => println!(
            "stored as {} SYN+ACK/s per CPU on {ncpus} CPUs",
            per_cpu(rate, ncpus)
        ),
        _ => {}
    }
    Ok(())
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
    pub iface: Option<IfaceName>,
    pub metrics: Option<Option<SocketAddr>>,
    pub xdp_mode: Option<XdpRequest>,
    pub handoff: Option<crate::handoff::Request>,
    pub xdp_attach: Option<crate::xdp_dispatcher::XdpAttach>,
    pub xdp_priority: Option<u32>,
    pub key_rotation: Option<Duration>,
    pub key_file: Option<std::path::PathBuf>,
    pub keep_attached: Option<bool>,
    pub settings: Vec<Setting>,
}

/// The `run` options a config file may set besides the live settings.
const FILE_ONLY_KEYS: &[&str] = &[
    "iface",
    "metrics",
    "xdp_mode",
    "handoff",
    "xdp_attach",
    "xdp_priority",
    "key_rotation",
    "key_file",
    "keep_attached",
];

impl FileConfig {
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<FileConfig> {
        use anyhow::Context;
        let table: toml::Table = toml::from_str(text).context("invalid TOML")?;
        FileConfig::from_table(&table, &[])
    }

    /// The `run` options and settings of a parsed file. `other_keys` are the keys another
    /// module has taken out of `table` (named in the unknown-key message).
    pub fn from_table(table: &toml::Table, other_keys: &[&str]) -> Result<FileConfig> {
        let mut fc = FileConfig::default();
        for (k, v) in table {
            let key = k.replace('-', "_");
            let as_str = |v: &toml::Value| toml_text(k, v).map_err(anyhow::Error::msg);
            match key.as_str() {
                "iface" => match v {
                    toml::Value::String(s) => {
                        fc.iface = Some(s.parse().map_err(|e| anyhow::anyhow!("iface: {e}"))?)
                    }
                    _ => bail!("iface: expected a string"),
                },
                "metrics" => {
                    fc.metrics = Some(parse_metrics(&as_str(v)?).map_err(anyhow::Error::msg)?)
                }
                "xdp_mode" => fc.xdp_mode = Some(as_str(v)?.parse().map_err(anyhow::Error::msg)?),
                "handoff" => fc.handoff = Some(as_str(v)?.parse().map_err(anyhow::Error::msg)?),
                "xdp_attach" => {
                    fc.xdp_attach = Some(as_str(v)?.parse().map_err(anyhow::Error::msg)?)
                }
                "xdp_priority" => {
                    fc.xdp_priority = Some(
                        crate::xdp_dispatcher::parse_priority(&as_str(v)?)
                            .map_err(anyhow::Error::msg)?,
                    )
                }
                "key_rotation" => {
                    fc.key_rotation = Some(parse_rotation(&as_str(v)?).map_err(anyhow::Error::msg)?)
                }
                "key_file" => match v {
                    toml::Value::String(s) if !s.is_empty() => fc.key_file = Some(s.into()),
                    _ => bail!("key_file: expected a path (a string)"),
                },
                "keep_attached" => match v {
                    toml::Value::Boolean(b) => fc.keep_attached = Some(*b),
                    _ => bail!("keep_attached: expected true or false"),
                },
                _ => {
                    let Ok(setting) = Key::from_name(&key) else {
                        let others: String = other_keys.iter().map(|k| format!("{k}, ")).collect();
                        bail!(
                            "unknown key {k:?}; valid keys: {others}{}, {}",
                            FILE_ONLY_KEYS.join(", "),
                            key_list()
                        );
                    };
                    fc.settings
                        .push(setting.parse_toml(k, v).map_err(anyhow::Error::msg)?);
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
        assert_eq!(
            Key::HandoffMark.parse("0x5347").unwrap(),
            Key::HandoffMark.parse("21319").unwrap()
        );
        assert!(err("handoff_mask", "0x").contains("whole number"));
        let mut t = Tunables::default();
        t.apply(&Key::HandoffMark.parse("0x10000").unwrap());
        assert!(t.validate().unwrap_err().contains("outside handoff_mask"));
        t.apply(&Key::HandoffMask.parse("0xffff0000").unwrap());
        assert_eq!(t.validate(), Ok(()));
        assert!(err("ttl", "0").contains("between 1 and 255"));
        assert!(err("ttl", "256").contains("between 1 and 255"));
        assert!(err("syn_rate_on", "fast").contains("whole number"));
        assert!(err("syn_rate_on", "0").contains("between 1"));
        assert!(err("mode", "sometimes").contains("monitor, auto, always"));
        assert!(err("ecn", "maybe").contains("on or off"));
        assert!(err("ports", "0").contains("expected 1-65535"));
        let s = Key::Ttl.parse("32").unwrap();
        assert_eq!(s, Setting::Ttl(32));
        assert_eq!(s.to_string(), "ttl = 32");
        assert_eq!(Key::Ecn.parse("off").unwrap(), Setting::Ecn(false));
        assert_eq!(Key::Ecn.parse("off").unwrap().to_string(), "ecn = off");
        assert_eq!(
            Key::Mode.parse("Always").unwrap(),
            Setting::Mode(Mode::Always)
        );
    }

    /// The table's promises, checked row by row.
    #[test]
    fn every_row_is_complete() {
        let defaults = Tunables::default();
        let json = serde_json::to_value(&defaults).unwrap();
        let help = set_help();
        let flags: Vec<String> = {
            use clap::CommandFactory;
            crate::cli::Cli::command()
                .find_subcommand("run")
                .unwrap()
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect()
        };
        assert_eq!(json.as_object().unwrap().len(), Key::ALL.len());
        for &k in Key::ALL {
            let name = k.name();
            // The default parses, and is what Tunables::default holds.
            let s = k
                .parse(k.default_text())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.key(), k);
            let mut t = defaults.clone();
            t.apply(&s);
            assert_eq!(t, defaults, "{name}");
            assert_eq!(Key::from_name(name), Ok(k));
            assert_eq!(Key::from_name(&name.replace('_', "-")), Ok(k));
            // set --help, the run flags, the status JSON and the TOML file know it.
            assert!(help.contains(&format!("\n  {name:<14} ")), "{name}: {help}");
            assert!(flags.contains(&name.replace('_', "-")), "{name}: {flags:?}");
            assert!(json.get(name).is_some(), "{name}: {json}");
            let fc = FileConfig::parse(&format!("{name} = \"{}\"", k.default_text())).unwrap();
            assert_eq!(fc.settings, vec![s.clone()], "{name}");
            // Both ends of a range parse; one past them does not.
            if let Some((lo, hi)) = k.meta().range {
                assert!(k.parse(&lo.to_string()).is_ok(), "{name} {lo}");
                assert!(k.parse(&hi.to_string()).is_ok(), "{name} {hi}");
                assert!(k.parse(&(hi + 1).to_string()).is_err(), "{name}");
                if lo > 0 {
                    assert!(k.parse(&(lo - 1).to_string()).is_err(), "{name}");
                }
            }
        }
    }

    #[test]
    fn every_row_round_trips_through_config() {
        // A value away from the default for every row, so a row that forgot to store or
        // load its field shows.
        let other = |k: Key| -> String {
            match (k, k.meta().range) {
                // A numeric row: whichever end of its range is not the default.
                (_, Some((lo, hi))) => {
                    let hi = hi.to_string();
                    if k.default_text() == hi {
                        lo.to_string()
                    } else {
                        hi
                    }
                }
                (Key::Mode, None) => "monitor".into(),
                (Key::Ports, None) => "22,8000-8001".into(),
                (Key::Ecn, None) => "off".into(),
                (k, None) => panic!("give {} a non-default value here", k.name()),
            }
        };
        let mut t = Tunables::default();
        for &k in Key::ALL {
            let s = k.parse(&other(k)).unwrap();
            assert_ne!(s, k.parse(k.default_text()).unwrap(), "{}", k.name());
            t.apply(&s);
            let c = t.to_config(2);
            assert_eq!(
                Tunables::from_config(&c, t.ports.clone(), 2),
                t,
                "{}",
                k.name()
            );
            // Storing the one setting into the defaults changes CONFIG unless it lives in PORTS.
            let mut one = Config::DEFAULT;
            s.store(&mut one, 2);
            assert_eq!(one == Config::DEFAULT, k == Key::Ports, "{}", k.name());
        }
    }

    #[test]
    fn the_table_defaults_are_config_default() {
        assert_eq!(Tunables::default().to_config(1), Config::DEFAULT);
        let t = Tunables::default();
        assert_eq!(t.mode, Mode::Auto);
        assert_eq!(t.ports.to_string(), "80,443");
        assert_eq!(t.wscale, 7);
    }

    #[test]
    fn set_help_lists_every_setting_in_order() {
        let help = set_help();
        assert!(help.starts_with("Settings:\n  mode           monitor | auto | always\n"));
        assert!(help.contains(
            "  wscale         window scale (0..14); applies from the next key rotation, so cookies\n                 already in flight keep the one they were minted with"
        ), "{help}");
    }

    #[test]
    fn status_json_fields() {
        let v = serde_json::to_value(Tunables::default()).unwrap();
        assert_eq!(v["mode"], "auto");
        assert_eq!(v["ports"], "80,443");
        assert_eq!(v["ecn"], true);
        assert_eq!(v["ttl"], 64);
        assert_eq!(v["synack_rate"], 250_000);
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
        t.apply(&Key::AckRateOff.parse("1001").unwrap());
        let e = t.validate().unwrap_err();
        assert!(
            e.contains("ack_rate_off (1001) must not be above ack_rate_on (1000)"),
            "{e}"
        );
        t.apply(&Key::AckRateOn.parse("1001").unwrap());
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
    fn metrics_addresses() {
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
        assert_eq!(fc.iface.as_ref().map(IfaceName::as_str), Some("eth0"));
        assert_eq!(
            fc.xdp_mode,
            Some(XdpRequest::Exactly(crate::iface::XdpMode::Generic))
        );
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
            ("ports = [\"80\"]", "must hold port numbers"),
            ("mode = \"fast\"", "monitor, auto, always"),
            ("syn_rate_on = [1]", "expected a string or a number"),
            ("iface = 3", "iface: expected a string"),
            ("iface = \"..\"", "invalid interface name"),
            ("iface = \"a/b\"", "invalid interface name"),
            ("key_rotation = \"0s\"", "between 1s and 24h"),
            ("xdp_mode = \"fast\"", "auto, native, generic"),
            ("this is not toml", "invalid TOML"),
        ] {
            let e = format!("{:#}", FileConfig::parse(bad).unwrap_err());
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }
}
