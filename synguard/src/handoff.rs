//! The handoff mode (`--handoff`, TOML `handoff`): how a cookie handshake completes, chosen
//! by probing what the kernel has, never by its release string.
//!
//! - `kfunc`: synguard's own cookie in XDP, TC hands the ACK to the listener with
//!   `bpf_sk_assign_tcp_reqsk`; needs that kfunc in vmlinux BTF (mainline 6.9).
//! - `kernel-cookie`: the kernel's own cookie, minted on the listener and checked in XDP
//!   with `bpf_tcp_gen_syncookie`/`bpf_tcp_raw_check_syncookie_*` (mainline 6.0), and the
//!   kernel completes the handshake; no TC program. XDP answers only the SYNs the kernel
//!   would answer with a cookie; those connections carry no window scaling, SACK or ECN
//!   (see `synguard_common::kernel_cookie`).
//! - `filter`: XDP filters (flags, lists, rate limits, reflection, forged RSTs) and the
//!   kernel's own syncookies answer SYNs; no TC program, no kfunc. Anywhere XDP runs.
//!
//! `auto` takes the first of these the kernel can do.

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
        Handoff::from_name(t).map(Request::Exactly).ok_or_else(|| {
            format!("handoff must be one of auto, kfunc, kernel-cookie, filter; got {s:?}")
        })
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
    /// [`check::KERNEL_COOKIE_HELPERS`] in vmlinux BTF, or why that cannot be told.
    pub kernel_cookie_helpers: Result<bool, String>,
}

impl Probes {
    pub fn run() -> Probes {
        let btf = check::vmlinux_btf();
        Probes {
            release: check::kernel_release(),
            kfunc: btf.as_ref().map(check::kfunc_in).map_err(Clone::clone),
            kernel_cookie_helpers: btf
                .as_ref()
                .map(check::kernel_cookie_helpers_in)
                .map_err(Clone::clone),
        }
    }

    /// Why the kernel-cookie handoff cannot work here, if it cannot.
    fn kernel_cookie_missing(&self) -> Option<String> {
        let helpers = check::KERNEL_COOKIE_HELPERS.join(" and ");
        match &self.kernel_cookie_helpers {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "Linux {} has no {helpers} helpers in its BTF (mainline has both since 6.0)",
                self.release
            )),
            Err(e) => Some(format!(
                "cannot tell whether Linux {} has the {helpers} helpers: {e}",
                self.release
            )),
        }
    }
}

/// Picks the mode for `req` from `p`; a forced mode the kernel cannot do is refused with
/// what is missing.
pub fn choose(req: Request, p: &Probes) -> Result<Choice, String> {
    let kfunc = check::kernel_ok(&p.release, p.kfunc.clone());
    let kernel_cookie = p.kernel_cookie_missing();
    match req {
        Request::Exactly(Handoff::Kfunc) => match kfunc {
            Ok(()) => Ok(Choice {
                mode: Handoff::Kfunc,
                reason: format!("forced by --handoff kfunc; {} in vmlinux BTF", check::KFUNC),
            }),
            Err(e) => Err(format!(
                "--handoff kfunc cannot work here: {e}; use --handoff kernel-cookie or \
                 filter (or auto)"
            )),
        },
        Request::Exactly(Handoff::KernelCookie) => match kernel_cookie {
            None => Ok(Choice {
                mode: Handoff::KernelCookie,
                reason: "forced by --handoff kernel-cookie; the kernel's own cookie, minted \
                         and checked in XDP"
                    .into(),
            }),
            Some(e) => Err(format!(
                "--handoff kernel-cookie cannot work here: {e}; use --handoff filter (or auto)"
            )),
        },
        Request::Exactly(Handoff::Filter) => Ok(Choice {
            mode: Handoff::Filter,
            reason: "forced by --handoff filter; the kernel's syncookies answer SYNs".into(),
        }),
        Request::Auto => Ok(match (kfunc, kernel_cookie) {
            (Ok(()), _) => Choice {
                mode: Handoff::Kfunc,
                reason: format!("auto: {} in vmlinux BTF", check::KFUNC),
            },
            (Err(e), None) => Choice {
                mode: Handoff::KernelCookie,
                reason: format!(
                    "auto: {e}; XDP answers with the kernel's own cookie ({} in vmlinux BTF)",
                    check::KERNEL_COOKIE_HELPERS.join(", ")
                ),
            },
            (Err(e), Some(k)) => Choice {
                mode: Handoff::Filter,
                reason: format!(
                    "auto: {e}, and {k}; XDP filters and the kernel's syncookies answer SYNs"
                ),
            },
        }),
    }
}

/// The mode of a takeover of a previous run's pinned links. A TC link can be neither
/// added nor dropped by a takeover, so with one the mode is `kfunc` (and another forced
/// mode is refused, naming the fix); without one it is `kernel-cookie` or `filter`, whose
/// XDP programs swap for each other in the pinned link: the requested one, or for `auto`
/// the first of them `p` allows (a run that `auto` put in `filter` before this build had
/// `kernel-cookie` moves up to it). `prev_reason` is the previous run's reason, kept for a
/// `kfunc` takeover.
pub fn for_takeover(
    req: Request,
    pinned_tc: bool,
    prev_reason: Option<String>,
    p: &Probes,
) -> Result<Choice, String> {
    if pinned_tc {
        if let Request::Exactly(m) = req
            && m != Handoff::Kfunc
        {
            return Err(format!(
                "--handoff {m}: the pinned links of the previous run are in the kfunc \
                 handoff, whose TC link a takeover keeps; `synguard detach` first to attach \
                 in another"
            ));
        }
        return Ok(Choice {
            mode: Handoff::Kfunc,
            reason: prev_reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "kfunc: the mode of the pinned links".into()),
        });
    }
    match req {
        Request::Exactly(Handoff::Kfunc) => Err(
            "--handoff kfunc: the pinned links of the previous run have no TC link, which a \
             takeover cannot add; `synguard detach` first to attach in the kfunc handoff"
                .into(),
        ),
        Request::Exactly(_) => choose(req, p),
        Request::Auto => Ok(match p.kernel_cookie_missing() {
            None => Choice {
                mode: Handoff::KernelCookie,
                reason: "auto, taking over links without TC: the kernel's own cookie in XDP".into(),
            },
            Some(why) => Choice {
                mode: Handoff::Filter,
                reason: format!(
                    "auto, taking over links without TC: {why}; XDP filters and the kernel's \
                     syncookies answer SYNs"
                ),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(kfunc: Result<bool, String>, raw: Result<bool, String>) -> Probes {
        Probes {
            release: "6.1.0-28-cloud-amd64".into(),
            kfunc,
            kernel_cookie_helpers: raw,
        }
    }

    #[test]
    fn parses_and_refuses_unknown_names() {
        assert_eq!("auto".parse(), Ok(Request::Auto));
        assert_eq!(" Filter ".parse(), Ok(Request::Exactly(Handoff::Filter)));
        assert_eq!("kfunc".parse(), Ok(Request::Exactly(Handoff::Kfunc)));
        for n in ["kernel-cookie", "Kernel_Cookie"] {
            assert_eq!(
                n.parse(),
                Ok(Request::Exactly(Handoff::KernelCookie)),
                "{n}"
            );
        }
        for bad in ["fast", "kernel", "kernel-cookies", ""] {
            let e = bad.parse::<Request>().unwrap_err();
            assert!(
                e.contains("auto, kfunc, kernel-cookie, filter") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
        for h in Handoff::ALL {
            assert_eq!(h.name().parse(), Ok(Request::Exactly(h)));
        }
    }

    #[test]
    fn auto_takes_the_first_the_kernel_can_do() {
        let c = choose(Request::Auto, &probes(Ok(true), Ok(true))).unwrap();
        assert_eq!(c.mode, Handoff::Kfunc);
        // 6.0-6.8: the helpers without the kfunc.
        let c = choose(Request::Auto, &probes(Ok(false), Ok(true))).unwrap();
        assert_eq!(c.mode, Handoff::KernelCookie);
        assert!(
            c.reason
                .contains("Linux 6.1.0-28-cloud-amd64 has no bpf_sk_assign_tcp_reqsk")
                && c.reason.contains("bpf_tcp_gen_syncookie"),
            "{}",
            c.reason
        );
        let c = choose(Request::Auto, &probes(Ok(false), Ok(false))).unwrap();
        assert_eq!(c.mode, Handoff::Filter);
        assert!(c.reason.contains("since 6.0"), "{}", c.reason);
        // A BTF that cannot be read is neither: filter needs none.
        let c = choose(
            Request::Auto,
            &probes(Err("no BTF".into()), Err("no BTF".into())),
        )
        .unwrap();
        assert_eq!(c.mode, Handoff::Filter);
    }

    #[test]
    fn forced_modes() {
        let e = choose(
            Request::Exactly(Handoff::Kfunc),
            &probes(Ok(false), Ok(true)),
        )
        .unwrap_err();
        assert!(
            e.contains("--handoff kfunc cannot work here") && e.contains("no bpf_sk_assign"),
            "{e}"
        );
        let e = choose(
            Request::Exactly(Handoff::KernelCookie),
            &probes(Ok(true), Ok(false)),
        )
        .unwrap_err();
        assert!(
            e.contains("--handoff kernel-cookie cannot work here")
                && e.contains("bpf_tcp_gen_syncookie"),
            "{e}"
        );
        // Forced kernel-cookie where the kfunc exists too (the host tests do this).
        let c = choose(
            Request::Exactly(Handoff::KernelCookie),
            &probes(Ok(true), Ok(true)),
        )
        .unwrap();
        assert_eq!(c.mode, Handoff::KernelCookie);
        for k in [Ok(true), Ok(false)] {
            let c = choose(Request::Exactly(Handoff::Filter), &probes(k, Ok(false))).unwrap();
            assert_eq!(c.mode, Handoff::Filter);
        }
        let c = choose(
            Request::Exactly(Handoff::Kfunc),
            &probes(Ok(true), Ok(false)),
        )
        .unwrap();
        assert_eq!(c.mode, Handoff::Kfunc);
    }

    #[test]
    fn takeover_keeps_a_tc_link_and_swaps_only_between_modes_without_one() {
        let all = probes(Ok(true), Ok(true));
        // A TC link: kfunc, with the previous run's reason; another forced mode is refused.
        let c = for_takeover(Request::Auto, true, Some("auto: kfunc before".into()), &all).unwrap();
        assert_eq!(
            (c.mode, c.reason.as_str()),
            (Handoff::Kfunc, "auto: kfunc before")
        );
        let e = for_takeover(Request::Exactly(Handoff::Filter), true, None, &all).unwrap_err();
        assert!(
            e.contains("in the kfunc handoff") && e.contains("synguard detach"),
            "{e}"
        );
        // No TC link: kfunc cannot be taken over into.
        let e = for_takeover(Request::Exactly(Handoff::Kfunc), false, None, &all).unwrap_err();
        assert!(e.contains("no TC link"), "{e}");
        // The two modes without TC swap when asked.
        for m in [Handoff::Filter, Handoff::KernelCookie] {
            let c = for_takeover(Request::Exactly(m), false, None, &all).unwrap();
            assert_eq!(c.mode, m);
        }
        // Auto: the best mode without TC the kernel allows.
        let c = for_takeover(Request::Auto, false, None, &all).unwrap();
        assert_eq!(c.mode, Handoff::KernelCookie);
        let c = for_takeover(Request::Auto, false, None, &probes(Ok(true), Ok(false))).unwrap();
        assert_eq!(c.mode, Handoff::Filter);
        assert!(c.reason.contains("since 6.0"), "{}", c.reason);
        // Forced kernel-cookie on a kernel without the helpers is refused.
        assert!(
            for_takeover(
                Request::Exactly(Handoff::KernelCookie),
                false,
                None,
                &probes(Ok(false), Ok(false))
            )
            .is_err()
        );
    }
}
