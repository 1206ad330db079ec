//! Legit clients: kernel TCP connections from a namespace, each timed and checked end to end.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{netns, server::pattern_byte};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub target: SocketAddr,
    /// Number of connections to make (each one request/response).
    pub connections: usize,
    /// Connections in flight at once (one thread each).
    pub concurrency: usize,
    /// Budget for one connection: connect, send, receive.
    pub timeout: Duration,
    /// Request line size, padding included.
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// No connection is started after this much time from the start of the run.
    pub deadline: Duration,
    /// Updated as connections finish, for a live display while the run goes on.
    pub progress: Option<Arc<ClientProgress>>,
}

/// Live counts of a run in progress.
#[derive(Debug, Default)]
pub struct ClientProgress {
    pub done: AtomicUsize,
    pub ok: AtomicUsize,
}

impl ClientOptions {
    pub fn new(target: SocketAddr, connections: usize) -> Self {
        Self {
            target,
            connections,
            concurrency: 8,
            timeout: Duration::from_secs(5),
            request_bytes: 256,
            response_bytes: 4096,
            deadline: Duration::from_secs(120),
            progress: None,
        }
    }
}

/// What happened to one connection.
#[derive(Debug, Clone)]
pub struct ConnOutcome {
    pub ok: bool,
    /// Time for `connect()` to return (the three-way handshake as the client sees it).
    pub connect_time: Option<Duration>,
    /// Time for the whole exchange.
    pub total_time: Duration,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    pub outcomes: Vec<ConnOutcome>,
    pub elapsed: Duration,
}

impl ClientReport {
    pub fn total(&self) -> usize {
        self.outcomes.len()
    }

    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok).count()
    }

    /// Connect times of successful connections, sorted.
    pub fn connect_times(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.ok)
            .filter_map(|o| o.connect_time)
            .collect();
        v.sort();
        v
    }

    /// Nearest-rank percentile (`p` in 0..=100) of successful connect times.
    pub fn connect_percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.connect_times(), p)
    }

    /// Distinct error messages with their counts, most frequent first.
    pub fn errors(&self) -> Vec<(String, usize)> {
        let mut m: std::collections::HashMap<String, usize> = Default::default();
        for e in self.outcomes.iter().filter_map(|o| o.error.clone()) {
            *m.entry(e).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.1));
        v
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Runs the connections from inside `netns` and reports each one.
pub fn run_clients(netns_name: &str, opts: &ClientOptions) -> Result<ClientReport> {
    if opts.request_bytes < 16 {
        bail!("request_bytes must be at least 16");
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(opts.connections));
    let start = Instant::now();
    let workers = opts.concurrency.clamp(1, opts.connections.max(1));
    thread::scope(|s| -> Result<()> {
        let mut hs = Vec::new();
        for _ in 0..workers {
            hs.push(s.spawn(|| -> Result<()> {
                // Each worker enters the namespace once; its sockets are then created there.
                netns::enter(netns_name)?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.connections || start.elapsed() >= opts.deadline {
                        return Ok(());
                    }
                    let o = one(opts, i);
                    if let Some(p) = &opts.progress {
                        p.ok.fetch_add(usize::from(o.ok), Ordering::Relaxed);
                        p.done.fetch_add(1, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                }
            }));
        }
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("client worker panicked"))??;
        }
        Ok(())
    })?;
    let mut outcomes = results.into_inner().unwrap_or_else(|e| e.into_inner());
    // Connections never started because of the deadline count as failures.
    while outcomes.len() < opts.connections {
        outcomes.push(ConnOutcome {
            ok: false,
            connect_time: None,
            total_time: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
            error: Some("not started: run deadline reached".into()),
        });
    }
    Ok(ClientReport {
        outcomes,
        elapsed: start.elapsed(),
    })
}

fn one(opts: &ClientOptions, i: usize) -> ConnOutcome {
    let t0 = Instant::now();
    let mut out = ConnOutcome {
        ok: false,
        connect_time: None,
        total_time: Duration::ZERO,
        bytes_sent: 0,
        bytes_received: 0,
        error: None,
    };
    let r = exchange(opts, i, t0, &mut out);
    out.total_time = t0.elapsed();
    match r {
        Ok(()) => out.ok = true,
        Err(e) => out.error = Some(format!("{e:#}")),
    }
    out
}

fn exchange(opts: &ClientOptions, i: usize, t0: Instant, out: &mut ConnOutcome) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&opts.target, opts.timeout).context("connect")?;
    out.connect_time = Some(t0.elapsed());
    let remaining = |what: &str| {
        opts.timeout
            .checked_sub(t0.elapsed())
            .filter(|d| !d.is_zero())
            .with_context(|| format!("timeout before {what}"))
    };
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(remaining("send")?))?;
    let head = format!("SGH {} {i} ", opts.response_bytes);
    let pad = opts.request_bytes.saturating_sub(head.len() + 1);
    let mut req = head.into_bytes();
    req.extend(std::iter::repeat_n(b'x', pad));
    req.push(b'\n');
    s.write_all(&req).context("send")?;
    out.bytes_sent = req.len();
    let want = req.len() + opts.response_bytes;
    let mut got = Vec::with_capacity(want);
    let mut buf = [0u8; 16384];
    loop {
        s.set_read_timeout(Some(remaining("receive")?))?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            // A read timeout surfaces as EAGAIN on Linux; say what it means.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("receive timed out")
            }
            Err(e) => return Err(e).context("receive"),
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        out.bytes_received = got.len();
        if got.len() > want {
            bail!("server sent {} bytes, expected {want}", got.len());
        }
    }
    if got.len() != want {
        bail!("received {} of {want} bytes", got.len());
    }
    if got[..req.len()] != req[..] {
        bail!("echoed request differs");
    }
    if let Some(p) = got[req.len()..]
        .iter()
        .enumerate()
        .position(|(k, &b)| b != pattern_byte(k))
    {
        bail!("response corrupt at byte {p}");
    }
    Ok(())
}
