//! The Kubernetes manifests (k8s/ and its overlays): valid against the API schemas, and
//! consistent where no schema can tell — ports, selectors, names, the node's own flags and
//! the image's user.
//!
//! Needs `kubectl` (or `kustomize`) to render the kustomizations, and for the schema test
//! `kubernetes-validate` (`pip install kubernetes-validate`, schemas ship with it). A test
//! whose tool is missing prints why and passes.

mod k8s;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::process::Stdio;

use k8s::KUSTOMIZATIONS;
use k8s::Manifests;
use k8s::env_value;
use k8s::initial_members;
use k8s::port_of;
use serde_json::Value;

/// Kubernetes versions the manifests must validate against: the newest schemas
/// kubernetes-validate ships (its default) and the oldest version docs/operations.md
/// supports (preStop `sleep` is on by default from 1.30).
const KUBERNETES_VERSIONS: [Option<&str>; 2] = [None, Some("1.30")];

/// The namespace pods are imagined in when the env is expanded.
const NAMESPACE: &str = "ns";

fn render_or_skip(dir: &str) -> Option<Manifests> {
    match Manifests::render(dir) {
        Ok(m) => Some(m),
        Err(why) => {
            println!("SKIPPED: {why}");
            None
        }
    }
}

#[test]
fn manifests_pass_kubernetes_validate_strict_with_no_warnings() {
    for dir in KUSTOMIZATIONS {
        let yaml = match k8s::kustomize(dir) {
            Ok(y) => y,
            Err(why) => {
                println!("SKIPPED: {why}");
                return;
            }
        };
        let objects = k8s::parse_documents(&yaml).len();
        assert!(objects >= 4, "{dir}: only {objects} objects rendered");
        for version in KUBERNETES_VERSIONS {
            let mut cmd = Command::new("kubernetes-validate");
            cmd.arg("--strict");
            if let Some(v) = version {
                cmd.args(["--kubernetes-version", v]);
            }
            cmd.arg("-")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    println!(
                        "SKIPPED: kubernetes-validate cannot be run ({e}); install it with \
                         `pip install kubernetes-validate`"
                    );
                    return;
                }
            };
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(yaml.as_bytes())
                .expect("feed kubernetes-validate");
            let out = child.wait_with_output().expect("kubernetes-validate");
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let against = version.unwrap_or("its newest schemas");
            assert!(
                out.status.success(),
                "{dir} does not validate against Kubernetes {against}:\n{report}"
            );
            // kubernetes-validate exits 0 on warnings (e.g. an unknown kind or apiVersion,
            // which means nothing was checked): they count as failures here.
            let bad: Vec<&str> = report
                .lines()
                .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
                .collect();
            assert!(
                bad.is_empty(),
                "{dir} against Kubernetes {against}: warnings:\n{}",
                bad.join("\n")
            );
            let passed = report
                .lines()
                .filter(|l| l.contains("passed for resource"))
                .count();
            assert_eq!(
                passed, objects,
                "{dir} against Kubernetes {against}: every object must be checked:\n{report}"
            );
        }
    }
}

/// Every `FERROKV_*` variable `ferrokv --help` documents (clap prints `[env: NAME=]`).
fn variables_the_binary_accepts() -> BTreeSet<String> {
    let out = Command::new(&ferrokv_tests::binaries().ferrokv)
        .arg("--help")
        .output()
        .expect("ferrokv --help");
    assert!(out.status.success(), "ferrokv --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    let vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_string()))
        .collect();
    assert!(
        vars.contains("FERROKV_DATA_DIR"),
        "ferrokv --help lists no env variables: {help}"
    );
    vars
}

/// `labels` (a selector's matchLabels or a Service's selector) all present in `pod`.
fn selects(selector: &Value, pod_labels: &Value, what: &str) {
    let selector = selector
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no selector"));
    assert!(!selector.is_empty(), "{what}: empty selector");
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k], v,
            "{what} selects {k}={v}, which the pod template does not carry"
        );
    }
}

#[test]
fn manifests_agree_with_the_binary_and_with_each_other() {
    let accepted = variables_the_binary_accepts();
    for dir in KUSTOMIZATIONS {
        let Some(m) = render_or_skip(dir) else {
            return;
        };
        let sts = m.statefulset();
        let spec = &sts["spec"];
        let pod = &spec["template"]["spec"];
        let container = m.container();
        let replicas = m.replicas();
        let pod_labels = &spec["template"]["metadata"]["labels"];

        // Every pod of the set: the env expands fully, and its ports are the declared ones.
        for ordinal in 0..replicas {
            let name = format!("ferrokv-{ordinal}");
            let env = m.pod_env(&name, NAMESPACE);
            for (var, _) in &env {
                if var.starts_with("FERROKV_") {
                    assert!(
                        accepted.contains(var),
                        "{dir}: {var} is not a variable `ferrokv --help` lists ({accepted:?})"
                    );
                }
            }
            assert!(
                env_value(&env, "FERROKV_ID").is_none(),
                "{dir}: FERROKV_ID must not be set: the id comes from the ordinal or the cluster"
            );
            assert_eq!(env_value(&env, "FERROKV_NAME"), Some(name.as_str()));
        }
        let env = m.pod_env("ferrokv-0", NAMESPACE);
        let var = |name: &str| {
            env_value(&env, name).unwrap_or_else(|| panic!("{dir}: {name} is not set"))
        };
        let ports: BTreeMap<String, u16> = m.container_ports().into_iter().collect();
        let listening: BTreeMap<&str, u16> = [
            ("client", port_of(var("FERROKV_LISTEN_CLIENT"))),
            ("peer", port_of(var("FERROKV_LISTEN_PEER"))),
            ("metrics", port_of(var("FERROKV_LISTEN_METRICS"))),
        ]
        .into();
        for (role, port) in &listening {
            assert_eq!(
                ports.get(*role),
                Some(port),
                "{dir}: the container port named {role} must be the one the node listens on"
            );
        }
        for (name, port) in &ports {
            assert!(
                listening.values().any(|p| p == port),
                "{dir}: container port {name} ({port}) is not one the node listens on"
            );
        }
        for listen in [
            "FERROKV_LISTEN_CLIENT",
            "FERROKV_LISTEN_PEER",
            "FERROKV_LISTEN_METRICS",
        ] {
            assert!(
                var(listen).starts_with("0.0.0.0:"),
                "{dir}: {listen} must listen on every interface"
            );
        }

        // Probes: readiness is the gRPC health service on the client port; liveness and
        // startup ask /livez on the metrics port, which never depends on quorum.
        let readiness = &container["readinessProbe"];
        assert_eq!(
            m.resolve_port(&readiness["grpc"]["port"]),
            Some(listening["client"]),
            "{dir}: readiness must be a grpc probe on the client port"
        );
        for probe in ["livenessProbe", "startupProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], "/livez", "{dir}: {probe} must ask /livez");
            assert_eq!(
                m.resolve_port(&get["port"]),
                Some(listening["metrics"]),
                "{dir}: {probe} must use the metrics port"
            );
        }
        let startup = &container["startupProbe"];
        let startup_budget = startup["periodSeconds"].as_u64().unwrap_or(10)
            * startup["failureThreshold"].as_u64().unwrap_or(3);
        assert!(
            startup_budget >= 600,
            "{dir}: the startup probe allows only {startup_budget}s for a log replay"
        );

        // Services: the headless one is the StatefulSet's, resolves pods before they are
        // ready, and every targetPort is a port the container declares.
        let peer_service = m.get(
            "Service",
            spec["serviceName"].as_str().expect("serviceName"),
        );
        assert_eq!(
            peer_service["spec"]["clusterIP"], "None",
            "{dir}: serviceName must be headless"
        );
        assert_eq!(peer_service["spec"]["publishNotReadyAddresses"], true);
        for service in m.of_kind("Service") {
            let name = service["metadata"]["name"].as_str().unwrap_or_default();
            selects(
                &service["spec"]["selector"],
                pod_labels,
                &format!("{dir}: Service {name}"),
            );
            for port in service["spec"]["ports"].as_array().expect("service ports") {
                let target = port.get("targetPort").unwrap_or(&port["port"]);
                assert!(
                    m.resolve_port(target).is_some(),
                    "{dir}: Service {name} targets {target}, which the container does not declare"
                );
            }
        }
        let targets = |service: &Value| -> BTreeSet<u16> {
            service["spec"]["ports"]
                .as_array()
                .expect("service ports")
                .iter()
                .filter_map(|p| m.resolve_port(p.get("targetPort").unwrap_or(&p["port"])))
                .collect()
        };
        assert!(
            targets(peer_service).is_superset(&[listening["client"], listening["peer"]].into()),
            "{dir}: the headless Service must carry the client and peer ports"
        );
        assert!(
            targets(m.get("Service", "ferrokv")).contains(&listening["client"]),
            "{dir}: the client Service must carry the client port"
        );

        // Selectors: the StatefulSet's and the PDB's match the pods; the PDB never allows
        // a voluntary disruption to take the cluster below quorum.
        selects(
            &spec["selector"]["matchLabels"],
            pod_labels,
            &format!("{dir}: StatefulSet selector"),
        );
        let pdbs = m.of_kind("PodDisruptionBudget");
        assert_eq!(pdbs.len(), 1, "{dir}: one PodDisruptionBudget");
        let pdb = &pdbs[0]["spec"];
        selects(
            &pdb["selector"]["matchLabels"],
            pod_labels,
            &format!("{dir}: PDB selector"),
        );
        let max_unavailable = pdb["maxUnavailable"]
            .as_u64()
            .expect("maxUnavailable as a number");
        assert_eq!(max_unavailable, 1, "{dir}: maxUnavailable");
        assert!(
            replicas - max_unavailable > replicas / 2,
            "{dir}: PDB breaks quorum"
        );

        // The initial cluster names every replica, by its stable DNS name under the
        // headless Service, with the ids a brand-new member derives (ordinal + 1), and each
        // pod advertises the address the others know it by.
        let service = spec["serviceName"].as_str().expect("serviceName");
        assert_eq!(spec["podManagementPolicy"], "Parallel", "{dir}");
        let members = initial_members(var("FERROKV_INITIAL_CLUSTER"));
        assert_eq!(
            members.len() as u64,
            replicas,
            "{dir}: FERROKV_INITIAL_CLUSTER has {} members but replicas is {replicas}",
            members.len()
        );
        for (ordinal, (id, addr)) in members.iter().enumerate() {
            let pod_name = format!("ferrokv-{ordinal}");
            assert_eq!(*id, ordinal as u64 + 1, "{dir}: {pod_name}'s initial id");
            let dns = format!("{pod_name}.{service}.{NAMESPACE}.svc");
            assert_eq!(
                addr,
                &format!("{dns}:{}", listening["peer"]),
                "{dir}: initial member {id}"
            );
            let env = m.pod_env(&pod_name, NAMESPACE);
            assert_eq!(
                env_value(&env, "FERROKV_ADVERTISE_PEER"),
                Some(addr.as_str())
            );
            assert_eq!(
                env_value(&env, "FERROKV_ADVERTISE_CLIENT"),
                Some(format!("{dns}:{}", listening["client"]).as_str())
            );
        }

        // Storage: the data dir is the claim's mount, the only writable place.
        let mount = container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|v| v["mountPath"] == var("FERROKV_DATA_DIR"))
            .unwrap_or_else(|| panic!("{dir}: nothing is mounted at FERROKV_DATA_DIR"));
        let claims = spec["volumeClaimTemplates"]
            .as_array()
            .expect("volumeClaimTemplates");
        let claim = claims
            .iter()
            .find(|c| c["metadata"]["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{dir}: the data dir is not a volumeClaimTemplate"));
        assert_eq!(
            claim["spec"]["accessModes"],
            serde_json::json!(["ReadWriteOnce"])
        );
        assert!(
            claim["spec"].get("storageClassName").is_none(),
            "{dir}: storage class is the cluster's"
        );

        // Shutdown: the grace period covers the preStop pause and the leader hand-over.
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let transfer_ms: u64 = env_value(&env, "FERROKV_SHUTDOWN_TRANSFER_MS")
            .unwrap_or("5000")
            .parse()
            .expect("FERROKV_SHUTDOWN_TRANSFER_MS is a number");
        assert!(
            grace >= pre_stop + transfer_ms.div_ceil(1000) + 10,
            "{dir}: {grace}s grace does not cover a {pre_stop}s preStop, a {transfer_ms}ms hand-over and the final sync"
        );

        // Security: the image's user (Dockerfile USER), non-root, nothing else writable.
        let dockerfile =
            std::fs::read_to_string(k8s::repo_root().join("Dockerfile")).expect("Dockerfile");
        let user = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("USER "))
            .expect("Dockerfile sets USER");
        let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
        let pod_security = &pod["securityContext"];
        assert_eq!(pod_security["runAsNonRoot"], true, "{dir}");
        assert_eq!(
            pod_security["runAsUser"].to_string(),
            uid,
            "{dir}: runAsUser vs Dockerfile"
        );
        assert_eq!(
            pod_security["fsGroup"].to_string(),
            gid,
            "{dir}: fsGroup vs Dockerfile"
        );
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{dir}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{dir}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{dir}"
        );
        assert_eq!(
            pod["enableServiceLinks"], false,
            "{dir}: service links inject FERROKV_* variables"
        );
    }
}

#[test]
fn pod_env_expands_like_kubernetes() {
    let defined = vec![("A".to_string(), "x".to_string())];
    assert_eq!(k8s::expand("$(A).svc", &defined).unwrap(), "x.svc");
    assert_eq!(k8s::expand("$$(A) $5", &defined).unwrap(), "$(A) $5");
    assert!(
        k8s::expand("$(B)", &defined).is_err(),
        "undefined references are bugs"
    );
    let env = serde_json::json!([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FERROKV_NAME", "value": "$(POD_NAME)"},
        {"name": "LATE", "value": "$(LATER)"},
        {"name": "LATER", "value": "1"},
    ]);
    let err = k8s::pod_env(&env, "ferrokv-1", "ns").unwrap_err();
    assert!(
        err.contains("LATER"),
        "a reference to a later variable is reported: {err}"
    );
}
