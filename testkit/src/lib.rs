//! What the tests, benchmarks and fuzz targets share, so each says only what it proves.
//!
//! Always: [`bench`] (the benchmarks' summary line), [`oracle`], serde_json's reading of a body as the scanner must report it, and
//! [`usage_oracle`], the same for the response readers, and [`form`], multipart forms and the
//! multipart scanner's reference reading, [`chunks`] (seeded randomness, chunkings,
//! corruption) and [`random_json`] (random valid JSON shaped by the test). With the
//! default `gateway` feature: the [`scenario`] (models, backends, ports, header), [`envoy`]
//! (Envoy with the built filter on free ports), [`callgrind`] (Envoy's instructions counted), [`client`] (HTTP/1.1 and h2c, raw sockets),
//! [`process`] (children stopped on drop, readiness), [`registry`] (an OCI registry on loopback),
//! [`wasm_filter`] (the filter's Envoy
//! configuration), [`openai`] (the OpenAI error shape) and [`prometheus`] (Envoy's Prometheus
//! output, parsed).

pub mod bench;
pub mod chunks;
pub mod form;
pub mod oracle;
pub mod random_json;

#[cfg(feature = "gateway")]
pub mod callgrind;
#[cfg(feature = "gateway")]
pub mod cases;
#[cfg(feature = "gateway")]
pub mod client;
#[cfg(feature = "gateway")]
pub mod envoy;
#[cfg(feature = "gateway")]
pub mod envoy_gateway;
#[cfg(feature = "gateway")]
pub mod k8s;
#[cfg(feature = "gateway")]
pub mod llm_d;
#[cfg(feature = "gateway")]
pub mod openai;
#[cfg(feature = "gateway")]
pub mod process;
pub mod prometheus;
#[cfg(feature = "gateway")]
pub mod registry;
#[cfg(feature = "gateway")]
pub mod scenario;
pub mod usage_oracle;
#[cfg(feature = "gateway")]
pub mod wasm_filter;

/// The result of a check: `Err` says what was wrong.
pub type Outcome = Result<(), String>;

/// Returns `Err(format!(...))` from the enclosing function when the condition does not hold.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}
