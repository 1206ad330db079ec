//! promtool, shared by the live tests that scrape the daemon.

use std::io::Write;

/// `promtool check metrics` (Debian's `prometheus`, installed by `cargo xtask setup`) on a
/// scrape: the exposition parses and follows Prometheus naming.
pub fn promtool_check_metrics(body: &str) {
    use std::process::{Command, Stdio};
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
