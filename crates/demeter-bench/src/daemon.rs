//! The release `demeter` binary on temp folders, as a benchmark subject.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef0123456789abcdef";

/// `demeter` beside this binary (both built by `make bench` in release mode).
pub fn demeter_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DEMETER_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("demeter");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p demeter-daemon` (make bench does)",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(17878)
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub port: u16,
    pub watch: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `demeter run` on `root/photos` and `root/data` with `env`, and waits until it
    /// serves `/health` (any status: a paused breaker is still serving).
    pub fn start(root: &Path, env: &[(&str, &str)]) -> Result<(Self, Duration)> {
        let (watch, data, log) = (root.join("photos"), root.join("data"), root.join("daemon.log"));
        std::fs::create_dir_all(&watch)?;
        std::fs::write(root.join("empty.toml"), "")?;
        let port = free_port();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(demeter_bin()?);
        cmd.arg("run")
            .args(["--watch", watch.to_str().unwrap(), "--data", data.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("DEMETER_CONFIG", root.join("empty.toml"))
            .env("DEMETER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("DEMETER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd.spawn().context("starting demeter")?;
        let mut d = Daemon { port, watch, child, log };
        loop {
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "demeter exited during start-up ({status}): {}",
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
            match ureq::get(&d.url("/health")).call() {
                Ok(_) | Err(ureq::Error::Status(..)) => break,
                Err(_) if started.elapsed() < Duration::from_secs(120) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => bail!("demeter did not start: {e}"),
            }
        }
        let took = started.elapsed();
        Ok((d, took))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        Ok(ureq::get(&self.url(path)).set("Authorization", &format!("Bearer {ADMIN_TOKEN}")).call()?.into_json()?)
    }

    /// A GET whose body is not JSON (an image); the body's bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let res = ureq::get(&self.url(path)).set("Authorization", &format!("Bearer {ADMIN_TOKEN}")).call()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut res.into_reader(), &mut bytes)?;
        Ok(bytes)
    }

    pub fn post(&self, path: &str) -> Result<Value> {
        Ok(ureq::post(&self.url(path)).set("Authorization", &format!("Bearer {ADMIN_TOKEN}")).call()?.into_json()?)
    }

    /// Peak resident set size so far (`VmHWM`), in MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        proc_status_kb(self.pid(), "VmHWM:").map(|kb| kb as f64 / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` in kB.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `f` every few milliseconds until it gives a value or `within` passes.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An SSE client on its own thread: connects to `url` with the admin token, calls `connected`
/// once the stream is open, then `on_event` with the JSON of every `data:` line until the
/// stream ends.
pub fn follow_events(
    url: String,
    connected: impl FnOnce() + Send + 'static,
    mut on_event: impl FnMut(serde_json::Value) + Send + 'static,
) -> Result<()> {
    use std::io::BufRead;
    std::thread::Builder::new().stack_size(256 << 10).spawn(move || {
        let Ok(r) = ureq::get(&url).set("Authorization", &format!("Bearer {ADMIN_TOKEN}")).call() else { return };
        connected();
        for line in std::io::BufReader::new(r.into_reader()).lines() {
            let Ok(line) = line else { return };
            let Some(data) = line.strip_prefix("data:") else { continue };
            if let Ok(v) = serde_json::from_str(data.trim()) {
                on_event(v);
            }
        }
    })?;
    Ok(())
}
