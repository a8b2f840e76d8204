//! The reference scenario, in one place: three models, each served by its own backend (two
//! pools of three replicas and one plain backend), the aliases the filter's catalogue gives
//! them, the ports envoy.yaml gives them, and the routing header. The tests, the benchmarks and `./build.sh run` (through the
//! `local-gateway` binary) all read it from here.

use llm_sim::{Pool, PoolConfig, SeenRequest};

/// The header the filter sets from the body and the routes match.
pub const ROUTING_HEADER: &str = "x-ai-eg-model";

pub const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
pub const MISTRAL: &str = "mistral:latest";
pub const PLAIN: &str = "some-cool-self-hosted-model";
/// Every model of the scenario, in the order envoy.yaml routes them.
pub const MODELS: [&str; 3] = [LLAMA, MISTRAL, PLAIN];
/// The catalogue's aliases (envoy.yaml, k8s/): each routes as its model, and the backend
/// gets the model's name in the body.
pub const ALIASES: [(&str, &str); 3] = [
    ("gpt-4o", LLAMA),
    ("llama-3.1-8b", LLAMA),
    ("mistral", MISTRAL),
];

/// The seed's chat request for `model`.
pub fn chat_body(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hi. Say this is a test"}]})
}

/// Header every test request carries, so a test can ask whether any backend saw it.
pub const TAG_HEADER: &str = "x-test-tag";

/// One backend of the scenario, as envoy.yaml and k8s/ name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Cluster (envoy.yaml) and InferencePool or Service (k8s/) name.
    pub name: &'static str,
    pub model: &'static str,
    /// Port of the first replica in envoy.yaml; the others follow it.
    pub first_port: u16,
    pub replicas: u16,
}

impl Backend {
    /// The ports envoy.yaml gives the replicas.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.first_port..self.first_port + self.replicas
    }

    /// An InferencePool (several replicas behind an endpoint picker), not a plain backend.
    pub fn is_pool(&self) -> bool {
        self.replicas > 1
    }
}

pub const BACKENDS: [Backend; 3] = [
    Backend {
        name: "vllm-llama3-8b-instruct",
        model: LLAMA,
        first_port: 18001,
        replicas: 3,
    },
    Backend {
        name: "mistral",
        model: MISTRAL,
        first_port: 18011,
        replicas: 3,
    },
    Backend {
        name: "some-cool-self-hosted-model",
        model: PLAIN,
        first_port: 18021,
        replicas: 1,
    },
];

/// The backend that serves `model`.
pub fn backend_of(model: &str) -> &'static Backend {
    BACKENDS
        .iter()
        .find(|b| b.model == model)
        .unwrap_or_else(|| panic!("no backend of the scenario serves {model}"))
}

/// The scenario's backends as llm-sim pools on free loopback ports, recording what they see.
pub struct Backends {
    /// One pool per entry of [`BACKENDS`], in the same order.
    pub pools: Vec<Pool>,
}

impl Backends {
    /// Starts every backend on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let mut pools = Vec::new();
        for backend in BACKENDS {
            let config = PoolConfig::new(backend.name, &[backend.model]);
            pools.push(Pool::bind(config, "127.0.0.1", 0, usize::from(backend.replicas)).await?);
        }
        Ok(Self { pools })
    }

    /// The pool that serves `model`.
    pub fn pool_of(&self, model: &str) -> &Pool {
        let index = BACKENDS
            .iter()
            .position(|b| b.model == model)
            .unwrap_or_else(|| panic!("no backend of the scenario serves {model}"));
        &self.pools[index]
    }

    /// Each port envoy.yaml names for a replica, with the port that replica really has.
    pub fn port_map(&self) -> Vec<(u16, u16)> {
        BACKENDS
            .iter()
            .zip(&self.pools)
            .flat_map(|(backend, pool)| {
                backend
                    .ports()
                    .zip(pool.replicas.iter().map(|replica| replica.addr.port()))
            })
            .collect()
    }

    /// Every request any backend saw carrying this tag.
    pub fn saw(&self, tag: &str) -> Vec<SeenRequest> {
        self.pools
            .iter()
            .flat_map(Pool::seen)
            .filter(|seen| seen.header_values(TAG_HEADER).contains(&tag))
            .collect()
    }

    /// Turns the request log of every backend on or off (a soak must not keep its traffic).
    pub fn set_recording(&self, on: bool) {
        self.pools.iter().for_each(|pool| pool.set_recording(on));
    }
}
