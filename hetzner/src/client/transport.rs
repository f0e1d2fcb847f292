//! One request to the API: the rate limit obeyed (the `RateLimit-*` headers, turns
//! taken when the budget is nearly spent, 429s waited out within a bound), transient
//! failures retried, error answers given their meaning.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;

use super::{HetznerClient, quote};
use crate::clock::unix_now_ms;
use crate::error::{ErrorClass, HetznerError, classify_code, classify_status};
use crate::model::{ErrorBody, ErrorEnvelope};

/// The rate limit as Hetzner last reported it (`RateLimit-*` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Requests per hour.
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix time (s) when the budget is full again.
    pub reset_unix_s: Option<u64>,
    /// When these headers were read (unix ms).
    pub observed_at_unix_ms: u64,
}

impl RateLimitStatus {
    fn from_headers(headers: &HeaderMap, now_unix_ms: u64) -> Option<RateLimitStatus> {
        let read = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let status = RateLimitStatus {
            limit: read("ratelimit-limit"),
            remaining: read("ratelimit-remaining"),
            reset_unix_s: read("ratelimit-reset"),
            observed_at_unix_ms: now_unix_ms,
        };
        (status.limit.is_some() || status.remaining.is_some()).then_some(status)
    }

    /// How long until one more request is allowed, given that the budget refills
    /// evenly until `reset` (Hetzner: 1 per second at 3,600/h).
    pub fn token_interval(&self, now_unix_ms: u64) -> Duration {
        let limit = self.limit.unwrap_or(3_600).max(1);
        let remaining = self.remaining.unwrap_or(0).min(limit);
        let fallback_ms = 3_600_000 / limit;
        let interval_ms = match self.reset_unix_s {
            Some(reset_s) if remaining < limit && reset_s * 1_000 > now_unix_ms => {
                (reset_s * 1_000 - now_unix_ms) / (limit - remaining)
            }
            _ => fallback_ms,
        };
        Duration::from_millis(interval_ms.clamp(10, fallback_ms.max(10)))
    }
}

/// An error answer before it is given meaning by the call that got it.
pub(super) enum Failure {
    Api { status: u16, error: ErrorBody },
    Other(HetznerError),
}

impl HetznerClient {
    /// Sends one request, waiting out 429s (within `rate_limit_wait_ms_max`) and
    /// retrying transient failures (within `transient_retries_max`). Every request here
    /// is safe to repeat: reads, deletes (404 is success), and creates (a repeat meets
    /// `uniqueness_error`, which resolves to the existing object).
    pub(super) async fn execute(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, Failure> {
        let url = self
            .base_url
            .join(path)
            .map_err(|error| Failure::Other(HetznerError::Config(format!("path {path:?}: {error}"))))?;
        let rate_wait_max = Duration::from_millis(self.config.rate_limit_wait_ms_max);
        let mut rate_waited = Duration::ZERO;
        let mut transient_retries = 0;
        let mut backoff = Duration::from_millis(self.config.transient_backoff_ms.max(1));
        loop {
            // When the budget is nearly spent, requests take turns instead of racing
            // each other into 429s.
            let nearly_spent = {
                let status = *self.rate_limit.lock().expect("rate limit lock");
                status
                    .remaining
                    .is_some_and(|remaining| remaining < self.config.pace_below_remaining)
            };
            let pacing_turn = if nearly_spent {
                let turn = self.pacing.lock().await;
                let status = *self.rate_limit.lock().expect("rate limit lock");
                let now_ms = unix_now_ms();
                let interval = status.token_interval(now_ms);
                let since_ms = now_ms.saturating_sub(status.observed_at_unix_ms);
                // One request at a time sees the previous one's headers; only an
                // empty budget needs a wait (a Reset rounded to whole seconds makes
                // the per-token estimate coarse when few tokens are missing).
                // That wait counts against `rate_limit_wait_ms_max` like a 429's: a
                // budget that refills too slowly fails as rate limited instead of
                // holding the order (and every request behind it) for an hour.
                if status.remaining == Some(0) && since_ms < interval.as_millis() as u64 {
                    let wait = interval - Duration::from_millis(since_ms);
                    if rate_waited + wait > rate_wait_max {
                        return Err(Failure::Other(HetznerError::RateLimited { retry_after: wait }));
                    }
                    tokio::time::sleep(wait).await;
                    rate_waited += wait;
                }
                Some(turn)
            } else {
                None
            };
            let mut request = self.http.request(method.clone(), url.clone());
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    if transient_retries < self.config.transient_retries_max {
                        transient_retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(Failure::Other(HetznerError::Transport { operation, source }));
                }
            };
            let status = response.status().as_u16();
            let now_ms = unix_now_ms();
            let observed = RateLimitStatus::from_headers(response.headers(), now_ms);
            if let Some(observed) = observed {
                *self.rate_limit.lock().expect("rate limit lock") = observed;
            }
            drop(pacing_turn);
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes.to_vec(),
                Err(source) => {
                    if transient_retries < self.config.transient_retries_max {
                        transient_retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(Failure::Other(HetznerError::Transport { operation, source }));
                }
            };
            if (200..300).contains(&status) {
                return Ok(bytes);
            }
            let error = parse_error_body(status, &bytes);
            let class = if error.code == "unknown" {
                classify_status(status)
            } else {
                classify_code(&error.code)
            };
            match class {
                ErrorClass::RateLimited => {
                    let retry_after = observed.unwrap_or_default().token_interval(now_ms);
                    if rate_waited + retry_after <= rate_wait_max {
                        tracing::debug!(
                            operation,
                            retry_after_ms = retry_after.as_millis() as u64,
                            "Hetzner rate limit: waiting"
                        );
                        tokio::time::sleep(retry_after).await;
                        rate_waited += retry_after;
                        continue;
                    }
                    return Err(Failure::Other(HetznerError::RateLimited { retry_after }));
                }
                ErrorClass::Transient if transient_retries < self.config.transient_retries_max => {
                    tracing::debug!(operation, status, code = %error.code, "Hetzner transient error: retrying");
                    transient_retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    continue;
                }
                _ => return Err(Failure::Api { status, error }),
            }
        }
    }

    pub(super) fn failure_to_error(&self, operation: &'static str, failure: Failure) -> HetznerError {
        match failure {
            Failure::Other(error) => error,
            Failure::Api { status, error } => api_error(operation, status, error),
        }
    }
}

fn api_error(operation: &'static str, status: u16, error: ErrorBody) -> HetznerError {
    match error.code.as_str() {
        "unauthorized" | "token_readonly" => HetznerError::Unauthorized {
            code: error.code,
            message: error.message,
        },
        "not_found" => HetznerError::NotFound {
            what: operation.to_owned(),
            message: error.message,
        },
        "invalid_input" | "json_error" => HetznerError::InvalidInput {
            operation,
            fields: error.field_names(),
            code: error.code,
            message: error.message,
        },
        "resource_unavailable" => HetznerError::SoldOut {
            server_type: String::new(),
            location: String::new(),
            message: error.message,
        },
        code => HetznerError::Api {
            operation,
            status,
            class: if code == "unknown" {
                classify_status(status)
            } else {
                classify_code(code)
            },
            code: error.code,
            message: error.message,
        },
    }
}

/// The error body of a non-2xx answer; one that is not Hetzner's error JSON becomes
/// code `unknown` with (the start of) the body as its message.
fn parse_error_body(status: u16, bytes: &[u8]) -> ErrorBody {
    match serde_json::from_slice::<ErrorEnvelope>(bytes) {
        Ok(envelope) => envelope.error,
        Err(_) => ErrorBody {
            code: "unknown".to_owned(),
            message: format!(
                "HTTP {status} with a body that is not Hetzner's error JSON: {:?}",
                quote(bytes)
            ),
            details: None,
        },
    }
}
