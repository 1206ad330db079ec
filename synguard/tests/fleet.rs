//! Fleet tests (issue 12): one cookie secret across hosts behind ECMP, and its file.
//!
//! [`EcmpFleet`]: a router sends each SYN to host A and everything else to host B, so every
//! handshake's ACK reaches the host that did not answer its SYN. With a shared `--key-file`
//! B validates A's cookies; with per-host random keys it cannot, and the test tells the two
//! apart. They need root; without it they fail under CI and skip otherwise.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use synguard_common::maps::{Counter, KeySlot, names};
use synguard_harness::{
    ClientOptions, ClientReport, Daemon, Family, FloodKind, FloodOptions, Server, ServerOptions,
    VethPair,
    ecmp::{EcmpFleet, Host, SERVICE_V4},
    exclusive_cores, flood, root_or_skip, run_clients,
    synguard::{pin_dir, test_run_args, wait_for},
};

const PORT: u16 = 8090;
/// Budget for one connection that must complete: generous, since the 2-core machine is
/// shared and a lost SYN+ACK is retransmitted after 1 s and 3 s; a handshake whose ACK a
/// host cannot validate never completes, however long.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that completed, that ran, and the errors of the rest.
type LoadTally = (usize, usize, Vec<(String, usize)>);
const BIN: &str = env!("CARGO_BIN_EXE_synguard");
const SECRET_1: &str = "5f1c0de2a8b94e7d13c6f0a2b4d8e9f1a3c5e7092b4d6f8a0c2e4a6b8d0f2a4c";
const SECRET_2: &str = "c0ffee00deadbeef0123456789abcdef0f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn write_key(path: &Path, hex: &str, mode: u32) -> Result<()> {
    // Replace atomically, as an operator's `install -m 600` or a config tool would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{hex}\n"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn start(f: &EcmpFleet, h: &Host, extra: &[&str]) -> Result<Daemon> {
    let port = PORT.to_string();
    f.synguard(BIN, h)
        .start(&h.iface, &test_run_args("always", &port, extra))
}

fn servers(f: &EcmpFleet) -> Result<[Server; 2]> {
    let opts = || ServerOptions::new(PORT, vec![SERVICE_V4.into()]);
    Ok([
        Server::start(&f.a.netns, opts())?,
        Server::start(&f.b.netns, opts())?,
    ])
}

fn clients(f: &EcmpFleet, n: usize, timeout: Duration) -> Result<ClientReport> {
    let mut o = ClientOptions::new((SERVICE_V4, PORT).into(), n);
    o.concurrency = 4;
    o.timeout = timeout;
    o.response_bytes = 256;
    run_clients(&f.cli_netns, &o)
}

fn syn_flood(f: &EcmpFleet, secs: u64) -> Result<flood::RunningFlood> {
    let mut o = FloodOptions::new(FloodKind::Syn, Family::V4, PORT, Duration::from_secs(secs));
    o.rate_pps = Some(20_000);
    flood::start_to(&f.flood_target(), &o, Some(f.id()))
}

fn key_dir(f: &EcmpFleet) -> Result<PathBuf> {
    let dir = f.temp_path("keys")?;
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// With one key file on both hosts, every handshake completes although no host sees both
/// its SYN and its ACK, under a spoofed SYN flood at host A, across several key epochs
/// (`--key-rotation 4s`, so the test crosses boundaries and pre-installs).
///
/// Measured: 1560/1560 connections over 10 s, 221k flood SYNs at A; on the code before the key file (per-host random keys,
/// the `separate_keys_fail_behind_ecmp` case) 0/400.
#[test]
fn shared_key_file_completes_every_handshake_behind_ecmp() -> Result<()> {
    if !root_or_skip("shared_key_file_completes_every_handshake_behind_ecmp") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let f = EcmpFleet::new()?;
    let dir = key_dir(&f)?;
    let key = dir.join("secret");
    write_key(&key, SECRET_1, 0o600)?;
    let k = key.to_str().context("utf-8 path")?;
    let args = ["--key-file", k, "--key-rotation", "4s"];
    let da = start(&f, &f.a, &args)?;
    let db = start(&f, &f.b, &args)?;
    let _srv = servers(&f)?;
    let fl = syn_flood(&f, 40)?;
    // Clients only once the flood arrives (trafgen can take seconds to start on a busy box).
    wait_for("the flood reaches A", Duration::from_secs(20), || {
        Ok(da.counters()?.get(Counter::SynSeen) > 1000)
    })?;
    // Batches over 10 s: at least two key boundaries and two pre-installs.
    let t0 = Instant::now();
    let mut r = ClientReport::default();
    while t0.elapsed() < Duration::from_secs(10) {
        let b = clients(&f, 40, CONN_TIMEOUT)?;
        r.outcomes.extend(b.outcomes);
        thread::sleep(Duration::from_millis(250));
    }
    let elapsed = t0.elapsed();
    let fr = fl.stop()?;
    let n = r.total();
    let (ca, cb) = (da.counters()?, db.counters()?);
    eprintln!(
        "ECMP, shared key: {}/{} in {elapsed:?}; flood {} SYNs arrived at A; A cookie_sent {}, \
         B cookie_ack_valid {} invalid {}",
        r.ok(),
        r.total(),
        fr.arrived(),
        ca.get(Counter::CookieSent),
        cb.get(Counter::CookieAckValid),
        cb.get(Counter::CookieAckInvalid)
    );
    assert!(n >= 400, "only {n} connections ran");
    assert_eq!(r.ok(), n, "errors: {:?}", r.errors());
    assert!(ca.get(Counter::CookieSent) >= n as u64);
    assert!(cb.get(Counter::CookieAckValid) >= n as u64);
    assert_eq!(cb.get(Counter::CookieSent), 0, "B never sees a SYN");
    // The same keys on both hosts, and B's slots marked minted by its controller.
    let id = |k: &KeySlot| (k.k0, k.k1, k.epoch);
    let (ka, kb) = (pinned_keys(&f.a.iface)?, pinned_keys(&f.b.iface)?);
    assert!(
        ka.iter().all(|a| kb.iter().any(|b| id(a) == id(b))),
        "{ka:?} {kb:?}"
    );
    assert!(pinned_minted(&f.b.iface)?.iter().all(|&m| m >> 32 == 1));
    // The flood, not just the clients' SYNs, reached A.
    assert!(
        ca.get(Counter::SynSeen) > n as u64 + 10_000,
        "the flood did not reach A: {fr:?}"
    );
    assert!(da.log().contains("shared secret"), "{}", da.log());
    Ok(())
}

/// The same fleet with per-host random keys (no key file): B cannot validate A's cookies,
/// so the handshakes fail. This is what tells the two apart.
#[test]
fn separate_keys_fail_behind_ecmp() -> Result<()> {
    if !root_or_skip("separate_keys_fail_behind_ecmp") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let f = EcmpFleet::new()?;
    let da = start(&f, &f.a, &[])?;
    let db = start(&f, &f.b, &[])?;
    let _srv = servers(&f)?;
    let r = clients(&f, 20, Duration::from_millis(1500))?;
    let (ca, cb) = (da.counters()?, db.counters()?);
    eprintln!(
        "ECMP, separate keys: {}/{}; A cookie_sent {}, B cookie_ack_invalid {}",
        r.ok(),
        r.total(),
        ca.get(Counter::CookieSent),
        cb.get(Counter::CookieAckInvalid)
    );
    assert_eq!(
        r.ok(),
        0,
        "separate keys cannot validate each other's cookies"
    );
    // The random-key default stays as strict as before: B, which never minted, accepts
    // against no slot (its MINTED marks are 0), and the hosts' keys differ.
    assert_eq!(pinned_minted(&f.b.iface)?, [0, 0]);
    let (ka, kb) = (pinned_keys(&f.a.iface)?, pinned_keys(&f.b.iface)?);
    let valid = |k: &&KeySlot| k.valid == 1;
    assert!(ka.iter().filter(valid).all(|a| {
        kb.iter()
            .filter(valid)
            .all(|b| (a.k0, a.k1) != (b.k0, b.k1))
    }));
    assert!(ca.get(Counter::CookieSent) > 0, "{ca:?}");
    assert_eq!(cb.get(Counter::CookieAckValid), 0, "{cb:?}");
    assert!(cb.get(Counter::CookieAckInvalid) > 0, "{cb:?}");
    Ok(())
}

/// Waits until the unix time is `lo..hi` seconds into a `period`: away from both switch
/// points of the shared schedule (the pre-install `period / 4` before a boundary, and the
/// boundary), so two hosts that see a new key file a few ms apart choose the same switch
/// epoch (README "Fleet": the documented condition for a gapless swap across hosts).
fn wait_for_phase(period: u64, lo: f64, hi: f64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let phase = now % period as f64;
        if phase >= lo && phase < hi {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Swapping the secret under load loses no handshake: clients connect in a loop while the
/// key file is replaced (atomic rename), then replaced Kubernetes-style (the directory's
/// `..data` symlink swapped), then replaced by a bad file (group-readable) that both hosts
/// refuse, keeping the current secret. Every connection of the loop completes, across
/// the switch epochs.
#[test]
fn secret_swap_under_load_loses_no_handshake() -> Result<()> {
    if !root_or_skip("secret_swap_under_load_loses_no_handshake") {
        return Ok(());
    }
    let _heavy = exclusive_cores();
    let f = EcmpFleet::new()?;
    let dir = key_dir(&f)?;
    // Kubernetes' Secret volume layout: key -> ..data/key, ..data -> ..<timestamp>.
    let generation = |n: u32, hex: &str| -> Result<()> {
        let d = dir.join(format!("..gen{n}"));
        std::fs::create_dir(&d)?;
        write_key(&d.join("key"), hex, 0o400)?;
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..gen{n}"), &tmp)?;
        std::fs::rename(&tmp, dir.join("..data"))?;
        Ok(())
    };
    generation(1, SECRET_1)?;
    std::os::unix::fs::symlink("..data/key", dir.join("key"))?;
    let key = dir.join("key");
    let k = key.to_str().context("utf-8 path")?;
    let args = ["--key-file", k, "--key-rotation", "8s"];
    let da = start(&f, &f.a, &args)?;
    let db = start(&f, &f.b, &args)?;
    for h in [&f.a, &f.b] {
        assert_keys_from(&h.iface, SECRET_1)?;
    }
    let _srv = servers(&f)?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, cli) = (stop.clone(), f.cli_netns.clone());
        thread::spawn(move || -> Result<LoadTally> {
            let (mut ok, mut total, mut errors) = (0, 0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let mut o = ClientOptions::new((SERVICE_V4, PORT).into(), 20);
                o.concurrency = 2;
                o.timeout = CONN_TIMEOUT;
                o.response_bytes = 256;
                let r = run_clients(&cli, &o)?;
                ok += r.ok();
                total += r.total();
                if r.ok() != r.total() {
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    eprintln!("batch ending at unix {at:.3}: {:?}", r.errors());
                }
                errors.extend(r.errors());
                thread::sleep(Duration::from_millis(50));
            }
            Ok((ok, total, errors))
        })
    };
    // Swap 1: a new secret by the Kubernetes symlink swap.
    wait_for_phase(8, 1.0, 3.0);
    generation(2, SECRET_2)?;
    for d in [&da, &db] {
        wait_for("the new secret is taken", Duration::from_secs(5), || {
            Ok(d.log().contains("new secret in"))
        })?;
    }
    // The documented condition for a gapless swap across hosts: both saw the new file
    // before the same switch point, so both switch at the same epoch.
    let switch = |d: &Daemon| {
        d.log()
            .split("it mints from epoch ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    };
    assert_eq!(
        switch(&da),
        switch(&db),
        "the hosts chose different switch epochs"
    );
    assert!(switch(&da).is_some());
    // Let the new secret mint for two epochs, then a refused file.
    thread::sleep(Duration::from_secs(17));
    for h in [&f.a, &f.b] {
        assert_keys_from(&h.iface, SECRET_2)?;
    }
    wait_for_phase(8, 1.0, 3.0);
    let bad = dir.join("..gen3");
    std::fs::create_dir(&bad)?;
    write_key(&bad.join("key"), SECRET_1, 0o640)?;
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink("..gen3", &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for d in [&da, &db] {
        wait_for(
            "the bad key file is refused",
            Duration::from_secs(5),
            || Ok(d.log().contains("refused, keeping the current secret")),
        )?;
    }
    thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let (ok, total, errors) = load.join().map_err(|_| anyhow::anyhow!("load thread"))??;
    let cb = db.counters()?;
    eprintln!(
        "secret swap under load: {ok}/{total} connections completed; B cookie_ack_valid {} \
         invalid {} established_pass {}",
        cb.get(Counter::CookieAckValid),
        cb.get(Counter::CookieAckInvalid),
        cb.get(Counter::EstablishedPass)
    );
    assert!(total >= 100, "only {total} connections ran");
    assert_eq!(
        ok,
        total,
        "errors: {errors:?}\nA:\n{}\nB:\n{}",
        da.log(),
        db.log()
    );
    // Still on the second secret: the refused file changed nothing.
    let after = clients(&f, 20, CONN_TIMEOUT)?;
    assert_eq!(after.ok(), 20);
    assert!(da.log().contains("group or others"), "{}", da.log());
    Ok(())
}

/// The pinned key slots of the instance on `iface`.
fn pinned_keys(iface: &str) -> Result<[KeySlot; 2]> {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(pin_dir(iface).join(names::KEYS))?;
    let keys: Array<_, KeySlot> = Array::try_from(Map::Array(data))?;
    Ok([keys.get(&0, 0)?, keys.get(&1, 0)?])
}

/// Both key slots of the instance on `iface` hold the README's derivation of `secret`:
/// HKDF-SHA256, salt "synguard cookie key v1", info "synguard v1 siphash-2-4 key, epoch "
/// + the epoch big-endian, 16 bytes as k0, k1 little-endian.
fn assert_keys_from(iface: &str, secret_hex: &str) -> Result<()> {
    let secret: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&secret_hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()?;
    for k in pinned_keys(iface)? {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"synguard cookie key v1"), &secret);
        let mut info = b"synguard v1 siphash-2-4 key, epoch ".to_vec();
        info.extend(k.epoch.to_be_bytes());
        let mut okm = [0u8; 16];
        hk.expand(&info, &mut okm)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let want = (
            u64::from_le_bytes(okm[..8].try_into()?),
            u64::from_le_bytes(okm[8..].try_into()?),
        );
        if (k.k0, k.k1) != want || k.valid != 1 {
            bail!(
                "{iface}: slot of epoch {} is not from the expected secret",
                k.epoch
            );
        }
    }
    Ok(())
}

/// The pinned `MINTED` marks of the instance on `iface`.
fn pinned_minted(iface: &str) -> Result<[u64; 2]> {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(pin_dir(iface).join(names::MINTED))?;
    let m: Array<_, u64> = Array::try_from(Map::Array(data))?;
    Ok([m.get(&0, 0)?, m.get(&1, 0)?])
}

/// Every file under `root` that others may read, with its contents.
fn world_readable(root: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in rd {
        let p = e?.path();
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            world_readable(&p, out)?;
        } else if m.is_file()
            && m.permissions().mode() & 0o004 != 0
            && let Ok(b) = std::fs::read(&p)
        {
            out.push((p, b));
        }
    }
    Ok(())
}

/// The secret and the keys derived from it appear in no log line, no `status`/`stats`
/// output, no metrics and no world-readable file of the state and run directories; the
/// key file itself is refused when group/other bits are set, too long, short or not hex,
/// with nothing created.
#[test]
fn key_file_is_checked_and_never_leaks() -> Result<()> {
    if !root_or_skip("key_file_is_checked_and_never_leaks") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let dir = pair.temp_path("leak")?;
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("secret");
    let k = key.to_str().context("utf-8 path")?;
    let sg = pair.synguard(BIN, &pair.a);
    let iface = pair.a.iface.clone();
    let port = PORT.to_string();
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--iface", &iface];
        a.extend(test_run_args("always", &port, extra));
        sg.fails(&a)
    };
    for (content, mode, want) in [
        (SECRET_1.to_string(), 0o644, "group or others"),
        (SECRET_1.to_string(), 0o620, "group or others"),
        (SECRET_1[..60].to_string(), 0o600, "exactly 64 hex digits"),
        (format!("{SECRET_1}ab"), 0o600, "exactly 64 hex digits"),
        (SECRET_1.replace('a', "x"), 0o600, "only hex digits"),
    ] {
        std::fs::write(&key, &content)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode))?;
        let err = run(&["--key-file", k])?;
        assert!(err.contains(want), "mode {mode:o}: {err}");
        assert!(
            !err.contains(SECRET_1) && !err.contains(&SECRET_1[..60]),
            "{err}"
        );
        assert!(!pin_dir(&iface).exists(), "a refused key file created pins");
    }

    write_key(&key, SECRET_1, 0o600)?;
    let port = PORT.to_string();
    let mut metrics_args = test_run_args("always", &port, &["--key-file", k]);
    // Metrics on the namespace's loopback, to grep them too.
    metrics_args.retain(|a| *a != "off" && *a != "--metrics");
    metrics_args.extend(["--metrics", "127.0.0.1:9531"]);
    let d = sg.start(&iface, &metrics_args)?;
    let keys = pinned_keys(&iface)?;
    let mut needles: Vec<String> = vec![SECRET_1.into(), SECRET_1.to_uppercase()];
    for s in keys {
        needles.extend([
            format!("{:x}", s.k0),
            format!("{:x}", s.k1),
            format!("{:016x}", s.k0),
            format!("{:016x}", s.k1),
            s.k0.to_string(),
            s.k1.to_string(),
        ]);
    }
    let mut texts = vec![("daemon log".to_string(), d.log().into_bytes())];
    for args in [
        &["status", "--iface", &iface][..],
        &["stats", "--iface", &iface],
    ] {
        texts.push((args.join(" "), sg.ok(args)?.into_bytes()));
    }
    let status = String::from_utf8_lossy(&texts[1].1).to_string();
    assert!(
        status.contains(&format!("shared secret from {k}")),
        "{status}"
    );
    let metrics = synguard_harness::netns::command(&pair.a.netns, "curl")
        .args(["-sf", "http://127.0.0.1:9531/metrics"])
        .output()?;
    if !metrics.status.success() {
        bail!("metrics: {}", String::from_utf8_lossy(&metrics.stderr));
    }
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("synguard_"));
    texts.push(("metrics".into(), metrics.stdout));
    let mut files = Vec::new();
    world_readable(&pin_dir(&iface), &mut files)?;
    world_readable(Path::new(names::RUN_DIR), &mut files)?;
    for (p, b) in files {
        texts.push((p.display().to_string(), b));
    }
    for (what, bytes) in &texts {
        let t = String::from_utf8_lossy(bytes).to_lowercase();
        for n in &needles {
            assert!(
                !t.contains(&n.to_lowercase()),
                "{what} shows secret material {n}"
            );
        }
    }
    drop(d);
    Ok(())
}

/// `curl` in `netns`: (HTTP status, body).
fn http_get(netns: &str, url: &str) -> Result<(u16, String)> {
    let out = synguard_harness::netns::command(netns, "curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok((
        code.trim().parse().context("HTTP status")?,
        body.to_string(),
    ))
}

/// The DaemonSet's liveness probe: /healthz is 200 while the loop ticks and both links
/// are attached, 503 with the reason once the TC link is gone (its pin removed: the link
/// is released and the program detached, as a restart would find it).
#[test]
fn healthz_reports_attached_programs() -> Result<()> {
    if !root_or_skip("healthz_reports_attached_programs") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let sg = pair.synguard(BIN, &pair.a);
    let port = PORT.to_string();
    let mut args = test_run_args("always", &port, &[]);
    args.retain(|a| *a != "off" && *a != "--metrics");
    args.extend(["--metrics", "127.0.0.1:9531"]);
    let d = sg.start(&pair.a.iface, &args)?;
    let url = "http://127.0.0.1:9531/healthz";
    wait_for("healthz 200", Duration::from_secs(5), || {
        Ok(http_get(&pair.a.netns, url)?.0 == 200)
    })?;
    let (code, body) = http_get(&pair.a.netns, url)?;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("ok: ") && body.contains("XDP link"),
        "{body}"
    );
    std::fs::remove_file(pin_dir(&pair.a.iface).join(names::TC_LINK))?;
    let (code, body) = http_get(&pair.a.netns, url)?;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not attached"), "{body}");
    drop(d);
    Ok(())
}

/// `synguard` as the DaemonSet runs it: fresh mount and PID namespaces with their own
/// /proc (as a container has), the host's bpffs bind-mounted at /sys/fs/bpf from a copy,
/// like a hostPath volume. With `bpffs = false`, a tmpfs is there instead: a container
/// without the host's bpffs.
fn pod(pair: &VethPair, stage: &Path, bpffs: bool) -> synguard_harness::Synguard {
    let script = if bpffs {
        "set -e; mount --bind /sys/fs/bpf \"$STAGE\"; umount -l /sys/fs/bpf; \
         mount --bind \"$STAGE\" /sys/fs/bpf; exec \"$@\""
    } else {
        "set -e; mount -t tmpfs none /sys/fs/bpf; exec \"$@\""
    };
    let stage_env = format!("STAGE={}", stage.display());
    pair.synguard(BIN, &pair.a).wrapped(&[
        "env",
        &stage_env,
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--mount-proc",
        "sh",
        "-c",
        script,
        "sh",
    ])
}

/// Inside a container whose /sys/fs/bpf is not a bpffs, `run` refuses to mount its own
/// (pins would die with the pod), names the fix, and creates nothing.
///
/// On the old code: it mounted a bpffs in the container's mount namespace and ran, its
/// pins invisible to the host and gone with the pod.
#[test]
fn container_without_host_bpffs_is_refused() -> Result<()> {
    if !root_or_skip("container_without_host_bpffs_is_refused") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let port = PORT.to_string();
    let mut args = vec!["run", "--iface", &pair.a.iface];
    args.extend(test_run_args("always", &port, &[]));
    let err = pod(&pair, Path::new("/nonexistent"), false).fails(&args)?;
    assert!(
        err.contains("not a bpffs mount and synguard runs in a container")
            && err.contains("own PID namespace")
            && err.contains("hostPath"),
        "{err}"
    );
    assert!(!pin_dir(&pair.a.iface).exists());
    Ok(())
}

/// The pod-restart case: a daemon in its own mount and PID namespaces is SIGKILLed (the
/// whole pod dies), and a new one starts in fresh namespaces. A second daemon while the
/// first lives is refused by the lock (flock on the pin directory, not a pid check: the
/// first one's pid means nothing in the second one's PID namespace). The programs stay
/// attached throughout, the new daemon takes over the pinned links, keys and lists; a
/// client connecting in a loop across the restart loses no connection.
#[test]
fn pod_restart_in_fresh_namespaces_keeps_everything() -> Result<()> {
    if !root_or_skip("pod_restart_in_fresh_namespaces_keeps_everything") {
        return Ok(());
    }
    let pair = VethPair::new()?;
    let stage = pair.temp_path("hostbpf")?;
    std::fs::create_dir_all(&stage)?;
    let iface = pair.a.iface.clone();
    let port = PORT.to_string();
    let args = test_run_args("always", &port, &["--keep-attached"]);
    let mut d1 = pod(&pair, &stage, true).start(&iface, &args)?;
    let host = pair.synguard(BIN, &pair.a);
    host.ok(&["deny", "add", "--iface", &iface, "198.18.9.77"])?;
    let keys_before = pinned_keys(&iface)?;
    let _srv = Server::start(
        &pair.a.netns,
        ServerOptions::new(PORT, vec![pair.a.ipv4.into()]),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, cli, target) = (stop.clone(), pair.b.netns.clone(), (pair.a.ipv4, PORT));
        thread::spawn(move || -> Result<LoadTally> {
            let (mut ok, mut total, mut errors) = (0, 0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let mut o = ClientOptions::new(target.into(), 10);
                o.concurrency = 2;
                o.timeout = CONN_TIMEOUT;
                o.response_bytes = 256;
                let r = run_clients(&cli, &o)?;
                ok += r.ok();
                total += r.total();
                errors.extend(r.errors());
                thread::sleep(Duration::from_millis(20));
            }
            Ok((ok, total, errors))
        })
    };
    thread::sleep(Duration::from_secs(1));
    let mut run = vec!["run", "--iface", iface.as_str()];
    run.extend(args.iter().copied());
    let err = pod(&pair, &stage, true).fails(&run)?;
    assert!(err.contains("already running"), "{err}");
    assert!(
        !err.contains("(pid "),
        "a pid from another PID namespace: {err}"
    );

    d1.signal(synguard_harness::Signal::SIGKILL);
    d1.wait_exit(Duration::from_secs(10))?;
    // No daemon at all for a second: XDP and TC keep answering from their pinned links.
    thread::sleep(Duration::from_secs(1));
    let d2 = pod(&pair, &stage, true).start(&iface, &args)?;
    assert!(
        d2.log().contains("took over the pinned links"),
        "{}",
        d2.log()
    );
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (ok, total, errors) = load.join().map_err(|_| anyhow::anyhow!("load thread"))??;
    eprintln!("pod restart: {ok}/{total} connections completed across the restart");
    assert!(total >= 20, "only {total} connections ran");
    assert_eq!(ok, total, "errors: {errors:?}\n{}", d2.log());
    let keys_after = pinned_keys(&iface)?;
    assert!(
        keys_before.iter().all(|k| keys_after.contains(k)),
        "keys changed: {keys_before:?} -> {keys_after:?}"
    );
    let deny = host.ok(&["deny", "list", "--iface", &iface])?;
    assert!(deny.contains("198.18.9.77"), "{deny}");
    let status = host.ok(&["status", "--iface", &iface])?;
    assert!(!status.contains("pid 1 "), "{status}");
    drop(d2);
    Ok(())
}
