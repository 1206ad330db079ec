//! Measures flood throughput into the server veth under a few setups.
//!
//! `cargo run -p synguard-harness --example flood_probe --release -- [secs] [listen] [xdpdrop]
//! [norps] [cpus=N] [v6] [opts] [prio] [kind=syn|ack|rst|fin|invalid]`
use std::time::Duration;

use synguard_harness::{Family, FloodKind, FloodOptions, Topology, TopologyOptions, flood, xdp};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let has = |k: &str| args.iter().any(|a| a == k);
    let val = |k: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let t = Topology::new(TopologyOptions {
        server_rps: !has("norps"),
        ..Default::default()
    })?;
    if has("xdpdrop") {
        xdp::attach_drop(&t.srv.netns, &t.srv.iface)?;
    }
    let _server = if has("listen") {
        Some(t.start_server(80)?)
    } else {
        None
    };
    let fam = if has("v6") { Family::V6 } else { Family::V4 };
    let kind = match val("kind").as_deref() {
        None | Some("syn") => FloodKind::Syn,
        Some("ack") => FloodKind::Ack,
        Some("rst") => FloodKind::Rst,
        Some("fin") => FloodKind::Fin,
        Some("invalid") => FloodKind::Invalid,
        Some(k) => anyhow::bail!("unknown kind {k}"),
    };
    let mut o = FloodOptions::new(kind, fam, 80, Duration::from_secs(secs));
    o.cpus = val("cpus").and_then(|c| c.parse().ok()).unwrap_or(1);
    o.syn_options = has("opts");
    o.high_priority = has("prio");
    let rep = flood::run(&t, &o)?;
    println!(
        "{:?}: atk tx {:.0} pps, arrived at srv {:.0} pps (accepted {:.0}, rx_dropped {}), \
         trafgen {:?} in {:.2}s",
        args,
        rep.tx_pps(),
        rep.arrived_pps(),
        rep.rx_pps(),
        rep.srv_rx_dropped,
        rep.generator_sent,
        rep.elapsed.as_secs_f64()
    );
    Ok(())
}
