//! `payperplay-fake-hetzner`: serves the fake Hetzner Cloud API on loopback.
//!
//!     payperplay-fake-hetzner --listen 127.0.0.1:8480 [--config fake.toml]
//!         [--token T] [--action-delay-ms N] [--rate-limit N] [--refill-per-s X]
//!
//! Prints `listening on ADDR` on stdout once bound (port 0 picks a free port), then
//! serves until SIGTERM or Ctrl-C. The API is under `/v1`, test control under `/__fake`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use payperplay_hetzner::fake::{self, FakeConfig, FakeState};
use std::io::Write;

#[derive(Debug, Parser)]
#[command(name = "payperplay-fake-hetzner", about = "A fake Hetzner Cloud API for tests")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: std::net::SocketAddr,
    /// TOML configuration (see hetzner/fake.example.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    action_delay_ms: Option<u64>,
    /// Requests per hour.
    #[arg(long)]
    rate_limit: Option<u64>,
    #[arg(long)]
    refill_per_s: Option<f64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen {} is not a loopback address: the fake serves tests on this machine only",
        args.listen
    );
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FakeConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FakeConfig::default(),
    };
    if let Some(token) = args.token {
        config.token = token;
    }
    if let Some(delay) = args.action_delay_ms {
        config.action_delay_ms = delay;
    }
    if let Some(limit) = args.rate_limit {
        config.rate_limit.limit = limit;
    }
    if let Some(refill) = args.refill_per_s {
        config.rate_limit.refill_per_s = refill;
    }
    config
        .validate()
        .map_err(|message| anyhow::anyhow!("invalid configuration: {message}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {address}")?;
        stdout.flush()?;
    }
    let app = fake::app(FakeState::new(config));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    Ok(())
}

async fn shutdown() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
