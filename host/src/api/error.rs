//! `api::Error`: the one error type of every handler, rendered as
//! `{"error": {"code", "message", "details"}}` with a precise status.
//!
//! Internals never leak: a database or runtime failure is logged with its
//! cause and answered with a bare 500 `internal` error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed syntax: bad JSON, bad query string, bad path parameter.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The route exists but not with this method (the answer lists the
    /// allowed ones in `Allow`).
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Forbidden(String),
    /// A channel connector refused the sender's signature (inbound events).
    #[error("{0}")]
    SignatureRejected(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    /// Well-formed but semantically invalid input.
    #[error("{message}")]
    Unprocessable { field: String, message: String },
    /// A 422 with a specific code instead of `validation_failed`.
    #[error("{message}")]
    UnprocessableCode {
        code: &'static str,
        field: String,
        message: String,
    },
    #[error("{0}")]
    Unavailable(String),
    /// A plugin the request depends on failed (trap, timeout, bad output):
    /// 502, so that a caller such as a channel provider retries later.
    #[error("{}", .0.message)]
    PluginFailed(crate::plugins::PluginFailure),
    /// The tenant's share of plugin capacity stayed full for a call's whole
    /// deadline: 429 `plugin_busy` with `Retry-After` (seconds).
    #[error("too many concurrent plugin calls for this tenant; retry later")]
    PluginBusy { retry_after_ms: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The documented error body (for OpenAPI).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_json`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Extra structured context (offending field, limits, ...).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl Error {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unprocessable {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized | Error::SignatureRejected(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unprocessable { .. } | Error::UnprocessableCode { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::PluginFailed(_) => StatusCode::BAD_GATEWAY,
            Error::PluginBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. } | Error::Conflict { code, .. } | Error::UnprocessableCode { code, .. } => {
                code
            }
            Error::Unauthorized => "unauthorized",
            Error::SignatureRejected(_) => "signature_rejected",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::Unprocessable { .. } => "validation_failed",
            Error::Unavailable(_) => "unavailable",
            Error::PluginFailed(_) => "plugin_failed",
            Error::PluginBusy { .. } => crate::plugins::BUSY,
            Error::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            Error::Unprocessable { field, .. } | Error::UnprocessableCode { field, .. } => json!({ "field": field }),
            Error::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            Error::Conflict { details, .. } => details.clone(),
            Error::PluginFailed(failure) => json!({ "cause": failure.code }),
            Error::PluginBusy { retry_after_ms } => json!({ "retry_after_s": retry_after_secs(*retry_after_ms) }),
            _ => json!({}),
        }
    }

    /// The JSON body, also used for per-item errors in batch responses.
    pub fn body(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string(), "details": self.details() })
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity } => Error::NotFound(entity),
            StoreError::Conflict { code, message } => Error::Conflict {
                code,
                message,
                details: json!({}),
            },
            StoreError::Invalid { field, message } => Error::Unprocessable { field, message },
            StoreError::Unprocessable { code, field, message } => Error::UnprocessableCode { code, field, message },
            StoreError::Database(e) => Error::Internal(anyhow::Error::new(e).context("database")),
            StoreError::Corrupt(msg) => Error::Internal(anyhow::anyhow!("corrupt stored data: {msg}")),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error while handling a request");
        }
        let mut response = (self.status(), Json(json!({ "error": self.body() }))).into_response();
        if let Error::PluginBusy { retry_after_ms } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                retry_after_secs(*retry_after_ms).into(),
            );
        }
        response
    }
}

/// `Retry-After` is whole seconds; never 0.
fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

pub type ApiResult<T> = Result<T, Error>;
