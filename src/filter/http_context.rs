//! The per-stream context: strips any client-sent header the filter owns, answers the model
//! list, holds the request while its body is scanned, then sets the headers (rewriting the
//! body's model when the backend knows it by another name) or replies; then follows the
//! routed request's response, every chunk read once and passed on at once, to record what it
//! cost.
//!
//! Envoy clears the route cache whenever a wasm filter changes the request headers, so the
//! route is matched again with the header as set (or removed); the gateway tests prove it.
//! A refusal decided before the body ends is held until it does ([`HeldRefusal`]), so that
//! Envoy keeps the client's HTTP/1.1 connection.

use super::gen_ai_metrics::Labels;
use super::host::{header_map, send_local_reply};
use super::picking::Outcome;
use super::plugin::Plugin;
use crate::request::rewrite::{self, BodyBuffer};
use crate::request::stream_options::include_usage_edit;
use crate::request::{
    inspect_head, BodyRouter, HeadVerdict, HeldRefusal, Rejection, RequestHeaders, Rewrite, Route,
};
use crate::response::{Api, ResponseModel, ResponseObserver, StateKey, StatusClass, Timing};
use log::debug;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// Most body bytes copied into wasm memory at once, so the filter's memory stays flat
/// whatever the size of the chunks Envoy delivers.
const READ_CHUNK: usize = 64 * 1024;

enum Stage {
    /// Nothing more to do for this stream.
    Forwarding,
    /// Headers are held while the body is scanned.
    Scanning(BodyRouter),
    /// The request is refused; the rest of its body is dropped until it ends.
    Refusing(HeldRefusal),
}

/// A routed request whose response is followed.
struct Watch {
    api: Api,
    model: Vec<u8>,
    timing: Timing,
    /// From the response headers on.
    observer: Option<ResponseObserver>,
}

pub struct ModelRouterStream {
    plugin: Rc<Plugin>,
    stage: Stage,
    api: Api,
    watch: Option<Watch>,
    /// The request names an objective the endpoint picker may shed.
    sheddable: bool,
}

impl ModelRouterStream {
    pub fn new(plugin: Rc<Plugin>) -> Self {
        Self {
            plugin,
            stage: Stage::Forwarding,
            api: Api::Other,
            watch: None,
            sheddable: false,
        }
    }

    /// The host clock, in nanoseconds.
    fn now(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    /// Reads and scans the body bytes Envoy has buffered since the last call.
    fn scan(&self, router: &mut BodyRouter, buffered: usize) -> Result<(), Rejection> {
        router.check_size(buffered as u64)?;
        while (router.scanned() as usize) < buffered {
            let start = router.scanned() as usize;
            let size = READ_CHUNK.min(buffered - start);
            match self.get_http_request_body(start, size) {
                Some(chunk) if !chunk.is_empty() => router.feed(&chunk)?,
                _ => break,
            }
        }
        Ok(())
    }

    /// Ends the scan: sets the routing header (and the model's, and rewrites the body's model
    /// if need be), or replies with the refusal.
    fn route(&mut self, router: BodyRouter) -> Action {
        let plugin = Rc::clone(&self.plugin);
        plugin.metrics.record_memory();
        let shape = router.stream_shape();
        let body_len = router.scanned();
        match router.finish(&plugin.settings.catalogue) {
            Ok(Route::Model(routed)) => {
                let settings = &plugin.settings;
                // The pool's endpoint, before the body changes: a shed request is not rewritten.
                let outcome = plugin
                    .picker
                    .as_ref()
                    .and_then(|picker| picker.pick(&routed, self.sheddable));
                match &outcome {
                    Some(Outcome::Shed(pool)) => {
                        return self.reply(&Rejection::PoolSaturated { pool: pool.clone() })
                    }
                    Some(Outcome::Pick(destination)) => {
                        let header = &plugin.picker.as_ref().expect("a picker").destination_header;
                        self.set_http_request_header(header, Some(destination));
                        let picked = destination.split(',').next().unwrap_or_default();
                        self.publish(StateKey::PickedEndpoint, picked.as_bytes());
                        debug!("picked {destination}");
                    }
                    Some(Outcome::Unscored) => {
                        debug!("no endpoint has fresh metrics: Envoy's fallback policy picks");
                    }
                    None => {}
                }
                // The rewrite keeps everything before the model in place, the top-level `{`
                // the include_usage edit starts at included.
                let mut body_len = body_len;
                if let Some(change) = &routed.rewrite {
                    match self.rewrite(body_len, change) {
                        Ok(new_len) => body_len = new_len,
                        Err(rejection) => return self.reply(&rejection),
                    }
                }
                self.set_http_request_header_bytes(&settings.header, Some(&routed.model));
                for (name, value) in routed.entry.iter().flat_map(|e| &e.headers) {
                    self.set_http_request_header(name, Some(value));
                }
                plugin.metrics.routed();
                debug!("routed model {:?}", String::from_utf8_lossy(&routed.model));
                if settings.response.add_include_usage && self.api.takes_stream_options() {
                    self.add_include_usage(include_usage_edit(shape, body_len));
                }
                if settings.response.usage {
                    self.publish(StateKey::RequestModel, &routed.model);
                    self.watch = Some(Watch {
                        api: self.api,
                        model: routed.model,
                        timing: Timing {
                            routed: self.now(),
                            ..Timing::default()
                        },
                        observer: None,
                    });
                }
                Action::Continue
            }
            Ok(Route::Unrouted) => {
                self.plugin.metrics.unrouted();
                debug!("no model in body, forwarded without routing header");
                Action::Continue
            }
            // The whole body has been read (end of stream or trailers).
            Err(rejection) => self.reply(&rejection),
        }
    }

    /// Refuses the request once its body has ended: now if it has (`end_of_stream`) or if
    /// waiting is not worth it, else from [`Stage::Refusing`] when it does. `buffered` body
    /// bytes are in Envoy's buffer.
    fn refuse(&mut self, rejection: Rejection, buffered: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return self.reply(&rejection);
        }
        match HeldRefusal::hold(rejection, &self.plugin.settings) {
            Ok(held) => self.drain(held, buffered, false),
            Err(rejection) => self.reply(&rejection),
        }
    }

    /// Drops the body bytes Envoy holds for a refused request; replies once the body ends.
    fn drain(&mut self, held: HeldRefusal, buffered: usize, end_of_stream: bool) -> Action {
        if buffered > 0 {
            self.set_http_request_body(0, buffered, &[]);
        }
        match held.drain(buffered as u64) {
            Ok(held) if end_of_stream => self.reply(&held.release()),
            Ok(held) => {
                self.stage = Stage::Refusing(held);
                Action::Pause
            }
            Err(rejection) => self.reply(&rejection),
        }
    }

    /// Edits the held body's prefix in Envoy's buffer, and its declared length with it.
    fn add_include_usage(&self, edit: Option<crate::request::stream_options::PrefixEdit>) {
        let Some(edit) = edit else {
            return;
        };
        self.set_http_request_body(0, edit.drain, edit.prefix);
        if self.get_http_request_header("content-length").is_some() {
            self.set_http_request_header("content-length", Some(&edit.new_length.to_string()));
        }
        self.plugin.gen_ai.include_usage_added();
        debug!("added stream_options.include_usage");
    }

    /// Reads the response chunk Envoy holds (`size` bytes, the current chunk only, as the
    /// filter never buffers the response) into the observer; the clock, if it read it.
    fn observe_chunk(&self, watch: &mut Watch, size: usize) -> Option<u64> {
        let mut now = None;
        let observer = watch.observer.as_mut().filter(|o| o.reads_body())?;
        let mut start = 0;
        while start < size {
            let length = READ_CHUNK.min(size - start);
            let Some(chunk) = self.get_http_response_body(start, length) else {
                break;
            };
            if chunk.is_empty() {
                break;
            }
            if observer.feed(&chunk) {
                let time = *now.get_or_insert_with(|| self.now());
                watch.timing.first_content = Some(time);
            }
            start += chunk.len();
        }
        now
    }

    /// Ends the followed response: records its metrics and filter state. `complete` is false
    /// when it never ended (a reset, or the client left); `now` is the clock if just read.
    fn finish_response(&mut self, complete: bool, now: Option<u64>) {
        let Some(mut watch) = self.watch.take() else {
            return;
        };
        let plugin = Rc::clone(&self.plugin);
        let Some(observer) = watch.observer.take() else {
            plugin.gen_ai.no_response();
            return;
        };
        watch.timing.end = Some(now.unwrap_or_else(|| self.now()));
        let report = observer.finish(complete);
        let success = report.status_class() == StatusClass::Success;
        let mut labels = plugin.labels.borrow_mut();
        let request = if success {
            labels.learn(&watch.model)
        } else {
            labels.label(&watch.model)
        };
        let response = match &report.model {
            ResponseModel::Name(name) if success => Some(labels.learn(name.as_bytes())),
            ResponseModel::Name(name) => Some(labels.label(name.as_bytes())),
            ResponseModel::TooLong => Some(0),
            ResponseModel::None => None,
        };
        let metric_labels = Labels {
            operation: watch.api.operation(),
            request,
            response,
        };
        plugin
            .gen_ai
            .record(&labels, &metric_labels, &report, &watch.timing);
        drop(labels);
        if let ResponseModel::Name(name) = &report.model {
            self.publish(StateKey::ResponseModel, name.as_bytes());
        }
        let usage = &report.usage;
        for (key, value) in [
            (StateKey::InputTokens, usage.input),
            (StateKey::OutputTokens, usage.output),
            (StateKey::CachedTokens, usage.cached),
            (StateKey::TotalTokens, usage.total),
            (
                StateKey::TimeToFirstTokenMs,
                watch.timing.time_to_first_token_ms(),
            ),
        ] {
            let wanted = plugin.settings.response.filter_state.contains(key);
            if let Some(value) = value.filter(|_| wanted) {
                self.set_property(vec![key.key()], Some(value.to_string().as_bytes()));
            }
        }
        debug!(
            "response {}: usage {:?}, problems {:?}",
            report.status,
            report.usage,
            report.problems.iter().collect::<Vec<_>>()
        );
    }

    /// Sets filter state `wasm.<key>` if the configuration asks for that key.
    fn publish(&self, key: StateKey, value: &[u8]) {
        if self.plugin.settings.response.filter_state.contains(key) {
            self.set_property(vec![key.key()], Some(value));
        }
    }

    /// Replaces the body's model value in Envoy's buffer and sets the content length to match;
    /// the body's new length.
    fn rewrite(&mut self, body_len: u64, change: &Rewrite) -> Result<u64, Rejection> {
        let started = self.get_current_time();
        let mut body = RequestBody {
            stream: self,
            len: body_len,
        };
        let copied = rewrite::replace(
            &mut body,
            body_len,
            change.value.clone(),
            &change.replacement,
        )
        .map_err(|_| Rejection::RewriteFailed)?;
        let new_len = body.len;
        // Envoy forwards the content-length it was sent: it must say the new length.
        if self.get_http_request_header("content-length").is_some() {
            self.set_http_request_header("content-length", Some(&new_len.to_string()));
        }
        self.plugin.metrics.rewritten();
        if log::log_enabled!(log::Level::Debug) {
            let took = self
                .get_current_time()
                .duration_since(started)
                .unwrap_or_default();
            debug!(
                "rewrote the model at {:?} in {} us ({} bytes copied out, {} back); body now {new_len} bytes",
                change.value,
                took.as_micros(),
                copied.out,
                copied.back
            );
        }
        Ok(new_len)
    }

    fn reply(&mut self, rejection: &Rejection) -> Action {
        self.stage = Stage::Forwarding;
        self.plugin.metrics.rejected(rejection.code());
        debug!("rejected: {}", rejection.message());
        send_local_reply(&rejection.local_reply());
        Action::Pause
    }
}

impl Context for ModelRouterStream {}

/// The request body in Envoy's buffer, for [`rewrite::replace`]; `len` follows the edits.
struct RequestBody<'a> {
    stream: &'a ModelRouterStream,
    len: u64,
}

impl BodyBuffer for RequestBody<'_> {
    fn read(&mut self, start: u64, len: usize) -> Vec<u8> {
        self.stream
            .get_http_request_body(start as usize, len)
            .unwrap_or_default()
    }

    fn replace_front(&mut self, drain: u64, data: &[u8]) {
        self.stream.set_http_request_body(0, drain as usize, data);
        self.len = self.len - drain + data.len() as u64;
    }

    fn append(&mut self, data: &[u8]) {
        // Envoy appends when the offset is at or past the end.
        self.stream
            .set_http_request_body(self.len as usize, 0, data);
        self.len += data.len() as u64;
    }
}

impl HttpContext for ModelRouterStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let plugin = Rc::clone(&self.plugin);
        let headers = header_map(MapType::HttpRequestHeaders);
        self.api = headers.header(":path").map_or(Api::Other, Api::from_path);
        // The body (and the catalogue) are the only source of these headers.
        for header in &plugin.owned_headers {
            if headers.header(header).is_some() {
                self.set_http_request_header(header, None);
                plugin.metrics.client_header_removed();
                debug!("removed client-sent {header} header");
            }
        }
        if let Some(picker) = &plugin.picker {
            if let Some(header) = &picker.objective_header {
                self.sheddable = headers
                    .header(header)
                    .is_some_and(|objective| picker.sheddable(objective));
            }
        }
        match inspect_head(&plugin.settings, &headers, end_of_stream) {
            HeadVerdict::Skip => {
                plugin.metrics.skipped();
                Action::Continue
            }
            HeadVerdict::Models(request) => {
                plugin.metrics.models_answered();
                send_local_reply(&request.answer(&plugin.settings.catalogue));
                Action::Pause
            }
            HeadVerdict::Scan(router) => {
                self.stage = Stage::Scanning(router);
                Action::Pause
            }
            HeadVerdict::Reject(rejection) => self.refuse(rejection, 0, end_of_stream),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match std::mem::replace(&mut self.stage, Stage::Forwarding) {
            Stage::Forwarding => Action::Continue,
            Stage::Refusing(held) => self.drain(held, body_size, end_of_stream),
            Stage::Scanning(mut router) => {
                if let Err(rejection) = self.scan(&mut router, body_size) {
                    return self.refuse(rejection, body_size, end_of_stream);
                }
                if !end_of_stream {
                    // Envoy keeps buffering the body; the filter keeps only the scanner's state.
                    self.stage = Stage::Scanning(router);
                    return Action::Pause;
                }
                self.route(router)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match std::mem::replace(&mut self.stage, Stage::Forwarding) {
            Stage::Scanning(router) => self.route(router),
            Stage::Refusing(held) => self.reply(&held.release()),
            Stage::Forwarding => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(watch) = self.watch.as_ref() else {
            return Action::Continue;
        };
        if watch.observer.is_some() {
            return Action::Continue;
        }
        // One host call for all of them: each call costs more than the headers' bytes.
        let headers = header_map(MapType::HttpResponseHeaders);
        let status = headers
            .header(":status")
            .and_then(|status| std::str::from_utf8(status).ok()?.parse().ok())
            .unwrap_or(0);
        let observer = ResponseObserver::start(
            status,
            headers.header("content-type"),
            headers.header("content-encoding"),
        );
        if let Some(watch) = self.watch.as_mut() {
            watch.observer = Some(observer);
        }
        if end_of_stream {
            self.finish_response(true, None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(mut watch) = self.watch.take() else {
            return Action::Continue;
        };
        let now = if body_size > 0 {
            self.observe_chunk(&mut watch, body_size)
        } else {
            None
        };
        self.watch = Some(watch);
        if end_of_stream {
            self.finish_response(true, now);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.finish_response(true, None);
        Action::Continue
    }

    fn on_log(&mut self) {
        // Still followed: the response never ended.
        self.finish_response(false, None);
    }
}
