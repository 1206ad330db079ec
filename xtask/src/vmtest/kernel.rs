//! Debian's kernel packages: the newest of a line in the archive, downloaded and unpacked
//! once into `target/vmtest/kernels/<package>/`, and the modules a suite needs from it.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::KernelLine;

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    /// `uname -r` of the kernel, the directory name under `lib/modules`.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// The package-name pattern of a line: (prefix, suffix) around the varying part, which is
/// digits and dots only.
fn pattern(line: KernelLine) -> Option<(&'static str, &'static str)> {
    match line {
        KernelLine::V6_1 => Some(("linux-image-6.1.0-", "-cloud-amd64-unsigned")),
        KernelLine::V6_12 => Some(("linux-image-6.12.", "+deb12-cloud-amd64-unsigned")),
        KernelLine::Host => None,
    }
}

fn matches(name: &str, (prefix, suffix): (&str, &str)) -> Option<Vec<u32>> {
    let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if middle.is_empty() || !middle.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    middle.split('.').map(|p| p.parse().ok()).collect()
}

/// The newest name that matches, by its numbers.
fn newest<'a>(names: impl Iterator<Item = &'a str>, pat: (&str, &str)) -> Option<String> {
    names
        .filter_map(|n| matches(n, pat).map(|v| (v, n)))
        .max()
        .map(|(_, n)| n.to_string())
}

fn cache_root() -> PathBuf {
    crate::root().join("target/vmtest/kernels")
}

/// The newest package of `line` in the archive, unpacked (reused when it already is).
pub fn fetch(line: KernelLine) -> Result<Kernel> {
    let pat = pattern(line).context("the host kernel is not a package")?;
    let root = cache_root();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let out = Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(format!("^{}", pat.0.replace('.', "\\.")))
        .output()
        .context("running apt-cache (vmtest takes its kernels from Debian's archive)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let in_archive = newest(listing.lines().filter_map(|l| l.split(" - ").next()), pat);
    let package = match in_archive {
        Some(p) => p,
        None => {
            // Offline, or the lists are stale: the newest one unpacked before will do.
            let cached: Vec<String> = std::fs::read_dir(&root)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join(".complete").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            newest(cached.iter().map(String::as_str), pat).with_context(|| {
                format!(
                    "no {}*{} package in the apt lists and none cached (run apt-get update)",
                    pat.0, pat.1
                )
            })?
        }
    };
    let dir = root.join(&package);
    if !dir.join(".complete").exists() {
        download(&package, &dir)?;
    }
    unpacked(&package, &dir)
}

fn download(package: &str, dir: &Path) -> Result<()> {
    println!("vmtest: downloading {package}");
    let tmp = dir.with_extension("download");
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&tmp)?;
    crate::setup::run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&tmp),
    )
    .with_context(|| format!("apt-get download {package}"))?;
    let deb = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    crate::setup::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    std::fs::remove_dir_all(&tmp)?;
    std::fs::write(dir.join(".complete"), format!("{package}\n"))?;
    Ok(())
}

fn unpacked(package: &str, dir: &Path) -> Result<Kernel> {
    let mods = dir.join("lib/modules");
    let release = std::fs::read_dir(&mods)
        .with_context(|| format!("reading {}", mods.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .next()
        .with_context(|| format!("{} is empty", mods.display()))?;
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing", vmlinuz.display());
    }
    Ok(Kernel {
        package: package.to_string(),
        modules: mods.join(&release),
        release,
        vmlinuz,
    })
}

/// A module's name as modprobe spells it: file stem, '-' as '_'.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Every loadable module of `k`: name -> file.
fn module_files(k: &Kernel) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    let mut stack = vec![k.modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.to_str().filter(|n| n.contains(".ko")) {
                out.insert(module_name(name), p.clone());
            }
        }
    }
    Ok(out)
}

/// The `depends=` entry of a module's .modinfo: the modules it needs loaded first.
/// (Debian's packages ship no modules.dep: depmod writes it at install time.)
fn depends(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    module
        .windows(key.len())
        .position(|w| w == key)
        .map(|i| {
            let rest = &module[i + key.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// A module file's bytes, decompressed: init_module(2), which busybox insmod uses, wants
/// them plain.
pub fn decompressed(module: &Path) -> Result<Vec<u8>> {
    let name = module.to_string_lossy();
    let tool = [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, t)| t);
    match tool {
        Some(t) => {
            let out = Command::new(t)
                .arg("-dc")
                .arg(module)
                .output()
                .with_context(|| format!("running {t}"))?;
            if !out.status.success() {
                bail!("{t} -dc {name} failed");
            }
            Ok(out.stdout)
        }
        None => std::fs::read(module).with_context(|| format!("reading {name}")),
    }
}

/// The modules for `wanted`, each after its dependencies (the order to insmod them), as
/// (name, decompressed bytes); modules built into the kernel are left out.
pub fn modules_in_load_order(k: &Kernel, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    let files = module_files(k)?;
    let builtin: HashSet<String> = std::fs::read_to_string(k.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        files: &HashMap<String, PathBuf>,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = files.get(name) else {
            // A dependency on something built in.
            return Ok(());
        };
        let bytes = decompressed(path)?;
        for d in depends(&bytes) {
            visit(&d, files, seen, order)?;
        }
        order.push((name.to_string(), bytes));
        Ok(())
    }
    for w in wanted {
        let w = w.replace('-', "_");
        if files.contains_key(&w) {
            visit(&w, &files, &mut seen, &mut order)?;
        } else if !builtin.contains(&w) {
            bail!("{} has no module {w}, built in or loadable", k.package);
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_package_wins_by_number_not_by_text() {
        let p = pattern(KernelLine::V6_1).unwrap();
        let names = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned-dbg",
            "linux-image-6.1.0-100-amd64-unsigned",
        ];
        assert_eq!(
            newest(names.into_iter(), p).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        let p = pattern(KernelLine::V6_12).unwrap();
        let names = [
            "linux-image-6.12.9+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.43+deb13-cloud-amd64-unsigned",
        ];
        assert_eq!(
            newest(names.into_iter(), p).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
    }

    #[test]
    fn depends_is_read_from_modinfo() {
        let m = b"\x7fELF...\0license=GPL\0depends=nf_tables,nf-conntrack\0intree=Y\0";
        assert_eq!(depends(m), vec!["nf_tables", "nf_conntrack"]);
        assert!(depends(b"\0depends=\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }

    #[test]
    fn module_names_lose_path_suffix_and_dashes() {
        assert_eq!(module_name("kernel/net/sched/cls_bpf.ko.xz"), "cls_bpf");
        assert_eq!(module_name("kernel/drivers/net/veth.ko"), "veth");
        assert_eq!(module_name("kernel/x/nf-tables.ko.zst"), "nf_tables");
    }
}
