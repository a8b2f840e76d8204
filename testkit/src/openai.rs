//! Checks of the OpenAI error shape every refusal and every gateway error must have.

use crate::client::Reply;

/// Checks `reply` is `status` with `content-type: application/json` and a body
/// `{"error": {"message": non-empty, "type": error_type, "param", "code": code}}`.
pub fn expect_error(
    reply: &Reply,
    status: u16,
    error_type: &str,
    code: Option<&str>,
) -> Result<(), String> {
    crate::ensure!(
        reply.status == status,
        "status {} (want {status}): {}",
        reply.status,
        reply.text()
    );
    crate::ensure!(
        reply.header("content-type") == Some("application/json"),
        "content-type {:?}: {}",
        reply.header("content-type"),
        reply.text()
    );
    let body = reply.json()?;
    let error = &body["error"];
    crate::ensure!(
        error["type"] == error_type,
        "error type {} (want {error_type})",
        error["type"]
    );
    if let Some(code) = code {
        crate::ensure!(
            error["code"] == code,
            "error code {} (want {code})",
            error["code"]
        );
    }
    crate::ensure!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no error message in {body}"
    );
    crate::ensure!(
        error.as_object().is_some_and(|e| e.contains_key("param")),
        "no param in {body}"
    );
    Ok(())
}
