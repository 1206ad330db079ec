//! Sharing the XDP hook with a real neighbour: xdp-filter from Debian's xdp-tools (libxdp
//! 1.3.1), in both start orders. Each order proves that both programs enforce at once:
//! synguard answers SYNs to its port with cookies (a real handshake, `cookie_sent` moving),
//! and xdp-filter drops a port it was told to deny (a connect that works before it loads
//! times out after), and that the one that leaves first leaves the other running.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use synguard_harness::{
    fixture::{VethPair, pin_dir},
    netns::in_netns,
    synguard::Daemon,
};

use crate::{
    Args, Results, Suite,
    report::{SHARE_MODE, SHARE_SYNGUARD_FIRST, SHARE_XDP_FILTER_FIRST},
};

/// The port xdp-filter denies; nothing protects it, so synguard passes it on.
const DENIED_PORT: u16 = 8081;

pub fn run(args: &Args, r: &mut Results) {
    for (name, synguard_first) in [
        (SHARE_XDP_FILTER_FIRST, false),
        (SHARE_SYNGUARD_FIRST, true),
    ] {
        let res = (|| {
            if !tool_present() {
                bail!("xdp-filter is not installed (xdp-tools)");
            }
            let t = crate::server_pair()?;
            let out = one_order(args, &t, synguard_first);
            // xdp-filter pins its own state: remove it even when the order failed.
            let _ = xdp_filter(&t, &["unload", &t.a.iface]);
            out
        })();
        r.check(SHARE_MODE, name, res, None);
    }
}

fn tool_present() -> bool {
    Command::new("xdp-filter")
        .arg("help")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// `xdp-filter ARGS` in the server's namespace; its output, or its error.
fn xdp_filter(t: &VethPair, a: &[&str]) -> Result<String> {
    let o = t
        .command(&t.a.netns, "xdp-filter")
        .args(a)
        .output()
        .context("running xdp-filter")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        bail!("xdp-filter {}: {}", a.join(" "), text.trim());
    }
    Ok(text)
}

/// `xdp-loader status IF`: the programs on the hook, as libxdp sees them.
fn loader_status(t: &VethPair) -> Result<String> {
    let o = t
        .command(&t.a.netns, "xdp-loader")
        .args(["status", &t.a.iface])
        .output()
        .context("running xdp-loader")?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Whether a TCP connect from the peer to the server's `port` completes within 2 s.
fn connects(t: &VethPair, port: u16) -> Result<bool> {
    let srv: SocketAddr = (t.a.ipv4, port).into();
    in_netns(&t.b.netns, || {
        Ok(TcpStream::connect_timeout(&srv, Duration::from_secs(2)).is_ok())
    })
}

fn start_synguard(args: &Args, t: &VethPair, attach: &str) -> Result<Daemon> {
    let port = args.port.to_string();
    let run_args = [
        "--iface",
        t.a.iface.as_str(),
        "--ports",
        &port,
        "--mode",
        "always",
        "--xdp-mode",
        SHARE_MODE,
        "--xdp-attach",
        attach,
        "--metrics",
        "off",
    ];
    let mut d = t
        .synguard(&args.synguard, &t.a)
        .spawn(&t.a.iface, &run_args)?;
    if let Err(e) = d.wait_attached(args.attach_timeout) {
        bail!("synguard did not attach ({e:#}): {}", d.log().trim());
    }
    Ok(d)
}

/// The id of the TC link synguard pinned on the server interface; `None` without one (the
/// filter handoff).
fn tc_link_id(t: &VethPair) -> Result<Option<u32>> {
    use aya::programs::links::{FdLink, PinnedLink};
    let pin = pin_dir(&t.a.iface).join(synguard_common::maps::names::TC_LINK);
    if !pin.exists() {
        return Ok(None);
    }
    let link: FdLink = PinnedLink::from_pin(&pin)
        .with_context(|| format!("opening {}", pin.display()))?
        .into();
    Ok(Some(link.info()?.id()))
}

fn stop(mut d: Daemon) -> Result<()> {
    d.signal(Signal::SIGINT);
    let st = d.wait_exit(Duration::from_secs(30))?;
    if !st.success() {
        bail!("synguard exited with {st} on SIGINT: {}", d.log().trim());
    }
    Ok(())
}

/// Both enforce: synguard's handshake (with cookie_sent moving) and xdp-filter's drop.
fn both_enforce(args: &Args, t: &VethPair, listener: &TcpListener, when: &str) -> Result<String> {
    let status = loader_status(t)?;
    for want in ["xdp_dispatcher", "xdpfilt_", "synguard_xdp"] {
        if !status.contains(want) {
            bail!("{when}: xdp-loader status shows no {want}:\n{status}");
        }
    }
    let s = Suite { args, t, listener };
    let hs = s
        .handshake()
        .with_context(|| format!("{when}: synguard's handshake"))?;
    if connects(t, DENIED_PORT)? {
        bail!("{when}: port {DENIED_PORT} still connects: xdp-filter is not enforcing");
    }
    Ok(hs)
}

fn one_order(args: &Args, t: &VethPair, synguard_first: bool) -> Result<String> {
    let (listener, _denied) = in_netns(&t.a.netns, || {
        let l = TcpListener::bind(SocketAddr::from((t.a.ipv4, args.port)))?;
        l.set_nonblocking(true)?;
        let d = TcpListener::bind(SocketAddr::from((t.a.ipv4, DENIED_PORT)))?;
        Ok((l, d))
    })?;
    // The control: the denied port connects while xdp-filter is not loaded.
    if !connects(t, DENIED_PORT)? {
        bail!("port {DENIED_PORT} does not connect even before xdp-filter loads");
    }
    let load_filter = || -> Result<()> {
        xdp_filter(t, &["load", "--mode", "skb", &t.a.iface])?;
        xdp_filter(t, &["port", &DENIED_PORT.to_string()])?;
        Ok(())
    };
    if synguard_first {
        let d = start_synguard(args, t, "dispatcher")?;
        load_filter()?;
        let hs = both_enforce(
            args,
            t,
            &listener,
            "after xdp-filter joined synguard's dispatcher",
        )?;
        // A handover restart in the dispatcher: the TC link (the hand-off) stays the same
        // link, its program swapped in place, and both still enforce after.
        let tc_before = tc_link_id(t)?;
        let mut d = d;
        d.signal(Signal::SIGUSR2);
        let st = d.wait_exit(Duration::from_secs(30))?;
        if !st.success() {
            bail!("synguard exited with {st} on SIGUSR2: {}", d.log().trim());
        }
        let d = start_synguard(args, t, "dispatcher")?;
        let tc_after = tc_link_id(t)?;
        if tc_after != tc_before {
            bail!("the restart re-attached TC (link {tc_before:?} became {tc_after:?})");
        }
        both_enforce(args, t, &listener, "after a restart in the dispatcher")?;
        // xdp-filter leaves first: synguard keeps answering.
        xdp_filter(t, &["unload", &t.a.iface])?;
        let s = Suite {
            args,
            t,
            listener: &listener,
        };
        s.handshake()
            .context("synguard's handshake after xdp-filter left")?;
        stop(d)?;
        if crate::attached_prog_id(&t.a.netns, &t.a.iface)?.is_some() {
            bail!("an XDP program is left after both left");
        }
        let kept = match tc_before {
            Some(id) => format!("kept TC link {id}"),
            // The filter handoff has no TC program.
            None => "needed no TC link".into(),
        };
        Ok(format!(
            "both enforce ({hs}), also after a restart that {kept}; each leaves the other \
             running"
        ))
    } else {
        load_filter()?;
        let d = start_synguard(args, t, "auto")?;
        let hs = both_enforce(
            args,
            t,
            &listener,
            "after synguard joined xdp-filter's dispatcher",
        )?;
        // synguard leaves first: xdp-filter keeps dropping.
        stop(d)?;
        let status = loader_status(t)?;
        if status.contains("synguard_xdp") || !status.contains("xdpfilt_") {
            bail!("after synguard left, xdp-loader status shows:\n{status}");
        }
        if connects(t, DENIED_PORT)? {
            bail!("after synguard left, port {DENIED_PORT} connects: xdp-filter lost its rules");
        }
        Ok(format!(
            "both enforce ({hs}); xdp-filter keeps enforcing after synguard left"
        ))
    }
}
