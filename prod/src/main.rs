//! `payperplay`: the production shell's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use payperplay_prod::api::{self, AppState};
use payperplay_prod::clock::{Clock, SystemClock};
use payperplay_prod::config::Config;
use payperplay_prod::router::PlatformBackend;
use payperplay_prod::store::{self, Store};
use payperplay_prod::trace_export::TraceExport;
use payperplay_prod::{Services, drivers_from_config, telemetry};
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(name = "payperplay", version, about = "PayPerPlay production shell")]
struct Cli {
    /// TOML configuration file (see prod/payperplay.example.toml). Environment
    /// variables override it.
    #[arg(long, short, global = true, env = "PAYPERPLAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the runtime loop and the mailer until SIGTERM or Ctrl-C.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Check the configuration and print it (secrets redacted).
    CheckConfig,
    /// Write the input journal as JSON lines `{"seq", "at_ms", "input"}` to stdout,
    /// oldest first (every core input; `payperplay-core` replays it exactly).
    ExportJournal,
    /// Write the journal's workload as a trace (`payperplay-trace` version 1, see
    /// scenarios/README.md) to stdout: `payperplay-sim run --trace FILE` replays it.
    ExportTrace,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging();
    // One TLS stack (rustls with aws-lc-rs) for SMTP and Postgres, installed once.
    if rustls::crypto::aws_lc_rs::default_provider().install_default().is_err() {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let config = Config::load(cli.config.as_deref())?;
    let tokio_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    tokio_runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(&config).await,
            Command::Openapi => openapi().await,
            Command::ExportJournal => export_journal(&config).await,
            Command::ExportTrace => export_trace(&config).await,
            Command::CheckConfig => {
                // Secrets are SecretString: their Debug output is redacted.
                println!("{config:#?}");
                Ok(())
            }
        }
    })
}

async fn connect(config: &Config) -> anyhow::Result<Store> {
    let pool = store::connect(config.database.url.expose_secret(), config.database.max_connections)
        .await
        .context("connecting to the database")?;
    Ok(Store::new(pool))
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = connect(config).await?;
    store.migrate().await.context("migrating")?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Journal rows read per query by the exports.
const EXPORT_PAGE_ROWS: i64 = 10_000;

async fn export_journal(config: &Config) -> anyhow::Result<()> {
    use std::io::Write;
    let store = connect(config).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    store
        .for_each_journal_row(EXPORT_PAGE_ROWS, |row| -> anyhow::Result<()> {
            let line = serde_json::json!({ "seq": row.seq, "at_ms": row.at_ms, "input": row.input });
            writeln!(out, "{line}")?;
            Ok(())
        })
        .await?;
    out.flush()?;
    Ok(())
}

async fn export_trace(config: &Config) -> anyhow::Result<()> {
    let store = connect(config).await?;
    let stdout = std::io::stdout();
    let mut export = TraceExport::new(std::io::BufWriter::new(stdout.lock()), config.core.clone());
    store
        .for_each_journal_row(EXPORT_PAGE_ROWS, |row| -> anyhow::Result<()> {
            let input: payperplay_core::Input = serde_json::from_value(row.input)
                .with_context(|| format!("journal entry {} is not a core input", row.seq))?;
            export.push(u64::try_from(row.at_ms).unwrap_or(0), input)?;
            Ok(())
        })
        .await?;
    let stats = export.finish()?;
    tracing::info!(
        inputs = stats.inputs,
        lines = stats.lines,
        sessions = stats.sessions,
        provisioning_observed = stats.provisioning_observed,
        user_actions_left_out = stats.user_actions_left_out,
        "trace exported"
    );
    Ok(())
}

async fn openapi() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&api::openapi_document())?);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let store = connect(&config).await?;
    store.check_migrated().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let drivers = drivers_from_config(&config, store.clone())
        .await
        .context("setting up the drivers")?;
    let services = Services::start(&config, store.clone(), clock.clone(), drivers.clone())
        .await
        .context("starting the runtime")?;
    // The players' front door, in this process, on the same runtime handle.
    let router = if config.router.enabled {
        let backend = PlatformBackend::new(services.handle.clone(), store.clone(), drivers.containers.clone());
        Some(
            payperplay_router::start(config.router.clone(), backend)
                .await
                .context("starting the player router")?,
        )
    } else {
        None
    };
    let mut state = AppState::new(
        &config,
        store,
        services.handle.clone(),
        clock,
        services.mail_wakeup.clone(),
    );
    if let Some(fleet) = &services.fleet {
        state = state.with_fleet(fleet.clone());
    }
    let app = api::app(state, config.http.body_limit_bytes);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    tracing::info!(listen = %config.http.listen, "serving");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    if let Some(router) = router {
        tracing::info!("HTTP stopped, stopping the player router");
        router.stop().await;
    }
    tracing::info!("HTTP stopped, stopping the runtime");
    services.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
