//! Command-line interface. Every value goes through the parsers in `settings`, so a flag,
//! a config-file entry and `synguard set` accept and reject exactly the same things.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::{
    config::ServiceConfig,
    daemon::RunOpts,
    iface::{IfaceName, XdpRequest},
    ports::{self, PortSet},
    settings::{self, FileConfig, SettingFlags, Tunables},
    xdp_dispatcher::{self, XdpAttach},
};

#[derive(Parser, Debug)]
#[command(name = "synguard", version, about = "XDP SYN-cookie flood mitigator")]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    /// error, warn, info, debug or trace (RUST_LOG, if set, refines it) [default: info].
    #[arg(long, global = true, value_parser = parse_log_level)]
    pub log_level: Option<log::LevelFilter>,
    /// text, or json (one object a line). Under journald (JOURNAL_STREAM) text lines carry
    /// the syslog priority instead of a timestamp.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The exit codes, in `--help` and the README.
pub const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 usage, 3 not running (no synguard \
                              instance on the interface), 4 check failed, 5 permission denied \
                              (run as root)";

fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected off, error, warn, info, debug or trace, got {s:?}"))
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Load, attach and run until SIGINT/SIGTERM, rotating the cookie key and driving auto
    /// mode. Takes over the pinned programs of a previous run without a detach gap.
    ///
    /// Settings come from the defaults, then --config, then flags, and are written to the
    /// maps at start: a restart replaces values changed live with `synguard set`.
    Run(Box<RunArgs>),
    /// Change a setting live, through the pinned CONFIG/PORTS maps.
    #[command(after_help = settings::set_help())]
    Set {
        #[arg(long)]
        iface: IfaceName,
        /// Setting name (see below).
        key: String,
        value: String,
    },
    /// Sources that bypass every check (ALLOW4/ALLOW6).
    Allow {
        #[command(subcommand)]
        op: ListOp,
    },
    /// Sources whose packets to protected ports are dropped (DENY4/DENY6).
    Deny {
        #[command(subcommand)]
        op: ListOp,
    },
    /// Per-reason packet totals and rates, plus socket states on the protected ports.
    Stats {
        /// The instance's interface; without it, the host's only instance.
        #[arg(long)]
        iface: Option<IfaceName>,
        /// One JSON object per sample.
        #[arg(long)]
        json: bool,
        /// Print again every DURATION (e.g. 1s), with rates over that interval.
        #[arg(long, value_parser = parse_duration)]
        watch: Option<Duration>,
        /// How long a single (non-watch) sample measures rates over; 0s for totals only.
        #[arg(long, default_value = "1s", value_parser = parse_duration_or_zero)]
        sample: Duration,
    },
    /// Stream the sampled drops (1 in `event_sample` of each reason, per CPU), one line
    /// each, like tcpdump: time, source, port, flags, VLANs, reason. One reader at a time.
    Events {
        /// The instance's interface; without it, the host's only instance.
        #[arg(long)]
        iface: Option<IfaceName>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        /// Only this drop reason (e.g. flag_syn_fin, rate_limited).
        #[arg(long, value_parser = crate::events::parse_reason)]
        reason: Option<synguard_common::maps::Counter>,
        /// Exit after this many events.
        #[arg(short = 'c', long)]
        count: Option<u64>,
    },
    /// The sources dropped or rate-limited the most (SRC_DROPS and SRC_RATE), refreshed
    /// like top.
    Top {
        /// The instance's interface; without it, the host's only instance.
        #[arg(long)]
        iface: Option<IfaceName>,
        /// One JSON object per refresh.
        #[arg(long)]
        json: bool,
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Sources to show.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        /// Refresh every DURATION.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
    /// Attached or not, XDP mode, key epoch and age, and every setting.
    Status {
        /// The instance to show [default: every instance with a pin directory].
        #[arg(long)]
        iface: Option<IfaceName>,
        #[arg(long)]
        json: bool,
    },
    /// Check the kernel, BTF, the kfunc, sysctls and listeners.
    Check {
        #[arg(long)]
        iface: Option<IfaceName>,
        /// Ports that need a listener (default: those of the instance on --iface, else 80,443).
        #[arg(long, value_parser = ports::parse)]
        ports: Option<PortSet>,
        /// Only validate this config file as `run` would read it (like `nginx -t`): exit 0
        /// if `run --config FILE` would accept it, 4 with the reason if not.
        #[arg(long, conflicts_with_all = ["iface", "ports"])]
        config: Option<PathBuf>,
        /// One JSON object: each check's name, result (ok, warn, fail) and detail, and the
        /// number that failed. The exit code is the same as without it.
        #[arg(long, conflicts_with = "config")]
        json: bool,
    },
    /// Detach the programs and remove the pins, keys and counters.
    Detach {
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        iface: Option<IfaceName>,
        /// Every instance that has pins (what removing the package does).
        #[arg(long)]
        all: bool,
        /// Detach even though a daemon is running on the interface.
        #[arg(long)]
        force: bool,
    },
    /// Write the man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum ListOp {
    /// Add one or more CIDRs (or bare addresses).
    Add {
        #[arg(long)]
        iface: IfaceName,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    /// Remove one or more CIDRs; nothing is removed if one is not in the list.
    Del {
        #[arg(long)]
        iface: IfaceName,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    /// List the entries, IPv4 first.
    List {
        #[arg(long)]
        iface: IfaceName,
        #[arg(long)]
        json: bool,
    },
}

/// `--metrics` value: an address, or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsArg(pub Option<std::net::SocketAddr>);

fn parse_metrics(s: &str) -> Result<MetricsArg, String> {
    settings::parse_metrics(s).map(MetricsArg)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(d)
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 1s or 500ms, got {s:?}: {e}"))
}

fn parse_rotation(s: &str) -> Result<Duration, String> {
    settings::parse_rotation(s)
}

fn parse_xdp(s: &str) -> Result<XdpRequest, String> {
    s.parse()
}

fn parse_xdp_attach(s: &str) -> Result<XdpAttach, String> {
    s.parse()
}

#[derive(Args, Clone, Debug, Default)]
pub struct RunArgs {
    /// Interface to protect; repeat it for several (or `iface`/`interfaces` in the config
    /// file). One daemon serves them all with one key ring, so a SYN answered on one may
    /// have its ACK arrive on another.
    #[arg(long)]
    pub iface: Vec<IfaceName>,
    /// TOML file with any of these settings, `allow`/`deny` lists and `interfaces`; flags
    /// override it. Unknown keys are errors. SIGHUP reloads it. [default:
    /// /etc/synguard/synguard.toml, if it exists]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Prometheus endpoint, or off [default: 127.0.0.1:9531].
    #[arg(long, value_parser = parse_metrics)]
    pub metrics: Option<MetricsArg>,
    /// auto, native or generic [default: auto].
    #[arg(long, value_parser = parse_xdp)]
    pub xdp_mode: Option<XdpRequest>,
    /// How a handshake completes: auto (probe the kernel), kfunc (synguard's cookie, handed
    /// to the listener by TC with bpf_sk_assign_tcp_reqsk, Linux 6.9+), kernel-cookie (the
    /// kernel's own cookie in XDP, and the kernel completes the handshake, Linux 6.0+; set
    /// net.ipv4.tcp_syncookies=2) or filter (XDP only filters; the kernel's own syncookies
    /// answer SYNs) [default: auto].
    #[arg(long, value_parser = crate::handoff::Request::from_str_arg)]
    pub handoff: Option<crate::handoff::Request>,
    /// How to take the XDP hook: auto (join a libxdp-protocol dispatcher already there, else
    /// a single program), dispatcher (join or create one that xdp-filter and other libxdp
    /// users can join), or link (a single program) [default: auto].
    #[arg(long, value_parser = parse_xdp_attach)]
    pub xdp_attach: Option<XdpAttach>,
    /// Run priority in a dispatcher, 0-1000, lower runs first [default: 5, ahead of
    /// xdp-filter's 10].
    #[arg(long, value_parser = xdp_dispatcher::parse_priority)]
    pub xdp_priority: Option<u32>,
    /// Key rotation period, 1s-24h; a cookie stays valid at least this long [default: 60s].
    #[arg(long, value_parser = parse_rotation)]
    pub key_rotation: Option<Duration>,
    /// Shared cookie secret for a fleet behind ECMP/anycast: a file of 64 hex digits (32
    /// bytes, e.g. `openssl rand -hex 32`), optionally one trailing newline, readable by its
    /// owner only (refused otherwise). Each epoch's key is HKDF-SHA256 of it and the epoch
    /// (unix time / key rotation), so hosts sharing the file and NTP agree; tolerates clock
    /// skew up to a quarter of the rotation. Its directory is watched: a new secret takes
    /// over at the next epoch not yet installed [default: a random key per host].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingFlags,
    /// On SIGINT/SIGTERM, exit but leave the programs attached and the pins (keys, counters)
    /// in place, for a restart or upgrade without a gap. `synguard detach` removes them.
    #[arg(long)]
    pub keep_attached: bool,
    /// Set the sysctls the cookie handoff needs (tcp_syncookies, tcp_sack, tcp_timestamps,
    /// tcp_window_scaling) in this network namespace instead of refusing to start, and log
    /// each change.
    #[arg(long)]
    pub fix_sysctls: bool,
}

impl RunArgs {
    /// Defaults, then the config file, then the flags; validated as a whole.
    pub fn resolve(&self) -> Result<RunOpts> {
        self.resolve_service(ServiceConfig::load(self.config.as_deref())?)
    }

    pub fn resolve_service(&self, sc: ServiceConfig) -> Result<RunOpts> {
        let interfaces = sc.interfaces()?;
        let mut file = sc.file;
        file.iface = None;
        let mut o = self.resolve_from(file, interfaces.unwrap_or_default())?;
        o.config_path = sc.path;
        o.allow = sc.allow;
        o.deny = sc.deny;
        Ok(o)
    }

    #[cfg(test)]
    pub fn resolve_with(&self, file: FileConfig) -> Result<RunOpts> {
        let ifaces = file.iface.iter().cloned().collect();
        self.resolve_from(file, ifaces)
    }

    /// Resolves with the file's interfaces given apart (`interfaces =
    /// [...]`); the `--iface` flags replace them.
    fn resolve_from(&self, file: FileConfig, file_ifaces: Vec<IfaceName>) -> Result<RunOpts> {
        let mut t = Tunables::default();
        for s in file.settings.iter().chain(self.settings.iter()) {
            t.apply(s);
        }
        t.validate().map_err(anyhow::Error::msg)?;
        let ifaces = if self.iface.is_empty() {
            file_ifaces
        } else {
            self.iface.clone()
        };
        for (i, n) in ifaces.iter().enumerate() {
            if ifaces[..i].contains(n) {
                anyhow::bail!("--iface {n} is given twice");
            }
        }
        let (iface, also) = ifaces.split_first().context(
            "--iface is required (or `iface = \"...\"` / `interfaces = [...]` in the config file)",
        )?;
        let (iface, also) = (iface.clone(), also.to_vec());
        let metrics = match (self.metrics, file.metrics) {
            (Some(m), _) => m.0,
            (None, Some(m)) => m,
            (None, None) => {
                settings::parse_metrics(settings::DEFAULT_METRICS).map_err(anyhow::Error::msg)?
            }
        };
        Ok(RunOpts {
            iface,
            also,
            tunables: t,
            metrics,
            xdp_mode: self.xdp_mode.or(file.xdp_mode).unwrap_or(XdpRequest::Auto),
            handoff: self.handoff.or(file.handoff).unwrap_or_default(),
            xdp_attach: self.xdp_attach.or(file.xdp_attach).unwrap_or_default(),
            xdp_priority: self
                .xdp_priority
                .or(file.xdp_priority)
                .unwrap_or(xdp_dispatcher::DEFAULT_PRIORITY),
            rotation: self
                .key_rotation
                .or(file.key_rotation)
                .unwrap_or(settings::DEFAULT_ROTATION),
            key_file: self.key_file.clone().or(file.key_file),
            keep_attached: self.keep_attached || file.keep_attached.unwrap_or(false),
            fix_sysctls: self.fix_sysctls,
            config_path: None,
            allow: None,
            deny: None,
            flag_settings: self.settings.iter().map(|s| s.key()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use synguard_common::maps::Mode;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("synguard").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().cmd {
            Cmd::Run(r) => *r,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let o = run_args(&["run", "--iface", "eth0"]).resolve().unwrap();
        assert_eq!(o.iface.as_str(), "eth0");
        assert_eq!(o.tunables, Tunables::default());
        assert_eq!(o.metrics.unwrap().to_string(), "127.0.0.1:9531");
        assert_eq!(o.xdp_mode, XdpRequest::Auto);
        assert_eq!(o.rotation, Duration::from_secs(60));
        assert!(!o.keep_attached);
    }

    #[test]
    fn one_daemon_takes_several_interfaces_from_flags_or_the_file() {
        let o = run_args(&["run", "--iface", "eth0", "--iface", "eth1"])
            .resolve()
            .unwrap();
        assert_eq!((o.iface.as_str(), o.also.len()), ("eth0", 1));
        assert_eq!(o.also[0].as_str(), "eth1");
        let e = run_args(&["run", "--iface", "eth0", "--iface", "eth0"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let sc = ServiceConfig::parse("interfaces = [\"a\", \"b\", \"c\"]").unwrap();
        let o = run_args(&["run"]).resolve_service(sc.clone()).unwrap();
        let all: Vec<&str> = o.ifaces().map(IfaceName::as_str).collect();
        assert_eq!(all, ["a", "b", "c"]);
        // Flags replace the file's list, as for every other setting.
        let o = run_args(&["run", "--iface", "z"])
            .resolve_service(sc)
            .unwrap();
        assert_eq!((o.iface.as_str(), o.also.len()), ("z", 0));
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::parse(
            "iface = \"from-file\"\nmode = \"monitor\"\nttl = 10\nports = [22]\nmetrics = \"off\"\nkey_rotation = \"10s\"",
        )
        .unwrap();
        let a = run_args(&[
            "run",
            "--ttl",
            "20",
            "--mode",
            "always",
            "--key-rotation",
            "2m",
        ]);
        let o = a.resolve_with(file).unwrap();
        assert_eq!(o.iface.as_str(), "from-file");
        assert_eq!(o.tunables.mode, Mode::Always);
        assert_eq!(o.tunables.ttl, 20);
        assert_eq!(o.tunables.ports.to_string(), "22");
        assert_eq!(o.metrics, None);
        assert_eq!(o.rotation, Duration::from_secs(120));
    }

    #[test]
    fn cross_field_errors_across_sources() {
        let file = FileConfig::parse("syn_rate_on = 100").unwrap();
        let e = run_args(&["run", "--iface", "x"])
            .resolve_with(file)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("syn_rate_off (500) must not be above syn_rate_on (100)"),
            "{e}"
        );
        let e = run_args(&["run"])
            .resolve_with(FileConfig::default())
            .unwrap_err();
        assert!(e.to_string().contains("--iface is required"));
    }

    #[test]
    fn bad_flags_are_rejected_by_clap_with_our_message() {
        for (args, needle) in [
            (
                vec!["run", "--iface", "x", "--wscale", "15"],
                "between 0 and 14",
            ),
            (
                vec!["run", "--iface", "x", "--adv-mss4", "500"],
                "between 536 and 65495",
            ),
            (
                vec!["run", "--iface", "x", "--ports", "0"],
                "expected 1-65535",
            ),
            (
                vec!["run", "--iface", "x", "--mode", "on"],
                "monitor, auto, always",
            ),
            (
                vec!["run", "--iface", "x", "--xdp-mode", "fast"],
                "auto, native, generic",
            ),
            (
                vec!["run", "--iface", "x", "--metrics", "nowhere"],
                "address:port",
            ),
            (
                vec!["run", "--iface", "x", "--key-rotation", "0s"],
                "between 1s and 24h",
            ),
            (
                vec!["run", "--iface", "x", "--ttl", "0"],
                "between 1 and 255",
            ),
            (
                vec!["stats", "--iface", "x", "--watch", "0s"],
                "longer than 0s",
            ),
            (vec!["check", "--ports", "99999"], "expected 1-65535"),
            (vec!["detach", "--iface", ".."], "invalid interface name"),
            (vec!["detach", "--iface", "."], "invalid interface name"),
            (vec!["status", "--iface", "a/b"], "invalid interface name"),
            (
                vec!["set", "--iface", "", "ttl", "3"],
                "invalid interface name",
            ),
            (vec!["run", "--iface", "eth0:1"], "invalid interface name"),
            (
                vec!["check", "--iface", "a234567890123456"],
                "invalid interface name",
            ),
            (
                vec!["allow", "list", "--iface", "../../tmp"],
                "invalid interface name",
            ),
            (vec!["allow", "add", "--iface", "x"], "required"),
            (
                vec!["events", "--iface", "x", "--reason", "nope"],
                "unknown reason \"nope\"; drop reasons: ",
            ),
            (
                vec!["events", "--iface", "x", "--reason", "syn_passed"],
                "not a drop reason",
            ),
        ] {
            let e = parse(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn subcommands_parse() {
        assert!(matches!(
            parse(&["deny", "add", "--iface", "x", "10.0.0.0/8", "2001:db8::/32"]).unwrap().cmd,
            Cmd::Deny { op: ListOp::Add { ref cidrs, .. } } if cidrs.len() == 2
        ));
        assert!(matches!(
            parse(&["set", "--iface", "x", "ttl", "3"]).unwrap().cmd,
            Cmd::Set { .. }
        ));
        assert!(matches!(
            parse(&["stats", "--iface", "x", "--watch", "1s", "--json"]).unwrap().cmd,
            Cmd::Stats { watch: Some(d), json: true, .. } if d == Duration::from_secs(1)
        ));
    }
}
