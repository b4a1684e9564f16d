//! The StatefulSet, simulated on Docker: the image from the root Dockerfile run as the
//! kubelet would run the pods of k8s/ — containers `ferrokv-0..N` on a private network with
//! the DNS names of the headless Service (`ferrokv-N.ferrokv-peer.NS.svc`), one named volume
//! each (the PVCs), the environment, ports, user and read-only root taken from the rendered
//! manifest itself, and stops that run the preStop pause and then SIGTERM with the pod's
//! grace period. Each scenario plays one part of docs/operations.md.
//!
//! Skipped, with the reason printed, when no Docker daemon answers or kubectl cannot render
//! the manifests. Scenarios run one at a time (2 cores); each has its own network, volumes
//! and container names, removed when it ends, failed or not.

mod k8s;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use ferrokv_client::Client;
use ferrokv_client::ClientConfig;
use ferrokv_client::Member;
use ferrokv_client::PutOptions;
use ferrokv_client::ReadOptions;
use ferrokv_client::StatusResponse;
use ferrokv_proto::v1::StatusRequest;
use ferrokv_proto::v1::maintenance_client::MaintenanceClient;
use k8s::Manifests;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::sync::MutexGuard;

/// The tag the tests build with `scripts/build-image --debug`.
const IMAGE: &str = "ferrokv:test";
/// The namespace the simulated pods live in (it only shows in their DNS names).
const NAMESPACE: &str = "ferrokv-sim";
const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Docker plumbing

/// Runs `docker args...`; stdout on success, stderr on failure.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker cannot be run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `docker args...` off the async runtime's threads (stops take up to a grace period).
async fn docker_async(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)
    })
    .await
    .expect("docker task")
}

/// Serializes the scenarios, and on first use checks the daemon and builds the image.
/// `None` (with the reason printed) when the scenario must be skipped. A Tokio mutex: each
/// test has its own runtime, and the guard is held across the whole scenario's awaits.
async fn docker_or_skip() -> Option<MutexGuard<'static, ()>> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let guard = ONE_AT_A_TIME.lock().await;
    let ready = READY.get_or_init(|| {
        docker(&["info", "--format", "{{.ServerVersion}}"])
            .map_err(|e| format!("no Docker daemon answers (`docker info`: {e})"))?;
        Manifests::render("k8s")?;
        build_image();
        Ok(())
    });
    match ready {
        Ok(()) => Some(guard),
        Err(why) => {
            println!("SKIPPED: {why}");
            None
        }
    }
}

/// `scripts/build-image --debug --tag ferrokv:test`, on the binaries this test run built.
fn build_image() {
    let bins = ferrokv_tests::binaries();
    let profile_dir = bins.ferrokv.parent().expect("profile dir");
    let target = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(k8s::repo_root().join("scripts/build-image"));
    if profile_dir.ends_with("debug") {
        cmd.arg("--debug");
    } else {
        // A release test run already built release binaries: package those.
        cmd.args(["--release", "--no-build"]);
    }
    let status = cmd
        .args(["--tag", IMAGE])
        .env("CARGO_TARGET_DIR", target)
        .status()
        .expect("scripts/build-image");
    assert!(status.success(), "scripts/build-image failed");
}

/// Polls `f` every 200 ms until it returns `Ok`, or panics after `timeout` with what it
/// last returned, so a failure says what the cluster looked like.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The pod template, read from the manifest

/// What the kubelet would take from the StatefulSet to run a pod.
struct PodTemplate {
    manifests: Manifests,
    service: String,
    client_port: u16,
    metrics_port: u16,
    readiness_port: u16,
    readiness_service: String,
    data_dir: String,
    run_as: String,
    read_only_root: bool,
    drop_all_capabilities: bool,
    no_new_privileges: bool,
    pre_stop_secs: u64,
    grace_secs: u64,
    /// persistentVolumeClaimRetentionPolicy.whenScaled == Delete.
    delete_volume_when_scaled: bool,
}

impl PodTemplate {
    fn from_manifest() -> PodTemplate {
        let manifests = Manifests::render("k8s").expect("render k8s/");
        let sts = manifests.statefulset();
        let pod = &sts["spec"]["template"]["spec"];
        let c = manifests.container();
        let port = |name: &str| {
            manifests
                .resolve_port(&Value::String(name.into()))
                .unwrap_or_else(|| panic!("the container declares no {name} port"))
        };
        let readiness = &c["readinessProbe"]["grpc"];
        let security = &c["securityContext"];
        let pod_security = &pod["securityContext"];
        let data_mount = c["volumeMounts"][0]["mountPath"]
            .as_str()
            .expect("a volume mount")
            .to_string();
        PodTemplate {
            service: sts["spec"]["serviceName"]
                .as_str()
                .expect("serviceName")
                .into(),
            client_port: port("client"),
            metrics_port: port("metrics"),
            readiness_port: manifests
                .resolve_port(&readiness["port"])
                .expect("readiness is a grpc probe on a declared port"),
            readiness_service: readiness["service"].as_str().unwrap_or("").into(),
            data_dir: data_mount,
            run_as: format!(
                "{}:{}",
                pod_security["runAsUser"], pod_security["runAsGroup"]
            ),
            read_only_root: security["readOnlyRootFilesystem"] == true,
            drop_all_capabilities: security["capabilities"]["drop"] == serde_json::json!(["ALL"]),
            no_new_privileges: security["allowPrivilegeEscalation"] == false,
            pre_stop_secs: c["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64()
                .unwrap_or(0),
            grace_secs: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
            delete_volume_when_scaled: sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"]
                == "Delete",
            manifests,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The simulated StatefulSet

/// A pod's host-side ports (fixed for the run, so a recreated pod keeps its endpoint).
struct Pod {
    host_client: u16,
    host_metrics: u16,
}

/// Containers, volumes and a network for one scenario; all removed on drop.
struct StatefulSet {
    run: String,
    network: String,
    tpl: PodTemplate,
    pods: BTreeMap<u64, Pod>,
    running: BTreeSet<u64>,
    volumes: BTreeSet<String>,
}

impl StatefulSet {
    fn new(scenario: &str) -> StatefulSet {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let run = format!("fkv{}-{nanos:x}-{scenario}", std::process::id());
        let network = format!("{run}-net");
        docker(&[
            "network",
            "create",
            "--label",
            &format!("ferrokv-test={run}"),
            &network,
        ])
        .expect("docker network create");
        StatefulSet {
            run,
            network,
            tpl: PodTemplate::from_manifest(),
            pods: BTreeMap::new(),
            running: BTreeSet::new(),
            volumes: BTreeSet::new(),
        }
    }

    fn pod_name(ordinal: u64) -> String {
        format!("ferrokv-{ordinal}")
    }

    fn container(&self, ordinal: u64) -> String {
        format!("{}-ferrokv-{ordinal}", self.run)
    }

    /// The PVC: data-ferrokv-N.
    fn volume(&self, ordinal: u64) -> String {
        format!("{}-data-ferrokv-{ordinal}", self.run)
    }

    fn dns_name(&self, ordinal: u64) -> String {
        format!("ferrokv-{ordinal}.{}.{NAMESPACE}.svc", self.tpl.service)
    }

    fn endpoint(&self, ordinal: u64) -> String {
        format!("127.0.0.1:{}", self.pods[&ordinal].host_client)
    }

    fn endpoints(&self) -> Vec<String> {
        self.running.iter().map(|o| self.endpoint(*o)).collect()
    }

    /// A client over the running pods (what the client Service spreads over).
    fn client(&self) -> Client {
        Client::connect(self.endpoints(), ClientConfig::default()).expect("client")
    }

    fn pod_client(&self, ordinal: u64) -> Client {
        Client::connect([self.endpoint(ordinal)], ClientConfig::default()).expect("client")
    }

    /// The `docker run` arguments of pod `ordinal`, from the manifest.
    fn run_args(&mut self, ordinal: u64) -> Vec<String> {
        let pod = self.pods.entry(ordinal).or_insert_with(|| Pod {
            host_client: ferrokv_tests::free_port(),
            host_metrics: ferrokv_tests::free_port(),
        });
        let (host_client, host_metrics) = (pod.host_client, pod.host_metrics);
        let volume = self.volume(ordinal);
        if self.volumes.insert(volume.clone()) {
            docker(&[
                "volume",
                "create",
                "--label",
                &format!("ferrokv-test={}", self.run),
                &volume,
            ])
            .expect("docker volume create");
        }
        let t = &self.tpl;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            self.container(ordinal),
            "--label".into(),
            format!("ferrokv-test={}", self.run),
            "--hostname".into(),
            Self::pod_name(ordinal),
            "--network".into(),
            self.network.clone(),
            "--network-alias".into(),
            self.dns_name(ordinal),
            "--volume".into(),
            format!("{volume}:{}", t.data_dir),
            "--publish".into(),
            format!("127.0.0.1:{host_client}:{}", t.client_port),
            "--publish".into(),
            format!("127.0.0.1:{host_metrics}:{}", t.metrics_port),
            "--user".into(),
            t.run_as.clone(),
        ];
        if t.read_only_root {
            args.push("--read-only".into());
        }
        if t.drop_all_capabilities {
            args.extend(["--cap-drop".into(), "ALL".into()]);
        }
        if t.no_new_privileges {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for (name, value) in t.manifests.pod_env(&Self::pod_name(ordinal), NAMESPACE) {
            args.extend(["--env".into(), format!("{name}={value}")]);
        }
        args.push(IMAGE.into());
        args
    }

    /// Creates the pods at once (podManagementPolicy: Parallel), each on its volume.
    fn start(&mut self, ordinals: impl IntoIterator<Item = u64>) {
        let runs: Vec<(u64, std::process::Child)> = ordinals
            .into_iter()
            .map(|o| {
                let args = self.run_args(o);
                let child = Command::new("docker")
                    .args(&args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("docker run");
                (o, child)
            })
            .collect();
        for (o, child) in runs {
            let out = child.wait_with_output().expect("docker run");
            assert!(
                out.status.success(),
                "docker run ferrokv-{o}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.running.insert(o);
        }
    }

    /// Deletes pod `ordinal` as the kubelet does: the preStop pause, then SIGTERM and at most
    /// the rest of the grace period before SIGKILL. Returns the node's exit code.
    async fn stop(&mut self, ordinal: u64) -> i64 {
        self.running.remove(&ordinal);
        tokio::time::sleep(Duration::from_secs(self.tpl.pre_stop_secs)).await;
        let grace = self.tpl.grace_secs.saturating_sub(self.tpl.pre_stop_secs);
        let c = self.container(ordinal);
        docker_async(vec![
            "stop".into(),
            "--time".into(),
            grace.to_string(),
            c.clone(),
        ])
        .await
        .expect("docker stop");
        let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &c])
            .expect("docker inspect")
            .parse()
            .expect("exit code");
        docker(&["rm", &c]).expect("docker rm");
        code
    }

    /// The pod's node is lost: the container is killed, with no shutdown.
    fn kill(&mut self, ordinal: u64) {
        self.running.remove(&ordinal);
        docker(&["rm", "--force", &self.container(ordinal)]).expect("docker rm -f");
    }

    /// The PVC is deleted; the next start of the pod gets an empty volume.
    fn delete_volume(&mut self, ordinal: u64) {
        let v = self.volume(ordinal);
        docker(&["volume", "rm", &v]).expect("docker volume rm");
        self.volumes.remove(&v);
    }

    fn disconnect(&self, ordinal: u64) {
        docker(&[
            "network",
            "disconnect",
            &self.network,
            &self.container(ordinal),
        ])
        .expect("docker network disconnect");
    }

    fn reconnect(&self, ordinal: u64) {
        docker(&[
            "network",
            "connect",
            "--alias",
            &self.dns_name(ordinal),
            &self.network,
            &self.container(ordinal),
        ])
        .expect("docker network connect");
    }

    /// ferroctl inside pod `ordinal`, against its own client port (reachable even while
    /// the pod is cut off from the network). Returns (exit code, stdout, stderr).
    fn ferroctl_in(&self, ordinal: u64, args: &[&str]) -> (i32, String, String) {
        let endpoint = format!("127.0.0.1:{}", self.tpl.client_port);
        let out = Command::new("docker")
            .args(["exec", &self.container(ordinal), "/usr/local/bin/ferroctl"])
            .args(["--endpoints", &endpoint])
            .args(args)
            .output()
            .expect("docker exec ferroctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    /// The host's ferroctl against every running pod, as an operator would run it.
    fn ferroctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&ferrokv_tests::binaries().ferroctl)
            .args(["--endpoints", &self.endpoints().join(",")])
            .args(args)
            .output()
            .expect("ferroctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    /// The readiness probe, as the kubelet runs it: gRPC health Check on the probe's port.
    async fn ready(&self, ordinal: u64) -> bool {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        assert_eq!(
            self.tpl.readiness_port, self.tpl.client_port,
            "only the client port is published"
        );
        let url = format!("http://{}", self.endpoint(ordinal));
        let check = async {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut health = HealthClient::new(channel);
            let status = health
                .check(HealthCheckRequest {
                    service: self.tpl.readiness_service.clone(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            Some(status == ServingStatus::Serving as i32)
        };
        tokio::time::timeout(Duration::from_secs(3), check)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    async fn wait_ready(&self, ordinals: &[u64], timeout: Duration) {
        wait_for(
            &format!("pods {ordinals:?} to be ready"),
            timeout,
            || async {
                for o in ordinals {
                    if !self.ready(*o).await {
                        return Err(format!("ferrokv-{o} is not ready"));
                    }
                }
                Ok(())
            },
        )
        .await
    }

    /// Each running pod's own status, or why it has none.
    async fn statuses(&self) -> BTreeMap<u64, Result<StatusResponse, String>> {
        let mut all = BTreeMap::new();
        for o in &self.running {
            let s = self.pod_client(*o).status(&self.endpoint(*o)).await;
            all.insert(*o, s.map_err(|e| e.to_string()));
        }
        all
    }

    /// Waits until every running pod names the same running leader; returns its ordinal.
    async fn wait_one_leader(&self, timeout: Duration) -> u64 {
        wait_for("every pod to agree on one leader", timeout, || async {
            let statuses = self.statuses().await;
            let views: BTreeMap<u64, String> = statuses
                .iter()
                .map(|(o, s)| match s {
                    Ok(s) => (*o, format!("id {} {} leader {}", s.id, s.role, s.leader_id)),
                    Err(e) => (*o, e.clone()),
                })
                .collect();
            let leaders: BTreeSet<u64> = statuses
                .values()
                .map(|s| s.as_ref().map_or(0, |s| s.leader_id))
                .collect();
            let leader = match leaders.iter().collect::<Vec<_>>()[..] {
                [l] if *l != 0 => *l,
                _ => return Err(format!("pods disagree: {views:?}")),
            };
            statuses
                .iter()
                .find(|(_, s)| s.as_ref().is_ok_and(|s| s.id == leader))
                .map(|(o, _)| *o)
                .ok_or(format!("the leader is not a running pod: {views:?}"))
        })
        .await
    }

    async fn members(&self) -> Result<Vec<Member>, String> {
        let list = self.client().member_list().await;
        Ok(list.map_err(|e| format!("member list: {e}"))?.members)
    }

    /// Waits until the members are exactly the voters `ferrokv-<ordinal>` for `ordinals`,
    /// with no learner left, and returns them.
    async fn wait_voters(&self, ordinals: &[u64], timeout: Duration) -> Vec<Member> {
        let want: BTreeSet<String> = ordinals.iter().map(|o| Self::pod_name(*o)).collect();
        wait_for(
            &format!("the members to be the voters {want:?}"),
            timeout,
            || async {
                let members = self.members().await?;
                let names: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();
                if names == want
                    && members.len() == want.len()
                    && members.iter().all(|m| !m.is_learner)
                {
                    return Ok(members);
                }
                let seen: Vec<String> = members
                    .iter()
                    .map(|m| {
                        let role = if m.is_learner { "learner" } else { "voter" };
                        format!("{}={} ({role})", m.id, m.name)
                    })
                    .collect();
                Err(format!("members are {seen:?}"))
            },
        )
        .await
    }

    /// Waits until every running pod has applied the same state (Maintenance.Status state
    /// hash at the same revision).
    async fn wait_converged(&self, timeout: Duration) {
        wait_for("every pod to hold the same state", timeout, || async {
            let mut seen = BTreeMap::new();
            for o in &self.running {
                let url = format!("http://{}", self.endpoint(*o));
                let mut m = MaintenanceClient::connect(url)
                    .await
                    .map_err(|e| format!("ferrokv-{o}: {e}"))?;
                let s = m
                    .status(StatusRequest {
                        with_state_hash: true,
                    })
                    .await
                    .map_err(|e| format!("ferrokv-{o}: {e}"))?
                    .into_inner();
                seen.insert(*o, (s.state_hash_revision, s.state_hash));
            }
            let distinct: BTreeSet<_> = seen.values().collect();
            if distinct.len() == 1 {
                Ok(())
            } else {
                Err(format!("(revision, state hash) per pod: {seen:?}"))
            }
        })
        .await
    }

    /// Starts pods 0..n in parallel, on empty volumes, and waits until they are one ready
    /// cluster.
    async fn start_cluster(&mut self, n: u64) {
        self.start(0..n);
        let all: Vec<u64> = (0..n).collect();
        self.wait_ready(&all, 2 * MINUTE).await;
        self.wait_one_leader(MINUTE).await;
    }

    fn print_logs(&self) {
        let containers = docker(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=ferrokv-test={}", self.run),
            "--format",
            "{{.Names}}",
        ])
        .unwrap_or_default();
        for c in containers.lines() {
            eprintln!("---- last lines of {c} ----");
            // The node logs to stderr, which `docker logs` passes on as its own stderr.
            if let Ok(out) = Command::new("docker")
                .args(["logs", "--tail", "60", c])
                .output()
            {
                eprint!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

impl Drop for StatefulSet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        let label = format!("label=ferrokv-test={}", self.run);
        if let Ok(ids) = docker(&["ps", "--all", "--quiet", "--filter", &label]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "--force", "--volumes", id]);
            }
        }
        if let Ok(volumes) = docker(&["volume", "ls", "--quiet", "--filter", &label]) {
            for v in volumes.lines() {
                let _ = docker(&["volume", "rm", "--force", v]);
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

// ---------------------------------------------------------------------------------------
// A client that keeps writing

/// What a writer saw: the writes acknowledged, and those it gave up on.
#[derive(Default)]
struct Writes {
    acked: Vec<(String, String)>,
    gave_up: Vec<(String, String)>,
    retries: u64,
}

/// Writes `prefix/000000`, `prefix/000001`, ... until `stop`. The client retries each put
/// within its session (exactly once); a put that still fails is retried here (same key,
/// same value) and counted, until acknowledged or a minute has passed.
async fn write_until(client: Client, prefix: &str, stop: Arc<AtomicBool>) -> Writes {
    let mut writes = Writes::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (key, value) = (format!("{prefix}/{i:06}"), format!("value-{i}"));
        let started = Instant::now();
        loop {
            match client
                .put(key.as_str(), value.as_str(), PutOptions::default())
                .await
            {
                Ok(_) => {
                    writes.acked.push((key, value));
                    break;
                }
                Err(e) if started.elapsed() > MINUTE => {
                    eprintln!("giving up on {key}: {e}");
                    writes.gave_up.push((key, value));
                    break;
                }
                Err(_) => {
                    writes.retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        i += 1;
    }
    writes
}

/// Every acknowledged write reads back (linearizably, through any pod).
async fn assert_all_present(sts: &StatefulSet, writes: &[(String, String)]) {
    let client = sts.client();
    for (key, value) in writes {
        let (_, kv) = client
            .get(key.as_str(), ReadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        let got = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        assert_eq!(
            got.as_deref(),
            Some(value.as_str()),
            "acknowledged write {key} lost"
        );
    }
}

async fn put_all(sts: &StatefulSet, prefix: &str, n: u64) -> Vec<(String, String)> {
    let client = sts.client();
    let mut written = Vec::new();
    for i in 0..n {
        let (key, value) = (format!("{prefix}/{i:04}"), format!("v{i}"));
        client
            .put(key.as_str(), value.as_str(), PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        written.push((key, value));
    }
    written
}

// ---------------------------------------------------------------------------------------
// Scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_parallel_start_forms_one_cluster_of_three_voters() {
    let Some(_one_at_a_time) = docker_or_skip().await else {
        return;
    };
    let mut sts = StatefulSet::new("cold");
    sts.start_cluster(3).await;

    let members = sts.wait_voters(&[0, 1, 2], MINUTE).await;
    for m in &members {
        let ordinal: u64 = m.name["ferrokv-".len()..].parse().expect("ordinal");
        assert_eq!(
            m.id,
            ordinal + 1,
            "a new initial member's id is ordinal + 1: {m:?}"
        );
        assert_eq!(
            m.peer_addr,
            format!("{}:{}", sts.dns_name(ordinal), 2380),
            "{m:?}"
        );
        assert_eq!(
            m.client_addr,
            format!("{}:{}", sts.dns_name(ordinal), 2379),
            "{m:?}"
        );
    }
    // One cluster: every pod answers with the same cluster id and the same leader.
    let mut cluster_ids = BTreeSet::new();
    let mut leaders = BTreeSet::new();
    for o in 0..3 {
        let s = sts
            .pod_client(o)
            .status(&sts.endpoint(o))
            .await
            .expect("status");
        cluster_ids.insert(s.header.expect("header").cluster_id);
        leaders.insert(s.leader_id);
    }
    assert_eq!(cluster_ids.len(), 1, "one cluster: {cluster_ids:?}");
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    let (code, out, err) = sts.ferroctl(&["endpoint", "health"]);
    assert_eq!(code, 0, "ferroctl endpoint health: {out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_in_reverse_ordinal_order_loses_no_acknowledged_write() {
    let Some(_one_at_a_time) = docker_or_skip().await else {
        return;
    };
    let mut sts = StatefulSet::new("roll");
    sts.start_cluster(3).await;
    let ids_before = sts.wait_voters(&[0, 1, 2], MINUTE).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(sts.client(), "roll", stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let min_ready = sts.tpl.manifests.statefulset()["spec"]["minReadySeconds"]
        .as_u64()
        .unwrap_or(0);
    // What the StatefulSet controller does: highest ordinal first, the next pod only once
    // the previous one is ready (and has stayed so for minReadySeconds).
    for o in [2, 1, 0] {
        let code = sts.stop(o).await;
        assert_eq!(
            code, 0,
            "ferrokv-{o} must stop cleanly within its grace period"
        );
        sts.start([o]);
        sts.wait_ready(&[o], 2 * MINUTE).await;
        tokio::time::sleep(Duration::from_secs(min_ready)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    println!(
        "rolling restart: {} writes acknowledged, {} retries, {} given up",
        writes.acked.len(),
        writes.retries,
        writes.gave_up.len()
    );
    assert!(
        writes.gave_up.is_empty(),
        "writes never acknowledged: {:?}",
        writes.gave_up
    );
    // The client retries a write whose outcome is unknown within its session (exactly
    // once); across a graceful rolling restart no write may need more than that.
    assert_eq!(
        writes.retries, 0,
        "writes failed despite the client's session retries"
    );
    assert!(writes.acked.len() > 10, "the writer made progress");
    assert_all_present(&sts, &writes.acked).await;
    // Same volumes, same node ids.
    let ids_after = sts.wait_voters(&[0, 1, 2], MINUTE).await;
    let ids = |ms: &[Member]| {
        ms.iter()
            .map(|m| (m.name.clone(), m.id))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        ids(&ids_before),
        ids(&ids_after),
        "a pod restarted on its volume keeps its id"
    );
    sts.wait_converged(MINUTE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_with_a_lost_volume_rejoins_under_a_new_node_id() {
    let Some(_one_at_a_time) = docker_or_skip().await else {
        return;
    };
    let mut sts = StatefulSet::new("lostpvc");
    sts.start_cluster(3).await;
    let before = sts.wait_voters(&[0, 1, 2], MINUTE).await;
    let old_ids: BTreeSet<u64> = before.iter().map(|m| m.id).collect();
    let written = put_all(&sts, "before", 100).await;

    // ferrokv-1's node and volume are gone; the StatefulSet recreates it on a new, empty PVC.
    sts.kill(1);
    sts.delete_volume(1);
    sts.start([1]);

    // Until the swap, the member list still shows the old ferrokv-1: wait for the new one
    // (a new id, never one the cluster had) to have taken its place as a voter.
    let after = wait_for(
        "ferrokv-1 to be a voter under a new node id",
        3 * MINUTE,
        || async {
            let members = sts.members().await?;
            let voters = members.iter().filter(|m| !m.is_learner).count();
            match members.iter().find(|m| m.name == "ferrokv-1") {
                Some(m) if !old_ids.contains(&m.id) && voters == 3 && members.len() == 3 => {
                    Ok(members)
                }
                _ => Err(format!("members are {members:?} (old ids {old_ids:?})")),
            }
        },
    )
    .await;
    sts.wait_voters(&[0, 1, 2], MINUTE).await;
    let ids = |ms: &[Member]| {
        ms.iter()
            .map(|m| (m.id, m.name.clone()))
            .collect::<Vec<_>>()
    };
    println!(
        "ferrokv-1 replaced: {:?} -> {:?}",
        ids(&before),
        ids(&after)
    );
    // The pod itself says it is the new id (it is not still running as the old one).
    let own_status = sts
        .pod_client(1)
        .status(&sts.endpoint(1))
        .await
        .expect("status");
    let new_id = after
        .iter()
        .find(|m| m.name == "ferrokv-1")
        .expect("member")
        .id;
    assert_eq!(own_status.id, new_id, "ferrokv-1 runs as its new id");
    sts.wait_ready(&[0, 1, 2], MINUTE).await;
    sts.wait_converged(MINUTE).await;
    // The new replica holds the data written before it existed.
    let own = sts.pod_client(1);
    for (key, value) in &written {
        let (_, kv) = own
            .get(key.as_str(), ReadOptions::serializable())
            .await
            .expect("serializable get on ferrokv-1");
        assert_eq!(
            kv.map(|kv| kv.value),
            Some(value.clone().into_bytes()),
            "{key}"
        );
    }
    let (code, out, err) = sts.ferroctl(&["endpoint", "health"]);
    assert_eq!(code, 0, "ferroctl endpoint health: {out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_five_and_back_to_three_by_the_documented_steps() {
    let Some(_one_at_a_time) = docker_or_skip().await else {
        return;
    };
    let mut sts = StatefulSet::new("scale");
    sts.start_cluster(3).await;
    let written = put_all(&sts, "three", 50).await;

    // kubectl scale statefulset ferrokv --replicas=5: two more pods, same template.
    sts.start([3, 4]);
    let five = sts.wait_voters(&[0, 1, 2, 3, 4], 3 * MINUTE).await;
    sts.wait_ready(&[0, 1, 2, 3, 4], MINUTE).await;
    sts.wait_one_leader(MINUTE).await;
    let mut written_five = put_all(&sts, "five", 50).await;

    // Scale down, highest ordinal first: `ferroctl member remove ID`, then kubectl scale.
    for o in [4, 3] {
        let name = StatefulSet::pod_name(o);
        let id = five.iter().find(|m| m.name == name).expect("member").id;
        let (code, out, err) = sts.ferroctl(&["member", "remove", &id.to_string()]);
        assert_eq!(code, 0, "ferroctl member remove {id} ({name}): {out} {err}");
    }
    sts.wait_voters(&[0, 1, 2], MINUTE).await;
    for o in [4, 3] {
        let code = sts.stop(o).await;
        assert_eq!(code, 0, "ferrokv-{o} stops cleanly after its removal");
        if sts.tpl.delete_volume_when_scaled {
            sts.delete_volume(o);
        }
    }
    sts.wait_one_leader(MINUTE).await;
    sts.wait_ready(&[0, 1, 2], MINUTE).await;
    written_five.extend(put_all(&sts, "three-again", 50).await);
    assert_all_present(&sts, &written).await;
    assert_all_present(&sts, &written_five).await;
    sts.wait_converged(MINUTE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_member_refuses_writes_and_converges_after_reconnecting() {
    let Some(_one_at_a_time) = docker_or_skip().await else {
        return;
    };
    let mut sts = StatefulSet::new("part");
    sts.start_cluster(3).await;
    put_all(&sts, "before", 20).await;

    // Cut the leader off: the other two are the majority.
    let cut = sts.wait_one_leader(MINUTE).await;
    sts.disconnect(cut);
    let majority: Vec<u64> = (0..3).filter(|o| *o != cut).collect();
    let majority_client = Client::connect(
        majority.iter().map(|o| sts.endpoint(*o)),
        ClientConfig::default(),
    )
    .expect("client");

    // The majority elects a leader and keeps serving.
    let started = Instant::now();
    let mut during = Vec::new();
    for i in 0..50 {
        let (key, value) = (format!("during/{i:04}"), format!("v{i}"));
        loop {
            match majority_client
                .put(key.as_str(), value.as_str(), PutOptions::default())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        started.elapsed() < MINUTE,
                        "the majority stopped serving: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        during.push((key, value));
    }
    println!(
        "majority served 50 writes {:?} after the cut",
        started.elapsed()
    );

    // The minority acknowledges no write and serves no linearizable read.
    let (put_code, out, err) = sts.ferroctl_in(
        cut,
        &["--command-timeout", "5s", "put", "minority/key", "x"],
    );
    assert!(
        put_code == 3 || put_code == 4,
        "the cut-off member must refuse the write (exit 3, or 4 for unknown outcome), got {put_code}: {out} {err}"
    );
    println!("the cut-off member answered the put with exit {put_code}: {err}");
    let (code, out, err) = sts.ferroctl_in(cut, &["--command-timeout", "5s", "get", "during/0000"]);
    assert_eq!(
        code, 3,
        "no linearizable read without a quorum: {out} {err}"
    );

    sts.reconnect(cut);
    sts.wait_ready(&[0, 1, 2], 2 * MINUTE).await;
    sts.wait_one_leader(MINUTE).await;
    sts.wait_converged(MINUTE).await;
    let own = sts.pod_client(cut);
    for (key, value) in &during {
        let (_, kv) = own
            .get(key.as_str(), ReadOptions::serializable())
            .await
            .expect("serializable get on the reconnected pod");
        assert_eq!(
            kv.map(|kv| kv.value),
            Some(value.clone().into_bytes()),
            "{key}"
        );
    }
    let (_, kv) = sts
        .client()
        .get("minority/key", ReadOptions::default())
        .await
        .expect("get");
    if put_code == 3 {
        assert!(
            kv.is_none(),
            "a write refused with exit 3 must not appear later"
        );
    }
    let (code, out, err) = sts.ferroctl(&["endpoint", "health"]);
    assert_eq!(code, 0, "ferroctl endpoint health: {out} {err}");
}
