//! How the API and the drivers talk to the runtime: `RuntimeHandle` sends requests
//! (inputs to journal and handle, read-only queries) over a bounded channel into the
//! runtime task and waits for the answer; observations from drivers go over a second
//! channel. The receiving ends (`Inbox`) outlive a crashed runtime task, so its
//! successor takes over without the API noticing more than a short 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use payperplay_core::{Core, Input};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::RuntimeError;
use crate::drivers::ObservationSink;

/// How long an API request waits for room in the input channel.
const SUBMIT_WAIT_MS_MAX: u64 = 2_000;

/// Called in the runtime task once an input is handled: with the core when the core
/// accepted the input, with the reason when it did not.
pub(super) type AnswerFn = Box<dyn FnOnce(Result<&Core, RuntimeError>) + Send>;
pub(super) type QueryFn = Box<dyn FnOnce(&Core) + Send>;

pub(super) enum Request {
    Input { input: Input, answer: AnswerFn },
    Query(QueryFn),
}

/// The receiving ends of the runtime's channels.
pub struct Inbox {
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) observations: mpsc::Receiver<Input>,
}

/// How the API and drivers talk to the runtime.
#[derive(Clone)]
pub struct RuntimeHandle {
    requests: mpsc::Sender<Request>,
    observations: mpsc::Sender<Input>,
    pub(super) ready: Arc<AtomicBool>,
}

pub fn channel(capacity: usize) -> (RuntimeHandle, Arc<Mutex<Inbox>>) {
    let (requests_tx, requests) = mpsc::channel(capacity);
    let (observations_tx, observations) = mpsc::channel(capacity);
    (
        RuntimeHandle {
            requests: requests_tx,
            observations: observations_tx,
            ready: Arc::new(AtomicBool::new(false)),
        },
        Arc::new(Mutex::new(Inbox { requests, observations })),
    )
}

impl RuntimeHandle {
    /// Journals and handles `input`. When the core accepts it, `answer` runs against
    /// the core in the runtime task right after the input is handled and its commands
    /// are recorded, and its value is returned: the view the API answers with, in the
    /// same round trip. A refused input is `RuntimeError::Rejected` (`answer` does not
    /// run).
    pub async fn submit<R: Send + 'static>(
        &self,
        input: Input,
        answer: impl FnOnce(&Core) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let (reply, answered) = oneshot::channel();
        let answer: AnswerFn = Box::new(move |verdict| {
            let _ = reply.send(verdict.map(answer));
        });
        self.send(Request::Input { input, answer }).await?;
        answered.await.map_err(|_| RuntimeError::Stopped)?
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
        self.send(Request::Query(query)).await?;
        answered.await.map_err(|_| RuntimeError::Stopped)
    }

    async fn send(&self, request: Request) -> Result<(), RuntimeError> {
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
}
