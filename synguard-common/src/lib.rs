//! Shared between the synguard eBPF programs and the controller: the map ABI and the pure
//! packet logic (header views, TCP options, flag verdicts, checksums, the SYN cookie).
//!
//! `no_std` so the eBPF program compiles it in; the host tests run the same code.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod maps;
pub mod packet;
