//! The one line format between the guest suite (`vmguest`) and `cargo xtask vmtest`.
//!
//! The guest prints one line per result, [`PREFIX`] then JSON; the host finds those lines in
//! what the guest wrote (a serial port of its own in a VM, stdout on the host kernel) and
//! ignores everything else. [`DONE`] closes a complete run, so a guest that crashed or hung
//! half-way is told apart from one that finished.

use serde::{Deserialize, Serialize};

/// Starts every result line.
pub const PREFIX: &str = "VMTEST ";
/// The last line of a complete run.
pub const DONE: &str = "VMTEST-DONE";

/// The check that runs once per kernel, before anything attaches.
pub const CHECK: &str = "check";
/// Runs once per XDP mode; the checks after it need it to have worked.
pub const ATTACH: &str = "attach";
/// The checks that need an attached synguard, in the order they run. The flag cases are
/// named "flags " and the combination.
pub const ATTACHED_CHECKS: &[&str] = &[
    "handshake",
    "flags SYN",
    "flags SYN+FIN",
    "flags SYN+RST",
    "flags NULL",
    "flags XMAS",
    "flags FIN no ACK",
    "forged ACKs",
    "detach",
];

/// Sharing the XDP hook with xdp-filter, once per start order, in generic mode (each builds
/// its own veth pair and attaches on its own).
pub const SHARE_XDP_FILTER_FIRST: &str = "share: xdp-filter first";
pub const SHARE_SYNGUARD_FIRST: &str = "share: synguard first";
pub const SHARE_MODE: &str = "generic";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run, because something it needs did not work (the detail says what).
    Skip,
}

/// One line of the guest's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// First line: which kernel the suite runs on.
    Kernel { release: String },
    /// One check, in one XDP mode (`-` for checks that do not attach, such as `check`).
    Check {
        kernel: String,
        xdp_mode: String,
        check: String,
        outcome: Outcome,
        detail: String,
        /// On the `attach` line: the XDP program's verified instruction count, or, when the
        /// verifier rejected it, the instructions it processed before it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        insns: Option<u32>,
    },
}

impl Line {
    #[allow(dead_code)] // the guest's half: the host only parses
    pub fn to_line(&self) -> String {
        format!(
            "{PREFIX}{}",
            serde_json::to_string(self).expect("a result serializes")
        )
    }
}

/// What a run's output holds: its result lines, and whether it ran to the end.
#[derive(Debug, Default)]
pub struct Parsed {
    pub lines: Vec<Line>,
    pub complete: bool,
    /// Lines that start with [`PREFIX`] but do not parse (a console that mangled a line).
    pub garbled: Vec<String>,
}

pub fn parse(output: &str) -> Parsed {
    let mut p = Parsed::default();
    for raw in output.lines() {
        // Serial ports turn "\n" into "\r\n".
        let l = raw.trim_end_matches('\r');
        if l.trim() == DONE {
            p.complete = true;
        } else if let Some(json) = l.strip_prefix(PREFIX) {
            match serde_json::from_str(json) {
                Ok(line) => p.lines.push(line),
                Err(_) => p.garbled.push(l.to_string()),
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_noise() {
        let a = Line::Check {
            kernel: "6.1.0".into(),
            xdp_mode: "generic".into(),
            check: "attach".into(),
            outcome: Outcome::Fail,
            detail: "no kfunc".into(),
            insns: None,
        };
        let text = format!(
            "[    1.0] random kernel line\r\n{}\r\nVMTEST {{broken\n{DONE}\r\n",
            a.to_line()
        );
        let p = parse(&text);
        assert!(p.complete);
        assert_eq!(p.lines.len(), 1);
        assert_eq!(p.garbled.len(), 1);
        match &p.lines[0] {
            Line::Check { outcome, check, .. } => {
                assert_eq!(*outcome, Outcome::Fail);
                assert_eq!(check, "attach");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_without_done_is_incomplete() {
        assert!(!parse("VMTEST {\"type\":\"kernel\",\"release\":\"x\"}\n").complete);
    }
}
