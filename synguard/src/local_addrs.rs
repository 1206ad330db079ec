//! Keeps `LOCAL_ADDRS` (the host's own unicast addresses) and `IFACES` (the protected
//! interface's MAC and MTU, and whether `net.ipv4.tcp_ecn` accepts ECN) current from
//! rtnetlink, so XDP answers a SYN only when it is addressed to this host, with the MSS the
//! link carries: an RTM_GETADDR dump and the interface's RTM_GETLINK at start, then address
//! and link events (an MTU change is an RTM_NEWLINK). The ECN sysctl has no event, so it is
//! re-read every [`SYSCTL_POLL`].
//!
//! Everything is seen from the daemon's network namespace, which is the one whose sockets
//! the XDP program looks up. Local addresses are IFA_LOCAL (IFA_ADDRESS where there is
//! none, as for IPv6), flagged `LOCAL_ADDR_LOCAL`; each IPv4 address's IFA_BROADCAST is
//! entered flagged `LOCAL_ADDR_BROADCAST`, so XDP never answers a SYN from a directed
//! broadcast address of the host's subnets. Peer addresses are never entered. Until the
//! maps are filled XDP answers nothing (it passes SYNs to the kernel), so they are filled
//! before attaching.

use std::{
    collections::HashMap as StdHashMap,
    net::IpAddr,
    os::fd::AsRawFd,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use log::{debug, warn};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
};
use netlink_sys::Socket;
use synguard_common::maps::{IfaceFacts, LOCAL_ADDR_BROADCAST, LOCAL_ADDR_LOCAL, LocalAddrKey};

use crate::{
    check,
    iface::{self, Link},
    rtnl,
};

/// How often `net.ipv4.tcp_ecn` is re-read (it has no change event).
pub const SYSCTL_POLL: Duration = Duration::from_secs(1);

/// rtnetlink multicast groups (`enum rtnetlink_groups`).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

struct Tables {
    addrs: HashMap<MapData, LocalAddrKey, u8>,
    ifaces: HashMap<MapData, u32, IfaceFacts>,
    ifindex: u32,
    /// What `IFACES[ifindex]` holds (or will, once the link has a MAC).
    facts: IfaceFacts,
    /// Whether a link message has given the MAC yet (all zeros is a real one, lo's).
    mac_known: bool,
    ecn_read: Instant,
    /// The interface strips VLAN tags on receive ([`iface::strips_vlan_tags`]): addresses
    /// of VLAN devices over it are not entered as local (see [`Tables::keys_of`]).
    strips_vlan: bool,
}

/// Fills both maps for interface `ifindex` and keeps them current on a background thread
/// for the life of the process.
///
/// With `strips_vlan`, the addresses of VLAN devices over the interface are left out: their
/// frames reach XDP with the tag stripped (out of band), so a SYN+ACK made in place would
/// leave untagged, outside the client's VLAN. XDP passes SYNs to them (`not_local`), and
/// the kernel answers on the VLAN device.
pub fn start(addrs: Map, ifaces: Map, ifindex: u32, strips_vlan: bool) -> Result<()> {
    let mut t = Tables {
        addrs: HashMap::try_from(addrs).context("LOCAL_ADDRS")?,
        ifaces: HashMap::try_from(ifaces).context("IFACES")?,
        ifindex,
        facts: IfaceFacts {
            kernel_ecn: kernel_accepts_ecn(),
            ..IfaceFacts::default()
        },
        ecn_read: Instant::now(),
        mac_known: false,
        strips_vlan,
    };
    // Subscribed before the dump, so no change between the two is missed.
    let events = rtnl::subscribe(&[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR])?;
    // The receive wakes up at least every SYSCTL_POLL, to re-read the ECN sysctl.
    set_recv_timeout(&events, SYSCTL_POLL)?;
    t.sync()?;
    thread::Builder::new()
        .name("sg-local-addrs".into())
        .spawn(move || t.follow(events))?;
    Ok(())
}

impl Tables {
    /// Makes both maps match a fresh dump.
    fn sync(&mut self) -> Result<()> {
        let mut want: StdHashMap<LocalAddrKey, u8> = StdHashMap::new();
        let dump = rtnl::request(
            "RTM_GETADDR",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
        )?;
        let keys: Vec<(LocalAddrKey, u8)> = dump
            .iter()
            .flat_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => self.keys_of(a),
                _ => Vec::new(),
            })
            .collect();
        for (k, flag) in keys {
            *want.entry(k).or_default() |= flag;
        }
        let have: Vec<LocalAddrKey> = self.addrs.keys().filter_map(|k| k.ok()).collect();
        for k in have.iter().filter(|k| !want.contains_key(k)) {
            let _ = self.addrs.remove(k);
        }
        for (k, flags) in &want {
            self.addrs
                .insert(k, flags, 0)
                .context("writing LOCAL_ADDRS")?;
        }
        let link = iface::get_link(self.ifindex, None)
            .with_context(|| format!("interface index {}", self.ifindex))?;
        self.set_link(&link)?;
        debug!("{} local and broadcast addresses", want.len());
        Ok(())
    }

    /// Adds `flag` to the entry of `k`, keeping the flags it has.
    fn add(&mut self, k: &LocalAddrKey, flag: u8) -> Result<()> {
        let flags = self.addrs.get(k, 0).unwrap_or(0) | flag;
        self.addrs
            .insert(k, &flags, 0)
            .context("writing LOCAL_ADDRS")
    }

    /// Takes the link's MAC and MTU (an event may carry either; a missing one is kept).
    fn set_link(&mut self, l: &Link) -> Result<()> {
        if let Some(mac) = l.mac {
            self.facts.mac = mac;
            self.mac_known = true;
        }
        if let Some(mtu) = l.mtu
            && mtu != self.facts.mtu
        {
            debug!("interface {} MTU {mtu}", self.ifindex);
            self.facts.mtu = mtu;
        }
        self.write_facts()
    }

    /// Writes `IFACES[ifindex]`, once the link's MAC is known: without an entry XDP
    /// answers nothing, which is right until then.
    fn write_facts(&mut self) -> Result<()> {
        if !self.mac_known {
            return Ok(());
        }
        self.ifaces
            .insert(&self.ifindex, &self.facts, 0)
            .context("writing IFACES")?;
        Ok(())
    }

    /// Re-reads `net.ipv4.tcp_ecn` if [`SYSCTL_POLL`] has passed, and writes a change.
    fn poll_sysctls(&mut self) {
        if self.ecn_read.elapsed() < SYSCTL_POLL {
            return;
        }
        self.ecn_read = Instant::now();
        let ecn = kernel_accepts_ecn();
        if ecn != self.facts.kernel_ecn {
            debug!(
                "net.ipv4.tcp_ecn now {} ECN setup",
                if ecn != 0 { "accepts" } else { "refuses" }
            );
            self.facts.kernel_ecn = ecn;
            if let Err(e) = self.write_facts() {
                warn!("updating IFACES: {e:#}");
            }
        }
    }

    fn follow(mut self, events: Socket) {
        loop {
            self.poll_sysctls();
            let data = match events.recv_from_full() {
                Ok((data, _)) => data,
                // The receive timeout: nothing happened, time to poll the sysctls.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // ENOBUFS: events were lost; anything else: try again shortly. Either
                    // way a full resync puts the maps right.
                    if e.raw_os_error() != Some(libc::ENOBUFS) {
                        warn!("rtnetlink events: {e}");
                        thread::sleep(Duration::from_secs(1));
                    }
                    self.resync();
                    continue;
                }
            };
            let messages = rtnl::messages(&data).unwrap_or_else(|e| {
                warn!("rtnetlink events: {e:#}");
                Vec::new()
            });
            for p in messages {
                let NetlinkPayload::InnerMessage(m) = p else {
                    continue;
                };
                let r = match m {
                    RouteNetlinkMessage::NewAddress(a) => self
                        .keys_of(&a)
                        .into_iter()
                        .try_for_each(|(k, flag)| self.add(&k, flag)),
                    // The address may still be on another interface: recount.
                    RouteNetlinkMessage::DelAddress(_) => {
                        self.resync();
                        Ok(())
                    }
                    RouteNetlinkMessage::NewLink(l) if l.header.index == self.ifindex => {
                        self.set_link(&iface::parse_link(l))
                    }
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    warn!("updating the local address maps: {e:#}");
                }
            }
        }
    }

    /// [`address_keys`], less the local flag of an address on a VLAN device over a
    /// tag-stripping interface.
    fn keys_of(&self, m: &AddressMessage) -> Vec<(LocalAddrKey, u8)> {
        let keys = address_keys(m);
        let idx = m.header.index;
        if !self.strips_vlan || idx == self.ifindex {
            return keys;
        }
        match iface::get_link(idx, None) {
            Ok(l) if iface::is_vlan_over(&l, self.ifindex) => {
                debug!(
                    "{}: on a VLAN over a tag-stripping interface, left to the kernel",
                    l.name
                );
                keys.into_iter()
                    .filter(|&(_, f)| f != LOCAL_ADDR_LOCAL)
                    .collect()
            }
            _ => keys,
        }
    }

    fn resync(&mut self) {
        if let Err(e) = self.sync() {
            warn!("resyncing the local address maps: {e:#}");
        }
    }
}

/// 1 if `net.ipv4.tcp_ecn` lets the kernel accept ECN setup on a passive open (1: also
/// requests it, 2: accepts only), else 0. Unreadable counts as the kernel's default, 2.
fn kernel_accepts_ecn() -> u8 {
    u8::from(check::sysctl(check::TCP_ECN).map_or(true, |v| v == 1 || v == 2))
}

/// Makes `recv` on `sock` give up with `WouldBlock` after `t`.
fn set_recv_timeout(sock: &Socket, t: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket fd and a timeval of the size passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO on the rtnetlink socket");
    }
    Ok(())
}

/// Every local and broadcast address of the namespace, as `LOCAL_ADDRS` keys with the flag
/// each one brings (RTM_GETADDR dump).
#[cfg(test)]
fn local_addresses() -> Result<Vec<(LocalAddrKey, u8)>> {
    let msgs = rtnl::request(
        "RTM_GETADDR",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        true,
    )?;
    Ok(msgs
        .iter()
        .flat_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => address_keys(a),
            _ => Vec::new(),
        })
        .collect())
}

/// What an address message enters in `LOCAL_ADDRS`: its local address, and its IPv4
/// broadcast address if it has one.
fn address_keys(m: &AddressMessage) -> Vec<(LocalAddrKey, u8)> {
    let mut keys = Vec::with_capacity(2);
    if let Some(k) = local_key(m) {
        keys.push((k, LOCAL_ADDR_LOCAL));
    }
    if let Some(k) = broadcast_key(m) {
        keys.push((k, LOCAL_ADDR_BROADCAST));
    }
    keys
}

/// The `LOCAL_ADDRS` key of an address message: IFA_LOCAL, else IFA_ADDRESS.
fn local_key(m: &AddressMessage) -> Option<LocalAddrKey> {
    let find = |local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    Some(match find(true).or_else(|| find(false))? {
        IpAddr::V4(a) => LocalAddrKey::v4(a.octets()),
        IpAddr::V6(a) => LocalAddrKey::v6(a.octets()),
    })
}

/// The IFA_BROADCAST of an IPv4 address message, as a `LOCAL_ADDRS` key.
fn broadcast_key(m: &AddressMessage) -> Option<LocalAddrKey> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Broadcast(b) => Some(LocalAddrKey::v4(b.octets())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_shows_loopback_and_its_address() {
        let keys = local_addresses().unwrap();
        // Every namespace with lo up has 127.0.0.1; the test host's has.
        assert!(
            keys.contains(&(LocalAddrKey::v4([127, 0, 0, 1]), LOCAL_ADDR_LOCAL)),
            "{keys:?}"
        );
    }

    #[test]
    fn an_ipv4_address_brings_its_broadcast() {
        let mut m = AddressMessage::default();
        m.attributes = vec![
            AddressAttribute::Address([198, 18, 0, 1].into()),
            AddressAttribute::Local([198, 18, 0, 1].into()),
            AddressAttribute::Broadcast([198, 18, 0, 255].into()),
        ];
        assert_eq!(
            address_keys(&m),
            vec![
                (LocalAddrKey::v4([198, 18, 0, 1]), LOCAL_ADDR_LOCAL),
                (LocalAddrKey::v4([198, 18, 0, 255]), LOCAL_ADDR_BROADCAST),
            ]
        );
    }
}
