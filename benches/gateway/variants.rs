//! The proxies compared, each routing the scenario's three model names to the one backend:
//! Envoy configurations for the header floor, the filter, the do-nothing filter, Lua and the
//! ext_proc stand-in; Envoy AI Gateway (aigw.yaml); LiteLLM.

use crate::Tools;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::client::get;
use testkit::envoy::Envoy;
use testkit::process::{free_port, spawn_listening, wait_http_ok, Process};
use testkit::scenario::{LLAMA as MODEL, MODELS};
use testkit::wasm_filter::{http_filter, indent};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Header,
    WasmFloor,
    Wasm,
    Lua,
    ExtProc,
    AiGateway,
    LiteLlm,
}

impl Variant {
    pub const ALL: [Variant; 7] = [
        Self::Header,
        Self::WasmFloor,
        Self::Wasm,
        Self::Lua,
        Self::ExtProc,
        Self::AiGateway,
        Self::LiteLlm,
    ];

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap()
    }

    /// The model header the client sends itself (variants that route without reading bodies).
    pub fn client_header(self) -> Option<&'static str> {
        matches!(self, Self::Header | Self::WasmFloor).then_some(MODEL)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Header => "1 header (no filter)",
            Self::WasmFloor => "2a wasm, no path scanned",
            Self::Wasm => "2 wasm (this filter)",
            Self::Lua => "3 lua",
            Self::ExtProc => "4 ext_proc (stand-in)",
            Self::AiGateway => "5 Envoy AI Gateway",
            Self::LiteLlm => "6 litellm",
        }
    }
}

/// The Lua variant: buffer the body, find the top-level "model" by walking the JSON with
/// string.find (strings and nesting tracked, so nested "model" keys are skipped).
const LUA: &str = r#"
local function top_level_model(body)
  local depth, i, n = 0, 1, #body
  local expect_key, last_key = false, nil
  while i <= n do
    local s = string.find(body, '[{}%[%]",:]', i)
    if not s then return nil end
    local c = string.sub(body, s, s)
    if c == '"' then
      local j = s + 1
      while true do
        local q = string.find(body, '["\\]', j)
        if not q then return nil end
        if string.sub(body, q, q) == '\\' then j = q + 2 else j = q; break end
      end
      local text = string.sub(body, s + 1, j - 1)
      if depth == 1 and expect_key then
        last_key = text
        expect_key = false
      elseif depth == 1 and last_key == "model" then
        return text
      end
      i = j + 1
    else
      if c == '{' or c == '[' then
        depth = depth + 1
        if depth == 1 then expect_key = true end
      elseif c == '}' or c == ']' then
        depth = depth - 1
      elseif c == ',' and depth == 1 then
        expect_key, last_key = true, nil
      end
      i = s + 1
    end
  end
  return nil
end

function envoy_on_request(handle)
  handle:headers():remove("x-ai-eg-model")
  local body = handle:body()
  if body == nil then return end
  local model = top_level_model(body:getBytes(0, body:length()))
  if model == nil then
    handle:respond({[":status"] = "400", ["content-type"] = "application/json"},
      '{"error":{"message":"no model","type":"invalid_request_error","param":"model","code":"missing_model"}}')
    return
  end
  handle:headers():replace("x-ai-eg-model", model)
  handle:clearRouteCache()
end
"#;

/// The Envoy configuration of a variant: the same listener, routes and backend for all.
fn envoy_config(
    variant: Variant,
    backend: SocketAddr,
    processor: Option<SocketAddr>,
    wasm: &Path,
) -> String {
    envoy_with_filter(&variant_filter(variant, wasm), backend, processor)
}

/// The HTTP filter (YAML at indent 0) a variant puts before the router.
fn variant_filter(variant: Variant, wasm: &Path) -> String {
    match variant {
        Variant::Header => String::new(),
        Variant::AiGateway | Variant::LiteLlm => unreachable!("{} runs no Envoy of ours", variant.name()),
        Variant::Wasm => http_filter(wasm, "{}"),
        Variant::WasmFloor => http_filter(
            wasm,
            r#"{"header":"x-not-routed","paths":["/scanned-nowhere"]}"#,
        ),
        Variant::Lua => format!(
            "- name: envoy.filters.http.lua\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n    default_source_code:\n      inline_string: |\n{}",
            indent(LUA, 8)
        ),
        Variant::ExtProc => r#"- name: envoy.filters.http.ext_proc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
    grpc_service:
      envoy_grpc: { cluster_name: processor, authority: processor }
      timeout: 5s
    processing_mode:
      request_header_mode: SEND
      response_header_mode: SKIP
      request_body_mode: BUFFERED
      response_body_mode: NONE
"#
        .to_owned(),
    }
}

/// The benchmark's Envoy configuration with `filter` (YAML at indent 0) before the router.
pub fn envoy_with_filter(
    filter: &str,
    backend: SocketAddr,
    processor: Option<SocketAddr>,
) -> String {
    let routes: String = MODELS
        .iter()
        .map(|m| {
            format!(
                "- match: {{ prefix: /, headers: [{{ name: x-ai-eg-model, string_match: {{ exact: \"{m}\" }} }}] }}\n  route: {{ cluster: backend, timeout: 60s }}\n"
            )
        })
        .collect();
    let processor_cluster = processor.map_or(String::new(), |addr| {
        testkit::envoy::grpc_cluster("processor", addr.port())
    });
    let head = testkit::envoy::listener_head("bench", Some(9_437_184), filter);
    format!(
        r#"{head}{routes}              - match: {{ prefix: / }}
                direct_response: {{ status: 404 }}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
{processor_cluster}"#,
        routes = indent(&routes, 14),
        port = backend.port(),
    )
}

/// A running proxy of one variant, and the processes whose CPU it costs.
pub struct Proxy {
    pub url: String,
    /// Where its listener is; the path is always /v1/chat/completions.
    pub addr: SocketAddr,
    pub pids: Vec<u32>,
    /// The Envoy we configured, for the filter's stats.
    pub envoy: Option<Envoy>,
    /// The admin interface of the variant's Envoy (ours or Envoy AI Gateway's).
    admin: Option<SocketAddr>,
    processes: Vec<Process>,
}

impl Proxy {
    /// Waits until Envoy has no request in flight (LiteLLM exposes no such gauge).
    pub fn wait_idle(&self) {
        let Some(admin) = self.admin else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while active_requests(admin) > 0 {
            assert!(Instant::now() < deadline, "Envoy still busy after 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // aigw stops its Envoy on SIGTERM within a second; killed, it leaves it to the kernel.
        for process in &mut self.processes {
            process.terminate(Duration::from_secs(10));
        }
    }
}

/// Requests in flight on every HTTP connection manager of the Envoy at `admin`.
fn active_requests(admin: SocketAddr) -> u64 {
    let (_, body) =
        get(admin, "/stats?filter=downstream_rq_active$&format=json").expect("admin stats");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats json");
    stats["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("http.") && !n.starts_with("http.admin."))
        })
        .filter_map(|s| s["value"].as_u64())
        .sum()
}

/// Envoy AI Gateway: `aigw run` with benches/gateway/aigw.yaml, its Envoy the PyPI one.
fn start_ai_gateway(backend: SocketAddr, tools: &Tools, dir: &Path) -> Proxy {
    let home = dir.join("aigw");
    let versions = home.join("data/envoy-versions/1.40.0/bin");
    std::fs::create_dir_all(&versions).unwrap();
    let envoy = versions.join("envoy");
    if !envoy.exists() {
        std::os::unix::fs::symlink(&tools.envoy, &envoy).unwrap();
    }
    let port = free_port();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gateway/aigw.yaml");
    let mut process = Process::spawn(
        Command::new(&tools.aigw)
            .arg("run")
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("AIGW_DATA_HOME", home.join("data"))
            .env("AIGW_CONFIG_HOME", home.join("config"))
            .env("AIGW_STATE_HOME", home.join("state"))
            .env("AIGW_RUNTIME_DIR", home.join("runtime"))
            .env("AIGW_LISTEN_PORT", port.to_string())
            .env("BACKEND_PORT", backend.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    // aigw says on stderr when its Envoy is ready; the rest of its log goes to a file.
    let stderr = process.take_stderr().expect("piped stderr");
    let log = dir.join("aigw.log");
    let (ready, listening) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(log).unwrap();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("Envoy AI Gateway listening on") {
                let _ = ready.send(line.clone());
            }
            let _ = std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes());
        }
    });
    // Its Envoy Gateway's fixed ports taken by another one make it wait forever, silently.
    let line = listening
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "aigw not ready within 120 s; see {}",
                dir.join("aigw.log").display()
            )
        });
    let admin_port: u16 = line
        .rsplit("admin http://localhost:")
        .next()
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no admin port in {line:?}"));
    Proxy {
        url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        // The external processor runs inside aigw; Envoy is its child, counted with it.
        pids: vec![process.id()],
        envoy: None,
        admin: Some(SocketAddr::from(([127, 0, 0, 1], admin_port))),
        processes: vec![process],
    }
}

/// Envoy with this filter under `plugin_config`, in front of `backend`.
pub fn start_filter(backend: SocketAddr, wasm: &Path, plugin_config: &str) -> Proxy {
    let envoy = Envoy::launch(&envoy_with_filter(
        &http_filter(wasm, plugin_config),
        backend,
        None,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    Proxy {
        url: format!("http://{}/v1/chat/completions", envoy.listener),
        addr: envoy.listener,
        pids: vec![envoy.pid()],
        admin: Some(envoy.admin),
        envoy: Some(envoy),
        processes: Vec::new(),
    }
}

pub fn start_proxy(variant: Variant, backend: SocketAddr, tools: &Tools, dir: &Path) -> Proxy {
    if variant == Variant::AiGateway {
        return start_ai_gateway(backend, tools, dir);
    }
    if variant == Variant::LiteLlm {
        let config = dir.join("litellm.yaml");
        let models: String = MODELS
            .iter()
            .map(|m| format!("- model_name: \"{m}\"\n  litellm_params:\n    model: \"openai/{m}\"\n    api_base: http://{backend}/v1\n    api_key: none\n"))
            .collect();
        std::fs::write(
            &config,
            format!("model_list:\n{models}litellm_settings:\n  telemetry: false\n"),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(&tools.litellm)
            .args(["--config"])
            .arg(&config)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--num_workers",
                "1",
            ])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .env("NO_PROXY", "*")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("litellm.log")).unwrap())
            .spawn()
            .expect("start litellm");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_http_ok(addr, "/health/liveliness", Duration::from_secs(90)).unwrap();
        return Proxy {
            url: format!("http://{addr}/v1/chat/completions"),
            addr,
            pids: vec![child.id()],
            envoy: None,
            admin: None,
            processes: vec![Process::from(child)],
        };
    }
    let mut processes = Vec::new();
    let mut pids = Vec::new();
    let processor = (variant == Variant::ExtProc).then(|| {
        let (process, addr) = spawn_listening(
            Command::new(&tools.body_router).args(["--port", "0"]),
            "listening on",
        )
        .unwrap();
        pids.push(process.id());
        processes.push(process);
        addr
    });
    let envoy = Envoy::launch(&envoy_config(variant, backend, processor, &tools.wasm))
        .unwrap_or_else(|e| panic!("{e}"));
    pids.push(envoy.pid());
    Proxy {
        url: format!("http://{}/v1/chat/completions", envoy.listener),
        addr: envoy.listener,
        pids,
        admin: Some(envoy.admin),
        envoy: Some(envoy),
        processes,
    }
}
