//! Running code and commands inside a named network namespace.
//!
//! Only the *network* namespace is entered, never the mount namespace. `ip netns exec` also
//! remounts `/sys` privately, which hides (and later drops) pins under `/sys/fs/bpf`; synguard
//! pins its maps there, so everything here uses `nsenter --net=` or `setns(2)` on a thread.

use std::{
    ffi::OsStr,
    fs::File,
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Path of the bind mount `ip netns add` creates for `name`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Moves the *calling thread* into network namespace `name`.
///
/// Only call this on a thread you own and that does nothing else afterwards: the rest of the
/// process stays where it was. Sockets created after this call belong to `name` for their whole
/// life, whichever thread later uses them.
pub fn enter(name: &str) -> Result<()> {
    let path = netns_path(name);
    let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into netns {name}"))?;
    Ok(())
}

/// Runs `f` on a fresh thread that has entered network namespace `name`, and returns its result.
///
/// A dedicated thread keeps the caller's namespace untouched; the thread ends with `f`, so it
/// holds no reference that would keep the namespace alive after teardown.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    thread::scope(|s| {
        let h = thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(s, || {
                enter(name)?;
                f()
            })
            .context("spawn netns thread")?;
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// A `Command` that runs `program` inside network namespace `name` via `nsenter --net`.
///
/// nsenter execs the program without forking, so the child's PID is the program's PID and it
/// can be ended by that PID.
pub fn command<S: AsRef<OsStr>>(name: &str, program: S) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns_path(name).display()))
        .arg("--")
        .arg(program);
    c
}

/// Runs a command to completion and fails with its stderr if it exits non-zero.
pub fn run_checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip ARGS…` in the caller's namespace (use `-n NS` to target a namespace).
pub fn ip(args: &[&str]) -> Result<Output> {
    run_checked(Command::new("ip").args(args))
}

/// Loads the nftables `ruleset` (`nft -f -`) inside `netns`.
pub fn nft(netns: &str, ruleset: &str) -> Result<()> {
    let mut child = command(netns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install nftables)")?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("nft stdin")?,
        ruleset.as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f failed: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Writes `/proc/sys/<key with dots as slashes>` inside `netns`.
///
/// `/proc/sys/net` resolves against the *current thread's* network namespace, so the write
/// happens on a thread that entered `netns`.
pub fn set_sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key);
    in_netns(netns, || {
        std::fs::write(&path, value)
            .with_context(|| format!("write {value:?} to {} in netns {netns}", path.display()))
    })
}

/// Reads a sysctl as seen from inside `netns`, trimmed.
pub fn get_sysctl(netns: &str, key: &str) -> Result<String> {
    let path = sysctl_path(key);
    in_netns(netns, || {
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("read {} in netns {netns}", path.display()))?
            .trim()
            .to_string())
    })
}

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// Names of all namespaces `ip netns list` reports.
pub fn list_netns() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Interface counters as the kernel reports them (`ip -s -j link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

/// Reads `iface`'s counters inside `netns`. Netlink is used rather than
/// `/sys/class/net/*/statistics` because this process's `/sys` shows the root namespace.
pub fn link_stats(netns: &str, iface: &str) -> Result<LinkStats> {
    let out = ip(&["-n", netns, "-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse ip -j output")?;
    let s = &v[0]["stats64"];
    let g = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
    if s.is_null() {
        bail!("no stats64 for {iface} in {netns}");
    }
    Ok(LinkStats {
        rx_packets: g("rx", "packets"),
        rx_bytes: g("rx", "bytes"),
        rx_dropped: g("rx", "dropped"),
        tx_packets: g("tx", "packets"),
        tx_bytes: g("tx", "bytes"),
        tx_dropped: g("tx", "dropped"),
    })
}

/// MAC address of `iface` inside `netns`.
pub fn link_mac(netns: &str, iface: &str) -> Result<[u8; 6]> {
    let out = ip(&["-n", netns, "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse ip -j output")?;
    let s = v[0]["address"]
        .as_str()
        .with_context(|| format!("no address for {iface} in {netns}"))?;
    parse_mac(s)
}

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {s:?}");
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

/// Formats a MAC the way `ip` prints it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
