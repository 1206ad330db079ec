//! `synguard check`: can synguard protect this host (and these ports) as it is configured?

use std::path::Path;

use anyhow::{Result, bail};

use synguard_common::maps::Config;

use crate::{
    iface::{self, IfaceName, XdpRequest},
    listeners,
    pinned_maps::PinnedMaps,
    ports::PortSet,
    settings::Tunables,
    state_dir,
};

/// Linux release that added `bpf_sk_assign_tcp_reqsk`.
pub const MIN_KERNEL: (u32, u32) = (6, 9);
pub const KFUNC: &str = "bpf_sk_assign_tcp_reqsk";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kfunc check, alone: without the kfunc the `kfunc` handoff cannot work, and `auto`
/// picks another ([`crate::handoff::choose`]). `kfunc` is what [`kfunc_in`] found: the
/// kernel's own BTF decides, not the release string, which says nothing of backports or of
/// a kernel built without the feature.
pub fn kernel_ok(release: &str, kfunc: Result<bool, String>) -> Result<(), String> {
    match kfunc {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "Linux {release} has no {KFUNC} kfunc in its BTF (mainline added it in {}.{})",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        Err(e) => Err(format!(
            "cannot tell whether Linux {release} has the {KFUNC} kfunc: {e}"
        )),
    }
}

/// `net.ipv4.tcp_syncookies`.
pub const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
/// `check`'s line for what the kernel-cookie handoff makes of it (beside the required
/// minimum's line, which has the sysctl's own name).
const SYNCOOKIES_FOR_KERNEL_COOKIE: &str = "net.ipv4.tcp_syncookies (kernel-cookie)";

/// What the kernel-cookie handoff makes of `net.ipv4.tcp_syncookies`: XDP answers a SYN
/// only where the kernel would answer it with a cookie, so with 2 it answers every SYN it
/// may, with 1 only while a listener's SYN queue is full (the kernel's own measure of a
/// flood), and with 0 none (the kernel then has no cookies either).
pub fn kernel_cookie_syncookies(v: Result<i64, String>) -> Outcome {
    match v {
        Ok(2) => Outcome::Ok(
            "2: the kernel answers every SYN with a cookie, so XDP answers them all".into(),
        ),
        Ok(1) => Outcome::Warn(format!(
            "1: in the kernel-cookie handoff XDP answers a SYN only where the kernel would \
             send a cookie, which with 1 is only while the listener's SYN queue is full; set \
             {SYNCOOKIES}=2 for XDP to answer every SYN"
        )),
        Ok(v) => Outcome::Warn(format!(
            "{v}: the kernel sends no cookies, so in the kernel-cookie handoff XDP answers no \
             SYN; set {SYNCOOKIES}=2"
        )),
        Err(e) => Outcome::Warn(e),
    }
}

/// `net.ipv4.tcp_ecn`: our SYN+ACK accepts ECN setup only when it is 1 or 2.
pub const TCP_ECN: &str = "net.ipv4.tcp_ecn";

/// A sysctl the handoff needs, in the daemon's network namespace.
pub struct RequiredSysctl {
    pub name: &'static str,
    pub min: i64,
    /// What breaks without it.
    pub why: &'static str,
    /// Needed by the kfunc handoff only: the options synguard's cookie carries are restored
    /// by the kernel only with it on. The kernel's own cookie (kernel-cookie, filter)
    /// carries none of them from XDP.
    pub kfunc_only: bool,
}

/// The one table of sysctls the handoff needs: `check` reports them, `run` refuses to start
/// without those its handoff needs ([`RequiredSysctl::needed_by`]), or sets them with
/// `--fix-sysctls`.
pub const REQUIRED_SYSCTLS: &[RequiredSysctl] = &[
    RequiredSysctl {
        name: "net.ipv4.tcp_syncookies",
        min: 1,
        why: "the kernel accepts cookie ACKs only with syncookies on",
        kfunc_only: false,
    },
    RequiredSysctl {
        name: "net.ipv4.tcp_window_scaling",
        min: 1,
        why: "restores the window scale a cookie carries",
        kfunc_only: true,
    },
    RequiredSysctl {
        name: "net.ipv4.tcp_sack",
        min: 1,
        why: "restores SACK-permitted from a cookie",
        kfunc_only: true,
    },
    RequiredSysctl {
        name: "net.ipv4.tcp_timestamps",
        min: 1,
        why: "restores timestamps from a cookie",
        kfunc_only: true,
    },
];

impl RequiredSysctl {
    /// Whether the `h` handoff needs it.
    pub fn needed_by(&self, h: synguard_common::maps::Handoff) -> bool {
        !self.kfunc_only || h == synguard_common::maps::Handoff::Kfunc
    }

    /// `Ok(value)` if it is set as needed, else what is wrong (after the name), with the fix.
    pub fn probe(&self) -> Result<i64, String> {
        let RequiredSysctl { name, min, why, .. } = *self;
        match sysctl(name) {
            Ok(v) if v >= min => Ok(v),
            Ok(v) => Err(format!(
                "is {v}, needs >= {min}: {why} (sysctl -w {name}={min})"
            )),
            Err(e) => Err(e),
        }
    }

    /// Sets it to its minimum.
    pub fn fix(&self) -> Result<(), String> {
        let path = sysctl_path(self.name);
        std::fs::write(&path, format!("{}\n", self.min))
            .map_err(|e| format!("cannot write {path}: {e}"))
    }
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// A sysctl's integer value, read from /proc/sys.
pub fn sysctl(name: &str) -> Result<i64, String> {
    let path = sysctl_path(name);
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

/// The running kernel's BTF, parsed once for the probes.
pub fn vmlinux_btf() -> Result<aya_obj::btf::Btf, String> {
    aya_obj::btf::Btf::parse_file(Path::new(VMLINUX_BTF), aya::Endianness::default())
        .map_err(|e| format!("cannot parse {VMLINUX_BTF}: {e}"))
}

/// Whether [`KFUNC`] is a function in `btf`.
pub fn kfunc_in(btf: &aya_obj::btf::Btf) -> bool {
    btf.id_by_type_name_kind(KFUNC, aya_obj::btf::BtfKind::Func)
        .is_ok()
}

/// The helpers the kernel-cookie handoff calls in XDP: the kernel's cookie for a listener
/// (mainline 5.3) and the check of one without a socket (mainline 6.0).
pub const KERNEL_COOKIE_HELPERS: [&str; 2] =
    ["bpf_tcp_gen_syncookie", "bpf_tcp_raw_check_syncookie_ipv4"];

/// Whether every one of [`KERNEL_COOKIE_HELPERS`] is in `btf`. A helper defined with
/// `BPF_CALL_*` leaves the typedef `btf_<name>` in vmlinux BTF, whether or not the compiler
/// kept the function itself (and BTF then names it).
pub fn kernel_cookie_helpers_in(btf: &aya_obj::btf::Btf) -> bool {
    KERNEL_COOKIE_HELPERS.iter().all(|h| {
        btf.id_by_type_name_kind(&format!("btf_{h}"), aya_obj::btf::BtfKind::Typedef)
            .is_ok()
    })
}

/// Runs every check. `iface` and `ports` are optional: without ports, those of the running
/// instance on `iface`, else the defaults.
pub fn run_checks(iface: Option<&IfaceName>, ports: Option<PortSet>) -> Report {
    let mut r = Report { items: Vec::new() };
    let release = kernel_release();
    r.push("kernel", Outcome::Ok(format!("Linux {release}")));
    if Path::new(VMLINUX_BTF).exists() {
        r.push("BTF", Outcome::Ok(format!("{VMLINUX_BTF} present")));
    } else {
        r.push(
            "BTF",
            Outcome::Fail(format!(
                "{VMLINUX_BTF} is missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y"
            )),
        );
    }
    let probes = crate::handoff::Probes::run();
    match kernel_ok(&release, probes.kfunc.clone()) {
        Ok(()) => r.push("kfunc", Outcome::Ok(format!("{KFUNC} in vmlinux BTF"))),
        Err(e) => r.push(
            "kfunc",
            Outcome::Warn(format!(
                "{e}: only the kernel-cookie and filter handoffs are possible"
            )),
        ),
    }
    match &probes.kernel_cookie_helpers {
        Ok(true) => r.push(
            "syncookie helpers",
            Outcome::Ok(format!(
                "{} in vmlinux BTF",
                KERNEL_COOKIE_HELPERS.join(", ")
            )),
        ),
        Ok(false) => r.push(
            "syncookie helpers",
            Outcome::Warn(format!(
                "{} missing from vmlinux BTF (mainline has both since 6.0): no kernel-cookie \
                 handoff",
                KERNEL_COOKIE_HELPERS.join(", ")
            )),
        ),
        Err(e) => r.push("syncookie helpers", Outcome::Warn(e.clone())),
    }
    let choice = crate::handoff::choose(crate::handoff::Request::Auto, &probes);
    match &choice {
        Ok(c) => r.push("handoff", Outcome::Ok(format!("{} ({})", c.mode, c.reason))),
        Err(e) => r.push("handoff", Outcome::Fail(e.clone())),
    }
    if let Ok(c) = &choice
        && c.mode == synguard_common::maps::Handoff::KernelCookie
    {
        r.push(
            SYNCOOKIES_FOR_KERNEL_COOKIE,
            kernel_cookie_syncookies(sysctl(SYNCOOKIES)),
        );
    }

    let auto_mode = choice.as_ref().map(|c| c.mode).ok();
    for s in REQUIRED_SYSCTLS {
        match s.probe() {
            Ok(v) => r.push(s.name, Outcome::Ok(format!("{v}"))),
            Err(e) if auto_mode.is_some_and(|m| !s.needed_by(m)) => r.push(
                s.name,
                Outcome::Warn(format!(
                    "{e}; only the kfunc handoff needs it, not the {} handoff auto picks here",
                    auto_mode.map(|m| m.name()).unwrap_or_default()
                )),
            ),
            Err(e) => r.push(s.name, Outcome::Fail(e)),
        }
    }

    // Not required: it only decides whether our SYN+ACK accepts ECN, as the kernel's would.
    match sysctl(TCP_ECN) {
        Ok(v @ (1 | 2)) => r.push(TCP_ECN, Outcome::Ok(format!("{v}: ECN setup accepted"))),
        Ok(v) => r.push(
            TCP_ECN,
            Outcome::Ok(format!(
                "{v}: synguard's SYN+ACK refuses ECN setup, as the kernel's"
            )),
        ),
        Err(e) => r.push(TCP_ECN, Outcome::Warn(e)),
    }
    netfilter_checks(&mut r);

    let mut ports = ports;
    if let Some(iface) = iface {
        match iface::ifindex(iface) {
            Ok(idx) => {
                r.push(
                    format!("interface {iface}"),
                    Outcome::Ok(format!("ifindex {idx}")),
                );
                match iface::choose_mode(iface, XdpRequest::Auto) {
                    Ok(c) => r.push(
                        "xdp mode (auto)",
                        Outcome::Ok(format!("{}: {}", c.mode, c.reason)),
                    ),
                    Err(e) => r.push("xdp mode (auto)", Outcome::Warn(format!("{e:#}"))),
                }
                let dir = state_dir::dir(iface);
                if dir.is_dir() {
                    let pinned = PinnedMaps::at(&dir);
                    if ports.is_none() {
                        ports = pinned.ports().ok();
                    }
                    r.push(
                        "synguard",
                        Outcome::Ok(format!("pinned at {}", dir.display())),
                    );
                    // The running instance's handoff, if `auto` would not pick it here.
                    let running = pinned
                        .snapshot()
                        .map(|s| synguard_common::maps::Handoff::from_u8(s.config.handoff));
                    if running.is_ok_and(|h| h == synguard_common::maps::Handoff::KernelCookie)
                        && !r
                            .items
                            .iter()
                            .any(|(w, _)| w == SYNCOOKIES_FOR_KERNEL_COOKIE)
                    {
                        r.push(
                            SYNCOOKIES_FOR_KERNEL_COOKIE,
                            kernel_cookie_syncookies(sysctl(SYNCOOKIES)),
                        );
                    }
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
    let ports = ports.unwrap_or_else(|| Tunables::default().ports);
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

/// `net.netfilter.nf_conntrack_tcp_loose`: with 0, conntrack calls a cookie ACK (whose SYN
/// it never saw) invalid, and the mark cannot help once a ruleset drops invalid first.
pub const TCP_LOOSE: &str = "net.netfilter.nf_conntrack_tcp_loose";

/// Netfilter never sees the SYN or our SYN+ACK: the sysctl and the rules that make it drop
/// the cookie ACK.
fn netfilter_checks(r: &mut Report) {
    match sysctl(TCP_LOOSE) {
        Ok(0) => r.push(
            TCP_LOOSE,
            Outcome::Fail(format!(
                "is 0: conntrack finds every cookie ACK invalid (it never saw the SYN), and \
                 rulesets drop invalid packets (sysctl -w {TCP_LOOSE}=1)"
            )),
        ),
        Ok(v) => r.push(TCP_LOOSE, Outcome::Ok(format!("{v}"))),
        // No conntrack in this namespace: nothing tracks, nothing drops for it.
        Err(_) => r.push(TCP_LOOSE, Outcome::Ok("conntrack not loaded".into())),
    }
    let out = match std::process::Command::new("nft")
        .args(["-j", "list", "ruleset"])
        .output()
    {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => {
            let e = String::from_utf8_lossy(&o.stderr);
            r.push(
                "nftables",
                Outcome::Warn(format!("nft -j list ruleset failed: {}", e.trim())),
            );
            return;
        }
        // No nft: nothing to read (iptables rulesets are not inspected).
        Err(_) => return,
    };
    let problems = match serde_json::from_slice(&out) {
        Ok(json) => cookie_ack_drops(&json),
        Err(e) => {
            r.push(
                "nftables",
                Outcome::Warn(format!("cannot parse nft -j output: {e}")),
            );
            return;
        }
    };
    if problems.is_empty() {
        r.push(
            "nftables",
            Outcome::Ok("no input/prerouting rule drops cookie ACKs".into()),
        );
    }
    let Config {
        handoff_mark,
        handoff_mask,
        ..
    } = Config::DEFAULT;
    for p in problems {
        r.push(
            "nftables",
            Outcome::Warn(format!(
                "{p}: it drops cookie ACKs (netfilter never saw their SYN) and the flow's \
                 next packets; accept them first, by the handoff_mark synguard's TC sets: \
                 `meta mark & {handoff_mask:#x} == {handoff_mark:#x} ct mark set meta mark \
                 accept` then `ct mark & {handoff_mask:#x} == {handoff_mark:#x} accept`"
            )),
        );
    }
}

/// The rules of an `nft -j list ruleset` that drop cookie ACKs: in an ip/ip6/inet base chain
/// on the input or prerouting hook, a drop or reject of `ct state invalid` or of
/// `ct state new` (which a cookie ACK is, without SYN), with no mark-accept rule before it
/// in the chain. Rules in chains jumped to are not followed.
fn cookie_ack_drops(json: &serde_json::Value) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let Some(items) = json.get("nftables").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    let key = |o: &serde_json::Value| {
        let f = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        (
            f("family"),
            f("table"),
            f(if o.get("chain").is_some() {
                "chain"
            } else {
                "name"
            }),
        )
    };
    let mut hooked: HashMap<(String, String, String), String> = HashMap::new();
    let mut accepted: HashSet<(String, String, String)> = HashSet::new();
    let mut out = Vec::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            let family = c.get("family").and_then(|v| v.as_str()).unwrap_or("");
            let hook = c.get("hook").and_then(|v| v.as_str()).unwrap_or("");
            if ["ip", "ip6", "inet"].contains(&family) && ["input", "prerouting"].contains(&hook) {
                hooked.insert(key(c), hook.to_string());
            }
            continue;
        }
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let k = key(rule);
        if !hooked.contains_key(&k) || accepted.contains(&k) {
            continue;
        }
        let exprs = rule
            .get("expr")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let has = |verdict: &str| exprs.iter().any(|e| e.get(verdict).is_some());
        let matches_on = |what: &dyn Fn(&serde_json::Value) -> bool| {
            exprs
                .iter()
                .filter_map(|e| e.get("match"))
                .find(|m| m.get("left").is_some_and(|l| contains(l, what)))
        };
        if has("accept")
            && matches_on(&|v| v.get("meta").and_then(|m| m.get("key")) == Some(&"mark".into()))
                .is_some()
        {
            accepted.insert(k);
            continue;
        }
        if !(has("drop") || has("reject")) {
            continue;
        }
        let Some(ct) =
            matches_on(&|v| v.get("ct").and_then(|m| m.get("key")) == Some(&"state".into()))
        else {
            continue;
        };
        let right = ct.get("right").cloned().unwrap_or_default();
        let states: Vec<&str> = ["invalid", "new"]
            .into_iter()
            .filter(|s| contains(&right, &|v| v.as_str() == Some(s)))
            .collect();
        if states.is_empty() || ct.get("op").and_then(|v| v.as_str()) == Some("!=") {
            continue;
        }
        out.push(format!(
            "rule {} in {} {} {} (hook {}) drops ct state {}",
            rule.get("handle")
                .map(|h| h.to_string())
                .unwrap_or_default(),
            k.0,
            k.1,
            k.2,
            hooked[&k],
            states.join(",")
        ));
    }
    out
}

/// Whether `v` or any value nested in it satisfies `what`.
fn contains(v: &serde_json::Value, what: &dyn Fn(&serde_json::Value) -> bool) -> bool {
    what(v)
        || match v {
            serde_json::Value::Array(a) => a.iter().any(|x| contains(x, what)),
            serde_json::Value::Object(o) => o.values().any(|x| contains(x, what)),
            _ => false,
        }
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

/// [`print()`] as one JSON object, for scripts and config management.
pub fn print_json(r: &Report) -> Result<()> {
    let checks: Vec<serde_json::Value> = r
        .items
        .iter()
        .map(|(what, o)| {
            let (result, detail) = match o {
                Outcome::Ok(m) => ("ok", m),
                Outcome::Warn(m) => ("warn", m),
                Outcome::Fail(m) => ("fail", m),
            };
            serde_json::json!({"name": what, "result": result, "detail": detail})
        })
        .collect();
    let n = r.failures();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"checks": checks, "failures": n}))?
    );
    if n > 0 {
        bail!("{n} check(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list ruleset` of: meta mark & 0xffff == 0x5347 accept (when `marked`);
    /// ct state invalid drop; tcp flags & (syn|ack) != syn ct state new drop.
    fn ruleset(marked: bool) -> serde_json::Value {
        let mark = r#"{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 2, "expr": [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 65535]}, "right": 21319}}, {"accept": null}]}},"#;
        let text = format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {{"table": {{"family": "inet", "name": "filter", "handle": 1}}}}, {{"chain": {{"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}}}, {}
            {{"rule": {{"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [{{"match": {{"op": "in", "left": {{"ct": {{"key": "state"}}}}, "right": "invalid"}}}}, {{"drop": null}}]}}}},
            {{"rule": {{"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [{{"match": {{"op": "!=", "left": {{"&": [{{"payload": {{"protocol": "tcp", "field": "flags"}}}}, ["syn", "ack"]]}}, "right": "syn"}}}}, {{"match": {{"op": "in", "left": {{"ct": {{"key": "state"}}}}, "right": "new"}}}}, {{"drop": null}}]}}}},
            {{"chain": {{"family": "inet", "table": "filter", "name": "output", "handle": 5, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}}},
            {{"rule": {{"family": "inet", "table": "filter", "chain": "output", "handle": 6, "expr": [{{"match": {{"op": "in", "left": {{"ct": {{"key": "state"}}}}, "right": "invalid"}}}}, {{"drop": null}}]}}}}]}}"#,
            if marked { mark } else { "" }
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn rules_that_drop_cookie_acks_are_found_unless_a_mark_accept_comes_first() {
        let found = cookie_ack_drops(&ruleset(false));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("rule 3") && found[0].ends_with("invalid"),
            "{found:?}"
        );
        assert!(
            found[1].contains("rule 4") && found[1].ends_with("new"),
            "{found:?}"
        );
        assert_eq!(cookie_ack_drops(&ruleset(true)), Vec::<String>::new());
        assert!(cookie_ack_drops(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn kernel_gate() {
        // The BTF probe decides, whatever the release says: a backport passes, and a
        // new kernel built without the kfunc does not.
        assert!(kernel_ok("5.14.0-427.el9.x86_64", Ok(true)).is_ok());
        assert!(kernel_ok("6.18.44-fc-v669", Ok(true)).is_ok());
        let e = kernel_ok("6.18.44", Ok(false)).unwrap_err();
        assert!(
            e.contains("Linux 6.18.44 has no bpf_sk_assign_tcp_reqsk"),
            "{e}"
        );
        let e = kernel_ok(
            "6.1.0",
            Err("cannot parse /sys/kernel/btf/vmlinux: x".into()),
        );
        assert!(e.unwrap_err().contains("cannot tell"));
    }
}
