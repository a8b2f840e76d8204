//! `ext-proc-body-router --port PORT [--host HOST]`: the external-processor model router
//! (see `llm_sim::body_router`), for the benchmarks' ext_proc variant.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|at| args.get(at + 1))
            .cloned()
    };
    let Some(port) = value("--port").and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: ext-proc-body-router --port PORT [--host HOST]");
        return ExitCode::from(2);
    };
    let host = value("--host").unwrap_or_else(|| "127.0.0.1".to_owned());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("ext-proc-body-router: cannot listen on {host}:{port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = llm_sim::body_router::start(listener).expect("listener address");
        println!("ext-proc-body-router: listening on {addr}");
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}
