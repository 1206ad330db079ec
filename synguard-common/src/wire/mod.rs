//! Header views over a [`Packet`](crate::packet::Packet), one file per protocol, in the
//! manner of smoltcp's `wire`: each header is parsed from one constant-size load into a
//! plain struct and emitted back as bytes, with its tests beside it.
//!
//! Parsing here only decodes fields; deciding what is acceptable is the caller's job
//! ([`crate::pipeline`]), so the same views serve the XDP path, the TC path and tests.

pub mod addr;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod tcp_options;

pub use addr::Addr;

/// IP protocol number / IPv6 next header of TCP.
pub const IPPROTO_TCP: u8 = 6;
