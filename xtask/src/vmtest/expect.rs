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
    /// Fails, and the detail says this (the reason is part of the expectation).
    FailWith(&'static str),
    /// Not run, because something before it failed as expected.
    Skip,
}

impl Expect {
    pub fn describe(self) -> String {
        match self {
            Expect::Pass => "pass".into(),
            Expect::FailWith(why) => format!("fail: {why}"),
            Expect::Skip => "skip".into(),
        }
    }

    /// Whether (outcome, detail) is what was expected.
    pub fn met_by(self, outcome: Outcome, detail: &str) -> bool {
        match self {
            Expect::Pass => outcome == Outcome::Pass,
            Expect::FailWith(why) => outcome == Outcome::Fail && detail.contains(why),
            Expect::Skip => outcome == Outcome::Skip,
        }
    }
}

/// synguard refuses kernels without the kfunc, and has no fallback yet (issue 13).
const NO_KFUNC: &str = "no bpf_sk_assign_tcp_reqsk";

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
            // Linux 6.13, backported to 6.12.y, an EXT program that does may not).
            KernelLine::V6_12 => Expect::Pass,
            KernelLine::V6_1 => Expect::FailWith(NO_KFUNC),
        };
    }
    // Today no expectation depends on the mode.
    let _ = xdp_mode;
    match line {
        // 6.12 has the kfunc; its verifier accepts the program since the IP length is
        // bounded before it meets a packet pointer (issue 13).
        KernelLine::Host | KernelLine::V6_12 => Expect::Pass,
        KernelLine::V6_1 => match check {
            "check" | "attach" => Expect::FailWith(NO_KFUNC),
            _ => Expect::Skip,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_for_another_reason_is_not_the_expected_failure() {
        let e = expected(KernelLine::V6_1, "generic", "attach");
        assert!(e.met_by(Outcome::Fail, &format!("Linux 6.1.0 has {NO_KFUNC} kfunc")));
        assert!(!e.met_by(Outcome::Fail, "Invalid argument"));
        assert!(!e.met_by(Outcome::Pass, ""));
        assert!(expected(KernelLine::V6_12, "generic", "handshake").met_by(Outcome::Pass, ""));
        assert!(expected(KernelLine::Host, "native", "handshake").met_by(Outcome::Pass, ""));
        assert!(!expected(KernelLine::Host, "native", "handshake").met_by(Outcome::Skip, ""));
    }
}
