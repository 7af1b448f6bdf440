//! The deployment files under `deploy/` agree with the binary and the README:
//! each parses; the capabilities the DaemonSet adds and the systemd unit
//! keeps are the README's list; the ports, paths and arguments are the
//! binary's own (its defaults, its metrics path, its tracefs mount point).

use std::{collections::BTreeSet, path::PathBuf};

use clap::Parser as _;
use serde_norway::Value;

use crate::{
    cli::{Options, Target},
    scrape::server::METRICS_PATH,
    startup::preflight::TRACEFS,
};

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `value` at a path of keys (and sequence indices, as numbers).
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| {
        let next = match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        };
        next.unwrap_or_else(|| panic!("no {key} in {path}: {v:?}"))
    })
}

fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// The capabilities the README's Kubernetes section says are needed: the
/// rows of its table that start with a capability, without `CAP_`.
fn readme_capabilities() -> BTreeSet<String> {
    let readme = repo_file("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Kubernetes"))
        .expect("the README has a Kubernetes section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `CAP_"))
        .map(|l| l.split('`').next().unwrap_or_default().to_string())
        .collect()
}

fn options(args: &[String]) -> Options {
    let argv = std::iter::once("gunicorn-ebpf-exporter".to_string()).chain(args.iter().cloned());
    Options::try_parse_from(argv).unwrap_or_else(|e| panic!("args {args:?}: {e}"))
}

/// The DaemonSet: the host's PIDs, exactly the README's capabilities on a
/// read-only root, resources set, discovery mode, the default port, tracefs
/// where the binary looks for it.
#[test]
fn daemonset_matches_the_binary_and_the_readme() {
    let ds = yaml("deploy/kubernetes/daemonset.yaml");
    assert_eq!(str_at(&ds, "kind"), "DaemonSet");
    let pod = at(&ds, "spec.template.spec");
    assert_eq!(at(pod, "hostPID").as_bool(), Some(true));
    let c = at(pod, "containers.0");
    let sc = at(c, "securityContext");
    assert_eq!(at(sc, "readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(sc, "privileged").as_bool(), Some(false));
    assert_eq!(at(sc, "allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(strings(at(sc, "capabilities.drop")), ["ALL"]);
    let added: BTreeSet<String> = strings(at(sc, "capabilities.add")).into_iter().collect();
    assert_eq!(added, readme_capabilities(), "DaemonSet vs README");
    for key in ["requests.cpu", "requests.memory", "limits.memory"] {
        at(c, &format!("resources.{key}"));
    }

    let o = options(&strings(at(c, "args")));
    assert!(matches!(o.target(), Target::Discover { .. }), "{o:?}");
    let defaults = options(&[]);
    assert_eq!(
        at(c, "ports.0.containerPort").as_u64(),
        Some(defaults.port.into())
    );
    assert_eq!(str_at(c, "ports.0.name"), "metrics");
    assert!(
        c.get("env").is_none(),
        "the port comes from the binary's default"
    );

    let mount = at(c, "volumeMounts.0");
    assert_eq!(str_at(mount, "mountPath"), TRACEFS);
    assert_eq!(at(mount, "readOnly").as_bool(), Some(true));
    assert_eq!(str_at(pod, "volumes.0.hostPath.path"), TRACEFS);
    assert_eq!(str_at(mount, "name"), str_at(pod, "volumes.0.name"));
}

/// The Service and the PodMonitor select the DaemonSet's pods and reach
/// its metrics port and path.
#[test]
fn service_and_podmonitor_reach_the_metrics() {
    let ds = yaml("deploy/kubernetes/daemonset.yaml");
    let pod_labels = at(&ds, "spec.template.metadata.labels");
    assert_eq!(at(&ds, "spec.selector.matchLabels"), pod_labels);
    let port = at(&ds, "spec.template.spec.containers.0.ports.0");

    let svc = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(str_at(&svc, "kind"), "Service");
    assert_eq!(at(&svc, "spec.selector"), pod_labels);
    assert_eq!(at(&svc, "spec.ports.0.port"), at(port, "containerPort"));
    assert_eq!(at(&svc, "spec.ports.0.targetPort"), at(port, "name"));

    let pm = yaml("deploy/kubernetes/podmonitor.yaml");
    assert_eq!(str_at(&pm, "kind"), "PodMonitor");
    assert_eq!(at(&pm, "spec.selector.matchLabels"), pod_labels);
    let endpoint = at(&pm, "spec.podMetricsEndpoints.0");
    assert_eq!(at(endpoint, "port"), at(port, "name"));
    assert_eq!(str_at(endpoint, "path"), METRICS_PATH);
    assert_eq!(
        str_at(
            &ds,
            "spec.template.spec.containers.0.readinessProbe.httpGet.path"
        ),
        "/"
    );

    for doc in [&svc, &pm] {
        assert_eq!(at(doc, "metadata.namespace"), at(&ds, "metadata.namespace"));
    }
}

/// The host's unit keeps the same capabilities as the DaemonSet.
#[test]
fn systemd_unit_has_the_readme_capabilities() {
    let unit = repo_file("deploy/systemd/gunicorn-ebpf-exporter.service");
    for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
        let caps: BTreeSet<String> = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit sets {key}"))
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_string())
            .collect();
        assert_eq!(caps, readme_capabilities(), "{key}");
    }
}
