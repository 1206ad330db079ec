//! Live tests of what an operator sees of an attack: a flood shows up in the metrics with
//! the right labels and in `synguard events` with the right reasons, sources, ports, flags
//! and VLAN, sampled exactly 1 in `event_sample` per reason and CPU; under a flood from a
//! single source, `synguard top` names that source; and with tens of thousands of sockets on
//! the protected port, a scrape loop does not delay the daemon's auto-mode tick by 10 ms.
//!
//! Needs root; fails under CI without it and skips otherwise.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::Stdio,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{Map, MapData, PerCpuArray};
use synguard_common::{
    flags,
    maps::{Counter, DropEvent, EVENTS_BYTES, names},
    testutil::{Seg, linux_syn_options},
};
use synguard_harness::{
    Counters, NsChild, RawSock, VethPair, fixture::PAIR_V4_NET, netns, pin_dir, root_or_skip,
};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_synguard");
const METRICS: &str = "127.0.0.1:9531";

/// A segment with `flags` from host `src` of the pair's /24 (not b's own address) to a's
/// PORT, tagged `vlan` if given.
fn frame(p: &VethPair, src: u8, sport: u16, fl: u8, vlan: Option<u16>) -> Vec<u8> {
    let mut s = Seg::syn4();
    let [n0, n1, n2] = PAIR_V4_NET;
    s.src[..4].copy_from_slice(&[n0, n1, n2, src]);
    s.dst[..4].copy_from_slice(&p.a.ipv4.octets());
    s.dport = PORT;
    s.sport = sport;
    s.flags = fl;
    s.vlan = vlan;
    s.options = linux_syn_options(0x1234_5678);
    let mut f = s.frame();
    f[..6].copy_from_slice(&p.a.mac);
    f[6..12].copy_from_slice(&p.b.mac);
    f
}

fn host(src: u8) -> String {
    let [n0, n1, n2] = PAIR_V4_NET;
    format!("{n0}.{n1}.{n2}.{src}")
}

/// Sends `frames` from b, then waits until a's XDP has counted `n` more frames under `c`.
fn send_and_count(p: &VethPair, frames: &[Vec<u8>], c: Counter, n: u64) -> Result<()> {
    let before = Counters::read(&p.a.iface)?;
    netns::in_netns(&p.b.netns, || {
        let sock = RawSock::open(&p.b.iface)?;
        for f in frames {
            sock.send(f)?;
        }
        Ok(())
    })?;
    for _ in 0..200 {
        if Counters::read(&p.a.iface)?.delta(&before).get(c) >= n {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("{n} frames under {} did not arrive", c.name())
}

/// This reason's count on each CPU.
fn per_cpu(p: &VethPair, c: Counter) -> Result<Vec<u64>> {
    let m = MapData::from_pin(pin_dir(&p.a.iface).join(names::COUNTERS))?;
    let m = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(m))?;
    Ok(m.get(&(c as u32), 0)?.iter().copied().collect())
}

/// `synguard events --json` on a, its lines arriving on the channel, once it listens.
fn start_events(
    p: &VethPair,
    extra: &[&str],
) -> Result<(NsChild, mpsc::Receiver<serde_json::Value>)> {
    let mut cmd = p.command(&p.a.netns, BIN);
    cmd.args(["events", "--iface", &p.a.iface, "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = p.spawn(&mut cmd, false)?;
    let mut err = BufReader::new(child.take_stderr().context("stderr")?);
    let mut first = String::new();
    err.read_line(&mut first)?;
    ensure!(first.starts_with("listening on"), "events said: {first}");
    let out = child.take_stdout().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// The next `n` events, failing if they do not all come within a few seconds; then checks
/// that no more follow for a moment.
fn take(rx: &mpsc::Receiver<serde_json::Value>, n: usize) -> Result<Vec<serde_json::Value>> {
    let mut v = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => v.push(e),
            Err(_) => bail!("{} of {n} events arrived: {v:?}", v.len()),
        }
    }
    if let Ok(extra) = rx.recv_timeout(Duration::from_millis(300)) {
        bail!("an event more than the {n} expected: {extra}");
    }
    Ok(v)
}

/// GET /metrics inside a's namespace: the body.
fn scrape(p: &VethPair) -> Result<String> {
    netns::in_netns(&p.a.netns, || {
        let mut s = TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })
}

/// The value of the sample `series` (name and labels, exactly) in a scrape.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// synguard on a in `mode`, with its metrics endpoint on a's loopback.
fn start(p: &VethPair, mode: &str, extra: &[&str]) -> Result<synguard_harness::synguard::Daemon> {
    netns::run_checked(netns::command(&p.a.netns, "ip").args(["link", "set", "lo", "up"]))?;
    let ports = PORT.to_string();
    let mut args = vec![
        "--ports",
        &ports,
        "--mode",
        mode,
        "--xdp-mode",
        "generic",
        "--metrics",
        METRICS,
    ];
    args.extend(extra);
    p.synguard(BIN, &p.a).start(&p.a.iface, &args)
}

#[test]
fn a_flood_shows_in_metrics_events_and_top() -> Result<()> {
    if !root_or_skip("a_flood_shows_in_metrics_events_and_top") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let _listener = netns::in_netns(&pair.a.netns, || Ok(TcpListener::bind(("0.0.0.0", PORT))?))?;
    // One SYN a second per source with a bucket of one: a source's second SYN is limited.
    let daemon = start(
        &pair,
        "always",
        &[
            "--event-sample",
            "1",
            "--src-syn-rate",
            "1",
            "--src-syn-burst",
            "1",
        ],
    )?;
    let (events, rx) = start_events(&pair, &[])?;

    // 1. Every drop an event (event_sample 1): SYN+FIN from .60 on VLAN 100, NULL from .61.
    let synfin: Vec<_> = (0..50)
        .map(|i| frame(&pair, 60, 41000 + i, flags::SYN | flags::FIN, Some(100)))
        .collect();
    let null: Vec<_> = (0..30)
        .map(|i| frame(&pair, 61, 42000 + i, 0, None))
        .collect();
    send_and_count(&pair, &synfin, Counter::FlagSynFin, 50)?;
    send_and_count(&pair, &null, Counter::FlagNull, 30)?;
    let got = take(&rx, 80)?;
    let mut by: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for e in &got {
        assert_eq!(e["iface"], pair.a.iface.as_str(), "{e}");
        assert_eq!(e["dst_port"], PORT, "{e}");
        assert_eq!(e["action"], "drop", "{e}");
        *by.entry((
            e["reason"].as_str().unwrap().into(),
            e["src"].as_str().unwrap().into(),
            e["flags"].as_str().unwrap().into(),
            e["vlan"].to_string(),
        ))
        .or_default() += 1;
    }
    let want: BTreeMap<_, _> = [
        (
            ("flag_syn_fin".into(), host(60), "SF".into(), "[100]".into()),
            50,
        ),
        (
            ("flag_null".into(), host(61), "none".into(), "[]".into()),
            30,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(by, want);

    // 2. The same flood in the metrics, under its reason with action="drop".
    let body = scrape(&pair)?;
    let i = format!("iface=\"{}\"", pair.a.iface);
    for (reason, n) in [("flag_syn_fin", 50.0), ("flag_null", 30.0)] {
        let series = format!("synguard_verdicts_total{{{i},reason=\"{reason}\",action=\"drop\"}}");
        assert_eq!(sample(&body, &series), Some(n), "{series}:\n{body}");
    }

    // 3. Sampled 1 in 4, exactly: the drops that bring a CPU's count to a multiple of 4.
    let out =
        pair.synguard(BIN, &pair.a)
            .ok(&["set", "--iface", &pair.a.iface, "event_sample", "4"])?;
    assert!(out.contains("event_sample"), "{out}");
    let before = per_cpu(&pair, Counter::FlagSynFin)?;
    let more: Vec<_> = (0..41)
        .map(|i| frame(&pair, 62, 43000 + i, flags::SYN | flags::FIN, None))
        .collect();
    send_and_count(&pair, &more, Counter::FlagSynFin, 41)?;
    let after = per_cpu(&pair, Counter::FlagSynFin)?;
    let expect: u64 = before.iter().zip(&after).map(|(b, a)| a / 4 - b / 4).sum();
    // 41 frames: 10 if one CPU took them all, 9 to 12 as CPUs share them.
    assert!((9..=12).contains(&expect), "{before:?} -> {after:?}");
    let got = take(&rx, expect as usize)?;
    assert!(
        got.iter()
            .all(|e| e["src"] == host(62).as_str() && e["reason"] == "flag_syn_fin")
    );
    events.signal(synguard_harness::Signal::SIGINT);

    // 4. A SYN flood from one source: `top` names it first, `events --reason` shows it.
    let (_limited_events, rx) = start_events(&pair, &["--reason", "rate_limited"])?;
    let flood: Vec<_> = (0..400)
        .map(|i| frame(&pair, 77, 44000 + i, flags::SYN, None))
        .collect();
    let few: Vec<_> = (0..5)
        .map(|i| frame(&pair, 78, 45000 + i, flags::SYN, None))
        .collect();
    send_and_count(&pair, &flood, Counter::SynSeen, 400)?;
    send_and_count(&pair, &few, Counter::SynSeen, 5)?;
    let limited = Counters::read(&pair.a.iface)?.get(Counter::RateLimited);
    assert!(limited >= 395, "rate_limited {limited}");
    let top = pair.synguard(BIN, &pair.a).ok(&[
        "top",
        "--iface",
        &pair.a.iface,
        "--once",
        "--json",
        "-n",
        "3",
    ])?;
    let top: serde_json::Value = serde_json::from_str(top.trim())?;
    let rows = top["sources"].as_array().context("sources")?;
    assert_eq!(rows[0]["source"], format!("{}/32", host(77)), "{top}");
    assert!(rows[0]["rate_limited"].as_u64().unwrap() >= 395, "{top}");
    assert_eq!(rows[0]["drops"], rows[0]["rate_limited"], "{top}");
    assert!(rows[0]["bucket_tokens"].is_number(), "{top}");
    assert_eq!(rows.len(), 3, "{top}");
    // The table form names it too.
    let table = pair
        .synguard(BIN, &pair.a)
        .ok(&["top", "--iface", &pair.a.iface, "--once"])?;
    let first_row = table
        .lines()
        .find(|l| l.contains(&host(60)) || l.contains(&host(77)))
        .unwrap_or_default();
    assert!(first_row.contains(&host(77)), "{table}");
    // 1 in 4 of them, per CPU, and only rate_limited ones.
    let got = rx.recv_timeout(Duration::from_secs(5))?;
    assert_eq!(got["reason"], "rate_limited");
    assert!(
        got["src"] == host(77).as_str() || got["src"] == host(78).as_str(),
        "{got}"
    );
    assert_eq!(got["flags"], "S");
    daemon.stop()?;
    Ok(())
}

#[test]
fn monitor_mode_reports_would_be_drops_as_passed() -> Result<()> {
    if !root_or_skip("monitor_mode_reports_would_be_drops_as_passed") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let ports = PORT.to_string();
    let daemon = pair.synguard(BIN, &pair.a).start(
        &pair.a.iface,
        &synguard_harness::synguard::test_run_args("monitor", &ports, &["--event-sample", "1"]),
    )?;
    let (_events, rx) = start_events(&pair, &[])?;
    let f: Vec<_> = (0..3)
        .map(|i| frame(&pair, 63, 46000 + i, flags::SYN | flags::FIN, None))
        .collect();
    send_and_count(&pair, &f, Counter::FlagSynFin, 3)?;
    for e in take(&rx, 3)? {
        assert_eq!(e["action"], "pass", "{e}");
        assert_eq!(e["reason"], "flag_syn_fin", "{e}");
    }
    daemon.stop()?;
    Ok(())
}

/// The tick-lateness histogram of a scrape: (ticks, ticks at most 10 ms late).
fn ticks(body: &str, iface: &str) -> Result<(f64, f64)> {
    let i = format!("iface=\"{iface}\"");
    let count = sample(
        body,
        &format!("synguard_tick_lateness_seconds_count{{{i}}}"),
    )
    .context("no tick lateness count")?;
    let within = sample(
        body,
        &format!("synguard_tick_lateness_seconds_bucket{{le=\"0.01\",{i}}}"),
    )
    .with_context(|| format!("no 10 ms bucket:\n{body}"))?;
    Ok((count, within))
}

#[test]
fn scraping_with_30k_sockets_does_not_delay_the_tick() -> Result<()> {
    if !root_or_skip("scraping_with_30k_sockets_does_not_delay_the_tick") {
        return Ok(());
    }
    const SOCKETS: usize = 32_000;
    let pair = VethPair::new()?;
    netns::set_sysctl(&pair.a.netns, "net.ipv4.tcp_max_tw_buckets", "100000")?;
    let daemon = start(&pair, "auto", &[])?;
    // 30k TIME_WAIT sockets on the protected port, in a's namespace: the server end closes
    // first, so they hold no file descriptor. Spread over 32 destination addresses: a
    // connect() does not see the server end's TIME_WAIT of the tuple it picks, and a SYN
    // that reuses one replaces it, so with few destinations a sixth of them would.
    let t0 = Instant::now();
    netns::in_netns(&pair.a.netns, || {
        let l = TcpListener::bind(("0.0.0.0", PORT))?;
        for i in 0..SOCKETS {
            let dst = format!("127.0.0.{}:{PORT}", 1 + i % 32);
            let c = TcpStream::connect(&dst)?;
            let (s, _) = l.accept()?;
            drop(s);
            let mut b = [0u8; 1];
            // The server's FIN, then the client's close.
            let _ = (&c).read(&mut b);
            drop(c);
        }
        Ok(())
    })?;
    let setup = t0.elapsed();
    let ss = netns::run_checked(netns::command(&pair.a.netns, "ss").args([
        "-H",
        "-tan",
        "state",
        "time-wait",
        "sport",
        "=",
        &format!(":{PORT}"),
    ]))?;
    let ss_tw = String::from_utf8_lossy(&ss.stdout).lines().count();
    eprintln!("ss counts {ss_tw} TIME_WAIT sockets on :{PORT}");
    let body = scrape(&pair)?;
    let i = format!("iface=\"{}\"", pair.a.iface);
    let tw = sample(
        &body,
        &format!("synguard_listener_sockets{{{i},state=\"time_wait\"}}"),
    )
    .context("no time_wait gauge")?;
    assert!(tw >= 30_000.0, "time_wait {tw} (ss: {ss_tw})");

    let (n0, ok0) = ticks(&body, &pair.a.iface)?;
    // Two scrapers back to back for 3 s.
    let stop = Instant::now() + Duration::from_secs(3);
    let durations: Vec<Duration> = thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut d = Vec::new();
                    while Instant::now() < stop {
                        let t = Instant::now();
                        let b = scrape(&pair).expect("scrape");
                        assert!(b.starts_with("HTTP/1.1 200"), "{b}");
                        d.push(t.elapsed());
                    }
                    d
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let body = scrape(&pair)?;
    let (n1, ok1) = ticks(&body, &pair.a.iface)?;
    let max_late = sample(&body, &format!("synguard_tick_lateness_max_seconds{{{i}}}"));
    let mut sorted = durations.clone();
    sorted.sort();
    eprintln!(
        "{tw} TIME_WAIT sockets made in {setup:?}; {} scrapes, median {:?}, max {:?}; \
         {} ticks meanwhile, {} over 10 ms late; max lateness since start {max_late:?} s",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted.last().unwrap(),
        n1 - n0,
        (n1 - n0) - (ok1 - ok0),
    );
    assert!(sorted.len() >= 4, "too few scrapes");
    assert!(n1 - n0 >= 20.0, "the tick did not run: {n0} -> {n1}");
    assert_eq!(
        (n1 - n0) - (ok1 - ok0),
        0.0,
        "ticks over 10 ms late during the scrapes"
    );
    daemon.stop()?;
    Ok(())
}

/// In a libxdp dispatcher synguard's XDP program is an EXT (freplace) program; its drop
/// report is a global BPF function, which must load and run there too.
#[test]
fn events_work_inside_an_xdp_dispatcher() -> Result<()> {
    if !root_or_skip("events_work_inside_an_xdp_dispatcher") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let ports = PORT.to_string();
    let daemon = pair.synguard(BIN, &pair.a).start(
        &pair.a.iface,
        &synguard_harness::synguard::test_run_args(
            "always",
            &ports,
            &["--xdp-attach", "dispatcher", "--event-sample", "1"],
        ),
    );
    let daemon = match daemon {
        Ok(d) => d,
        // The kernel's own refusal (no EXT programs for root here) is not ours to test.
        Err(e) if format!("{e:#}").contains("EXT") => {
            eprintln!("skipping: this kernel refuses EXT programs: {e:#}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let (_events, rx) = start_events(&pair, &[])?;
    let f: Vec<_> = (0..5)
        .map(|i| frame(&pair, 64, 47000 + i, flags::SYN | flags::FIN, None))
        .collect();
    send_and_count(&pair, &f, Counter::FlagSynFin, 5)?;
    for e in take(&rx, 5)? {
        assert_eq!(e["reason"], "flag_syn_fin", "{e}");
        assert_eq!(e["src"], host(64).as_str(), "{e}");
    }
    daemon.stop()?;
    Ok(())
}

/// With no reader, the ring buffer fills and further events are lost: each is counted
/// (`events_lost`, and `synguard_events_lost_total`), and the books balance exactly: the
/// events the ring kept (which a late reader reports skipping) plus those lost are the
/// drops. The ring holds `EVENTS_BYTES` of records, each a `DropEvent` behind the kernel's
/// 8-byte header, 8-byte aligned.
///
/// Before this counter, a lost event left no trace anywhere.
#[test]
fn events_lost_to_a_full_ring_are_counted_and_the_books_balance() -> Result<()> {
    if !root_or_skip("events_lost_to_a_full_ring_are_counted") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let _listener = netns::in_netns(&pair.a.netns, || Ok(TcpListener::bind(("0.0.0.0", PORT))?))?;
    let _daemon = start(&pair, "always", &["--event-sample", "1"])?;
    let record = (std::mem::size_of::<DropEvent>() + 8).next_multiple_of(8);
    let room = EVENTS_BYTES as usize / record;
    let drops = room + 1500;
    let frames: Vec<_> = (0..drops)
        .map(|i| frame(&pair, 70, 20000 + i as u16, flags::SYN | flags::FIN, None))
        .collect();
    let before = Counters::read(&pair.a.iface)?;
    send_and_count(&pair, &frames, Counter::FlagSynFin, drops as u64)?;
    let d = Counters::read(&pair.a.iface)?.delta(&before);
    let lost = d.get(Counter::EventsLost);
    println!("{drops} drops, room for {room} events of {record} bytes: {lost} lost");
    assert_eq!(lost as usize, drops - room, "{:?}", d.nonzero());
    let body = scrape(&pair)?;
    let series = format!("synguard_events_lost_total{{iface=\"{}\"}}", pair.a.iface);
    assert_eq!(
        sample(&body, &series),
        Some(lost as f64),
        "{series}:\n{body}"
    );
    // A reader now finds what the ring kept: it skips those (it shows new drops only, as
    // tcpdump does) and says how many.
    let mut cmd = pair.command(&pair.a.netns, BIN);
    cmd.args(["events", "--iface", &pair.a.iface, "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = pair.spawn(&mut cmd, false)?;
    let mut first = String::new();
    BufReader::new(child.take_stderr().context("stderr")?).read_line(&mut first)?;
    assert!(
        first.contains(&format!("(skipped {room} older events)")),
        "{first}"
    );
    Ok(())
}
