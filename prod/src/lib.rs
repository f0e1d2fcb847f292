//! PayPerPlay's production shell: drives the pure core (`payperplay-core`) with real
//! requests and observations and carries out its decisions.
//!
//! - [`runtime`]: one task owns the core; every input is journaled, then handled.
//! - [`store`]: Postgres (sqlx); every query of the shell lives there.
//! - [`api`]: the REST API under /v1 (axum + utoipa).
//! - [`email`]: the mail outbox and the SMTP mailer (lettre).
//! - [`drivers`]: the driver traits (`CloudProvider`, `ContainerDriver`), the real
//!   container driver (Docker engines, locally or over SSH) and the cloud fake.
//! - [`observers`]: a task per node telling the core what happens there (readiness,
//!   players, exits, node health, reconciliation).
//! - [`supervise`]: restarts background tasks that panic or fail.
//! - [`trace_export`]: the input journal as a workload trace the simulator replays.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod drivers;
pub mod email;
pub mod error;
pub mod observers;
pub mod router;
pub mod runtime;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod trace_export;

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::drivers::Drivers;
use crate::drivers::docker::{DockerContainers, FleetError, NodeFleet, secret_box};
use crate::drivers::hetzner::{HetznerCloud, NoCloud};
use crate::email::Mailer;
use crate::runtime::{Runtime, RuntimeDeps, RuntimeHandle};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] email::MailError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("cloud: {0}")]
    Cloud(#[from] payperplay_hetzner::HetznerError),
    #[error("recovery: {0}")]
    Recovery(#[from] runtime::RecoveryError),
}

/// The background half of the shell: the runtime owning the core and the mailer,
/// both supervised. The journal is replayed before `start` returns, so the API
/// built on `handle` never sees a half-recovered core.
pub struct Services {
    pub handle: RuntimeHandle,
    /// The nodes' engines (their status for the admin view), when containers are real.
    pub fleet: Option<Arc<NodeFleet>>,
    pub mail_wakeup: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Services {
    pub async fn start(
        config: &Config,
        store: Store,
        clock: Arc<dyn Clock>,
        drivers: Drivers,
    ) -> Result<Services, StartError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mail_wakeup = Arc::new(Notify::new());
        let (handle, inbox) = runtime::channel(config.runtime.input_queue_len_max);
        let fleet = drivers.fleet.clone();
        let cloud = drivers.cloud.clone();
        let deps = RuntimeDeps {
            store: store.clone(),
            clock: clock.clone(),
            drivers,
            mail_wakeup: mail_wakeup.clone(),
            core_config: config.core.clone(),
            runtime_config: config.runtime.clone(),
            fleet: config.fleet.clone(),
            public_base_url: config.http.public_base_url.clone(),
        };
        // Leads at once when the journal lock is free (or freed within the configured
        // wait); otherwise stands by: the API answers 503 until this runtime leads.
        let lock_wait = store::LockWait::UpToMs(config.runtime.journal_lock_wait_ms);
        let recovered = match Runtime::recover(deps.clone(), handle.clone(), lock_wait).await {
            Ok(runtime) => Some(runtime),
            Err(runtime::RuntimeError::Store(StoreError::JournalLocked)) => None,
            Err(runtime::RuntimeError::Store(error)) => return Err(error.into()),
            Err(runtime::RuntimeError::Recovery(error)) => return Err(error.into()),
            Err(error) => return Err(StoreError::Unavailable(error.to_string()).into()),
        };
        let mailer = Arc::new(Mailer::new(
            &config.smtp,
            store.clone(),
            clock.clone(),
            mail_wakeup.clone(),
        )?);

        let mut tasks = Vec::new();
        let mut first = recovered;
        let runtime_handle = handle.clone();
        let runtime_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(supervise::supervise(
            "runtime",
            shutdown_rx.clone(),
            move || {
                let recovered = first.take();
                let deps = deps.clone();
                let handle = runtime_handle.clone();
                let inbox = inbox.clone();
                let shutdown = runtime_shutdown.clone();
                async move {
                    let runtime = match recovered {
                        Some(runtime) => runtime,
                        // A standby waits for the lock until shutdown.
                        None => {
                            let mut stopping = shutdown.clone();
                            tokio::select! {
                                recovered = Runtime::recover(deps, handle, store::LockWait::Forever) => recovered?,
                                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                            }
                        }
                    };
                    runtime.run(inbox, shutdown).await
                }
            },
        )));
        if let Some(fleet) = &fleet {
            // Nodes that join later (cloud VMs once their engine answered) get theirs then.
            let mut added = fleet.subscribe_added();
            tasks.extend(observers::spawn(fleet.clone(), handle.clone(), shutdown_rx.clone()));
            let (fleet, observer_handle, mut observer_shutdown) = (fleet.clone(), handle.clone(), shutdown_rx.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = observer_shutdown.changed() => return,
                        name = added.recv() => match name {
                            Some(name) => {
                                observers::spawn_node(fleet.clone(), observer_handle.clone(), observer_shutdown.clone(), name);
                            }
                            None => return,
                        },
                    }
                }
            }));
        }
        if let Some(interval_ms) = cloud.reconcile_interval_ms() {
            tasks.push(tokio::spawn(cloud_reconciliation(
                cloud,
                handle.clone(),
                interval_ms,
                shutdown_rx.clone(),
            )));
        }
        let pruner = (
            store.clone(),
            clock.clone(),
            config.retention.clone(),
            shutdown_rx.clone(),
        );
        tasks.push(tokio::spawn(supervise::supervise(
            "pruner",
            shutdown_rx.clone(),
            move || {
                let (store, clock, retention, shutdown) = pruner.clone();
                store::run_pruner(store, clock, retention, shutdown)
            },
        )));
        let (purge_store, purge_clock, purge_after_ms) =
            (store.clone(), clock.clone(), config.auth.unverified_purge_after_ms);
        let purge_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(supervise::supervise(
            "unverified-purge",
            shutdown_rx.clone(),
            move || {
                auth::purge_unverified_accounts(
                    purge_store.clone(),
                    purge_clock.clone(),
                    purge_after_ms,
                    purge_shutdown.clone(),
                )
            },
        )));
        let mailer_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(supervise::supervise("mailer", shutdown_rx, move || {
            let mailer = mailer.clone();
            let shutdown = mailer_shutdown.clone();
            async move { mailer.run(shutdown).await }
        })));
        Ok(Services {
            handle,
            fleet,
            mail_wakeup,
            shutdown,
            tasks,
        })
    }

    /// Signals shutdown and waits for the runtime and mailer to finish their
    /// current step. Inputs not yet journaled are not handled (their callers get
    /// 503); everything journaled is recovered by the next start.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The drivers `serve` uses: containers on the configured nodes' Docker engines (a
/// node without an `engine` takes none) and Hetzner Cloud when `[cloud]` is set
/// (without it, no VM is ever ordered). The cloud is checked here (token, the core
/// catalog's VM types and locations, the SSH key), so a bad `[cloud]` stops `serve`
/// with an error naming what was wrong; engines are not connected here (one that
/// does not answer shows as not ready).
pub async fn drivers_from_config(config: &Config, store: Store) -> Result<Drivers, StartError> {
    let fleet = Arc::new(NodeFleet::from_config(
        &config.containers,
        &config.fleet.dedicated_nodes,
    ));
    let secrets = secret_box(&config.secrets)?;
    let cloud: Arc<dyn drivers::CloudProvider> = match &config.cloud {
        Some(cloud_config) => {
            let cloud = HetznerCloud::new(cloud_config)?.with_fleet(fleet.clone());
            cloud.check(&config.core.catalog).await?;
            // VMs of an earlier run are nodes again before the runtime re-issues
            // commands for them; reconciliation deletes those the core does not know.
            match cloud.adopt_all().await {
                Ok(adopted) if !adopted.is_empty() => tracing::info!(?adopted, "cloud VMs adopted as nodes"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not list the cloud's VMs at start"),
            }
            Arc::new(cloud)
        }
        None => Arc::new(NoCloud),
    };
    Ok(Drivers {
        cloud,
        containers: Arc::new(DockerContainers::new(fleet.clone(), store, secrets)),
        fleet: Some(fleet),
    })
}

/// The cloud's reconciliation by label: at start (once the runtime answers) and every
/// `interval_ms`; a failed pass is logged and tried again at the next tick.
async fn cloud_reconciliation(
    cloud: Arc<dyn drivers::CloudProvider>,
    handle: RuntimeHandle,
    interval_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(interval_ms.max(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {
                if let Err(error) = cloud.reconcile(&handle).await {
                    tracing::warn!(%error, "cloud reconciliation failed");
                }
            }
        }
    }
}
