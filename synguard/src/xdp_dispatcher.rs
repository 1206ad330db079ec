//! Sharing the XDP hook with other programs: version 2 of libxdp's multi-program dispatcher
//! protocol (xdp-tools, `lib/libxdp/protocol.org`), so synguard and libxdp's users
//! (xdp-filter, xdp-loader, and the tools built on libxdp) run on one interface, in either
//! start order, and each keeps enforcing.
//!
//! The dispatcher (synguard-ebpf/dispatcher.c) is an XDP program named `xdp_dispatcher`
//! with ten global stubs, `prog0`..`prog9`, and a read-only config: how many slots run and,
//! per slot, the return codes that go on to the next slot and the run priority. A component
//! is an EXT program that replaces one stub. Every change (a program joins or leaves) builds
//! a new dispatcher with every component linked into it (an EXT program can be linked to
//! several targets), pins it, swaps it onto the interface with one netlink
//! `XDP_FLAGS_REPLACE`, and only then removes the old dispatcher's pins, all under the
//! protocol's lock (`flock` on bpffs's `xdp` directory). A crash at any point leaves one
//! complete dispatcher attached.
//!
//! Pins, as the protocol names them: `BPFFS/xdp/dispatch-IFINDEX-PROGID/prog<N>-prog` and
//! `prog<N>-link`, one pair per slot, where PROGID is the dispatcher's program id.

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    EbpfLoader, Pod,
    maps::{Array, Map, MapData},
    programs::{Extension, ProgramFd, ProgramInfo, Xdp, links::FdLink},
};
use log::info;
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp},
};
use nix::fcntl::{Flock, FlockArg};
use synguard_common::maps::names;

use crate::{iface::XdpMode, rtnl};

/// How synguard takes the XDP hook (`--xdp-attach`, `xdp_attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttach {
    /// Join the dispatcher already on the interface; alone, attach as a single program.
    #[default]
    Auto,
    /// Always through a dispatcher: join one, or create one that others can join.
    Dispatcher,
    /// A single program on its own bpf_link (refuses an interface another program holds).
    Link,
}

impl std::str::FromStr for XdpAttach {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(XdpAttach::Auto),
            "dispatcher" => Ok(XdpAttach::Dispatcher),
            "link" => Ok(XdpAttach::Link),
            _ => Err(format!(
                "xdp_attach must be one of auto, dispatcher, link; got {s:?}"
            )),
        }
    }
}

/// synguard's default run priority in a dispatcher: ahead of xdp-filter (10) and of
/// libxdp's default (50), so it sees SYN floods first; lower runs first.
pub const DEFAULT_PRIORITY: u32 = 5;

/// Parses `xdp_priority`: 0-1000 (lower runs first).
pub fn parse_priority(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if p <= 1000 => Ok(p),
        _ => Err(format!(
            "xdp_priority must be a whole number from 0 to 1000 (lower runs first); got {s:?}"
        )),
    }
}

/// The dispatcher object built by build.rs.
static DISPATCHER: &[u8] = aya::include_bytes_aligned!(env!("SYNGUARD_DISPATCHER_OBJECT"));

/// The dispatcher's program name, by which the protocol recognises one.
pub const DISPATCHER_NAME: &str = "xdp_dispatcher";
pub const SLOTS: usize = 10;
const MAGIC: u8 = 236;
const VERSION: u8 = 2;
/// What an empty slot returns; every slot's chain-call mask includes it.
const EMPTY_SLOT_RETVAL: u32 = 31;
/// `BPF_F_XDP_HAS_FRAGS`, as the protocol stores it in `program_flags`.
const XDP_HAS_FRAGS: u32 = 1 << 5;
/// XDP return codes, as chain-call mask bits.
pub const XDP_PASS: u32 = 2;

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// The dispatcher's config, laid out as `struct xdp_dispatcher_config` (protocol v2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatcherConfig {
    pub magic: u8,
    pub dispatcher_version: u8,
    pub num_progs_enabled: u8,
    pub is_xdp_frags: u8,
    pub chain_call_actions: [u32; SLOTS],
    pub run_prios: [u32; SLOTS],
    pub program_flags: [u32; SLOTS],
}
const _: () = assert!(size_of::<DispatcherConfig>() == 124);

// SAFETY: repr(C), integers only, no implicit padding (4 bytes then u32 arrays; size held
// by the assertion above).
unsafe impl Pod for DispatcherConfig {}

/// One program in a dispatcher slot: its run order and what lets the packet go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub name: String,
    pub prio: u32,
    /// Chain-call mask without the empty-slot bit.
    pub chain: u32,
    pub frags: bool,
}

/// The run order: ascending priority, ties by name (as libxdp breaks them first).
pub fn order(a: &SlotInfo, b: &SlotInfo) -> std::cmp::Ordering {
    a.prio.cmp(&b.prio).then_with(|| a.name.cmp(&b.name))
}

/// The config for a dispatcher running `slots` in this order.
pub fn config_for(slots: &[SlotInfo]) -> Result<DispatcherConfig> {
    if slots.len() > SLOTS {
        bail!(
            "an XDP dispatcher has {SLOTS} slots and {} programs want one",
            slots.len()
        );
    }
    let mut c = DispatcherConfig {
        magic: MAGIC,
        dispatcher_version: VERSION,
        num_progs_enabled: slots.len() as u8,
        ..DispatcherConfig::default()
    };
    for (i, s) in slots.iter().enumerate() {
        c.chain_call_actions[i] = s.chain | (1 << EMPTY_SLOT_RETVAL);
        c.run_prios[i] = s.prio;
        c.program_flags[i] = if s.frags { XDP_HAS_FRAGS } else { 0 };
    }
    Ok(c)
}

/// bpffs's `xdp` directory, where dispatchers are pinned (`LIBXDP_BPFFS` moves bpffs, as
/// it does for libxdp).
pub fn xdp_pin_root() -> PathBuf {
    let bpffs =
        std::env::var_os("LIBXDP_BPFFS").map_or_else(|| PathBuf::from(names::BPFFS), PathBuf::from);
    bpffs.join("xdp")
}

fn dispatch_dir(ifindex: u32, prog_id: u32) -> PathBuf {
    xdp_pin_root().join(format!("dispatch-{ifindex}-{prog_id}"))
}

/// The protocol's lock: `flock(LOCK_EX)` on the `xdp` directory.
struct XdpLock(#[allow(dead_code, reason = "held for its Drop, which unlocks")] Flock<File>);

impl XdpLock {
    fn take() -> Result<XdpLock> {
        let root = xdp_pin_root();
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let dir = File::open(&root).with_context(|| format!("opening {}", root.display()))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", root.display()))?;
        Ok(XdpLock(lock))
    }
}

/// A component already in the attached dispatcher, opened from its pins.
struct Pinned {
    info: SlotInfo,
    ext: Extension,
}

/// What holds an interface's XDP hook.
pub enum Hook {
    Empty,
    /// A dispatcher of this protocol (ours or libxdp's).
    Dispatcher {
        prog_id: u32,
        mode: XdpMode,
        config: DispatcherConfig,
    },
    /// A single program that is not a dispatcher: it cannot share.
    Other {
        prog_id: u32,
        name: String,
    },
}

/// Reads the XDP hook of `ifindex`.
pub fn hook(ifindex: u32) -> Result<Hook> {
    let Some((prog_id, mode)) = crate::iface::xdp_occupant(ifindex)? else {
        return Ok(Hook::Empty);
    };
    let info = program(prog_id)?;
    let name = info.name_as_str().unwrap_or("").to_string();
    if name != DISPATCHER_NAME {
        return Ok(Hook::Other { prog_id, name });
    }
    let map_ids = info.map_ids()?.unwrap_or_default();
    let [map_id] = map_ids[..] else {
        bail!(
            "XDP program {prog_id} is named {DISPATCHER_NAME} but has {} maps, not one config",
            map_ids.len()
        );
    };
    let map = MapData::from_id(map_id).with_context(|| format!("opening map {map_id}"))?;
    let config: Array<MapData, DispatcherConfig> = Array::try_from(Map::Array(map))
        .with_context(|| format!("dispatcher {prog_id}'s config map is not a v2 config"))?;
    let config = config.get(&0, 0)?;
    if config.magic != MAGIC || config.dispatcher_version != VERSION {
        bail!(
            "XDP dispatcher {prog_id} speaks version {} of the protocol (magic {}); synguard \
             speaks version {VERSION} and will not touch it",
            config.dispatcher_version,
            config.magic
        );
    }
    Ok(Hook::Dispatcher {
        prog_id,
        mode,
        config,
    })
}

fn pinned_components(ifindex: u32, prog_id: u32, config: &DispatcherConfig) -> Result<Vec<Pinned>> {
    let dir = dispatch_dir(ifindex, prog_id);
    let mut out = Vec::new();
    for i in 0..usize::from(config.num_progs_enabled).min(SLOTS) {
        let path = dir.join(format!("prog{i}-prog"));
        let name = ProgramInfo::from_pin(&path)
            .with_context(|| format!("opening {}", path.display()))?
            .name_as_str()
            .unwrap_or("")
            .to_string();
        let ext =
            Extension::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        out.push(Pinned {
            info: SlotInfo {
                name,
                prio: config.run_prios[i],
                chain: config.chain_call_actions[i] & !(1 << EMPTY_SLOT_RETVAL),
                frags: config.program_flags[i] & XDP_HAS_FRAGS != 0,
            },
            ext,
        });
    }
    Ok(out)
}

/// Sets the interface's XDP program by netlink, as the protocol does (a bpf_link could not
/// be replaced by the next program to join): atomically replacing `expected`, or only if
/// the hook is empty.
fn netlink_set(ifindex: u32, mode: XdpMode, fd: i32, expected: Option<i32>) -> Result<()> {
    let mut flags = match mode {
        XdpMode::Native => XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => XDP_FLAGS_SKB_MODE,
    };
    let mut xdp = vec![LinkXdp::Fd(fd)];
    match expected {
        Some(old) => {
            flags |= XDP_FLAGS_REPLACE;
            xdp.push(LinkXdp::ExpectedFd(old as u32));
        }
        None => flags |= XDP_FLAGS_UPDATE_IF_NOEXIST,
    }
    xdp.push(LinkXdp::Flags(flags));
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::Xdp(xdp));
    rtnl::request(
        "setting the XDP program",
        RouteNetlinkMessage::SetLink(msg),
        false,
    )?;
    Ok(())
}

/// Removes a dispatcher's pin directory (its components stay linked to whatever else
/// holds them).
fn remove_pins(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// A new component: synguard's XDP program, loaded as an EXT program.
pub struct Joining<'a> {
    pub ext: &'a mut Extension,
    pub info: SlotInfo,
}

/// Where a slot's program comes from.
enum Source {
    Pinned(usize),
    Joining,
}

/// Builds a dispatcher for `pinned` plus `joining` (if any), pins it and swaps it onto the
/// interface in place of `old` (or onto the empty hook). Returns the new dispatcher's id,
/// or `None` when no component is left and the hook was emptied.
fn rebuild(
    ifindex: u32,
    mode: XdpMode,
    old: Option<(u32, ProgramFd)>,
    mut pinned: Vec<Pinned>,
    joining: Option<Joining<'_>>,
) -> Result<Option<u32>> {
    let mut slots: Vec<(SlotInfo, Source)> = pinned
        .iter()
        .enumerate()
        .map(|(i, p)| (p.info.clone(), Source::Pinned(i)))
        .collect();
    let mut joining = joining;
    if let Some(j) = &joining {
        slots.push((j.info.clone(), Source::Joining));
    }
    if slots.is_empty() {
        if let Some((old_id, old_fd)) = &old {
            netlink_set(ifindex, mode, -1, Some(old_fd.as_fd().as_raw_fd()))?;
            remove_pins(&dispatch_dir(ifindex, *old_id))?;
        }
        return Ok(None);
    }
    slots.sort_by(|a, b| order(&a.0, &b.0));
    let infos: Vec<SlotInfo> = slots.iter().map(|(i, _)| i.clone()).collect();
    let config = config_for(&infos)?;
    let mut obj = EbpfLoader::new()
        .override_global("conf", &config, true)
        .load(DISPATCHER)
        .context("loading the XDP dispatcher object")?;
    let disp: &mut Xdp = obj
        .program_mut(DISPATCHER_NAME)
        .context("dispatcher program missing from its object")?
        .try_into()?;
    disp.load()
        .context("verifier rejected the XDP dispatcher")?;
    let disp_fd = disp.fd()?.try_clone()?;
    let disp_id = disp.info()?.id();
    let dir = dispatch_dir(ifindex, disp_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let result = (|| -> Result<()> {
        for (slot, (info, source)) in slots.iter().enumerate() {
            let func = format!("prog{slot}");
            let ext: &mut Extension = match source {
                Source::Joining => {
                    let j = joining.as_mut().context("joining program used twice")?;
                    j.ext.load(disp_fd.try_clone()?, &func).with_context(|| {
                        format!("loading {} as an EXT program for {func}", info.name)
                    })?;
                    &mut *j.ext
                }
                Source::Pinned(i) => &mut pinned[*i].ext,
            };
            let link_id = match source {
                Source::Joining => ext.attach(),
                Source::Pinned(_) => ext.attach_to_program(&disp_fd, &func),
            }
            .with_context(|| format!("linking {} into the dispatcher's {func}", info.name))?;
            let link: FdLink = ext.take_link(link_id)?.into();
            ext.pin(dir.join(format!("{func}-prog")))
                .with_context(|| format!("pinning {func}-prog"))?;
            link.pin(dir.join(format!("{func}-link")))
                .with_context(|| format!("pinning {func}-link"))?;
        }
        netlink_set(
            ifindex,
            mode,
            disp_fd.as_fd().as_raw_fd(),
            old.as_ref().map(|(_, fd)| fd.as_fd().as_raw_fd()),
        )
    })();
    if let Err(e) = result {
        let _ = remove_pins(&dir);
        return Err(e);
    }
    if let Some((old_id, _)) = old {
        remove_pins(&dispatch_dir(ifindex, old_id))?;
    }
    Ok(Some(disp_id))
}

/// A loaded program by id.
fn program(id: u32) -> Result<ProgramInfo> {
    for p in aya::programs::loaded_programs() {
        let p = p.context("listing loaded BPF programs")?;
        if p.id() == id {
            return Ok(p);
        }
    }
    bail!("BPF program {id} is gone")
}

/// Adds synguard's program (`ext`, an EXT program not yet loaded) to the interface's
/// dispatcher, or creates one in `mode` if the hook is empty. A synguard component already
/// there (a previous run's) is replaced in the same swap. Returns the mode the dispatcher
/// runs in (an existing one keeps its own) and the new dispatcher's program id.
pub fn join(ifindex: u32, mode: XdpMode, ext: &mut Extension, prio: u32) -> Result<(XdpMode, u32)> {
    let _lock = XdpLock::take()?;
    let info = SlotInfo {
        name: names::XDP_PROG.to_string(),
        prio,
        chain: 1 << XDP_PASS,
        frags: false,
    };
    let (mode, old, pinned) = match hook(ifindex)? {
        Hook::Empty => (mode, None, Vec::new()),
        Hook::Other { prog_id, name } => bail!(
            "interface {ifindex} has XDP program {prog_id} ({name}), which is not a \
             multi-program dispatcher and cannot share the hook; load it through libxdp \
             (xdp-loader) or remove it"
        ),
        Hook::Dispatcher {
            prog_id,
            mode: m,
            config,
        } => {
            let fd = program(prog_id)?.fd()?;
            let pinned: Vec<Pinned> = pinned_components(ifindex, prog_id, &config)?
                .into_iter()
                .filter(|p| p.info.name != names::XDP_PROG)
                .collect();
            (m, Some((prog_id, fd)), pinned)
        }
    };
    let others = pinned.len();
    let id = rebuild(ifindex, mode, old, pinned, Some(Joining { ext, info }))?
        .context("a dispatcher with synguard in it has no id")?;
    info!(
        "XDP: synguard runs in dispatcher {id} ({mode}) with {others} other program(s), at \
         priority {prio}"
    );
    Ok((mode, id))
}

/// Takes synguard's program out of the interface's dispatcher, leaving the others running
/// (or the hook empty when none is left). Returns whether synguard was in it.
pub fn leave(ifindex: u32) -> Result<bool> {
    let _lock = XdpLock::take()?;
    let Hook::Dispatcher {
        prog_id,
        mode,
        config,
    } = hook(ifindex)?
    else {
        return Ok(false);
    };
    let all = pinned_components(ifindex, prog_id, &config)?;
    let before = all.len();
    let rest: Vec<Pinned> = all
        .into_iter()
        .filter(|p| p.info.name != names::XDP_PROG)
        .collect();
    if rest.len() == before {
        return Ok(false);
    }
    let fd = program(prog_id)?.fd()?;
    rebuild(ifindex, mode, Some((prog_id, fd)), rest, None)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, prio: u32) -> SlotInfo {
        SlotInfo {
            name: name.into(),
            prio,
            chain: 1 << XDP_PASS,
            frags: false,
        }
    }

    #[test]
    fn lower_priority_runs_first_and_ties_go_by_name() {
        let mut s = [
            slot("xdpfilt_alw_all", 10),
            slot("synguard_xdp", 5),
            slot("b", 50),
            slot("a", 50),
        ];
        s.sort_by(order);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["synguard_xdp", "xdpfilt_alw_all", "a", "b"]);
    }

    #[test]
    fn config_carries_the_protocol_fields() {
        let mut frag = slot("f", 20);
        frag.frags = true;
        let c = config_for(&[slot("s", 5), frag]).unwrap();
        assert_eq!(
            (c.magic, c.dispatcher_version, c.num_progs_enabled),
            (236, 2, 2)
        );
        // Every enabled slot goes on past an empty stub (31) as well as on its own actions.
        assert_eq!(c.chain_call_actions[0], (1 << 2) | (1 << 31));
        assert_eq!(c.run_prios[..2], [5, 20]);
        assert_eq!(c.program_flags[..2], [0, 1 << 5]);
        assert_eq!(c.chain_call_actions[2], 0);
        let eleven: Vec<SlotInfo> = (0..11).map(|i| slot(&format!("p{i}"), i)).collect();
        assert!(config_for(&eleven).is_err());
    }
}
