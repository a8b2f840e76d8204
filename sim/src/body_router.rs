//! The external-processor architecture for model routing (Envoy AI Gateway's external
//! processor, the Inference Extension's body-based router), reduced to its core as a
//! benchmark stand-in: Envoy sends the BUFFERED request body over ext_proc, this parses it
//! with serde_json and answers with the `x-ai-eg-model` header and `clear_route_cache`.

use crate::picker::{respond, serve, set_header, ResponseStream, MODEL_HEADER};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, processing_response, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, ImmediateResponse, ProcessingRequest, ProcessingResponse,
};
use serde::Deserialize;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

/// Serves the body router on `listener`; returns its address.
pub fn start(listener: TcpListener) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    serve(listener, BodyRouter);
    Ok(addr)
}

struct BodyRouter;

#[derive(Deserialize)]
struct ModelOnly {
    model: String,
}

#[tonic::async_trait]
impl ExternalProcessor for BodyRouter {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        Ok(Response::new(respond(request.into_inner(), |message| {
            match message.request? {
                // Headers first (Envoy applies header mutations only while it holds them),
                // then the buffered body.
                processing_request::Request::RequestHeaders(_) => Some(continue_headers()),
                processing_request::Request::RequestBody(body) => {
                    Some(match serde_json::from_slice::<ModelOnly>(&body.body) {
                        Ok(request) => route(request.model),
                        Err(error) => refuse(&error.to_string()),
                    })
                }
                _ => None,
            }
        })))
    }
}

fn continue_headers() -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse::default(),
        )),
        ..ProcessingResponse::default()
    }
}

fn route(model: String) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: vec![set_header(MODEL_HEADER, model)],
                    ..HeaderMutation::default()
                }),
                clear_route_cache: true,
                ..CommonResponse::default()
            }),
        })),
        ..ProcessingResponse::default()
    }
}

fn refuse(reason: &str) -> ProcessingResponse {
    let body = serde_json::json!({"error": {"message": reason, "type": "invalid_request_error", "param": "model", "code": "invalid_body"}});
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(
            ImmediateResponse {
                status: Some(HttpStatus {
                    code: StatusCode::BadRequest as i32,
                }),
                body: body.to_string().into_bytes(),
                ..ImmediateResponse::default()
            },
        )),
        ..ProcessingResponse::default()
    }
}
