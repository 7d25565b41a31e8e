//! `demeter-bench`: Demeter's benchmark suite (`make bench`), which writes
//! `docs/benchmarks.md`. Each benchmark runs the real release `demeter` binary or the real
//! crates on the real photos of `../shared/data/real`; nothing here is a test, and nothing
//! in `make test` asserts a time.

mod archive;
mod daemon;
mod eta;
mod fixtures;
mod heavy;
mod latency;
mod memory;
mod page;
mod pipeline;
mod poll;
mod report;
mod scale;
mod sse;
mod stats;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(name = "demeter-bench", about = "Demeter's benchmarks; writes docs/benchmarks.md")]
struct Cli {
    /// Which benchmarks (default: all).
    #[arg(value_enum)]
    which: Vec<Bench>,
    /// Write the report here (all selected benchmarks) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// Poll endpoint latency under wrk, and start-up with a full store.
    Poll,
    /// Photos per minute against the decode bound and the Python baseline.
    Pipeline,
    /// Peak RSS with 4 workers, 12 MP photos and 10,000 queued jobs.
    Memory,
    /// A network-sized model on the CPU: workers with a session each against batched.
    Heavy,
    /// Photo dropped → job in the API → first SSE event.
    Latency,
    /// 200 SSE clients.
    Sse,
    /// ETA shown vs actual.
    Eta,
    /// A sweep over 100,000 expired jobs.
    Scale,
    /// The status page in Chromium on a 5,000-photo session.
    Page,
    /// The results archive with 1,000,000 results: series, start-up, bytes per result.
    Archive,
}

/// What every benchmark may use.
#[derive(clap::Args, Clone)]
pub struct Opts {
    /// Runs per measurement.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Smaller inputs and shorter runs, for a smoke run.
    #[arg(long)]
    pub quick: bool,
    /// The Python of the bench virtualenv (Pillow, onnxruntime, SciPy), for the baseline.
    #[arg(long, env = "DEMETER_BENCH_PYTHON")]
    pub python: Option<PathBuf>,
    /// The ONNX Runtime library (default: where `make ort` puts it).
    #[arg(long, env = "DEMETER_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
}

impl Opts {
    /// The ONNX Runtime environment for benchmarks that call the crates directly: ONNX Runtime
    /// allows one per process, so it is made on first use and shared.
    pub fn runtime(&self) -> Result<&'static demeter_infer::Runtime> {
        static RUNTIME: std::sync::OnceLock<demeter_infer::Runtime> = std::sync::OnceLock::new();
        if let Some(rt) = RUNTIME.get() {
            return Ok(rt);
        }
        let rt = demeter_infer::Runtime::init(self.ort_lib.as_deref(), demeter_domain::config::Device::Cpu)?;
        Ok(RUNTIME.get_or_init(|| rt))
    }

    /// `full`, or `quick` under `--quick`.
    pub fn scaled(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let which = if cli.which.is_empty() { Bench::value_variants().to_vec() } else { cli.which.clone() };
    let mut sections = Vec::new();
    for bench in which {
        eprintln!("running {}…", bench.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default());
        let new = match bench {
            Bench::Poll => {
                let (poll, startup) = poll::run(&cli.opts)?;
                vec![poll, startup]
            }
            Bench::Pipeline => vec![pipeline::run(&cli.opts)?],
            Bench::Memory => vec![memory::run(&cli.opts)?],
            Bench::Heavy => vec![heavy::run(&cli.opts)?],
            Bench::Latency => vec![latency::run(&cli.opts)?],
            Bench::Sse => vec![sse::run(&cli.opts)?],
            Bench::Eta => vec![eta::run(&cli.opts)?],
            Bench::Scale => vec![scale::run(&cli.opts)?],
            Bench::Page => vec![page::run(&cli.opts)?],
            Bench::Archive => vec![archive::run(&cli.opts)?],
        };
        for s in &new {
            eprintln!("{}", s.body);
        }
        sections.extend(new);
    }
    sections.push(report::gpu());
    let invocation = std::env::args().collect::<Vec<_>>().join(" ");
    let text = report::render(&sections, &invocation);
    match cli.out {
        Some(path) => {
            std::fs::write(&path, text)?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
