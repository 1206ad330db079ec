//! Shared between the synguard eBPF programs and the controller: the map ABI ([`maps`]) and
//! the pure packet logic (header views, TCP options, flag verdicts, checksums, the SYN
//! cookie, and the pipeline that puts them together).
//!
//! `no_std` so the eBPF program compiles it in; the host tests run the same code.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

// Buffers, headers and the shapes the verifier needs.
pub mod packet;
pub mod verifier;
pub mod wire;

// The pipeline, in the order a frame goes through it.
pub mod dissect;
pub mod handoff;
pub mod kernel_cookie;
pub mod pipeline;
pub mod synack;

// What the pipeline decides with.
pub mod bucket;
pub mod checksum;
pub mod cookie;
pub mod flags;
pub mod flow;
pub mod maps;
pub mod siphash;

/// Reference frame builder and reader, written independently of the code under test; used
/// by this crate's tests and, through the `testutil` feature, by the live veth tests.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
