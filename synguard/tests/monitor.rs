//! monitor/: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`). promtool is Debian's `prometheus`, installed by `cargo xtask setup`.

use std::{path::Path, process::Command};

fn promtool(args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules", "alerts.yml"]);
}

#[test]
fn every_alert_has_a_unit_test_and_they_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor");
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n        exp_alerts:")),
            "no test expects {a} to fire"
        );
    }
    promtool(&["test", "rules", "alerts_test.yml"]);
}
