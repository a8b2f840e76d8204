//! A proxy-wasm HTTP filter that routes OpenAI-style requests by the `model` named in their
//! JSON body: it scans the body as it arrives, sets the routing header (`x-ai-eg-model` by
//! default) and lets Envoy's route table pick the backend.
//!
//! Everything that decides is plain Rust, tested natively: [`config`] reads the plugin
//! configuration, [`catalogue`] holds the models served (names, aliases, upstream names,
//! `/v1/models`), [`request`] decides per request (its [`request::json`] and
//! [`request::multipart`] scanners read the body) and [`reply`] builds what the filter
//! answers itself. Only `filter`, built for wasm32, talks to the host.

pub mod catalogue;
pub mod config;
// Also compiled under clippy, so the host layer is linted on the build machine.
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
pub mod picker;
pub mod reply;
pub mod request;
pub mod response;
