//! The picker as a worker runs it: snapshots in, decisions out.

use super::config::{validate_pools, PoolConfig, Shedding};
use super::prompt::block_hashes;
use super::snapshot::Reading;
use super::*;

const ENDPOINTS: [&str; 3] = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

fn picker(shedding: Option<Shedding>) -> Picker {
    let config: PoolConfig = serde_json::from_value(serde_json::json!({
        "name": "pool",
        "models": ["llama", "llama-lora"],
        "endpoints": ENDPOINTS,
    }))
    .unwrap();
    let pools = validate_pools(vec![config], |_| Ok(())).unwrap();
    Picker::new(pools, shedding, 99)
}

/// A snapshot of the three endpoints: (queue, kv-cache usage, fetched at, ok).
fn snapshot(readings: [(u32, f64, u64, bool); 3]) -> Snapshot {
    Snapshot {
        endpoints: ENDPOINTS
            .iter()
            .zip(readings)
            .map(|(endpoint, (queue, kv_cache, fetched_at_ms, ok))| Reading {
                pool: "pool".into(),
                endpoint: (*endpoint).into(),
                fetched_at_ms,
                ok,
                queue,
                kv_cache,
            })
            .collect(),
        hints_version: 0,
    }
}

fn hashes(text: &str) -> Vec<u64> {
    block_hashes(b"llama", text.as_bytes(), 64, 256)
}

#[test]
fn models_find_their_pool() {
    let picker = picker(None);
    assert_eq!(picker.pool_of(b"llama-lora"), Some(0));
    assert_eq!(picker.pool_of(b"mistral"), None);
}

#[test]
fn a_long_queue_or_a_full_kv_cache_is_avoided() {
    // Each pick with metrics fetched after the one before (so they show it).
    let mut picker = picker(None);
    for (avoided, readings) in [
        (0, [(10, 0.1), (0, 0.1), (0, 0.1)]),
        (1, [(0, 0.1), (0, 1.0), (0, 0.1)]),
    ] {
        for n in 0..50 {
            let at = 1000 + n * 50;
            let fetched = readings.map(|(queue, kv)| (queue, kv, at, true));
            picker.refresh(Some(&snapshot(fetched)), at);
            assert_ne!(picker.pick(0, &[]).order[0], avoided);
        }
    }
}

#[test]
fn requests_sharing_a_prefix_stay_together_while_others_spread() {
    let mut picker = picker(None);
    picker.refresh(Some(&snapshot([(0, 0.0, 1000, true); 3])), 1000);
    let system = "You are a careful assistant who answers in French. ".repeat(40);
    let first = picker.pick(0, &hashes(&format!("{system}Question one?")));
    assert_eq!(first.matched_blocks, 0);
    for n in 0..20 {
        let decision = picker.pick(0, &hashes(&format!("{system}Question {n}?")));
        assert_eq!(decision.order[0], first.order[0]);
        assert!(
            decision.matched_blocks * 10 >= decision.total_blocks * 9,
            "{decision:?}"
        );
    }
    let mut seen = std::collections::HashSet::new();
    for n in 0..60 {
        seen.insert(
            picker
                .pick(0, &hashes(&format!("{n} unrelated {}", "x".repeat(200))))
                .order[0],
        );
    }
    assert_eq!(
        seen.len(),
        3,
        "prompts without a shared prefix use every endpoint"
    );
}

#[test]
fn picks_within_one_refresh_period_spread_over_the_endpoints() {
    let unrelated = |n: usize| hashes(&format!("{n} unrelated {}", "y".repeat(200)));
    // Endpoint 0 looks least loaded in a snapshot fetched just before the picks.
    let readings = [
        (0, 0.1, 1000, true),
        (0, 0.2, 1000, true),
        (0, 0.3, 1000, true),
    ];
    let mut picker = picker(None);
    picker.refresh(Some(&snapshot(readings)), 1000);
    let firsts: Vec<usize> = (0..3)
        .map(|n| picker.pick(0, &unrelated(n)).order[0])
        .collect();
    assert_eq!(
        firsts,
        [0, 1, 2],
        "each pick counts as waiting where it went"
    );
    // A refresh that brings no newer fetch keeps counting them.
    picker.refresh(Some(&snapshot(readings)), 1050);
    assert_eq!(picker.pools[0].queue(0), 1);
    // Metrics fetched after the picks show them: the picks no longer count.
    let later = readings.map(|(q, kv, _, ok)| (q, kv, 1060, ok));
    picker.refresh(Some(&snapshot(later)), 1100);
    assert_eq!(picker.pick(0, &unrelated(3)).order[0], 0);

    // Configured off, the queue scorer is GIE's: every pick in the period herds onto one.
    let config: PoolConfig = serde_json::from_value(serde_json::json!({
        "name": "pool", "models": ["llama"], "endpoints": ENDPOINTS, "count_unseen_picks": false,
    }))
    .unwrap();
    let mut gie = Picker::new(validate_pools(vec![config], |_| Ok(())).unwrap(), None, 99);
    gie.refresh(Some(&snapshot(readings)), 1000);
    let herded: Vec<usize> = (0..3)
        .map(|n| gie.pick(0, &unrelated(n)).order[0])
        .collect();
    assert_eq!(herded, [0, 0, 0]);
}

#[test]
fn workers_with_their_own_index_agree_on_a_new_prefix_group_when_loads_tie() {
    // Two workers: each sees the group for the first time, with the same snapshot.
    let system = "Summarise the following contract clause by clause. ".repeat(20);
    for group in 0..30 {
        let prompt = hashes(&format!("{group} {system}"));
        let picks: Vec<usize> = (0..2)
            .map(|_| {
                let mut worker = picker(None);
                worker.refresh(Some(&snapshot([(1, 0.2, 1000, true); 3])), 1000);
                worker.pick(0, &prompt).order[0]
            })
            .collect();
        assert_eq!(picks[0], picks[1], "group {group}");
    }
}

#[test]
fn a_worker_follows_where_another_sent_a_new_group() {
    let system = "Translate the user's text into formal German, keeping names. ".repeat(20);
    let prompt = hashes(&format!("{system}First text."));
    // Worker A meets the group first, with endpoint 1 the least loaded.
    let mut a = picker(None);
    a.refresh(
        Some(&snapshot([
            (4, 0.5, 1000, true),
            (0, 0.1, 1000, true),
            (4, 0.5, 1000, true),
        ])),
        1000,
    );
    let first = a.pick(0, &prompt);
    let group = first.new_group.expect("a new group is announced");
    assert_eq!((group.endpoint, group.first_block), (1, prompt[0]));
    // Its next request of the group matches its own index: nothing to announce.
    assert_eq!(
        a.pick(0, &hashes(&format!("{system}Second text.")))
            .new_group,
        None
    );
    // Worker B, by now seeing endpoint 2 as the least loaded, follows the hint.
    let mut b = picker(None);
    b.refresh(
        Some(&snapshot([
            (4, 0.5, 1000, true),
            (2, 0.3, 1000, true),
            (0, 0.1, 1000, true),
        ])),
        1000,
    );
    let mut table = hints::GroupHints::default();
    table.record(group);
    assert!(b.take_hints(table.as_bytes()));
    let followed = b.pick(0, &hashes(&format!("{system}Third text.")));
    assert_eq!(followed.order[0], 1);
    assert_eq!(followed.new_group, None);
    // Without the hint it would have gone to endpoint 2.
    let mut c = picker(None);
    c.refresh(
        Some(&snapshot([
            (4, 0.5, 1000, true),
            (2, 0.3, 1000, true),
            (0, 0.1, 1000, true),
        ])),
        1000,
    );
    assert_eq!(
        c.pick(0, &hashes(&format!("{system}Third text."))).order[0],
        2
    );
}

#[test]
fn stale_or_failed_metrics_are_scored_last_and_none_means_no_pick() {
    let mut picker = picker(None);
    // Endpoint 0 failed its last fetch, endpoint 1's metrics are 2 s old (stale after 1 s).
    picker.refresh(
        Some(&snapshot([
            (0, 0.0, 10_000, false),
            (0, 0.0, 8_000, true),
            (9, 0.9, 10_000, true),
        ])),
        10_000,
    );
    for _ in 0..20 {
        let decision = picker.pick(0, &[]);
        assert_eq!(decision.order[0], 2);
        assert_eq!(decision.order.len(), 3);
    }
    // They age without a new snapshot.
    picker.refresh(None, 11_500);
    assert!(!picker.has_fresh(0));
    assert_eq!(
        picker.pick(0, &hashes(&"y".repeat(300))).order,
        Vec::<usize>::new()
    );
    // Never fetched: nothing to trust.
    let mut fresh = super::tests::picker(None);
    fresh.refresh(None, 5);
    assert!(fresh.pick(0, &[]).order.is_empty());
}

#[test]
fn the_destination_lists_the_order() {
    let mut picker = picker(None);
    picker.refresh(
        Some(&snapshot([
            (3, 0.0, 1000, true),
            (0, 0.0, 1000, true),
            (1, 0.0, 1000, false),
        ])),
        1000,
    );
    let decision = picker.pick(0, &[]);
    assert_eq!(decision.order, [1, 0, 2]);
    assert_eq!(
        picker.destination(0, &decision),
        "10.0.0.2:8000,10.0.0.1:8000,10.0.0.3:8000"
    );
}

#[test]
fn saturation_sheds_only_what_is_configured() {
    let shedding: Shedding = serde_json::from_value(serde_json::json!({
        "sheddable_objectives": ["batch"],
    }))
    .unwrap();
    let mut picker = picker(Some(shedding));
    assert!(picker.sheddable(b"batch") && !picker.sheddable(b"chat"));
    // Every endpoint over a threshold (queue > 5 or kv > 0.8), or stale past 200 ms.
    picker.refresh(
        Some(&snapshot([
            (6, 0.0, 1000, true),
            (0, 0.81, 1000, true),
            (0, 0.0, 700, true),
        ])),
        1000,
    );
    assert!(picker.saturated(0));
    picker.refresh(
        Some(&snapshot([
            (5, 0.8, 1000, true),
            (9, 0.0, 1000, true),
            (9, 0.0, 1000, true),
        ])),
        1000,
    );
    assert!(!picker.saturated(0));
    // Without shedding configured nothing is ever saturated.
    let mut plain = super::tests::picker(None);
    plain.refresh(Some(&snapshot([(99, 1.0, 1000, true); 3])), 1000);
    assert!(!plain.saturated(0) && !plain.sheddable(b"batch"));
}

#[test]
fn bodies_hash_as_gie_s_own_code_hashes_them() {
    // Vectors from GIE v1.0.2 itself: ExtractPromptFromRequestBody on the decoded body, then
    // the prefix plugin's Score (its cycle state's PrefixHashes), model as the body names it.
    // (hash count, [0], [1], [2], last) for each body.
    let system = "You are a meticulous assistant. Answer in French and cite sources. ".repeat(6);
    let cases: [(String, &str, [u64; 5]); 4] = [
        (
            // Content before role; escapes, accents, a surrogate pair; the model last.
            format!(
                r#"{{"messages":[{{"content":"{system}","role":"system"}},{{"content":"Caf\u00e9 \"cr\u00e8me\" \ud83d\ude00 \n next line, please explain in detail what happens here.","role":"user"}}],"model":"meta-llama/Llama-3.1-8B-Instruct"}}"#
            ),
            "meta-llama/Llama-3.1-8B-Instruct",
            [
                8,
                0x5081_7d66_b99e_8574,
                0x9fec_2579_03e6_bae7,
                0x06e2_a65b_0c07_38ac,
                0x75f0_fb84_64e3_be99,
            ],
        ),
        (
            // Array content skipped, the last of two contents, the prompt ignored.
            format!(
                r#"{{"model":"m","prompt":"ignored","messages":[{{"role":"user","content":[{{"type":"text","text":"skipped"}}]}},{{"role":"assistant","content":"first","content":"{system}"}},{{"role":"user","content":"Why?"}}]}}"#
            ),
            "m",
            [
                7,
                0x90e3_59a6_b29c_98c2,
                0x38da_4da9_ea58_7ece,
                0xa784_5e53_a468_97d4,
                0xfead_a5a0_9ed9_8b83,
            ],
        ),
        (
            format!(
                r#"{{"model":"mistral:latest","prompt":"{}"}}"#,
                system.repeat(3)
            ),
            "mistral:latest",
            [
                18,
                0x49cf_b6ad_91cc_71d5,
                0x439d_d2e2_35a4_9dd0,
                0xb97f_efa7_1d53_7289,
                0xcc79_c217_4ef3_5aa0,
            ],
        ),
        (
            // Over 16 KiB of template: 256 blocks.
            format!(
                r#"{{"model":"m","messages":[{{"role":"system","content":"{}"}}]}}"#,
                "0123456789abcdef".repeat(1100)
            ),
            "m",
            [
                256,
                0x59aa_39dc_1cad_77b5,
                0xddf0_f285_1f49_302e,
                0x1615_8048_72ed_ce0f,
                0xff10_5fb0_c09b_6aa2,
            ],
        ),
    ];
    for (body, model, [count, h0, h1, h2, last]) in cases {
        // Fed in 7-byte chunks, so every string and escape is split somewhere.
        let mut scanner = crate::request::json::ModelScanner::with_prompt(256, 64 * 256);
        for chunk in body.as_bytes().chunks(7) {
            scanner.feed(chunk).unwrap();
        }
        let prompt = scanner.take_prompt().expect("a prompt");
        let hashes = block_hashes(model.as_bytes(), &prompt, 64, 256);
        assert_eq!(hashes.len() as u64, count, "{model}");
        assert_eq!(
            [hashes[0], hashes[1], hashes[2], hashes[hashes.len() - 1]],
            [h0, h1, h2, last],
            "{model}"
        );
    }
}
