//! Two hosts behind a router that splits each connection between them, as ECMP or anycast
//! can: SYNs go to host A, everything else to host B.
//!
//! ```text
//!                    ┌── veth ── ha  (198.18.41.2, service 198.18.50.1): SYNs
//!   cli ── veth ── rtr
//!                    └── veth ── hb  (198.18.42.2, service 198.18.50.1): all else
//! ```
//! The router marks TCP segments with SYN set and ACK clear (nftables, `tcp flags & (syn |
//! ack) == syn`) and routes marked packets by a policy rule (`fwmark 1`) to host A; its main
//! table sends the service address to host B. Both hosts own the service address and route
//! back through the router, which returns replies to `cli`. Spoofed flood sources
//! ([`SPOOF_V4`]) are routed back into `cli`, which drops them (it does not forward). Like
//! every fixture, all names carry a per-run suffix and the cleanup registry removes the
//! namespaces, links, pins and run state however the run ends.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    thread,
};

use anyhow::{Context, Result};

use crate::{
    cleanup::{self, TopologyRecord},
    fixture::{add_netns, add_veth, ensure_root, netns_name, new_run, pin_dir, run_state_file},
    flood::FloodTarget,
    netns,
    synguard::Synguard,
    topology::{SPOOF_V4, SPOOF_V6},
};

/// The address both hosts serve.
pub const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 1);
pub const CLI_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 2);
const RTR_CLI_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 1);
const HA_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 41, 2);
const RTR_HA_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 41, 1);
const HB_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 42, 2);
const RTR_HB_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 42, 1);
/// The policy routing table for SYNs in the router.
const SYN_TABLE: &str = "100";

/// One server host of the fleet.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: String,
    /// The veth end in the host, where synguard attaches.
    pub iface: String,
    pub ipv4: Ipv4Addr,
}

#[derive(Debug)]
pub struct EcmpFleet {
    id: u64,
    suffix: String,
    pub cli_netns: String,
    pub cli_iface: String,
    pub cli_mac: [u8; 6],
    pub rtr_netns: String,
    /// The router's end of the cli link, and its MAC (the flood's destination MAC).
    pub rtr_cli_iface: String,
    pub rtr_cli_mac: [u8; 6],
    /// Gets the SYNs.
    pub a: Host,
    /// Gets everything else.
    pub b: Host,
    torn_down: bool,
}

impl EcmpFleet {
    pub fn new() -> Result<EcmpFleet> {
        ensure_root()?;
        cleanup::install_hooks(true);
        let (id, suffix) = new_run();
        let link = |tag: char| format!("sge{tag}{suffix}");
        let mut f = EcmpFleet {
            id,
            cli_netns: netns_name(&suffix, "ecli"),
            cli_iface: link('c'),
            cli_mac: [0; 6],
            rtr_netns: netns_name(&suffix, "ertr"),
            rtr_cli_iface: link('r'),
            rtr_cli_mac: [0; 6],
            a: Host {
                netns: netns_name(&suffix, "eha"),
                iface: link('a'),
                ipv4: HA_V4,
            },
            b: Host {
                netns: netns_name(&suffix, "ehb"),
                iface: link('b'),
                ipv4: HB_V4,
            },
            suffix,
            torn_down: false,
        };
        let mut paths = Vec::new();
        for h in [&f.a, &f.b] {
            paths.push(pin_dir(&h.iface));
            paths.push(run_state_file(&h.iface));
        }
        cleanup::register_topology(TopologyRecord {
            id,
            owner: thread::current().id(),
            namespaces: vec![
                f.cli_netns.clone(),
                f.a.netns.clone(),
                f.b.netns.clone(),
                f.rtr_netns.clone(),
            ],
            links: vec![
                (f.cli_netns.clone(), f.cli_iface.clone()),
                (f.a.netns.clone(), f.a.iface.clone()),
                (f.b.netns.clone(), f.b.iface.clone()),
            ],
            paths,
        });
        f.build()
            .with_context(|| format!("building the ECMP fleet {}", f.suffix))?;
        Ok(f)
    }

    fn build(&mut self) -> Result<()> {
        use netns::ip;
        let rtr = self.rtr_netns.clone();
        for n in [&self.cli_netns, &self.a.netns, &self.b.netns, &rtr] {
            add_netns(n)?;
        }
        let link = |tag: char| format!("sge{tag}{}", self.suffix);
        let v4 = |a: Ipv4Addr| format!("{a}/24");
        // cli <-> router.
        add_veth(&self.cli_netns, &self.cli_iface, &rtr, &self.rtr_cli_iface)?;
        addr_up(&self.cli_netns, &self.cli_iface, &v4(CLI_V4))?;
        addr_up(&rtr, &self.rtr_cli_iface, &v4(RTR_CLI_V4))?;
        ip(&[
            "-n",
            &self.cli_netns,
            "route",
            "add",
            &format!("{SERVICE_V4}/32"),
            "via",
            &RTR_CLI_V4.to_string(),
        ])?;
        // Router <-> each host; the host owns the service address on its veth too.
        for (h, rtr_if, rtr_addr) in [
            (&self.a, link('x'), RTR_HA_V4),
            (&self.b, link('y'), RTR_HB_V4),
        ] {
            add_veth(&h.netns, &h.iface, &rtr, &rtr_if)?;
            addr_up(&h.netns, &h.iface, &v4(h.ipv4))?;
            ip(&[
                "-n",
                &h.netns,
                "addr",
                "add",
                &format!("{SERVICE_V4}/32"),
                "dev",
                &h.iface,
            ])?;
            addr_up(&rtr, &rtr_if, &v4(rtr_addr))?;
            ip(&[
                "-n",
                &h.netns,
                "route",
                "add",
                "default",
                "via",
                &rtr_addr.to_string(),
            ])?;
            // The hosts answer spoofed sources too; without this their replies to the
            // flood would be dropped by reverse-path checks on the way back.
            netns::set_sysctl(&h.netns, "net.ipv4.conf.all.rp_filter", "0")?;
            // No TIME_WAIT on the hosts: the servers close first, and once the client
            // reuses a port, that flow's SYN reaches A while its ACK reaches B's TIME_WAIT
            // socket for the old connection, which does not take it (measured: ~0.5% of
            // connections at 120/s, every one with a valid cookie). Real ECMP hashes a flow
            // to one host; only this fixture's split by flags sends a reused tuple's SYN
            // and ACK apart.
            netns::set_sysctl(&h.netns, "net.ipv4.tcp_max_tw_buckets", "0")?;
        }
        netns::set_sysctl(&rtr, "net.ipv4.ip_forward", "1")?;
        for n in ["all", "default"] {
            netns::set_sysctl(&rtr, &format!("net.ipv4.conf.{n}.rp_filter"), "0")?;
        }
        // Everything to the service goes to B ...
        ip(&[
            "-n",
            &rtr,
            "route",
            "add",
            &format!("{SERVICE_V4}/32"),
            "via",
            &HB_V4.to_string(),
        ])?;
        // ... except SYNs, marked in prerouting and routed by a policy rule to A.
        ip(&[
            "-n",
            &rtr,
            "route",
            "add",
            &format!("{SERVICE_V4}/32"),
            "via",
            &HA_V4.to_string(),
            "table",
            SYN_TABLE,
        ])?;
        ip(&[
            "-n", &rtr, "rule", "add", "fwmark", "1", "table", SYN_TABLE, "priority", "100",
        ])?;
        netns::nft(
            &rtr,
            "table inet sgecmp {\n  chain pre {\n    type filter hook prerouting priority mangle;\n    \
             tcp flags & (syn | ack) == syn meta mark set 1\n  }\n}\n",
        )?;
        // Replies to spoofed flood sources go back to cli, which drops them.
        ip(&[
            "-n",
            &rtr,
            "route",
            "add",
            &format!("{}/{}", SPOOF_V4.0, SPOOF_V4.1),
            "via",
            &CLI_V4.to_string(),
        ])?;
        self.cli_mac = netns::link_mac(&self.cli_netns, &self.cli_iface)?;
        self.rtr_cli_mac = netns::link_mac(&rtr, &self.rtr_cli_iface)?;
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// A per-run path under the temp directory for files the test writes (key files,
    /// configs); registered for removal.
    pub fn temp_path(&self, name: &str) -> Result<std::path::PathBuf> {
        let p = crate::fixture::temp_path_for(&self.suffix, name);
        self.register_path(p.clone())?;
        Ok(p)
    }

    /// Registers a file or directory the test created for removal at teardown.
    pub fn register_path(&self, p: std::path::PathBuf) -> Result<()> {
        if !cleanup::add_path(self.id, p) {
            anyhow::bail!("fleet {} is already torn down", self.suffix);
        }
        Ok(())
    }

    /// The `synguard` binary in `host`'s namespace, owned by this fixture.
    pub fn synguard(&self, bin: impl Into<std::path::PathBuf>, host: &Host) -> Synguard {
        Synguard::new(bin, &host.netns).owned_by(self.id)
    }

    /// A SYN flood target: from cli through the router (so it lands on host A), spoofed
    /// from [`SPOOF_V4`].
    pub fn flood_target(&self) -> FloodTarget {
        FloodTarget {
            atk_netns: self.cli_netns.clone(),
            atk_iface: self.cli_iface.clone(),
            src_mac: self.cli_mac,
            dst_mac: self.rtr_cli_mac,
            dst_v4: SERVICE_V4,
            dst_v6: Ipv6Addr::UNSPECIFIED,
            spoof_v4: SPOOF_V4,
            spoof_v6: SPOOF_V6,
            srv_netns: self.a.netns.clone(),
            srv_iface: self.a.iface.clone(),
        }
    }

    pub fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        cleanup::teardown_topology(self.id)
    }
}

impl Drop for EcmpFleet {
    fn drop(&mut self) {
        if !self.torn_down
            && let Err(e) = cleanup::teardown_topology(self.id)
        {
            eprintln!("synguard-harness: {e:#}");
        }
    }
}

fn addr_up(netns_name: &str, iface: &str, cidr: &str) -> Result<()> {
    netns::ip(&["-n", netns_name, "addr", "add", cidr, "dev", iface])?;
    netns::ip(&["-n", netns_name, "link", "set", iface, "up"])?;
    Ok(())
}
