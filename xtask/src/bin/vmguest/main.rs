//! `vmguest`: the reduced live suite that `cargo xtask vmtest` runs on each kernel, inside a
//! busybox initramfs under qemu, or straight on the host kernel.
//!
//! It builds a veth pair between two namespaces it creates, runs `synguard check`, attaches
//! `synguard run`, and, when that worked, drives a real handshake, a few invalid flag
//! combinations and a burst of forged ACKs through it, reading synguard's own pinned counters. Every result is one line (see `report.rs`), written to
//! `--results`; the run ends with `VMTEST-DONE`.

mod net;
#[path = "../../vmtest/report.rs"]
#[allow(dead_code)] // the parsing half is the host's
mod report;
mod share;

use std::{
    fs::OpenOptions,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::signal::Signal;
use report::{Line, Outcome};
use synguard_common::{
    flags,
    maps::{Counter, Handoff},
    testutil::{Seg, linux_syn_options},
};
use synguard_harness::{
    fixture::{VethPair, pin_dir},
    netns::in_netns,
    rawsock::RawSock,
    synguard::{Counters, Daemon},
    xdp::attached_prog_id,
};

#[derive(Parser)]
struct Args {
    /// The synguard binary.
    #[arg(long)]
    synguard: PathBuf,
    /// iproute2's `ip`, by path: under busybox's nsenter a bare `ip` is busybox's own applet,
    /// which cannot attach XDP. (The harness's `ip` calls run it from PATH, where it is first.)
    #[arg(long, default_value = "/usr/sbin/ip")]
    ip: PathBuf,
    /// Where result lines go (default: stdout).
    #[arg(long)]
    results: Option<PathBuf>,
    /// XDP attach modes to run the attached checks in.
    #[arg(long = "xdp-mode", default_values = ["generic"])]
    xdp_modes: Vec<String>,
    /// `--handoff` values to run the attached checks in, each in every XDP mode; `auto`
    /// rows keep the bare XDP mode as their label, the others read "MODE, --handoff H".
    #[arg(long = "handoff", default_values = ["auto"])]
    handoffs: Vec<String>,
    /// The protected port the listener uses.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// How long `synguard run` may take to attach (TCG loads are slow).
    #[arg(long, default_value = "120", value_parser = |s: &str| s.parse().map(Duration::from_secs))]
    attach_timeout: Duration,
}

/// Where the result lines go.
struct Results {
    out: Box<dyn Write>,
    kernel: String,
}

impl Results {
    fn line(&mut self, l: &Line) {
        // One write per line, flushed: a serial port must not interleave two results.
        let text = format!("{}\n", l.to_line());
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
        // The console gets a readable copy next to the kernel's messages.
        if let Line::Check {
            check,
            outcome,
            detail,
            ..
        } = l
        {
            println!("vmguest: {check}: {outcome:?}: {detail}");
        }
    }

    fn check(&mut self, xdp_mode: &str, check: &str, r: Result<String>, insns: Option<u32>) {
        let (outcome, detail) = match r {
            Ok(d) => (Outcome::Pass, d),
            Err(e) => (Outcome::Fail, format!("{e:#}")),
        };
        self.emit(xdp_mode, check, outcome, detail, insns);
    }

    fn emit(
        &mut self,
        xdp_mode: &str,
        check: &str,
        outcome: Outcome,
        detail: String,
        insns: Option<u32>,
    ) {
        let l = Line::Check {
            kernel: self.kernel.clone(),
            xdp_mode: xdp_mode.into(),
            check: check.into(),
            outcome,
            detail,
            insns,
        };
        self.line(&l);
    }
}

fn main() {
    let args = Args::parse();
    let out: Box<dyn Write> = match &args.results {
        Some(p) => match OpenOptions::new().write(true).open(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("vmguest: opening {}: {e}", p.display());
                std::process::exit(2);
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let mut r = Results {
        out,
        kernel: kernel_release(),
    };
    r.line(&Line::Kernel {
        release: r.kernel.clone(),
    });
    if let Err(e) = suite(&args, &mut r) {
        r.emit("-", "setup", Outcome::Fail, format!("{e:#}"), None);
    }
    let _ = r.out.write_all(format!("{}\n", report::DONE).as_bytes());
    let _ = r.out.flush();
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The veth pair every check runs on: synguard's side `a` (srv), the peer `b`, with
/// `net.ipv4.tcp_syncookies=2` in srv as README recommends for the kernel-cookie handoff
/// (the kernel then answers every SYN that reaches it with its own cookie, which keeps the
/// listener's overflow stamp fresh); the other handoffs do not depend on it.
pub fn server_pair() -> Result<VethPair> {
    let t = VethPair::new().context("building the veth pair between namespaces")?;
    in_netns(&t.a.netns, || {
        std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2")
            .context("setting net.ipv4.tcp_syncookies=2 in the server namespace")
    })?;
    Ok(t)
}

/// The suite, on a veth pair between two namespaces: synguard on `a` (srv), the peer on `b`.
/// SIGINT/SIGTERM (a Ctrl-C of `cargo xtask vmtest` on the host kernel) are the harness's:
/// its handler stops the daemon, removes the namespaces and pins, and exits.
fn suite(args: &Args, r: &mut Results) -> Result<()> {
    let t = server_pair()?;
    let srv: SocketAddr = (t.a.ipv4, args.port).into();
    let listener = in_netns(&t.a.netns, || {
        let l = TcpListener::bind(srv).with_context(|| format!("listening on {srv}"))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;

    let check = check(args, &t);
    r.check("-", report::CHECK, check, None);

    let mut peer_has_xdp = false;
    let runs: Vec<(&String, &String)> = args
        .handoffs
        .iter()
        .flat_map(|h| args.xdp_modes.iter().map(move |m| (h, m)))
        .collect();
    for (handoff, xdp) in runs {
        let label = if handoff == "auto" {
            xdp.clone()
        } else {
            format!("{xdp}, --handoff {handoff}")
        };
        let mode = &label;
        if xdp == "native" && !peer_has_xdp {
            net::xdp_pass_on(&args.ip, &t.b.netns, &t.b.iface)
                .context("XDP_PASS on the peer veth")?;
            peer_has_xdp = true;
        }
        let (srv_ns, srv_if) = (t.a.netns.as_str(), t.a.iface.as_str());
        let port = args.port.to_string();
        let run_args = [
            "--iface",
            srv_if,
            "--ports",
            &port,
            "--mode",
            "always",
            "--xdp-mode",
            xdp,
            "--metrics",
            "off",
            "--handoff",
            handoff,
        ];
        let mut d = t.synguard(&args.synguard, &t.a).spawn(srv_if, &run_args)?;
        if d.wait_attached(args.attach_timeout).is_err() {
            let mut log = d.log();
            if d.try_wait()?.is_none() {
                log.push_str(&format!(
                    "(no \"attached\" within {:?})\n",
                    args.attach_timeout
                ));
            }
            // The whole log goes to the console; the result line gets its gist.
            println!("vmguest: synguard run ({mode}) failed; its output:\n{log}");
            r.emit(
                mode,
                report::ATTACH,
                Outcome::Fail,
                load_failure(&log),
                processed_insns(&log),
            );
            for c in report::ATTACHED_CHECKS {
                r.emit(mode, c, Outcome::Skip, "not attached".into(), None);
            }
            continue;
        }
        let insns = attached_prog_id(srv_ns, srv_if)
            .ok()
            .flatten()
            .and_then(|id| u32::try_from(id).ok())
            .and_then(verified_insns);
        let attached = d
            .log()
            .lines()
            .find(|l| l.contains("synguard attached to"))
            .map(|l| {
                l.split_once("synguard attached to")
                    .map(|(_, rest)| format!("attached to{rest}"))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        match net::xdp_mode(srv_ns, srv_if) {
            Ok(Some(m)) if m == *xdp => r.emit(
                mode,
                report::ATTACH,
                Outcome::Pass,
                format!("{attached}; the kernel reports XDP mode {m}"),
                insns,
            ),
            seen => r.emit(
                mode,
                report::ATTACH,
                Outcome::Fail,
                format!("{attached}, but the kernel reports XDP mode {seen:?}, not {xdp}"),
                insns,
            ),
        }

        let s = Suite {
            args,
            t: &t,
            listener: &listener,
        };
        r.check(mode, "handshake", s.handshake(), None);
        for case in FLAG_CASES {
            r.check(
                mode,
                &format!("flags {}", case.name),
                s.flag_case(case),
                None,
            );
        }
        r.check(mode, "forged ACKs", s.forged_acks(200), None);
        r.check(mode, "detach", detach(&mut d, srv_ns, srv_if), None);
    }
    share::run(args, r);
    Ok(())
}

/// SIGINT: synguard detaches, removes its pins and exits 0.
fn detach(d: &mut Daemon, srv_ns: &str, srv_if: &str) -> Result<String> {
    d.signal(Signal::SIGINT);
    let st = d.wait_exit(Duration::from_secs(20))?;
    if !st.success() {
        bail!("synguard run exited with {st} on SIGINT");
    }
    let pins = pin_dir(srv_if);
    if pins.exists() {
        bail!("{} still exists after it exited", pins.display());
    }
    if attached_prog_id(srv_ns, srv_if)?.is_some() {
        bail!("an XDP program is still attached to {srv_if}");
    }
    Ok("SIGINT: exited 0, pins removed, XDP detached".to_string())
}

/// `synguard check --ports PORT` in srv, with the listener up: its FAIL lines, if any.
fn check(args: &Args, t: &VethPair) -> Result<String> {
    let o =
        t.synguard(&args.synguard, &t.a)
            .output(&["check", "--ports", &args.port.to_string()])?;
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    // "FAIL  what (padded)  message": "what: message".
    let fails: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL"))
        .map(|l| match l.trim().split_once("  ") {
            Some((what, msg)) => format!("{what}: {}", msg.trim()),
            None => l.trim().to_string(),
        })
        .collect();
    if o.status.success() {
        let warns = out.lines().filter(|l| l.starts_with("warn")).count();
        Ok(format!("all checks passed ({warns} warnings)"))
    } else if fails.is_empty() {
        bail!("synguard check failed: {}", err.trim())
    } else {
        bail!("{}", fails.join("; "))
    }
}

/// The gist of a failed `synguard run`: its error, and from the verifier's log (when there
/// is one) the verdict, the source line it points at and "processed N insns".
fn load_failure(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut parts = Vec::new();
    if let Some(l) = lines
        .iter()
        .find(|l| l.starts_with("error:") || l.starts_with("Error:"))
    {
        let msg = l.split_once(':').map(|(_, m)| m).unwrap_or(l).trim();
        // The log itself follows "Verifier output:" on the same line; it is handled below.
        let msg = msg.split(" Verifier output:").next().unwrap_or(msg);
        parts.push(msg.trim_end_matches('.').to_string());
    }
    if let Some(i) = lines.iter().position(|l| l.starts_with("processed ")) {
        let body = &lines[..i];
        // Instructions, source comments and the statistics after the verdict.
        let noise = |l: &&str| {
            l.starts_with(|c: char| c.is_ascii_digit())
                || l.starts_with(';')
                || l.starts_with("verification time")
                || l.starts_with("stack depth")
        };
        if let Some(v) = body.iter().rposition(|l| !noise(l)) {
            parts.push(format!("verifier: {}", body[v]));
            // "; if p + N > self.end { @ packet.rs:125": the source line of the insn.
            if let Some(src) = body[..v].iter().rev().find(|l| l.starts_with("; ")) {
                let src = src.trim_start_matches("; ");
                match src.rsplit_once(" @ ") {
                    Some((code, at)) => parts.push(format!("at {at}: `{}`", code.trim())),
                    None => parts.push(format!("at `{src}`")),
                }
            }
        }
        parts.push(lines[i].split(" (").next().unwrap_or(lines[i]).to_string());
    }
    if parts.is_empty() {
        parts.push(lines.last().copied().unwrap_or("no output").to_string());
    }
    parts.join(" | ")
}

/// "processed N insns" from a verifier log: how far a rejected program got.
fn processed_insns(log: &str) -> Option<u32> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix("processed "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The verifier's instruction count for a loaded program (Linux >= 5.16).
fn verified_insns(id: u32) -> Option<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.verified_instruction_count())
}

struct FlagCase {
    name: &'static str,
    flags: u8,
    /// The counter that must move by one.
    counter: Counter,
    /// Whether synguard answers (a cookie SYN+ACK) rather than dropping.
    answered: bool,
}

const FLAG_CASES: &[FlagCase] = &[
    FlagCase {
        name: "SYN",
        flags: flags::SYN,
        counter: Counter::CookieSent,
        answered: true,
    },
    FlagCase {
        name: "SYN+FIN",
        flags: flags::SYN | flags::FIN,
        counter: Counter::FlagSynFin,
        answered: false,
    },
    FlagCase {
        name: "SYN+RST",
        flags: flags::SYN | flags::RST,
        counter: Counter::FlagSynRst,
        answered: false,
    },
    FlagCase {
        name: "NULL",
        flags: 0,
        counter: Counter::FlagNull,
        answered: false,
    },
    FlagCase {
        name: "XMAS",
        flags: flags::FIN | flags::PSH | flags::URG,
        counter: Counter::FlagXmas,
        answered: false,
    },
    FlagCase {
        name: "FIN no ACK",
        flags: flags::FIN,
        counter: Counter::FlagFinNoAck,
        answered: false,
    },
];

struct Suite<'a> {
    args: &'a Args,
    t: &'a VethPair,
    listener: &'a TcpListener,
}

impl Suite<'_> {
    /// synguard's totals, from its pinned counters.
    fn counters(&self) -> Result<Counters> {
        Counters::read(&self.t.a.iface)
    }

    /// The handoff the daemon runs in, as its pinned `CONFIG` says.
    fn handoff(&self) -> Result<Handoff> {
        let h = synguard_harness::synguard::handoff(&self.t.a.iface)?;
        Ok(Handoff::from_u8(h))
    }

    /// The daemon runs in the filter handoff: the kernel's syncookies answer, and forged
    /// ACKs go to the kernel, which resets them.
    fn filter(&self) -> Result<bool> {
        Ok(self.handoff()? == Handoff::Filter)
    }

    /// One real client in peer connects to the listener; 4 bytes flow each way.
    fn connect_exchange(&self) -> Result<()> {
        let srv: SocketAddr = (self.t.a.ipv4, self.args.port).into();
        let client = in_netns(&self.t.b.netns, || {
            TcpStream::connect_timeout(&srv, Duration::from_secs(10))
                .with_context(|| format!("connecting to {srv} from the peer namespace"))
        })?;
        client.set_read_timeout(Some(Duration::from_secs(10)))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match self.listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("the client connected but accept() returned nothing in 10 s");
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("accept"),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut client = client;
        client.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).context("server reading")?;
        if &buf != b"ping" {
            bail!("server read {buf:?}");
        }
        conn.write_all(b"pong")?;
        client.read_exact(&mut buf).context("client reading")?;
        if &buf != b"pong" {
            bail!("client read {buf:?}");
        }
        // The client closes first, so TIME_WAIT stays in peer.
        drop(client);
        drop(conn);
        Ok(())
    }

    /// A real client in peer connects through synguard's cookie (the kernel's, in the
    /// kernel-cookie handoff); bytes flow both ways.
    fn handshake(&self) -> Result<String> {
        let before = self.counters()?;
        let handoff = self.handoff()?;
        self.connect_exchange()?;
        let d = self.counters()?.delta(&before);
        let (sent, valid, assigned) = (
            d.get(Counter::CookieSent),
            d.get(Counter::CookieAckValid),
            d.get(Counter::ReqskAssigned),
        );
        if self.filter()? {
            let to_kernel = d.get(Counter::SynToKernel);
            if to_kernel == 0 || sent != 0 {
                bail!(
                    "filter handoff: connected, but syn_to_kernel +{to_kernel}, cookie_sent +{sent}"
                );
            }
            return Ok(format!(
                "connected, 4 bytes each way; filter handoff: syn_to_kernel +{to_kernel}, \
                 cookie_sent +0"
            ));
        }
        let summary =
            format!("cookie_sent +{sent}, cookie_ack_valid +{valid}, reqsk_assigned +{assigned}");
        if handoff == Handoff::KernelCookie {
            // The kernel completes the handshake itself: nothing is handed off.
            if sent == 0 || valid == 0 || assigned != 0 {
                bail!(
                    "kernel-cookie handoff: connected, but not through the kernel's cookie in \
                     XDP: {summary}, kernel_cookie_declined +{}",
                    d.get(Counter::KernelCookieDeclined)
                );
            }
            return Ok(format!(
                "connected, 4 bytes each way; kernel-cookie handoff: {summary}"
            ));
        }
        if sent == 0 || assigned == 0 {
            bail!("connected, but not through synguard's cookie: {summary}");
        }
        Ok(format!("connected, 4 bytes each way; {summary}"))
    }

    /// A segment from peer to the protected port, built by the tests' one frame builder.
    fn frame(&self, flags: u8, src_port: u16, seq: u32, ack: Option<u32>) -> Vec<u8> {
        let (peer, srv) = (&self.t.b, &self.t.a);
        let mut s = Seg::syn4();
        s.src[..4].copy_from_slice(&peer.ipv4.octets());
        s.dst[..4].copy_from_slice(&srv.ipv4.octets());
        s.sport = src_port;
        s.dport = self.args.port;
        s.seq = seq;
        s.ack = ack.unwrap_or(0);
        s.flags = flags | if ack.is_some() { flags::ACK } else { 0 };
        // Options only where a stack sends them: on a SYN that opens a connection.
        s.options = if flags & (flags::SYN | flags::FIN | flags::RST) == flags::SYN {
            linux_syn_options(1)
        } else {
            Vec::new()
        };
        let mut f = s.frame();
        f[..6].copy_from_slice(&srv.mac);
        f[6..12].copy_from_slice(&peer.mac);
        f
    }

    /// The peer's raw socket, opened inside its namespace.
    fn peer_socket(&self) -> Result<RawSock> {
        in_netns(&self.t.b.netns, || RawSock::open(&self.t.b.iface))
    }

    /// One hand-made frame from peer: the expected counter moves by one, and the reply is
    /// a SYN+ACK (answered) or nothing (dropped).
    fn flag_case(&self, c: &FlagCase) -> Result<String> {
        let src_port = 40000 + (std::process::id() % 10000) as u16 + c.name.len() as u16 * 7;
        let frame = self.frame(c.flags, src_port, 0x1000_0000, None);
        let sock = self.peer_socket()?;
        // In the filter handoff the kernel answers the SYN (its SYN+ACK comes back all the
        // same), and XDP counts it as passed to it.
        let counter = if c.counter == Counter::CookieSent && self.filter()? {
            Counter::SynToKernel
        } else {
            c.counter
        };
        let before = self.counters()?;
        sock.send(&frame)?;
        let port = self.args.port;
        let wait = Duration::from_millis(500);
        let replies = if c.answered {
            let syn_acks = net::replies(&sock, wait, |f| {
                net::tcp_flags(f, port, src_port).is_some_and(net::is_syn_ack)
            })?;
            usize::from(syn_acks > 0)
        } else {
            net::replies(&sock, wait, |f| net::tcp_flags(f, port, src_port).is_some())?
        };
        let moved = self.counters()?.delta(&before).get(counter);
        let name = counter.name();
        if moved != 1 {
            bail!("{name} moved by {moved}, not 1");
        }
        if c.answered {
            if replies == 0 {
                bail!("{name} +1 but no SYN+ACK came back");
            }
            // Leave no half-open flow behind: the kernel never saw it, so a RST is not needed.
            Ok(format!("answered with a SYN+ACK; {name} +1"))
        } else {
            if replies > 0 {
                bail!(
                    "{name} +1 but the server replied ({replies} segment(s)): it was not dropped"
                );
            }
            Ok(format!("dropped, no reply; {name} +1"))
        }
    }

    /// `n` ACKs with made-up cookies: every one dropped, none answered, no socket opened.
    fn forged_acks(&self, n: u32) -> Result<String> {
        let sock = self.peer_socket()?;
        let port = self.args.port;
        let sockets_before = in_netns(&self.t.a.netns, || net::tcp_sockets_on(port))?;
        let before = self.counters()?;
        let mut rng = Rng::seeded();
        let mut frames = Vec::new();
        for _ in 0..n {
            let src_port = 20000 + (rng.next() % 20000) as u16;
            frames.push((
                src_port,
                self.frame(0, src_port, rng.next(), Some(rng.next())),
            ));
        }
        for (_, f) in &frames {
            sock.send(f)?;
        }
        let ports: std::collections::HashSet<u16> = frames.iter().map(|(p, _)| *p).collect();
        let replies = net::replies(&sock, Duration::from_millis(800), |f| {
            ports.iter().any(|&p| net::tcp_flags(f, port, p).is_some())
        })?;
        let d = self.counters()?.delta(&before);
        let dropped = d.get(Counter::CookieAckInvalid);
        let to_kernel = d.get(Counter::AckToKernel);
        let sockets_after = in_netns(&self.t.a.netns, || net::tcp_sockets_on(port))?;
        let accepted = match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(e).context("accept"),
        };
        if accepted || sockets_after > sockets_before {
            bail!(
                "a socket opened (accept: {accepted}, sockets on :{port} {sockets_before} -> {sockets_after})"
            );
        }
        if self.filter()? {
            // The filter handoff validates nothing: the kernel checks its own cookie and
            // resets each ACK.
            if to_kernel != u64::from(n) || dropped != 0 {
                bail!(
                    "filter handoff: ack_to_kernel +{to_kernel}, cookie_ack_invalid +{dropped}, not {n} and 0"
                );
            }
            return Ok(format!(
                "{n} sent: filter handoff, ack_to_kernel +{to_kernel}, {replies} kernel replies, no socket"
            ));
        }
        if dropped != u64::from(n) {
            bail!("cookie_ack_invalid moved by {dropped}, not {n}");
        }
        if replies > 0 {
            bail!("{replies} replies came back: some forged ACKs reached the kernel");
        }
        if accepted || sockets_after > sockets_before {
            bail!(
                "a socket opened (accept: {accepted}, sockets on :{port} {sockets_before} -> {sockets_after})"
            );
        }
        Ok(format!(
            "{n} sent: cookie_ack_invalid +{dropped}, no reply, no socket"
        ))
    }
}

/// xorshift64*: forged sequence numbers only need to differ, not to be secret.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Rng(t | 1)
    }

    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::load_failure;

    #[test]
    fn the_verifier_verdict_and_its_source_line_are_picked_out() {
        // Abridged from 6.12's rejection of synguard's XDP program.
        let log = "[2026-12-02T05:07:43Z INFO  synguard::daemon] cookie key epoch 1 (new)
error: verifier rejected the XDP program: the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier output: 0: R1=ctx() R10=fp0
; #[xdp] @ main.rs:20
0: (bf) r6 = r1                       ; R1=ctx() R6_w=ctx()
; if p + N > self.end { @ packet.rs:125
530: (0f) r3 += r1
math between pkt pointer and register with unbounded min value is not allowed
verification time 47273 usec
stack depth 296+0
processed 287 insns (limit 1000000) max_states_per_insn 0 total_states 19 peak_states 19 mark_read 15
: Invalid argument (os error 22)
";
        assert_eq!(
            load_failure(log),
            "verifier rejected the XDP program: the BPF_PROG_LOAD syscall returned Invalid \
             argument (os error 22) | verifier: math between pkt pointer and register with \
             unbounded min value is not allowed | at packet.rs:125: `if p + N > self.end {` | \
             processed 287 insns"
        );
        assert_eq!(super::processed_insns(log), Some(287));
    }

    #[test]
    fn a_refusal_without_a_verifier_log_keeps_its_error() {
        let log = "error: Linux 6.1.0-57-cloud-amd64 has no bpf_sk_assign_tcp_reqsk kfunc\n";
        assert_eq!(
            load_failure(log),
            "Linux 6.1.0-57-cloud-amd64 has no bpf_sk_assign_tcp_reqsk kfunc"
        );
    }
}
