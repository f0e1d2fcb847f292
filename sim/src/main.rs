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
    Sweep(SweepArgs),
    /// Run several scenarios on one seed (the identical workload) and write a
    /// side-by-side table (compare.md), overlaid plots and each run's report.
    Compare {
        /// Scenario files (TOML), one column each.
        #[arg(required = true, num_args = 1..)]
        scenarios: Vec<PathBuf>,
        /// The seed for every scenario (default: the first scenario's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write compare.md, the plots and one folder per scenario.
        #[arg(long, default_value = "out/compare")]
        out: PathBuf,
        #[command(flatten)]
        jobs: Jobs,
    },
    /// Run every scenario (a file, or *.toml in a folder), check its [expect] bounds and
    /// compare its key metrics with the committed baseline within tolerances. Exit 1
    /// when anything got worse beyond tolerance or a bound fails, 2 on errors (such as
    /// a missing baseline).
    Check {
        /// A scenario file or a folder of them.
        path: PathBuf,
        /// Folder of baselines, one <scenario name>.json each.
        #[arg(long, default_value = "reports/baselines")]
        baselines: PathBuf,
        /// Rewrite the baselines from this run (on purpose: after a change that is
        /// meant to move the numbers).
        #[arg(long)]
        update_baselines: bool,
        /// Also write each run's outcome and report into DIR/<scenario name>/.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seeds per scenario (its own seed, then the next ones): a metric fails only
        /// when its worsening is beyond both seed noise and its tolerance.
        #[arg(long, value_name = "N", default_value_t = payperplay_sim::check::SEEDS_DEFAULT)]
        seeds: usize,
        #[command(flatten)]
        jobs: Jobs,
    },
}

/// The thread count of `compare`, `check` and `sweep`.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Jobs {
    /// Threads to run simulations on (0: one per core). Results do not depend on it.
    // `--threads`, the old name in compare and check, stays a hidden alias so existing
    // scripts keep working.
    #[arg(long = "jobs", alias = "threads", value_name = "N", default_value_t = 0)]
    jobs: usize,
}

/// `payperplay-sim sweep` arguments.
#[derive(Debug, Clone, clap::Args)]
struct SweepArgs {
    /// The base scenario file (TOML).
    scenario: PathBuf,
    /// A parameter and its values: PATH=LO..HI:STEP, PATH=LO..HI (--random only) or
    /// PATH=A,B,C. PATH is a dotted path into the scenario (`core.` may be left out).
    /// Repeat for a grid over several parameters.
    #[arg(long = "param", value_name = "PATH=VALUES", required = true)]
    params: Vec<String>,
    /// Run N configurations drawn at random from the grid and ranges instead of all.
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    /// Seed of the random draw. Simulations keep the scenario's seed (sweep that with
    /// --param seed=1,2,3).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    jobs: Jobs,
    /// Where to write results.json, results.csv, pareto.md, pareto.svg, recommended.toml.
    #[arg(long, default_value = "sweep-out")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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
        Command::Sweep(args) => sweep(&args),
        Command::Compare {
            scenarios,
            seed,
            out,
            jobs,
        } => compare(&scenarios, seed, &out, jobs.jobs),
        Command::Check {
            path,
            baselines,
            update_baselines,
            out,
            seeds,
            jobs,
        } => {
            let config = payperplay_sim::check::CheckConfig {
                update: update_baselines,
                jobs: jobs.jobs,
                n_seeds: seeds,
            };
            let report = payperplay_sim::check::check(&path, &baselines, config, out.as_deref());
            print!("{}", report.render());
            Ok(ExitCode::from(report.exit_code()))
        }
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
    let result = simulation.run_full();
    let outcome = &result.outcome;
    bar.finish_and_clear();

    let report = payperplay_sim::report::write_run(out, &result, &expect)?;
    let json_path = out.join("outcome.json");
    let md_path = out.join("summary.md");
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

fn compare(paths: &[PathBuf], seed: Option<u64>, out: &Path, jobs: usize) -> anyhow::Result<ExitCode> {
    let scenarios = paths
        .iter()
        .map(|path| Scenario::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let expects: Vec<_> = scenarios.iter().map(|s| s.expect.clone()).collect();
    let comparison = payperplay_sim::compare::compare(scenarios, seed, jobs);
    eprintln!("ran {} scenarios on seed {}", comparison.names.len(), comparison.seed);
    comparison
        .write(out, &expects.iter().collect::<Vec<_>>())
        .with_context(|| format!("writing the comparison into {}", out.display()))?;
    println!("{}", comparison.table());
    if !comparison.different_workload.is_empty() {
        eprintln!(
            "warning: the [workload] of {} differs from the first scenario's: not the same arrivals",
            comparison.different_workload.join(", ")
        );
    }
    println!("wrote {}", out.join("compare.md").display());
    Ok(ExitCode::SUCCESS)
}

/// The whole `sweep` command: prepare, run, write, print the table.
fn sweep(args: &SweepArgs) -> anyhow::Result<ExitCode> {
    use payperplay_sim::sweep;
    let params = args
        .params
        .iter()
        .map(|p| sweep::parse_param(p))
        .collect::<Result<Vec<_>, _>>()?;
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {}", args.scenario.display()))?;
    let configs = sweep::configurations(&text, &args.scenario, &params, args.random, args.seed)?;
    eprintln!(
        "sweeping {} over {} configurations on {} thread(s)",
        args.scenario.display(),
        configs.len(),
        payperplay_sim::parallel::threads_for(args.jobs.jobs, configs.len())
    );
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(configs.len() as u64)
    };
    let outcomes = sweep::run_all(&configs, args.jobs.jobs, &|_| bar.inc(1));
    bar.finish_and_clear();
    let result = sweep::SweepResult::new(configs, outcomes);
    result.write(&args.out, &args.scenario, args.random, args.seed)?;
    print!("{}", result.table());
    println!(
        "wrote results.json, results.csv, pareto.md, pareto.svg and recommended.toml to {}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
