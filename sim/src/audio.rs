//! Audio transcriptions and translations: the `multipart/form-data` request read with multer,
//! as a real server reads it, and answered in OpenAI's transcription shape with what was
//! received (the model field, the file's name and size) so that a test can check both.

use crate::api::{error, full, json_response, served_model, ResponseBody};
use crate::Replica;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;

/// What a form carried, as multer read it.
#[derive(Debug, Default)]
struct Form {
    /// The first `model` field.
    model: Option<String>,
    /// The `file` part's name and size.
    file: Option<(String, usize)>,
    response_format: Option<String>,
}

/// The first `model` field of a form as multer reads it: what a server built on it would
/// route by. For tests comparing the filter's multipart scanner with a real parser.
pub async fn model_field(content_type: &str, body: Bytes) -> Result<Option<String>, String> {
    read_form(content_type, body)
        .await
        .map(|form| form.model)
        .map_err(|e| e.to_string())
}

async fn read_form(content_type: &str, body: Bytes) -> Result<Form, multer::Error> {
    let boundary = multer::parse_boundary(content_type)?;
    let mut multipart =
        multer::Multipart::new(tokio_stream::once(Ok::<_, Infallible>(body)), boundary);
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await?;
        match name.as_str() {
            "model" if form.model.is_none() => {
                form.model = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            "file" => form.file = Some((file_name, bytes.len())),
            "response_format" => {
                form.response_format = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            _ => {}
        }
    }
    Ok(form)
}

/// `POST /v1/audio/transcriptions` (or `/translations`, `translate` set).
pub async fn transcription(
    replica: &Replica,
    content_type: &str,
    body: Bytes,
    translate: bool,
) -> Response<ResponseBody> {
    let form = match read_form(content_type, body).await {
        Ok(form) => form,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("not a multipart/form-data body: {e}"),
                "bad_request",
            )
        }
    };
    let model = match served_model(replica, form.model.as_deref()) {
        Ok(model) => model,
        Err(refusal) => return *refusal,
    };
    let Some((file_name, file_bytes)) = form.file else {
        return error(
            StatusCode::BAD_REQUEST,
            "'file' is required",
            "missing_file",
        );
    };
    let task = if translate { "translate" } else { "transcribe" };
    let text = format!("{task}d {file_bytes} bytes of {file_name}");
    if form.response_format.as_deref() == Some("text") {
        let content_type = "text/plain; charset=utf-8";
        return full(StatusCode::OK, content_type, Bytes::from(text), replica);
    }
    json_response(
        replica,
        &json!({
            "text": text, "task": task, "model": model, "file_name": file_name,
            "file_bytes": file_bytes, "served_by": replica.id,
        }),
    )
}
