//! deploy/kubernetes/ validated without a cluster: kubeconform and kubectl are in no package
//! registry this project's machines reach (kubeconform also needs its schemas from the
//! network), so the manifests are parsed here and checked for what synguard needs of
//! them: the fields the API requires of each kind, and the mounts, capabilities, probes
//! and settings the DaemonSet depends on. The ConfigMap's TOML is checked by the real
//! binary (`synguard check --config FILE`).

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn load(name: &str) -> Yaml {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

/// `y` at a dotted path; a missing step panics naming the path.
fn at<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    let mut cur = y;
    for step in path.split('.') {
        cur = match step.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[step],
        };
        assert!(!cur.is_badvalue(), "missing {path} (at {step})");
    }
    cur
}

fn s<'a>(y: &'a Yaml, path: &str) -> &'a str {
    at(y, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn list<'a>(y: &'a Yaml, path: &str) -> &'a [Yaml] {
    at(y, path)
        .as_vec()
        .unwrap_or_else(|| panic!("{path} is not a list"))
}

fn by_name<'a>(items: &'a [Yaml], name: &str) -> &'a Yaml {
    items
        .iter()
        .find(|i| i["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no entry named {name}"))
}

/// What the API server requires of every object.
fn check_object(y: &Yaml, api: &str, kind: &str) {
    assert_eq!(s(y, "apiVersion"), api);
    assert_eq!(s(y, "kind"), kind);
    let name = s(y, "metadata.name");
    // RFC 1123 DNS subdomain.
    assert!(
        !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
        "{name}"
    );
    assert_eq!(s(y, "metadata.namespace"), "kube-system");
}

#[test]
fn daemonset_has_what_synguard_needs() {
    let ds = load("daemonset.yaml");
    check_object(&ds, "apps/v1", "DaemonSet");
    // The selector must match the template's labels, or the API refuses it.
    let sel = at(&ds, "spec.selector.matchLabels").as_hash().unwrap();
    let labels = at(&ds, "spec.template.metadata.labels").as_hash().unwrap();
    for (k, v) in sel {
        assert_eq!(
            labels.get(k),
            Some(v),
            "selector {k:?} not in the template labels"
        );
    }
    let pod = at(&ds, "spec.template.spec");
    assert_eq!(at(pod, "hostNetwork").as_bool(), Some(true));
    let containers = list(pod, "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    s(c, "name");
    s(c, "image");

    // Mounts: host bpffs and /run/synguard as hostPaths, config and key as directories.
    let volumes = list(pod, "volumes");
    let mounts = list(c, "volumeMounts");
    let mount_of = |vol: &str| {
        let m = by_name(mounts, vol);
        assert!(
            m["subPath"].is_badvalue(),
            "{vol}: subPath would hide updates"
        );
        s(m, "mountPath").to_string()
    };
    for (vol, path) in [("bpffs", "/sys/fs/bpf"), ("run", "/run/synguard")] {
        let v = by_name(volumes, vol);
        assert_eq!(s(v, "hostPath.path"), path);
        assert_eq!(mount_of(vol), path, "{vol} mounted where synguard looks");
    }
    assert_eq!(
        s(by_name(mounts, "bpffs"), "mountPropagation"),
        "HostToContainer"
    );
    let key = by_name(volumes, "key");
    let secret_name = s(key, "secret.secretName");
    // 0400: synguard refuses a key file that its group or others can read.
    assert_eq!(at(key, "secret.defaultMode").as_i64(), Some(0o400));
    let key_dir = mount_of("key");
    let cm_name = s(by_name(volumes, "config"), "configMap.name").to_string();
    let config_dir = mount_of("config");

    // Capabilities: exactly what `synguard run` checks for, nothing else, not privileged.
    let sc = at(c, "securityContext");
    assert_eq!(at(sc, "privileged").as_bool(), Some(false));
    assert_eq!(at(sc, "allowPrivilegeEscalation").as_bool(), Some(false));
    let drop: Vec<&str> = list(sc, "capabilities.drop")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(drop, ["ALL"]);
    let mut add: Vec<&str> = list(sc, "capabilities.add")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    add.sort_unstable();
    assert_eq!(add, ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"]);

    // Metrics on the pod IP, the probe on /healthz of the same port, scrape annotations.
    let args: Vec<&str> = list(c, "args").iter().filter_map(Yaml::as_str).collect();
    let m = args
        .iter()
        .position(|a| *a == "--metrics")
        .expect("--metrics");
    let (host, port) = args[m + 1].rsplit_once(':').unwrap();
    assert_eq!(host, "$(POD_IP)");
    let env = list(c, "env");
    assert_eq!(
        s(by_name(env, "POD_IP"), "valueFrom.fieldRef.fieldPath"),
        "status.podIP"
    );
    assert_eq!(s(at(c, "livenessProbe"), "httpGet.path"), "/healthz");
    assert_eq!(
        at(c, "livenessProbe.httpGet.port")
            .as_i64()
            .unwrap()
            .to_string(),
        port
    );
    let ann = at(&ds, "spec.template.metadata.annotations");
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(ann["prometheus.io/port"].as_str(), Some(port));
    let cport = by_name(list(c, "ports"), "metrics");
    assert_eq!(
        at(cport, "containerPort").as_i64().unwrap().to_string(),
        port
    );

    // The config file the args name is the ConfigMap's; its key_file is the Secret's key.
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let (cdir, cfile) = config_arg.rsplit_once('/').unwrap();
    assert_eq!(cdir, config_dir);
    let cm = load("configmap.yaml");
    check_object(&cm, "v1", "ConfigMap");
    assert_eq!(s(&cm, "metadata.name"), cm_name);
    let data = at(&cm, "data").as_hash().unwrap();
    let text = data
        .get(&Yaml::String(cfile.into()))
        .and_then(Yaml::as_str)
        .expect("the config file in the ConfigMap");
    let table: toml::Table = toml::from_str(text).expect("the ConfigMap's TOML");
    assert_eq!(
        table["keep_attached"].as_bool(),
        Some(true),
        "SIGTERM must not detach"
    );
    let key_file = table["key_file"].as_str().unwrap();
    let (kdir, kname) = key_file.rsplit_once('/').unwrap();
    assert_eq!(kdir, key_dir);
    let secret = load("secret.yaml");
    check_object(&secret, "v1", "Secret");
    assert_eq!(s(&secret, "metadata.name"), secret_name);
    s(&secret, &format!("stringData.{kname}"));
    assert!(
        table.get("metrics").is_none(),
        "metrics comes from the args (pod IP)"
    );
}

/// The ConfigMap's TOML is a config the real binary accepts (`synguard check --config`,
/// which validates a file as `run` would read it).
#[test]
fn configmap_toml_is_accepted_by_synguard() {
    let cm = load("configmap.yaml");
    let text = cm["data"]["synguard.toml"].as_str().unwrap();
    let base = std::env::temp_dir().join(format!("sg-manifest-{}", std::process::id()));
    // The Secret's file exists only in the pod: point key_file at a test secret (check
    // reads and checks the key file as `run` does).
    let key = base.with_extension("key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let table: toml::Table = toml::from_str(text).unwrap();
    let key_file = table["key_file"].as_str().unwrap();
    let text = text.replace(key_file, key.to_str().unwrap());
    let tmp = base.with_extension("toml");
    std::fs::write(&tmp, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synguard"))
        .args(["check", "--config"])
        .arg(&tmp)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&key);
    assert!(
        out.status.success(),
        "synguard refuses the ConfigMap's TOML: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = load("kustomization.yaml");
    let res: Vec<&str> = list(&k, "resources")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for f in std::fs::read_dir(dir()).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                res.contains(&name.as_str()),
                "{name} not in kustomization.yaml"
            );
        }
    }
    let cf = std::fs::read_to_string(dir().join("Containerfile")).unwrap();
    assert!(cf.contains("COPY target/release/synguard /usr/bin/synguard"));
}
