//! `payperplay-testgame`: a small Minecraft Java server for tests, configured like the
//! `itzg/minecraft-server` image (see README.md for the environment it reads).

mod config;
mod game;
mod log;
mod rcon_server;
mod state;
mod world;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};

use crate::config::Config;
use crate::state::{Control, Shared};
use crate::world::World;

/// Connections served at once per port; more wait in the kernel's backlog.
const CONNECTIONS_MAX: usize = 1_024;
/// On stop, how long players get to receive their disconnect before the world is saved.
const STOP_GRACE_MS: u64 = 1_000;

fn main() -> ExitCode {
    #[allow(clippy::disallowed_methods, reason = "the boot time printed in the Done line")]
    let started = Instant::now();
    let config = match Config::from_lookup(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("payperplay-testgame: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("payperplay-testgame: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, started))
}

async fn run(config: Config, started: Instant) -> ExitCode {
    // Signals first, so a stop during the boot delay still saves.
    let (Ok(mut sigterm), Ok(mut sigint)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error("cannot install the SIGTERM and SIGINT handlers");
        return ExitCode::FAILURE;
    };
    if let Some(memory) = &config.memory {
        log::info(&format!(
            "[init] Setting initial memory to {memory} and max to {memory}"
        ));
    }
    log::info(&format!(
        "[init] Resolved type {} version {}",
        config.server_type.as_deref().unwrap_or("VANILLA"),
        config.version.as_deref().unwrap_or("LATEST")
    ));
    log::info(&format!("Starting minecraft server version {}", config.version_name));
    log::info("Default game type: SURVIVAL");
    log::info(&format!(
        "Starting Minecraft server on {}:{}",
        config.bind_ip, config.server_port
    ));
    log::info(&format!("Preparing level \"{}\"", world::LEVEL_NAME));
    let (mut world, created) = match World::open(&config.data_dir, &config.version_name, log::now_ms()) {
        Ok(opened) => opened,
        Err(error) => {
            log::error(&format!("Failed to load the world: {error}"));
            return ExitCode::FAILURE;
        }
    };
    log::info(&format!(
        "{} world at {} (saved {} times)",
        if created { "Created the" } else { "Loaded the" },
        world.level_path().display(),
        world.level.save_count
    ));

    let (control_sender, mut control) = mpsc::channel(4);
    let (save_sender, mut save_requests) = mpsc::channel(4);
    let shared = Arc::new(Shared::new(config, control_sender));
    let crash_timer = async {
        match shared.config.crash_after {
            Some(after) => tokio::time::sleep(after.saturating_sub(started.elapsed())).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(crash_timer);

    let boot = async {
        tokio::time::sleep(shared.config.boot_delay).await;
        start_listeners(&shared, started, save_sender).await
    };
    tokio::pin!(boot);
    let mut booted = false;
    loop {
        tokio::select! {
            result = &mut boot, if !booted => {
                if let Err(message) = result {
                    log::error(&message);
                    return ExitCode::FAILURE;
                }
                booted = true;
            }
            () = &mut crash_timer => return crash("TESTGAME_CRASH_AFTER_MS elapsed"),
            _ = sigterm.recv() => return stop(&shared, &mut world, "SIGTERM").await,
            _ = sigint.recv() => return stop(&shared, &mut world, "SIGINT").await,
            Some(request) = control.recv() => match request {
                Control::Stop => return stop(&shared, &mut world, "RCON stop").await,
                Control::Crash => return crash("RCON crash"),
            },
            Some(()) = save_requests.recv() => {
                save(&mut world);
            }
        }
    }
}

async fn start_listeners(shared: &Arc<Shared>, started: Instant, save: mpsc::Sender<()>) -> Result<(), String> {
    let game_address = SocketAddr::new(shared.config.bind_ip, shared.config.server_port);
    let game_listener = TcpListener::bind(game_address)
        .await
        .map_err(|error| format!("**** FAILED TO BIND TO PORT! {game_address}: {error}"))?;
    let rcon_listener = match &shared.config.rcon {
        None => None,
        Some(rcon) => {
            let address = SocketAddr::new(shared.config.bind_ip, rcon.port);
            let listener = TcpListener::bind(address)
                .await
                .map_err(|error| format!("Unable to initialise rcon on {address}: {error}"))?;
            Some((listener, address, rcon.password.clone()))
        }
    };
    tokio::spawn(accept_game(Arc::clone(shared), game_listener));
    log::info(&format!(
        "Done ({:.3}s)! For help, type \"help\"",
        started.elapsed().as_secs_f64()
    ));
    if let Some(warning) = &shared.config.rcon_warning {
        log::warn(warning);
    }
    if let Some((listener, address, password)) = rcon_listener {
        log::info("Starting remote control listener");
        log::info(&format!("RCON running on {address}"));
        tokio::spawn(accept_rcon(Arc::clone(shared), listener, password, save));
    }
    Ok(())
}

async fn accept_game(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    game::serve_connection(shared, stream, peer).await;
                    drop(permit);
                });
            }
            Err(error) => {
                log::warn(&format!("accept on the game port failed: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_rcon(shared: Arc<Shared>, listener: TcpListener, password: String, save: mpsc::Sender<()>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let (shared, password, save) = (Arc::clone(&shared), password.clone(), save.clone());
                tokio::spawn(async move {
                    rcon_server::serve_connection(shared, stream, password, save).await;
                    drop(permit);
                });
            }
            Err(error) => {
                log::warn(&format!("accept on the RCON port failed: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn save(world: &mut World) -> bool {
    log::info("Saving chunks for level 'world'/overworld");
    match world.save(log::now_ms()) {
        Ok(()) => {
            log::info(&format!("Saved the world (save {})", world.level.save_count));
            true
        }
        Err(error) => {
            log::error(&format!("Failed to save the world: {error}"));
            false
        }
    }
}

async fn stop(shared: &Shared, world: &mut World, cause: &str) -> ExitCode {
    log::info(&format!("Stopping the server ({cause})"));
    log::info("Stopping server");
    shared.stopping.send_replace(true);
    let grace_started = tokio::time::Instant::now();
    while shared.online_count() > 0 && grace_started.elapsed() < Duration::from_millis(STOP_GRACE_MS) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log::info("Saving players");
    log::info("Saving worlds");
    tokio::time::sleep(shared.config.save_delay).await;
    if save(world) {
        log::info("ThreadedAnvilChunkStorage (world): All chunks are saved");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn crash(cause: &str) -> ExitCode {
    log::error(&format!(
        "This crash report has been saved to: nowhere (test switch: {cause}); exiting without saving"
    ));
    ExitCode::FAILURE
}
