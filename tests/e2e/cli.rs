use std::{fs, process::Command};

use demeter_tests::{demeter_bin, real_photos};

fn demeter(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(demeter_bin())
        .args(args)
        .env("DEMETER_CONFIG", "")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn process_reports_each_photo_and_exits_1_when_one_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = real_photos();
    fs::copy(&photos[0], tmp.path().join("tray.jpg")).unwrap();
    fs::copy(&photos[4], tmp.path().join("pot.jpg")).unwrap();
    let json = tmp.path().join("out.json");
    let (code, stdout, stderr) = demeter(&[
        "process",
        tmp.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 of 2 photos completed"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["photos"].as_array().unwrap().len(), 2);
    assert!(doc["photos"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "completed"));

    fs::write(
        tmp.path().join("broken.jpg"),
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 16],
    )
    .unwrap();
    let (code, stdout, _) = demeter(&["process", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("broken.jpg") && stdout.contains("failed"),
        "{stdout}"
    );
}

#[test]
fn bad_flags_config_and_libraries_stop_start_up_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = demeter(&["run", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");

    let cfg = tmp.path().join("bad.toml");
    fs::write(&cfg, "[workers]\ncount = \"many\"\n").unwrap();
    let (code, _, stderr) = demeter(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("count"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );

    fs::write(&cfg, "[workers]\ncount = 0\n").unwrap();
    let (code, _, stderr) = demeter(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!((code, stderr.trim().lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("workers.count"), "{stderr}");

    let photo = real_photos()[1].to_str().unwrap().to_owned();
    let (code, _, stderr) = demeter(&[
        "process",
        &photo,
        "--ort-lib",
        "/nonexistent/libonnxruntime.so",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("ONNX Runtime library not found") && stderr.contains("make ort"),
        "{stderr}"
    );

    // A file that is not ONNX Runtime at all.
    let fake = tmp.path().join("libonnxruntime.so.1.31.1");
    fs::write(&fake, b"not a library").unwrap();
    let (code, _, stderr) = demeter(&["process", &photo, "--ort-lib", fake.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot load the ONNX Runtime library"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let model = tmp.path().join("model");
    fs::create_dir(&model).unwrap();
    let (code, _, stderr) = demeter(&["process", &photo, "--model", model.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot load the model") && stderr.contains("manifest.toml"),
        "{stderr}"
    );

    let (code, _, stderr) = demeter(&["process", &photo, "--device", "cuda"]);
    assert_eq!(
        code, 2,
        "no CUDA in this build or machine: --device cuda refuses to start"
    );
    assert!(stderr.contains("CUDA"), "{stderr}");
}

#[test]
fn a_taken_port_or_locked_database_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let watch = tmp.path().join("photos");
    let (code, _, stderr) = demeter(&[
        "run",
        "--listen",
        &addr,
        "--watch",
        watch.to_str().unwrap(),
        "--data",
        tmp.path().join("d").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    let d = demeter_tests::Daemon::start();
    let (code, _, stderr) = demeter(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--watch",
        watch.to_str().unwrap(),
        "--data",
        d.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}
