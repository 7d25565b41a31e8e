//! Command-line surface and exit codes: 0 success, 1 a photo failed (`process`) or the daemon
//! stopped on an error, 2 usage, configuration or start-up problems. Errors are one line on
//! stderr, never a panic or a backtrace.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use demeter_domain::config::{Batching, Device};

#[derive(Debug, Parser)]
#[command(
    name = "demeter",
    version,
    about = "Greenhouse photo-processing appliance: watches a folder, counts plants, serves live status."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance: watch the photo folder, process photos, serve the status API.
    Run(RunArgs),
    /// Process photos or folders once, without the daemon, and report the results.
    Process(ProcessArgs),
    /// Measure counting accuracy on photos with ground truth (a manifest.json as in
    /// shared/data/real): predicted vs true count per photo, mean absolute error, time per photo.
    Eval(EvalArgs),
    /// Manage access tokens (viewer, uploader, admin) in the data directory.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make a model folder from a YOLO export, or check what a folder provides.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Write the results archive (every completed photo, kept after its job is gone) as CSV or
    /// JSON, oldest first, for spreadsheets. Reads the data directory: stop the daemon first, or
    /// use GET /api/v1/results while it runs.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Taken at or after: a date (2026-05-04) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Taken before: as --since.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// A storage location's id.
    #[arg(long, value_name = "ID")]
    pub location: Option<String>,
    /// A model's name.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// csv or json (one JSON array).
    #[arg(long, value_name = "FORMAT", default_value = "csv", value_parser = ["csv", "json"])]
    pub format: String,
    /// Write here rather than to standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub at: DataArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Turn an Ultralytics YOLO export (detect or segment, v5, v8, 11, end-to-end) into a model
    /// folder: DIR/model.onnx and DIR/manifest.toml, from the file's metadata and shapes.
    Import(ImportArgs),
    /// Print what a model folder provides (family, tensors, classes, thresholds, where it would
    /// run); exits 2 when the daemon could not load it.
    Check {
        /// The model folder.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The exported model.
    #[arg(value_name = "FILE.onnx")]
    pub file: PathBuf,
    /// The folder to write (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The model's name in results [default: the file's stem].
    #[arg(long)]
    pub name: Option<String>,
    /// yolo-detect or yolo-seg [default: from the export's task metadata].
    #[arg(long, value_name = "FAMILY", value_parser = demeter_infer::import::parse_family)]
    pub family: Option<demeter_infer::Family>,
    /// The class names in index order, comma-separated [default: from the names metadata].
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// The classes that count as plants [default: all].
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub plant_classes: Option<Vec<String>>,
    /// v8, v5 or end-to-end [default: from the box output's shape].
    #[arg(long, value_name = "LAYOUT", value_parser = demeter_infer::import::parse_layout)]
    pub layout: Option<demeter_infer::yolo::BoxLayout>,
    /// The square input side [default: the imgsz metadata, else the graph's input].
    #[arg(long, value_name = "N")]
    pub input_size: Option<u32>,
    /// Confidence threshold [default: 0.25].
    #[arg(long, value_name = "P")]
    pub confidence: Option<f64>,
    /// NMS IoU threshold [default: 0.45].
    #[arg(long, value_name = "P")]
    pub iou: Option<f64>,
    /// Replace a model already in DIR.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once and stored only as a hash.
    Create {
        #[arg(long, value_name = "ROLE")]
        role: demeter_auth::Role,
        #[arg(long, value_name = "NAME")]
        name: String,
        #[command(flatten)]
        at: DataArgs,
    },
    /// List tokens (names, roles, creation times; never the secrets).
    List {
        #[command(flatten)]
        at: DataArgs,
    },
    /// Revoke a token at once (a running daemon stops accepting it).
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        at: DataArgs,
    },
}

/// Where the token file is: the data directory, from `--data` or the configuration.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Data directory [default: from the config, else $XDG_DATA_HOME/demeter].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Settings shared by both commands. Each beats `DEMETER_*` variables, which beat the file.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// TOML config file (default: $XDG_CONFIG_HOME/demeter/config.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Parallel workers: each reads, decodes and counts one photo at a time, with its own ONNX
    /// Runtime session unless the model is batched [default: 4].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Batched inference for models with a free batch axis (one session, photos of a shape run
    /// together): auto (on a GPU), on (the CPU too), off [default: auto].
    #[arg(long, value_name = "MODE")]
    pub batching: Option<Batching>,
    /// Execution provider: auto (CUDA if it registers, else CPU), cpu, cuda, tensorrt [default: auto].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<Device>,
    /// Model folder with model.onnx and manifest.toml [default: the built-in plant-exg model].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Path to libonnxruntime.so.1.31.1 [default: next to the binary, .ort/, ~/.cache/demeter].
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run the daemon as a child process and restart it when it crashes (with back-off; it
    /// gives up after 10 crashes in 10 minutes). SIGTERM and Ctrl-C stop both.
    #[arg(long)]
    pub supervise: bool,
    /// Folder to watch for photos, recursively; created if missing [default: ./photos].
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,
    /// Data directory: job database and thumbnails [default: $XDG_DATA_HOME/demeter].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to serve the status API and page on [default: 127.0.0.1:7878].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// http:// URL that gets a JSON POST per finished upload session (also DEMETER_NOTIFY_WEBHOOK).
    #[arg(long, value_name = "URL")]
    pub notify_webhook: Option<String>,
    /// File holding the admin token to use (instead of generating one; also DEMETER_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Photos and folders (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write per-photo results to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder with the photos and their manifest.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The manifest [default: DIR/manifest.json]. Photos are `images[].file`; the truth is
    /// `images[].ground_truth.plant_count` (photos without one are skipped).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Sizes to judge each photo at: `full` (as stored) and/or WIDTHxHEIGHT (the photo resized
    /// to fit that box, aspect ratio kept), comma-separated.
    #[arg(long, value_name = "SIZES", default_value = "full", value_delimiter = ',')]
    pub sizes: Vec<crate::eval::Size>,
    /// Also judge every photo (as stored) in camera variants: `all`, or names such as
    /// `rotate90,jpeg35,wider1.6` (see `eval/variants.rs`). The truth is the photo's own.
    #[arg(long, value_name = "VARIANTS")]
    pub variants: Option<String>,
    /// Keep the variant files made for `--variants` in this folder (for a look at them).
    #[arg(long, value_name = "DIR", requires = "variants")]
    pub keep_variants: Option<PathBuf>,
    /// Exit 1 when any photo's count is off by more than N.
    #[arg(long, value_name = "N")]
    pub max_error: Option<u32>,
    /// Judge only photos whose true count is at least N (e.g. 2: multi-plant trays).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_count: u32,
    /// Write the per-photo figures to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Exit status for usage, configuration and start-up errors.
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // `process` draws a progress bar on stderr: only warnings may interrupt it.
    // `model` prints the device and any fallback reason itself.
    init_logging(match cli.command {
        Command::Process(_) | Command::Eval(_) => "warn",
        Command::Model(_) | Command::Export(_) => "error",
        _ => "info,ort=warn",
    });
    let result = match cli.command {
        Command::Run(args) if args.supervise => crate::supervise::supervise(),
        Command::Run(args) => crate::run::run(args),
        Command::Process(args) => crate::process::process(args),
        Command::Eval(args) => crate::eval::eval(args),
        Command::Token(cmd) => crate::token::token(cmd),
        Command::Model(cmd) => crate::model::model(cmd),
        Command::Export(args) => crate::export::export(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("demeter: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// An error with the exit status it should produce.
pub struct Failure {
    pub error: anyhow::Error,
    pub code: u8,
}

impl Failure {
    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Self { error: error.into(), code: EXIT_CONFIG }
    }
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self { error: error.into(), code: 1 }
    }
}

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DEMETER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal, not in log files or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
