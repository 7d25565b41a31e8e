//! `demeter run --supervise`: the daemon as a child process, restarted when it crashes.
//!
//! A photo that crashes the process (a bug in native decoding or inference) must not take the
//! appliance down for good: the store reclaims its job at the next start and fails it after
//! `max_attempts` crashes ("worker crashed repeatedly"), so restarting is safe and the crash
//! loop ends by itself. Restarts back off (0.5 s doubling to 30 s, reset after a minute of
//! healthy running); more than 10 crashes in 10 minutes means something else is wrong, and the
//! supervisor gives up with exit 1. A clean exit (0) or a configuration error (2) is final.
//! For systemd machines, `packaging/demeter.service` does the same with `Restart=on-failure`.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use tracing::{error, info, warn};

use crate::cli::{Failure, EXIT_CONFIG};

const MAX_CRASHES: usize = 10;
const CRASH_WINDOW: Duration = Duration::from_secs(600);
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

pub fn supervise() -> Result<ExitCode, Failure> {
    let exe = std::env::current_exe().context("cannot find the demeter executable").map_err(Failure::runtime)?;
    // The same command line, minus the flag that brought us here.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--supervise").collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    runtime.block_on(run(exe, args))
}

async fn run(exe: std::path::PathBuf, args: Vec<String>) -> Result<ExitCode, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM").map_err(Failure::runtime)?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT").map_err(Failure::runtime)?;
    let mut crashes: Vec<Instant> = Vec::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&exe);
        command.args(&args).env("DEMETER_SUPERVISED", "1");
        // SAFETY: prctl(2) only sets a flag of the child about to exec; it allocates nothing.
        // If the supervisor is killed outright, the daemon gets SIGTERM instead of living on
        // unsupervised, holding the port and the database.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child =
            command.spawn().with_context(|| format!("cannot start {}", exe.display())).map_err(Failure::runtime)?;
        let pid = child.id();
        info!(pid, "supervisor: daemon started");
        let status = tokio::select! {
            status = child.wait() => status.context("cannot wait for the daemon").map_err(Failure::runtime)?,
            _ = term.recv() => return stop(child, pid, "SIGTERM").await,
            _ = int.recv() => return stop(child, pid, "Ctrl-C").await,
        };
        match status.code() {
            Some(0) => {
                info!("supervisor: the daemon stopped cleanly");
                return Ok(ExitCode::SUCCESS);
            }
            Some(code) if code == i32::from(EXIT_CONFIG) => {
                error!("supervisor: the daemon cannot start (exit {code}); not restarting");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            _ => {}
        }
        let now = Instant::now();
        if now.duration_since(started) > HEALTHY_AFTER {
            backoff = Duration::from_millis(500);
        }
        crashes.retain(|t| now.duration_since(*t) < CRASH_WINDOW);
        crashes.push(now);
        if crashes.len() > MAX_CRASHES {
            error!(crashes = crashes.len(), "supervisor: the daemon keeps crashing; giving up");
            return Ok(ExitCode::from(1));
        }
        warn!(%status, restart_in = ?backoff, "supervisor: the daemon crashed; restarting (its jobs are reclaimed)");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
            _ = int.recv() => return Ok(ExitCode::SUCCESS),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Passes the stop signal on and waits for the daemon's graceful shutdown.
async fn stop(mut child: tokio::process::Child, pid: Option<u32>, why: &str) -> Result<ExitCode, Failure> {
    info!("supervisor: {why}; stopping the daemon");
    if let Some(pid) = pid {
        // SAFETY: kill(2) on our own child's pid with a standard signal has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let status = child.wait().await.context("cannot wait for the daemon").map_err(Failure::runtime)?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
