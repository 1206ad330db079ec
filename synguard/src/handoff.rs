//! The handoff mode (`--handoff`, TOML `handoff`): how a cookie handshake completes, chosen
//! by probing what the kernel has, never by its release string.
//!
//! - `kfunc`: synguard's own cookie in XDP, TC hands the ACK to the listener with
//!   `bpf_sk_assign_tcp_reqsk`; needs that kfunc in vmlinux BTF (mainline 6.9).
//! - `filter`: XDP filters (flags, lists, rate limits, reflection, forged RSTs) and the
//!   kernel's own syncookies answer SYNs; no TC program, no kfunc. Anywhere XDP runs.
//!
//! `auto` takes the first the kernel can do. `kernel-cookie` (the kernel's cookie minted in
//! XDP, for 6.0-6.8) is not built yet: asking for it is refused, and `auto` never picks it.

use std::{fmt, str::FromStr};

use synguard_common::maps::Handoff;

use crate::check;

/// What the operator asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Request {
    #[default]
    Auto,
    Exactly(Handoff),
}

impl FromStr for Request {
    type Err = String;
    fn from_str(s: &str) -> Result<Request, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Request::Auto);
        }
        if t.eq_ignore_ascii_case("kernel-cookie") || t.eq_ignore_ascii_case("kernel_cookie") {
            return Err(
                "handoff kernel-cookie is not available in this build (planned for kernels \
                 6.0-6.8 without bpf_sk_assign_tcp_reqsk); use auto, kfunc or filter"
                    .into(),
            );
        }
        Handoff::from_name(t)
            .map(Request::Exactly)
            .ok_or_else(|| format!("handoff must be one of auto, kfunc, filter; got {s:?}"))
    }
}

impl Request {
    /// For clap's `value_parser`.
    pub fn from_str_arg(s: &str) -> Result<Request, String> {
        s.parse()
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Auto => f.write_str("auto"),
            Request::Exactly(h) => write!(f, "{h}"),
        }
    }
}

/// The mode `run` attaches in, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub mode: Handoff,
    pub reason: String,
}

/// What the probes found.
#[derive(Clone, Debug)]
pub struct Probes {
    pub release: String,
    /// [`check::KFUNC`] in vmlinux BTF, or why that cannot be told.
    pub kfunc: Result<bool, String>,
}

impl Probes {
    pub fn run() -> Probes {
        Probes {
            release: check::kernel_release(),
            kfunc: check::kfunc_in_btf(),
        }
    }
}

/// Picks the mode for `req` from `p`; a forced mode the kernel cannot do is refused with
/// what is missing.
pub fn choose(req: Request, p: &Probes) -> Result<Choice, String> {
    let kfunc = check::kernel_ok(&p.release, p.kfunc.clone());
    match (req, kfunc) {
        (Request::Exactly(Handoff::Kfunc), Ok(())) => Ok(Choice {
            mode: Handoff::Kfunc,
            reason: format!("forced by --handoff kfunc; {} in vmlinux BTF", check::KFUNC),
        }),
        (Request::Exactly(Handoff::Kfunc), Err(e)) => Err(format!(
            "--handoff kfunc cannot work here: {e}; use --handoff filter (or auto)"
        )),
        (Request::Exactly(Handoff::Filter), _) => Ok(Choice {
            mode: Handoff::Filter,
            reason: "forced by --handoff filter; the kernel's syncookies answer SYNs".into(),
        }),
        (Request::Auto, Ok(())) => Ok(Choice {
            mode: Handoff::Kfunc,
            reason: format!("auto: {} in vmlinux BTF", check::KFUNC),
        }),
        (Request::Auto, Err(e)) => Ok(Choice {
            mode: Handoff::Filter,
            reason: format!("auto: {e}; XDP filters and the kernel's syncookies answer SYNs"),
        }),
    }
}

/// The mode of a previous run whose pinned links `run` takes over: a link set cannot change
/// mode, so it is the pinned one (TC link: `kfunc`, none: `filter`). A forced mode that
/// differs is refused, naming the fix.
pub fn for_takeover(
    req: Request,
    pinned_tc: bool,
    prev_reason: Option<String>,
) -> Result<Choice, String> {
    let pinned = if pinned_tc {
        Handoff::Kfunc
    } else {
        Handoff::Filter
    };
    if let Request::Exactly(m) = req
        && m != pinned
    {
        return Err(format!(
            "--handoff {m}: the pinned links of the previous run are in the {pinned} handoff, \
             which a takeover keeps; `synguard detach` first to attach in another"
        ));
    }
    Ok(Choice {
        mode: pinned,
        reason: prev_reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| format!("{pinned}: the mode of the pinned links")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(kfunc: Result<bool, String>) -> Probes {
        Probes {
            release: "6.1.0-28-cloud-amd64".into(),
            kfunc,
        }
    }

    #[test]
    fn parses_and_refuses_unknown_names() {
        assert_eq!("auto".parse(), Ok(Request::Auto));
        assert_eq!(" Filter ".parse(), Ok(Request::Exactly(Handoff::Filter)));
        assert_eq!("kfunc".parse(), Ok(Request::Exactly(Handoff::Kfunc)));
        let e = "fast".parse::<Request>().unwrap_err();
        assert!(
            e.contains("auto, kfunc, filter") && e.contains("\"fast\""),
            "{e}"
        );
        let e = "kernel-cookie".parse::<Request>().unwrap_err();
        assert!(e.contains("not available in this build"), "{e}");
    }

    #[test]
    fn auto_probes_the_kfunc() {
        let c = choose(Request::Auto, &probes(Ok(true))).unwrap();
        assert_eq!(c.mode, Handoff::Kfunc);
        let c = choose(Request::Auto, &probes(Ok(false))).unwrap();
        assert_eq!(c.mode, Handoff::Filter);
        assert!(
            c.reason
                .contains("Linux 6.1.0-28-cloud-amd64 has no bpf_sk_assign_tcp_reqsk"),
            "{}",
            c.reason
        );
        // A BTF that cannot be read is no kfunc: filter needs none.
        let c = choose(Request::Auto, &probes(Err("no BTF".into()))).unwrap();
        assert_eq!(c.mode, Handoff::Filter);
    }

    #[test]
    fn takeover_keeps_the_pinned_mode() {
        let c = for_takeover(Request::Auto, false, Some("auto: no kfunc".into())).unwrap();
        assert_eq!(
            (c.mode, c.reason.as_str()),
            (Handoff::Filter, "auto: no kfunc")
        );
        let c = for_takeover(Request::Auto, true, None).unwrap();
        assert_eq!(c.mode, Handoff::Kfunc);
        let e = for_takeover(Request::Exactly(Handoff::Kfunc), false, None).unwrap_err();
        assert!(
            e.contains("in the filter handoff") && e.contains("synguard detach"),
            "{e}"
        );
    }

    #[test]
    fn forced_modes() {
        let e = choose(Request::Exactly(Handoff::Kfunc), &probes(Ok(false))).unwrap_err();
        assert!(
            e.contains("--handoff kfunc cannot work here") && e.contains("no bpf_sk_assign"),
            "{e}"
        );
        for k in [Ok(true), Ok(false)] {
            let c = choose(Request::Exactly(Handoff::Filter), &probes(k)).unwrap();
            assert_eq!(c.mode, Handoff::Filter);
        }
        let c = choose(Request::Exactly(Handoff::Kfunc), &probes(Ok(true))).unwrap();
        assert_eq!(c.mode, Handoff::Kfunc);
    }
}
