//! The guest's root: a cpio (newc) archive, gzipped, with busybox-static and its applet
//! links, `/init`, synguard, the guest suite and iproute2's `ip` with every shared library
//! `ldd` names, and the kernel modules the suite needs, decompressed.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::kernel::{self, Kernel};

const BUSYBOX: &str = "/bin/busybox";
/// Where `ip` goes: busybox's own `ip` applet is /sbin/ip and cannot do netns.
pub const GUEST_IP: &str = "/usr/sbin/ip";
pub const GUEST_SYNGUARD: &str = "/bin/synguard";
pub const GUEST_SUITE: &str = "/bin/vmguest";
/// The second serial port: results only, no kernel messages in between.
pub const GUEST_RESULTS: &str = "/dev/ttyS1";
/// Printed by /init once the root is mounted: the end of the boot.
pub const BOOTED: &str = "VMTEST-BOOTED";

/// xdp-tools, the neighbour of the hook-sharing checks: the tools, and libxdp's BPF objects
/// (its dispatcher and xdp-filter's programs), which it loads from this directory.
const XDP_TOOLS: &[&str] = &["/usr/sbin/xdp-filter", "/usr/sbin/xdp-loader"];
const LIBXDP_OBJECTS: &str = "/usr/lib/x86_64-linux-gnu/bpf";

/// veth for the pair, sch_ingress (clsact) and cls_bpf for the TC program.
pub const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];

/// A newc archive being written.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let name = path.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn parents(&mut self, path: &str) {
        let mut cur = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            cur.push('/');
            cur.push_str(p);
            if self.dirs.insert(cur.clone()) {
                let c = cur.clone();
                self.entry(&c, 0o040755, &[]);
            }
        }
    }

    fn dir(&mut self, path: &str) {
        self.parents(&format!("{path}/x"));
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        if !self.files.insert(path.to_string()) {
            return;
        }
        self.parents(path);
        self.entry(path, 0o100000 | mode, data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        if !self.files.insert(path.to_string()) {
            return;
        }
        self.parents(path);
        self.entry(path, 0o120777, target.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }

    /// `host` at `guest`, and every shared library it needs at the path ldd names.
    fn binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, 0o755, &data);
        for lib in shared_libraries(host)? {
            let data = std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
            self.file(&lib.to_string_lossy(), 0o755, &data);
        }
        Ok(())
    }
}

/// What `ldd` resolves for `bin` (nothing for a static binary).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if [&text, &err]
        .iter()
        .any(|t| t.contains("not a dynamic executable") || t.contains("statically linked"))
    {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.contains("not found") {
            bail!("{}: {l}", bin.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = match l.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => l,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn init_script(modules: &[String], guest_args: &str) -> String {
    format!(
        r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo "{BOOTED} $(cut -d' ' -f1 /proc/uptime)"
for m in {modules}; do
    insmod /lib/modules/$m.ko || echo "VMTEST-MODULE-FAILED $m"
done
ip link set lo up
{GUEST_SUITE} --synguard {GUEST_SYNGUARD} --ip {GUEST_IP} --results {GUEST_RESULTS} {guest_args}
echo "VMTEST-GUEST-EXIT $?"
reboot -f
"#,
        modules = modules.join(" "),
    )
}

/// Writes the gzipped archive for `k` to `out`.
pub fn build(
    k: &Kernel,
    synguard: &Path,
    suite: &Path,
    guest_args: &str,
    out: &Path,
) -> Result<()> {
    let mut c = Cpio::default();
    for d in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/root"] {
        c.dir(d);
    }
    c.symlink("/var/run", "/run");
    c.binary(synguard, GUEST_SYNGUARD)?;
    c.binary(suite, GUEST_SUITE)?;
    c.binary(Path::new("/usr/sbin/ip"), GUEST_IP)?;
    c.binary(Path::new(BUSYBOX), "/bin/busybox")?;
    for tool in XDP_TOOLS {
        c.binary(Path::new(tool), tool)
            .with_context(|| format!("{tool} (apt-get install xdp-tools)"))?;
    }
    let objects = std::fs::read_dir(LIBXDP_OBJECTS)
        .with_context(|| format!("reading {LIBXDP_OBJECTS} (apt-get install xdp-tools)"))?;
    for e in objects {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "o") {
            let data = std::fs::read(&path)?;
            c.file(&path.to_string_lossy(), 0o644, &data);
        }
    }
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("running busybox --list-full (apt-get install busybox-static)")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        // Files added above win over applets of the same path.
        c.symlink(&format!("/{applet}"), "/bin/busybox");
    }
    let mut names = Vec::new();
    for (name, bytes) in kernel::modules_in_load_order(k, MODULES)? {
        c.file(&format!("/lib/modules/{name}.ko"), 0o644, &bytes);
        names.push(name);
    }
    c.file("/init", 0o755, init_script(&names, guest_args).as_bytes());
    let archive = c.finish();
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gz = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("running gzip")?;
    gz.stdin
        .take()
        .context("gzip stdin")?
        .write_all(&archive)
        .context("writing to gzip")?;
    if !gz.wait()?.success() {
        bail!("gzip failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// busybox's cpio (the one the guest's kernel stands in for) lists what was written.
    #[test]
    fn the_archive_is_newc_that_cpio_reads() {
        if !Path::new(BUSYBOX).exists() {
            eprintln!("skipped: no {BUSYBOX} (cargo xtask setup installs busybox-static)");
            return;
        }
        let mut c = Cpio::default();
        c.file("/bin/x", 0o755, b"hello");
        c.symlink("/bin/sh", "/bin/busybox");
        c.file("/lib/modules/veth.ko", 0o644, &[1, 2, 3]);
        c.file("/bin/x", 0o755, b"second copy is ignored");
        let archive = c.finish();
        let mut p = Command::new(BUSYBOX)
            .args(["cpio", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success());
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/x",
                "bin/sh",
                "lib",
                "lib/modules",
                "lib/modules/veth.ko"
            ]
        );
    }

    #[test]
    fn ldd_lists_the_loader_and_libc_of_a_dynamic_binary() {
        let libs = shared_libraries(Path::new("/usr/sbin/ip")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        if Path::new(BUSYBOX).exists() {
            // busybox-static: nothing to copy.
            assert!(shared_libraries(Path::new(BUSYBOX)).unwrap().is_empty());
        }
    }
}
