//! `llm-sim`: starts the replicas of one simulated model pool.
//!
//! llm-sim --name mistral --model mistral:latest --port 18011 --replicas 3 [--host 127.0.0.1]
//!         [--ttft-ms 0] [--tpot-ms 0] [--max-num-seqs 256]

use llm_sim::{Pool, PoolConfig};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: llm-sim --name NAME --model MODEL [--model MODEL ...] --port PORT \
[--replicas N] [--host HOST] [--ttft-ms MS] [--tpot-ms MS] [--max-num-seqs N]";

struct Args {
    config: PoolConfig,
    host: String,
    port: u16,
    replicas: usize,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = PoolConfig::new("", &[]);
    // A server that runs for hours keeps no request log.
    config.record_requests = false;
    let (mut host, mut port, mut replicas) = ("127.0.0.1".to_owned(), None, 1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: {text:?} is not a number"))
        };
        match flag.as_str() {
            "--name" => config.name = value()?,
            "--model" => config.models.push(value()?),
            "--host" => host = value()?,
            "--port" => {
                port = Some(u16::try_from(number(value()?)?).map_err(|_| "--port: out of range")?)
            }
            "--replicas" => replicas = number(value()?)? as usize,
            "--ttft-ms" => config.time_to_first_token = Duration::from_millis(number(value()?)?),
            "--tpot-ms" => config.time_per_output_token = Duration::from_millis(number(value()?)?),
            "--max-num-seqs" => config.max_num_seqs = (number(value()?)? as usize).max(1),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    if config.name.is_empty() || config.models.is_empty() {
        return Err(format!(
            "--name and at least one --model are required\n{USAGE}"
        ));
    }
    let port = port.ok_or(format!("--port is required\n{USAGE}"))?;
    if replicas == 0 {
        return Err("--replicas must be at least 1".to_owned());
    }
    Ok(Args {
        config,
        host,
        port,
        replicas,
    })
}

/// glibc maps every allocation over 128 KiB on its own and unmaps it when freed, so each 1 MiB
/// request body cost its pages faulted in afresh: half of the simulator's time in the
/// benchmark, whose backend must cost less than the gateway in front of it. Large buffers are
/// kept in the heap instead and reused from request to request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_in_the_heap() {
    const LARGE: libc::c_int = 256 << 20;
    // SAFETY: mallopt only sets glibc allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE);
        libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_in_the_heap() {}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    keep_large_buffers_in_the_heap();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let pool = match Pool::bind(args.config, &args.host, args.port, args.replicas).await {
            Ok(pool) => pool,
            Err(e) => {
                eprintln!("llm-sim: cannot listen on {}:{}: {e}", args.host, args.port);
                return ExitCode::FAILURE;
            }
        };
        for replica in &pool.replicas {
            println!(
                "llm-sim: {} serving {:?} on http://{}",
                replica.id, pool.config.models, replica.addr
            );
        }
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}
