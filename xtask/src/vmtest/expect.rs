//! What each kernel line is expected to do today, check by check. The one place to flip
//! when a kernel starts to work: a result that differs from this, in either direction,
//! fails the run, so the table never silently disagrees with the code.

use super::{
    KernelLine,
    report::{Outcome, SHARE_SYNGUARD_FIRST, SHARE_XDP_FILTER_FIRST},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Pass,
    /// Passes, and the detail says this (the attach line names the handoff mode).
    PassWith(&'static str),
    /// Fails, and the detail says this (the reason is part of the expectation).
    FailWith(&'static str),
    /// Not run, because something before it failed as expected.
    Skip,
}

impl Expect {
    pub fn describe(self) -> String {
        match self {
            Expect::Pass => "pass".into(),
            Expect::PassWith(what) => format!("pass: {what}"),
            Expect::FailWith(why) => format!("fail: {why}"),
            Expect::Skip => "skip".into(),
        }
    }

    /// Whether (outcome, detail) is what was expected.
    pub fn met_by(self, outcome: Outcome, detail: &str) -> bool {
        match self {
            Expect::Pass => outcome == Outcome::Pass,
            Expect::PassWith(what) => outcome == Outcome::Pass && detail.contains(what),
            Expect::FailWith(why) => outcome == Outcome::Fail && detail.contains(why),
            Expect::Skip => outcome == Outcome::Skip,
        }
    }
}

/// Where the kfunc exists, `auto` hands off with it ...
const KFUNC: &str = "handoff kfunc";
/// ... and without it (6.1), XDP answers with the kernel's own cookie (issue 13) ...
const KERNEL_COOKIE: &str = "handoff kernel-cookie";
/// ... and forced to filter, XDP only filters and the kernel's syncookies answer.
const FILTER: &str = "handoff filter";

/// The host kernel here refuses EXT (freplace) programs to root as well, so neither
/// xdp-filter (libxdp falls back to a single program) nor synguard can load into a
/// dispatcher: synguard is refused the hook, or the EXT load is.
const HOST_NO_EXT_FILTER_FIRST: &str = "synguard did not pin";
const HOST_NO_EXT_SYNGUARD_FIRST: &str = "Operation not permitted";
/// What `check` does on `line` in `xdp_mode` (`-` for checks that do not attach).
pub fn expected(line: KernelLine, xdp_mode: &str, check: &str) -> Expect {
    if check == SHARE_XDP_FILTER_FIRST || check == SHARE_SYNGUARD_FIRST {
        return match line {
            KernelLine::Host if check == SHARE_XDP_FILTER_FIRST => {
                Expect::FailWith(HOST_NO_EXT_FILTER_FIRST)
            }
            KernelLine::Host => Expect::FailWith(HOST_NO_EXT_SYNGUARD_FIRST),
            // Both orders: synguard's XDP program changes no packet data, so it may replace
            // the stubs of Debian's libxdp 1.3.1 dispatcher, which do not either (since
            // Linux 6.13, backported to 6.12.y, an EXT program that does may not; 6.1 has
            // no such rule).
            KernelLine::V6_12 | KernelLine::V6_1 => Expect::Pass,
        };
    }
    // A forced handoff is in the label ("generic, --handoff filter"); the host runs each.
    if check == "attach" && xdp_mode.ends_with("--handoff filter") {
        return Expect::PassWith(FILTER);
    }
    if check == "attach" && xdp_mode.ends_with("--handoff kernel-cookie") {
        return Expect::PassWith(KERNEL_COOKIE);
    }
    match (line, check) {
        // 6.12 has the kfunc; its verifier accepts the program since the IP length is
        // bounded before it meets a packet pointer (issue 13).
        (KernelLine::Host | KernelLine::V6_12, "attach") => Expect::PassWith(KFUNC),
        // 6.1 has no kfunc but the raw syncookie helpers: the object loads all the same
        // (the kfunc is a weak ksym, and the TC program is not loaded), and the suite passes
        // in the kernel-cookie handoff.
        (KernelLine::V6_1, "attach") => Expect::PassWith(KERNEL_COOKIE),
        _ => Expect::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_for_another_reason_is_not_the_expected_failure() {
        let e = expected(KernelLine::V6_1, "generic", "attach");
        assert!(e.met_by(
            Outcome::Pass,
            "attached to veth0, mode always, handoff kernel-cookie, ports 80"
        ));
        assert!(!e.met_by(
            Outcome::Pass,
            "attached to veth0, mode always, handoff filter, ports 80"
        ));
        assert!(!e.met_by(
            Outcome::Pass,
            "attached to veth0, mode always, handoff kfunc, ports 80"
        ));
        assert!(!e.met_by(Outcome::Fail, "handoff kernel-cookie"));
        let e = expected(KernelLine::Host, "host", "share: synguard first");
        assert!(e.met_by(Outcome::Fail, "EXT: Operation not permitted"));
        assert!(!e.met_by(Outcome::Fail, "Invalid argument"));
        assert!(expected(KernelLine::V6_12, "generic", "handshake").met_by(Outcome::Pass, ""));
        assert!(expected(KernelLine::Host, "native", "handshake").met_by(Outcome::Pass, ""));
        assert!(!expected(KernelLine::Host, "native", "handshake").met_by(Outcome::Skip, ""));
    }
}
