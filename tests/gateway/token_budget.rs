//! A per-model token budget enforced by Envoy's rate limit filter with the real
//! envoyproxy/ratelimit service and Redis: each request is checked against its model's budget
//! (a descriptor that adds nothing), and charged, once its stream is done, the total tokens
//! the filter read from the answer (`hits_addend` formatted from its filter state). The first
//! request after the budget is spent gets 429; other models keep theirs.

use crate::gen_ai::reported;
use crate::usage::{api_body, ask};
use crate::World;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::envoy::{root, Envoy, LocalGateway};
use testkit::process::{free_port, required_file, wait_http_ok, Process};
use testkit::scenario::{MISTRAL, PLAIN};
use testkit::{ensure, Outcome};

testkit::cases!(World;
token_budgets_charge_the_answers_tokens_and_refuse_once_spent);

/// The rate limit filter, after the model-router filter (it needs the routing header).
pub const RATE_LIMIT_FILTER: &str = r#"          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: model-router
              # A rate limit service that is down refuses nothing.
              failure_mode_deny: false
              rate_limit_service:
                transport_api_version: V3
                grpc_service: { envoy_grpc: { cluster_name: ratelimit } }
"#;

/// A model route's token budget: checked before the request, charged when the stream is done.
/// In the rate limit filter's per-route configuration: its `rate_limits` honour `hits_addend`
/// and `apply_on_stream_done` (a route's own `rate_limits` ignore `hits_addend` in Envoy 1.40).
pub const TOKEN_BUDGET: &str = r#"                typed_per_filter_config:
                  envoy.filters.http.ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute
                    rate_limits:
                    # Before the request goes upstream: is the model's budget spent? Adds nothing.
                    - actions: [{ request_headers: { header_name: x-ai-eg-model, descriptor_key: model } }]
                      hits_addend: { number: 0 }
                    # When the stream is done: charge the tokens the answer reported.
                    - actions: [{ request_headers: { header_name: x-ai-eg-model, descriptor_key: model } }]
                      hits_addend: { format: "%FILTER_STATE(wasm.model_router.total_tokens:PLAIN)%" }
                      apply_on_stream_done: true
"#;

/// Redis, envoyproxy/ratelimit with ratelimit/config.yaml (the budget of `MISTRAL` set to
/// `budget` tokens an hour), and envoy.yaml with the rate limit filter and the budgets.
struct Budgets {
    redis_port: u16,
    _redis: Process,
    _ratelimit: Process,
    envoy: Envoy,
}

fn start(world: &World, budget: u64) -> Result<Budgets, String> {
    let dir = std::env::temp_dir().join(format!(
        "model-router-ratelimit-{}-{}",
        std::process::id(),
        world.tag()
    ));
    let config_dir = dir.join("ratelimit/config");
    std::fs::create_dir_all(&config_dir).map_err(|e| e.to_string())?;
    let config =
        std::fs::read_to_string(root().join("ratelimit/config.yaml")).map_err(|e| e.to_string())?;
    let mistral_budget =
        "value: mistral:latest\n  rate_limit: { unit: hour, requests_per_unit: 200000 }";
    ensure!(
        config.contains(mistral_budget),
        "ratelimit/config.yaml changed: {config}"
    );
    let config = config.replace(
        mistral_budget,
        &format!(
            "value: mistral:latest\n  rate_limit: {{ unit: hour, requests_per_unit: {budget} }}"
        ),
    );
    std::fs::write(config_dir.join("config.yaml"), config).map_err(|e| e.to_string())?;

    let redis_port = free_port();
    let redis = Process::spawn(
        Command::new(required_file("REDIS_SERVER_BIN"))
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_redis(redis_port)?;

    let (http_port, grpc_port, debug_port) = (free_port(), free_port(), free_port());
    let ratelimit = Process::spawn(
        Command::new(required_file("RATELIMIT_BIN"))
            .env("USE_STATSD", "false")
            .env("LOG_LEVEL", "warn")
            .env("REDIS_SOCKET_TYPE", "tcp")
            .env("REDIS_URL", format!("127.0.0.1:{redis_port}"))
            .env("RUNTIME_ROOT", &dir)
            .env("RUNTIME_SUBDIRECTORY", "ratelimit")
            .env("RUNTIME_WATCH_ROOT", "false")
            .env("HOST", "127.0.0.1")
            .env("PORT", http_port.to_string())
            .env("GRPC_HOST", "127.0.0.1")
            .env("GRPC_PORT", grpc_port.to_string())
            .env("DEBUG_HOST", "127.0.0.1")
            .env("DEBUG_PORT", debug_port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ratelimit.log")).map_err(|e| e.to_string())?),
    )?;
    wait_http_ok(
        SocketAddr::from(([127, 0, 0, 1], http_port)),
        "/healthcheck",
        Duration::from_secs(30),
    )?;

    let cluster = format!(
        "  clusters:\n{}",
        testkit::envoy::grpc_cluster("ratelimit", grpc_port)
    );
    let route = |cluster: &str, retry: &str| {
        format!("                route: {{ cluster: {cluster}, timeout: 300s, retry_policy: {retry} }}\n{TOKEN_BUDGET}")
    };
    let envoy = {
        let _guard = world.runtime.enter();
        LocalGateway::new(&world.backends)?
            .edit(
                "          - name: envoy.filters.http.router\n",
                &format!("{RATE_LIMIT_FILTER}          - name: envoy.filters.http.router\n"),
            )?
            .edit(
                "                route: { cluster: mistral, timeout: 300s, retry_policy: *retry_elsewhere }\n",
                &route("mistral", "*retry_elsewhere"),
            )?
            .edit(
                "                route: { cluster: some-cool-self-hosted-model, timeout: 300s, retry_policy: *retry_elsewhere }\n",
                &route("some-cool-self-hosted-model", "*retry_elsewhere"),
            )?
            .edit("  clusters:\n", &cluster)?
            // The budget charges what the filter publishes as total_tokens.
            .plugin_config(r#"{"response": {"filter_state": ["total_tokens"]}}"#)?
            .start()?
    };
    Ok(Budgets {
        redis_port,
        _redis: redis,
        _ratelimit: ratelimit,
        envoy,
    })
}

fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output =
        Command::new(Path::new(&required_file("REDIS_SERVER_BIN")).with_file_name("redis-cli"))
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn wait_redis(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_cli(port, &["ping"])? != "PONG" {
        ensure!(
            Instant::now() < deadline,
            "redis did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Budgets {
    /// What Redis holds against a model's budget this hour.
    fn spent(&self, model: &str) -> Result<u64, String> {
        let keys = redis_cli(
            self.redis_port,
            &[
                "--scan",
                "--pattern",
                &format!("model-router_model_{model}_*"),
            ],
        )?;
        let mut spent = 0;
        for key in keys.lines() {
            spent += redis_cli(self.redis_port, &["get", key])?
                .parse::<u64>()
                .unwrap_or(0);
        }
        Ok(spent)
    }

    /// Waits for every call to the rate limit service so far (checks and stream-done charges,
    /// which Envoy sends after the client has its answer) to have completed.
    fn wait_rate_limit_calls(&self, calls: u64) -> Result<(), String> {
        self.envoy
            .wait_stat("cluster.ratelimit.upstream_rq_completed", calls)
    }
}

fn token_budgets_charge_the_answers_tokens_and_refuse_once_spent(world: &World) -> Outcome {
    let budget = 60;
    let budgets = start(world, budget)?;
    let path = "/v1/chat/completions";
    let (mut answered, mut per_answer, mut calls) = (0u64, None, 0);
    let refused_at = loop {
        // JSON and streamed answers alike are charged what they report.
        let stream = answered % 2 == 1;
        let (reply, _) = ask(
            world,
            &budgets.envoy,
            path,
            &api_body(path, MISTRAL, stream),
            &[],
        )?;
        if reply.status == 429 {
            // Refused by the check; nothing to charge, so no second call.
            calls += 1;
            break answered + 1;
        }
        calls += 2;
        ensure!(
            reply.status == 200,
            "status {} {}",
            reply.status,
            reply.text()
        );
        let answer = reported(path, &reply.body)?;
        let total = answer.input + answer.output;
        ensure!(
            *per_answer.get_or_insert(total) == total,
            "answers of {total} and {per_answer:?} tokens"
        );
        answered += 1;
        budgets.wait_rate_limit_calls(calls)?;
        ensure!(
            budgets.spent(MISTRAL)? == answered * total,
            "after {answered} answers of {total} tokens Redis holds {}",
            budgets.spent(MISTRAL)?
        );
        ensure!(answered < 100, "the budget never ran out");
    };
    let per_answer = per_answer.ok_or("the first request was refused")?;
    // A request is let through while the budget spent before it is within the budget.
    let expected = budget / per_answer + 2;
    ensure!(
        refused_at == expected,
        "the first refusal came at request {refused_at}, expected {expected} ({per_answer} tokens an answer, budget {budget})"
    );
    // The refusal charged nothing, and another model's budget is untouched.
    ensure!(
        budgets.spent(MISTRAL)? == answered * per_answer,
        "the refused request was charged"
    );
    let (reply, _) = ask(
        world,
        &budgets.envoy,
        path,
        &api_body(path, PLAIN, false),
        &[],
    )?;
    ensure!(reply.status == 200, "{PLAIN}: status {}", reply.status);
    let answer = reported(path, &reply.body)?;
    budgets.wait_rate_limit_calls(calls + 2)?;
    ensure!(
        budgets.spent(PLAIN)? == answer.input + answer.output,
        "{PLAIN}: Redis holds {}",
        budgets.spent(PLAIN)?
    );
    Ok(())
}
