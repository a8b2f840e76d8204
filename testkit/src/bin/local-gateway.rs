//! `local-gateway`: what `./build.sh run` runs. Starts the scenario's backends on the ports
//! envoy.yaml names (llm-sim in this process, or one llm-d-inference-sim process per replica),
//! then Envoy with envoy.yaml, waits until both answer, prints what to try, and stops
//! everything on Ctrl-C (or when Envoy exits).
//!
//! local-gateway --envoy PATH [--backend llm-sim|llm-d --llm-d-sim PATH]

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;
use testkit::process::{wait_http_ok, Process};
use testkit::scenario::{BACKENDS, MODELS};

const USAGE: &str =
    "usage: local-gateway --envoy PATH [--backend llm-sim|llm-d] [--llm-d-sim PATH]";
const ADMIN: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);
const LISTENER: &str = "http://127.0.0.1:10000";

struct Args {
    envoy: String,
    backend: String,
    llm_d_sim: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut envoy, mut backend, mut llm_d_sim) = (None, "llm-sim".to_owned(), None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--envoy" => envoy = Some(value),
            "--backend" => backend = value,
            "--llm-d-sim" => llm_d_sim = Some(value),
            _ => return Err(USAGE.to_owned()),
        }
    }
    let envoy = envoy.ok_or(USAGE)?;
    match backend.as_str() {
        "llm-sim" => {}
        "llm-d" if llm_d_sim.is_some() => {}
        "llm-d" => return Err(format!("--backend llm-d needs --llm-d-sim\n{USAGE}")),
        other => return Err(format!("unknown backend {other:?}\n{USAGE}")),
    }
    Ok(Args {
        envoy,
        backend,
        llm_d_sim,
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("local-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The running backends, stopped when dropped.
#[derive(Default)]
struct Running {
    _llm_sim: Vec<llm_sim::Pool>,
    _llm_d: Vec<testkit::llm_d::LlmdPool>,
}

fn start_backends(args: &Args, runtime: &tokio::runtime::Runtime) -> Result<Running, String> {
    if let Some(binary) = &args.llm_d_sim {
        let mut pools = Vec::new();
        for backend in &BACKENDS {
            let pool = testkit::llm_d::LlmdPool::start(binary.as_ref(), backend, backend.ports())?;
            for replica in &pool.replicas {
                println!(
                    "backend {} ({}, llm-d-inference-sim) on http://{}",
                    replica.name, backend.model, replica.addr
                );
            }
            pools.push(pool);
        }
        return Ok(Running {
            _llm_d: pools,
            ..Running::default()
        });
    }
    runtime.block_on(async {
        let mut pools = Vec::new();
        for backend in BACKENDS {
            let mut config = llm_sim::PoolConfig::new(backend.name, &[backend.model]);
            // A server that runs for hours keeps no request log.
            config.record_requests = false;
            let pool = llm_sim::Pool::bind(
                config,
                "127.0.0.1",
                backend.first_port,
                usize::from(backend.replicas),
            )
            .await
            .map_err(|e| format!("{} on port {}: {e}", backend.name, backend.first_port))?;
            for replica in &pool.replicas {
                println!(
                    "backend {} ({}, llm-sim) on http://{}",
                    replica.id, backend.model, replica.addr
                );
            }
            pools.push(pool);
        }
        Ok(Running {
            _llm_sim: pools,
            ..Running::default()
        })
    })
}

fn run(args: &Args) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let _backends = start_backends(args, &runtime)?;
    println!("backends: {}", args.backend);
    let mut envoy = Process::spawn(
        Command::new(&args.envoy)
            .args([
                "-c",
                "envoy.yaml",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ])
            .args(["--component-log-level", "wasm:info"]),
    )?;
    wait_http_ok(SocketAddr::from(ADMIN), "/ready", Duration::from_secs(60))
        .map_err(|e| format!("Envoy did not become ready ({e}); see its log above"))?;
    println!("\nGateway ready on {LISTENER} (admin http://127.0.0.1:9901). Try:\n");
    for model in MODELS {
        println!(
            "  curl -H \"Content-Type: application/json\" -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi. Say this is a test\"}}]}}' {LISTENER}/v1/chat/completions"
        );
    }
    println!(
        "\nThe catalogue: the models, an alias (the backend gets the model's name), and audio:\n\n  \
         curl {LISTENER}/v1/models\n  \
         curl -H \"Content-Type: application/json\" -d '{{\"model\": \"gpt-4o\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}]}}' {LISTENER}/v1/chat/completions\n  \
         curl -F model=mistral -F file=@README.md {LISTENER}/v1/audio/transcriptions"
    );
    println!(
        "\nCounters: curl -s http://127.0.0.1:9901/stats | grep model_router.   Ctrl-C stops everything."
    );
    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(status) = envoy.exited() {
                        return Err(format!("Envoy exited with {status}"));
                    }
                }
            }
        }
    })
}
