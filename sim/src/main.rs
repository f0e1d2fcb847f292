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
        /// Where to write outcome.json, summary.md, report.md and the SVG plots.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
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
        } => run(scenario.as_deref(), seed, &out, quiet),
    }
}

/// The scenario `run` uses when given none.
const EMBEDDED_SCENARIO: &str = include_str!("../../scenarios/weekday-cloud-burst.toml");

fn run(path: Option<&Path>, seed: Option<u64>, out: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut scenario = match path {
        Some(path) => Scenario::load(path)?,
        None => Scenario::parse(EMBEDDED_SCENARIO, Path::new("<embedded>/weekday-cloud-burst.toml"))?,
    };
    if let Some(seed) = seed {
        scenario.seed = seed;
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
    let result = simulation.run_full();
    let outcome = &result.outcome;
    bar.finish_and_clear();

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_path = out.join("outcome.json");
    let md_path = out.join("summary.md");
    std::fs::write(&json_path, outcome.to_json()).with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&md_path, outcome.to_markdown(&expect)).with_context(|| format!("writing {}", md_path.display()))?;
    let report = payperplay_sim::report::build(&result, &expect);
    report.write(out)?;
    println!("{}", outcome.to_markdown(&expect));
    println!(
        "wrote {}, {} and report.md with {} plots",
        json_path.display(),
        md_path.display(),
        report.plots.len()
    );
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
