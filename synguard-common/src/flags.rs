//! The TCP flag verdict table: every one of the 256 combinations of the eight flag bits
//! gets exactly one class, computed at compile time by [`classify`] into [`VERDICTS`].
//!
//! Invalid combinations are tested first, in this order, so each gets one reason:
//!
//! | # | reason       | rule (on FIN SYN RST PSH ACK URG; ECE/CWR never matter) | combos |
//! |---|--------------|----------------------------------------------------------|-------:|
//! | 1 | `Null`       | none of the six set                                      |      4 |
//! | 2 | `All`        | all six set                                              |      4 |
//! | 3 | `SynFin`     | SYN and FIN                                              |     60 |
//! | 4 | `SynRst`     | SYN and RST                                              |     32 |
//! | 5 | `FinRst`     | FIN and RST                                              |     32 |
//! | 6 | `Xmas`       | FIN, PSH and URG without ACK                             |      4 |
//! | 7 | `FinNoAck`   | FIN without ACK                                          |     12 |
//! | 8 | `PshNoAck`   | PSH without ACK                                          |     24 |
//! | 9 | `UrgNoAck`   | URG without ACK                                          |     12 |
//!
//! What remains is valid:
//!
//! | class    | rule                                                   | combos |
//! |----------|--------------------------------------------------------|-------:|
//! | `Syn`    | SYN, no ACK (ECE+CWR here is an ECN-setup SYN)         |      4 |
//! | `SynAck` | SYN and ACK (PSH/URG allowed)                          |     16 |
//! | `Rst`    | RST, with or without ACK (PSH/URG allowed with ACK)    |     20 |
//! | `Ack`    | ACK without SYN or RST (FIN/PSH/URG allowed)           |     32 |
//!
//! 4 + 4 + 60 + 32 + 32 + 4 + 12 + 24 + 12 + 4 + 16 + 20 + 32 = 256; the test
//! `documented_counts` holds this table to the code, and `print_table` prints all 256 rows
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
    let reason = if f & LOW6 == 0 {
        Some(Invalid::Null)
    } else if f & LOW6 == LOW6 {
        Some(Invalid::All)
    } else if has(f, SYN | FIN) {
        Some(Invalid::SynFin)
    } else if has(f, SYN | RST) {
        Some(Invalid::SynRst)
    } else if has(f, FIN | RST) {
        Some(Invalid::FinRst)
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
        // From here on SYN excludes FIN and RST, RST excludes FIN, and without ACK only
        // SYN or RST can be set among the six.
        None if has(f, SYN) => {
            if ack {
                FlagVerdict::SynAck
            } else {
                FlagVerdict::Syn
            }
        }
        None if has(f, RST) => FlagVerdict::Rst,
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

    /// Written independently of `classify`: each rule as a list of (must be set, must be
    /// clear) bit masks, tried in order.
    fn oracle(f: u8) -> FlagVerdict {
        use FlagVerdict as V;
        use Invalid as I;
        let set = |b: u8| f & b != 0;
        let low = [FIN, SYN, RST, PSH, ACK, URG];
        let n_low = low.iter().filter(|&&b| set(b)).count();
        let rules: [(bool, V); 13] = [
            (n_low == 0, V::Invalid(I::Null)),
            (n_low == 6, V::Invalid(I::All)),
            (set(SYN) && set(FIN), V::Invalid(I::SynFin)),
            (set(SYN) && set(RST), V::Invalid(I::SynRst)),
            (set(FIN) && set(RST), V::Invalid(I::FinRst)),
            (
                !set(ACK) && set(FIN) && set(PSH) && set(URG),
                V::Invalid(I::Xmas),
            ),
            (!set(ACK) && set(FIN), V::Invalid(I::FinNoAck)),
            (!set(ACK) && set(PSH), V::Invalid(I::PshNoAck)),
            (!set(ACK) && set(URG), V::Invalid(I::UrgNoAck)),
            (set(SYN) && !set(ACK), V::Syn),
            (set(SYN) && set(ACK), V::SynAck),
            (set(RST), V::Rst),
            (set(ACK), V::Ack),
        ];
        rules
            .iter()
            .find(|r| r.0)
            .map(|r| r.1)
            .expect("every combination has a rule")
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
            (V::Invalid(I::SynFin), 60),
            (V::Invalid(I::SynRst), 32),
            (V::Invalid(I::FinRst), 32),
            (V::Invalid(I::Xmas), 4),
            (V::Invalid(I::FinNoAck), 12),
            (V::Invalid(I::PshNoAck), 24),
            (V::Invalid(I::UrgNoAck), 12),
            (V::Syn, 4),
            (V::SynAck, 16),
            (V::Rst, 20),
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
        assert_eq!(verdict(SYN | PSH), FlagVerdict::Invalid(Invalid::PshNoAck));
    }

    #[test]
    fn table_is_one_byte_per_entry() {
        assert_eq!(core::mem::size_of_val(&VERDICTS), 256);
    }

    #[test]
    fn print_table() {
        let names = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        for f in 0..=255u8 {
            let set: Vec<_> = (0..8)
                .filter(|b| f & (1 << b) != 0)
                .map(|b| names[b])
                .collect();
            println!("{f:#04x} {:<32} {:?}", set.join("|"), verdict(f));
        }
    }
}
