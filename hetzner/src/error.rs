//! `HetznerError`: every way a Hetzner Cloud call can fail, classified for the core.
//!
//! Hetzner answers errors as `{"error": {"code", "message", "details"}}` with the HTTP
//! status of its error table (the "Errors" section of the API description). The codes
//! the platform must tell apart get their own variant; the rest keep their code and are
//! classified transient or permanent by [`classify_code`].

use std::time::Duration;

/// What the caller (the production shell, and through it the core) should do about a
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The VM type is sold out in that location: fall back to another type or location.
    SoldOut,
    /// The API budget is spent: wait, then retry.
    RateLimited,
    /// Worth retrying the same request later (5xx, `conflict`, `locked`, a timeout).
    Transient,
    /// Retrying the same request cannot help (bad token, invalid input, a limit).
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum HetznerError {
    /// 412 `resource_unavailable`: the type cannot be ordered in that location now.
    #[error("VM type {server_type} is sold out in {location}: {message}")]
    SoldOut {
        server_type: String,
        location: String,
        message: String,
    },
    /// 429 `rate_limit_exceeded`, still after the client's bounded back-off.
    #[error("Hetzner API rate limit exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited { retry_after: Duration },
    /// 401 `unauthorized` / `token_readonly`: the API token is wrong, unknown or read-only.
    #[error("Hetzner API refused the token ({code}): {message}")]
    Unauthorized { code: String, message: String },
    /// 404 `not_found` on anything but a delete.
    #[error("{what} not found at Hetzner: {message}")]
    NotFound { what: String, message: String },
    /// 422 `invalid_input` (and 400 `json_error`): names the offending fields when
    /// Hetzner does.
    #[error(
        "Hetzner rejected the input of {operation} ({code}): {message}{}",
        fields_suffix(fields)
    )]
    InvalidInput {
        operation: &'static str,
        code: String,
        message: String,
        fields: Vec<String>,
    },
    /// Any other API error, with its code and whether retrying can help.
    #[error("Hetzner {operation} failed with HTTP {status} {code}: {message}")]
    Api {
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
        class: ErrorClass,
    },
    /// An answer that is not what the API description promises: names the operation and
    /// what was wrong (bad JSON, a missing field, an unexpected status).
    #[error("malformed answer from Hetzner to {operation}: {reason}")]
    Malformed { operation: &'static str, reason: String },
    /// The request never got an answer (connection refused, reset, timed out).
    #[error("could not reach the Hetzner API for {operation}: {source}")]
    Transport {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// An action ended in `error`.
    #[error("Hetzner action {action_id} ({command}) failed with {code}: {message}")]
    ActionFailed {
        action_id: u64,
        command: String,
        code: String,
        message: String,
    },
    /// An action was still running when the client's wait bound ran out.
    #[error("Hetzner action {action_id} ({command}) still running after {} ms", waited.as_millis())]
    ActionTimedOut {
        action_id: u64,
        command: String,
        waited: Duration,
    },
    /// A VM type named in our configuration does not exist at Hetzner.
    #[error("unknown VM type {name:?} (Hetzner offers: {known})")]
    UnknownServerType { name: String, known: String },
    /// A location named in our configuration does not exist at Hetzner.
    #[error("unknown location {name:?} (Hetzner offers: {known})")]
    UnknownLocation { name: String, known: String },
    /// A configuration value the client cannot use (base URL, label value, template).
    #[error("invalid Hetzner client configuration: {0}")]
    Config(String),
}

fn fields_suffix(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(" (fields: {})", fields.join(", "))
    }
}

impl HetznerError {
    /// What the caller should do about this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            HetznerError::SoldOut { .. } => ErrorClass::SoldOut,
            HetznerError::RateLimited { .. } => ErrorClass::RateLimited,
            HetznerError::Api { class, .. } => *class,
            HetznerError::Transport { .. } | HetznerError::ActionTimedOut { .. } | HetznerError::Malformed { .. } => {
                ErrorClass::Transient
            }
            HetznerError::ActionFailed { code, .. } => classify_code(code),
            HetznerError::Unauthorized { .. }
            | HetznerError::NotFound { .. }
            | HetznerError::InvalidInput { .. }
            | HetznerError::UnknownServerType { .. }
            | HetznerError::UnknownLocation { .. }
            | HetznerError::Config(_) => ErrorClass::Permanent,
        }
    }

    /// True when retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.class(),
            ErrorClass::Transient | ErrorClass::RateLimited | ErrorClass::SoldOut
        )
    }
}

/// Transient or permanent, per Hetzner's error table: the codes it documents as
/// "please retry" or as a passing state (a running action, maintenance, a backend
/// failure) are transient; everything about the request itself is permanent.
///
/// | code | status | class |
/// |---|---|---|
/// | `json_error` | 400 | permanent |
/// | `unauthorized`, `token_readonly` | 401 | permanent |
/// | `forbidden` | 403 | permanent |
/// | `maintenance` | 403 | transient |
/// | `resource_limit_exceeded`, `server_limit_exceeded` | 403 | permanent (until VMs are deleted) |
/// | `not_found` | 404 | permanent |
/// | `method_not_allowed` | 405 | permanent |
/// | `uniqueness_error` | 409 | permanent (create resolves it to the existing VM) |
/// | `conflict` | 409 | transient ("please retry") |
/// | `deprecated_api_endpoint` | 410 | permanent |
/// | `resource_unavailable` | 412 | sold out |
/// | `invalid_input`, `unsupported_error` | 422 | permanent |
/// | `service_error` | 422 | transient (an error within a service) |
/// | `locked` | 423 | transient (an action is running) |
/// | `protected` | 423 | permanent |
/// | `rate_limit_exceeded` | 429 | rate limited |
/// | `server_error`, `bad_gateway`, `unavailable`, `timeout` | 5xx | transient |
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        "resource_unavailable" => ErrorClass::SoldOut,
        "rate_limit_exceeded" => ErrorClass::RateLimited,
        "maintenance" | "conflict" | "service_error" | "locked" | "server_error" | "bad_gateway" | "unavailable"
        | "timeout" => ErrorClass::Transient,
        "json_error"
        | "unauthorized"
        | "token_readonly"
        | "forbidden"
        | "resource_limit_exceeded"
        | "server_limit_exceeded"
        | "not_found"
        | "method_not_allowed"
        | "uniqueness_error"
        | "deprecated_api_endpoint"
        | "invalid_input"
        | "unsupported_error"
        | "protected" => ErrorClass::Permanent,
        _ => ErrorClass::Permanent,
    }
}

/// The class of an error whose code we do not know, from its HTTP status alone.
pub(crate) fn classify_status(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::RateLimited,
        412 => ErrorClass::SoldOut,
        409 | 423 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_the_class_the_error_table_implies() {
        let expected = [
            ("json_error", ErrorClass::Permanent),
            ("unauthorized", ErrorClass::Permanent),
            ("forbidden", ErrorClass::Permanent),
            ("maintenance", ErrorClass::Transient),
            ("resource_limit_exceeded", ErrorClass::Permanent),
            ("server_limit_exceeded", ErrorClass::Permanent),
            ("not_found", ErrorClass::Permanent),
            ("uniqueness_error", ErrorClass::Permanent),
            ("conflict", ErrorClass::Transient),
            ("resource_unavailable", ErrorClass::SoldOut),
            ("invalid_input", ErrorClass::Permanent),
            ("service_error", ErrorClass::Transient),
            ("locked", ErrorClass::Transient),
            ("protected", ErrorClass::Permanent),
            ("rate_limit_exceeded", ErrorClass::RateLimited),
            ("server_error", ErrorClass::Transient),
            ("bad_gateway", ErrorClass::Transient),
            ("unavailable", ErrorClass::Transient),
            ("timeout", ErrorClass::Transient),
        ];
        for (code, class) in expected {
            assert_eq!(classify_code(code), class, "{code}");
        }
        assert_eq!(classify_status(502), ErrorClass::Transient);
        assert_eq!(classify_status(400), ErrorClass::Permanent);
    }

    #[test]
    fn invalid_input_names_its_fields() {
        let error = HetznerError::InvalidInput {
            operation: "create_server",
            code: "invalid_input".into(),
            message: "invalid input".into(),
            fields: vec!["server_type".into()],
        };
        assert!(error.to_string().contains("fields: server_type"), "{error}");
    }
}
