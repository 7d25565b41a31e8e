//! The app's commands and engine lifecycle on Tauri's mock runtime (no window system): the
//! settings window's calls reach the controller, saving writes the config file and restarts a
//! real engine on it. The real app under Xvfb is tested by `tests/desktop/run.sh`.

use std::time::Duration;

use demeter_desktop::controller::{Controller, Phase, Startup};
use tauri::{
    ipc::{CallbackFn, InvokeBody},
    test::{get_ipc_response, mock_builder, mock_context, noop_assets, MockRuntime, INVOKE_KEY},
    webview::InvokeRequest,
    Manager, WebviewWindowBuilder,
};

fn request(cmd: &str, body: serde_json::Value) -> InvokeRequest {
    InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        url: "tauri://localhost".parse().unwrap(),
        body: InvokeBody::Json(body),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    }
}

fn invoke(window: &tauri::WebviewWindow<MockRuntime>, cmd: &str, body: serde_json::Value) -> serde_json::Value {
    match get_ipc_response(window, request(cmd, body)) {
        Ok(body) => body.deserialize::<serde_json::Value>().unwrap(),
        Err(e) => panic!("{cmd} failed: {e}"),
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn settings_round_trip_restarts_a_real_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    // Port 0 so parallel test runs never collide; the settings window keeps the port.
    std::fs::write(
        &config_path,
        format!("# kept\n[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = {:?}\n", dir.path().join("data")),
    )
    .unwrap();
    let app = demeter_desktop::configure(mock_builder()).build(mock_context(noop_assets())).unwrap();
    let controller =
        Controller::new(app.handle().clone(), Startup { config_flag: Some(config_path.clone()), minimized: true });
    app.manage(controller.clone());
    let window = WebviewWindowBuilder::new(&app, "settings", Default::default()).build().unwrap();

    let view = invoke(&window, "get_settings", serde_json::json!({}));
    assert_eq!(view["config_path"], config_path.to_str().unwrap());
    assert_eq!(view["settings"]["lan_access"], false);
    assert_eq!(view["first_run"], false);

    let photos = dir.path().join("greenhouse photos");
    let settings = serde_json::json!({
        "watch_dir": photos, "workers": 2, "device": "cpu", "lan_access": false,
    });
    let saved = invoke(&window, "save_settings", serde_json::json!({ "settings": settings, "startAtLogin": false }));
    assert_eq!(saved, serde_json::Value::Null);
    assert!(photos.is_dir(), "the photo folder is created");
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(text.contains("# kept") && text.contains("count = 2") && text.contains("device = \"cpu\""), "{text}");

    wait_for("the engine to run on the new settings", || controller.phase() == Phase::Running);
    let view = invoke(&window, "get_settings", serde_json::json!({}));
    assert_eq!(view["phase"], "running");
    assert_eq!(view["settings"]["workers"], 2);
    assert_eq!(view["settings"]["watch_dir"], photos.to_str().unwrap());
    let url = controller.signed_in_url(demeter_desktop::controller::Target::PairPhone).unwrap();
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("#/pair/") && url.ends_with("/pair-phone"), "{url}");

    // A bad value is refused with a sentence, and the file stays as it was.
    let bad = serde_json::json!({ "watch_dir": photos, "workers": 0, "device": "cpu", "lan_access": false });
    let err = get_ipc_response(
        &window,
        request("save_settings", serde_json::json!({ "settings": bad, "startAtLogin": false })),
    )
    .unwrap_err();
    assert!(err.as_str().unwrap().contains("workers.count"), "{err}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), text);

    controller.stop_if_running();
    assert_eq!(controller.phase(), Phase::Stopped);
}
