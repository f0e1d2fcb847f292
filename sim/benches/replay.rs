//! Replaying a recorded workload: a 30-day trace of 10,000 servers (the large
//! scenario's workload, frozen with `generate`), read from disk and simulated.
//! Goal: under 30 s on one core.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use payperplay_sim::trace::{self, Trace};
use payperplay_sim::{Scenario, simulate};

fn replay(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/large-fleet.toml");
    let mut scenario = Scenario::load(&path).expect("large scenario loads");
    scenario.duration_ms = 30 * payperplay_core::MS_PER_DAY;
    scenario.workload.users = 10_000;
    scenario.workload.servers_per_user = 1;
    let file = std::env::temp_dir().join(format!("payperplay-replay-{}.jsonl", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("temp file"));
    let lines = trace::generate(&scenario, &mut out).expect("trace written");
    drop(out);
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "trace: {lines} lines, {:.1} MB, 10,000 servers, 30 days",
        bytes as f64 / 1e6
    );
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.bench_function("30-day trace, 10000 servers (load + simulate)", |b| {
        b.iter(|| {
            let trace = Trace::load(&file).expect("trace loads");
            let replay = scenario.clone().with_trace(trace).expect("trace fits");
            simulate(black_box(replay))
        })
    });
    group.finish();
    std::fs::remove_file(&file).ok();
}

criterion_group!(benches, replay);
criterion_main!(benches);
