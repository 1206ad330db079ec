//! monitor/: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`). promtool is Debian's `prometheus`, installed by `cargo xtask setup`.

use std::{path::Path, process::Command};

#[path = "support/monitor_names.rs"]
mod monitor_names;
use monitor_names::monitor_metric_names;

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

#[test]
fn dashboard_is_well_formed_with_a_templated_datasource() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dashboard.json")).unwrap())
            .expect("dashboard.json is JSON");
    assert_eq!(d["uid"], "synguard");
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "no datasource variable"
    );
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 5);
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{}: gridPos.{k}", p["title"]);
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(t["expr"].as_str().unwrap().contains("synguard_"));
        }
    }
    // The panels the issue asks for.
    for title in [
        "Verdicts by reason",
        "Engaged",
        "SYN+ACKs out and legit hand-offs",
        "CPU per program",
    ] {
        assert!(panels.iter().any(|p| p["title"] == title), "{title}");
    }
    assert!(monitor_metric_names().contains("synguard_verdicts_total"));
}
