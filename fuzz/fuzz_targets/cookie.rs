//! The cookie check: whatever the key, flow, client ISN and offered options, the ACK of a
//! minted cookie validates and gives the options back (MSS rounded to the table), and with
//! timestamps a tampered cookie or TSecr is refused. Checks of arbitrary cookies never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{
    cookie,
    flow::Flow,
    maps::KeySlot,
    wire::tcp_options::{MAX_WSCALE, TcpOptions, WSCALE_ABSENT},
};
use synguard_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut i = Input(data);
    let key = KeySlot {
        k0: i.u64(),
        k1: i.u64(),
        epoch: i.u32(),
        wscale: i.u8() % (MAX_WSCALE + 1),
        valid: 1,
        _pad: [0; 2],
    };
    let v6 = i.u8() & 1 == 1;
    let (src, dst): ([u8; 16], [u8; 16]) = (i.take(), i.take());
    let (sport, dport) = (i.u16(), i.u16());
    let flow = if v6 {
        Flow::v6(src, dst, sport, dport)
    } else {
        Flow::v4(
            src[..4].try_into().unwrap(),
            dst[..4].try_into().unwrap(),
            sport,
            dport,
        )
    };
    let isn = i.u32();
    let ws = i.u8();
    let bits = i.u8();
    let opts = TcpOptions {
        mss: i.u16(),
        wscale: if ws > MAX_WSCALE { WSCALE_ABSENT } else { ws },
        sack_ok: bits & 1 != 0,
        ts: bits & 2 != 0,
        tsval: i.u32(),
        tsecr: 0,
        // The cookie carries no signature flag: any value must mint the same cookie.
        signed: bits & 8 != 0,
    };
    let ecn = bits & 4 != 0;
    let (noise_cookie, noise_tsecr, flip) = (i.u32(), i.u32(), i.u8());

    // Arbitrary cookies: any answer, no panic.
    let _ = cookie::check(&key, &flow, isn, noise_cookie, Some(noise_tsecr));
    let _ = cookie::check(&key, &flow, isn, noise_cookie, None);

    let m = cookie::mint(&key, &flow, isn, &opts, ecn);
    let tsecr = opts.ts.then_some(m.tsval);
    let d = cookie::check(&key, &flow, isn, m.isn, tsecr).expect("a minted cookie validates");
    // SACK survives with window scale; without it the joint code drops SACK (safe).
    assert_eq!(d.sack_ok, opts.sack_ok && opts.wscale != WSCALE_ABSENT);
    assert!(d.wscale == WSCALE_ABSENT || d.wscale <= MAX_WSCALE);
    assert_eq!(d.wscale == WSCALE_ABSENT, opts.wscale == WSCALE_ABSENT);
    if opts.wscale != WSCALE_ABSENT {
        assert!(d.wscale <= opts.wscale, "window scale may only round down");
    }
    let table = if v6 {
        cookie::MSS_TABLE_V6
    } else {
        cookie::MSS_TABLE_V4
    };
    assert!(table.contains(&d.mss));
    assert!(
        d.mss <= opts.mss.max(table[0]),
        "MSS may only round down (or to the floor)"
    );
    if opts.ts {
        // With timestamps the MAC has >= 48 bits: a one-bit change must fail (2^-48 false
        // accepts are beyond any fuzzing run).
        let bit = 1u32 << (flip % 32);
        assert!(cookie::check(&key, &flow, isn, m.isn ^ bit, tsecr).is_none());
        // TSval's low bit may carry unauthenticated option state (ECN): flip the others.
        let ts_bit = 1u32 << (1 + flip % 31);
        assert!(cookie::check(&key, &flow, isn, m.isn, Some(m.tsval ^ ts_bit)).is_none());
    }
});
