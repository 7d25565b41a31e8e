//! Configuration: serde sections with defaults, layered file < environment < flags.
//!
//! The file layer is parsed by the binary (it reads the file); this module owns the shape, the
//! defaults, the `DEMETER_*` environment layer (given the variables, so it stays pure) and the
//! validation that turns a bad value into one clear sentence.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};

/// Everything the engine and server need. Every section has defaults, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub watch: WatchConfig,
    pub store: StoreConfig,
    pub workers: WorkersConfig,
    pub model: ModelConfig,
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
    pub notify: NotifyConfig,
    /// The results archive: how long results are kept after their jobs are swept.
    pub results: ResultsConfig,
    /// When a location's count is worth telling growers about.
    pub alerts: AlertsConfig,
    /// Storage locations and how photos are matched to them.
    pub locations: crate::location::LocationsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// `http://` URL that gets a JSON POST per finished upload session (headless machines'
    /// answer to the desktop notifications). Retried with back-off; never slows the engine.
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ResultsConfig {
    /// Archived results of photos taken more than this many days ago are removed by the sweep,
    /// with their thumbnails. `None` (the default): every result is kept.
    pub retention_days: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A location whose count falls by more than this share (percent) from one photo to the
    /// next is reported once: plants died or were removed.
    pub drop_percent: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { drop_percent: 10.0 }
    }
}

impl AlertsConfig {
    /// Whether going from `before` to `after` plants is a drop worth an alert.
    pub fn is_drop(&self, before: u32, after: u32) -> bool {
        before > 0 && after < before && f64::from(before - after) * 100.0 > self.drop_percent * f64::from(before)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// The folder staff drop photos into (recursively watched; created if missing).
    pub dir: PathBuf,
    /// Full reconciliation rescan period, so photos are found even when events are dropped.
    pub rescan_interval_secs: u64,
    /// A file must keep its size and mtime this long before it is read (copies in progress).
    pub stability_window_ms: u64,
    /// A quiet gap longer than this starts a new upload session.
    pub session_gap_secs: u64,
    /// Filesystem events or rescans alone; `auto` polls on network and FUSE filesystems.
    pub mode: WatchMode,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("photos"),
            rescan_interval_secs: 60,
            stability_window_ms: 2000,
            session_gap_secs: 30,
            mode: WatchMode::Auto,
        }
    }
}

/// How the photo folder is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Filesystem events plus rescans; rescans alone when the folder is on a network or FUSE
    /// filesystem (files written by other machines raise no events there).
    #[default]
    Auto,
    /// Events plus rescans even on a network filesystem.
    Events,
    /// Rescans alone, every `rescan_interval_secs`.
    Polling,
}

impl FromStr for WatchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(WatchMode::Auto),
            "events" => Ok(WatchMode::Events),
            "polling" => Ok(WatchMode::Polling),
            _ => Err("expected one of auto, events, polling".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the job database and thumbnails live. `None`: the platform data directory
    /// (`$XDG_DATA_HOME/demeter`, else `~/.local/share/demeter`), resolved by the binary.
    pub data_dir: Option<PathBuf>,
    /// sled's page cache. Its own default is 1 GiB, far more than an appliance should take.
    pub cache_capacity_mb: u64,
    /// Upload sessions disappear from the API this long after creation (fractions allowed:
    /// 0.5 is half an hour).
    pub session_ttl_hours: f64,
    /// Job records (and thumbnails) are removed this long after creation. Results stay in the
    /// archive ([`ResultsConfig`]).
    pub job_ttl_hours: f64,
    /// How often the TTL sweeper runs.
    pub sweep_interval_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            cache_capacity_mb: 64,
            session_ttl_hours: 24.0,
            job_ttl_hours: 48.0,
            sweep_interval_secs: 300,
        }
    }
}

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when it registers, CPU otherwise (with a warning in `/health`).
    #[default]
    Auto,
    Cpu,
    /// CUDA or refuse to start.
    Cuda,
    /// TensorRT (with CUDA for what TensorRT does not take) or refuse to start. Never chosen by
    /// `auto`: TensorRT builds an engine per model and shape when a session starts (seconds to
    /// minutes), so it is asked for, not guessed.
    #[serde(rename = "tensorrt")]
    TensorRt,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "tensorrt" => Ok(Device::TensorRt),
            _ => Err("expected one of auto, cpu, cuda, tensorrt".into()),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
        })
    }
}

/// Whether a model with a free batch axis runs in batches: one session for all workers, photos
/// of one shape run together (`demeter_infer::batch`). Models without a batch axis always keep
/// a session per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Batching {
    /// Batched on a GPU, where one session fed in batches beats a session per worker; a session
    /// per worker on the CPU.
    #[default]
    Auto,
    /// Batched on any device, the CPU included.
    On,
    /// A session per worker everywhere.
    Off,
}

impl FromStr for Batching {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Batching::Auto),
            "on" => Ok(Batching::On),
            "off" => Ok(Batching::Off),
            _ => Err("expected one of auto, on, off".into()),
        }
    }
}

impl fmt::Display for Batching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Batching::Auto => "auto",
            Batching::On => "on",
            Batching::Off => "off",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Parallel workers, each with its own ONNX Runtime session.
    pub count: usize,
    pub device: Device,
    /// Attempts before a job whose worker keeps dying fails with "worker crashed repeatedly".
    pub max_attempts: u32,
    /// Photos with more pixels than this fail before decoding (decompression bombs).
    pub max_pixels: u64,
    /// ONNX Runtime intra-op threads per worker; `None`: max(1, cores / workers).
    pub intra_threads: Option<usize>,
    /// A stage running longer than this fails its photo ("stage … timed out") and the worker
    /// is replaced, so a hung decoder or runtime cannot shrink the pool. 0: no limit.
    pub stage_timeout_secs: u64,
    /// This many inference-device errors in a row (no success between them) pause processing:
    /// the circuit breaker opens, `/health` turns not-ready and says why.
    pub breaker_threshold: u32,
    /// How long processing stays paused before one trial photo probes the device; doubled
    /// after every failed trial, up to 10 minutes (or 20 × this).
    pub breaker_cooldown_secs: u64,
    /// Batched inference for models with a free batch axis: `auto` (on a GPU), `on`, `off`.
    pub batching: Batching,
    /// At most this many photos in one batched run (batches run at powers of two up to it).
    pub max_batch: usize,
    /// A photo waits at most this many milliseconds for others of its shape to join its batch.
    pub batch_wait_ms: u64,
    /// Workers when the default model runs batched on a GPU: there they only read, decode,
    /// resize and count (the GPU does the inference), so the CPU's cores are what limits them.
    /// `None`: the number of cores, at least `count`.
    pub gpu_count: Option<usize>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            count: 4,
            device: Device::Auto,
            max_attempts: 3,
            max_pixels: 100_000_000,
            intra_threads: None,
            stage_timeout_secs: 300,
            breaker_threshold: 5,
            breaker_cooldown_secs: 30,
            batching: Batching::Auto,
            max_batch: 8,
            batch_wait_ms: 4,
            gpu_count: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A folder with `model.onnx` and `manifest.toml`; `None`: the default model built into the binary.
    pub dir: Option<PathBuf>,
    /// Further model folders, loaded at start, that a session can be reprocessed with
    /// (`POST /api/v1/sessions/{id}/reprocess`). Names must differ from each other and the default's.
    pub installed: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the status API and page. Loopback by default; any address (e.g.
    /// `0.0.0.0:7878` for the LAN) is allowed because every API route needs a token.
    pub listen: SocketAddr,
    /// Extra `Host` names the server answers to (e.g. a DNS name for the appliance). Its own
    /// addresses, `localhost` and the machine's hostname are always accepted; any other `Host`
    /// is refused (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// A client must send a request's headers within this many seconds (slowloris protection);
    /// idle keep-alive connections are closed after it too.
    pub header_timeout_secs: u64,
    /// At most this many live event streams at once; more get 503 with `Retry-After`.
    pub max_event_streams: usize,
    /// Wrong tokens one address may present in a row before it waits (one more every 6 s; 429
    /// with `Retry-After` meanwhile). Raise it where many people share one address.
    pub failed_auth_burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            allowed_hosts: Vec::new(),
            header_timeout_secs: 10,
            max_event_streams: 64,
            failed_auth_burst: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path of `libonnxruntime.so` (1.31); `None`: searched next to the binary and in the cache.
    pub ort_lib: Option<PathBuf>,
    /// A test double around inference that slows, fails, panics, aborts or hangs on demand
    /// (`[runtime.faults]`). Off unless configured; for reliability tests, never production.
    pub faults: Option<Faults>,
}

/// Faults injected before the segmentation stage, chosen by the photo's file name, so a test
/// can mix healthy and poisonous photos in one folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every photo's segmentation.
    pub latency_ms: u64,
    /// Photos whose name contains this fail with an inference error.
    pub fail_on: Option<String>,
    /// ... make the worker panic.
    pub panic_on: Option<String>,
    /// ... abort the whole process, as a crash in native inference code would.
    pub abort_on: Option<String>,
    /// ... never return from segmentation.
    pub hang_on: Option<String>,
    /// While this file exists, every inference fails the way a broken device does (a GPU
    /// gone, device memory exhausted); removing it "repairs" the device.
    pub device_broken_while: Option<std::path::PathBuf>,
}

/// A configuration value that cannot be used, named so the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env { var: &'static str, value: String, reason: String },
    #[error("config value {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn parse_env<T: FromStr>(var: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| ConfigError::Env { var, value: value.to_owned(), reason: e.to_string() })
}

impl Config {
    /// Applies `DEMETER_*` variables on top of `self`. Other variables are ignored; an empty
    /// value counts as unset.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (key, value) in vars {
            let value = value.as_ref();
            if value.is_empty() {
                continue;
            }
            match key.as_ref() {
                "DEMETER_WATCH" => self.watch.dir = value.into(),
                "DEMETER_DATA" => self.store.data_dir = Some(value.into()),
                "DEMETER_LISTEN" => self.server.listen = parse_env("DEMETER_LISTEN", value)?,
                "DEMETER_WORKERS" => self.workers.count = parse_env("DEMETER_WORKERS", value)?,
                "DEMETER_DEVICE" => self.workers.device = parse_env("DEMETER_DEVICE", value)?,
                "DEMETER_BATCHING" => self.workers.batching = parse_env("DEMETER_BATCHING", value)?,
                "DEMETER_MAX_BATCH" => self.workers.max_batch = parse_env("DEMETER_MAX_BATCH", value)?,
                "DEMETER_BATCH_WAIT_MS" => self.workers.batch_wait_ms = parse_env("DEMETER_BATCH_WAIT_MS", value)?,
                "DEMETER_GPU_WORKERS" => self.workers.gpu_count = Some(parse_env("DEMETER_GPU_WORKERS", value)?),
                "DEMETER_MODEL" => self.model.dir = Some(value.into()),
                "DEMETER_ORT_LIB" => self.runtime.ort_lib = Some(value.into()),
                "DEMETER_RESCAN_INTERVAL_SECS" => {
                    self.watch.rescan_interval_secs = parse_env("DEMETER_RESCAN_INTERVAL_SECS", value)?
                }
                "DEMETER_STABILITY_WINDOW_MS" => {
                    self.watch.stability_window_ms = parse_env("DEMETER_STABILITY_WINDOW_MS", value)?
                }
                "DEMETER_WATCH_MODE" => self.watch.mode = parse_env("DEMETER_WATCH_MODE", value)?,
                "DEMETER_SESSION_GAP_SECS" => {
                    self.watch.session_gap_secs = parse_env("DEMETER_SESSION_GAP_SECS", value)?
                }
                "DEMETER_SESSION_TTL_HOURS" => {
                    self.store.session_ttl_hours = parse_env("DEMETER_SESSION_TTL_HOURS", value)?
                }
                "DEMETER_JOB_TTL_HOURS" => self.store.job_ttl_hours = parse_env("DEMETER_JOB_TTL_HOURS", value)?,
                "DEMETER_ALERTS_DROP_PERCENT" => {
                    self.alerts.drop_percent = parse_env("DEMETER_ALERTS_DROP_PERCENT", value)?
                }
                "DEMETER_RESULTS_RETENTION_DAYS" => {
                    self.results.retention_days = Some(parse_env("DEMETER_RESULTS_RETENTION_DAYS", value)?)
                }
                "DEMETER_SWEEP_INTERVAL_SECS" => {
                    self.store.sweep_interval_secs = parse_env("DEMETER_SWEEP_INTERVAL_SECS", value)?
                }
                "DEMETER_MAX_PIXELS" => self.workers.max_pixels = parse_env("DEMETER_MAX_PIXELS", value)?,
                "DEMETER_STAGE_TIMEOUT_SECS" => {
                    self.workers.stage_timeout_secs = parse_env("DEMETER_STAGE_TIMEOUT_SECS", value)?
                }
                "DEMETER_MAX_ATTEMPTS" => self.workers.max_attempts = parse_env("DEMETER_MAX_ATTEMPTS", value)?,
                "DEMETER_CACHE_CAPACITY_MB" => {
                    self.store.cache_capacity_mb = parse_env("DEMETER_CACHE_CAPACITY_MB", value)?
                }
                "DEMETER_NOTIFY_WEBHOOK" => self.notify.webhook = Some(value.to_owned()),
                "DEMETER_HEADER_TIMEOUT_SECS" => {
                    self.server.header_timeout_secs = parse_env("DEMETER_HEADER_TIMEOUT_SECS", value)?
                }
                "DEMETER_MAX_EVENT_STREAMS" => {
                    self.server.max_event_streams = parse_env("DEMETER_MAX_EVENT_STREAMS", value)?
                }
                "DEMETER_FAILED_AUTH_BURST" => {
                    self.server.failed_auth_burst = parse_env("DEMETER_FAILED_AUTH_BURST", value)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks values serde cannot: ranges and relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.into() });
        if !(1..=64).contains(&self.workers.count) {
            return invalid("workers.count", "must be between 1 and 64");
        }
        if self.workers.gpu_count.is_some_and(|n| !(1..=256).contains(&n)) {
            return invalid("workers.gpu_count", "must be between 1 and 256");
        }
        if !(1..=256).contains(&self.workers.max_batch) {
            return invalid("workers.max_batch", "must be between 1 and 256");
        }
        if self.workers.batch_wait_ms > 1000 {
            return invalid("workers.batch_wait_ms", "must be at most 1000 (a photo would wait a second for company)");
        }
        if self.workers.max_attempts == 0 {
            return invalid("workers.max_attempts", "must be at least 1");
        }
        if self.workers.breaker_threshold == 0 {
            return invalid("workers.breaker_threshold", "must be at least 1");
        }
        if self.workers.breaker_cooldown_secs == 0 {
            return invalid("workers.breaker_cooldown_secs", "must be at least 1");
        }
        if self.workers.max_pixels < 1 {
            return invalid("workers.max_pixels", "must be at least 1");
        }
        if self.workers.intra_threads == Some(0) {
            return invalid("workers.intra_threads", "must be at least 1");
        }
        if self.watch.rescan_interval_secs == 0 {
            return invalid("watch.rescan_interval_secs", "must be at least 1");
        }
        if self.watch.dir.as_os_str().is_empty() {
            return invalid("watch.dir", "must not be empty");
        }
        // At least a millisecond, at most a century (an expiry time must be representable).
        let hours = 1.0 / 3_600_000.0..=876_000.0;
        if !hours.contains(&self.store.session_ttl_hours) {
            return invalid("store.session_ttl_hours", "must be more than 0 hours and at most 876000 (100 years)");
        }
        if !hours.contains(&self.store.job_ttl_hours) {
            return invalid("store.job_ttl_hours", "must be more than 0 hours and at most 876000 (100 years)");
        }
        if self.store.job_ttl_hours < self.store.session_ttl_hours {
            return invalid("store.job_ttl_hours", "must be at least store.session_ttl_hours");
        }
        if !(self.alerts.drop_percent > 0.0 && self.alerts.drop_percent <= 100.0) {
            return invalid("alerts.drop_percent", "must be more than 0 and at most 100");
        }
        if let Some(days) = self.results.retention_days {
            if !(days > 0.0 && days <= 36_500.0) {
                return invalid(
                    "results.retention_days",
                    "must be more than 0 days and at most 36500; leave it out to keep every result",
                );
            }
        }
        if self.store.job_ttl_hours < self.store.session_ttl_hours {
            return invalid("store.job_ttl_hours", "must be at least store.session_ttl_hours");
        }
        if self.store.sweep_interval_secs == 0 {
            return invalid("store.sweep_interval_secs", "must be at least 1");
        }
        crate::location::Locator::new(&self.locations)?;
        if let Some(url) = &self.notify.webhook {
            if url.starts_with("https://") {
                return invalid("notify.webhook", "https is not supported yet; use an http:// URL on the LAN");
            }
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return invalid("notify.webhook", "must be an http:// URL");
            }
        }
        if self.server.header_timeout_secs == 0 {
            return invalid("server.header_timeout_secs", "must be at least 1");
        }
        if self.server.failed_auth_burst == 0 {
            return invalid("server.failed_auth_burst", "must be at least 1");
        }
        if self.server.max_event_streams == 0 {
            return invalid("server.max_event_streams", "must be at least 1");
        }
        if self.store.cache_capacity_mb == 0 {
            return invalid("store.cache_capacity_mb", "must be at least 1");
        }
        Ok(())
    }

    /// ONNX Runtime intra-op threads per worker.
    /// Worker threads to start: `workers.count`, or, when the default model runs batched on a
    /// GPU, `workers.gpu_count` (default: every core, and no fewer than `count`).
    pub fn worker_threads(&self, batched_on_gpu: bool, cores: usize) -> usize {
        if batched_on_gpu {
            self.workers.gpu_count.unwrap_or(cores.max(self.workers.count))
        } else {
            self.workers.count
        }
    }

    pub fn intra_threads(&self, cores: usize) -> usize {
        self.workers.intra_threads.unwrap_or((cores / self.workers.count.max(1)).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_reads_back_as_written_in_flags_files_and_env() {
        for (text, device) in
            [("auto", Device::Auto), ("cpu", Device::Cpu), ("cuda", Device::Cuda), ("tensorrt", Device::TensorRt)]
        {
            assert_eq!(text.parse::<Device>(), Ok(device));
            assert_eq!(device.to_string(), text);
            let file: WorkersConfig = toml::from_str(&format!("device = {text:?}")).unwrap();
            assert_eq!(file.device, device);
        }
        assert!("TensorRT".parse::<Device>().is_ok(), "case does not matter");
        assert!("gpu".parse::<Device>().unwrap_err().contains("tensorrt"));
    }

    #[test]
    fn batching_reads_back_and_its_limits_are_checked() {
        for (text, b) in [("auto", Batching::Auto), ("on", Batching::On), ("off", Batching::Off)] {
            assert_eq!(text.parse::<Batching>(), Ok(b));
            assert_eq!(b.to_string(), text);
            let file: WorkersConfig = toml::from_str(&format!("batching = {text:?}")).unwrap();
            assert_eq!(file.batching, b);
        }
        let mut c = Config::default();
        c.apply_env([("DEMETER_BATCHING", "on"), ("DEMETER_MAX_BATCH", "16"), ("DEMETER_BATCH_WAIT_MS", "2")]).unwrap();
        assert_eq!((c.workers.batching, c.workers.max_batch, c.workers.batch_wait_ms), (Batching::On, 16, 2));
        assert!(c.apply_env([("DEMETER_BATCHING", "sometimes")]).unwrap_err().to_string().contains("DEMETER_BATCHING"));
        c.workers.max_batch = 0;
        assert!(c.validate().unwrap_err().to_string().contains("workers.max_batch"));
        c.workers.max_batch = 8;
        c.workers.batch_wait_ms = 5000;
        assert!(c.validate().unwrap_err().to_string().contains("workers.batch_wait_ms"));
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.workers.count, 4);
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.watch.stability_window_ms, 2000);
        assert_eq!(c.store.session_ttl_hours, 24.0);
        assert_eq!(c.store.job_ttl_hours, 48.0);
    }

    #[test]
    fn env_overrides_and_reports_bad_values_by_name() {
        let mut c = Config::default();
        c.apply_env([("DEMETER_WORKERS", "2"), ("DEMETER_LISTEN", "127.0.0.1:9000"), ("HOME", "/x")]).unwrap();
        assert_eq!(c.workers.count, 2);
        assert_eq!(c.server.listen.port(), 9000);
        let err = c.apply_env([("DEMETER_WORKERS", "four")]).unwrap_err();
        assert!(err.to_string().contains("DEMETER_WORKERS"), "{err}");
        let err = c.apply_env([("DEMETER_DEVICE", "tpu")]).unwrap_err();
        assert!(err.to_string().contains("auto, cpu, cuda"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config::default();
        c.workers.count = 0;
        assert!(c.validate().unwrap_err().to_string().contains("workers.count"));
        let mut c = Config::default();
        c.store.job_ttl_hours = 1.0;
        assert!(c.validate().unwrap_err().to_string().contains("store.job_ttl_hours"));
        // Fractions of an hour are fine (tests sweep in seconds); nothing, negative or NaN is not.
        c.store.session_ttl_hours = 0.0005;
        c.store.job_ttl_hours = 0.001;
        assert!(c.validate().is_ok());
        for bad in [0.0, -1.0, f64::NAN] {
            c.store.session_ttl_hours = bad;
            assert!(c.validate().unwrap_err().to_string().contains("store.session_ttl_hours"), "{bad}");
        }
        c.store.session_ttl_hours = 0.0005;
        c.results.retention_days = Some(0.0);
        assert!(c.validate().unwrap_err().to_string().contains("results.retention_days"));
        c.results.retention_days = None;
        c.alerts.drop_percent = 0.0;
        assert!(c.validate().unwrap_err().to_string().contains("alerts.drop_percent"));
        // More than 10 %: 20 → 17 is a drop, 20 → 18 is not; nothing from nothing, nor a rise.
        let a = AlertsConfig::default();
        assert!(a.is_drop(20, 17) && !a.is_drop(20, 18) && !a.is_drop(0, 0) && !a.is_drop(5, 9));
        let mut c = Config::default();
        c.apply_env([("DEMETER_FAILED_AUTH_BURST", "0")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("server.failed_auth_burst"));
    }

    #[test]
    fn a_gpu_fed_in_batches_gets_a_worker_per_core_unless_told() {
        let mut c = Config::default();
        assert_eq!(c.worker_threads(false, 16), 4, "CPU inference: four workers");
        assert_eq!(c.worker_threads(true, 16), 16, "batched on a GPU: every core decodes");
        assert_eq!(c.worker_threads(true, 2), 4, "never fewer than workers.count");
        c.apply_env([("DEMETER_GPU_WORKERS", "6")]).unwrap();
        assert_eq!(c.worker_threads(true, 16), 6);
        c.workers.gpu_count = Some(0);
        assert!(c.validate().unwrap_err().to_string().contains("workers.gpu_count"));
    }

    #[test]
    fn intra_threads_share_the_cores() {
        let c = Config::default();
        assert_eq!(c.intra_threads(16), 4);
        assert_eq!(c.intra_threads(2), 1);
    }
}
