//! Loading the embedded eBPF object, attaching it to an interface (or swapping it into the
//! pinned links of a previous run), finding the links a pin directory holds, and taking it
//! all down again.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType, Xdp,
        links::{FdLink, LinkType, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use log::warn;
use synguard_common::maps::{Handoff, names};

use crate::{
    iface::{IfaceName, ModeChoice, XdpMode},
    state_dir,
};

/// The eBPF object built by build.rs, embedded so the binary is self-contained.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SYNGUARD_EBPF_OBJECT"));

/// Loads the object with its maps pinned in (or reused from) `dir`, its XDP program set to
/// the `handoff` mode; with `shared`, the XDP program as an EXT program for a dispatcher
/// slot ([`crate::xdp_dispatcher`]).
pub fn load(dir: &Path, shared: bool, handoff: Handoff) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(dir);
    let mode = handoff as u8;
    loader.override_global(names::HANDOFF_GLOBAL, &mode, true);
    if shared {
        loader.extension(names::XDP_PROG);
    }
    match loader.load(OBJECT) {
        Ok(ebpf) => Ok(ebpf),
        Err(aya::EbpfError::MapError(e @ aya::maps::MapError::IncompatiblePinnedMap { .. })) => {
            Err(anyhow::Error::new(e).context(format!(
                "the maps pinned in {} come from an incompatible synguard build; \
                 `synguard detach` that interface first (this drops its keys, lists and counters)",
                dir.display()
            )))
        }
        Err(e) => Err(anyhow::Error::new(e).context("loading the synguard eBPF object")),
    }
}

/// What the kernel says about a pinned link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkStat {
    pub link_type: Option<LinkType>,
    pub id: u32,
    pub prog_id: u32,
    /// The interface an XDP or TCX link is attached to, 0 once the interface is gone.
    pub ifindex: u32,
}

/// The state of a pinned link file, or `None` if there is no pin.
pub fn pinned_link(path: &Path) -> Result<Option<LinkStat>> {
    if !path.exists() {
        return Ok(None);
    }
    let link: FdLink = PinnedLink::from_pin(path)
        .with_context(|| format!("opening pinned link {}", path.display()))?
        .into();
    let info = link
        .info()
        .with_context(|| format!("asking about pinned link {}", path.display()))?;
    Ok(Some(LinkStat {
        link_type: info.link_type().ok(),
        id: info.id(),
        prog_id: info.program_id(),
        ifindex: bpf_link_ifindex(path)?,
    }))
}

/// The ifindex in a pinned XDP or TCX link's `struct bpf_link_info`, which aya 0.16 does not
/// expose. This is synguard's only raw bpf(2) use: BPF_OBJ_GET for an fd (aya keeps the fd
/// of its links private), then BPF_OBJ_GET_INFO_BY_FD, laid out with aya-obj's generated
/// kernel structs.
fn bpf_link_ifindex(path: &Path) -> Result<u32> {
    use std::{
        ffi::CString,
        mem::{offset_of, size_of},
        os::{
            fd::{AsRawFd, FromRawFd, OwnedFd},
            unix::ffi::OsStrExt,
        },
    };

    use aya_obj::generated::{
        bpf_attr__bindgen_ty_5 as ObjGetAttr, bpf_attr__bindgen_ty_9 as InfoAttr, bpf_cmd,
        bpf_link_info, bpf_link_info__bindgen_ty_1 as LinkUnion,
        bpf_link_info__bindgen_ty_1__bindgen_ty_6 as XdpInfo,
        bpf_link_info__bindgen_ty_1__bindgen_ty_12 as TcxInfo,
    };

    /// Both XDP and TCX link info begin with the ifindex.
    const IFINDEX_AT: usize = offset_of!(bpf_link_info, __bindgen_anon_1)
        + offset_of!(LinkUnion, xdp)
        + offset_of!(XdpInfo, ifindex);
    const _: () = assert!(
        IFINDEX_AT
            == offset_of!(bpf_link_info, __bindgen_anon_1)
                + offset_of!(LinkUnion, tcx)
                + offset_of!(TcxInfo, ifindex)
    );

    fn sys_bpf<A>(cmd: bpf_cmd, attr: &mut A, size: usize) -> std::io::Result<i64> {
        // SAFETY: `attr` is a live, writable `union bpf_attr` member of at least `size`
        // bytes whose pointers (if any) point at live buffers; the kernel reads at most
        // `size` bytes of it and zero-extends the rest.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                std::ptr::from_mut(attr),
                size as libc::c_uint,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    let c = CString::new(path.as_os_str().as_bytes()).context("path contains NUL")?;
    let mut get = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
    };
    // Up to the last field: the struct's tail padding is not ours to hand the kernel.
    let get_size = offset_of!(ObjGetAttr, path_fd) + size_of::<i32>();
    let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut get, get_size)
        .with_context(|| format!("opening pinned object {}", path.display()))?;
    let fd = i32::try_from(fd).context("BPF_OBJ_GET returned no fd")?;
    // SAFETY: BPF_OBJ_GET returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    let mut info = vec![0u8; size_of::<bpf_link_info>()];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(
        bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
        &mut attr,
        size_of::<InfoAttr>(),
    )
    .context("BPF_OBJ_GET_INFO_BY_FD")?;
    let bytes = info
        .get(IFINDEX_AT..IFINDEX_AT + 4)
        .context("short bpf_link_info")?;
    Ok(u32::from_ne_bytes(bytes.try_into()?))
}

/// The pinned links found in a pin directory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Existing {
    /// No link pins.
    None,
    /// The XDP link (and the TC link, if the run's handoff needs one) pinned and attached to
    /// this interface: a restart can swap the programs in.
    Live { xdp: LinkStat, tc: Option<LinkStat> },
    /// Only the TC link is pinned, attached here: a previous run in a dispatcher (whose XDP
    /// program is the dispatcher's, not a link of synguard's). A restart joins the
    /// dispatcher again and swaps the TC program in.
    Dispatcher { tc: LinkStat },
    /// Some link pin exists but is not attached here any more (its interface went away, or
    /// only the TC link was pinned).
    Stale,
}

pub fn existing_links(dir: &Path, ifindex: u32) -> Result<Existing> {
    let [xdp, tc] = state_dir::link_pins(dir);
    Ok(match (pinned_link(&xdp)?, pinned_link(&tc)?) {
        (None, None) => Existing::None,
        (Some(x), Some(t))
            if x.link_type == Some(LinkType::Xdp)
                && t.link_type == Some(LinkType::Tcx)
                && x.ifindex == ifindex
                && t.ifindex == ifindex =>
        {
            Existing::Live {
                xdp: x,
                tc: Some(t),
            }
        }
        (Some(x), None) if x.link_type == Some(LinkType::Xdp) && x.ifindex == ifindex => {
            Existing::Live { xdp: x, tc: None }
        }
        (None, Some(t)) if t.link_type == Some(LinkType::Tcx) && t.ifindex == ifindex => {
            Existing::Dispatcher { tc: t }
        }
        _ => Existing::Stale,
    })
}

/// Removes link pins that no longer hold anything attached here.
pub fn remove_link_pins(dir: &Path) -> Result<()> {
    for path in state_dir::link_pins(dir) {
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Detaches both programs (their pinned links are the last references, or, sharing the
/// hook, synguard leaves the dispatcher) and removes the pin directory with its maps, keys
/// and counters.
pub fn detach(dir: &Path, ifindex: Option<u32>) -> Result<()> {
    if let Some(ifindex) = ifindex
        && crate::xdp_dispatcher::leave(ifindex)?
    {
        log::info!("left the XDP dispatcher on interface {ifindex}");
    }
    for path in state_dir::link_pins(dir) {
        if path.exists() {
            let link = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening pinned link {}", path.display()))?;
            // Unpinning drops the last reference once this FdLink goes out of scope.
            drop(link.unpin()?);
        }
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}

fn xdp_prog(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(names::XDP_PROG)
        .context("XDP program missing from object")?
        .try_into()?)
}

fn tc_prog(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(names::TC_PROG)
        .context("TC program missing from object")?
        .try_into()?)
}

/// Attaches the XDP program through a dispatcher (joining the one on `ifindex`, or creating
/// one in `choice`'s mode) and, `with_tc`, TC ingress, pinning the TC link in `dir` (or,
/// when a previous run in a dispatcher left it pinned, swapping the program into it). `ebpf`
/// was loaded with `shared`. Returns the XDP mode the dispatcher runs in and why.
pub fn attach_shared(
    ebpf: &mut Ebpf,
    iface: &IfaceName,
    ifindex: u32,
    choice: &ModeChoice,
    priority: u32,
    dir: &Path,
    with_tc: bool,
) -> Result<ModeChoice> {
    let [_, tc_pin] = state_dir::link_pins(dir);
    if with_tc {
        tc_prog(ebpf)?
            .load()
            .context("verifier rejected the TC program")?;
    }
    let ext: &mut aya::programs::Extension = ebpf
        .program_mut(names::XDP_PROG)
        .context("XDP program missing from object")?
        .try_into()?;
    let (mode, id) =
        crate::xdp_dispatcher::join(ifindex, choice.mode, ext, priority).map_err(|e| {
            e.context(format!(
                "sharing the XDP hook of {iface} through a dispatcher (a kernel that refuses \
                 EXT programs cannot share: use --xdp-attach link)"
            ))
        })?;
    let got = ModeChoice {
        mode,
        fallback: false,
        reason: if mode == choice.mode {
            format!("{}; in XDP dispatcher {id}", choice.reason)
        } else {
            format!("the {mode} mode of XDP dispatcher {id}, which synguard joined")
        },
    };
    if !with_tc {
        state_dir::restrict(dir)?;
        return Ok(got);
    }
    let tc = tc_prog(ebpf)?;
    let ifname = std::ffi::CString::new(iface.as_str()).context("interface name contains NUL")?;
    let attached = if tc_pin.exists() {
        // A restart: the previous run's TC link stays, with the new program swapped in, so
        // cookie ACKs are handed off throughout.
        PinnedLink::from_pin(&tc_pin)
            .context("opening the pinned TC link")
            .and_then(|fd| {
                let fd: FdLink = fd.into();
                let id = tc
                    .attach_to_link(SchedClassifierLink::try_from(fd).context("pinned TC link")?)
                    .context("replacing the program in the pinned TC link")?;
                drop(tc.take_link(id)?);
                Ok(())
            })
    } else {
        tc.attach(ifname.as_c_str(), TcAttachType::Ingress)
            .with_context(|| format!("attaching TC ingress to {iface}"))
            .and_then(|id| {
                let link: FdLink = tc
                    .take_link(id)?
                    .try_into()
                    .context("TC link is not an fd link (kernel without TCX?)")?;
                link.pin(&tc_pin).context("pinning the TC link")?;
                Ok(())
            })
    };
    if let Err(e) = attached {
        let _ = crate::xdp_dispatcher::leave(ifindex);
        return Err(e);
    }
    state_dir::restrict(dir)?;
    Ok(got)
}

/// Loads the programs into the kernel (the verifier runs here): XDP, and TC `with_tc`.
/// Without TC, its kfunc is never looked up.
fn load_programs(ebpf: &mut Ebpf, with_tc: bool) -> Result<()> {
    xdp_prog(ebpf)?
        .load()
        .context("verifier rejected the XDP program")?;
    if with_tc {
        tc_prog(ebpf)?
            .load()
            .context("verifier rejected the TC program")?;
    }
    Ok(())
}

/// Attaches XDP (in the chosen mode, falling back to generic if allowed) and, `with_tc`, TC
/// ingress to `iface`, and pins the links in `dir`. Returns the XDP mode actually attached
/// and why.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &IfaceName,
    choice: &ModeChoice,
    dir: &Path,
    with_tc: bool,
) -> Result<ModeChoice> {
    let ifname = std::ffi::CString::new(iface.as_str()).context("interface name contains NUL")?;
    let [xdp_pin, tc_pin] = state_dir::link_pins(dir);
    load_programs(ebpf, with_tc)?;
    let xdp = xdp_prog(ebpf)?;
    let mut got = choice.clone();
    let id = match xdp.attach(ifname.as_c_str(), choice.mode.aya()) {
        Ok(id) => id,
        Err(e) if choice.fallback && choice.mode == XdpMode::Native => {
            warn!("{iface}: native XDP attach failed ({e}); falling back to generic XDP");
            got = ModeChoice {
                mode: XdpMode::Generic,
                fallback: false,
                reason: format!(
                    "{}, but the native attach failed ({e}), so generic",
                    choice.reason
                ),
            };
            xdp.attach(ifname.as_c_str(), XdpMode::Generic.aya())
                .with_context(|| format!("attaching XDP to {iface} in generic mode"))?
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("attaching XDP to {iface} in {} mode", choice.mode)));
        }
    };
    let link: FdLink = xdp
        .take_link(id)?
        .try_into()
        .context("XDP link is not an fd link (kernel without XDP bpf_link?)")?;
    link.pin(xdp_pin).context("pinning the XDP link")?;

    if !with_tc {
        state_dir::restrict(dir)?;
        return Ok(got);
    }
    let tc = tc_prog(ebpf)?;
    let id = tc
        .attach(ifname.as_c_str(), TcAttachType::Ingress)
        .with_context(|| format!("attaching TC ingress to {iface}"))?;
    let link: FdLink = tc
        .take_link(id)?
        .try_into()
        .context("TC link is not an fd link (kernel without TCX?)")?;
    link.pin(tc_pin).context("pinning the TC link")?;
    state_dir::restrict(dir)?;
    Ok(got)
}

/// Swaps the freshly loaded programs into the pinned links of a previous run
/// (BPF_LINK_UPDATE), so the interface is never without a program. The pins stay in place
/// throughout: the link fds come from them without unpinning. `with_tc`: the run has a TC
/// link to replace too.
pub fn replace(ebpf: &mut Ebpf, dir: &Path, with_tc: bool) -> Result<()> {
    let [xdp_pin, tc_pin] = state_dir::link_pins(dir);
    // Load them first: a verifier failure must leave the running programs alone.
    load_programs(ebpf, with_tc)?;
    let fd: FdLink = PinnedLink::from_pin(xdp_pin)
        .context("opening the pinned XDP link")?
        .into();
    let xdp = xdp_prog(ebpf)?;
    let id = xdp
        .attach_to_link(XdpLink::try_from(fd).context("pinned XDP link")?)
        .context("replacing the program in the pinned XDP link")?;
    // Dropping our handle only closes our fd; the pin keeps the link.
    drop(xdp.take_link(id)?);

    if !with_tc {
        state_dir::restrict(dir)?;
        return Ok(());
    }
    let fd: FdLink = PinnedLink::from_pin(tc_pin)
        .context("opening the pinned TC link")?
        .into();
    let tc = tc_prog(ebpf)?;
    let id = tc
        .attach_to_link(SchedClassifierLink::try_from(fd).context("pinned TC link")?)
        .context("replacing the program in the pinned TC link")?;
    drop(tc.take_link(id)?);
    state_dir::restrict(dir)?;
    Ok(())
}
