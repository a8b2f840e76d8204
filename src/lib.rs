//! A proxy-wasm HTTP filter that routes OpenAI-style requests by the `model` named in their
//! JSON body: it scans the body as it arrives, sets the routing header (`x-ai-eg-model` by
//! default) and lets Envoy's route table pick the backend.
//!
//! Everything that decides is plain Rust, tested natively: [`scanner`] reads the body,
//! [`config`] the plugin configuration, [`request`] makes the per-request decision and
//! [`rejection`] maps each refusal to its reply. Only `filter`, built for wasm32,
//! talks to the host.

pub mod config;
// Also compiled under clippy, so the host layer is linted on the build machine.
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
pub mod rejection;
pub mod request;
pub mod scanner;
