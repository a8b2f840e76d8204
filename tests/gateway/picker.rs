//! The endpoint picker in Envoy: envoy.yaml's pools, the filter picking a replica from the
//! metrics its singleton polls (llm-sim's `/metrics`, which each case sets) and from the
//! prompt's prefix blocks, the pool clusters' override_host policy dialling the pick.

use crate::World;
use bytes::Bytes;
use llm_sim::{Metrics, Replica, REPLICA_HEADER};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::client::{Protocol, Reply};
use testkit::envoy::{Envoy, LocalGateway};
use testkit::scenario::{LLAMA, PLAIN};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    a_replica_with_a_long_queue_or_a_full_kv_cache_is_avoided,
    requests_sharing_a_long_prefix_stay_on_one_replica_while_others_spread,
    a_worker_meeting_a_group_follows_where_another_worker_sent_it,
    a_replica_whose_metrics_fail_is_avoided_and_none_left_is_a_json_503,
    a_replica_refusing_connections_is_retried_on_the_next_of_the_pick,
    a_spoofed_destination_header_is_ignored,
    replicas_see_one_metrics_poll_per_period_whatever_the_workers,
    sheddable_requests_to_a_saturated_pool_get_429,
);

const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// The pool envoy.yaml gives [`LLAMA`].
const POOL: &str = "vllm-llama3-8b-instruct";
/// The metrics singleton's period in envoy.yaml (the default).
const PERIOD: Duration = Duration::from_millis(50);

fn fixed(waiting: u32, kv_cache_usage: f64) -> Metrics {
    Metrics::Fixed {
        waiting,
        kv_cache_usage,
    }
}

/// What the replicas report while it lives; live metrics again when dropped.
struct SetMetrics<'a>(&'a [Arc<Replica>]);

impl<'a> SetMetrics<'a> {
    fn new(replicas: &'a [Arc<Replica>], metrics: &[Metrics]) -> Self {
        for (replica, metrics) in replicas.iter().zip(metrics) {
            replica.set_metrics(*metrics);
        }
        Self(replicas)
    }
}

impl Drop for SetMetrics<'_> {
    fn drop(&mut self) {
        self.0.iter().for_each(|r| r.set_metrics(Metrics::Live));
    }
}

fn llama_replicas(world: &World) -> &[Arc<Replica>] {
    &world.backends.pool_of(LLAMA).replicas
}

/// Waits until every replica has answered `polls` more metrics polls: by then the singleton
/// has published what they report now, and the workers' timers (one period) have copied it.
fn wait_polled(replicas: &[Arc<Replica>], polls: usize) -> Outcome {
    let start: Vec<usize> = replicas.iter().map(|r| r.metrics_polls()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while replicas
        .iter()
        .zip(&start)
        .any(|(replica, start)| replica.metrics_polls() < start + polls)
    {
        ensure!(
            Instant::now() < deadline,
            "the replicas were not polled {polls} times within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The picker's stat `model_router.picker.<metric>` of one endpoint of the llama pool.
fn endpoint_stat(metric: &str, replica: &Replica) -> String {
    format!(
        "wasmcustom.model_router.picker.{metric}.pool={POOL}.endpoint={}",
        replica.addr
    )
}

fn chat(model: &str, system: &str, question: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": question}]})
}

/// The replica that answered.
fn served_by(reply: &Reply) -> Result<String, String> {
    ensure!(
        reply.status == 200,
        "status {}: {}",
        reply.status,
        reply.text()
    );
    reply
        .header(REPLICA_HEADER)
        .map(str::to_owned)
        .ok_or_else(|| format!("no {REPLICA_HEADER} in the answer"))
}

/// Sends a llama chat to another gateway than the shared one.
fn chat_at(
    world: &World,
    envoy: &Envoy,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let (reply, _) = world.exchange_at(
        envoy.listener,
        Protocol::Http1,
        "POST",
        "/v1/chat/completions",
        headers,
        vec![Bytes::from(body.to_string())],
    )?;
    Ok(reply)
}

fn a_replica_with_a_long_queue_or_a_full_kv_cache_is_avoided(world: &World) -> Outcome {
    let replicas = llama_replicas(world);
    let _metrics = SetMetrics::new(replicas, &[fixed(20, 0.1), fixed(0, 0.99), fixed(0, 0.1)]);
    wait_polled(replicas, 4)?;
    let picks = endpoint_stat("picks", &replicas[2]);
    let before = world.envoy.stat(&picks);
    for n in 0..12 {
        let (reply, tag) = world.chat(&chat(LLAMA, "Be brief.", &format!("Question {n}?")))?;
        world.expect_routed(&reply, &tag, LLAMA)?;
        let replica = served_by(&reply)?;
        ensure!(
            replica == replicas[2].id,
            "request {n} went to {replica}, not to the only replica with a short queue and \
             a free KV cache ({})",
            replicas[2].id
        );
    }
    world.envoy.wait_stat(&picks, before + 12)?;
    // The access log names the pick beside the host Envoy dialled.
    let address = replicas[2].addr;
    let line = world.envoy.wait_access_log(&format!("picked={address} "))?;
    ensure!(
        line.contains(&format!("upstream={POOL}/{address} ")),
        "picked and dialled hosts differ: {line}"
    );
    Ok(())
}

fn requests_sharing_a_long_prefix_stay_on_one_replica_while_others_spread(
    world: &World,
) -> Outcome {
    let replicas = llama_replicas(world);
    // Equal loads: only the prompts tell the replicas apart.
    let _metrics = SetMetrics::new(replicas, &[fixed(0, 0.0); 3]);
    wait_polled(replicas, 4)?;
    let matched = format!("wasmcustom.model_router.picker.prefix_blocks_matched.pool={POOL}");
    let matched_before = world.envoy.stat(&matched);
    // About 2 KiB of system prompt: 33 blocks of 64 bytes with the chat template.
    let system =
        "You are the support assistant of a hardware shop; answer in two lines. ".repeat(30);
    let mut group = HashSet::new();
    for n in 0..8 {
        let (reply, _) = world.chat(&chat(LLAMA, &system, &format!("Question {n}?")))?;
        group.insert(served_by(&reply)?);
    }
    ensure!(
        group.len() == 1,
        "a shared 2 KiB system prompt went to {group:?}"
    );
    let mut others = HashSet::new();
    for n in 0..12 {
        let own = format!("Assistant number {n}: {system}");
        let (reply, _) = world.chat(&chat(LLAMA, &own, "Question?"))?;
        others.insert(served_by(&reply)?);
    }
    ensure!(
        others.len() >= 2,
        "12 prompts sharing no prefix all went to {others:?}"
    );
    // The group's requests after the first on each of the two workers (each keeps its own
    // index) held at least the system prompt's 33 blocks.
    world.envoy.wait_stat(&matched, matched_before + 6 * 33)
}

fn a_worker_meeting_a_group_follows_where_another_worker_sent_it(world: &World) -> Outcome {
    let replicas = llama_replicas(world);
    let system = format!("Group {}: summarise the report in one line. ", world.tag()).repeat(40);
    // The group's first request goes to replica 0, then the singleton records where it went.
    let announced = "wasmcustom.model_router.picker.new_groups";
    let before = world.envoy.stat(announced);
    let mut metrics = SetMetrics::new(replicas, &[fixed(0, 0.0), fixed(3, 0.5), fixed(3, 0.5)]);
    wait_polled(replicas, 4)?;
    let (reply, _) = world.chat(&chat(LLAMA, &system, "First?"))?;
    let first = served_by(&reply)?;
    ensure!(
        first == replicas[0].id,
        "the group's first request went to {first}"
    );
    world.envoy.wait_stat(announced, before + 1)?;
    // Now replica 2 is the least loaded: a worker that did not know the group would send it
    // there. Over six connections both workers serve the group (or, once in 32 runs, one).
    drop(metrics);
    metrics = SetMetrics::new(replicas, &[fixed(2, 0.3), fixed(3, 0.5), fixed(0, 0.1)]);
    wait_polled(replicas, 4)?;
    for n in 0..6 {
        let (reply, _) = world.chat(&chat(LLAMA, &system, &format!("Question {n}?")))?;
        let replica = served_by(&reply)?;
        ensure!(
            replica == first,
            "request {n} of the group went to {replica}, not to {first} where it went first"
        );
    }
    drop(metrics);
    Ok(())
}

fn a_replica_whose_metrics_fail_is_avoided_and_none_left_is_a_json_503(world: &World) -> Outcome {
    let replicas = llama_replicas(world);
    let retries = "cluster.vllm-llama3-8b-instruct.upstream_rq_retry";
    let checked = (|| {
        let failures = endpoint_stat("metrics_fetch_failures", &replicas[0]);
        let before = world.envoy.stat(&failures);
        replicas[0].stop();
        world.envoy.wait_stat(&failures, before + 4)?;
        let retried = world.envoy.stat(retries);
        for n in 0..15 {
            let (reply, tag) = world.chat(&chat(LLAMA, "Be brief.", &format!("Q{n}?")))?;
            world.expect_routed(&reply, &tag, LLAMA)?;
        }
        ensure!(
            world.envoy.stat(retries) == retried,
            "a request was sent to the stopped replica and retried: it was picked"
        );
        // Every replica down: Envoy's 503, in the OpenAI error shape.
        for replica in &replicas[1..] {
            let failures = endpoint_stat("metrics_fetch_failures", replica);
            let before = world.envoy.stat(&failures);
            replica.stop();
            world.envoy.wait_stat(&failures, before + 2)?;
        }
        let (reply, _) = world.chat(&chat(LLAMA, "Be brief.", "Anyone?"))?;
        testkit::openai::expect_error(&reply, 503, "server_error", None)
    })();
    // Back up whatever happened, so that no other case meets a stopped replica (one still
    // up, when the case failed early, keeps its port: AddrInUse).
    for replica in replicas {
        match world.runtime.block_on(replica.restart()) {
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => return Err(e.to_string()),
            _ => {}
        }
    }
    checked?;
    wait_polled(replicas, 4)
}

fn a_replica_refusing_connections_is_retried_on_the_next_of_the_pick(world: &World) -> Outcome {
    let replicas = llama_replicas(world);
    // Replica 0 is the best, and its metrics stay trusted for two minutes after one poll:
    // it is picked while it refuses connections, as in the moments between a crash and the
    // next poll.
    let _metrics = SetMetrics::new(replicas, &[fixed(0, 0.0), fixed(5, 0.5), fixed(5, 0.5)]);
    let envoy = LocalGateway::new(&world.backends)?
        .edit(
            &format!(r#"{{"name": "{POOL}", "models""#),
            &format!(
                r#"{{"name": "{POOL}", "refresh_ms": 60000, "stale_after_ms": 120000, "models""#
            ),
        )?
        .start()?;
    for replica in replicas {
        envoy.wait_stat(&endpoint_stat("metrics_fetches", replica), 1)?;
    }
    let picks = endpoint_stat("picks", &replicas[0]);
    let retries = "cluster.vllm-llama3-8b-instruct.upstream_rq_retry";
    replicas[0].stop();
    let served = (|| {
        for n in 0..10 {
            let reply = chat_at(
                world,
                &envoy,
                &chat(LLAMA, "Be brief.", &format!("{n}")),
                &[],
            )?;
            let replica = served_by(&reply)?;
            ensure!(replica != replicas[0].id, "served by the stopped replica");
        }
        Ok::<_, String>(())
    })();
    world
        .runtime
        .block_on(replicas[0].restart())
        .map_err(|e| e.to_string())?;
    served?;
    let (picked, retried) = (envoy.stat(&picks), envoy.stat(retries));
    ensure!(
        picked >= 5 && retried >= picked,
        "the stopped replica was picked {picked} times and {retried} requests retried"
    );
    Ok(())
}

fn a_spoofed_destination_header_is_ignored(world: &World) -> Outcome {
    let replicas = llama_replicas(world);
    let _metrics = SetMetrics::new(replicas, &[fixed(9, 0.9), fixed(9, 0.9), fixed(0, 0.0)]);
    wait_polled(replicas, 4)?;
    let spoofed = replicas[0].addr.to_string();
    for n in 0..5 {
        let body = chat(LLAMA, "Be brief.", &format!("Spoof {n}"));
        let (reply, tag) = world.post(
            "/v1/chat/completions",
            body.to_string().as_bytes(),
            &[(DESTINATION_HEADER, &spoofed)],
        )?;
        world.expect_routed(&reply, &tag, LLAMA)?;
        ensure!(
            served_by(&reply)? == replicas[2].id,
            "the client's {DESTINATION_HEADER}: {spoofed} was obeyed"
        );
        let seen = world.seen_once(&tag)?;
        let values = seen.header_values(DESTINATION_HEADER);
        ensure!(
            values.len() == 1 && values[0].starts_with(&replicas[2].addr.to_string()),
            "the replica saw {DESTINATION_HEADER} {values:?}"
        );
    }
    // A model in no pool: the client's copy is removed, none is set.
    let body = chat(PLAIN, "Be brief.", "Spoof");
    let (reply, tag) = world.post(
        "/v1/chat/completions",
        body.to_string().as_bytes(),
        &[(DESTINATION_HEADER, &spoofed)],
    )?;
    world.expect_routed(&reply, &tag, PLAIN)?;
    let seen = world.seen_once(&tag)?;
    ensure!(
        seen.header_values(DESTINATION_HEADER).is_empty(),
        "the plain backend saw {DESTINATION_HEADER} {:?}",
        seen.header_values(DESTINATION_HEADER)
    );
    Ok(())
}

fn replicas_see_one_metrics_poll_per_period_whatever_the_workers(world: &World) -> Outcome {
    let pooled: Vec<&Arc<Replica>> = world
        .backends
        .pools
        .iter()
        .filter(|pool| pool.replicas.len() > 1)
        .flat_map(|pool| &pool.replicas)
        .collect();
    // The shared gateway runs two workers (testkit::envoy); one poller serves both.
    expect_pollers(&pooled, 1)?;
    let age = world
        .envoy
        .stat(&endpoint_stat("metrics_age_ms", &llama_replicas(world)[0]));
    ensure!(
        age < 1000,
        "the snapshot age gauge says {age} ms: older than stale_after_ms"
    );
    // A second gateway of six workers beside it adds one poller, not six.
    let six = LocalGateway::new(&world.backends)?.workers(6).start()?;
    ensure!(
        six.stat("server.concurrency") == 6,
        "the second gateway runs {} workers",
        six.stat("server.concurrency")
    );
    for replica in llama_replicas(world) {
        six.wait_stat(&endpoint_stat("metrics_fetches", replica), 1)?;
    }
    expect_pollers(&pooled, 2)
}

/// Over a window of about 40 periods, each replica is polled about `pollers` times a period:
/// more than 1.2 times that (and a poll or two at the window's edges) is a poller too many,
/// under 0.3 times that a poller missing.
fn expect_pollers(replicas: &[&Arc<Replica>], pollers: usize) -> Outcome {
    let start: Vec<usize> = replicas.iter().map(|r| r.metrics_polls()).collect();
    let started = Instant::now();
    // A measuring window, not a wait for something to happen.
    std::thread::sleep(Duration::from_secs(2));
    let periods = started.elapsed().as_secs_f64() / PERIOD.as_secs_f64();
    let expected = periods * pollers as f64;
    for (replica, start) in replicas.iter().zip(start) {
        let polls = (replica.metrics_polls() - start) as f64;
        ensure!(
            polls <= expected * 1.2 + 2.0,
            "{} was polled {polls} times in {periods:.0} periods by {pollers} Envoy(s): more than \
             once per period each",
            replica.id
        );
        ensure!(
            polls >= expected * 0.3,
            "{} was polled only {polls} times in {periods:.0} periods by {pollers} Envoy(s)",
            replica.id
        );
    }
    Ok(())
}

fn sheddable_requests_to_a_saturated_pool_get_429(world: &World) -> Outcome {
    let replicas = llama_replicas(world);
    let envoy = LocalGateway::new(&world.backends)?
        .edit(
            r#""unknown_models": "pass_through","#,
            r#""unknown_models": "pass_through", "picker": {"shedding": {"sheddable_objectives": ["batch"]}},"#,
        )?
        .start()?;
    let batch = [("x-gateway-inference-objective", "batch")];
    let body = chat(LLAMA, "Be brief.", "Later is fine.");
    // Room on every replica: a batch request is served once the metrics are in.
    let mut metrics = SetMetrics::new(replicas, &[fixed(0, 0.1); 3]);
    until(|| Ok(chat_at(world, &envoy, &body, &batch)?.status == 200))?;
    // Every replica past GIE's thresholds (queue 5, KV cache 0.8).
    drop(metrics);
    metrics = SetMetrics::new(replicas, &[fixed(6, 0.5), fixed(0, 0.9), fixed(9, 0.95)]);
    until(|| Ok(chat_at(world, &envoy, &body, &batch)?.status == 429))?;
    let (reply, tag) = world.exchange_at(
        envoy.listener,
        Protocol::Http1,
        "POST",
        "/v1/chat/completions",
        &batch,
        vec![Bytes::from(body.to_string())],
    )?;
    testkit::openai::expect_error(&reply, 429, "server_error", Some("pool_saturated"))?;
    ensure!(
        world.backends.saw(&tag).is_empty(),
        "a shed request reached a replica"
    );
    // Only sheddable requests are shed.
    served_by(&chat_at(world, &envoy, &body, &[])?)?;
    drop(metrics);
    Ok(())
}

/// Retries `check` until it holds (10 s at most): a readiness check on the gateway's behaviour.
fn until(check: impl Fn() -> Result<bool, String>) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check()? {
        ensure!(Instant::now() < deadline, "not within 10 s");
        std::thread::sleep(PERIOD);
    }
    Ok(())
}
