//! One boot under qemu: the console on the first serial port, the guest's results on the
//! second, both to files; a timeout; KVM where it works, TCG otherwise.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::initramfs::BOOTED;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if /dev/kvm exists and a boot under it gets to /init, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

pub struct Boot {
    pub accel: Accel,
    pub console: PathBuf,
    pub results: PathBuf,
    /// From qemu's start to /init's first line.
    pub boot_time: Option<Duration>,
    /// From qemu's start to its exit (or the timeout).
    pub total_time: Duration,
    pub timed_out: bool,
    /// qemu's own stderr, when it said something.
    pub qemu_stderr: String,
}

pub struct Vm<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub dir: &'a Path,
    pub memory_mib: u32,
    pub timeout: Duration,
}

/// Boots once with `accel` (Kvm or Tcg). With `boot_deadline`, gives up when /init has not
/// spoken by then (how a broken KVM is told apart quickly).
pub fn boot(vm: &Vm, accel: Accel, boot_deadline: Option<Duration>) -> Result<Boot> {
    let console = vm.dir.join("console.log");
    let results = vm.dir.join("results.log");
    let qemu_log = vm.dir.join("qemu.log");
    for f in [&console, &results] {
        std::fs::write(f, b"").with_context(|| format!("creating {}", f.display()))?;
    }
    let mut c = Command::new("qemu-system-x86_64");
    match accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        _ => c.args(["-accel", "tcg", "-cpu", "max"]),
    };
    c.args(["-smp", "2", "-m", &vm.memory_mib.to_string()])
        .arg("-kernel")
        .arg(vm.vmlinuz)
        .arg("-initrd")
        .arg(vm.initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-serial",
        ])
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&qemu_log)?);
    let start = Instant::now();
    let mut child = c
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let mut boot_time = None;
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if boot_time.is_none()
            && std::fs::read_to_string(&console).is_ok_and(|t| t.contains(BOOTED))
        {
            boot_time = Some(start.elapsed());
        }
        let give_up = start.elapsed() > vm.timeout
            || (boot_time.is_none() && boot_deadline.is_some_and(|d| start.elapsed() > d));
        if give_up {
            timed_out = true;
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    if boot_time.is_none() && std::fs::read_to_string(&console).is_ok_and(|t| t.contains(BOOTED)) {
        boot_time = Some(start.elapsed());
    }
    Ok(Boot {
        accel,
        console,
        results,
        boot_time,
        total_time: start.elapsed(),
        timed_out,
        qemu_stderr: std::fs::read_to_string(&qemu_log).unwrap_or_default(),
    })
}

/// Boots with the chosen acceleration; `Auto` tries KVM first (when /dev/kvm exists) and
/// falls back to TCG for this and every later boot when KVM does not reach /init, saying
/// why in `why_tcg`.
pub fn boot_with(vm: &Vm, accel: &mut Accel, why_tcg: &mut Option<String>) -> Result<Boot> {
    if *accel == Accel::Auto {
        if !Path::new("/dev/kvm").exists() {
            *accel = Accel::Tcg;
            *why_tcg = Some("no /dev/kvm".into());
        } else {
            let b = boot(vm, Accel::Kvm, Some(Duration::from_secs(30)))?;
            if b.boot_time.is_some() {
                *accel = Accel::Kvm;
                return Ok(b);
            }
            let why = b
                .qemu_stderr
                .lines()
                .next()
                .unwrap_or("no /init within 30 s")
                .trim_start_matches("qemu-system-x86_64: ")
                .to_string();
            println!("vmtest: KVM did not boot ({why}); using TCG");
            *accel = Accel::Tcg;
            *why_tcg = Some(format!("KVM: {why}"));
        }
    }
    boot(vm, *accel, None)
}
