//! llm-d-inference-sim, the simulator the seed's InferencePools run: one process per replica,
//! started on a given port with the dummy tokenizer (it would otherwise reach for a model hub),
//! and named so that its answers say which replica served them.

use crate::process::{free_port, wait_serving, NotServing, Process};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Response header llm-d-inference-sim adds with the replica's POD_NAME.
pub const POD_HEADER: &str = "x-inference-pod";

/// Longest prompt (in dummy-tokenizer tokens) a replica accepts: room for the tests' largest
/// body (100 KiB, about 20,500 tokens), which the default 1,024 would refuse. Not more: the
/// simulator sizes a channel of `(max-num-seqs + max-waiting-queue-length) x max-model-len`
/// float64s at startup (`metrics.go`, v0.10.2), so 1,000,000 asked 8 GB of every replica and
/// now and then kept one from listening for over 30 s (a CI run lost its world that way).
const MAX_MODEL_LEN: &str = "32768";

/// A running llm-d-inference-sim replica, stopped on drop.
pub struct LlmdReplica {
    process: Process,
    /// Its name, `<pool>-<index>`: the value of its [`POD_HEADER`].
    pub name: String,
    pub addr: SocketAddr,
}

impl LlmdReplica {
    /// Starts `binary` as a replica serving `model` on `port` (127.0.0.1) and waits until
    /// it answers /health.
    pub fn start(
        binary: &Path,
        name: &str,
        model: &str,
        port: u16,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::launch(binary, name, model, port, extra)?
            .map_err(|e| format!("llm-d-inference-sim {name} on port {port}: {e}"))
    }

    /// [`Self::start`] on a free port, chosen again if the replica exits before it answers:
    /// a port found free can be taken before the replica binds it (by a client connection's
    /// ephemeral port, under load), and the replica then exits at once.
    pub fn start_on_free_port(
        binary: &Path,
        name: &str,
        model: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let failure = match Self::launch(binary, name, model, port, extra)? {
                Ok(replica) => return Ok(replica),
                Err(e @ NotServing::Exited(_)) => e,
                Err(e) => return Err(format!("llm-d-inference-sim {name} on port {port}: {e}")),
            };
            failures.push(format!("on port {port}: {failure}"));
        }
        Err(format!(
            "llm-d-inference-sim {name}: {}",
            failures.join("; ")
        ))
    }

    /// Spawns the replica (the outer error: it could not be) and waits for its /health.
    fn launch(
        binary: &Path,
        name: &str,
        model: &str,
        port: u16,
        extra: &[&str],
    ) -> Result<Result<Self, NotServing>, String> {
        let process = Process::spawn(
            Command::new(binary)
                .args(["--model", model, "--port", &port.to_string()])
                .args(["--force-dummy-tokenizer", "--mode", "echo"])
                .args(["--max-model-len", MAX_MODEL_LEN])
                .args(extra)
                .env("POD_NAME", name)
                .env("POD_IP", "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut replica = Self {
            process,
            name: name.to_owned(),
            addr,
        };
        Ok(wait_serving(
            Some(&mut replica.process),
            addr,
            "/health",
            Duration::from_secs(30),
        )
        .map(|()| replica))
    }
}

/// The replicas of one backend of the scenario.
pub struct LlmdPool {
    pub backend: &'static crate::scenario::Backend,
    pub replicas: Vec<LlmdReplica>,
}

impl LlmdPool {
    /// Starts the backend's replicas (`binary`) on `ports`, named `<backend name>-<index>`.
    pub fn start(
        binary: &Path,
        backend: &'static crate::scenario::Backend,
        ports: impl IntoIterator<Item = u16>,
    ) -> Result<Self, String> {
        let replicas = ports
            .into_iter()
            .enumerate()
            .map(|(index, port)| {
                let name = format!("{}-{index}", backend.name);
                LlmdReplica::start(binary, &name, backend.model, port, &[])
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { backend, replicas })
    }

    /// Whether `pod` (a [`POD_HEADER`] value) names one of these replicas.
    pub fn has(&self, pod: &str) -> bool {
        self.replicas.iter().any(|r| r.name == pod)
    }
}
