//! The one rtnetlink client (netlink-packet-route over netlink-sys): a request and its
//! replies, an event subscription, and the messages of one datagram. [`crate::iface`] asks
//! it about links, [`crate::local_addrs`] about addresses and follows their events.

use anyhow::{Context, Result, bail};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Sends `msg` (as a dump request if `dump`) and returns the answer: every message of the
/// dump up to NLMSG_DONE, or the one reply. A kernel error is reported as `what: <errno>`.
pub fn request(
    what: &str,
    msg: RouteNetlinkMessage,
    dump: bool,
) -> Result<Vec<RouteNetlinkMessage>> {
    let mut req = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    // A request that is not a dump asks for an ACK, so a command with no reply (RTM_SETLINK)
    // ends with one instead of waiting for nothing.
    req.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let sock = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    sock.connect(&SocketAddr::new(0, 0))
        .context("netlink connect")?;
    sock.send(&buf, 0)
        .with_context(|| format!("{what}: netlink send"))?;
    let mut out = Vec::new();
    loop {
        let (data, _) = sock
            .recv_from_full()
            .with_context(|| format!("{what}: netlink recv"))?;
        for p in messages(&data).with_context(|| format!("{what}: the reply"))? {
            match p {
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump {
                        return Ok(out);
                    }
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => bail!("{what}: {}", e.to_io()),
                // An ACK (an error message with code 0) ends a request that has no reply.
                NetlinkPayload::Error(_) if !dump => return Ok(out),
                _ => {}
            }
        }
    }
}

/// A socket that receives the events of the rtnetlink multicast `groups`
/// (`enum rtnetlink_groups`); read it with `recv_from_full` and [`messages`].
pub fn subscribe(groups: &[u32]) -> Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE).context("rtnetlink socket")?;
    sock.bind(&SocketAddr::new(0, 0))
        .context("binding the rtnetlink event socket")?;
    for &g in groups {
        sock.add_membership(g)
            .with_context(|| format!("joining rtnetlink group {g}"))?;
    }
    Ok(sock)
}

/// The messages in one netlink datagram.
pub fn messages(data: &[u8]) -> Result<Vec<NetlinkPayload<RouteNetlinkMessage>>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
            .context("parsing an rtnetlink message")?;
        let len = m.header.length as usize;
        if len == 0 {
            bail!("rtnetlink: zero-length message");
        }
        out.push(m.payload);
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        off += (len + 3) & !3;
    }
    Ok(out)
}
