//! The API's one error type: every 4xx and 5xx is JSON
//! `{"error": {"code", "message", "field"?}}` with a machine-readable code. Internal
//! details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payperplay_core::{RejectReason, Rejection};
use serde::Serialize;
use utoipa::ToSchema;

use crate::runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("authentication required")]
    Unauthorized,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{message}")]
    Rejected { code: String, message: String },
    #[error("too many requests")]
    RateLimited { retry_after_s: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The input was taken up (journaled) but its answer was lost: it takes effect when
    /// the runtime recovers. The message says how to find out.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// An `Idempotency-Key` reused with another request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The first request with this `Idempotency-Key` is still being handled.
    #[error("{0}")]
    IdempotencyKeyInFlight(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, stable code, e.g. `invalid_field`, `not_found`.
    pub code: String,
    /// Human-readable message naming the bad field where there is one.
    pub message: String,
    /// The offending request field, when the error is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_field",
            field: Some(field.to_string()),
            message: format!("{field}: {}", message.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Rejected { .. } => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::OutcomeUnknown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyKeyInFlight(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn detail(&self) -> ErrorDetail {
        let (code, field, message) = match self {
            ApiError::BadRequest { code, field, message } => (code.to_string(), field.clone(), message.clone()),
            ApiError::Unauthorized => (
                "unauthorized".to_string(),
                None,
                "a valid bearer token is required in the Authorization header".to_string(),
            ),
            ApiError::InvalidCredentials => (
                "invalid_credentials".to_string(),
                None,
                "wrong email or password".to_string(),
            ),
            ApiError::Forbidden { code, message } => (code.to_string(), None, message.clone()),
            ApiError::NotFound { what } => ("not_found".to_string(), None, format!("{what} not found")),
            ApiError::Conflict { code, field, message } => (code.to_string(), field.clone(), message.clone()),
            ApiError::PayloadTooLarge => (
                "payload_too_large".to_string(),
                None,
                "request body too large".to_string(),
            ),
            ApiError::Rejected { code, message } => (code.clone(), None, message.clone()),
            ApiError::RateLimited { retry_after_s } => (
                "rate_limited".to_string(),
                None,
                format!("too many requests, try again in {retry_after_s} s"),
            ),
            ApiError::Unavailable(_) => (
                "unavailable".to_string(),
                None,
                "service temporarily unavailable".to_string(),
            ),
            ApiError::OutcomeUnknown(message) => ("outcome_unknown".to_string(), None, message.clone()),
            ApiError::IdempotencyKeyReused(message) => (
                "idempotency_key_reused".to_string(),
                Some("Idempotency-Key".to_string()),
                message.clone(),
            ),
            ApiError::IdempotencyKeyInFlight(message) => {
                ("idempotency_key_in_flight".to_string(), None, message.clone())
            }
            ApiError::Internal(_) => ("internal".to_string(), None, "internal error".to_string()),
        };
        ErrorDetail { code, message, field }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(detail) => tracing::error!(%detail, "request failed"),
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "request refused"),
            _ => {}
        }
        let body = ErrorBody { error: self.detail() };
        if let ApiError::RateLimited { retry_after_s } = self {
            return (
                status,
                [(axum::http::header::RETRY_AFTER, retry_after_s.to_string())],
                axum::Json(body),
            )
                .into_response();
        }
        (status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => ApiError::Conflict {
                code: "email_taken",
                field: Some("email".to_string()),
                message: "email: an account with this address exists".to_string(),
            },
            StoreError::ServerNameTaken => ApiError::Conflict {
                code: "name_taken",
                field: Some("name".to_string()),
                message: "name: you already have a server with this name".to_string(),
            },
            StoreError::HostnameTaken => ApiError::Conflict {
                code: "hostname_taken",
                field: Some("hostname".to_string()),
                message: "hostname: another server already uses this hostname".to_string(),
            },
            StoreError::NotFound(what) => ApiError::NotFound { what },
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            error @ (StoreError::Fenced { .. } | StoreError::JournalLocked) => ApiError::Unavailable(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::Rejected(rejection) => rejection.into(),
            RuntimeError::Busy => ApiError::Unavailable("runtime input queue is full".to_string()),
            RuntimeError::Stopped => ApiError::Unavailable("runtime is not running".to_string()),
            RuntimeError::Recovering => ApiError::Unavailable("runtime is recovering: retry shortly".to_string()),
            RuntimeError::Expired => ApiError::Unavailable("runtime too busy: the request was not handled".to_string()),
            RuntimeError::OutcomeUnknown { seq, .. } => ApiError::OutcomeUnknown(format!(
                "the request was taken up{} but its answer was lost; a journaled input takes effect when the \
                 runtime recovers: check the resource (or repeat the request with the same Idempotency-Key) \
                 before retrying",
                seq.map_or(String::new(), |seq| format!(" (journal {seq})"))
            )),
            error @ RuntimeError::Quarantined { .. } => ApiError::Internal(error.to_string()),
            error @ RuntimeError::Recovery(_) => ApiError::Internal(error.to_string()),
            RuntimeError::Store(error) => error.into(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let code = match &rejection.reason {
            RejectReason::UnknownUser => "unknown_user",
            RejectReason::UnknownServer | RejectReason::ServerDeleted => {
                return ApiError::NotFound { what: "server" };
            }
            RejectReason::UnknownNode => "unknown_node",
            RejectReason::UnknownCommand => "unknown_command",
            RejectReason::DuplicateId => "duplicate_id",
            RejectReason::InvalidTier { .. } => {
                return ApiError::invalid_field("ram_mib", rejection.reason.to_string());
            }
            RejectReason::InvalidAmount => {
                return ApiError::invalid_field("amount_micros", rejection.reason.to_string());
            }
            RejectReason::WrongState { .. } => "wrong_state",
            RejectReason::InsufficientBalance => "insufficient_balance",
            RejectReason::QueueFull => "queue_full",
            RejectReason::NoCapacityForTier { .. } => "no_capacity_for_tier",
            RejectReason::TooManyAttempts => "too_many_attempts",
            RejectReason::StartFailed => "start_failed",
            RejectReason::OutOfBalance => "out_of_balance",
        };
        ApiError::Rejected {
            code: code.to_string(),
            message: rejection.reason.to_string(),
        }
    }
}
