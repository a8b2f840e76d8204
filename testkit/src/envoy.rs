//! Runs Envoy 1.40 with the built filter: the repository's envoy.yaml (or any configuration)
//! on free loopback ports, readiness polled through the admin interface, never slept on.

use crate::client::get;
use crate::process::{required_file, Process};
use crate::scenario::Backends;
use crate::wasm_filter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running Envoy, stopped on drop.
pub struct Envoy {
    process: Process,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    /// Its own directory: configuration, logs and the filter directory it watches.
    pub dir: PathBuf,
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
}

/// The start of a benchmark's Envoy configuration: the admin interface and one HTTP listener
/// named `name` on free loopback ports, `http_filters` (list items at indent 0) before the
/// router, up to the route configuration's first virtual host's `routes:` (items at indent
/// 14 follow, then the `clusters:`).
pub fn listener_head(name: &str, buffer_limit: Option<u64>, http_filters: &str) -> String {
    let buffer_limit = buffer_limit.map_or(String::new(), |bytes| {
        format!("    per_connection_buffer_limit_bytes: {bytes}\n")
    });
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{buffer_limit}    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: {name}
              domains: ["*"]
              routes:
"#,
        filters = wasm_filter::indent(http_filters, 10),
    )
}

/// A static cluster (a `clusters:` list item at indent 2) speaking HTTP/2 without TLS to one
/// loopback port: how Envoy reaches a gRPC service (ext_proc, the rate limit service).
pub fn grpc_cluster(name: &str, port: u16) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
"#
    )
}

/// Envoy's worker threads unless a case asks for more: two, so that whatever a worker keeps
/// to itself shows.
pub const WORKERS: usize = 2;

/// envoy.yaml as the tests run it: free ports, the backends' real ports, the built filter.
pub struct LocalGateway {
    config: String,
    workers: usize,
}

impl LocalGateway {
    pub fn new(backends: &Backends) -> Result<Self, String> {
        Self::with_ports(&backends.port_map())
    }

    /// envoy.yaml with each `(written, bound)` backend port swapped.
    pub fn with_ports(ports: &[(u16, u16)]) -> Result<Self, String> {
        Ok(Self {
            config: render("envoy.yaml", ports)?,
            workers: WORKERS,
        })
    }

    /// Replaces the filter's plugin configuration (the JSON under `value: |`).
    pub fn plugin_config(mut self, plugin_config: &str) -> Result<Self, String> {
        self.config = replace_plugin_config(&self.config, plugin_config)?;
        Ok(self)
    }

    /// Replaces one line of envoy.yaml, which must occur exactly once.
    pub fn edit(mut self, from: &str, to: &str) -> Result<Self, String> {
        self.config = replace_once(&self.config, from, to)?;
        Ok(self)
    }

    /// Runs Envoy with `workers` worker threads instead of [`WORKERS`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn start(self) -> Result<Envoy, String> {
        Envoy::launch_with_workers(&self.config, self.workers)
    }
}

impl Envoy {
    /// Starts a configuration of the repository (a path relative to its root) with free admin
    /// and listener ports and each `(written, bound)` port swapped.
    pub fn start_file(path: &str, ports: &[(u16, u16)]) -> Result<Self, String> {
        Self::launch(&render(path, ports)?)
    }

    /// Starts Envoy with `config` as its bootstrap. A filter directory watched by the
    /// configuration (`target/filter`, as in envoy.yaml) becomes one of this Envoy's own,
    /// seeded the way `./build.sh` seeds target/filter/.
    pub fn launch(config: &str) -> Result<Self, String> {
        Self::launch_with_workers(config, WORKERS)
    }

    /// [`Envoy::launch`] with `workers` worker threads.
    pub fn launch_with_workers(config: &str, workers: usize) -> Result<Self, String> {
        let envoy_bin = required_file("ENVOY_BIN");
        let dir = std::env::temp_dir().join(format!(
            "model-router-envoy-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::SeqCst)
        ));
        let filter_dir = dir.join("filter");
        std::fs::create_dir_all(&filter_dir).map_err(|e| e.to_string())?;
        let config = config.replace("target/filter", &filter_dir.display().to_string());
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, &config).map_err(|e| e.to_string())?;
        if config.contains(&format!("path: {}", filter_dir.display())) {
            let seed = wasm_filter::discovery_seed(&config_path)?;
            std::fs::write(filter_dir.join("model-router.yaml"), seed)
                .map_err(|e| e.to_string())?;
        }
        let admin_path = dir.join("admin-address");
        let log = |name: &str| std::fs::File::create(dir.join(name)).map_err(|e| e.to_string());
        let process = Process::spawn(
            Command::new(envoy_bin)
                .arg("-c")
                .arg(&config_path)
                .arg("--admin-address-path")
                .arg(&admin_path)
                .arg("--disable-hot-restart")
                .args(["--concurrency", &workers.to_string()])
                .args(["--log-level", "warn", "--component-log-level", "wasm:info"])
                .args(["--file-flush-interval-msec", "50"])
                .stdin(Stdio::null())
                .stdout(log("stdout.log")?)
                .stderr(log("stderr.log")?),
        )?;
        let mut envoy = Self {
            process,
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
            if let Some(status) = self.process.exited() {
                return Err(format!("envoy exited with {status}"));
            }
            if let Some(admin) = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|a| a.trim().parse().ok())
            {
                self.admin = admin;
                match get(admin, "/ready") {
                    Ok((200, _)) => {
                        self.listener = self.listener_address()?;
                        return Ok(());
                    }
                    Ok((status, body)) => last = format!("/ready answered {status} {body}"),
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("envoy not ready within 60 s: {last}"))
    }

    fn listener_address(&self) -> Result<SocketAddr, String> {
        let (_, body) = get(self.admin, "/listeners?format=json")?;
        let listeners: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
        let port = socket["port_value"]
            .as_u64()
            .ok_or(format!("no listener port in {body}"))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port as u16)))
    }

    /// The Envoy process, for the CPU time it spends.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// A counter or gauge from Envoy's stats (0 when Envoy has not created it yet).
    pub fn stat(&self, name: &str) -> u64 {
        let (_, body) =
            get(self.admin, &format!("/stats?filter=^{name}$&format=json")).expect("admin stats");
        let stats: serde_json::Value = serde_json::from_str(&body).expect("stats json");
        stats["stats"]
            .as_array()
            .and_then(|stats| stats.iter().find(|s| s["name"] == name))
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    /// The filter's counter or gauge `model_router.<name>`.
    pub fn counter(&self, name: &str) -> u64 {
        self.stat(&format!("wasmcustom.model_router.{name}"))
    }

    /// Polls a stat until it reaches `target`: Envoy counts after the client has its answer.
    pub fn wait_stat(&self, name: &str, target: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.stat(name);
            if value >= target {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{name} is {value}, never reached {target}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Envoy's stats in Prometheus form, as a scrape sees them.
    pub fn scrape(&self) -> Result<crate::prometheus::Scrape, String> {
        let (status, body) = get(self.admin, "/stats?format=prometheus")?;
        if status != 200 {
            return Err(format!("/stats?format=prometheus answered {status}"));
        }
        crate::prometheus::Scrape::parse(&body)
    }

    /// Scrapes until `ready` accepts a scrape (histograms are merged from the workers on
    /// each scrape, so the one after a response may not show it yet); the last scrape.
    pub fn scrape_until(
        &self,
        ready: impl Fn(&crate::prometheus::Scrape) -> bool,
    ) -> Result<crate::prometheus::Scrape, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let scrape = self.scrape()?;
            if ready(&scrape) || Instant::now() > deadline {
                return Ok(scrape);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's stdout (the access log) so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    /// Polls the access log (flushed every 50 ms here) for a line containing `text`.
    pub fn wait_access_log(&self, text: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.access_log().lines().find(|l| l.contains(text)) {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                return Err(format!("no access log line contains {text:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines Envoy logged.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Moves a new filter (module and plugin configuration) into the directory Envoy watches,
    /// as README's "Replacing the filter without a restart" tells an operator to.
    pub fn install_filter(&self, wasm: &Path, plugin_config: &str) -> Result<(), String> {
        let staging = self.dir.join("model-router.yaml.next");
        std::fs::write(&staging, wasm_filter::discovery_file(wasm, plugin_config))
            .map_err(|e| e.to_string())?;
        std::fs::rename(&staging, self.dir.join("filter/model-router.yaml"))
            .map_err(|e| e.to_string())
    }
}

/// Reads a configuration of the repository with free admin and listener ports, the built
/// filter, and each `(written, bound)` port swapped.
fn render(path: &str, ports: &[(u16, u16)]) -> Result<String, String> {
    let wasm = required_file("MODEL_ROUTER_WASM");
    let mut config =
        std::fs::read_to_string(root().join(path)).map_err(|e| format!("{path}: {e}"))?;
    config = replace_once(&config, "port_value: 9901", "port_value: 0")?;
    config = replace_once(&config, "port_value: 10000", "port_value: 0")?;
    for (from, to) in ports {
        config = replace_once(
            &config,
            &format!("port_value: {from} "),
            &format!("port_value: {to} "),
        )?;
        // The endpoint picker's pools name the same replicas as `ip:port`.
        config = config.replace(
            &format!("\"127.0.0.1:{from}\""),
            &format!("\"127.0.0.1:{to}\""),
        );
    }
    // The filter, and the endpoint picker's metrics singleton running the same module.
    let filename = "filename: target/model_router.wasm";
    if !config.contains(filename) {
        return Err(format!("{path} has no {filename:?}"));
    }
    Ok(config.replace(filename, &format!("filename: {}", wasm.display())))
}

fn replace_once(text: &str, from: &str, to: &str) -> Result<String, String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => Err(format!(
            "the configuration has {n} occurrences of {from:?}, expected exactly one"
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
