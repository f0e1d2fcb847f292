//! The large scenario (10,000 servers, 28 days): simulated engine events per second.
//! Criterion reports the time per run; the throughput line reports events per second.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use payperplay_sim::{Scenario, simulate};

fn large(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/large-fleet.toml");
    let scenario = Scenario::load(&path).expect("large scenario loads");
    let events = simulate(scenario.clone()).sim.events;
    let mut group = c.benchmark_group("large-fleet");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function("28 days, 10000 servers", |b| {
        b.iter(|| simulate(black_box(scenario.clone())))
    });
    group.finish();

    // Memory must stay flat as simulated time grows: a week and four weeks of the same
    // workload should need about the same peak (measured by scripts/bench.sh).
}

criterion_group!(benches, large);
criterion_main!(benches);
