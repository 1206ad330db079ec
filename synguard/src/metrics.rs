//! The Prometheus endpoint of `synguard run`: OpenMetrics text on GET /metrics, served by a
//! tiny HTTP/1.x responder on tokio. Every value is read from the pinned maps at scrape
//! time, so it is never staler than the scrape.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge, histogram::Histogram},
    registry::Registry,
};
use synguard_common::maps::{Class, Counter, Mode, SrcKey, TokenBucket, names};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    attach,
    iface::XdpMode,
    listeners,
    pinned_maps::{PinnedMaps, Snapshot},
    state_dir,
};

/// Values only the daemon knows (not in any map).
#[derive(Debug)]
pub struct Live {
    syn_rate_bits: AtomicU64,
    engaged_transitions: AtomicU64,
    key_rotated_unix: AtomicU64,
    /// Unix milliseconds of the event loop's last tick, for /healthz.
    loop_beat_ms: AtomicU64,
    /// The interfaces the daemon serves now (a reload may add or remove some).
    served: Mutex<Vec<Served>>,
    /// How late each auto-mode sample tick ran after its scheduled instant: what a blocked
    /// event loop (a slow scrape, say) shows as.
    tick_lateness: Histogram,
    tick_lateness_max_ns: AtomicU64,
}

/// Buckets of `synguard_tick_lateness_seconds`: 0.1 ms to 1 s, with 10 ms (the bound the
/// scrape test holds the loop to) among them.
pub const TICK_LATENESS_BUCKETS: [f64; 9] =
    [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.1, 1.0];

impl Default for Live {
    fn default() -> Live {
        Live {
            syn_rate_bits: AtomicU64::default(),
            engaged_transitions: AtomicU64::default(),
            key_rotated_unix: AtomicU64::default(),
            loop_beat_ms: AtomicU64::default(),
            served: Mutex::default(),
            tick_lateness: Histogram::new(TICK_LATENESS_BUCKETS),
            tick_lateness_max_ns: AtomicU64::default(),
        }
    }
}

/// What GET /healthz answers: `Ok(text)` is 200, `Err(why)` 503. Run off the event loop.
pub type Health = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One interface the daemon serves, as a scrape reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub iface: String,
    /// Its pin directory: its own counters, and the maps the daemon shares.
    pub dir: PathBuf,
    /// The XDP mode it is attached in; `None` when a takeover could not tell.
    pub xdp_mode: Option<XdpMode>,
}

impl Live {
    /// One auto-mode tick ran `late` after its scheduled instant.
    pub fn tick_ran_late(&self, late: Duration) {
        self.tick_lateness.observe(late.as_secs_f64());
        self.tick_lateness_max_ns
            .fetch_max(late.as_nanos() as u64, Ordering::Relaxed);
    }
    /// The event loop is alive: called from its every tick.
    pub fn beat(&self) {
        self.loop_beat_ms.store(unix_ms(), Ordering::Relaxed);
    }
    /// Time since the last [`Live::beat`] (forever if none).
    pub fn since_beat(&self) -> Duration {
        match self.loop_beat_ms.load(Ordering::Relaxed) {
            0 => Duration::MAX,
            b => Duration::from_millis(unix_ms().saturating_sub(b)),
        }
    }
    pub fn set_served(&self, served: Vec<Served>) {
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) = served;
    }
    pub fn served(&self) -> Vec<Served> {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub fn set_syn_rate(&self, r: f64) {
        self.syn_rate_bits.store(r.to_bits(), Ordering::Relaxed);
    }
    pub fn syn_rate(&self) -> f64 {
        f64::from_bits(self.syn_rate_bits.load(Ordering::Relaxed))
    }
    /// One engage or disengage of auto mode's hysteresis.
    pub fn add_transition(&self) {
        self.engaged_transitions.fetch_add(1, Ordering::Relaxed);
    }
    pub fn set_key_rotated(&self, unix: u64) {
        self.key_rotated_unix.store(unix, Ordering::Relaxed);
    }
}

/// Every family covers every interface the daemon serves ([`Live::served`]), one label set
/// each: a family appears once in an exposition.
#[derive(Debug)]
pub struct MapCollector {
    /// The handoff mode the daemon attached in, and why (every interface has it).
    pub handoff: crate::handoff::Choice,
    pub live: Arc<Live>,
}

/// What one scrape read for one served interface.
struct Scraped {
    served: Served,
    progs: Vec<(&'static str, aya::programs::ProgramInfo)>,
    snap: Option<Snapshot>,
}

/// One metric family: its descriptor, then one sample per label set.
fn family<'a, L, M>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error>
where
    L: prometheus_client::encoding::EncodeLabelSet + 'a,
    M: EncodeMetric,
{
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in samples {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl MapCollector {
    /// (program label, pinned link) of each program, with its kernel info when loaded.
    fn programs(dir: &Path) -> Vec<(&'static str, aya::programs::ProgramInfo)> {
        let [xdp, tc] = state_dir::link_pins(dir);
        let ids: Vec<(&'static str, u32)> = [("xdp", xdp), ("tc", tc)]
            .into_iter()
            .filter_map(|(n, pin)| Some((n, attach::pinned_link(&pin).ok()??.prog_id)))
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| {
                let (n, _) = ids.iter().find(|(_, id)| *id == p.id())?;
                Some((*n, p))
            })
            .collect()
    }

    fn entries(dir: &Path, name: &str) -> Option<i64> {
        let p = PinnedMaps::at(dir);
        let n = match name {
            names::SRC_RATE => {
                let m = aya::maps::HashMap::<_, SrcKey, TokenBucket>::try_from(
                    aya::maps::Map::LruHashMap(p.map(name).ok()?),
                )
                .ok()?;
                m.keys().filter(Result::is_ok).count()
            }
            names::ALLOW4 | names::DENY4 => p
                .lpm_trie::<[u8; 4], u8>(name)
                .ok()?
                .keys()
                .filter(Result::is_ok)
                .count(),
            _ => p
                .lpm_trie::<[u8; 16], u8>(name)
                .ok()?
                .keys()
                .filter(Result::is_ok)
                .count(),
        };
        Some(n as i64)
    }
}

impl Collector for MapCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all: Vec<Scraped> = self
            .live
            .served()
            .into_iter()
            .map(|served| Scraped {
                progs: Self::programs(&served.dir),
                // Maps that cannot be read (pins removed under us) are left out of the scrape.
                snap: PinnedMaps::at(&served.dir).snapshot().ok(),
                served,
            })
            .collect();
        // Every interface runs the same object, so any attached XDP program has the tag.
        let tag = all
            .iter()
            .flat_map(|s| &s.progs)
            .find(|(n, _)| *n == "xdp")
            .map(|(_, p)| format!("{:016x}", p.tag()))
            .unwrap_or_default();
        let kernel = kernel_release();
        family(
            &mut enc,
            "synguard_build_info",
            "synguard version, the tag of the attached XDP program and the kernel release",
            MetricType::Gauge,
            [(
                [
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("prog_tag", tag.as_str()),
                    ("kernel", kernel.as_str()),
                ],
                ConstGauge::new(1i64),
            )],
        )?;
        family(
            &mut enc,
            "synguard_xdp_attached",
            "1 while synguard's XDP program is attached, in this mode",
            MetricType::Gauge,
            all.iter().flat_map(|s| {
                s.progs.iter().filter(|(n, _)| *n == "xdp").map(|_| {
                    (
                        [
                            ("iface", s.served.iface.as_str()),
                            ("mode", s.served.xdp_mode.map_or("unknown", XdpMode::name)),
                        ],
                        ConstGauge::new(1i64),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "synguard_handoff_mode",
            "Handoff mode the daemon attached in, as a state set (1 for the one in force), with \
             why it was chosen",
            MetricType::Gauge,
            all.iter().flat_map(|s| {
                synguard_common::maps::Handoff::ALL.into_iter().map(|h| {
                    let on = h == self.handoff.mode;
                    (
                        [
                            ("iface", s.served.iface.as_str()),
                            ("mode", h.name()),
                            ("reason", if on { self.handoff.reason.as_str() } else { "" }),
                        ],
                        ConstGauge::new(i64::from(on)),
                    )
                })
            }),
        )?;
        // CPU time of each program: the kernel accounts it while the daemon holds stats on.
        family(
            &mut enc,
            "synguard_program_run_seconds",
            "CPU time spent in the program (bpf_stats run_time; counted while the daemon runs)",
            MetricType::Counter,
            all.iter().flat_map(|s| {
                s.progs.iter().map(|(n, p)| {
                    (
                        [("iface", s.served.iface.as_str()), ("program", *n)],
                        ConstCounter::new(p.run_time().as_secs_f64()),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "synguard_program_runs",
            "Runs of the program (bpf_stats run_cnt; counted while the daemon runs)",
            MetricType::Counter,
            all.iter().flat_map(|s| {
                s.progs.iter().map(|(n, p)| {
                    (
                        [("iface", s.served.iface.as_str()), ("program", *n)],
                        ConstCounter::new(p.run_count()),
                    )
                })
            }),
        )?;

        let snaps: Vec<(&str, &Snapshot)> = all
            .iter()
            .filter_map(|s| Some((s.served.iface.as_str(), s.snap.as_ref()?)))
            .collect();
        let total = |c: Counter| {
            snaps.iter().map(move |(iface, snap)| {
                let v = snap
                    .counters
                    .iter()
                    .find(|(d, _)| *d == c)
                    .map_or(0, |x| x.1);
                ([("iface", *iface)], ConstCounter::new(v))
            })
        };
        family(
            &mut enc,
            "synguard_packets",
            "Frames seen by the XDP program",
            MetricType::Counter,
            total(Counter::PacketsSeen),
        )?;
        family(
            &mut enc,
            "synguard_syns",
            "TCP SYNs to a protected port seen by the XDP program",
            MetricType::Counter,
            total(Counter::SynSeen),
        )?;
        family(
            &mut enc,
            "synguard_events_lost",
            "Sampled drop events the ring buffer had no room for (no reader, or a slow one)",
            MetricType::Counter,
            total(Counter::EventsLost),
        )?;
        family(
            &mut enc,
            "synguard_verdicts",
            "XDP verdicts by reason and the action they ended in (one per frame decided)",
            MetricType::Counter,
            snaps.iter().flat_map(|(iface, snap)| {
                snap.counters.iter().filter_map(|&(c, v)| match c.class() {
                    Class::Verdict(a) => Some((
                        [
                            ("iface", *iface),
                            ("reason", c.name()),
                            ("action", a.name()),
                        ],
                        ConstCounter::new(v),
                    )),
                    _ => None,
                })
            }),
        )?;
        family(
            &mut enc,
            "synguard_handoffs",
            "Outcomes of the TC hand-off of cookie ACKs to the listener",
            MetricType::Counter,
            snaps.iter().flat_map(|(iface, snap)| {
                snap.counters.iter().filter_map(|&(c, v)| match c.class() {
                    Class::Handoff => Some((
                        [("iface", *iface), ("outcome", c.name())],
                        ConstCounter::new(v),
                    )),
                    _ => None,
                })
            }),
        )?;
        family(
            &mut enc,
            "synguard_engaged",
            "1 while the SYN rate is above the auto-mode trigger (hysteresis)",
            MetricType::Gauge,
            snaps.iter().map(|(iface, snap)| {
                (
                    [("iface", *iface)],
                    ConstGauge::new(i64::from(snap.state.engaged)),
                )
            }),
        )?;
        family(
            &mut enc,
            "synguard_mode",
            "Configured mode, as a state set: 1 for the mode in force, 0 for the others",
            MetricType::Gauge,
            snaps.iter().flat_map(|(iface, snap)| {
                Mode::ALL.into_iter().map(move |m| {
                    (
                        [("iface", *iface), ("mode", m.name())],
                        ConstGauge::new(i64::from(snap.config.mode == m as u32)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "synguard_key_epoch",
            "Epoch of the cookie key used for minting",
            MetricType::Gauge,
            snaps.iter().map(|(iface, snap)| {
                (
                    [("iface", *iface)],
                    ConstGauge::new(i64::from(snap.active_key().epoch)),
                )
            }),
        )?;
        let ifaces = || all.iter().map(|s| s.served.iface.as_str());
        let rotated = self.live.key_rotated_unix.load(Ordering::Relaxed);
        family(
            &mut enc,
            "synguard_key_rotated_timestamp_seconds",
            "When the active cookie key was installed (unix time)",
            MetricType::Gauge,
            ifaces()
                .filter(|_| rotated > 0)
                .map(|iface| ([("iface", iface)], ConstGauge::new(rotated as i64))),
        )?;
        let transitions = self.live.engaged_transitions.load(Ordering::Relaxed);
        family(
            &mut enc,
            "synguard_engaged_transitions",
            "Engages plus disengages of auto mode since the daemon started",
            MetricType::Counter,
            ifaces().map(|iface| ([("iface", iface)], ConstCounter::new(transitions))),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "synguard_tick_lateness_seconds",
                "How late the daemon's auto-mode sample tick (every 100 ms) ran after its \
                 scheduled time",
                None,
                MetricType::Histogram,
            )?;
            for iface in ifaces() {
                self.live
                    .tick_lateness
                    .encode(m.encode_family(&[("iface", iface)])?)?;
            }
        }
        let max_late = self.live.tick_lateness_max_ns.load(Ordering::Relaxed) as f64 / 1e9;
        family(
            &mut enc,
            "synguard_tick_lateness_max_seconds",
            "The latest the daemon's auto-mode sample tick ran since it started",
            MetricType::Gauge,
            ifaces().map(|iface| ([("iface", iface)], ConstGauge::new(max_late))),
        )?;
        family(
            &mut enc,
            "synguard_syn_rate",
            "SYN/s to protected ports over the last sample (100 ms), on all the daemon's interfaces",
            MetricType::Gauge,
            ifaces().map(|iface| ([("iface", iface)], ConstGauge::new(self.live.syn_rate()))),
        )?;
        family(
            &mut enc,
            "synguard_list_entries",
            "Entries in each allow/deny list",
            MetricType::Gauge,
            all.iter().flat_map(|s| {
                [
                    ("allow4", names::ALLOW4),
                    ("allow6", names::ALLOW6),
                    ("deny4", names::DENY4),
                    ("deny6", names::DENY6),
                ]
                .into_iter()
                .filter_map(|(l, n)| {
                    Some((
                        [("iface", s.served.iface.as_str()), ("list", l)],
                        ConstGauge::new(Self::entries(&s.served.dir, n)?),
                    ))
                })
            }),
        )?;
        family(
            &mut enc,
            "synguard_src_rate_entries",
            "Sources tracked by the per-source SYN limit (SRC_RATE, an LRU)",
            MetricType::Gauge,
            all.iter().filter_map(|s| {
                Self::entries(&s.served.dir, names::SRC_RATE)
                    .map(|n| ([("iface", s.served.iface.as_str())], ConstGauge::new(n)))
            }),
        )?;
        family(
            &mut enc,
            "synguard_src_rate_capacity",
            "Capacity of SRC_RATE; beyond it the least recently seen source is evicted",
            MetricType::Gauge,
            ifaces().map(|iface| {
                (
                    [("iface", iface)],
                    ConstGauge::new(i64::from(synguard_common::maps::SRC_RATE_ENTRIES)),
                )
            }),
        )?;
        // One read for the namespace: the interfaces share it and the ports.
        if let Some((_, snap)) = snaps.first() {
            let states = listeners::read(&snap.tunables.ports);
            let fields = states.fields();
            family(
                &mut enc,
                "synguard_listener_sockets",
                "TCP sockets on the protected ports by state (this network namespace)",
                MetricType::Gauge,
                snaps.iter().flat_map(|(iface, _)| {
                    fields.iter().map(move |&(name, v)| {
                        (
                            [("iface", *iface), ("state", name)],
                            ConstGauge::new(v as i64),
                        )
                    })
                }),
            )?;
        }
        Ok(())
    }
}

pub fn registry(handoff: crate::handoff::Choice, live: Arc<Live>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(MapCollector { handoff, live }));
    r
}

/// Accepts scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, health: Health) {
    let slots = Arc::new(Semaphore::new(16));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let registry = registry.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), handle(sock, &registry, health)).await;
            drop(permit);
        });
    }
}

async fn handle(
    mut sock: TcpStream,
    registry: &Arc<Registry>,
    health: Health,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // OpenMetrics for scrapers that ask for it (Prometheus does), else the classic text
    // format, which `promtool check metrics` and plain `curl` readers expect.
    let head_text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let openmetrics = head_text
        .lines()
        .any(|l| l.starts_with("accept:") && l.contains("application/openmetrics-text"));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/healthz") => match tokio::task::spawn_blocking(move || health()).await {
            Ok(Ok(text)) => ("200 OK", "text/plain", text + "\n"),
            Ok(Err(why)) => ("503 Service Unavailable", "text/plain", why + "\n"),
            Err(_) => (
                "503 Service Unavailable",
                "text/plain",
                "health check failed\n".into(),
            ),
        },
        ("GET", "/metrics") => {
            // Reading the maps and the socket tables is blocking work: off the event loop,
            // so a scrape never delays the auto-mode tick or key rotation.
            let registry = registry.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                let mut body = String::new();
                prometheus_client::encoding::text::encode(&mut body, &registry).map(|()| body)
            })
            .await;
            match encoded {
                Ok(Ok(body)) if openmetrics => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Ok(Ok(body)) => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    prometheus_text(&body),
                ),
                _ => (
                    "500 Internal Server Error",
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        ("GET", "/") => (
            "200 OK",
            "text/plain",
            "synguard: metrics at /metrics\n".into(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition: a counter
/// family is named with its `_total` suffix in HELP and TYPE, as its samples are, and there
/// is no `# EOF`.
fn prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{p}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_with_total() {
        let om = "# HELP a_b Frames.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n\
                  # HELP g Gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP a_b_total Frames.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n\
             # HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
