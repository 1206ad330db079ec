//! The srv / cli / atk topology around a Linux bridge in a `hub` namespace.
//!
//! ```text
//!   srv ── veth ──┐
//!   cli ── veth ──┼── bridge (hub netns)
//!   atk ── veth ──┘
//! ```
//! Built from the blocks of [`crate::fixture`]: every link is created directly inside its
//! namespace, so nothing of a run ever appears in the root namespace, every name carries a
//! per-run suffix, and the cleanup registry removes it however the run ends.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::{Command, Output},
    thread,
};

use anyhow::{Context, Result};

use crate::{
    cleanup::{self, TopologyRecord},
    fixture::{
        add_netns, add_veth, address_and_up, ensure_root, netns_name, new_run, pin_dir,
        run_state_file, write_sysfs,
    },
    netns::{self, LinkStats},
    process::NsChild,
    xdp,
};

/// Benchmarking range (RFC 2544, 198.18.0.0/15): the shared L2 segment is 198.18.0.0/16.
pub const LINK_V4_PREFIX: u8 = 16;
pub const SRV_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLI_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const ATK_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// Spoofed flood sources: the other half of the benchmarking /15.
pub const SPOOF_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);

/// Benchmarking range (RFC 5180, 2001:2::/48); the shared segment is 2001:2::/64.
pub const LINK_V6_PREFIX: u8 = 64;
pub const SRV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const CLI_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 1, 1);
pub const ATK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 2, 1);
/// Spoofed IPv6 flood sources, inside 2001:2::/48 but off the shared /64.
pub const SPOOF_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 2, 0, 0xff00, 0, 0, 0, 0), 56);

/// A namespace of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Srv,
    Cli,
    Atk,
    Hub,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Role::Srv => "srv",
            Role::Cli => "cli",
            Role::Atk => "atk",
            Role::Hub => "hub",
        }
    }
}

/// One host namespace attached to the bridge.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub netns: String,
    /// The veth end inside `netns` (for srv: where synguard attaches).
    pub iface: String,
    pub mac: [u8; 6],
    /// Its peer, a bridge port inside the hub namespace.
    pub peer_iface: String,
    pub peer_mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Install the SIGINT/SIGTERM/SIGHUP cleanup handler (see [`crate::install_hooks`]).
    pub install_signal_handlers: bool,
    /// Steer the server veth's receive processing (RPS) to the last CPU. On veth the whole
    /// receive path otherwise runs in the flood sender's own context, so the kernel's SYN
    /// handling throttles the generator to ~140 k pps; with RPS the sender's core only
    /// forwards and the server's core drops what it cannot take from its backlog, as a real
    /// NIC would (counted in the server veth's rx_dropped). XDP still runs on the sender's
    /// core, before RPS, like on a NIC's RX queue.
    pub server_rps: bool,
    /// Attach the dummy XDP_PASS program to the server veth's peer, so native XDP_TX on the
    /// server veth delivers frames.
    pub xdp_pass_on_server_peer: bool,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        Self {
            install_signal_handlers: true,
            server_rps: true,
            xdp_pass_on_server_peer: false,
        }
    }
}

/// A live topology. Dropping it removes every namespace and link it created.
#[derive(Debug)]
pub struct Topology {
    id: u64,
    suffix: String,
    pub hub_netns: String,
    pub bridge: String,
    pub srv: Endpoint,
    pub cli: Endpoint,
    pub atk: Endpoint,
    torn_down: bool,
}

impl Topology {
    pub fn new(opts: TopologyOptions) -> Result<Self> {
        ensure_root()?;
        cleanup::install_hooks(opts.install_signal_handlers);
        let (id, suffix) = new_run();
        let ns = |r: Role| netns_name(&suffix, r.tag());
        // Link names: "sg" + role letter + side (0 = host, 1 = bridge port) + suffix ≤ 14 chars.
        let link = |r: Role, side: u8| format!("sg{}{side}{suffix}", &r.tag()[..1]);
        let ep = |r: Role, v4, v6| Endpoint {
            netns: ns(r),
            iface: link(r, 0),
            mac: [0; 6],
            peer_iface: link(r, 1),
            peer_mac: [0; 6],
            ipv4: v4,
            ipv6: v6,
        };
        let mut topo = Topology {
            id,
            hub_netns: ns(Role::Hub),
            bridge: format!("sgbr{suffix}"),
            srv: ep(Role::Srv, SRV_V4, SRV_V6),
            cli: ep(Role::Cli, CLI_V4, CLI_V6),
            atk: ep(Role::Atk, ATK_V4, ATK_V6),
            suffix,
            torn_down: false,
        };
        debug_assert!(topo.link_names().iter().all(|n| n.len() <= 15));
        // Registered before anything exists, so a failure or signal half-way still cleans up.
        cleanup::register_topology(TopologyRecord {
            id,
            owner: thread::current().id(),
            namespaces: vec![
                topo.srv.netns.clone(),
                topo.cli.netns.clone(),
                topo.atk.netns.clone(),
                topo.hub_netns.clone(),
            ],
            links: vec![
                (topo.srv.netns.clone(), topo.srv.iface.clone()),
                (topo.cli.netns.clone(), topo.cli.iface.clone()),
                (topo.atk.netns.clone(), topo.atk.iface.clone()),
                (topo.hub_netns.clone(), topo.bridge.clone()),
            ],
            // What a synguard on the server veth leaves if it cannot clean up itself.
            paths: vec![pin_dir(&topo.srv.iface), run_state_file(&topo.srv.iface)],
        });
        // On error `topo` is dropped here, which tears down whatever was created.
        topo.build(&opts)
            .with_context(|| format!("building topology {}", topo.suffix))?;
        Ok(topo)
    }

    fn build(&mut self, opts: &TopologyOptions) -> Result<()> {
        use netns::ip;
        let hub = self.hub_netns.clone();
        for n in [&self.srv.netns, &self.cli.netns, &self.atk.netns, &hub] {
            add_netns(n)?;
        }
        // The hub is a pure L2 switch; without IPv6 its ports send no RS/MLD noise.
        netns::set_sysctl(&hub, "net.ipv6.conf.all.disable_ipv6", "1")?;
        netns::set_sysctl(&hub, "net.ipv6.conf.default.disable_ipv6", "1")?;
        ip(&[
            "-n",
            &hub,
            "link",
            "add",
            &self.bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &hub, "link", "set", &self.bridge, "up"])?;
        for e in [&mut self.srv, &mut self.cli, &mut self.atk] {
            add_veth(&e.netns, &e.iface, &hub, &e.peer_iface)?;
            ip(&[
                "-n",
                &hub,
                "link",
                "set",
                &e.peer_iface,
                "master",
                &self.bridge,
                "up",
            ])?;
            address_and_up(
                &e.netns,
                &e.iface,
                (e.ipv4, LINK_V4_PREFIX),
                (e.ipv6, LINK_V6_PREFIX),
            )?;
            e.mac = netns::link_mac(&e.netns, &e.iface)?;
            e.peer_mac = netns::link_mac(&hub, &e.peer_iface)?;
            // Static entries: the flood never lets the bridge learn srv's MAC from srv traffic
            // first, and flooding unknown unicast to cli would double the work.
            netns::run_checked(Command::new("bridge").args([
                "-n",
                &hub,
                "fdb",
                "replace",
                &netns::format_mac(&e.mac),
                "dev",
                &e.peer_iface,
                "master",
                "static",
            ]))?;
        }
        // atk must swallow the SYN+ACKs sent to spoofed sources, never route them on.
        netns::set_sysctl(&self.atk.netns, "net.ipv4.ip_forward", "0")?;
        netns::set_sysctl(&self.atk.netns, "net.ipv6.conf.all.forwarding", "0")?;
        // Replies to spoofed sources go back to atk; no namespace has a default route.
        let (p4, l4) = SPOOF_V4;
        let (p6, l6) = SPOOF_V6;
        let atk4 = self.atk.ipv4.to_string();
        let atk6 = self.atk.ipv6.to_string();
        ip(&[
            "-n",
            &self.srv.netns,
            "route",
            "add",
            &format!("{p4}/{l4}"),
            "via",
            &atk4,
        ])?;
        ip(&[
            "-n",
            &self.srv.netns,
            "-6",
            "route",
            "add",
            &format!("{p6}/{l6}"),
            "via",
            &atk6,
        ])?;
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        if opts.server_rps && cpus > 1 {
            let mask = format!("{:x}", 1u64 << (cpus.min(64) - 1));
            self.set_rps(&self.srv.netns, &self.srv.iface, &mask)?;
        }
        if opts.xdp_pass_on_server_peer {
            xdp::attach_pass(&hub, &self.srv.peer_iface)?;
        }
        Ok(())
    }

    /// Unique id of this topology within the process registry.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The per-run suffix in every name.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    pub fn netns(&self, role: Role) -> &str {
        match role {
            Role::Srv => &self.srv.netns,
            Role::Cli => &self.cli.netns,
            Role::Atk => &self.atk.netns,
            Role::Hub => &self.hub_netns,
        }
    }

    /// The srv-side veth, where synguard attaches.
    pub fn server_iface(&self) -> &str {
        &self.srv.iface
    }

    /// The server veth's peer (a bridge port in the hub namespace).
    pub fn server_peer_iface(&self) -> &str {
        &self.srv.peer_iface
    }

    /// Every namespace name of this run.
    pub fn netns_names(&self) -> Vec<String> {
        [Role::Srv, Role::Cli, Role::Atk, Role::Hub]
            .map(|r| self.netns(r).to_string())
            .to_vec()
    }

    /// Every link name of this run.
    pub fn link_names(&self) -> Vec<String> {
        let mut v = vec![self.bridge.clone()];
        for e in [&self.srv, &self.cli, &self.atk] {
            v.push(e.iface.clone());
            v.push(e.peer_iface.clone());
        }
        v
    }

    /// A `Command` running `program` inside `role`'s network namespace (not its mount namespace).
    pub fn command(&self, role: Role, program: &str) -> Command {
        netns::command(self.netns(role), program)
    }

    /// Runs `program args…` in `role`'s namespace and returns its output; fails on non-zero exit.
    pub fn output(&self, role: Role, program: &str, args: &[&str]) -> Result<Output> {
        netns::run_checked(self.command(role, program).args(args))
    }

    /// Spawns a command built by [`Topology::command`]; it is ended by PID when the returned
    /// handle drops, and killed on teardown at the latest.
    pub fn spawn(&self, cmd: &mut Command, own_group: bool) -> Result<NsChild> {
        NsChild::spawn(cmd, own_group, Some(self.id))
    }

    pub fn set_sysctl(&self, role: Role, key: &str, value: &str) -> Result<()> {
        netns::set_sysctl(self.netns(role), key, value)
    }

    pub fn get_sysctl(&self, role: Role, key: &str) -> Result<String> {
        netns::get_sysctl(self.netns(role), key)
    }

    /// Counters of `iface` in `netns` (e.g. `server_iface()` in srv).
    pub fn link_stats(&self, netns: &str, iface: &str) -> Result<LinkStats> {
        netns::link_stats(netns, iface)
    }

    /// Counters of the server veth (what reaches synguard's attach point).
    pub fn server_stats(&self) -> Result<LinkStats> {
        netns::link_stats(&self.srv.netns, &self.srv.iface)
    }

    /// Sets the RPS CPU mask (hex, as in sysfs) of `iface`'s single receive queue.
    pub fn set_rps(&self, netns: &str, iface: &str, mask_hex: &str) -> Result<()> {
        write_sysfs(
            netns,
            &format!("class/net/{iface}/queues/rx-0/rps_cpus"),
            mask_hex,
        )
    }

    /// Tears the topology down now and reports any leftover. Dropping does the same silently.
    pub fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        cleanup::teardown_topology(self.id)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if !self.torn_down
            && let Err(e) = cleanup::teardown_topology(self.id)
        {
            eprintln!("synguard-harness: {e:#}");
        }
    }
}
