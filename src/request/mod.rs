//! What the filter decides for one request, as plain Rust: whether its body is scanned, and
//! what the scanned body routes to. The host layer only moves headers and bytes.
//!
//! [`json`] finds the model in a JSON body; [`rejection`] names every refusal;
//! [`stream_options`] adds `include_usage` to streaming requests when configured.

pub mod header_map;
pub mod json;
mod rejection;
pub mod stream_options;

pub use rejection::Rejection;

use crate::config::{MissingModel, Settings};
use json::ModelScanner;

/// Read access to the request headers (names in lowercase).
pub trait RequestHeaders {
    /// The first value of header `name`.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// What to do once the headers are in.
#[derive(Debug)]
pub enum HeadVerdict {
    /// Not a body this filter reads: forward untouched (without any client routing header).
    Skip,
    /// Hold the headers and scan the body.
    Scan(BodyRouter),
    Reject(Rejection),
}

/// The result of a fully scanned body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Set the routing header to this model name.
    Model(Vec<u8>),
    /// No `model` and the configuration lets the request through without the header.
    Unrouted,
}

/// Looks at the request headers; `end_of_stream` says they end the request (no body).
pub fn inspect_head(
    settings: &Settings,
    headers: &impl RequestHeaders,
    end_of_stream: bool,
) -> HeadVerdict {
    if end_of_stream
        || !headers
            .header(":path")
            .is_some_and(|p| settings.scans_path(p))
    {
        return HeadVerdict::Skip;
    }
    if headers
        .header("content-encoding")
        .is_some_and(|encoding| !encoding.trim_ascii().eq_ignore_ascii_case(b"identity"))
    {
        return HeadVerdict::Reject(Rejection::UnsupportedEncoding);
    }
    // A declared length over the limit is refused before any of the body is read. A length
    // that does not parse is left to Envoy's codec, which has already checked it.
    let declared = headers.header("content-length");
    if let Some(length) = declared
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<u64>().ok())
    {
        if length > settings.max_body_bytes {
            return HeadVerdict::Reject(Rejection::BodyTooLarge {
                limit: settings.max_body_bytes,
            });
        }
    }
    HeadVerdict::Scan(BodyRouter::new(settings))
}

/// Scans one request body as it arrives and decides its route.
#[derive(Debug)]
pub struct BodyRouter {
    scanner: ModelScanner,
    max_body_bytes: u64,
    missing_model: MissingModel,
}

impl BodyRouter {
    fn new(settings: &Settings) -> Self {
        Self {
            scanner: ModelScanner::new(settings.max_model_bytes),
            max_body_bytes: settings.max_body_bytes,
            missing_model: settings.missing_model,
        }
    }

    /// Bytes scanned so far.
    pub fn scanned(&self) -> u64 {
        self.scanner.consumed()
    }

    /// What the body scanned so far says about streaming.
    pub fn stream_shape(&self) -> json::StreamShape {
        self.scanner.stream_shape()
    }

    /// Checks the body's size so far, before any more of it is read.
    pub fn check_size(&self, received: u64) -> Result<(), Rejection> {
        if received > self.max_body_bytes {
            return Err(Rejection::BodyTooLarge {
                limit: self.max_body_bytes,
            });
        }
        Ok(())
    }

    /// Scans the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Rejection> {
        self.check_size(self.scanner.consumed() + chunk.len() as u64)?;
        self.scanner.feed(chunk).map_err(Rejection::from)
    }

    /// Ends the body and decides the route.
    pub fn finish(self) -> Result<Route, Rejection> {
        match self.scanner.finish()? {
            Some(model) => {
                check_model(&model)?;
                Ok(Route::Model(model))
            }
            None if self.missing_model == MissingModel::PassThrough => Ok(Route::Unrouted),
            None => Err(Rejection::MissingModel),
        }
    }
}

/// A refusal decided before the request body has ended, held until it does.
///
/// Envoy keeps a client's HTTP/1.1 connection only if the request was read to its end before
/// the reply; answering mid-body closes it. So the rest of the body is read and dropped (never
/// buffered, never forwarded) and the reply goes out when the body ends, unless waiting would
/// mean reading more than `max_body_bytes`: then the reply goes out at once and the
/// connection closes, as it does for a body declared too large.
#[derive(Debug)]
pub struct HeldRefusal {
    rejection: Rejection,
    /// Body bytes received so far, those already scanned included.
    received: u64,
    max_body_bytes: u64,
}

impl HeldRefusal {
    /// Holds `rejection`, or hands it back to be sent now. Every body byte received, those
    /// already scanned included, is then counted with [`HeldRefusal::drain`].
    pub fn hold(rejection: Rejection, settings: &Settings) -> Result<Self, Rejection> {
        if matches!(rejection, Rejection::BodyTooLarge { .. }) {
            return Err(rejection);
        }
        Ok(Self {
            rejection,
            received: 0,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// Counts `bytes` more of the body, dropped by the caller; hands the refusal back once the
    /// body passes the limit.
    pub fn drain(mut self, bytes: u64) -> Result<Self, Rejection> {
        self.received += bytes;
        if self.received > self.max_body_bytes {
            return Err(self.rejection);
        }
        Ok(self)
    }

    /// The body has ended: the refusal to send.
    pub fn release(self) -> Rejection {
        self.rejection
    }
}

/// Checks a decoded model name against what a header value can carry unchanged.
pub fn check_model(model: &[u8]) -> Result<(), Rejection> {
    if model.is_empty() {
        return Err(Rejection::EmptyModel);
    }
    let control = |b: &u8| *b < 0x20 || *b == 0x7f;
    if model.iter().any(control) || model.starts_with(b" ") || model.ends_with(b" ") {
        return Err(Rejection::InvalidModel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use json::SyntaxError;

    use std::collections::HashMap;

    const CHAT: &str = "/v1/chat/completions";

    struct Headers(HashMap<&'static str, &'static str>);

    impl RequestHeaders for Headers {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.0.get(name).map(|v| v.as_bytes())
        }
    }

    fn head(path: &'static str, more: &[(&'static str, &'static str)]) -> Headers {
        let mut headers = HashMap::from([(":path", path)]);
        headers.extend(more.iter().copied());
        Headers(headers)
    }

    fn route(settings: &Settings, chunks: &[&[u8]]) -> Result<Route, Rejection> {
        let HeadVerdict::Scan(mut router) = inspect_head(settings, &head(CHAT, &[]), false) else {
            panic!("chat completions must be scanned");
        };
        for chunk in chunks {
            router.feed(chunk)?;
        }
        router.finish()
    }

    #[test]
    fn other_paths_and_bodiless_requests_are_skipped() {
        let settings = Settings::default();
        let skipped = |headers: &Headers, end_of_stream| {
            matches!(
                inspect_head(&settings, headers, end_of_stream),
                HeadVerdict::Skip
            )
        };
        assert!(skipped(&head("/v1/models", &[]), false));
        assert!(skipped(&head("/v1/chat/completions/x", &[]), false));
        assert!(skipped(&head(CHAT, &[]), true));
        assert!(skipped(&Headers(HashMap::new()), false));
        assert!(!skipped(&head("/v1/embeddings?x=1", &[]), false));
    }

    #[test]
    fn compressed_bodies_are_refused_and_identity_is_read() {
        let settings = Settings::default();
        let verdict = |encoding| {
            inspect_head(
                &settings,
                &head(CHAT, &[("content-encoding", encoding)]),
                false,
            )
        };
        for encoding in ["gzip", "br", "deflate, gzip"] {
            assert!(matches!(
                verdict(encoding),
                HeadVerdict::Reject(Rejection::UnsupportedEncoding)
            ));
        }
        assert!(matches!(verdict("Identity"), HeadVerdict::Scan(_)));
    }

    #[test]
    fn declared_length_over_the_limit_is_refused_up_front() {
        let settings = Settings {
            max_body_bytes: 100,
            ..Settings::default()
        };
        let verdict =
            |length| inspect_head(&settings, &head(CHAT, &[("content-length", length)]), false);
        assert!(matches!(
            verdict("101"),
            HeadVerdict::Reject(Rejection::BodyTooLarge { limit: 100 })
        ));
        assert!(matches!(verdict("100"), HeadVerdict::Scan(_)));
    }

    #[test]
    fn received_body_over_the_limit_is_refused() {
        let settings = Settings {
            max_body_bytes: 16,
            ..Settings::default()
        };
        assert_eq!(
            route(&settings, &[br#"{"model":"a","#, br#""x":"yyy"}"#]),
            Err(Rejection::BodyTooLarge { limit: 16 })
        );
        assert_eq!(
            route(&settings, &[br#"{"model":"abcd"}"#]),
            Ok(Route::Model(b"abcd".to_vec()))
        );
    }

    #[test]
    fn missing_model_is_refused_or_passed_through_as_configured() {
        assert_eq!(
            route(&Settings::default(), &[b"{}"]),
            Err(Rejection::MissingModel)
        );
        let pass = Settings {
            missing_model: MissingModel::PassThrough,
            ..Settings::default()
        };
        assert_eq!(route(&pass, &[b"{\"messages\":[]}"]), Ok(Route::Unrouted));
        // Passing through never excuses a broken body.
        assert!(matches!(
            route(&pass, &[b"{\"messages\":"]),
            Err(Rejection::MalformedJson {
                kind: SyntaxError::Truncated,
                ..
            })
        ));
    }

    #[test]
    fn model_must_be_usable_as_a_header_value() {
        let settings = Settings::default();
        assert_eq!(
            route(&settings, &[br#"{"model":""}"#]),
            Err(Rejection::EmptyModel)
        );
        assert_eq!(
            route(&settings, &[br#"{"model":"a\r\nx-evil: 1"}"#]),
            Err(Rejection::InvalidModel)
        );
        assert_eq!(
            route(&settings, &[br#"{"model":"a\u0000"}"#]),
            Err(Rejection::InvalidModel)
        );
    }

    #[test]
    fn model_names_must_fit_a_header_value() {
        assert_eq!(check_model(b"meta-llama/Llama-3.1-8B-Instruct"), Ok(()));
        assert_eq!(check_model("模型 é".as_bytes()), Ok(()));
        assert_eq!(check_model(b""), Err(Rejection::EmptyModel));
        for bad in [&b"a\nb"[..], b"a\r", b"\0", b"a\tb", b"a\x7f", b" a", b"a "] {
            assert_eq!(check_model(bad), Err(Rejection::InvalidModel), "{bad:?}");
        }
    }

    #[test]
    fn refusals_wait_for_the_end_of_the_body_within_its_limit() {
        let settings = Settings {
            max_body_bytes: 100,
            ..Settings::default()
        };
        let held = HeldRefusal::hold(Rejection::DuplicateModel, &settings).unwrap();
        let held = held.drain(40).unwrap().drain(60).unwrap();
        assert_eq!(held.release(), Rejection::DuplicateModel);
        // Past the limit, the refusal goes out at once.
        let held = HeldRefusal::hold(Rejection::InvalidModel, &settings).unwrap();
        let held = held.drain(40).unwrap();
        assert_eq!(held.drain(61).unwrap_err(), Rejection::InvalidModel);
        // A body too large is never read further.
        let too_large = Rejection::BodyTooLarge { limit: 100 };
        assert_eq!(
            HeldRefusal::hold(too_large.clone(), &settings).unwrap_err(),
            too_large
        );
    }
}
