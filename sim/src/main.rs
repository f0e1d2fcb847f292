//! `payperplay-sim`: run scenario files and write their outcomes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use payperplay_sim::{Scenario, Simulation};

#[derive(Parser)]
#[command(
    name = "payperplay-sim",
    version,
    about = "PayPerPlay's deterministic fleet simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario; exit 1 when an [expect] bound fails.
    Run {
        /// The scenario file (TOML). Without one, the embedded weekday cloud-burst
        /// scenario runs.
        scenario: Option<PathBuf>,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write outcome.json and summary.md.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Replay this trace (JSONL) as the workload instead of the scenario's own.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Write the scenario's generated workload as a trace (JSONL), to freeze, share or
    /// replay it.
    Generate {
        /// The scenario file (TOML); without one, the embedded scenario.
        scenario: Option<PathBuf>,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the trace.
        #[arg(long, short, default_value = "trace.jsonl")]
        out: PathBuf,
    },
    /// Run a scenario over a grid or a random sample of parameter values, in parallel;
    /// write the results, the Pareto front and the recommended configuration.
    Sweep(payperplay_sim::sweep::SweepArgs),
}

fn main() -> ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_cli() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            seed,
            out,
            quiet,
            trace,
        } => run(scenario.as_deref(), seed, &out, quiet, trace.as_deref()),
        Command::Generate { scenario, seed, out } => generate(scenario.as_deref(), seed, &out),
        Command::Sweep(args) => payperplay_sim::sweep::cli(&args)
            .map(|_| ExitCode::SUCCESS)
            .map_err(Into::into),
    }
}

fn load_scenario(path: Option<&Path>, seed: Option<u64>) -> anyhow::Result<Scenario> {
    let mut scenario = match path {
        Some(path) => Scenario::load(path)?,
        None => Scenario::parse(EMBEDDED_SCENARIO, Path::new("<embedded>/weekday-cloud-burst.toml"))?,
    };
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    Ok(scenario)
}

fn generate(path: Option<&Path>, seed: Option<u64>, out: &Path) -> anyhow::Result<ExitCode> {
    let scenario = load_scenario(path, seed)?;
    if scenario.trace.is_some() {
        anyhow::bail!("{}: the workload is already a trace", scenario.name);
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let lines = payperplay_sim::trace::generate(&scenario, &mut writer)
        .and_then(|n| std::io::Write::flush(&mut writer).map(|()| n))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {lines} lines to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The scenario `run` uses when given none.
const EMBEDDED_SCENARIO: &str = include_str!("../../scenarios/weekday-cloud-burst.toml");

fn run(
    path: Option<&Path>,
    seed: Option<u64>,
    out: &Path,
    quiet: bool,
    trace: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut scenario = load_scenario(path, seed)?;
    if let Some(trace) = trace {
        let trace = payperplay_sim::trace::Trace::load(trace)?;
        scenario = scenario.with_trace(trace)?;
    }
    let expect = scenario.expect.clone();
    eprintln!("running {} (seed {})", scenario.name, scenario.seed);
    let mut simulation = Simulation::new(scenario);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1000)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% simulated, {elapsed} elapsed, ETA {eta}")
            .expect("valid template"),
    );
    let progress = bar.clone();
    let mut start = None;
    simulation.on_progress(move |now, end| {
        let start = *start.get_or_insert(now.ms());
        let done = now.ms().saturating_sub(start) as f64 / end.ms().saturating_sub(start).max(1) as f64;
        progress.set_position((done * 1000.0) as u64);
    });
    let outcome = simulation.run();
    bar.finish_and_clear();

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_path = out.join("outcome.json");
    let md_path = out.join("summary.md");
    std::fs::write(&json_path, outcome.to_json()).with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&md_path, outcome.to_markdown(&expect)).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{}", outcome.to_markdown(&expect));
    println!("wrote {} and {}", json_path.display(), md_path.display());
    let failures = outcome.check(&expect);
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} expectation(s) failed:", failures.len());
        for failure in &failures {
            eprintln!("  - {failure}");
        }
        Ok(ExitCode::from(1))
    }
}
