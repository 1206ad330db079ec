//! A small real TCP server inside a namespace, served by the kernel's own TCP stack.
//!
//! Protocol (shared with [`crate::client`]): the client sends one line
//! `SGH <response_len> <padding>\n`; the server answers with that line echoed back followed by
//! `response_len` pattern bytes, then closes. Data thus flows both ways and both sides can
//! check it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::socket::{Backlog, listen},
};

use crate::netns;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest response the server agrees to send.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Byte `i` of a response body; a pattern rather than zeros so that misordered or truncated
/// data is detected.
pub fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub port: u16,
    /// Addresses to listen on (one listener each). Empty = both wildcards.
    pub bind: Vec<std::net::IpAddr>,
    /// listen(2) backlog; also caps the SYN queue together with `tcp_max_syn_backlog`.
    pub backlog: i32,
    /// The server stops accepting after this many connections.
    pub max_connections: u64,
    /// And after this long, whatever happens.
    pub max_lifetime: Duration,
    /// Per-connection read/write timeout.
    pub io_timeout: Duration,
    /// At most this many connections are served at once; more are closed right away.
    pub max_concurrent: u64,
    /// With `n >= 2`, `n` listeners per address, each with `SO_REUSEPORT` (one reuseport
    /// group per address); otherwise one plain listener.
    pub reuseport: usize,
}

impl ServerOptions {
    /// Listens on `port` at the given addresses.
    pub fn new(port: u16, bind: Vec<std::net::IpAddr>) -> Self {
        Self {
            port,
            bind,
            backlog: 4096,
            max_connections: 1_000_000,
            max_lifetime: Duration::from_secs(600),
            io_timeout: Duration::from_secs(5),
            max_concurrent: 1024,
            reuseport: 0,
        }
    }
}

/// A listener on `a` with `SO_REUSEPORT` set before it binds.
fn reuseport_listener(a: &SocketAddr) -> Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
    };
    let family = if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
    setsockopt(&fd, sockopt::ReusePort, &true).context("SO_REUSEPORT")?;
    if a.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).context("IPV6_V6ONLY")?;
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(*a),
    )
    .with_context(|| format!("bind {a}"))?;
    Ok(TcpListener::from(fd))
}

/// Counters kept by the server.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub accepted: AtomicU64,
    pub served: AtomicU64,
    pub failed: AtomicU64,
    pub rejected_busy: AtomicU64,
    active: AtomicU64,
}

/// Snapshot of [`ServerCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub accepted: u64,
    pub served: u64,
    pub failed: u64,
    pub rejected_busy: u64,
}

/// A running server. Dropping it (or [`Server::stop`]) stops accepting, waits for the
/// connections in flight (bounded by the I/O timeout) and closes the listeners.
pub struct Server {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    counters: Arc<ServerCounters>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the listeners inside `netns` and starts serving on a background thread.
    pub fn start(netns_name: &str, opts: ServerOptions) -> Result<Server> {
        let bind: Vec<SocketAddr> = if opts.bind.is_empty() {
            vec![
                (Ipv4Addr::UNSPECIFIED, opts.port).into(),
                (Ipv6Addr::UNSPECIFIED, opts.port).into(),
            ]
        } else {
            opts.bind
                .iter()
                .map(|a| SocketAddr::new(*a, opts.port))
                .collect()
        };
        let backlog = Backlog::new(opts.backlog).context("backlog")?;
        // Sockets belong to the namespace they were created in, so only creation needs setns.
        let listeners = netns::in_netns(netns_name, || {
            bind.iter()
                .flat_map(|a| std::iter::repeat_n(a, opts.reuseport.max(1)))
                .map(|a| {
                    let l = if opts.reuseport >= 2 {
                        reuseport_listener(a)?
                    } else {
                        TcpListener::bind(a).with_context(|| format!("bind {a}"))?
                    };
                    // Re-listening on a listening socket just updates the backlog; std does
                    // not expose it.
                    listen(&l, backlog).context("listen")?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ServerCounters::default());
        let acceptor = {
            let stop = stop.clone();
            let counters = counters.clone();
            thread::Builder::new()
                .name("sgh-server".into())
                .spawn(move || accept_loop(listeners, opts, stop, counters))?
        };
        Ok(Server {
            addrs,
            stop,
            counters,
            acceptor: Some(acceptor),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn stats(&self) -> ServerStats {
        let c = &self.counters;
        ServerStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected_busy: c.rejected_busy.load(Ordering::Relaxed),
        }
    }

    /// Stops and returns the final counters.
    pub fn stop(mut self) -> ServerStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listeners: Vec<TcpListener>,
    opts: ServerOptions,
    stop: Arc<AtomicBool>,
    counters: Arc<ServerCounters>,
) {
    let deadline = Instant::now() + opts.max_lifetime;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && total < opts.max_connections
    {
        // Poll instead of blocking accept so that stop is noticed within 100 ms.
        let mut fds: Vec<PollFd> = listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("synguard-harness server: poll: {e}");
                break;
            }
        }
        for l in &listeners {
            while let Ok((s, _)) = l.accept() {
                total += 1;
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                if counters.active.load(Ordering::Relaxed) >= opts.max_concurrent {
                    counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counters.active.fetch_add(1, Ordering::Relaxed);
                let c = counters.clone();
                let t = opts.io_timeout;
                let spawned = thread::Builder::new()
                    .name("sgh-conn".into())
                    .spawn(move || {
                        match serve(s, t) {
                            Ok(()) => c.served.fetch_add(1, Ordering::Relaxed),
                            Err(_) => c.failed.fetch_add(1, Ordering::Relaxed),
                        };
                        c.active.fetch_sub(1, Ordering::Relaxed);
                    });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(_) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        counters.active.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
        workers.retain(|h| !h.is_finished());
    }
    // Listeners close when this returns; connections in flight end within io_timeout.
    for h in workers {
        let _ = h.join();
    }
}

fn serve(s: TcpStream, timeout: Duration) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut line = Vec::new();
    let mut r = BufReader::new((&s).take(MAX_REQUEST as u64));
    r.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        bail!("request without newline");
    }
    let text = std::str::from_utf8(&line).context("request not UTF-8")?;
    let mut it = text.split_whitespace();
    if it.next() != Some("SGH") {
        bail!("bad request");
    }
    let len: usize = it.next().context("no length")?.parse()?;
    if len > MAX_RESPONSE {
        bail!("response too large");
    }
    let mut w = &s;
    w.write_all(&line)?;
    let mut buf = [0u8; 16384];
    let mut sent = 0;
    while sent < len {
        let n = (len - sent).min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(sent + i);
        }
        w.write_all(&buf[..n])?;
        sent += n;
    }
    w.flush()?;
    Ok(())
}
