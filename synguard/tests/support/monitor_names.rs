//! Shared by tests/monitor.rs and tests/cli.rs.

use std::path::Path;

/// Every `synguard_*` metric name the dashboard and the alert rules query; the live
/// metrics test (tests/cli.rs) checks each against a scrape.
pub fn monitor_metric_names() -> std::collections::BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor");
    let mut out = std::collections::BTreeSet::new();
    for f in ["dashboard.json", "alerts.yml"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("synguard_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}
