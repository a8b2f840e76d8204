//! `local-gateway`: what `./build.sh run` runs. Starts the scenario's backends on the ports
//! envoy.yaml names, then Envoy with envoy.yaml, waits until both answer, prints what to try,
//! and stops everything on Ctrl-C (or when Envoy exits).
//!
//! local-gateway --envoy PATH

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;
use testkit::process::{wait_http_ok, Process};
use testkit::scenario::{BACKENDS, MODELS};

const USAGE: &str = "usage: local-gateway --envoy PATH";
const ADMIN: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);
const LISTENER: &str = "http://127.0.0.1:10000";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut envoy = None;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--envoy", Some(path)) => envoy = Some(path),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(envoy) = envoy else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(&envoy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("local-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(envoy: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let _pools = runtime.block_on(async {
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
                    "backend {} ({}) on http://{}",
                    replica.id, backend.model, replica.addr
                );
            }
            pools.push(pool);
        }
        Ok::<_, String>(pools)
    })?;
    let mut envoy = Process::spawn(
        Command::new(envoy)
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
