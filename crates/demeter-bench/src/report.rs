//! `docs/benchmarks.md`: the machine, the versions, the commands and each benchmark's section.

use std::{fmt::Write, process::Command};

/// One benchmark's part of the report.
pub struct Section {
    pub title: String,
    /// The command that measures it on its own.
    pub command: String,
    /// The goal from the issue, if any.
    pub targets: String,
    /// The headline figure, with whether the target was met, for the summary table.
    pub result: String,
    /// Markdown: what was measured, how, and the numbers.
    pub body: String,
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The machine the numbers come from.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = run("uname", &["-sr"]).unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|o| o.lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| l[13..].trim_matches('"').to_owned()))
        .unwrap_or_default();
    let rustc = run("rustc", &["--version"]).unwrap_or_default();
    let commit = run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    format!(
        "- Machine: {cpu}, {cores} cores, {mem} RAM, no GPU used; {os}, {kernel}\n\
         - Build: `demeter` and `demeter-bench` release builds, {rustc}, ONNX Runtime {} (CPU)\n\
         - Commit: {commit}{}\n- Date: {}\n",
        demeter_infer::ORT_VERSION,
        if dirty { " (with uncommitted changes)" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )
}

pub fn render(sections: &[Section], invocation: &str) -> String {
    let mut out = String::from(
        "# Benchmarks\n\nWritten by `make bench` (`demeter-bench all`); do not edit by hand — rerun it. Benchmarks, \
         not tests: nothing in `make test` asserts a time. Each figure is a median with its spread (min–max) over the \
         runs stated.\n\n",
    );
    out.push_str(&machine());
    let _ = writeln!(out, "- Invocation: `{invocation}`\n");
    out.push_str("| benchmark | target | result | command |\n|---|---|---|---|\n");
    for s in sections {
        let _ =
            writeln!(out, "| [{}](#{}) | {} | {} | `{}` |", s.title, anchor(&s.title), s.targets, s.result, s.command);
    }
    for s in sections {
        let _ = write!(out, "\n## {}\n\n", s.title);
        if !s.targets.is_empty() {
            let _ = write!(out, "Target: {}. Command: `{}`.\n\n", s.targets, s.command);
        }
        out.push_str(s.body.trim_end());
        out.push('\n');
    }
    out
}

fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

/// "met" or "**not met**", for a result line.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

/// The GPU part of the report: `scripts/gpu-check.sh` is run by hand where a GPU is (it
/// installs about a gigabyte of CUDA wheels, or runs from a bundle on an offline machine), so
/// the report says whether one is here.
pub fn gpu() -> Section {
    let gpus = run("nvidia-smi", &["-L"]);
    let what = "`demeter process` with default settings over the dev photos (40 rounds) for plant-exg, the heavy test \
                model with a session per worker and the heavy model batched, each on `--device auto` and `--device \
                cpu`, and prints photos/min (start-up included), start-up to ready, peak GPU memory, plants counted \
                (every row must agree) and where each model ran, as a table for this section";
    let body = match &gpus {
        Some(list) => format!(
            "This machine has an NVIDIA GPU ({}). Run `scripts/gpu-check.sh`: it runs {what}.\n",
            list.lines().next().unwrap_or("").trim()
        ),
        None => format!(
            "No NVIDIA GPU on this machine, so nothing was measured on one. `scripts/gpu-check.sh` is ready for a \
             machine that has one. Connected, it installs the `onnxruntime-gpu==1.31.1` library with CUDA 13 and \
             cuDNN 9 from NVIDIA's PyPI wheels and builds `demeter`; offline, it runs from a bundle made here by \
             `scripts/gpu-bundle.sh` (the GPU library trimmed for Hopper by `../shared/gpu/bundle.sh`, the release \
             binary and the photos that fit in 64 MiB; there: `source .gpu/unpack.sh && scripts/gpu-check.sh \
             .gpu/photos`). It runs {what}.\n"
        ),
    };
    Section {
        title: "GPU".into(),
        command: "scripts/gpu-check.sh".into(),
        targets: "".into(),
        result: if gpus.is_some() { "GPU present: run the script".into() } else { "no GPU here; script ready".into() },
        body,
    }
}
