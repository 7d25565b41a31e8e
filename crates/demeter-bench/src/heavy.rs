//! A network-sized model on the CPU: the heavy test model (tests/models/plant-exg-heavy*,
//! plant-exg plus a ~5.5 GFLOP convolutional trunk, `models/build.py`) through `demeter process`
//! with 1, 2 and 4 workers each owning a session, and batched (one session fed by 4 workers),
//! against the Python `onnxruntime` baseline on the same graph, the default model's pipeline and
//! the machine's decode bound, in the same run. Wall time includes start-up (loading the
//! library, building and warming sessions), as a user running `demeter process` sees it; peak
//! memory is the process's maximum resident set (`VmHWM`, sampled every 20 ms).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{daemon::demeter_bin, fixtures, report::Section, stats::Samples, Opts};

/// Rounds of the real photos: long enough runs that start-up is a small part.
const ROUNDS: usize = 12;

fn test_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/models").join(name)
}

/// One `demeter process` run: photos per minute (wall time, start-up included) and peak RSS in MB.
fn process(dir: &Path, workers: usize, extra: &[&str]) -> Result<(f64, f64, usize)> {
    let json = tempfile::NamedTempFile::new()?;
    let mut cmd = Command::new(demeter_bin()?);
    cmd.args(["process", dir.to_str().context("utf-8 path")?, "--device", "cpu", "--workers", &workers.to_string()])
        .args(["--json", json.path().to_str().context("utf-8 path")?])
        .args(extra)
        .env("DEMETER_CONFIG", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().context("starting demeter process")?;
    // The peak resident set, sampled from /proc while it runs: `VmHWM` is the process's own
    // (wait4's ru_maxrss would start from this benchmark's size at fork, kept across exec).
    let mut peak_kb = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(kb) = crate::daemon::proc_status_kb(child.id(), "VmHWM:") {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("demeter process {extra:?} exited with {status}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(json.path())?)?;
    let photos = doc["photos"].as_array().context("photos[]")?;
    if let Some(bad) = photos.iter().find(|p| p["status"] != "completed") {
        bail!("a photo failed in the heavy-model benchmark: {bad}");
    }
    let plants: u64 = photos.iter().filter_map(|p| p["result"]["total_detected"].as_u64()).sum();
    Ok((photos.len() as f64 * 60.0 / secs, peak_kb as f64 / 1024.0, plants as usize))
}

pub fn run(opts: &Opts) -> Result<Section> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("photos");
    let photos = fixtures::distinct_copies(&dir, opts.scaled(ROUNDS, 2), "heavy")?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let heavy = test_model("plant-exg-heavy");
    let batch = test_model("plant-exg-heavy-batch");
    let (heavy_s, batch_s) = (heavy.to_str().context("utf-8")?, batch.to_str().context("utf-8")?);
    let runs: Vec<(String, usize, Vec<&str>)> = vec![
        ("heavy, a session per worker".into(), 1, vec!["--model", heavy_s]),
        ("heavy, a session per worker".into(), 2, vec!["--model", heavy_s]),
        ("heavy, a session per worker".into(), 4, vec!["--model", heavy_s]),
        (
            "heavy, batched (`--batching on`: a session per core, one queue)".into(),
            4,
            vec!["--model", batch_s, "--batching", "on"],
        ),
        ("plant-exg (the default model), for scale".into(), 4, vec![]),
    ];
    let mut rate: Vec<Samples> = vec![Samples::default(); runs.len()];
    let mut peak: Vec<Samples> = vec![Samples::default(); runs.len()];
    let mut plants = Vec::new();
    let runtime = opts.runtime()?;
    let mut bound = Samples::default();
    let mut python = Samples::default();
    for _ in 0..opts.reps {
        // Interleaved, so a slow moment of the machine touches every row alike.
        for (i, (_, workers, extra)) in runs.iter().enumerate() {
            let (r, m, p) = process(&dir, *workers, extra)?;
            rate[i].push(r);
            peak[i].push(m);
            plants.push(p);
        }
        bound.push(crate::pipeline::decode_bound(&photos, cores, runtime)?);
        if let Some(py) = &opts.python {
            let model = heavy.join("model.onnx");
            python.push(crate::pipeline::python_baseline_with(&dir, &tmp.path().join("py-out"), py, &model)?);
        }
    }
    if plants.windows(2).any(|w| w[0] != w[1]) {
        bail!("the heavy models counted differently from plant-exg: {plants:?}");
    }
    let rows: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, (what, workers, _))| {
            format!("| {what} | {workers} | {} | {} |", rate[i].spread(0), peak[i].spread(0))
        })
        .collect();
    let per_worker4 = rate[2].median();
    let batched = rate[3].median();
    let mut body = format!(
        "{} photos (the real photos × {} rounds), `demeter process --device cpu` on {cores} cores, {} runs each \
         (interleaved), photos per minute and peak resident memory as median (min–max); wall time includes start-up. \
         Every run counted the same plants as plant-exg ({} in all: the heavy trunk is added times zero).\n\n\
         | model and sessions | workers | photos/min | peak memory (MB) |\n|---|---|---|---|\n{}\n",
        photos.len(),
        opts.scaled(ROUNDS, 2),
        opts.reps,
        plants.first().copied().unwrap_or(0),
        rows.join("\n")
    );
    body.push_str(&format!(
        "\nDecode bound (read, decode at reduced size, resize to the model's input; the daemon's own code on all {cores} \
         cores, nothing else): {} photos/min.\n",
        bound.spread(0)
    ));
    body.push_str(
        "\nBatched on the CPU means a single-threaded session per core, all taking batches from one queue (one \
         session with an intra-op thread per core was 14 % slower on 2 cores). A CPU gains nothing from batching a \
         convolutional network (it computes each photo the same way, and a batch's activations spill the cache), \
         so `batching = \"auto\"` batches only on a GPU; this row is what `--batching on` costs or saves here.\n",
    );
    if opts.python.is_some() {
        body.push_str(&format!(
            "\nPython baseline on the same graph (`python/baseline.py --model tests/models/plant-exg-heavy/model.onnx`: \
             Pillow and the `onnxruntime` package, 4 processes of one thread): {} photos/min. Demeter with 4 workers: \
             {:.2}× it with a session each, {:.2}× batched.\n",
            python.spread(0),
            per_worker4 / python.median(),
            batched / python.median()
        ));
    } else {
        body.push_str("\nPython baseline: not run (no bench virtualenv; `make bench` makes one).\n");
    }
    Ok(Section {
        title: "A network-sized model on the CPU".into(),
        command: "demeter-bench heavy".into(),
        targets: "batched ≥ a session per worker (4 workers)".into(),
        result: format!(
            "batched {batched:.0} photos/min, a session per worker {per_worker4:.0} ({:+.0} %): {}",
            100.0 * (batched / per_worker4 - 1.0),
            crate::report::verdict(batched >= per_worker4)
        ),
        body,
    })
}
