//! Measures flood throughput into the server veth under a few setups.
//!
//! `cargo run -p synguard-harness --example flood_probe --release -- [secs] [listen|nolisten]
//! [xdpdrop] [thr=IFROLE,…] [cpus=N] [v6] [opts]`, where IFROLE is one of srv, srvpeer, atk,
//! atkpeer, cli.
use std::time::Duration;

use synguard_harness::{Family, FloodKind, FloodOptions, Topology, TopologyOptions, flood};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let has = |k: &str| args.iter().any(|a| a == k);
    let val = |k: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let t = Topology::new(TopologyOptions {
        flood_napi_offload: !has("nooffload"),
        ..Default::default()
    })?;
    for r in val("thr")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (ns, ifc) = match r {
            "srv" => (t.srv.netns.clone(), t.srv.iface.clone()),
            "srvpeer" => (t.hub_netns.clone(), t.srv.peer_iface.clone()),
            "atk" => (t.atk.netns.clone(), t.atk.iface.clone()),
            "atkpeer" => (t.hub_netns.clone(), t.atk.peer_iface.clone()),
            other => anyhow::bail!("unknown {other}"),
        };
        t.set_threaded_napi(&ns, &ifc, true)?;
    }
    if has("xdpdrop") {
        let obj = std::env::var("XDP_DROP_OBJ")?;
        synguard_harness::netns::ip(&[
            "-n",
            &t.srv.netns,
            "link",
            "set",
            "dev",
            &t.srv.iface,
            "xdpdrv",
            "obj",
            &obj,
            "sec",
            "xdp.drop",
        ])?;
    }
    let _server = if has("listen") {
        Some(t.start_server(80)?)
    } else {
        None
    };
    let fam = if has("v6") { Family::V6 } else { Family::V4 };
    let mut o = FloodOptions::new(FloodKind::Syn, fam, 80, Duration::from_secs(secs));
    o.cpus = val("cpus").and_then(|c| c.parse().ok()).unwrap_or(1);
    o.syn_options = has("opts");
    let rep = flood::run(&t, &o)?;
    println!(
        "{:?}: atk tx {:.0} pps, srv rx {:.0} pps (dropped {}), trafgen {:?} in {:.2}s",
        args,
        rep.tx_pps(),
        rep.rx_pps(),
        rep.srv_rx_dropped,
        rep.generator_sent,
        rep.elapsed.as_secs_f64()
    );
    Ok(())
}
