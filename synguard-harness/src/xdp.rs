//! Dummy XDP programs for veths: XDP_PASS for peers, XDP_DROP as a free sink.
//!
//! On veth, native-mode XDP_TX (and XDP_REDIRECT into a veth) hands the frame to the peer's
//! XDP ring, which only exists while the *peer* runs an XDP program; otherwise the frame is
//! dropped and counted as an xdp_tx error. Attaching this no-op to the peer makes synguard's
//! native XDP_TX on the server veth actually deliver SYN+ACKs.
//!
//! The object is `src/bpf/xdp_pass.c`, embedded in the library as C and compiled with clang
//! into a temporary file on first use (see [`crate::bpfobj`]), which `ip link set … xdp obj`
//! then loads.

use anyhow::{Context, Result};

use crate::{
    bpfobj::{self, Obj},
    netns,
};

/// ELF section holding the XDP_PASS program, as `ip … xdp obj FILE sec SECTION` expects.
pub const XDP_PASS_SECTION: &str = "xdp";
/// ELF section of the XDP_DROP sink in the same object.
pub const XDP_DROP_SECTION: &str = "xdp.drop";

/// Attaches the XDP_PASS program to `iface` in `netns`, in native (driver) mode.
pub fn attach_pass(netns_name: &str, iface: &str) -> Result<()> {
    attach(netns_name, iface, XDP_PASS_SECTION)
}

/// Attaches the XDP_DROP sink to `iface` in `netns`, in native mode: everything arriving there
/// is dropped before an skb exists, so a flood's rate is limited only by the path to it.
pub fn attach_drop(netns_name: &str, iface: &str) -> Result<()> {
    attach(netns_name, iface, XDP_DROP_SECTION)
}

/// Attaches `sg_meta_forge` to `iface` in `netns`, in native mode: ACKs to port 8081
/// arriving there go back over the veth with fake synguard metadata in front of them.
pub fn attach_meta_forge(netns_name: &str, iface: &str) -> Result<()> {
    attach_obj(Obj::MetaForge, netns_name, iface, "xdp")
}

fn attach(netns_name: &str, iface: &str, section: &str) -> Result<()> {
    attach_obj(Obj::XdpPass, netns_name, iface, section)
}

fn attach_obj(obj: Obj, netns_name: &str, iface: &str, section: &str) -> Result<()> {
    let path = bpfobj::path(obj)?
        .to_str()
        .context("non-UTF-8 temp path")?
        .to_string();
    netns::ip(&[
        "-n", netns_name, "link", "set", "dev", iface, "xdpdrv", "obj", &path, "sec", section,
    ])
    .with_context(|| format!("attach XDP section {section} to {iface} in {netns_name}"))?;
    Ok(())
}

/// Detaches any XDP program (any mode) from `iface` in `netns`.
pub fn detach(netns_name: &str, iface: &str) -> Result<()> {
    for mode in ["xdpdrv", "xdpgeneric"] {
        netns::ip(&["-n", netns_name, "link", "set", "dev", iface, mode, "off"])?;
    }
    Ok(())
}

/// Id of the XDP program attached to `iface`, if any.
pub fn attached_prog_id(netns_name: &str, iface: &str) -> Result<Option<u64>> {
    let out = netns::ip(&["-n", netns_name, "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse ip -j")?;
    let x = &v[0]["xdp"];
    Ok(x["prog"]["id"]
        .as_u64()
        .or_else(|| x["attached"][0]["prog"]["id"].as_u64()))
}

/// The benchmark's floor programs (`src/bpf/bench_xdp.c`), for loading with aya:
/// `sg_bench_pass` (XDP_PASS, the test-run overhead floor) and `sg_bench_reflect` (MAC swap
/// and XDP_TX, the cheapest reflector).
pub fn bench_xdp_obj() -> Result<&'static [u8]> {
    bpfobj::bytes(Obj::BenchXdp)
}
