//! Shared between the synguard eBPF programs and the controller: the map ABI and the pure
//! packet logic (header views, TCP options, flag verdicts, checksums, the SYN cookie).
//!
//! `no_std` so the eBPF program compiles it in; the host tests run the same code.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod bucket;
pub mod checksum;
pub mod cookie;
pub mod flags;
pub mod flow;
pub mod maps;
pub mod packet;
pub mod siphash;
pub mod synproxy;
pub mod wire;

/// Reference frame builder and reader, written independently of the code under test; used
/// by this crate's tests and, through the `testutil` feature, by the live veth tests.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
