//! Socket states on the protected ports: from sock_diag (NETLINK_SOCK_DIAG, the kernel
//! filtering by state and port), falling back to /proc/net/tcp and /proc/net/tcp6. Both show
//! the caller's network namespace (unlike /sys/class/net), so this works under
//! `nsenter --net`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::ports::PortSet;

/// Counts of the states operators watch during a SYN flood, on the protected ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenerStates {
    pub syn_recv: u64,
    pub established: u64,
    pub time_wait: u64,
    pub close_wait: u64,
    pub listen: u64,
}

impl ListenerStates {
    pub fn fields(&self) -> [(&'static str, u64); 5] {
        [
            ("syn_recv", self.syn_recv),
            ("established", self.established),
            ("time_wait", self.time_wait),
            ("close_wait", self.close_wait),
            ("listen", self.listen),
        ]
    }
}

// include/net/tcp_states.h
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_SYN_RECV: u8 = 0x03;
const TCP_TIME_WAIT: u8 = 0x06;
const TCP_CLOSE_WAIT: u8 = 0x08;
const TCP_LISTEN: u8 = 0x0A;

/// (local port, state) of every socket in a /proc/net/tcp{,6} text.
fn entries(text: &str) -> impl Iterator<Item = (u16, u8)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
        let state = u8::from_str_radix(state, 16).ok()?;
        Some((port, state))
    })
}

pub fn count_in(text: &str, ports: &PortSet, acc: &mut ListenerStates) {
    for (port, state) in entries(text) {
        if !ports.contains(port) {
            continue;
        }
        tally(acc, state);
    }
}

fn tables() -> Vec<String> {
    // tcp6 is missing when IPv6 is disabled; that is not an error.
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// State counts on `ports` in the caller's network namespace.
pub fn read(ports: &PortSet) -> ListenerStates {
    match diag::read(ports) {
        Ok(acc) => acc,
        Err(e) => {
            log::debug!("sock_diag: {e}; reading /proc/net/tcp instead");
            read_proc(ports)
        }
    }
}

/// As [`read`], from /proc/net/tcp{,6} (every socket of the namespace, as text).
pub fn read_proc(ports: &PortSet) -> ListenerStates {
    let mut acc = ListenerStates::default();
    for t in tables() {
        count_in(&t, ports, &mut acc);
    }
    acc
}

fn tally(acc: &mut ListenerStates, state: u8) {
    match state {
        TCP_ESTABLISHED => acc.established += 1,
        TCP_SYN_RECV => acc.syn_recv += 1,
        TCP_TIME_WAIT => acc.time_wait += 1,
        TCP_CLOSE_WAIT => acc.close_wait += 1,
        TCP_LISTEN => acc.listen += 1,
        _ => {}
    }
}

/// A NETLINK_SOCK_DIAG dump (linux/inet_diag.h): the kernel returns only the sockets in the
/// states we count whose local port is in the set, so a namespace with many sockets on
/// other ports costs little.
mod diag {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const INET_DIAG_REQ_BYTECODE: u16 = 1;
    const INET_DIAG_BC_S_GE: u8 = 2;
    const INET_DIAG_BC_S_LE: u8 = 3;
    const INET_DIAG_BC_JMP: u8 = 1;
    /// Beyond this many port ranges the filter is done here instead of in the kernel.
    const MAX_RANGES: usize = 256;
    const NLMSG_HDR: usize = 16;
    /// struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48).
    const REQ_LEN: usize = 56;

    /// inet_diag bytecode accepting a local port in one of `ranges`. Per range: S_GE lo and
    /// S_LE hi (each followed by the op that carries its port), whose failures jump to the
    /// next range, then an always-taken JMP to the end (accept). The kernel audits along the
    /// `yes` chain, so every `yes` is the next op and only `no` jumps; end + 4 rejects. The
    /// last range needs no JMP: its S_LE falls through to the end.
    pub(super) fn bytecode(ranges: &[(u16, u16)]) -> Vec<u8> {
        let len = ranges.len() * 20 - 4;
        let mut out = Vec::with_capacity(len);
        let op = |out: &mut Vec<u8>, code: u8, yes: u8, no: usize| {
            out.push(code);
            out.push(yes);
            out.extend_from_slice(&(no as u16).to_ne_bytes());
        };
        let port = |out: &mut Vec<u8>, p: u16| {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&p.to_ne_bytes());
        };
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            let b = i * 20;
            let last = i + 1 == ranges.len();
            let fail = |at: usize| if last { len + 4 - at } else { b + 20 - at };
            op(&mut out, INET_DIAG_BC_S_GE, 8, fail(b));
            port(&mut out, lo);
            op(&mut out, INET_DIAG_BC_S_LE, 8, fail(b + 8));
            port(&mut out, hi);
            if !last {
                op(&mut out, INET_DIAG_BC_JMP, 4, len - (b + 16));
            }
        }
        out
    }

    fn request(family: u8, states: u32, bc: &[u8]) -> Vec<u8> {
        let attr_len = if bc.is_empty() { 0 } else { 4 + bc.len() };
        let total = NLMSG_HDR + REQ_LEN + attr_len;
        let mut m = Vec::with_capacity(total);
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
        m.extend_from_slice(&states.to_ne_bytes());
        m.extend_from_slice(&[0u8; 48]);
        if !bc.is_empty() {
            m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
            m.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
            m.extend_from_slice(bc);
        }
        m
    }

    pub fn read(ports: &PortSet) -> std::io::Result<ListenerStates> {
        read_counted(ports).map(|(acc, _)| acc)
    }

    /// The counts, and how many sockets the kernel returned (after its own filtering).
    pub fn read_counted(ports: &PortSet) -> std::io::Result<(ListenerStates, u64)> {
        let mut acc = ListenerStates::default();
        let mut rows = 0;
        let states = [
            TCP_ESTABLISHED,
            TCP_SYN_RECV,
            TCP_TIME_WAIT,
            TCP_CLOSE_WAIT,
            TCP_LISTEN,
        ]
        .iter()
        .fold(0u32, |m, &s| m | 1 << s);
        let ranges = ports.ranges();
        if ranges.is_empty() {
            return Ok((acc, 0));
        }
        let bc = if ranges.len() <= MAX_RANGES {
            bytecode(&ranges)
        } else {
            Vec::new()
        };
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            dump(&request(family, states, &bc), ports, &mut acc, &mut rows)?;
        }
        Ok((acc, rows))
    }

    fn dump(
        req: &[u8],
        ports: &PortSet,
        acc: &mut ListenerStates,
        rows: &mut u64,
    ) -> std::io::Result<()> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: req is a valid buffer of req.len() bytes; the kernel is the default
        // destination of an unbound netlink socket.
        let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is writable for buf.len() bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= NLMSG_HDR {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(msgs[4..6].try_into().unwrap());
                if len < NLMSG_HDR || len > msgs.len() {
                    return Err(std::io::Error::other("truncated netlink message"));
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = msgs
                            .get(16..20)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    SOCK_DIAG_BY_FAMILY if len >= NLMSG_HDR + 8 => {
                        // inet_diag_msg: family, state, timer, retrans, then sport (be16).
                        let body = &msgs[NLMSG_HDR..len];
                        let sport = u16::from_be_bytes([body[4], body[5]]);
                        *rows += 1;
                        if ports.contains(sport) {
                            tally(acc, body[1]);
                        }
                    }
                    _ => {}
                }
                msgs = &msgs[(len + 3) & !3..];
            }
        }
    }
}

/// Ports with a listening TCP socket in the caller's network namespace.
pub fn listening_ports() -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for t in tables() {
        out.extend(
            entries(&t)
                .filter(|&(_, s)| s == TCP_LISTEN)
                .map(|(p, _)| p),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:0050 0100007F:D432 03 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   3: 0100007F:0050 0100007F:D433 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   4: 0100007F:01BB 0100007F:D434 08 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   5: 0100007F:1F90 0100007F:D435 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:A000 03 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_states_on_protected_ports_only() {
        let ports = ports::parse("80,443").unwrap();
        let mut acc = ListenerStates::default();
        count_in(TCP, &ports, &mut acc);
        count_in(TCP6, &ports, &mut acc);
        assert_eq!(
            acc,
            ListenerStates {
                syn_recv: 2,
                established: 1,
                time_wait: 1,
                close_wait: 1,
                listen: 2,
            }
        );
    }

    #[test]
    fn sock_diag_agrees_with_proc_and_filters_ports_in_the_kernel() {
        // Sockets of our own: a listener, and a connection to it (both ends on ports we
        // know), on loopback in whatever namespace the test runs.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let lp = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", lp)).unwrap();
        let (_s, _) = l.accept().unwrap();
        let cp = c.local_addr().unwrap().port();
        let only = |p: u16| {
            let mut s = PortSet::empty();
            s.insert(p);
            s
        };
        let got = diag::read(&only(lp)).expect("sock_diag");
        assert_eq!(got.listen, 1, "{got:?}");
        assert_eq!(got.established, 1, "{got:?}");
        assert_eq!(got, read_proc(&only(lp)));
        let both = ports::parse(&format!("{lp},{cp}")).unwrap();
        let (got, rows) = diag::read_counted(&both).unwrap();
        assert_eq!((got.listen, got.established), (1, 2), "{got:?}");
        // The kernel applied the port filter: it sent only these three sockets, whatever
        // else this namespace holds (the test binary's own sockets at least).
        assert_eq!(rows, 3);
        let other = ports::parse("1").unwrap();
        assert_eq!(diag::read_counted(&other).unwrap().1, 0);
        assert_eq!(got, read_proc(&both));
    }

    #[test]
    fn port_bytecode_jumps_land_on_ops_or_the_ends() {
        let bc = diag::bytecode(&[(80, 80), (443, 450)]);
        let op = |at: usize| {
            (
                bc[at],
                bc[at + 1],
                u16::from_ne_bytes([bc[at + 2], bc[at + 3]]),
            )
        };
        let port = |at: usize| u16::from_ne_bytes([bc[at + 6], bc[at + 7]]);
        assert_eq!(bc.len(), 36);
        // First range: S_GE 80, S_LE 80 fail to the second range (at 20); JMP to the end.
        assert_eq!((op(0), port(0)), ((2, 8, 20), 80));
        assert_eq!((op(8), port(8)), ((3, 8, 12), 80));
        assert_eq!(op(16), (1, 4, 20));
        // Last range: failures jump to end + 4, the reject; S_LE falls through to accept.
        assert_eq!((op(20), port(20)), ((2, 8, 20), 443));
        assert_eq!((op(28), port(28)), ((3, 8, 12), 450));
    }

    #[test]
    fn ignores_garbage() {
        let mut acc = ListenerStates::default();
        count_in(
            "header\nnot a socket line\n\n",
            &ports::parse("80").unwrap(),
            &mut acc,
        );
        assert_eq!(acc, ListenerStates::default());
    }
}
