//! An out-of-process fixture for end-to-end tests: the real `demeter` binary on temp folders,
//! a free loopback port, and condition polling instead of sleeps.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// This package's folder (`tests/`), read when the test runs: cargo sets `CARGO_MANIFEST_DIR`
/// for test processes. The compile-time value can be stale: rustc's incremental cache reuses a
/// module compiled in another checkout sharing the target dir, path and all.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The shared real photo set, beside the repository.
pub fn real_photos_dir() -> PathBuf {
    package_dir().join("../../shared/data/real")
}

/// Every photo of the real set (JPEG and PNG files named in its manifest).
pub fn real_photos() -> Vec<PathBuf> {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(real_photos_dir().join("manifest.json")).expect("shared/data/real/manifest.json"),
    )
    .expect("manifest is JSON");
    manifest["images"]
        .as_array()
        .expect("images[]")
        .iter()
        .map(|i| real_photos_dir().join(i["file"].as_str().expect("file")))
        .collect()
}

/// The `demeter` binary built by `cargo build -p demeter-daemon` (the Makefile does this first).
/// Runs `demeter ARGS` without a config file; its exit code, stdout and stderr.
pub fn demeter(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(demeter_bin()).args(args).env("DEMETER_CONFIG", "").output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Starts `demeter run --model MODEL` on a free port with its folders under `root`, for a model
/// that must stop start-up: its exit code, stdout and stderr.
pub fn run_with_model(model: &Path, root: &Path) -> (i32, String, String) {
    demeter(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--watch",
        root.join("photos").to_str().unwrap(),
        "--data",
        root.join("data").to_str().unwrap(),
    ])
}

/// A `multipart/form-data` body of `parts` (field, file name or `None` for a text field,
/// bytes): its content type and bytes.
pub fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "demeter-test-boundary-7f3a";
    let mut body = Vec::new();
    for (field, file_name, bytes) in parts {
        let head = match file_name {
            Some(f) => format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            ),
            None => format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n"),
        };
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn demeter_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DEMETER_BIN") {
        return p.into();
    }
    // target/debug/deps/e2e-xxxx → target/debug/demeter
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("demeter");
    assert!(bin.exists(), "{} is missing: run `cargo build -p demeter-daemon` first (make test does)", bin.display());
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The admin token the fixture's daemons run with (`DEMETER_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef0123456789abcdef";

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A config file in a temp folder of its own (removed when dropped), for `DEMETER_CONFIG`.
pub struct ConfigFile {
    _dir: tempfile::TempDir,
    pub path: String,
}

pub fn config_file(toml: &str) -> ConfigFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    ConfigFile { path: path.to_str().unwrap().to_owned(), _dir: dir }
}

/// A running daemon with its own folders. Killed when dropped.
pub struct Daemon {
    pub root: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
    extra_args: Vec<String>,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_with_args(&[], env)
    }

    /// `demeter run` with more flags (e.g. `--supervise`) and environment.
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("photos")).unwrap();
        let mut d = Daemon {
            root,
            port: free_port(),
            child: None,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn();
        d
    }

    pub fn watch_dir(&self) -> PathBuf {
        self.root.path().join("photos")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.root.path().join("daemon.log")).unwrap();
        let mut cmd = Command::new(demeter_bin());
        cmd.arg("run")
            .arg("--watch")
            .arg(self.watch_dir())
            .arg("--data")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra_args)
            .env("DEMETER_STABILITY_WINDOW_MS", "500")
            .env("DEMETER_RESCAN_INTERVAL_SECS", "2")
            .env("DEMETER_CONFIG", self.root.path().join("no-config.toml"))
            .env("DEMETER_LOG", "info,ort=warn")
            .env("DEMETER_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::fs::write(self.root.path().join("no-config.toml"), "").unwrap();
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start demeter"));
        let port = self.port;
        wait_for("the daemon's /health", Duration::from_secs(30), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("demeter exited during start-up ({status}):\n{}", self.log());
            }
            ureq::get(&format!("http://127.0.0.1:{port}/health")).call().ok().map(|_| ())
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET returning (status, JSON body), for error statuses too.
    pub fn get(&self, path: &str) -> (u16, Value) {
        match self.request("GET", path).call() {
            Ok(r) => (r.status(), r.into_json().expect("JSON body")),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().expect("JSON error body")),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// Sends a body with its content type; (status, JSON body), for error statuses too.
    pub fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        match self.request(method, path).set("content-type", content_type).send_bytes(body) {
            Ok(r) => (r.status(), r.into_json().expect("JSON body")),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().expect("JSON error body")),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// A request carrying the admin token.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &self.url(path)).set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.get("/api/v1/sessions").1["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the seed's endpoint for one session.
    pub fn poll(&self, session: &str) -> Value {
        let (code, body) = self.get(&format!("/api/v1/photos/jobs/status?upload_session_id={session}"));
        assert_eq!(code, 200, "{body}");
        body
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        let status = wait_for("the daemon to exit", Duration::from_secs(20), || c.try_wait().unwrap());
        status.code()
    }

    /// Starts the daemon again on the same folders and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
