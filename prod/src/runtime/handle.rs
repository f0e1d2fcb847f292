//! How the API and the drivers talk to the runtime: `RuntimeHandle` sends requests
//! (inputs to journal and handle, read-only queries) over a bounded channel into the
//! runtime task and waits for the answer, never without a bound; observations from
//! drivers go over a second channel. The receiving ends (`Inbox`) outlive a crashed
//! runtime task, so its successor takes over without the API noticing more than a
//! short 503. While the runtime recovers (or stands by for another's journal lock),
//! requests are refused at once with `Recovering`, not queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use payperplay_core::{Core, Input};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;
use utoipa::ToSchema;

use super::RuntimeError;
use super::alarms::Alarms;
use crate::drivers::ObservationSink;
use crate::store::RequestTag;

/// How long an API request waits for room in the input channel.
const SUBMIT_WAIT_MS_MAX: u64 = 2_000;
/// A request still in the channel this long after it was sent is dropped by the
/// runtime unhandled (its caller has been told `Busy`): nothing queued before a crash
/// is carried out minutes later.
pub(super) const REQUEST_TTL_MS: u64 = 5_000;
/// How long a caller waits for the runtime's answer once its request is in the
/// channel. Longer than `REQUEST_TTL_MS`: at this point a request was either dropped
/// unhandled or taken up, and then its outcome is unknown to the caller.
const ANSWER_WAIT_MS_MAX: u64 = 10_000;

/// Called in the runtime task once an input is handled: with the core when the core
/// accepted the input, with the reason when it did not.
pub(super) type AnswerFn = Box<dyn FnOnce(Result<&Core, RuntimeError>) + Send>;
pub(super) type QueryFn = Box<dyn FnOnce(&Core) + Send>;

pub(super) enum Request {
    Input {
        input: Input,
        answer: AnswerFn,
        expires_at: Instant,
        /// The API request it came from (journaled with it, its outcome recorded).
        request: Option<RequestTag>,
    },
    Query {
        query: QueryFn,
        expires_at: Instant,
    },
}

/// The receiving ends of the runtime's channels.
pub struct Inbox {
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) observations: mpsc::Receiver<Input>,
}

/// Where the runtime is between start and ready (readiness reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryPhase {
    /// Waiting for the journal lock (another runtime leads).
    Standby,
    /// Replaying the journal.
    Replaying,
    /// Re-issuing unfinished commands and reconciling.
    Reconciling,
    /// Taking inputs.
    Ready,
}

/// Recovery progress, shared between the runtime and readiness.
#[derive(Debug, Default)]
pub struct RecoveryProgress {
    phase: AtomicU8,
    /// Journal rows replayed so far, and the journal's last sequence number.
    pub(super) replayed: AtomicI64,
    pub(super) journal_len: AtomicI64,
}

/// A snapshot of [`RecoveryProgress`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecoveryView {
    pub phase: RecoveryPhase,
    pub replayed_inputs: i64,
    pub journal_inputs: i64,
}

impl RecoveryProgress {
    pub(super) fn set_phase(&self, phase: RecoveryPhase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    pub fn view(&self) -> RecoveryView {
        let phase = match self.phase.load(Ordering::SeqCst) {
            0 => RecoveryPhase::Standby,
            1 => RecoveryPhase::Replaying,
            2 => RecoveryPhase::Reconciling,
            _ => RecoveryPhase::Ready,
        };
        RecoveryView {
            phase,
            replayed_inputs: self.replayed.load(Ordering::SeqCst),
            journal_inputs: self.journal_len.load(Ordering::SeqCst),
        }
    }
}

/// How the API and drivers talk to the runtime.
#[derive(Clone)]
pub struct RuntimeHandle {
    requests: mpsc::Sender<Request>,
    observations: mpsc::Sender<Input>,
    pub(super) ready: Arc<AtomicBool>,
    pub(super) progress: Arc<RecoveryProgress>,
    pub(super) alarms: Arc<Alarms>,
}

pub fn channel(capacity: usize) -> (RuntimeHandle, Arc<Mutex<Inbox>>) {
    let (requests_tx, requests) = mpsc::channel(capacity);
    let (observations_tx, observations) = mpsc::channel(capacity);
    (
        RuntimeHandle {
            requests: requests_tx,
            observations: observations_tx,
            ready: Arc::new(AtomicBool::new(false)),
            progress: Arc::default(),
            alarms: Arc::default(),
        },
        Arc::new(Mutex::new(Inbox { requests, observations })),
    )
}

impl RuntimeHandle {
    /// Journals and handles `input`. When the core accepts it, `answer` runs against
    /// the core in the runtime task right after the input is handled and its commands
    /// are recorded, and its value is returned: the view the API answers with, in the
    /// same round trip. A refused input is `RuntimeError::Rejected` (`answer` does not
    /// run). Bounded: `Recovering` at once while the runtime is not ready, `Busy` when
    /// the channel stays full, `OutcomeUnknown` when the runtime took the input up but
    /// did not answer in time.
    pub async fn submit<R: Send + 'static>(
        &self,
        input: Input,
        answer: impl FnOnce(&Core) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let (reply, answered) = oneshot::channel();
        let answer: AnswerFn = Box::new(move |verdict| {
            let _ = reply.send(verdict.map(answer));
        });
        self.send(Request::Input {
            input,
            answer,
            expires_at: Instant::now() + Duration::from_millis(REQUEST_TTL_MS),
            request: RequestScope::submitted(),
        })
        .await?;
        match tokio::time::timeout(Duration::from_millis(ANSWER_WAIT_MS_MAX), answered).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => Err(RuntimeError::Stopped),
            Err(_) => Err(RuntimeError::OutcomeUnknown {
                seq: None,
                reason: format!("no answer within {ANSWER_WAIT_MS_MAX} ms"),
            }),
        }
    }

    /// Runs `f` against the core inside the runtime task and returns its answer.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let (reply, answered) = oneshot::channel();
        let query: QueryFn = Box::new(move |core| {
            let _ = reply.send(f(core));
        });
        self.send(Request::Query {
            query,
            expires_at: Instant::now() + Duration::from_millis(REQUEST_TTL_MS),
        })
        .await?;
        match tokio::time::timeout(Duration::from_millis(ANSWER_WAIT_MS_MAX), answered).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RuntimeError::Stopped),
            Err(_) => Err(RuntimeError::Busy),
        }
    }

    async fn send(&self, request: Request) -> Result<(), RuntimeError> {
        if !self.is_ready() {
            return Err(RuntimeError::Recovering);
        }
        self.requests
            .send_timeout(request, Duration::from_millis(SUBMIT_WAIT_MS_MAX))
            .await
            .map_err(|error| match error {
                mpsc::error::SendTimeoutError::Timeout(_) => RuntimeError::Busy,
                mpsc::error::SendTimeoutError::Closed(_) => RuntimeError::Stopped,
            })
    }

    pub fn observation_sink(&self) -> ObservationSink {
        ObservationSink::new(self.observations.clone())
    }

    /// True once the journal is replayed and the loop takes inputs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Where recovery is (standby, replaying with how far, reconciling, ready).
    pub fn recovery(&self) -> RecoveryView {
        self.progress.view()
    }

    /// The active alarms.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }
}

/// One mutating API request, while it is handled: its id (told to the client when the
/// outcome of its input is unknown, to ask later at `GET /v1/requests/{id}`) and the
/// user it came from, once authenticated. `submit` tags its input with it.
#[derive(Debug)]
pub struct RequestScope {
    pub id: i64,
    user_id: AtomicI64,
    submitted: AtomicBool,
}

tokio::task_local! {
    static REQUEST_SCOPE: Arc<RequestScope>;
}

impl RequestScope {
    /// A scope with a fresh random id (53 bits: exact as a JSON number everywhere).
    pub fn new() -> Arc<RequestScope> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random number generator works");
        let id = (u64::from_le_bytes(bytes) >> 11).max(1) as i64;
        Arc::new(RequestScope {
            id,
            user_id: AtomicI64::new(0),
            submitted: AtomicBool::new(false),
        })
    }

    /// Runs `future` (the request's handling) inside this scope.
    pub async fn run<F: std::future::Future>(self: Arc<Self>, future: F) -> F::Output {
        REQUEST_SCOPE.scope(self, future).await
    }

    /// Notes the authenticated user of the request being handled (if in a scope).
    pub fn note_user(user_id: i64) {
        let _ = REQUEST_SCOPE.try_with(|scope| scope.user_id.store(user_id, Ordering::SeqCst));
    }

    /// The tag of the request being handled, for its first input (a request id names
    /// one input); None outside a scope, before authentication, or for a second input.
    fn submitted() -> Option<RequestTag> {
        REQUEST_SCOPE
            .try_with(|scope| {
                let user_id = scope.user_id.load(Ordering::SeqCst);
                (user_id != 0 && !scope.submitted.swap(true, Ordering::SeqCst))
                    .then_some(RequestTag { id: scope.id, user_id })
            })
            .ok()
            .flatten()
    }

    /// The tag, when the request submitted an input to the runtime.
    pub fn tag_if_submitted(&self) -> Option<RequestTag> {
        let user_id = self.user_id.load(Ordering::SeqCst);
        (self.submitted.load(Ordering::SeqCst) && user_id != 0).then_some(RequestTag { id: self.id, user_id })
    }
}
