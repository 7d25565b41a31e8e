use std::{fs, process::Command};

use demeter_tests::{demeter, demeter_bin, real_photos, run_with_model};

#[test]
fn process_reports_each_photo_and_exits_1_when_one_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = real_photos();
    fs::copy(&photos[0], tmp.path().join("tray.jpg")).unwrap();
    fs::copy(&photos[4], tmp.path().join("pot.jpg")).unwrap();
    let json = tmp.path().join("out.json");
    let (code, stdout, stderr) = demeter(&["process", tmp.path().to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 of 2 photos completed"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["photos"].as_array().unwrap().len(), 2);
    assert!(doc["photos"].as_array().unwrap().iter().all(|p| p["status"] == "completed"));

    fs::write(tmp.path().join("broken.jpg"), [0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).unwrap();
    let (code, stdout, _) = demeter(&["process", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("broken.jpg") && stdout.contains("failed"), "{stdout}");
}

#[test]
fn process_with_batching_counts_every_photo_like_plant_exg() {
    // `demeter process` keeps the batcher alive until the last photo (the batched test model on
    // the CPU, three workers), and its counts are plant-exg's.
    let tmp = tempfile::tempdir().unwrap();
    for p in real_photos() {
        fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let counts = |extra: &[&str]| -> Vec<(String, u64)> {
        let json = tmp.path().join("out.json");
        let mut args =
            vec!["process", tmp.path().to_str().unwrap(), "--json", json.to_str().unwrap(), "--workers", "3"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = demeter(&args);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
        fs::remove_file(&json).unwrap();
        doc["photos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["status"], "completed", "{p}");
                (p["path"].as_str().unwrap().to_owned(), p["result"]["total_detected"].as_u64().unwrap())
            })
            .collect()
    };
    let base = counts(&[]);
    assert_eq!(base.len(), real_photos().len());
    let model = demeter_tests::package_dir().join("models/plant-exg-heavy-batch");
    assert_eq!(counts(&["--model", model.to_str().unwrap(), "--batching", "on"]), base);
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
    assert!(stderr.contains("bad.toml") && stderr.contains("count"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");

    fs::write(&cfg, "[workers]\ncount = 0\n").unwrap();
    let (code, _, stderr) = demeter(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!((code, stderr.trim().lines().count()), (2, 1), "{stderr}");
    assert!(stderr.contains("workers.count"), "{stderr}");

    let photo = real_photos()[1].to_str().unwrap().to_owned();
    let (code, _, stderr) = demeter(&["process", &photo, "--ort-lib", "/nonexistent/libonnxruntime.so"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("ONNX Runtime library not found") && stderr.contains("make ort"), "{stderr}");

    // A file that is not ONNX Runtime at all.
    let fake = tmp.path().join("libonnxruntime.so.1.31.1");
    fs::write(&fake, b"not a library").unwrap();
    let (code, _, stderr) = demeter(&["process", &photo, "--ort-lib", fake.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot load the ONNX Runtime library"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let model = tmp.path().join("model");
    fs::create_dir(&model).unwrap();
    let (code, _, stderr) = demeter(&["process", &photo, "--model", model.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot load the model") && stderr.contains("manifest.toml"), "{stderr}");

    let (code, _, stderr) = demeter(&["process", &photo, "--device", "cuda"]);
    assert_eq!(code, 2, "no CUDA in this build or machine: --device cuda refuses to start");
    assert!(stderr.contains("CUDA"), "{stderr}");
    // A model whose mask has two channels (models/build.py) is refused at load, by `process` and
    // by the daemon, with one line naming the tensor and the contract: not at run time, where
    // each photo would fail as a device error and pause the appliance.
    let two = demeter_tests::package_dir().join("models/plant-exg-two-channel-mask");
    let (code, _, stderr) = demeter(&["process", &photo, "--model", two.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr.lines().find(|l| l.contains("cannot load the model")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("output \"mask\" is Tensor<f32>(1, 2, height, width)")
            && line.contains("a mask model without classes gives Tensor<f32>(1, 1, height, width)"),
        "{line}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_with_model(&two, tmp.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("output \"mask\" is Tensor<f32>(1, 2, height, width)"), "{stderr}");
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

#[test]
fn a_user_model_folder_loads_through_the_model_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("my-model");
    fs::create_dir(&model).unwrap();
    let src = demeter_tests::package_dir().join("../models/plant-exg");
    let manifest =
        fs::read_to_string(src.join("manifest.toml")).unwrap().replace("name = \"plant-exg\"", "name = \"my-model\"");
    fs::write(model.join("manifest.toml"), manifest).unwrap();
    fs::copy(src.join("model.onnx"), model.join("model.onnx")).unwrap();
    let json = tmp.path().join("out.json");
    let photo = real_photos()[4].to_str().unwrap().to_owned();
    let (code, stdout, stderr) = demeter(&[
        "process",
        &photo,
        "--model",
        model.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--workers",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["photos"][0]["result"]["model"]["name"], "my-model");

    // A manifest naming an output the graph does not have is refused at start-up.
    let m = fs::read_to_string(model.join("manifest.toml")).unwrap().replace("name = \"mask\"", "name = \"plants\"");
    fs::write(model.join("manifest.toml"), m).unwrap();
    let (code, _, stderr) = demeter(&["process", &photo, "--model", model.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("\"plants\"") && stderr.contains("outputs [mask, vegetation, brightness]"), "{stderr}");

    // So is one naming a brightness output the graph does not have (it would fail every photo).
    let m = fs::read_to_string(model.join("manifest.toml"))
        .unwrap()
        .replace("name = \"plants\"", "name = \"mask\"")
        .replace("name = \"brightness\"", "name = \"luminance\"");
    fs::write(model.join("manifest.toml"), m).unwrap();
    let (code, _, stderr) = demeter(&["process", &photo, "--model", model.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("outputs [\"luminance\"]"), "{stderr}");
}

#[test]
fn flags_beat_environment_which_beats_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = tmp.path().join("demeter.toml");
    fs::write(
        &cfg,
        format!(
            "[watch]\ndir = {:?}\n[store]\ndata_dir = {:?}\n[workers]\ncount = 1\n[server]\nlisten = \"127.0.0.1:1\"\n",
            tmp.path().join("photos"),
            tmp.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(demeter_bin())
        .args(["run", "--config", cfg.to_str().unwrap(), "--workers", "3"])
        .env("DEMETER_LISTEN", format!("127.0.0.1:{port}"))
        .env("DEMETER_WORKERS", "2")
        .env("DEMETER_ADMIN_TOKEN", demeter_tests::ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health: serde_json::Value = demeter_tests::wait_for("health", std::time::Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{port}/health"))
            .set("Authorization", &format!("Bearer {}", demeter_tests::ADMIN_TOKEN))
            .call()
            .ok()
            .map(|r| r.into_json().unwrap())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(health["workers"]["count"], 3, "flag beats env and file");
    assert!(health["watcher"]["dir"].as_str().unwrap().ends_with("photos"), "file sets what nothing overrides");
    assert!(tmp.path().join("data/db").is_dir());
}

#[test]
fn the_first_run_shows_an_admin_token_once_and_tokens_are_managed_from_the_cli() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(demeter_bin())
        .args(["run", "--watch", tmp.path().join("photos").to_str().unwrap(), "--data", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DEMETER_CONFIG", "")
        .env_remove("DEMETER_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let admin = loop {
        let line = lines.next().expect("the token is printed").unwrap();
        if line.starts_with("Admin token (shown once") {
            break lines.next().unwrap().unwrap().trim().to_owned();
        }
    };
    assert!(admin.starts_with("dmt_"), "{admin}");
    assert!(!fs::read_to_string(data.join("tokens.json")).unwrap().contains(&admin[4..]), "stored only as a hash");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let status =
        |token: &str| match ureq::get(&url("/api/v1/sessions")).set("Authorization", &format!("Bearer {token}")).call()
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{e}"),
        };
    demeter_tests::wait_for("the server", std::time::Duration::from_secs(30), || {
        ureq::get(&url("/health")).call().ok()
    });
    assert_eq!(status(&admin), 200);
    assert_eq!(status("dmt_not-a-token"), 401);

    let (code, viewer, _) =
        demeter(&["token", "create", "--role", "viewer", "--name", "screen", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    let viewer = viewer.trim().to_owned();
    assert_eq!(status(&viewer), 200, "a token made while the daemon runs works at once");
    let (_, list, _) = demeter(&["token", "list", "--data", data.to_str().unwrap()]);
    assert!(
        list.contains("screen") && list.contains("viewer") && list.contains("admin") && !list.contains("dmt_"),
        "{list}"
    );
    let (code, _, _) = demeter(&["token", "revoke", "screen", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(status(&viewer), 401, "revoked at once");
    let (code, _, stderr) =
        demeter(&["token", "create", "--role", "king", "--name", "x", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn eval_judges_counts_against_the_manifest_and_gates_on_the_error() {
    let dir = demeter_tests::real_photos_dir();
    let dev = dir.to_str().unwrap();
    // The dev set at full resolution, as `make test` runs it.
    let (code, out, err) = demeter(&["eval", dev, "--max-error", "1", "--workers", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("01_pcv-tut-arabidopsis-tray__arabidopsis_tray.jpg") && out.contains("mean absolute error"),
        "{out}"
    );
    assert!(!out.contains("03_pcv-workshop"), "photos without ground truth are skipped: {out}");

    // A manifest whose truth the model cannot meet: exit 1, naming the photo and the sizes.
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("m.json");
    std::fs::write(
        &manifest,
        r#"{"images": [
            {"file": "02_plantcv-docs__original_multi_image.jpg", "ground_truth": {"plant_count": 40}},
            {"file": "05_pcv-workshop__3_wt_891.JPG", "ground_truth": {"plant_count": 1}},
            {"file": "03_pcv-workshop__2016-09-27_1025_ch129-pos01.jpg", "ground_truth": null}
        ]}"#,
    )
    .unwrap();
    let json = tmp.path().join("eval.json");
    let (code, out, err) = demeter(&[
        "eval",
        dev,
        "--manifest",
        manifest.to_str().unwrap(),
        "--sizes",
        "full,200x150",
        "--max-error",
        "1",
        "--min-count",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("02_plantcv-docs__original_multi_image.jpg at full: off by more than 1 (true 40"), "{err}");
    assert!(err.contains("at 200x150"), "{err}");
    assert!(!out.contains("05_pcv"), "--min-count 2 leaves single plants out: {out}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["photos"].as_array().unwrap().len(), 2);
    assert_eq!(report["photos"][1]["size"], "200x150");

    let (code, _, err) = demeter(&["eval", dev, "--sizes", "big"]);
    assert_eq!(code, 2, "a bad size is a usage error: {err}");

    // Camera variants: each judged photo turned and compressed, kept for a look, with the
    // per-kind table; an unknown variant is a usage error naming it.
    let single = tmp.path().join("single.json");
    std::fs::write(
        &single,
        r#"{"images": [{"file": "05_pcv-workshop__3_wt_891.JPG", "ground_truth": {"plant_count": 1}}]}"#,
    )
    .unwrap();
    let kept = tmp.path().join("variants");
    let (code, out, err) = demeter(&[
        "eval",
        dev,
        "--manifest",
        single.to_str().unwrap(),
        "--variants",
        "rotate90,jpeg35",
        "--keep-variants",
        kept.to_str().unwrap(),
        "--max-error",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("KIND") && out.contains("orientation") && out.contains("jpeg"), "{out}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let sizes: Vec<&str> = report["photos"].as_array().unwrap().iter().map(|p| p["size"].as_str().unwrap()).collect();
    assert_eq!(sizes, ["full", "rotate90", "jpeg35"]);
    assert_eq!(report["kinds"].as_array().unwrap().len(), 3, "original, orientation, jpeg");
    let mut files: Vec<String> =
        fs::read_dir(&kept).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["05_pcv-workshop__3_wt_891.jpeg35.jpg", "05_pcv-workshop__3_wt_891.rotate90.jpg"]);
    let (code, _, err) = demeter(&["eval", dev, "--variants", "sepia"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--variants: unknown variant \"sepia\""), "{err}");
}

#[test]
fn locations_come_from_qr_labels_subfolders_filenames_or_the_default_and_results_record_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    fs::create_dir_all(photos.join("B1")).unwrap();
    let dev = demeter_tests::real_photos_dir();
    // A real tray photo with a generated QR label naming bench 2, in bench 1's folder: the
    // label wins over the folder.
    let mut tray = image::open(dev.join("01_pcv-tut-arabidopsis-tray__arabidopsis_tray.jpg")).unwrap();
    let label = qrcode::QrCode::new(b"Bench 2").unwrap().render::<image::Luma<u8>>().module_dimensions(6, 6).build();
    image::GenericImage::copy_from(&mut tray, &image::DynamicImage::ImageLuma8(label).to_rgba8(), 40, 1500).unwrap();
    tray.to_rgb8().save(photos.join("B1/labelled.jpg")).unwrap();
    fs::copy(dev.join("02_plantcv-docs__original_multi_image.jpg"), photos.join("B1/plain.jpg")).unwrap();
    fs::copy(dev.join("04_plantcv-docs__2016-05-25_1031.chamber129-camera-01.jpg"), photos.join("B3_0001.jpg"))
        .unwrap();
    fs::copy(dev.join("06_apps-phenotyping__topviewpi_20170830.0955_quinoa_qq74.jpg"), photos.join("IMG_7.jpg"))
        .unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(
        &config,
        r#"
[locations]
filename_pattern = "^(?P<location>B\\d+)_"
default = "cold"
[[locations.list]]
id = "B1"
name = "Bench 1"
tray = { rows = 5, cols = 5 }
[[locations.list]]
id = "B2"
name = "Bench 2"
[[locations.list]]
id = "B3"
name = "Bench 3"
[[locations.list]]
id = "cold"
name = "Cold room"
"#,
    )
    .unwrap();
    let json = tmp.path().join("out.json");
    let (code, out, err) = demeter(&[
        "process",
        photos.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let find = |name: &str| {
        doc["photos"].as_array().unwrap().iter().find(|p| p["path"].as_str().unwrap().ends_with(name)).unwrap()
            ["result"]
            .clone()
    };
    let located = |name: &str| {
        let r = find(name);
        (r["storage_location_id"].as_str().unwrap().to_owned(), r["location_rule"].as_str().unwrap().to_owned())
    };
    assert_eq!(located("labelled.jpg"), ("B2".into(), "qr_code".into()));
    assert_eq!(find("labelled.jpg")["storage_location_name"], "Bench 2");
    assert_eq!(located("plain.jpg"), ("B1".into(), "subfolder".into()));
    assert_eq!(located("B3_0001.jpg"), ("B3".into(), "filename_pattern".into()));
    assert_eq!(located("IMG_7.jpg"), ("cold".into(), "default".into()));

    // Bench 1's tray is configured as 5 × 5: the 4 × 5 plants the photo shows are counted in it,
    // with the row the photo leaves out (below the tray's plants) as five empty cells.
    let plain = find("plain.jpg");
    assert_eq!((plain["grid"]["rows"].as_u64(), plain["grid"]["cols"].as_u64()), (Some(5), Some(5)), "{plain}");
    assert_eq!(plain["total_detected"], 19);
    let per_cell: Vec<u64> =
        plain["grid"]["plants_per_cell"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!(per_cell[20..], [0; 5], "the added row is the last: {per_cell:?}");
    assert_eq!(per_cell.iter().filter(|n| **n == 0).count(), 6);

    // Provenance: the model, its hashes and the numbers the count depends on.
    let model = &find("plain.jpg")["model"];
    assert_eq!(model["name"], "plant-exg");
    assert_eq!(model["manifest_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(model["onnx_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(model["thresholds"]["thresholds.exg"], 0.15);
    assert_eq!(model["thresholds"]["detection.merge_gap"], 0.35);

    // A tray without cells stops start-up naming the key and the location.
    fs::write(&config, "[[locations.list]]\nid = \"B1\"\nname = \"Bench 1\"\ntray = { rows = 0, cols = 5 }\n").unwrap();
    let (code, _, err) = demeter(&["process", photos.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("locations.list.tray") && err.contains("\"B1\""), "{err}");

    // A pattern without the named group stops start-up naming the key.
    fs::write(&config, "[locations]\nfilename_pattern = \"B\\\\d+\"\n").unwrap();
    let (code, _, err) = demeter(&["process", photos.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("locations.filename_pattern") && err.contains("named group"), "{err}");
}
