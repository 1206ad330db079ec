//! veth/netns harness for synguard, shared by integration tests, `cargo xtask demo` and
//! `cargo xtask bench`.
//!
//! - [`fixture`]: the shared building blocks (naming, namespaces, veth, cleanup registration)
//!   and the smallest fixture, [`VethPair`]: two namespaces joined by one veth.
//! - [`rawsock::RawSock`]: an AF_PACKET socket that sends frames as written and receives them
//!   with their VLAN tag restored.
//! - [`Topology`]: namespaces srv, cli, atk and a bridging hub, with per-run unique names,
//!   addresses only from the benchmarking ranges (198.18.0.0/15, 2001:2::/48), and teardown on
//!   drop, panic, SIGINT/SIGTERM/SIGHUP and exit (see [`cleanup`]).
//! - [`server::Server`] and [`client::run_clients`]: a real TCP server in srv and timed,
//!   verified kernel-TCP clients in cli.
//! - [`flood`]: spoofed SYN/ACK/RST/FIN/invalid-flag floods from atk via trafgen.
//! - [`xdp`]: a dummy XDP_PASS program for veth peers, and the benchmark's floor programs.
//! - [`synguard`]: the synguard binary in a namespace ([`Synguard`]: CLI commands, daemons
//!   started, waited for and stopped by PID) and its pinned [`Counters`].
//! - [`softirq`]: softirq CPU time, exact (BPF) and tick-sampled (`/proc/stat`).
//! - [`scenario`]: the flood-with-clients scenario of the demo, the bench and the tests.
//!
//! Everything needs root.

pub mod bpfobj;
pub mod cleanup;
pub mod client;
pub mod ecmp;
pub mod fixture;
pub mod flood;
pub mod netns;
pub mod process;
pub mod rawsock;
pub mod scenario;
pub mod server;
pub mod softirq;
pub mod synguard;
pub mod topology;
pub mod xdp;

pub use cleanup::{install_hooks, teardown_all};
pub use client::{ClientOptions, ClientProgress, ClientReport, ConnOutcome, run_clients};
pub use fixture::{
    NETNS_PREFIX, Side, VethPair, cleanup_stale, ensure_root, exclusive_cores, pin_dir,
    pin_thread_to_cpu, root_or_skip, run_state_file,
};
pub use flood::{Family, FloodKind, FloodOptions, FloodReport, RunningFlood};
pub use netns::LinkStats;
/// Signals for [`Daemon::signal`], so test crates need no nix of their own.
pub use nix::sys::signal::Signal;
pub use process::NsChild;
pub use rawsock::RawSock;
pub use server::{Server, ServerOptions, ServerStats};
pub use synguard::{Counters, Daemon, Synguard};
pub use topology::{Endpoint, Role, Topology, TopologyOptions};

impl Topology {
    /// Starts a [`Server`] in srv on `port`, listening on srv's IPv4 and IPv6 addresses.
    pub fn start_server(&self, port: u16) -> anyhow::Result<Server> {
        Server::start(
            &self.srv.netns,
            ServerOptions::new(port, vec![self.srv.ipv4.into(), self.srv.ipv6.into()]),
        )
    }

    /// Runs `opts` from the cli namespace.
    pub fn run_clients(&self, opts: &ClientOptions) -> anyhow::Result<ClientReport> {
        run_clients(&self.cli.netns, opts)
    }

    /// Server socket address for `family`.
    pub fn server_addr(&self, family: Family, port: u16) -> std::net::SocketAddr {
        match family {
            Family::V4 => (self.srv.ipv4, port).into(),
            Family::V6 => (self.srv.ipv6, port).into(),
        }
    }
}
