//! The router's figures (prints them; no criterion, the interesting numbers are
//! distributions and whole-process memory):
//!
//! 1. wake path: a client's Login Start for a sleeping server until `Backend::wake` is
//!    called (median, p99 of 1,000 logins; goal under 50 ms);
//! 2. idle players: the router runs as its own process (this binary in the router role)
//!    in front of ten `payperplay-testgame`s; first 10,000 logged-in players proxied to them
//!    (two sockets each in the router: fewer if the open-file limit does not allow),
//!    then 10,000 logins held while their server "wakes"; the router's RSS (goal under
//!    200 MB) and the status-ping latency of new clients meanwhile;
//! 3. proxied throughput against a direct connection on loopback (goal: within 10%).
//!
//! Run with `bash router/bench/figures.sh` (raises the open-file limit as far as allowed),
//! or `cargo bench -p payperplay-router --bench router`.
//! Needs `target/release/payperplay-testgame` (`cargo build --release -p payperplay-testgame`).

#![allow(clippy::disallowed_methods, reason = "a benchmark measures with the wall clock")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader as StdBufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use payperplay_mcproto::packets::{Handshake, LoginStart, NextState};
use payperplay_router::{
    Backend, BackendError, RequestedHost, Route, RouterConfig, ServerState, WakeOutcome, WakeRefusal,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "bench.test";
const WAKE_LOGINS: usize = 1_000;
const IDLE_PLAYERS: usize = 10_000;
const IDLE_OPEN_CONCURRENCY: usize = 200;
const IDLE_SERVERS: usize = 10;
const PINGS_DURING_IDLE: usize = 50;
const THROUGHPUT_BYTES: u64 = 512 * 1024 * 1024;
const THROUGHPUT_ROUNDS: usize = 5;
/// Open files a process keeps for itself besides the benchmark's sockets.
const OPEN_FILES_SPARE: u64 = 1_000;
/// Held players stay held for the whole measurement.
const HOLD_MS: u64 = 600_000;

fn main() {
    if std::env::var("ROUTER_BENCH_ROLE").as_deref() == Ok("router") {
        run_router_process();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "# payperplay-router figures ({} logical CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    runtime.block_on(wake_path());
    runtime.block_on(idle_and_throughput());
}

/// A table of routes; names it does not know are a sleeping server (id 2).
#[derive(Clone, Default)]
struct StaticBackend {
    routes: Arc<BTreeMap<RequestedHost, Route>>,
    wakes: Arc<Mutex<Vec<Instant>>>,
    /// Wakes start the server (it never comes up: players stay held) instead of being refused.
    wakes_start: bool,
}

fn route(server_id: u64, state: ServerState) -> Route {
    Route {
        server_id,
        state,
        players_max: 20_000,
        favicon: None,
        balance_allows_start: true,
        proxy_protocol: None,
    }
}

impl Backend for StaticBackend {
    async fn resolve(&self, host: &RequestedHost) -> Result<Option<Route>, BackendError> {
        Ok(Some(
            self.routes
                .get(host)
                .cloned()
                .unwrap_or_else(|| route(2, ServerState::Sleeping)),
        ))
    }

    async fn wake(&self, _server_id: u64) -> Result<WakeOutcome, BackendError> {
        let woken_at = Instant::now();
        if self.wakes_start {
            return Ok(WakeOutcome::Starting);
        }
        self.wakes.lock().unwrap().push(woken_at);
        Ok(WakeOutcome::Refused(WakeRefusal::Other("benchmark".into())))
    }

    async fn player_joined(&self, _server_id: u64, _player: &str) {}

    async fn player_left(&self, _server_id: u64, _player: &str) {}
}

fn bench_config() -> RouterConfig {
    RouterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        domain: DOMAIN.into(),
        connections_per_address_per_s: 1_000_000,
        connection_burst_per_address: 1_000_000,
        connections_max: 4 * IDLE_PLAYERS,
        ..RouterConfig::default()
    }
}

fn login_bytes(hostname: &str, player: &str) -> Vec<u8> {
    let mut bytes = Handshake {
        protocol_version: 340,
        server_address: hostname.into(),
        server_port: 25565,
        next_state: NextState::Login,
    }
    .to_packet()
    .encode();
    bytes.extend(LoginStart { name: player.into() }.to_packet().encode());
    bytes
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

async fn wake_path() {
    let backend = StaticBackend::default();
    let router = payperplay_router::start(bench_config(), backend.clone()).await.unwrap();
    let hostname = format!("sleepy.{DOMAIN}");
    let mut latencies = Vec::with_capacity(WAKE_LOGINS);
    for index in 0..WAKE_LOGINS {
        let mut stream = TcpStream::connect(router.local_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let bytes = login_bytes(&hostname, &format!("p{index}"));
        let sent_at = Instant::now();
        stream.write_all(&bytes).await.unwrap();
        // The refusal (a login disconnect) comes after wake was called.
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).await.unwrap();
        let woken_at = *backend.wakes.lock().unwrap().last().unwrap();
        latencies.push(woken_at - sent_at);
    }
    assert_eq!(backend.wakes.lock().unwrap().len(), WAKE_LOGINS);
    latencies.sort();
    println!(
        "wake path (Login Start written by the client -> Backend::wake called), {WAKE_LOGINS} logins: median {}, p99 {}, max {} (goal < 50 ms)",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    router.stop().await;
}

fn testgame_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PAYPERPLAY_TESTGAME_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(Path::parent).unwrap().join("payperplay-testgame");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --release -p payperplay-testgame",
        binary.display()
    );
    binary
}

fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The router as its own process (this benchmark's binary in the router role).
fn spawn_router_process(routes: &[(&str, SocketAddr)]) -> (Killed, SocketAddr) {
    let table: Vec<String> = routes
        .iter()
        .map(|(name, address)| format!("{name}={address}"))
        .collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("ROUTER_BENCH_ROLE", "router")
        .env("ROUTER_BENCH_ROUTES", table.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    StdBufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line.trim().strip_prefix("listening ").unwrap().parse().unwrap();
    (Killed(child), address)
}

fn run_router_process() {
    let routes = std::env::var("ROUTER_BENCH_ROUTES").unwrap_or_default();
    let mut table = BTreeMap::new();
    for (index, entry) in routes.split(',').filter(|entry| !entry.is_empty()).enumerate() {
        let (name, address) = entry.split_once('=').unwrap();
        table.insert(
            RequestedHost::Name(name.into()),
            route(
                10 + index as u64,
                ServerState::Running {
                    address: address.parse().unwrap(),
                },
            ),
        );
    }
    let backend = StaticBackend {
        routes: Arc::new(table),
        wakes_start: true,
        ..StaticBackend::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = RouterConfig {
            hold_ms: HOLD_MS,
            ..bench_config()
        };
        let router = payperplay_router::start(config, backend).await.unwrap();
        println!("listening {}", router.local_addr());
        std::io::stdout().flush().unwrap();
        // Until the parent closes stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        })
        .await;
        router.stop().await;
    });
}

async fn status_exchange(address: SocketAddr, hostname: &str) -> Duration {
    let started_at = Instant::now();
    payperplay_mcproto::status_ping(address, hostname, Duration::from_secs(10))
        .await
        .unwrap();
    started_at.elapsed()
}

async fn ping_latencies(address: SocketAddr, hostname: &str) -> (Duration, Duration) {
    let mut latencies = Vec::with_capacity(PINGS_DURING_IDLE);
    for _ in 0..PINGS_DURING_IDLE {
        latencies.push(status_exchange(address, hostname).await);
    }
    latencies.sort();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

async fn idle_and_throughput() {
    let limit = open_files_limit();
    // The test game server holds at most 1,024 connections: the players spread over
    // several servers, as they would.
    let data_dir = tempfile::tempdir().unwrap();
    let mut games = Vec::with_capacity(IDLE_SERVERS);
    let mut game_addresses = Vec::with_capacity(IDLE_SERVERS);
    for index in 0..IDLE_SERVERS {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = data_dir.path().join(index.to_string());
        games.push(Killed(
            Command::new(testgame_binary())
                .env_clear()
                .env("EULA", "TRUE")
                .env("SERVER_IP", "127.0.0.1")
                .env("SERVER_PORT", port.to_string())
                .env("ENABLE_RCON", "false")
                .env("MAX_PLAYERS", IDLE_PLAYERS.to_string())
                .env("TESTGAME_KEEPALIVE_MS", "3600000")
                .env("TESTGAME_DATA_DIR", &dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        ));
        game_addresses.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    for address in &game_addresses {
        let started_at = Instant::now();
        while TcpStream::connect(address).await.is_err() {
            assert!(
                started_at.elapsed() < Duration::from_secs(30),
                "the test game server did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let source = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source_address = source.local_addr().unwrap();
    tokio::spawn(serve_source(source));

    let names: Vec<String> = (0..IDLE_SERVERS).map(|index| format!("alpha{index}")).collect();
    let mut routes: Vec<(&str, SocketAddr)> = names
        .iter()
        .map(String::as_str)
        .zip(game_addresses.iter().copied())
        .collect();
    routes.push(("source", source_address));
    let (router, router_address) = spawn_router_process(&routes);
    let router_pid = router.0.id();
    let alphas: Vec<String> = names.iter().map(|name| format!("{name}.{DOMAIN}")).collect();
    let alpha = alphas[0].clone();
    let sleepy = format!("sleepy.{DOMAIN}");

    // 3. Throughput first, on a quiet router.
    throughput(router_address, source_address, router_pid).await;

    // 2. Idle players: proxied (two sockets each in the router), then held (one each).
    let (rss_before, _) = rss_kib(router_pid);
    println!("router RSS before any player: {:.1} MB", rss_before as f64 / 1024.0);
    let quiet = (
        ping_latencies(router_address, &alpha).await,
        ping_latencies(router_address, &sleepy).await,
    );
    report_pings("a quiet router", quiet);

    let proxied_max = ((limit.saturating_sub(OPEN_FILES_SPARE)) / 2) as usize;
    let proxied_count = IDLE_PLAYERS.min(proxied_max);
    if proxied_count < IDLE_PLAYERS {
        println!(
            "(the open-file limit is {limit}: the router can proxy at most {proxied_max} players at two sockets each)"
        );
    }
    let opened_at = Instant::now();
    let players = open_players(router_address, &alphas, proxied_count, true).await;
    let open_s = opened_at.elapsed().as_secs_f64();
    let mut online = 0;
    for hostname in &alphas {
        online += payperplay_mcproto::status_ping(router_address, hostname, Duration::from_secs(30))
            .await
            .unwrap()
            .players_online;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_proxied, hwm_proxied) = rss_kib(router_pid);
    let during = (
        ping_latencies(router_address, &alpha).await,
        ping_latencies(router_address, &sleepy).await,
    );
    println!(
        "proxied idle players: {} logged in through the router in {open_s:.1} s (the {IDLE_SERVERS} game servers count {online}); router RSS {:.1} MB holding them (peak {:.1} MB), {:.1} KiB per player",
        players.len(),
        rss_proxied as f64 / 1024.0,
        hwm_proxied as f64 / 1024.0,
        (rss_proxied.saturating_sub(rss_before)) as f64 / players.len() as f64
    );
    report_pings(&format!("{} proxied players held", players.len()), during);
    drop(players);
    drop(games);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let opened_at = Instant::now();
    let held = open_players(router_address, std::slice::from_ref(&sleepy), IDLE_PLAYERS, false).await;
    let open_s = opened_at.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_held, hwm_held) = rss_kib(router_pid);
    let (sleeping_median, sleeping_p99) = ping_latencies(router_address, &sleepy).await;
    println!(
        "held idle players: {} logins to a waking server held (each polling the backend every 250 ms) in {open_s:.1} s; router RSS {:.1} MB holding them (peak {:.1} MB; goal < 200 MB)",
        held.len(),
        rss_held as f64 / 1024.0,
        hwm_held as f64 / 1024.0
    );
    println!(
        "  status ping of a new client (connect to pong, {PINGS_DURING_IDLE}) with them held: sleeping server (answered by the router) median {} p99 {}",
        ms(sleeping_median),
        ms(sleeping_p99)
    );
    drop(held);
    drop(router);
}

fn report_pings(
    when: &str,
    ((running_median, running_p99), (sleeping_median, sleeping_p99)): ((Duration, Duration), (Duration, Duration)),
) {
    println!(
        "  status ping of a new client (connect to pong, {PINGS_DURING_IDLE} each) with {when}: running server (proxied) median {} p99 {}; sleeping server (answered by the router) median {} p99 {}",
        ms(running_median),
        ms(running_p99),
        ms(sleeping_median),
        ms(sleeping_p99)
    );
}

/// Opens `count` logins through the router, spread over `hostnames`; with
/// `wait_for_server`, each waits for the server's first byte (Login Success), else for
/// the router to hold it.
async fn open_players(
    router_address: SocketAddr,
    hostnames: &[String],
    count: usize,
    wait_for_server: bool,
) -> Vec<TcpStream> {
    let mut players = Vec::with_capacity(count);
    let mut batch = tokio::task::JoinSet::new();
    for index in 0..count {
        let hostname = hostnames[index % hostnames.len()].clone();
        batch.spawn(async move {
            let mut stream = TcpStream::connect(router_address).await.unwrap();
            stream
                .write_all(&login_bytes(&hostname, &format!("p{index}")))
                .await
                .unwrap();
            if wait_for_server {
                let mut first = [0u8; 1];
                tokio::time::timeout(Duration::from_secs(60), stream.read_exact(&mut first))
                    .await
                    .expect("a player got no Login Success within 60 s")
                    .unwrap();
            }
            stream
        });
        if batch.len() >= IDLE_OPEN_CONCURRENCY {
            players.push(batch.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(stream) = batch.join_next().await {
        players.push(stream.unwrap());
    }
    players
}

/// A server that, after a client's first bytes, sends `THROUGHPUT_BYTES` and closes.
async fn serve_source(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut opening = [0u8; 256];
            if stream.read(&mut opening).await.unwrap_or(0) == 0 {
                return;
            }
            let chunk = vec![0x5Au8; 256 * 1024];
            let mut left = THROUGHPUT_BYTES;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads everything `address` sends after a status handshake naming `hostname`.
async fn download(address: SocketAddr, hostname: &str) -> f64 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let handshake = Handshake {
        protocol_version: 340,
        server_address: hostname.into(),
        server_port: address.port(),
        next_state: NextState::Status,
    }
    .to_packet()
    .encode();
    let started_at = Instant::now();
    stream.write_all(&handshake).await.unwrap();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received: u64 = 0;
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    assert_eq!(received, THROUGHPUT_BYTES);
    received as f64 / started_at.elapsed().as_secs_f64() / (1024.0 * 1024.0)
}

/// CPU time (user + system) a process has used, from /proc (clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

async fn throughput(router_address: SocketAddr, source_address: SocketAddr, router_pid: u32) {
    let source = format!("source.{DOMAIN}");
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    let cpu_before = cpu_seconds(router_pid);
    for _ in 0..THROUGHPUT_ROUNDS {
        direct.push(download(source_address, &source).await);
        proxied.push(download(router_address, &source).await);
    }
    let router_cpu_s = cpu_seconds(router_pid) - cpu_before;
    let proxied_gib = (THROUGHPUT_ROUNDS as u64 * THROUGHPUT_BYTES) as f64 / (1024.0 * 1024.0 * 1024.0);
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let direct_median = median(&mut direct);
    let proxied_median = median(&mut proxied);
    println!(
        "throughput, {} MiB down, {THROUGHPUT_ROUNDS} rounds alternating: direct median {direct_median:.0} MiB/s, through the router (its own process) {proxied_median:.0} MiB/s, ratio {:.2} (goal >= 0.90)",
        THROUGHPUT_BYTES / (1024 * 1024),
        proxied_median / direct_median
    );
    println!(
        "  the router's CPU: {router_cpu_s:.2} s for {proxied_gib:.1} GiB proxied = {:.2} CPU-s per GiB (one core proxies about {:.1} GiB/s)",
        router_cpu_s / proxied_gib,
        proxied_gib / router_cpu_s
    );
}
