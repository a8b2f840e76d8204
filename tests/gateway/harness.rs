//! Runs the repository's envoy.yaml in a real Envoy with the built filter, in front of
//! simulated backends, all on free loopback ports; readiness is polled, never slept on.

use llm_sim::{Pool, PoolConfig, SeenRequest};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
pub const MISTRAL: &str = "mistral:latest";
pub const PLAIN: &str = "some-cool-self-hosted-model";

/// Header every test request carries, so a test can ask whether any backend saw it.
pub const TAG_HEADER: &str = "x-test-tag";

/// The three backends of envoy.yaml, with the ports that file names for them.
pub struct Backends {
    pub llama: Pool,
    pub mistral: Pool,
    pub plain: Pool,
}

impl Backends {
    pub async fn start() -> Self {
        let pool = |name: &str, model: &str, count| {
            Pool::bind(PoolConfig::new(name, &[model]), "127.0.0.1", 0, count)
        };
        Self {
            llama: pool("vllm-llama3-8b-instruct", LLAMA, 3)
                .await
                .expect("llama pool"),
            mistral: pool("mistral", MISTRAL, 3).await.expect("mistral pool"),
            plain: pool(PLAIN, PLAIN, 1).await.expect("plain backend"),
        }
    }

    /// The pool that serves `model`.
    pub fn pool_of(&self, model: &str) -> &Pool {
        match model {
            LLAMA => &self.llama,
            MISTRAL => &self.mistral,
            PLAIN => &self.plain,
            other => panic!("no pool serves {other}"),
        }
    }

    /// The ports envoy.yaml uses for the backends, each with the port actually bound.
    pub fn port_map(&self) -> Vec<(u16, u16)> {
        let mut map = Vec::new();
        for (first, pool) in [
            (18001, &self.llama),
            (18011, &self.mistral),
            (18021, &self.plain),
        ] {
            for (index, replica) in pool.replicas.iter().enumerate() {
                map.push((first + index as u16, replica.addr.port()));
            }
        }
        map
    }

    /// Every request any backend saw carrying this tag.
    pub fn saw(&self, tag: &str) -> Vec<SeenRequest> {
        [&self.llama, &self.mistral, &self.plain]
            .iter()
            .flat_map(|pool| pool.seen())
            .filter(|seen| seen.header_values(TAG_HEADER).contains(&tag))
            .collect()
    }
}

/// A running Envoy, stopped on drop.
pub struct Envoy {
    child: Child,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// What build.sh puts in target/filter/model-router.yaml: no update, so the filter configured
/// in envoy.yaml runs.
const NO_FILTER_UPDATE: &str = "resources: []\n";

fn required_file(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{variable} is not set: run the end-to-end tests with ./build.sh test")
        });
    assert!(
        path.is_file(),
        "{variable}={} does not exist",
        path.display()
    );
    path
}

impl Envoy {
    /// Starts the repository's envoy.yaml against `backends`, with `plugin_config` in place
    /// of its plugin configuration when given.
    pub fn start(backends: &Backends, plugin_config: Option<&str>) -> Result<Self, String> {
        let mut config = render("envoy.yaml", &backends.port_map())?;
        if let Some(plugin_config) = plugin_config {
            config = replace_plugin_config(&config, plugin_config)?;
        }
        Self::launch(&config)
    }

    /// Starts envoy.yaml against `backends` with one line of it replaced, and `plugin_config`
    /// in place of its plugin configuration when given.
    pub fn start_edited(
        backends: &Backends,
        from: &str,
        to: &str,
        plugin_config: Option<&str>,
    ) -> Result<Self, String> {
        let mut config = replace_once(&render("envoy.yaml", &backends.port_map())?, from, to)?;
        if let Some(plugin_config) = plugin_config {
            config = replace_plugin_config(&config, plugin_config)?;
        }
        Self::launch(&config)
    }

    /// Starts the configuration at `path` (relative to the repository), its admin and
    /// listener ports free ones and each `(written, bound)` port swapped.
    pub fn start_file(path: &str, ports: &[(u16, u16)]) -> Result<Self, String> {
        Self::launch(&render(path, ports)?)
    }

    /// Starts Envoy with `config` as its bootstrap.
    pub fn launch(config: &str) -> Result<Self, String> {
        let envoy_bin = required_file("ENVOY_BIN");
        let dir = std::env::temp_dir().join(format!(
            "model-router-e2e-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::SeqCst)
        ));
        // envoy.yaml watches target/filter/ for a replacement filter: give each Envoy its own.
        let filter_dir = dir.join("filter");
        std::fs::create_dir_all(&filter_dir).map_err(|e| e.to_string())?;
        std::fs::write(filter_dir.join("model-router.yaml"), NO_FILTER_UPDATE)
            .map_err(|e| e.to_string())?;
        let config = config.replace("target/filter", &filter_dir.display().to_string());
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let admin_path = dir.join("admin-address");
        let log = |name: &str| std::fs::File::create(dir.join(name)).map_err(|e| e.to_string());
        let child = Command::new(envoy_bin)
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "2",
                "--log-level",
                "warn",
            ])
            .args([
                "--component-log-level",
                "wasm:info",
                "--file-flush-interval-msec",
                "50",
            ])
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .spawn()
            .map_err(|e| format!("cannot start envoy: {e}"))?;
        let mut envoy = Self {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        envoy
            .wait_ready(&admin_path)
            .map_err(|e| format!("{e}\n{}", envoy.stderr_tail()))?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no admin address yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("envoy exited with {status}"));
            }
            if let Ok(address) = std::fs::read_to_string(admin_path) {
                if let Ok(admin) = address.trim().parse() {
                    self.admin = admin;
                    match admin_get(admin, "/ready") {
                        Ok((200, _)) => {
                            self.listener = self.listener_address()?;
                            return Ok(());
                        }
                        Ok((status, body)) => last = format!("/ready answered {status} {body}"),
                        Err(e) => last = e,
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("envoy not ready within 60 s: {last}"))
    }

    fn listener_address(&self) -> Result<SocketAddr, String> {
        let (_, body) = admin_get(self.admin, "/listeners?format=json")?;
        let listeners: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
        let port = socket["port_value"]
            .as_u64()
            .ok_or(format!("no listener port in {body}"))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port as u16)))
    }

    /// Used by the benchmarks, for the CPU time Envoy spends.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A counter or gauge from Envoy's stats (0 when Envoy has not created it yet).
    pub fn stat(&self, name: &str) -> u64 {
        let (_, body) = admin_get(self.admin, &format!("/stats?filter=^{name}$&format=json"))
            .expect("admin stats");
        let stats: serde_json::Value = serde_json::from_str(&body).expect("stats json");
        stats["stats"]
            .as_array()
            .and_then(|stats| stats.iter().find(|s| s["name"] == name))
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    /// The filter's counter `model_router.<name>`.
    pub fn counter(&self, name: &str) -> u64 {
        self.stat(&format!("wasmcustom.model_router.{name}"))
    }

    /// Envoy's stdout (the access log) so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads a configuration of the repository with free admin and listener ports, the built
/// filter, and each `(written, bound)` port swapped.
fn render(path: &str, ports: &[(u16, u16)]) -> Result<String, String> {
    let wasm = required_file("MODEL_ROUTER_WASM");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        std::fs::read_to_string(root.join(path)).map_err(|e| format!("{path}: {e}"))?;
    config = replace_once(&config, "port_value: 9901", "port_value: 0")?;
    config = replace_once(&config, "port_value: 10000", "port_value: 0")?;
    for (from, to) in ports {
        config = replace_once(
            &config,
            &format!("port_value: {from} "),
            &format!("port_value: {to} "),
        )?;
    }
    replace_once(
        &config,
        "filename: target/model_router.wasm",
        &format!("filename: {}", wasm.display()),
    )
}

fn replace_once(text: &str, from: &str, to: &str) -> Result<String, String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => Err(format!(
            "envoy.yaml has {n} occurrences of {from:?}, expected exactly one"
        )),
    }
}

/// Swaps the JSON block under the plugin's `value: |` for `plugin_config`.
fn replace_plugin_config(config: &str, plugin_config: &str) -> Result<String, String> {
    let start = config
        .find("google.protobuf.StringValue")
        .and_then(|at| config[at..].find("value: |").map(|v| at + v))
        .ok_or("no plugin configuration block in envoy.yaml")?;
    let line_start = config[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = start - line_start;
    let block_start = start + config[start..].find('\n').ok_or("truncated envoy.yaml")? + 1;
    let mut block_end = block_start;
    for line in config[block_start..].split_inclusive('\n') {
        if line.len() - line.trim_start().len() <= indent && !line.trim().is_empty() {
            break;
        }
        block_end += line.len();
    }
    let body: String = plugin_config
        .lines()
        .map(|line| format!("{}{line}\n", " ".repeat(indent + 2)))
        .collect();
    Ok(format!(
        "{}{body}{}",
        &config[..block_start],
        &config[block_end..]
    ))
}

/// A blocking GET to Envoy's admin interface: (status, body).
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<(u16, String), String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .map_err(|e| format!("admin connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("admin read: {e}"))?;
    let reply = crate::client::parse_response(&response)?;
    Ok((
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    ))
}
