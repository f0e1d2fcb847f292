//! Orders per hour sustained against the fake Hetzner API under its 3,600/h limit, and
//! how many orders a 429 lost (must be none).
//!
//!     cargo run --release -p payperplay-hetzner --example orders_per_hour -- \
//!         [--speedup 60] [--fake-hours 1] [--workers 8] [--action-delay-s 20]
//!
//! The fake's world runs `speedup` times faster than the wall clock: its bucket refills
//! `speedup` tokens per second (one fake second each), actions take
//! `action-delay-s / speedup` seconds, and the client polls at its usual fake intervals
//! divided by `speedup`; the client reads the `RateLimit-Reset` header, so it paces
//! itself to the faster refill by itself. The bucket starts empty, so the figure is the
//! sustained rate, not the 3,600-request burst.
//! `workers` orders run concurrently; each order is create + wait for the create action
//! and the start action it triggered to success, exactly as `HetznerClient::order_vm`
//! does in production (concurrent waits share their polls).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use payperplay_hetzner::fake::{FakeConfig, FakeState, app};
use payperplay_hetzner::{ClientConfig, HetznerClient, VmOrder};
use secrecy::SecretString;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} wants a number, got {v}")))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let speedup = arg("--speedup", 60.0);
    let fake_hours = arg("--fake-hours", 1.0);
    let workers = arg("--workers", 8.0) as u64;
    let action_delay_s = arg("--action-delay-s", 20.0);

    let mut config = FakeConfig {
        token: "bench".into(),
        action_delay_ms: (action_delay_s * 1_000.0 / speedup) as u64,
        ..FakeConfig::default()
    };
    config.rate_limit.refill_per_s = speedup;
    let state = FakeState::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
    let control = reqwest::Client::new();
    let response = control
        .post(format!("http://{address}/__fake/rate_limit"))
        .json(&serde_json::json!({"remaining": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    let mut client_config = ClientConfig::new(format!("http://{address}/v1"), SecretString::from("bench"));
    let scale = |fake_ms: f64| (fake_ms / speedup).max(1.0) as u64;
    client_config.action_poll_ms_min = scale(ClientConfig::new("", SecretString::from("x")).action_poll_ms_min as f64);
    client_config.action_poll_ms_max = scale(ClientConfig::new("", SecretString::from("x")).action_poll_ms_max as f64);
    client_config.action_wait_ms_max = scale(600_000.0);
    client_config.rate_limit_wait_ms_max = scale(600_000.0);
    client_config.transient_backoff_ms = scale(500.0);
    client_config.action_batch_gap_ms =
        scale(ClientConfig::new("", SecretString::from("x")).action_batch_gap_ms as f64);
    let client = Arc::new(HetznerClient::new(client_config).unwrap());

    let run_for = Duration::from_secs_f64(fake_hours * 3_600.0 / speedup);
    let completed = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let next_command = Arc::new(AtomicU64::new(1));
    let deadline = tokio::time::Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, completed, lost, next_command) =
            (client.clone(), completed.clone(), lost.clone(), next_command.clone());
        tasks.spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let command_id = next_command.fetch_add(1, Ordering::Relaxed);
                let order = VmOrder {
                    command_id,
                    node_id: command_id,
                    server_type: "cpx42".into(),
                    location: "fsn1".into(),
                    ssh_keys: Vec::new(),
                    user_data: "#cloud-config\n".into(),
                };
                match tokio::time::timeout_at(deadline, client.order_vm(&order)).await {
                    Ok(Ok(_)) => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(error)) => {
                        eprintln!("order {command_id} lost: {error}");
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {} // still in flight at the end of the window
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let stats: serde_json::Value = control
        .get(format!("http://{address}/__fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed = completed.load(Ordering::Relaxed);
    let requests = stats["requests"].as_u64().unwrap_or(0);
    let rate_limited = stats["rate_limited"].as_u64().unwrap_or(0);
    let created = stats["servers_created"].as_u64().unwrap_or(0);
    println!(
        "fake hours:                 {fake_hours} ({:.1} s of wall time at {speedup}x)",
        run_for.as_secs_f64()
    );
    println!("workers:                    {workers}");
    println!("action delay (fake):        {action_delay_s} s");
    println!("orders completed:           {completed}");
    println!("orders per hour sustained:  {:.0}", completed as f64 / fake_hours);
    println!("VMs created at the fake:    {created} (one per order, none twice)");
    println!("orders lost to errors:      {}", lost.load(Ordering::Relaxed));
    println!(
        "API requests answered:      {requests} ({:.1} per completed order)",
        (requests - rate_limited) as f64 / completed.max(1) as f64
    );
    println!("of which 429 (waited out):  {rate_limited}");
}
