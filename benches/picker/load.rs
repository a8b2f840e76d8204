//! The load: chat prompts (a shared-prefix workload and a no-reuse control), sent as streams
//! at Poisson arrivals of a given rate from this process, each on its own connection (so that
//! they spread over Envoy's workers), timed to the first and each later content chunk.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most tokens a replica generates per request (random answers, cut at `max_tokens`).
pub const MAX_TOKENS: u32 = 16;
/// Longest a request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// xorshift64*: the workload's and the arrivals' randomness, seeded so that every policy
/// meets the same requests at the same times.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// What the prompts share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `groups` system prompts of `system_tokens` words, each with `per_group` questions of
    /// `question_tokens` words; each request is one of those prompts, drawn at random.
    SharedPrefix { groups: usize, per_group: usize },
    /// The shared-prefix workload's groups in turn, each with its first question: what
    /// brings the replicas to the workload's steady state (every group met once).
    EachGroup { groups: usize },
    /// Every request a system prompt and question of its own (no prefix to reuse).
    Control,
}

/// Prompt sizes, in the dummy tokenizer's tokens (one word each).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub system_tokens: usize,
    pub question_tokens: usize,
}

fn words(prefix: &str, count: usize) -> String {
    let mut text = String::with_capacity(count * (prefix.len() + 5));
    for i in 0..count {
        text.push_str(prefix);
        text.push_str(&i.to_string());
        text.push(' ');
    }
    text
}

impl Workload {
    pub fn label(&self) -> String {
        match self {
            Self::SharedPrefix { groups, per_group } => {
                format!("shared prefix ({groups} groups x {per_group} prompts)")
            }
            Self::EachGroup { groups } => format!("each of {groups} groups once"),
            Self::Control => "no reuse (control)".into(),
        }
    }

    /// The body of request number `n`, drawn with `rng`.
    pub fn body(&self, model: &str, sizes: Sizes, n: usize, rng: &mut Rng) -> Vec<u8> {
        let (system, question) = match *self {
            Self::SharedPrefix { groups, per_group } => {
                let (group, index) = (rng.below(groups), rng.below(per_group));
                (
                    words(&format!("g{group}s"), sizes.system_tokens),
                    words(&format!("g{group}q{index}w"), sizes.question_tokens),
                )
            }
            Self::EachGroup { groups } => {
                let group = n % groups;
                (
                    words(&format!("g{group}s"), sizes.system_tokens),
                    words(&format!("g{group}q0w"), sizes.question_tokens),
                )
            }
            Self::Control => {
                let nonce = rng.next_u64();
                (
                    words(&format!("r{n}n{nonce:x}s"), sizes.system_tokens),
                    words(&format!("r{n}n{nonce:x}q"), sizes.question_tokens),
                )
            }
        };
        serde_json::json!({
            "model": model,
            "stream": true,
            "max_tokens": MAX_TOKENS,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
        })
        .to_string()
        .into_bytes()
    }
}

/// One request's timings; `None` when it failed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttft: Duration,
    /// Mean time per output token after the first (`None` with fewer than two tokens).
    pub tpot: Option<Duration>,
    pub finished: Instant,
}

/// One step of the load: what was offered and what came back.
#[derive(Debug, Clone)]
pub struct Step {
    pub rate: f64,
    pub sent: usize,
    pub timings: Vec<Timing>,
    pub started: Instant,
}

impl Step {
    /// Successful answers per second, from the first arrival to the last answer.
    pub fn throughput(&self) -> f64 {
        let end = self.timings.iter().map(|t| t.finished).max();
        end.map_or(0.0, |end| {
            self.timings.len() as f64 / (end - self.started).as_secs_f64()
        })
    }

    pub fn failed(&self) -> usize {
        self.sent - self.timings.len()
    }

    /// The `p`-th percentile of TTFT, in ms.
    pub fn ttft_ms(&self, p: f64) -> f64 {
        percentile(self.timings.iter().map(|t| t.ttft), p)
    }

    pub fn tpot_ms(&self, p: f64) -> f64 {
        percentile(self.timings.iter().filter_map(|t| t.tpot), p)
    }

    /// Whether the gateway kept up: at least 90% of the offered rate answered, no failure.
    pub fn sustained(&self) -> bool {
        self.failed() == 0 && self.throughput() >= 0.9 * self.rate
    }
}

fn percentile(values: impl Iterator<Item = Duration>, p: f64) -> f64 {
    let mut ms: Vec<f64> = values.map(|d| d.as_secs_f64() * 1e3).collect();
    if ms.is_empty() {
        return f64::NAN;
    }
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() - 1) as f64 * p).round() as usize]
}

/// Sends `count` requests of `workload` to `listener` at Poisson arrivals of `rate` per second
/// and waits for every answer.
pub async fn poisson(
    listener: SocketAddr,
    model: &str,
    workload: Workload,
    sizes: Sizes,
    rate: f64,
    count: usize,
    seed: u64,
) -> Step {
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut at = Duration::ZERO;
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let body = workload.body(model, sizes, n, &mut rng);
        tokio::time::sleep_until((started + at).into()).await;
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, stream(listener, body))
                .await
                .ok()
                .flatten()
        }));
        at += Duration::from_secs_f64(-rng.unit().ln() / rate);
    }
    let mut timings = Vec::with_capacity(count);
    for task in tasks {
        if let Ok(Some(timing)) = task.await {
            timings.push(timing);
        }
    }
    Step {
        rate,
        sent: count,
        timings,
        started,
    }
}

/// One streamed chat completion on a fresh connection: when its first and last content chunks
/// arrived. `None` unless the answer is a 200 with at least one content chunk.
async fn stream(listener: SocketAddr, body: Vec<u8>) -> Option<Timing> {
    let sent = Instant::now();
    let mut connection = TcpStream::connect(listener).await.ok()?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    connection.write_all(head.as_bytes()).await.ok()?;
    connection.write_all(&body).await.ok()?;
    let mut received = Vec::new();
    let mut scanned = 0;
    let mut buffer = vec![0; 16 << 10];
    let (mut first, mut last, mut tokens) = (None, None, 0u32);
    loop {
        let read = connection.read(&mut buffer).await.ok()?;
        if read == 0 {
            break;
        }
        let now = Instant::now();
        received.extend_from_slice(&buffer[..read]);
        let found = content_chunks(&received[scanned.min(received.len())..]);
        // A marker split across reads is found on the next read: rescan its length.
        scanned = received.len().saturating_sub(CONTENT.len());
        if found > 0 {
            tokens += found;
            first.get_or_insert(now);
            last = Some(now);
        }
    }
    if !received.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    let (first, last) = (first?, last?);
    Some(Timing {
        ttft: first - sent,
        tpot: (tokens > 1).then(|| (last - first) / (tokens - 1)),
        finished: last,
    })
}

const CONTENT: &[u8] = b"\"content\":\"";

/// Content chunks with text in `bytes` (`"content":"` followed by anything but `"`), the last
/// `CONTENT.len()` bytes left for the next scan when they may start a marker.
fn content_chunks(bytes: &[u8]) -> u32 {
    let mut count = 0;
    let mut at = 0;
    while let Some(offset) = find(&bytes[at..], CONTENT) {
        let end = at + offset + CONTENT.len();
        if end >= bytes.len() {
            break;
        }
        count += u32::from(bytes[end] != b'"');
        at = end;
    }
    count
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
