//! Extractors whose rejections are our JSON errors, naming the bad field.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json` with JSON errors: 400 `invalid_json` / `invalid_field`, 413, 415.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match &rejection {
        JsonRejection::JsonDataError(error) => {
            // "Failed to deserialize the JSON body into the target type: name: missing field `name` ..."
            let detail = error.body_text();
            let detail = detail
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&detail)
                .to_string();
            let field = field_of(&detail);
            ApiError::BadRequest {
                code: "invalid_field",
                field,
                message: detail,
            }
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest {
            code: "invalid_json",
            field: None,
            message: "request body is not valid JSON".to_string(),
        },
        JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest {
            code: "unsupported_media_type",
            field: None,
            message: "expected a body with Content-Type: application/json".to_string(),
        },
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest {
            code: "invalid_body",
            field: None,
            message: "request body could not be read".to_string(),
        },
    }
}

/// The field a serde error is about: "name: invalid type" → "name"; for
/// "missing field `x`" → "x"; for "unknown field `x`" → "x".
fn field_of(detail: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(start) = detail.find(marker) {
            let rest = &detail[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_string());
            }
        }
    }
    let (path, _) = detail.split_once(": ")?;
    (!path.is_empty() && path != "." && !path.contains(' ')).then(|| path.to_string())
}

/// `axum::extract::Path` with JSON errors (a bad id answers 400 naming the field).
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_path",
        field: Some("id".to_string()),
        message: format!("id: {}", rejection.body_text()),
    }
}

/// `axum::extract::Query` with JSON errors.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let detail = rejection.body_text();
    let detail = detail
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&detail)
        .to_string();
    ApiError::BadRequest {
        code: "invalid_query",
        field: field_of(&detail),
        message: detail,
    }
}

/// Parses a path id: positive, fits i64.
pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::invalid_field("id", "must be a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn field_names_are_found_in_serde_messages() {
        assert_eq!(
            field_of("missing field `email` at line 1 column 2").as_deref(),
            Some("email")
        );
        assert_eq!(
            field_of("ram_mib: invalid type: string \"x\", expected u32").as_deref(),
            Some("ram_mib")
        );
        assert_eq!(field_of("unknown field `foo`, expected `name`").as_deref(), Some("foo"));
        assert_eq!(field_of("expected value at line 1").as_deref(), None);
    }
}
