//! `synguard check`: can synguard protect this host (and these ports) as it is configured?

use std::path::Path;

use anyhow::{Result, bail};

use crate::{listeners, loader, pinned::Pinned, pins, ports::PortSet, settings};

/// Linux release that added `bpf_sk_assign_tcp_reqsk`.
pub const MIN_KERNEL: (u32, u32) = (6, 9);
pub const KFUNC: &str = "bpf_sk_assign_tcp_reqsk";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// (major, minor, patch) from a release string such as "6.18.44-fc-v669".
pub fn parse_release(r: &str) -> Option<(u32, u32, u32)> {
    let mut it = r
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next()??;
    let patch = it.next().flatten().unwrap_or(0);
    // Only the leading dotted triple counts: "6.9-rc1" has no patch.
    let dotted: Vec<&str> = r.split(['-', '+', '_', ' ']).next()?.split('.').collect();
    let patch = if dotted.len() >= 3 { patch } else { 0 };
    Some((major, minor, patch))
}

pub fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The kernel check, alone: `run` refuses to load on a kernel without the kfunc.
pub fn kernel_ok(release: &str) -> Result<(), String> {
    match parse_release(release) {
        Some((maj, min, _)) if (maj, min) >= MIN_KERNEL => Ok(()),
        Some((maj, _, _)) if maj >= 6 => Err(format!(
            "Linux {release} has no {KFUNC} kfunc (added in {}.{}); the documented fallback for \
             6.0-6.8 (kernel cookie helpers + nftables synproxy) is not implemented yet",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        Some(_) => Err(format!(
            "Linux {release} is too old: synguard needs {}.{} or newer",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        None => Err(format!("cannot parse the kernel release {release:?}")),
    }
}

pub fn require_kernel() -> Result<()> {
    kernel_ok(&kernel_release()).map_err(anyhow::Error::msg)
}

fn sysctl(name: &str) -> Result<i64, String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{path} holds {:?}", text.trim()))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Warn(String),
    Fail(String),
}

pub struct Report {
    pub items: Vec<(String, Outcome)>,
}

impl Report {
    fn push(&mut self, what: impl Into<String>, o: Outcome) {
        self.items.push((what.into(), o));
    }

    pub fn failures(&self) -> usize {
        self.items
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
            .count()
    }
}

fn kfunc_in_btf() -> Result<bool, String> {
    let btf = aya_obj::btf::Btf::parse_file(Path::new(VMLINUX_BTF), aya::Endianness::default())
        .map_err(|e| format!("cannot parse {VMLINUX_BTF}: {e}"))?;
    Ok(btf
        .id_by_type_name_kind(KFUNC, aya_obj::btf::BtfKind::Func)
        .is_ok())
}

/// Runs every check. `iface` and `ports` are optional: without ports, those of the running
/// instance on `iface`, else the defaults.
pub fn run_checks(iface: Option<&str>, ports: Option<PortSet>) -> Report {
    let mut r = Report { items: Vec::new() };
    let release = kernel_release();
    match kernel_ok(&release) {
        Ok(()) => r.push("kernel", Outcome::Ok(format!("Linux {release}"))),
        Err(e) => r.push("kernel", Outcome::Fail(e)),
    }
    if Path::new(VMLINUX_BTF).exists() {
        r.push("BTF", Outcome::Ok(format!("{VMLINUX_BTF} present")));
        match kfunc_in_btf() {
            Ok(true) => r.push("kfunc", Outcome::Ok(format!("{KFUNC} in vmlinux BTF"))),
            Ok(false) => r.push(
                "kfunc",
                Outcome::Fail(format!(
                    "{KFUNC} is not in vmlinux BTF (kernel built without it, or older than {}.{})",
                    MIN_KERNEL.0, MIN_KERNEL.1
                )),
            ),
            Err(e) => r.push("kfunc", Outcome::Fail(e)),
        }
    } else {
        r.push(
            "BTF",
            Outcome::Fail(format!(
                "{VMLINUX_BTF} is missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y"
            )),
        );
    }

    // (sysctl, minimum, what it is for)
    for (name, min, why) in [
        (
            "net.ipv4.tcp_syncookies",
            1,
            "the kernel accepts cookie ACKs only with syncookies on",
        ),
        (
            "net.ipv4.tcp_window_scaling",
            1,
            "restores the window scale a cookie carries",
        ),
        (
            "net.ipv4.tcp_sack",
            1,
            "restores SACK-permitted from a cookie",
        ),
        (
            "net.ipv4.tcp_timestamps",
            1,
            "restores timestamps from a cookie",
        ),
    ] {
        match sysctl(name) {
            Ok(v) if v >= min => r.push(name, Outcome::Ok(format!("{v}"))),
            Ok(v) => r.push(
                name,
                Outcome::Fail(format!(
                    "is {v}, needs >= {min}: {why} (sysctl -w {name}={min})"
                )),
            ),
            Err(e) => r.push(name, Outcome::Fail(e)),
        }
    }

    let mut ports = ports;
    if let Some(iface) = iface {
        match loader::ifindex(iface) {
            Ok(idx) => {
                r.push(
                    format!("interface {iface}"),
                    Outcome::Ok(format!("ifindex {idx}")),
                );
                match loader::choose_mode(iface, settings::XdpModeArg::Auto) {
                    Ok(c) => r.push(
                        "xdp mode (auto)",
                        Outcome::Ok(format!("{}: {}", loader::mode_name(c.mode), c.reason)),
                    ),
                    Err(e) => r.push("xdp mode (auto)", Outcome::Warn(format!("{e:#}"))),
                }
                let dir = pins::dir(iface);
                if dir.is_dir() {
                    if ports.is_none() {
                        ports = Pinned::at(&dir).ports().ok();
                    }
                    r.push(
                        "synguard",
                        Outcome::Ok(format!("pinned at {}", dir.display())),
                    );
                } else {
                    r.push(
                        "synguard",
                        Outcome::Ok("not running on this interface".into()),
                    );
                }
            }
            Err(e) => r.push(
                format!("interface {iface}"),
                Outcome::Fail(format!("{e:#}")),
            ),
        }
    }
    let ports = ports
        .unwrap_or_else(|| crate::ports::parse(settings::DEFAULT_PORTS).expect("default ports"));
    let listening = listeners::listening_ports();
    for p in ports.iter() {
        if ports.len() > 64 && !listening.contains(&p) {
            // Large ranges: report only the summary below.
            continue;
        }
        if listening.contains(&p) {
            r.push(
                format!("listener :{p}"),
                Outcome::Ok("TCP socket listening".into()),
            );
        } else {
            r.push(
                format!("listener :{p}"),
                Outcome::Fail(format!(
                    "nothing listens on TCP port {p} in this network namespace: cookie ACKs \
                     for it would have no socket to land on"
                )),
            );
        }
    }
    if ports.len() > 64 {
        let missing = ports.iter().filter(|p| !listening.contains(p)).count();
        let o = if missing == 0 {
            Outcome::Ok(format!("all {} ports have listeners", ports.len()))
        } else {
            Outcome::Warn(format!(
                "{missing} of {} protected ports have no listener",
                ports.len()
            ))
        };
        r.push(format!("listeners {ports}"), o);
    }
    r
}

pub fn print(r: &Report) -> Result<()> {
    for (what, o) in &r.items {
        let (tag, msg) = match o {
            Outcome::Ok(m) => ("ok  ", m),
            Outcome::Warn(m) => ("warn", m),
            Outcome::Fail(m) => ("FAIL", m),
        };
        println!("{tag}  {what:<28} {msg}");
    }
    let n = r.failures();
    if n > 0 {
        bail!("{n} check(s) failed");
    }
    println!("all checks passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse_release("6.9.0"), Some((6, 9, 0)));
        assert_eq!(parse_release("6.9-rc1"), Some((6, 9, 0)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15, 0)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn kernel_gate() {
        assert!(kernel_ok("6.9.0").is_ok());
        assert!(kernel_ok("6.18.44-fc-v669").is_ok());
        assert!(kernel_ok("7.0.1").is_ok());
        let e = kernel_ok("6.8.12").unwrap_err();
        assert!(
            e.contains("no bpf_sk_assign_tcp_reqsk") && e.contains("not implemented"),
            "{e}"
        );
        assert!(kernel_ok("5.15.0").unwrap_err().contains("too old"));
        assert!(kernel_ok("x").unwrap_err().contains("cannot parse"));
    }
}
