//! A stand-in for an InferencePool's endpoint picker (EPP): an Envoy ext_proc gRPC server
//! that, on the request headers, picks a replica of its pool and answers with
//! `x-gateway-destination-endpoint: ip:port` for an ORIGINAL_DST cluster to use. It records
//! the routing header of every request it saw, so tests can prove which picker ran.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, processing_response, CommonResponse, HeaderMutation, HeadersResponse,
    ProcessingRequest, ProcessingResponse,
};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The header an EPP answers with, read by the pool's ORIGINAL_DST cluster.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// The routing header the picker records.
pub const MODEL_HEADER: &str = "x-ai-eg-model";

/// A running picker for one pool.
#[derive(Debug)]
pub struct Picker {
    pub addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
    /// The routing header of each request picked for, `None` when it had none.
    seen: Mutex<Vec<Option<String>>>,
}

impl Picker {
    /// Serves the ext_proc protocol on `listener`, picking among `endpoints` in turn.
    pub fn start(listener: TcpListener, endpoints: Vec<SocketAddr>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            endpoints,
            next: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        serve(listener, Service(Arc::clone(&state)));
        Ok(Self { addr, state })
    }

    /// The routing header of every request this picker handled.
    pub fn seen_models(&self) -> Vec<Option<String>> {
        self.state.seen.lock().expect("picker log").clone()
    }
}

/// Serves an ext_proc service on `listener`, on the current tokio runtime.
pub(crate) fn serve(listener: TcpListener, service: impl ExternalProcessor) {
    // Small gRPC messages must not wait for Nagle's algorithm (40 ms stalls otherwise).
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExternalProcessorServer::new(service))
            .serve_with_incoming(incoming),
    );
}

/// Answers each message of an ext_proc stream with `answer`, which may skip a message.
pub(crate) fn respond(
    mut inbound: Streaming<ProcessingRequest>,
    mut answer: impl FnMut(ProcessingRequest) -> Option<ProcessingResponse> + Send + 'static,
) -> ResponseStream {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            let Some(reply) = answer(message) else {
                continue;
            };
            if sender.send(Ok(reply)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// A header to set, replacing any value the request had.
pub(crate) fn set_header(name: &str, value: impl Into<Vec<u8>>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            raw_value: value.into(),
            ..HeaderValue::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

struct Service(Arc<State>);

pub(crate) type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Service {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let state = Arc::clone(&self.0);
        Ok(Response::new(respond(
            request.into_inner(),
            move |message| {
                let Some(processing_request::Request::RequestHeaders(headers)) = message.request
                else {
                    return None;
                };
                let model = headers.headers.and_then(|map| {
                    map.headers
                        .into_iter()
                        .find(|h| h.key == MODEL_HEADER)
                        .map(|h| header_text(&h))
                });
                state.seen.lock().expect("picker log").push(model);
                let index = state.next.fetch_add(1, Ordering::SeqCst) % state.endpoints.len();
                Some(pick(state.endpoints[index]))
            },
        )))
    }
}

/// Envoy sends header values in `raw_value`; older versions used `value`.
fn header_text(header: &HeaderValue) -> String {
    if header.raw_value.is_empty() {
        header.value.clone()
    } else {
        String::from_utf8_lossy(&header.raw_value).into_owned()
    }
}

fn pick(endpoint: SocketAddr) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(CommonResponse {
                    header_mutation: Some(HeaderMutation {
                        set_headers: vec![set_header(DESTINATION_HEADER, endpoint.to_string())],
                        ..HeaderMutation::default()
                    }),
                    ..CommonResponse::default()
                }),
            },
        )),
        ..ProcessingResponse::default()
    }
}
