//! Test harness: real ferrokv clusters as child processes on 127.0.0.1, each replica with its
//! own data dir, driven through real gRPC (the `ferrokv-client` crate) and the `ferroctl` CLI.
//!
//! # Layout
//! - [`binaries`]: builds (once per test process) and locates `ferrokv` and `ferroctl`.
//! - [`Cluster`]: starts, kills (-9), stops (SIGTERM), restarts, wipes and adds replicas.
//! - [`wait_until`]: polling with a deadline, for conditions that settle (elections, catch-up).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use std::time::Instant;

use ferrokv_client::Client;
use ferrokv_client::ClientConfig;
use ferrokv_client::ReadOptions;
use ferrokv_client::StatusResponse;

/// Paths of the binaries under test.
pub struct Binaries {
    pub ferrokv: PathBuf,
    pub ferroctl: PathBuf,
}

/// Builds the workspace binaries once per test process, so a test never runs a stale binary,
/// and returns their paths (in the target dir this test binary was built into).
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = cargo_build(&["--workspace", "--bins"]);
        let bins = Binaries {
            ferrokv: dir.join("ferrokv"),
            ferroctl: dir.join("ferroctl"),
        };
        assert!(bins.ferrokv.exists(), "{} missing", bins.ferrokv.display());
        bins
    })
}

/// Builds `ferrokv-faulty` (the `fault-injection` build) once per test process and returns
/// its path, for tests that must see a broken guarantee handled.
pub fn faulty_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let args = [
            "-p",
            "ferrokv-node",
            "--features",
            "fault-injection",
            "--bin",
            "ferrokv-faulty",
        ];
        cargo_build(&args).join("ferrokv-faulty")
    })
}

/// Runs `cargo build --quiet ARGS` for this workspace into the target dir this test binary
/// was built into, and returns that profile's directory (where the binaries land).
fn cargo_build(args: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let status = Command::new(cargo)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", dir.parent().expect("target root"))
        .status()
        .expect("running cargo build for the binaries under test");
    assert!(status.success(), "cargo build {args:?} failed");
    dir
}

/// A free TCP port on 127.0.0.1 for a replica to listen on. Taken below Linux's ephemeral
/// range (32768 and up): a port from that range can meanwhile become the local port of some
/// outgoing connection, and then the replica's listener fails with "address in use". Ports
/// are never handed out twice in one test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Mutex::default);
    loop {
        let port: u16 = 10_000 + (rand_u32() % 22_000) as u16;
        let mut used = handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
}

/// A random number without a crate: the hash of a fresh RandomState (seeded per process).
fn rand_u32() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Settings of a test cluster. Timeouts are shorter than production defaults so failover is
/// quick, but long enough for a loaded 2-core machine.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_entries: u64,
    pub snapshot_keep_entries: u64,
    pub extra_args: Vec<String>,
    /// Start replicas as a StatefulSet does: no `--id`, `--name ferrokv-<ordinal>`; the node
    /// derives or is given its id. Replica keys in [`Cluster::nodes`] are then ordinal + 1.
    pub statefulset: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_entries: 10_000,
            snapshot_keep_entries: 1_000,
            extra_args: Vec::new(),
            statefulset: false,
        }
    }
}

/// One replica process and where it keeps its things.
pub struct Node {
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// `--initial-cluster` for an initial member; `None` for a node that joins later.
    pub initial_cluster: Option<String>,
    child: Option<std::sync::Mutex<Child>>,
}

impl Node {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of ferrokv processes in a temporary directory, killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    pub opts: ClusterOptions,
}

impl Cluster {
    /// Starts `opts.nodes` replicas at once with `--initial-cluster` and waits for a leader.
    pub async fn start(opts: ClusterOptions) -> Cluster {
        binaries();
        let dir = tempfile::Builder::new()
            .prefix("ferrokv-test-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = BTreeMap::new();
        for id in 1..=opts.nodes {
            nodes.insert(id, Self::new_node(dir.path(), id, None));
        }
        let initial = nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.peer_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster { dir, nodes, opts };
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            if let Some(n) = cluster.nodes.get_mut(&id) {
                n.initial_cluster = Some(initial.clone());
            }
            cluster.spawn(id);
        }
        // Generous: a loaded 2-core CI machine can delay the first election by seconds.
        cluster.wait_leader(Duration::from_secs(60)).await;
        cluster.wait_published(Duration::from_secs(60)).await;
        cluster
    }

    /// Waits until every member has published its name and client address (each replica
    /// does so through Raft shortly after a leader exists).
    pub async fn wait_published(&self, timeout: Duration) {
        wait_until(
            "members to publish their names and addresses",
            timeout,
            || async {
                self.assert_alive();
                let members = self.client().member_list().await.ok()?.members;
                members
                    .iter()
                    .all(|m| !m.client_addr.is_empty() && !m.name.is_empty())
                    .then_some(())
            },
        )
        .await
    }

    fn new_node(dir: &Path, id: u64, initial_cluster: Option<String>) -> Node {
        Node {
            id,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            data_dir: dir.join(format!("node-{id}")),
            log_path: dir.join(format!("node-{id}.log")),
            initial_cluster,
            child: None,
        }
    }

    /// Starts (or restarts) replica `id` on its data dir.
    pub fn spawn(&mut self, id: u64) {
        let opts = self.opts.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let mut cmd = Command::new(&binaries().ferrokv);
        if opts.statefulset {
            cmd.arg("--name").arg(format!("ferrokv-{}", id - 1));
        } else {
            cmd.arg("--id").arg(id.to_string());
        }
        cmd.arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen-client")
            .arg(node.endpoint())
            .arg("--listen-peer")
            .arg(node.peer_addr())
            .arg("--listen-metrics")
            .arg(format!("127.0.0.1:{}", node.metrics_port))
            .arg("--heartbeat-interval-ms")
            .arg(opts.heartbeat_ms.to_string())
            .arg("--election-timeout-ms")
            .arg(opts.election_ms.to_string())
            .arg("--snapshot-entries")
            .arg(opts.snapshot_entries.to_string())
            .arg("--snapshot-keep-entries")
            .arg(opts.snapshot_keep_entries.to_string())
            .arg("--log")
            .arg("info,openraft=info")
            .args(&opts.extra_args)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if let Some(ic) = &node.initial_cluster {
            cmd.arg("--initial-cluster").arg(ic);
        }
        node.child = Some(std::sync::Mutex::new(cmd.spawn().expect("spawn ferrokv")));
    }

    /// Adds a replica that is not an initial member (empty data dir), and starts it. It
    /// waits to be added as a learner through the Cluster API (or, in StatefulSet mode,
    /// joins by itself through the initial members).
    pub fn add_node(&mut self, id: u64) -> &Node {
        let initial = if self.opts.statefulset {
            self.nodes.values().find_map(|n| n.initial_cluster.clone())
        } else {
            None
        };
        let node = Self::new_node(self.dir.path(), id, initial);
        self.nodes.insert(id, node);
        self.spawn(id);
        &self.nodes[&id]
    }

    /// kill -9: no shutdown, no flush; what is not durable is gone.
    pub fn kill9(&mut self, id: u64) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        if let Some(c) = node.child.take() {
            let mut c = c.into_inner().unwrap_or_else(|e| e.into_inner());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        let mut c = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        // SAFETY: signalling a child process this harness spawned and still owns.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait for ferrokv")
    }

    /// Deletes a stopped replica's data dir: its volume is lost.
    pub fn wipe(&mut self, id: u64) {
        let node = &self.nodes[&id];
        assert!(node.child.is_none(), "stop node {id} before wiping it");
        let _ = std::fs::remove_dir_all(&node.data_dir);
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(Node::endpoint).collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// A client over every replica's endpoint.
    pub fn client(&self) -> Client {
        Client::connect(self.endpoints(), ClientConfig::default()).expect("client")
    }

    /// A client bound to one replica only.
    pub fn node_client(&self, id: u64) -> Client {
        Client::connect([self.nodes[&id].endpoint()], ClientConfig::default()).expect("client")
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let client = self.node_client(id);
        client.status(&self.nodes[&id].endpoint()).await.ok()
    }

    /// Replica `id`'s state hash and the revision it was computed at (Maintenance.Status).
    pub async fn state_hash(&self, id: u64) -> (u64, u64) {
        let mut m = ferrokv_proto::v1::maintenance_client::MaintenanceClient::connect(format!(
            "http://{}",
            self.nodes[&id].endpoint()
        ))
        .await
        .expect("maintenance client");
        let s = m
            .status(ferrokv_proto::v1::StatusRequest {
                with_state_hash: true,
            })
            .await
            .expect("status with state hash")
            .into_inner();
        (s.state_hash, s.state_hash_revision)
    }

    /// Panics, naming the node and its exit status, if a replica process that should be
    /// running has exited: a crashed node explains a timeout better than the timeout does.
    pub fn assert_alive(&self) {
        for n in self.nodes.values() {
            if let Some(c) = &n.child {
                let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(&n.log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "node {} exited unexpectedly ({status}); last log lines:\n{}",
                        n.id,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }

    /// Waits until every running replica reports the same leader, which is running, and
    /// returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        wait_until(
            "every running replica to agree on a running leader",
            timeout,
            || async {
                self.assert_alive();
                let mut leader = None;
                for id in self.running() {
                    let s = self.status(id).await?;
                    if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                        return None;
                    }
                    leader = Some(s.leader_id);
                }
                leader.filter(|l| self.running().contains(l))
            },
        )
        .await
    }

    /// Waits until replica `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        wait_until(
            &format!("node {id} to apply index {index}"),
            timeout,
            || async {
                let s = self.status(id).await?;
                (s.applied_index >= index).then_some(())
            },
        )
        .await
    }

    /// Reads `key` from replica `id` without a read barrier (its own applied state).
    pub async fn serializable_get(&self, id: u64, key: &str) -> Option<Vec<u8>> {
        let (_, kv) = self
            .node_client(id)
            .get(key, ReadOptions { serializable: true })
            .await
            .expect("serializable get");
        kv.map(|kv| kv.value)
    }

    /// Runs ferroctl against this cluster with `args`; returns (exit code, stdout, stderr).
    pub fn ferroctl(
        &self,
        endpoints: &[String],
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> (i32, Vec<u8>, String) {
        let mut cmd = Command::new(&binaries().ferroctl);
        cmd.arg("--endpoints").arg(endpoints.join(",")).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ferroctl");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input).expect("write ferroctl stdin");
        }
        let out = child.wait_with_output().expect("ferroctl output");
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
        if std::thread::panicking() {
            // The logs explain most failures; show their tails.
            for n in self.nodes.values() {
                eprintln!(
                    "---- last lines of node {} log ({}) ----",
                    n.id,
                    n.log_path.display()
                );
                if let Ok(f) = std::fs::File::open(&n.log_path) {
                    let lines: Vec<String> = std::io::BufReader::new(f)
                        .lines()
                        .map_while(Result::ok)
                        .collect();
                    // The start explains a node that never came up; the end, one that broke.
                    let head = lines.len().min(15);
                    for l in &lines[..head] {
                        eprintln!("{l}");
                    }
                    if lines.len() > head {
                        eprintln!("...");
                    }
                    for l in lines.iter().skip(lines.len().saturating_sub(40).max(head)) {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}
