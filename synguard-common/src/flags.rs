//! The TCP flag verdict table: every one of the 256 combinations of the eight flag bits
//! gets exactly one class, computed at compile time by [`classify`] into [`VERDICTS`].
//!
//! The rule: never drop what Linux would act on. Linux (net/ipv4/tcp_input.c) discards a
//! segment with none of ACK, RST and SYN in every state (`tcp_rcv_state_process`, and
//! `tcp_rcv_established`'s slow path, both before `tcp_validate_incoming`). For a socket
//! of the flow's own, `tcp_validate_incoming` handles RST before SYN, whatever else is
//! set, so any RST-bearing segment is processed as an RST (time-wait and request sockets
//! too); a SYN without RST is answered with a challenge ACK and discarded. A listener
//! discards any RST, and a SYN with FIN, and takes any other SYN without ACK
//! (`tcp_conn_request` does not look at PSH or URG).
//!
//! Classes in precedence order (on FIN SYN RST PSH ACK URG; ECE/CWR never matter).
//! "Lookup" is the socket check of the RST path: a segment of a flow with a socket of its
//! own (or to a port nothing listens on, or to an MPTCP listener) passes, and one to a
//! plain listener alone is dropped, under `NoSocketDrop` for `Rst`/`SynAck` and under its
//! own flag counter for the RST-bearing `Invalid` reasons ([`Invalid::own_socket_acts`]).
//! For every RST-bearing class that drop is what the listener does too, engaged or not.
//!
//! | #  | class              | rule                                  | Linux, own socket          | Linux, listener       | we          | combos |
//! |----|--------------------|---------------------------------------|----------------------------|-----------------------|-------------|-------:|
//! | 1  | `Invalid(Null)`    | none of the six                       | discards                   | discards              | drop        |      4 |
//! | 2  | `Invalid(All)`     | all six                               | an RST                     | discards              | lookup      |      4 |
//! | 3  | `Invalid(SynRst)`  | SYN and RST                           | an RST                     | discards              | lookup      |     60 |
//! | 4  | `Invalid(FinRst)`  | FIN and RST, no SYN                   | an RST                     | discards              | lookup      |     32 |
//! | 5  | `Invalid(SynFin)`  | SYN and FIN, no RST                   | challenge ACK, discards    | discards              | drop        |     32 |
//! | 6  | `Invalid(Xmas)`    | FIN, PSH and URG; no ACK, SYN, RST    | discards                   | discards              | drop        |      4 |
//! | 7  | `Invalid(FinNoAck)`| FIN; no ACK, SYN, RST                 | discards                   | discards              | drop        |     12 |
//! | 8  | `Invalid(PshNoAck)`| PSH; no ACK, SYN, RST, FIN            | discards                   | discards              | drop        |      8 |
//! | 9  | `Invalid(UrgNoAck)`| URG; no ACK, SYN, RST, FIN, PSH       | discards                   | discards              | drop        |      4 |
//! | 10 | `Syn`              | SYN; no ACK, FIN, RST (PSH/URG any)   | challenge ACK              | a SYN                 | SYN path    |     16 |
//! | 11 | `SynAck`           | SYN and ACK; no FIN, RST              | processed                  | answers with an RST   | lookup      |     16 |
//! | 12 | `Rst`              | RST; no SYN, FIN (PSH/ACK/URG any)    | an RST                     | discards              | lookup      |     32 |
//! | 13 | `Ack`              | ACK; no SYN, RST (FIN/PSH/URG any)    | processed                  | cookie check          | cookie path |     32 |
//!
//! The SYN path passes a SYN whose tuple has a socket (`ExistingSocket`), so the
//! challenge ACK still happens. The one drop Linux would not make is a SYN+ACK to a
//! listener alone, which Linux answers with an RST; synguard drops it in every mode but
//! monitor, as before (left as it was: not in this change's scope).
//!
//! 4 + 4 + 60 + 32 + 32 + 4 + 12 + 8 + 4 + 16 + 16 + 32 + 32 = 256; the test
//! `documented_counts` holds this table to the code, and `print_table` prints all 256 rows
//! and checks each against the test oracle
//! (`cargo test -p synguard-common print_table -- --nocapture`).

use crate::maps::Counter;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// The six flags the rules look at.
const LOW6: u8 = FIN | SYN | RST | PSH | ACK | URG;

/// Why a segment is dropped: always, or for the RST-bearing reasons
/// ([`Invalid::own_socket_acts`]) only without a socket of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    Null,
    All,
    SynFin,
    SynRst,
    FinRst,
    Xmas,
    FinNoAck,
    PshNoAck,
    UrgNoAck,
}

impl Invalid {
    /// RST-bearing with SYN or FIN: Linux processes it as an RST for a socket of the
    /// flow's own, so it is dropped only to a listener alone (which discards it too).
    /// One enum with a predicate rather than a second verdict variant carrying a reason,
    /// which would make [`VERDICTS`] two bytes an entry.
    #[inline(always)]
    pub const fn own_socket_acts(self) -> bool {
        matches!(self, Invalid::All | Invalid::SynRst | Invalid::FinRst)
    }

    /// The counter this reason is reported under.
    #[inline(always)]
    pub const fn counter(self) -> Counter {
        match self {
            Invalid::Null => Counter::FlagNull,
            Invalid::All => Counter::FlagAll,
            Invalid::SynFin => Counter::FlagSynFin,
            Invalid::SynRst => Counter::FlagSynRst,
            Invalid::FinRst => Counter::FlagFinRst,
            Invalid::Xmas => Counter::FlagXmas,
            Invalid::FinNoAck => Counter::FlagFinNoAck,
            Invalid::PshNoAck => Counter::FlagPshNoAck,
            Invalid::UrgNoAck => Counter::FlagUrgNoAck,
        }
    }
}

/// One byte per entry (the enum packs into one byte), so the table is 256 bytes of
/// read-only data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagVerdict {
    Syn,
    SynAck,
    Ack,
    Rst,
    /// Dropped under the reason, unless [`Invalid::own_socket_acts`]: then only to a
    /// listener alone.
    Invalid(Invalid),
}

#[inline(always)]
const fn has(f: u8, bits: u8) -> bool {
    f & bits == bits
}

/// The rules of the module doc, in their precedence order.
pub const fn classify(flags: u8) -> FlagVerdict {
    let f = flags;
    let ack = has(f, ACK);
    if f & LOW6 == 0 {
        return FlagVerdict::Invalid(Invalid::Null);
    }
    if has(f, RST) {
        // RST first, as in `tcp_validate_incoming`.
        return if f & LOW6 == LOW6 {
            FlagVerdict::Invalid(Invalid::All)
        } else if has(f, SYN) {
            FlagVerdict::Invalid(Invalid::SynRst)
        } else if has(f, FIN) {
            FlagVerdict::Invalid(Invalid::FinRst)
        } else {
            FlagVerdict::Rst
        };
    }
    let reason = if has(f, SYN | FIN) {
        Some(Invalid::SynFin)
    } else if has(f, SYN) {
        None
    } else if has(f, FIN | PSH | URG) && !ack {
        Some(Invalid::Xmas)
    } else if has(f, FIN) && !ack {
        Some(Invalid::FinNoAck)
    } else if has(f, PSH) && !ack {
        Some(Invalid::PshNoAck)
    } else if has(f, URG) && !ack {
        Some(Invalid::UrgNoAck)
    } else {
        None
    };
    match reason {
        Some(r) => FlagVerdict::Invalid(r),
        // From here on there is no RST, SYN excludes FIN, and without SYN there is ACK.
        None if has(f, SYN) => {
            if ack {
                FlagVerdict::SynAck
            } else {
                FlagVerdict::Syn
            }
        }
        None => FlagVerdict::Ack,
    }
}

const fn build() -> [FlagVerdict; 256] {
    let mut t = [FlagVerdict::Invalid(Invalid::Null); 256];
    let mut i = 0;
    while i < 256 {
        t[i] = classify(i as u8);
        i += 1;
    }
    t
}

/// The verdict of each flag byte, built at compile time. A `static` so it is one copy in
/// read-only data, never materialised on the BPF stack.
pub static VERDICTS: [FlagVerdict; 256] = build();

/// Table lookup; a `u8` index cannot be out of range.
#[inline(always)]
pub fn verdict(flags: u8) -> FlagVerdict {
    VERDICTS[flags as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written independently of `classify`: the invalid rules of the module doc tried in
    /// order, then the valid classes, which are stated so that they exclude each other
    /// and exactly one must match; no condition is there only by precedence.
    fn oracle(f: u8) -> FlagVerdict {
        use FlagVerdict as V;
        use Invalid as I;
        let set = |b: u8| f & b != 0;
        let low = [FIN, SYN, RST, PSH, ACK, URG];
        let n_low = low.iter().filter(|&&b| set(b)).count();
        // What Linux does, as the module doc states it: nothing without ACK, RST or SYN;
        // RST before anything else; a SYN with FIN never.
        let linux_discards_always = !set(ACK) && !set(RST) && !set(SYN);
        let rows: [(bool, V); 13] = [
            (n_low == 0, V::Invalid(I::Null)),
            (n_low == 6, V::Invalid(I::All)),
            (set(SYN) && set(RST) && n_low < 6, V::Invalid(I::SynRst)),
            (set(FIN) && set(RST) && !set(SYN), V::Invalid(I::FinRst)),
            (set(SYN) && set(FIN) && !set(RST), V::Invalid(I::SynFin)),
            (
                linux_discards_always && set(FIN) && set(PSH) && set(URG),
                V::Invalid(I::Xmas),
            ),
            (
                linux_discards_always && set(FIN) && !(set(PSH) && set(URG)),
                V::Invalid(I::FinNoAck),
            ),
            (
                linux_discards_always && !set(FIN) && set(PSH),
                V::Invalid(I::PshNoAck),
            ),
            (
                linux_discards_always && !set(FIN) && !set(PSH) && set(URG),
                V::Invalid(I::UrgNoAck),
            ),
            (set(SYN) && !set(ACK) && !set(FIN) && !set(RST), V::Syn),
            (set(SYN) && set(ACK) && !set(FIN) && !set(RST), V::SynAck),
            (set(RST) && !set(SYN) && !set(FIN), V::Rst),
            (set(ACK) && !set(SYN) && !set(RST), V::Ack),
        ];
        // Stated so that they exclude each other: exactly one matches, none by precedence.
        let matching: Vec<V> = rows.iter().filter(|r| r.0).map(|r| r.1).collect();
        assert_eq!(matching.len(), 1, "flags {f:#04x}: classes {matching:?}");
        matching[0]
    }

    #[test]
    fn all_256_match_oracle() {
        for f in 0..=255u8 {
            assert_eq!(verdict(f), oracle(f), "flags {f:#04x}");
            assert_eq!(classify(f), VERDICTS[f as usize]);
        }
    }

    #[test]
    fn documented_counts() {
        let count = |v: FlagVerdict| (0..=255u8).filter(|&f| verdict(f) == v).count();
        use FlagVerdict as V;
        use Invalid as I;
        let doc = [
            (V::Invalid(I::Null), 4),
            (V::Invalid(I::All), 4),
            (V::Invalid(I::SynRst), 60),
            (V::Invalid(I::FinRst), 32),
            (V::Invalid(I::SynFin), 32),
            (V::Invalid(I::Xmas), 4),
            (V::Invalid(I::FinNoAck), 12),
            (V::Invalid(I::PshNoAck), 8),
            (V::Invalid(I::UrgNoAck), 4),
            (V::Syn, 16),
            (V::SynAck, 16),
            (V::Rst, 32),
            (V::Ack, 32),
        ];
        for (v, n) in doc {
            assert_eq!(count(v), n, "{v:?}");
        }
        assert_eq!(doc.iter().map(|d| d.1).sum::<usize>(), 256);
    }

    #[test]
    fn familiar_packets() {
        assert_eq!(verdict(SYN), FlagVerdict::Syn);
        assert_eq!(verdict(SYN | ECE | CWR), FlagVerdict::Syn);
        assert_eq!(verdict(SYN | ACK | ECE), FlagVerdict::SynAck);
        assert_eq!(verdict(ACK | PSH), FlagVerdict::Ack);
        assert_eq!(verdict(ACK | FIN), FlagVerdict::Ack);
        assert_eq!(verdict(RST), FlagVerdict::Rst);
        assert_eq!(verdict(RST | ACK), FlagVerdict::Rst);
        assert_eq!(
            verdict(FIN | PSH | URG),
            FlagVerdict::Invalid(Invalid::Xmas)
        );
        assert_eq!(verdict(0), FlagVerdict::Invalid(Invalid::Null));
        assert_eq!(verdict(0xff), FlagVerdict::Invalid(Invalid::All));
        // Linux's listener takes a SYN whatever PSH and URG say.
        assert_eq!(verdict(SYN | PSH), FlagVerdict::Syn);
        assert_eq!(verdict(SYN | URG | PSH), FlagVerdict::Syn);
        // An RST is an RST whatever PSH and URG say.
        assert_eq!(verdict(RST | PSH), FlagVerdict::Rst);
        assert_eq!(verdict(RST | URG), FlagVerdict::Rst);
        assert_eq!(verdict(RST | PSH | URG), FlagVerdict::Rst);
        assert_eq!(
            verdict(FIN | RST | ACK),
            FlagVerdict::Invalid(Invalid::FinRst)
        );
        assert_eq!(
            verdict(SYN | FIN | RST),
            FlagVerdict::Invalid(Invalid::SynRst)
        );
        assert_eq!(verdict(PSH), FlagVerdict::Invalid(Invalid::PshNoAck));
        assert_eq!(verdict(SYN | FIN), FlagVerdict::Invalid(Invalid::SynFin));
    }

    #[test]
    fn table_is_one_byte_per_entry() {
        assert_eq!(core::mem::size_of_val(&VERDICTS), 256);
    }

    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

    /// The table as text, one row per flag byte: `0x12 SYN|ACK SynAck`.
    fn table_rows() -> Vec<String> {
        (0..=255u8)
            .map(|f| {
                let set: Vec<_> = (0..8)
                    .filter(|b| f & (1 << b) != 0)
                    .map(|b| NAMES[b])
                    .collect();
                format!("{f:#04x} {:<32} {:?}", set.join("|"), verdict(f))
            })
            .collect()
    }

    /// Prints all 256 rows (`-- --nocapture` to see them) and reads each back: the flag
    /// names must spell the row's byte and the class must be the oracle's.
    #[test]
    fn print_table() {
        let rows = table_rows();
        assert_eq!(rows.len(), 256);
        for (i, row) in rows.iter().enumerate() {
            println!("{row}");
            let mut cols = row.split_whitespace();
            let hex = cols.next().expect("byte column");
            let f = u8::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex byte");
            assert_eq!(usize::from(f), i, "{row}");
            let mut rest: Vec<&str> = cols.collect();
            let class = rest.pop().expect("class column");
            let names = rest.first().copied().unwrap_or("");
            let spelled = names
                .split('|')
                .filter(|n| !n.is_empty())
                .map(|n| 1u8 << NAMES.iter().position(|m| *m == n).expect("flag name"))
                .fold(0u8, |a, b| a | b);
            assert_eq!(spelled, f, "{row}");
            assert_eq!(class, format!("{:?}", oracle(f)), "{row}");
        }
    }
}
