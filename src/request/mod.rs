//! What the filter decides for one request, as plain Rust: whether its body is scanned (or
//! the filter answers it from the catalogue), and what the scanned body routes to. The host
//! layer only moves headers and bytes.
//!
//! [`json`] finds the model in a JSON body, [`multipart`] in a `multipart/form-data` one;
//! [`Rejection`] names every refusal; [`rewrite`] replaces the model value in Envoy's buffer
//! when the backend knows the model by another name; [`stream_options`] adds `include_usage`
//! to streaming requests when configured; [`header_map`] reads the host's header maps.

pub mod header_map;
pub mod json;
pub mod multipart;
mod rejection;
pub mod rewrite;
pub mod stream_options;

pub use rejection::Rejection;

use crate::catalogue::models_api::ModelsRequest;
use crate::catalogue::Catalogue;
use crate::config::{MissingModel, ModelEntry, Settings, UnknownModels};
use json::ModelScanner;
use multipart::MultipartScanner;
use std::ops::Range;

/// Read access to the request headers (names in lowercase).
pub trait RequestHeaders {
    /// The first value of header `name`.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// The model a body names: its decoded name and where its value stands in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModel {
    pub name: Vec<u8>,
    /// Offsets of the value as written: a JSON string's content between its quotes (escapes
    /// as written), a form field's bytes.
    pub value: Range<u64>,
}

/// What to do once the headers are in.
#[derive(Debug)]
pub enum HeadVerdict {
    /// Not a body this filter reads: forward untouched (without any client routing header).
    Skip,
    /// Hold the headers and scan the body.
    Scan(BodyRouter),
    Reject(Rejection),
    /// A request for the model list, answered from the catalogue.
    Models(ModelsRequest),
}

/// The result of a fully scanned body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'c> {
    Model(Routed<'c>),
    /// No `model` and the configuration lets the request through without the header.
    Unrouted,
}

/// Where a body's model sends it, and what changes on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<'c> {
    /// The routing header's value: the catalogue's name for the model, or the name as sent
    /// when the catalogue does not list it.
    pub model: Vec<u8>,
    /// The catalogue's entry, whose `headers` the upstream request carries.
    pub entry: Option<&'c ModelEntry>,
    /// Set when the backend knows the model by another name than the body gives.
    pub rewrite: Option<Rewrite>,
    /// The prompt template the endpoint picker hashes (its first bytes only), when pools are
    /// configured and the body has one.
    pub prompt: Option<Vec<u8>>,
}

impl Routed<'_> {
    /// The name the backend receives in the body: what the picker's hash chain starts with,
    /// as GIE's endpoint picker (after this filter) would read it.
    pub fn upstream_model(&self) -> &[u8] {
        self.entry
            .map_or(&self.model[..], |entry| entry.upstream().as_bytes())
    }
}

/// A model value to replace in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Where the value stands in the body as received.
    pub value: Range<u64>,
    /// The upstream name, encoded as the body's format writes it.
    pub replacement: Vec<u8>,
}

/// Looks at the request headers; `end_of_stream` says they end the request (no body).
pub fn inspect_head(
    settings: &Settings,
    headers: &impl RequestHeaders,
    end_of_stream: bool,
) -> HeadVerdict {
    let path = headers.header(":path").unwrap_or_default();
    if !settings.catalogue.is_empty() {
        let method = headers.header(":method").unwrap_or_default();
        if let Some(request) = ModelsRequest::of(method, path) {
            return HeadVerdict::Models(request);
        }
    }
    if end_of_stream || !settings.scans_path(path) {
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
    let content_type = headers.header("content-type").unwrap_or_default();
    // The endpoint picker's prompt template is built during the same scan, when there are pools.
    let prompt_bytes = settings.pools.iter().map(|p| p.prefix.prompt_bytes()).max();
    let scanner = match multipart::boundary(content_type) {
        Ok(None) => Scanner::Json(match prompt_bytes {
            Some(limit) => ModelScanner::with_prompt(settings.max_model_bytes, limit),
            None => ModelScanner::new(settings.max_model_bytes),
        }),
        Ok(Some(boundary)) => Scanner::Multipart(Box::new(MultipartScanner::new(
            &boundary,
            settings.max_model_bytes,
        ))),
        Err(error) => return HeadVerdict::Reject(error.into()),
    };
    HeadVerdict::Scan(BodyRouter::new(settings, scanner))
}

/// The scanner for the body's format, chosen by its content type.
#[derive(Debug)]
enum Scanner {
    Json(ModelScanner),
    /// Boxed: its delimiter search is several times the JSON scanner's size.
    Multipart(Box<MultipartScanner>),
}

/// Scans one request body as it arrives and decides its route.
#[derive(Debug)]
pub struct BodyRouter {
    scanner: Scanner,
    max_body_bytes: u64,
    missing_model: MissingModel,
    unknown_models: UnknownModels,
}

impl BodyRouter {
    fn new(settings: &Settings, scanner: Scanner) -> Self {
        Self {
            scanner,
            max_body_bytes: settings.max_body_bytes,
            missing_model: settings.missing_model,
            unknown_models: settings.unknown_models,
        }
    }

    /// Bytes scanned so far.
    pub fn scanned(&self) -> u64 {
        match &self.scanner {
            Scanner::Json(scanner) => scanner.consumed(),
            Scanner::Multipart(scanner) => scanner.consumed(),
        }
    }

    /// What the body scanned so far says about streaming (a form never streams).
    pub fn stream_shape(&self) -> json::StreamShape {
        match &self.scanner {
            Scanner::Json(scanner) => scanner.stream_shape(),
            Scanner::Multipart(_) => json::StreamShape::default(),
        }
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
        self.check_size(self.scanned() + chunk.len() as u64)?;
        match &mut self.scanner {
            Scanner::Json(scanner) => scanner.feed(chunk).map_err(Rejection::from),
            Scanner::Multipart(scanner) => scanner.feed(chunk).map_err(Rejection::from),
        }
    }

    /// Ends the body and decides the route, by `catalogue`.
    pub fn finish(self, catalogue: &Catalogue) -> Result<Route<'_>, Rejection> {
        let (found, multipart, prompt) = match self.scanner {
            Scanner::Json(mut scanner) => {
                let prompt = scanner.take_prompt();
                (scanner.finish()?, false, prompt)
            }
            Scanner::Multipart(scanner) => (scanner.finish()?, true, None),
        };
        let Some(found) = found else {
            return match self.missing_model {
                MissingModel::PassThrough => Ok(Route::Unrouted),
                MissingModel::Reject => Err(Rejection::MissingModel),
            };
        };
        check_model(&found.name)?;
        let Some(entry) = catalogue.lookup(&found.name) else {
            if self.unknown_models == UnknownModels::Reject {
                return Err(Rejection::ModelNotFound { model: found.name });
            }
            return Ok(Route::Model(Routed {
                model: found.name,
                entry: None,
                rewrite: None,
                prompt,
            }));
        };
        let upstream = entry.upstream();
        let rewrite = (upstream.as_bytes() != found.name).then(|| Rewrite {
            value: found.value,
            replacement: if multipart {
                upstream.as_bytes().to_vec()
            } else {
                json_string_content(upstream)
            },
        });
        Ok(Route::Model(Routed {
            model: entry.name.as_bytes().to_vec(),
            entry: Some(entry),
            rewrite,
            prompt,
        }))
    }
}

/// `name` as the content of a JSON string. Catalogue names hold no control characters, so
/// only quotes and backslashes need escaping.
fn json_string_content(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if byte == b'"' || byte == b'\\' {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out
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

/// Checks a decoded model name against what a header value can carry unchanged: UTF-8,
/// without control characters or surrounding spaces.
pub fn check_model(model: &[u8]) -> Result<(), Rejection> {
    if model.is_empty() {
        return Err(Rejection::EmptyModel);
    }
    let control = |b: &u8| *b < 0x20 || *b == 0x7f;
    if model.iter().any(control)
        || model.starts_with(b" ")
        || model.ends_with(b" ")
        || std::str::from_utf8(model).is_err()
    {
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

    fn route<'s>(settings: &'s Settings, chunks: &[&[u8]]) -> Result<Route<'s>, Rejection> {
        route_typed(settings, "application/json", chunks)
    }

    fn route_typed<'s>(
        settings: &'s Settings,
        content_type: &'static str,
        chunks: &[&[u8]],
    ) -> Result<Route<'s>, Rejection> {
        let headers = head(CHAT, &[("content-type", content_type)]);
        let HeadVerdict::Scan(mut router) = inspect_head(settings, &headers, false) else {
            panic!("chat completions must be scanned");
        };
        for chunk in chunks {
            router.feed(chunk)?;
        }
        router.finish(&settings.catalogue)
    }

    /// Routed by the name as sent, without catalogue.
    fn as_sent(model: &str) -> Route<'static> {
        Route::Model(Routed {
            model: model.as_bytes().to_vec(),
            entry: None,
            rewrite: None,
            prompt: None,
        })
    }

    fn with_catalogue(models: &str, unknown_models: &str) -> Settings {
        Settings::parse(
            format!(r#"{{"models":{models},"unknown_models":"{unknown_models}"}}"#).as_bytes(),
        )
        .unwrap()
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
            Ok(as_sent("abcd"))
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
        for bad in [
            &b"a\nb"[..],
            b"a\r",
            b"\0",
            b"a\tb",
            b"a\x7f",
            b" a",
            b"a ",
            b"\xff",
        ] {
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

    #[test]
    fn the_content_type_chooses_the_scanner() {
        let settings = Settings::default();
        let form = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nm\r\n--XyZ--";
        assert_eq!(route_typed(&settings, form, &[body]), Ok(as_sent("m")));
        // A JSON body sent as a form is a broken form, and a form sent as JSON is refused.
        assert!(matches!(
            route_typed(&settings, form, &[br#"{"model":"m"}"#]),
            Err(Rejection::MalformedMultipart { .. })
        ));
        assert!(matches!(
            route_typed(&settings, "application/json", &[body]),
            Err(Rejection::NotAnObject)
        ));
        let verdict = inspect_head(
            &settings,
            &head(CHAT, &[("content-type", "multipart/form-data")]),
            false,
        );
        assert!(matches!(
            verdict,
            HeadVerdict::Reject(Rejection::MalformedMultipart { offset: 0, .. })
        ));
    }

    #[test]
    fn aliases_route_by_the_catalogue_name_and_rewrite_the_body() {
        let settings = with_catalogue(
            r#"[{"name":"llama","aliases":["gpt-4o"],"headers":{"x-base":"llama"}},
                {"name":"q\"uoted","upstream_name":"served \\ \"name\""},
                {"name":"mistral:latest"}]"#,
            "pass_through",
        );
        let catalogue = &settings.catalogue;
        let body = br#"{"model":"gpt-4o"}"#;
        assert_eq!(
            route(&settings, &[body]),
            Ok(Route::Model(Routed {
                model: b"llama".to_vec(),
                entry: catalogue.lookup(b"llama"),
                rewrite: Some(Rewrite {
                    value: 10..16,
                    replacement: b"llama".to_vec(),
                }),
                prompt: None,
            }))
        );
        // The backend's own name, however escaped in the body, is not rewritten.
        let Ok(Route::Model(routed)) = route(&settings, &[br#"{"model":"mistral\u003alatest"}"#])
        else {
            panic!("mistral routes");
        };
        assert_eq!(
            (routed.model.as_slice(), routed.rewrite),
            (&b"mistral:latest"[..], None)
        );
        // An upstream name is written escaped into JSON, raw into a form field.
        let Ok(Route::Model(routed)) = route(&settings, &[br#"{"model":"q\"uoted"}"#]) else {
            panic!("q\"uoted routes");
        };
        assert_eq!(
            routed.rewrite.unwrap().replacement,
            br#"served \\ \"name\""#.to_vec()
        );
        let form = "multipart/form-data; boundary=b";
        let body =
            b"--b\r\nContent-Disposition: form-data; name=model\r\n\r\nq\"uoted\r\n--b--\r\n";
        let Ok(Route::Model(routed)) = route_typed(&settings, form, &[body]) else {
            panic!("the form routes");
        };
        let rewrite = routed.rewrite.unwrap();
        assert_eq!(rewrite.replacement, br#"served \ "name""#.to_vec());
        assert_eq!(
            &body[rewrite.value.start as usize..rewrite.value.end as usize],
            b"q\"uoted"
        );
        // Not in the catalogue: routed as sent.
        assert_eq!(
            route(&settings, &[br#"{"model":"other"}"#]),
            Ok(as_sent("other"))
        );
    }

    #[test]
    fn strict_catalogues_refuse_unknown_models() {
        let settings = with_catalogue(r#"[{"name":"llama","aliases":["gpt-4o"]}]"#, "reject");
        assert_eq!(
            route(&settings, &[br#"{"model":"gpt-5"}"#]),
            Err(Rejection::ModelNotFound {
                model: b"gpt-5".to_vec()
            })
        );
        assert!(route(&settings, &[br#"{"model":"gpt-4o"}"#]).is_ok());
        // A broken name is refused as such, before the catalogue is consulted.
        assert_eq!(
            route(&settings, &[br#"{"model":" gpt-5"}"#]),
            Err(Rejection::InvalidModel)
        );
    }

    #[test]
    fn with_pools_the_prompt_template_comes_with_the_route() {
        let settings = Settings::parse(
            br#"{"models":[{"name":"llama","aliases":["gpt-4o"],"upstream_name":"meta-llama"}],
                 "pools":[{"name":"p","models":["llama"],"endpoints":["127.0.0.1:8000"]}]}"#,
        )
        .unwrap();
        let body = br#"{"messages":[{"content":"Hi","role":"user"}],"model":"gpt-4o"}"#;
        let Ok(Route::Model(routed)) = route(&settings, &[&body[..20], &body[20..]]) else {
            panic!("routed");
        };
        assert_eq!(
            routed.prompt.as_deref(),
            Some(&b"<|im_start|>user\nHi<|im_end|>\n"[..])
        );
        assert_eq!(routed.upstream_model(), b"meta-llama");
        // Without pools, no template is built.
        let plain = Settings::default();
        let Ok(Route::Model(routed)) = route(&plain, &[body]) else {
            panic!("routed");
        };
        assert_eq!(routed.upstream_model(), b"gpt-4o");
        assert_eq!(routed.prompt, None);
    }

    #[test]
    fn the_model_list_is_answered_only_with_a_catalogue() {
        let get = |settings: &Settings, path: &'static str| {
            inspect_head(settings, &head(path, &[(":method", "GET")]), true)
        };
        assert!(matches!(
            get(&Settings::default(), "/v1/models"),
            HeadVerdict::Skip
        ));
        let settings = with_catalogue(r#"[{"name":"llama"}]"#, "pass_through");
        assert!(matches!(
            get(&settings, "/v1/models"),
            HeadVerdict::Models(ModelsRequest::List)
        ));
        assert!(matches!(
            get(&settings, "/v1/models/llama"),
            HeadVerdict::Models(ModelsRequest::Retrieve(_))
        ));
        assert!(matches!(get(&settings, "/v1/modelsx"), HeadVerdict::Skip));
    }
}
