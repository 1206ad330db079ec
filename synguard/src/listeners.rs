//! Socket states on the protected ports, from /proc/net/tcp and /proc/net/tcp6. Those files
//! show the reader's network namespace (unlike /sys/class/net), so this works under
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
        match state {
            TCP_ESTABLISHED => acc.established += 1,
            TCP_SYN_RECV => acc.syn_recv += 1,
            TCP_TIME_WAIT => acc.time_wait += 1,
            TCP_CLOSE_WAIT => acc.close_wait += 1,
            TCP_LISTEN => acc.listen += 1,
            _ => {}
        }
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
    let mut acc = ListenerStates::default();
    for t in tables() {
        count_in(&t, ports, &mut acc);
    }
    acc
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
