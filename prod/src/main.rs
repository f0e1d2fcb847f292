//! `payperplay`: the production shell's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use payperplay_prod::api::{self, AppState};
use payperplay_prod::clock::{Clock, SystemClock};
use payperplay_prod::config::Config;
use payperplay_prod::router::{PlatformBackend, RemoteBackend};
use payperplay_prod::store::{self, Store};
use payperplay_prod::trace_export;
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
    /// Grant or revoke the admin role (the only way to it; written to the admin audit).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Secret keys (PAYPERPLAY_SECRET_KEY or [secrets]; the first key seals).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run only the player router (`[router]`) as its own process, asking `serve` at
    /// `router_link.api_url` with the router token (`PAYPERPLAY_ROUTER_TOKEN`), until
    /// SIGTERM or Ctrl-C.
    Router,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every sealed secret (OAuth provider tokens, RCON passwords) with the
    /// first configured key. Put the new key first, keep the old ones until this has
    /// run, then remove them.
    Rotate,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Give the account with this address the admin role. Admin routes also need the
    /// address to be verified.
    Grant { email: String },
    /// Take the admin role from the account with this address.
    Revoke { email: String },
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
            Command::Admin(command) => admin(&config, command).await,
            Command::Keys(KeysCommand::Rotate) => rotate_keys(&config).await,
            Command::Router => run_router(config).await,
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
    let out = std::io::BufWriter::new(stdout.lock());
    let stats = trace_export::export_store(&store, config.core.clone(), out, EXPORT_PAGE_ROWS).await?;
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

async fn admin(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    use payperplay_prod::store::AdminChange;
    let store = connect(config).await?;
    store.check_migrated().await?;
    let (change, email) = match command {
        AdminCommand::Grant { email } => (AdminChange::Grant, email),
        AdminCommand::Revoke { email } => (AdminChange::Revoke, email),
    };
    // The operator as the system knows them: the audit row names who ran the command.
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".to_string())
    );
    let user = api::accounts::change_admin_role(&store, &email, change, &actor, SystemClock.now())
        .await
        .map_err(|error| anyhow::anyhow!("{email}: {error}"))?;
    println!(
        "{}: role {} (address {})",
        user.email,
        user.role.as_str(),
        if user.email_verified {
            "verified"
        } else {
            "NOT verified: admin routes refuse it until it is"
        }
    );
    Ok(())
}

async fn rotate_keys(config: &Config) -> anyhow::Result<()> {
    let store = connect(config).await?;
    store.check_migrated().await?;
    let secrets = payperplay_prod::drivers::docker::secret_box(&config.secrets)?
        .context("no secret keys configured: set PAYPERPLAY_SECRET_KEY=NEW_ID:HEX,OLD_ID:HEX")?;
    let counts = store.reseal_secrets(&secrets).await?;
    println!(
        "re-sealed with key {}: {} OAuth identities, {} RCON passwords",
        secrets.current_key_id(),
        counts.oauth_identities,
        counts.rcon_passwords
    );
    Ok(())
}

async fn openapi() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&api::openapi_document())?);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if !config.auth.admin_emails.is_empty() {
        tracing::warn!(
            "auth.admin_emails is ignored: nobody becomes admin by registering; run `payperplay admin grant EMAIL`"
        );
    }
    let store = connect(&config).await?;
    store.check_migrated().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let drivers = drivers_from_config(&config, store.clone())
        .await
        .context("setting up the drivers")?;
    let services = Services::start(&config, store.clone(), clock.clone(), drivers.clone())
        .await
        .context("starting the runtime")?;
    // The players' front door, in this process, on the same runtime handle; the same
    // backend answers routers running as their own processes (internal routes).
    let backend = Arc::new(PlatformBackend::new(
        services.handle.clone(),
        store.clone(),
        drivers.containers.clone(),
    ));
    let router = if config.router.enabled {
        Some(
            payperplay_router::start(config.router.clone(), backend.clone())
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
    let mut app = api::app(state, config.http.body_limit_bytes);
    if let Some(token) = &config.router_link.token {
        app = app.merge(api::internal::routes(backend, token.clone()));
    }
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

/// The player router as its own process: `serve` answers it over its internal routes.
async fn run_router(config: Config) -> anyhow::Result<()> {
    let backend = RemoteBackend::new(&config.router_link).context("router_link")?;
    let router = payperplay_router::start(config.router.clone(), backend)
        .await
        .context("starting the player router")?;
    tracing::info!(
        listen = %router.local_addr(),
        api_url = %config.router_link.api_url,
        "routing players"
    );
    shutdown_signal().await;
    tracing::info!("stopping the player router");
    router.stop().await;
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
