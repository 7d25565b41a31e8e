//! The model families growers bring (issue 24): YOLO box detectors in each Ultralytics layout and
//! YOLO instance segmentation, multi-class, and semantic masks with a class axis or logits, through the
//! real daemon; `demeter model import` and
//! `model check`; and models that break their contract stopping start-up with the tensor named.
//!
//! The test models (`tests/models/yolo-*`, from `models/yolo_test_models.py`) hold a fixed table
//! of boxes, among them a near-duplicate that NMS must drop, a box under the confidence threshold
//! and a seedling on a weed that class-aware NMS must keep: 4 seedlings (the plants), 2 weeds and
//! 2 empty cells, whatever the photo. The mask test models (`tests/models/mask-*`, from
//! `models/mask_test_models.py`) read colour: green is a crop, red a weed, grey the background.

use std::{collections::BTreeMap, fs, time::Duration};

use demeter_tests::{demeter, form, package_dir, real_photos, run_with_model, wait_for, Daemon};
use serde_json::{json, Value};

const FAMILIES: [&str; 4] = ["yolo-detect-v8", "yolo-detect-v5", "yolo-detect-end-to-end", "yolo-seg-v8"];

fn expected_classes() -> Value {
    json!({"seedling": 4, "weed": 2, "empty_cell": 2})
}

/// Three photos: 4:3 (2592 × 1944), a small 4:3 (400 × 300) and that one turned to portrait,
/// so the letterbox pads top and bottom, and left and right.
fn photos(into: &std::path::Path) -> Vec<String> {
    let real = real_photos();
    let pick =
        |prefix: &str| real.iter().find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix)).unwrap();
    fs::copy(pick("01_"), into.join("tray.jpg")).unwrap();
    fs::copy(pick("02_"), into.join("small.jpg")).unwrap();
    image::open(pick("02_")).unwrap().rotate90().save(into.join("portrait.png")).unwrap();
    vec!["tray.jpg".into(), "small.jpg".into(), "portrait.png".into()]
}

/// Waits for the daemon's one session to hold `n` photos and finish them; its id and poll body.
fn finished_session(d: &Daemon, n: usize) -> (String, Value) {
    let id = wait_for("a session with every photo", Duration::from_secs(60), || {
        let s = d.sessions();
        (s.len() == 1 && s[0]["summary"]["total_jobs"] == n)
            .then(|| s[0]["upload_session_id"].as_str().unwrap().to_owned())
    });
    let body = wait_for("every photo to finish", Duration::from_secs(120), || {
        let body = d.poll(&id);
        (body["summary"]["completed"].as_u64().unwrap() + body["summary"]["failed"].as_u64().unwrap() == n as u64)
            .then_some(body)
    });
    (id, body)
}

#[test]
fn every_yolo_family_counts_its_known_boxes_exactly_through_the_daemon() {
    for family in FAMILIES {
        let model = package_dir().join("models").join(family);
        let d = Daemon::start_with(&[("DEMETER_MODEL", model.to_str().unwrap()), ("DEMETER_WORKERS", "2")]);
        let names = photos(&d.watch_dir());
        let (id, body) = finished_session(&d, names.len());
        let jobs = body["jobs"].as_array().unwrap();
        for j in jobs {
            assert_eq!(j["status"], "completed", "{family}: {j}");
            let (_, detail) = d.get(&format!("/api/v1/jobs/{}", j["job_id"].as_str().unwrap()));
            let r = &detail["details"];
            let name = j["filename"].as_str().unwrap();
            assert_eq!(r["total_detected"], 4, "{family} {name}: the seedlings only: {r:#}");
            assert_eq!(r["class_counts"], expected_classes(), "{family} {name}");
            let plants = r["plants"].as_array().unwrap();
            assert!(plants.iter().all(|p| p["class"] == "seedling" && p["confidence"].as_f64().unwrap() >= 0.25));
            let objects: Vec<&str> =
                r["objects"].as_array().unwrap().iter().map(|o| o["class"].as_str().unwrap()).collect();
            assert_eq!(objects.iter().filter(|c| **c == "weed").count(), 2, "{family} {name}: {objects:?}");
            assert_eq!(r["model"]["family"], if family.starts_with("yolo-seg") { "yolo-seg" } else { "yolo-detect" });
            assert_eq!(r["model"]["plant_classes"], json!(["seedling"]));
            assert_eq!(r["model"]["thresholds"]["thresholds.confidence"], 0.25);
            // Boxes are in the photo's pixels: the letterbox's padding is taken off. The first
            // seedling is the box centred at (60, 120) of the 320-px input, 30 px wide.
            let (w, h) = (r["width"].as_f64().unwrap(), r["height"].as_f64().unwrap());
            let scale = w.max(h) / 320.0;
            let (left, top) = ((320.0 - w / scale) / 2.0, (320.0 - h / scale) / 2.0);
            let first = plants.iter().find(|p| p["confidence"].as_f64().unwrap() > 0.89).unwrap();
            let x0 = ((45.0 - left) * scale).max(0.0);
            let y0 = ((105.0 - top) * scale).max(0.0);
            assert!((first["bbox"][0].as_f64().unwrap() - x0).abs() <= 1.5, "{family} {name}: {first} vs x {x0}");
            assert!((first["bbox"][1].as_f64().unwrap() - y0).abs() <= 1.5, "{family} {name}: {first} vs y {y0}");
            assert!((first["bbox"][2].as_f64().unwrap() - 30.0 * scale).abs() <= 1.5, "{family} {name}: {first}");
            // The overlay draws each class in its colour; the legend says which.
            let legend: BTreeMap<String, (u64, bool)> = detail["legend"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["class"].as_str().unwrap().into(), (e["count"].as_u64().unwrap(), e["plant"] == true)))
                .collect();
            assert_eq!(legend["seedling"], (4, true));
            assert_eq!(legend["empty_cell"], (2, false));
            let overlay = d.request("GET", detail["overlay_url"].as_str().unwrap()).call().unwrap();
            assert_eq!(overlay.header("content-type"), Some("image/jpeg"));
            if family.starts_with("yolo-seg") {
                // Instance masks give each plant its own area: the seedling at (180, 120) has a
                // mask over half its box, the others over all of it.
                let mut areas: Vec<u64> = plants.iter().map(|p| p["area_px"].as_u64().unwrap()).collect();
                areas.sort_unstable();
                assert!(
                    areas[0] * 2 <= areas[1] + areas[1] / 20 && areas[0] * 2 + areas[1] / 20 >= areas[1],
                    "{areas:?}"
                );
                assert_eq!(areas[1], areas[3], "{areas:?}");
            }
        }
        // The session's CSV carries the per-class counts.
        let csv =
            d.request("GET", &format!("/api/v1/sessions/{id}/results.csv")).call().unwrap().into_string().unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let column = header.iter().position(|c| *c == "class_counts").expect("a class_counts column");
        for line in csv.lines().skip(1) {
            assert_eq!(line.split(',').nth(column), Some("empty_cell=2;seedling=4;weed=2"), "{family}: {line}");
            assert_eq!(line.split(',').nth(2), Some("4"), "{family}: {line}");
        }
    }
}

/// A grey floor with 4 green squares (crops) and 2 red ones (weeds), 640 × 480, as a JPEG; and
/// the same turned to portrait and darkened, as a PNG.
fn crops_and_weeds(into: &std::path::Path) -> Vec<String> {
    let mut img = image::RgbImage::from_pixel(640, 480, image::Rgb([120, 118, 115]));
    let squares =
        [(60, 80, [40, 150, 45]), (220, 80, [60, 170, 50]), (380, 80, [35, 140, 40]), (540, 80, [50, 160, 60])]
            .into_iter()
            .chain([(140, 300, [170, 45, 40]), (400, 300, [150, 40, 50])]);
    for (x0, y0, colour) in squares {
        for y in y0..y0 + 60 {
            for x in x0..x0 + 60 {
                img.put_pixel(x, y, image::Rgb(colour));
            }
        }
    }
    img.save(into.join("floor.jpg")).unwrap();
    let mut portrait = image::imageops::rotate90(&img);
    portrait.pixels_mut().for_each(|p| p.0 = p.0.map(|v| v / 2));
    portrait.save(into.join("floor-portrait.png")).unwrap();
    vec!["floor.jpg".into(), "floor-portrait.png".into()]
}

#[test]
fn mask_models_with_a_class_axis_or_logits_count_through_the_daemon() {
    // Logits with a class axis: background, crop (the plants) and weed.
    let model = package_dir().join("models/mask-classes-logits");
    let d = Daemon::start_with(&[("DEMETER_MODEL", model.to_str().unwrap())]);
    let names = crops_and_weeds(&d.watch_dir());
    let (id, body) = finished_session(&d, names.len());
    for j in body["jobs"].as_array().unwrap() {
        assert_eq!(j["status"], "completed", "{j}");
        let (_, detail) = d.get(&format!("/api/v1/jobs/{}", j["job_id"].as_str().unwrap()));
        let r = &detail["details"];
        assert_eq!(r["total_detected"], 4, "the crops only: {r:#}");
        assert_eq!(r["class_counts"], json!({"crop": 4, "weed": 2}), "the background is never counted");
        assert!(r["plants"].as_array().unwrap().iter().all(|p| p["class"] == "crop"), "{r:#}");
        let objects = r["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 2);
        assert!(objects.iter().all(|o| o["class"] == "weed"));
        assert_eq!(r["model"]["family"], "mask");
        assert_eq!(r["model"]["plant_classes"], json!(["crop"]));
        let legend: Vec<(&str, u64, bool)> = detail["legend"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["class"].as_str().unwrap(), e["count"].as_u64().unwrap(), e["plant"] == true))
            .collect();
        assert_eq!(legend, vec![("crop", 4, true), ("weed", 2, false)]);
    }
    let (code, stdout, stderr) = demeter(&["model", "check", model.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(logits: a plant over 0)"), "{stdout}");
    assert!(
        stdout
            .contains("classes background, crop, weed (class axis; background: background) — counted as plants: crop"),
        "{stdout}"
    );
    let csv = d.request("GET", &format!("/api/v1/sessions/{id}/results.csv")).call().unwrap().into_string().unwrap();
    assert!(csv.lines().skip(1).all(|l| l.contains(",crop=4;weed=2")), "{csv}");
    drop(d);

    // One channel of logits: a plant where the logit is over 0; no classes to count.
    let model = package_dir().join("models/mask-logits");
    let d = Daemon::start_with(&[("DEMETER_MODEL", model.to_str().unwrap())]);
    let names = crops_and_weeds(&d.watch_dir());
    let (_, body) = finished_session(&d, names.len());
    for j in body["jobs"].as_array().unwrap() {
        let (_, detail) = d.get(&format!("/api/v1/jobs/{}", j["job_id"].as_str().unwrap()));
        assert_eq!(detail["details"]["total_detected"], 4, "{detail:#}");
        assert!(detail["details"].get("class_counts").is_none(), "{detail:#}");
    }
}

#[test]
fn a_yolo_export_is_imported_checked_and_run_in_one_command_each() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, expect_layout) in
        [("yolo-detect-v5", "v5"), ("yolo-detect-end-to-end", "end-to-end"), ("yolo-seg-v8", "v8")]
    {
        // What a grower has: one exported file, with Ultralytics' metadata in it.
        let export = tmp.path().join(format!("{family}.onnx"));
        fs::copy(package_dir().join("models").join(family).join("model.onnx"), &export).unwrap();
        let dir = tmp.path().join(format!("imported-{family}"));
        let (code, stdout, stderr) = demeter(&[
            "model",
            "import",
            export.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--plant-classes",
            "seedling",
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("3 classes from metadata names: seedling, weed, empty_cell"), "{stdout}");
        assert!(stdout.contains(&format!("box layout {expect_layout}")), "{stdout}");
        assert!(stdout.contains("input 320 × 320, letterboxed (metadata imgsz)"), "{stdout}");

        let (code, stdout, stderr) = demeter(&["model", "check", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("classes seedling, weed, empty_cell — counted as plants: seedling"), "{stdout}");
        assert!(stdout.contains("runs on CPU"), "{stdout}");

        let json = tmp.path().join(format!("{family}.json"));
        let photo = real_photos()[0].to_str().unwrap().to_owned();
        let (code, stdout, stderr) =
            demeter(&["process", &photo, "--model", dir.to_str().unwrap(), "--json", json.to_str().unwrap()]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let doc: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
        let result = &doc["photos"][0]["result"];
        assert_eq!(result["total_detected"], 4, "{result:#}");
        assert_eq!(result["class_counts"], expected_classes());
        assert_eq!(result["model"]["name"], family, "named after the file");
        assert_eq!(result["plants"].as_array().unwrap().len(), 4);
        assert!(result["plants"][0]["bbox"].is_array());
        assert_eq!(result["trust"]["trusted"], true);
    }

    // Importing again needs --force; a file without Ultralytics metadata asks for the family.
    let export = tmp.path().join("yolo-detect-v5.onnx");
    let dir = tmp.path().join("imported-yolo-detect-v5");
    let (code, _, stderr) = demeter(&["model", "import", export.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--force"), "{stderr}");
    let plain = package_dir().join("../models/plant-exg/model.onnx");
    let (code, _, stderr) =
        demeter(&["model", "import", plain.to_str().unwrap(), tmp.path().join("x").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no Ultralytics task metadata") && stderr.contains("--family"), "{stderr}");
    assert!(!tmp.path().join("x/manifest.toml").exists(), "nothing written");
}

#[test]
fn a_model_that_breaks_its_family_contract_stops_start_up_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = real_photos()[0].to_str().unwrap().to_owned();
    // A v8 detector whose manifest declares a fourth class: the graph's boxes have 4 + 3 values.
    let model = tmp.path().join("four-classes");
    fs::create_dir(&model).unwrap();
    let src = package_dir().join("models/yolo-detect-v8");
    fs::copy(src.join("model.onnx"), model.join("model.onnx")).unwrap();
    let manifest = fs::read_to_string(src.join("manifest.toml")).unwrap().replace(
        "classes = [\"seedling\", \"weed\", \"empty_cell\"]",
        "classes = [\"seedling\", \"weed\", \"empty_cell\", \"moss\"]",
    );
    fs::write(model.join("manifest.toml"), manifest).unwrap();
    let want =
        "output \"output0\" is Tensor<f32>(1, 7, 11); a yolo-detect model with 4 classes in the v8 layout gives \
                Tensor<f32>(1, 8, boxes)";
    let (code, _, stderr) = demeter(&["process", &photo, "--model", model.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(want), "{stderr}");
    let (code, _, stderr) = demeter(&["model", "check", model.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(want), "{stderr}");
    let (code, _, stderr) = run_with_model(&model, tmp.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(want), "{stderr}");

    // A layout the graph does not have: v5 declared for a v8 export.
    let manifest = fs::read_to_string(src.join("manifest.toml")).unwrap().replace("layout = \"v8\"", "layout = \"v5\"");
    fs::write(model.join("manifest.toml"), manifest).unwrap();
    let (code, _, stderr) = demeter(&["model", "check", model.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("output \"output0\"") && stderr.contains("in the v5 layout gives Tensor<f32>(1, boxes, 8)"),
        "{stderr}"
    );

    // A mask model whose manifest names a fourth class its class axis does not have.
    let src = package_dir().join("models/mask-classes-logits");
    fs::copy(src.join("model.onnx"), model.join("model.onnx")).unwrap();
    let manifest = fs::read_to_string(src.join("manifest.toml")).unwrap().replace(
        "classes = [\"background\", \"crop\", \"weed\"]",
        "classes = [\"background\", \"crop\", \"weed\", \"moss\"]",
    );
    fs::write(model.join("manifest.toml"), manifest).unwrap();
    let (code, _, stderr) = demeter(&["model", "check", model.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "output \"mask\" is Tensor<f32>(1, 3, height, width); a mask model with 4 classes gives \
                         Tensor<f32>(1, 4, height, width)"
        ),
        "{stderr}"
    );
    let src = package_dir().join("models/yolo-detect-v8");
    fs::copy(src.join("model.onnx"), model.join("model.onnx")).unwrap();

    // plant_classes naming a class the model does not have.
    let manifest = fs::read_to_string(src.join("manifest.toml"))
        .unwrap()
        .replace("plant_classes = [\"seedling\"]", "plant_classes = [\"tomato\"]");
    fs::write(model.join("manifest.toml"), manifest).unwrap();
    let (code, _, stderr) = demeter(&["model", "check", model.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("plant_classes names \"tomato\""), "{stderr}");
}

#[test]
fn a_model_installed_while_running_is_checked_like_start_up_kept_and_used_for_reprocessing() {
    let mut d = Daemon::start();
    let src = package_dir().join("models/yolo-detect-v8");
    let onnx = fs::read(src.join("model.onnx")).unwrap();
    let manifest = fs::read_to_string(src.join("manifest.toml")).unwrap();

    // One class too many: refused with the line start-up gives, as JSON, and nothing kept.
    let four = manifest.replace(
        "classes = [\"seedling\", \"weed\", \"empty_cell\"]",
        "classes = [\"seedling\", \"weed\", \"empty_cell\", \"moss\"]",
    );
    let (ct, body) =
        form(&[("model", Some("best.onnx"), onnx.as_slice()), ("manifest", Some("manifest.toml"), four.as_bytes())]);
    let (code, err) = d.send("POST", "/api/v1/models", &ct, &body);
    assert_eq!(code, 422, "{err}");
    assert_eq!(err["error"], "unprocessable");
    let want = "output \"output0\" is Tensor<f32>(1, 7, 11); a yolo-detect model with 4 classes in the v8 layout \
                gives Tensor<f32>(1, 8, boxes)";
    assert!(err["detail"].as_str().unwrap().contains(want), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad");
    fs::create_dir(&bad).unwrap();
    fs::write(bad.join("model.onnx"), &onnx).unwrap();
    fs::write(bad.join("manifest.toml"), &four).unwrap();
    let (_, _, stderr) = demeter(&["model", "check", bad.to_str().unwrap()]);
    assert!(stderr.contains(want), "the same reason as start-up: {stderr}");
    // A file that is not a model, and a form without one.
    let (ct, body) = form(&[("model", Some("notes.onnx"), b"not a model".as_slice())]);
    let (code, err) = d.send("POST", "/api/v1/models", &ct, &body);
    assert_eq!(code, 422, "{err}");
    assert!(err["detail"].as_str().unwrap().starts_with("notes.onnx: "), "{err}");
    let (ct, body) = form(&[("plant_classes", None, b"seedling".as_slice())]);
    let (code, err) = d.send("POST", "/api/v1/models", &ct, &body);
    assert_eq!((code, err["error"].as_str()), (400, Some("bad_request")), "{err}");
    // An export whose metadata does not say what counts is asked for the field.
    let (ct, body) = form(&[("model", Some("best.onnx"), onnx.as_slice()), ("family", None, b"mask".as_slice())]);
    let (code, err) = d.send("POST", "/api/v1/models", &ct, &body);
    assert_eq!(code, 422, "{err}");
    assert!(!d.data_dir().join("models").read_dir().is_ok_and(|mut r| r.any(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.'))));

    // An Ultralytics export alone, with the plant classes as a field: inferred like `model import`.
    let (ct, body) =
        form(&[("model", Some("seedlings.onnx"), onnx.as_slice()), ("plant_classes", None, b"seedling".as_slice())]);
    let (code, installed) = d.send("POST", "/api/v1/models", &ct, &body);
    assert_eq!(code, 201, "{installed}");
    assert_eq!(installed["name"], "seedlings", "named after the file");
    assert_eq!(installed["family"], "yolo-detect");
    assert_eq!(installed["execution_provider"], "CPU");
    assert!(installed["inferred"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("box layout v8")));
    let (code, again) = d.send("POST", "/api/v1/models", &ct, &body);
    assert_eq!((code, again["error"].as_str()), (409, Some("conflict")), "{again}");
    let (_, models) = d.get("/api/v1/models");
    let names: Vec<&str> = models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plant-exg", "seedlings"]);
    assert_eq!(models["default"], "plant-exg");

    // A session counted by the default model, then run again with the one just installed.
    fs::copy(&real_photos()[0], d.watch_dir().join("tray.jpg")).unwrap();
    let (session, body) = finished_session(&d, 1);
    let job = body["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let (code, res) = d.send(
        "POST",
        &format!("/api/v1/sessions/{session}/reprocess"),
        "application/json",
        br#"{"model":"seedlings"}"#,
    );
    assert_eq!(code, 200, "{res}");
    let detail = wait_for("the re-run with the installed model", Duration::from_secs(60), || {
        let (_, detail) = d.get(&format!("/api/v1/jobs/{job}"));
        (detail["status"] == "completed" && detail["details"]["model"]["name"] == "seedlings").then_some(detail)
    });
    assert_eq!(detail["details"]["total_detected"], 4);
    assert_eq!(detail["details"]["class_counts"], expected_classes());
    let (_, health) = d.get("/health");
    let device = health["devices"].as_array().unwrap().iter().find(|m| m["model"] == "seedlings").unwrap().clone();
    assert!(device["sessions"].as_u64().unwrap() >= 1, "{device}");

    // Kept: after kill -9 the daemon loads it from the data folder.
    d.restart();
    let (_, models) = wait_for("the daemon back", Duration::from_secs(30), || {
        let r = d.request("GET", "/api/v1/models").call().ok()?;
        Some((r.status(), r.into_json::<Value>().unwrap()))
    });
    let names: Vec<&str> = models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plant-exg", "seedlings"]);
    assert!(d.data_dir().join("models/seedlings/manifest.toml").exists());
}
