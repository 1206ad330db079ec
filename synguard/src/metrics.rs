//! The Prometheus endpoint of `synguard run`: OpenMetrics text on GET /metrics, served by a
//! tiny HTTP/1.x responder on tokio. Every value is read from the pinned maps at scrape
//! time, so it is never staler than the scrape.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{listeners, pinned_maps::PinnedMaps};

/// Values only the daemon knows (not in any map).
#[derive(Debug, Default)]
pub struct Live {
    syn_rate_bits: AtomicU64,
}

impl Live {
    pub fn set_syn_rate(&self, r: f64) {
        self.syn_rate_bits.store(r.to_bits(), Ordering::Relaxed);
    }
    pub fn syn_rate(&self) -> f64 {
        f64::from_bits(self.syn_rate_bits.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
pub struct MapCollector {
    pub dir: PathBuf,
    pub live: Arc<Live>,
}

impl Collector for MapCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Maps that cannot be read (pins removed under us) are left out of the scrape.
        let snap = PinnedMaps::at(&self.dir).snapshot().ok();
        if let Some(snap) = &snap {
            {
                let mut m = enc.encode_descriptor(
                    "synguard_packets",
                    "Packets by synguard verdict reason (summed over CPUs)",
                    None,
                    prometheus_client::metrics::MetricType::Counter,
                )?;
                for &(c, v) in &snap.counters {
                    let labels = [("reason", c.name())];
                    ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
            gauge(
                &mut enc,
                "synguard_engaged",
                "1 while the SYN rate is above the auto-mode trigger (hysteresis)",
                i64::from(snap.state.engaged),
            )?;
            gauge(
                &mut enc,
                "synguard_key_epoch",
                "Epoch of the cookie key used for minting",
                i64::from(snap.active_key().epoch),
            )?;
            gauge(
                &mut enc,
                "synguard_mode",
                "Configured mode: 0 monitor, 1 auto, 2 always",
                i64::from(snap.config.mode),
            )?;
        }
        let rate = ConstGauge::new(self.live.syn_rate());
        rate.encode(enc.encode_descriptor(
            "synguard_syn_rate",
            "SYN/s to protected ports over the last sample (100 ms)",
            None,
            rate.metric_type(),
        )?)?;
        if let Some(snap) = &snap {
            let states = listeners::read(&snap.tunables.ports);
            let mut m = enc.encode_descriptor(
                "synguard_listener_sockets",
                "TCP sockets on the protected ports by state (this network namespace)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (name, v) in states.fields() {
                let labels = [("state", name)];
                ConstGauge::new(v as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

pub fn registry(dir: PathBuf, live: Arc<Live>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(MapCollector { dir, live }));
    r
}

/// Accepts scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
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
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle(sock, &registry)).await;
            drop(permit);
        });
    }
}

async fn handle(mut sock: TcpStream, registry: &Registry) -> std::io::Result<()> {
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
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => (
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
