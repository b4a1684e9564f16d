//! The Kubernetes manifests as the k8s tests read them: `kubectl kustomize` output parsed
//! into JSON values, and the pod environment expanded as the kubelet would.
//!
//! Shared by `k8s_manifests.rs` (schema and cross-checks) and `k8s_docker.rs` (which runs
//! the image with the env taken from here, so the manifest and the simulation cannot
//! drift). Each test binary uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// The repository root (the tests package lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The kustomizations the project ships, relative to the repository root.
pub const KUSTOMIZATIONS: [&str; 2] = ["k8s", "k8s/overlays/five"];

/// Renders a kustomization (a directory under the repository root) to YAML with
/// `kubectl kustomize`, or a standalone `kustomize build`. `Err` says why neither could be
/// run, for a test to print when it skips.
pub fn kustomize(dir: &str) -> Result<String, String> {
    let path = repo_root().join(dir);
    let attempts: [(&str, &[&str]); 2] = [("kubectl", &["kustomize"]), ("kustomize", &["build"])];
    let mut missing = Vec::new();
    for (tool, args) in attempts {
        match Command::new(tool).args(args).arg(&path).output() {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "{tool} {} {dir} failed:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                return Ok(String::from_utf8(out.stdout).expect("kustomize output is UTF-8"));
            }
            Err(e) => missing.push(format!("{tool}: {e}")),
        }
    }
    Err(format!(
        "neither kubectl nor kustomize can be run ({})",
        missing.join("; ")
    ))
}

/// The YAML documents of a multi-document stream, as JSON values (empty documents dropped).
pub fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("kustomize output is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// A rendered kustomization: its objects, with accessors for the ones ferrokv has.
pub struct Manifests {
    pub dir: String,
    pub objects: Vec<Value>,
}

impl Manifests {
    /// Renders and parses `dir` (see [`kustomize`]).
    pub fn render(dir: &str) -> Result<Manifests, String> {
        let yaml = kustomize(dir)?;
        Ok(Manifests {
            dir: dir.to_string(),
            objects: parse_documents(&yaml),
        })
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.dir))
    }

    /// The one StatefulSet.
    pub fn statefulset(&self) -> &Value {
        let sets = self.of_kind("StatefulSet");
        assert_eq!(sets.len(), 1, "{}: expected one StatefulSet", self.dir);
        sets[0]
    }

    /// The StatefulSet's one container.
    pub fn container(&self) -> &Value {
        let containers = self.statefulset()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1, "{}: expected one container", self.dir);
        &containers[0]
    }

    pub fn replicas(&self) -> u64 {
        self.statefulset()["spec"]["replicas"]
            .as_u64()
            .expect("spec.replicas")
    }

    /// The container's ports by name.
    pub fn container_ports(&self) -> Vec<(String, u16)> {
        self.container()["ports"]
            .as_array()
            .expect("container ports")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["containerPort"].as_u64().expect("containerPort") as u16,
                )
            })
            .collect()
    }

    /// The container port a Service targetPort or probe port (a number or a port name)
    /// refers to; `None` when the container declares no such port.
    pub fn resolve_port(&self, port: &Value) -> Option<u16> {
        let ports = self.container_ports();
        match port {
            Value::Number(n) => {
                let n = n.as_u64()? as u16;
                ports.iter().any(|(_, p)| *p == n).then_some(n)
            }
            Value::String(name) => ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
            _ => None,
        }
    }

    /// The container's environment as the kubelet gives it to pod `pod_name` in
    /// `namespace`: see [`pod_env`].
    pub fn pod_env(&self, pod_name: &str, namespace: &str) -> Vec<(String, String)> {
        pod_env(&self.container()["env"], pod_name, namespace)
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir))
    }
}

/// Resolves a container's `env` list as the kubelet does: `valueFrom.fieldRef` for the pod's
/// name and namespace (the only downward-API fields ferrokv's manifest may use), and
/// `$(VAR)` references expanded from the variables defined *earlier* in the list (a
/// reference to a later or unknown variable is left as is by Kubernetes, which for ferrokv
/// is always a bug, so it is an error here). `$$` escapes a `$`.
pub fn pod_env(
    env: &Value,
    pod_name: &str,
    namespace: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut resolved: Vec<(String, String)> = Vec::new();
    for var in env.as_array().ok_or("env is not a list")? {
        let name = var["name"].as_str().ok_or("an env entry has no name")?;
        let value = if let Some(v) = var.get("value") {
            expand(
                v.as_str().ok_or(format!("{name}: value is not a string"))?,
                &resolved,
            )
            .map_err(|e| format!("{name}: {e}"))?
        } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_string(),
                "metadata.namespace" => namespace.to_string(),
                other => return Err(format!("{name}: fieldRef {other} is not simulated")),
            }
        } else {
            return Err(format!("{name}: neither value nor valueFrom.fieldRef"));
        };
        resolved.retain(|(n, _)| n != name);
        resolved.push((name.to_string(), value));
    }
    Ok(resolved)
}

/// Kubernetes' `$(VAR)` expansion against the variables defined so far.
pub fn expand(value: &str, defined: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            let end = tail.find(')').ok_or(format!("unclosed $( in {value:?}"))?;
            let var = &tail[..end];
            let (_, v) = defined.iter().find(|(n, _)| n == var).ok_or(format!(
                "$({var}) is not defined before it is used, so Kubernetes would leave it unexpanded"
            ))?;
            out.push_str(v);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Looks up a variable in a resolved environment.
pub fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// `FERROKV_INITIAL_CLUSTER` (`ID=HOST:PORT,...`) as (id, address) pairs.
pub fn initial_members(list: &str) -> Vec<(u64, String)> {
    list.split(',')
        .map(|entry| {
            let (id, addr) = entry
                .split_once('=')
                .unwrap_or_else(|| panic!("initial cluster entry {entry:?} has no '='"));
            (
                id.parse()
                    .unwrap_or_else(|_| panic!("initial cluster id {id:?}")),
                addr.to_string(),
            )
        })
        .collect()
}
