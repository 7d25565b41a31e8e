// The desktop app's settings window. Runs inside the app only (window.__TAURI__).
'use strict';

const invoke = (cmd, args) => window.__TAURI__.core.invoke(cmd, args);
const $ = (id) => document.getElementById(id);

async function load() {
  let view;
  try {
    view = await invoke('get_settings');
  } catch (e) {
    $('failed').textContent = `Cannot read the settings: ${e}`;
    $('failed').hidden = false;
    return;
  }
  const s = view.settings;
  $('watch-dir').value = s.watch_dir;
  $('workers').value = s.workers;
  $('device').value = s.device;
  $('lan').checked = s.lan_access;
  $('autostart').checked = view.start_at_login;
  $('config-path').textContent = view.config_path;
  $('welcome').hidden = !view.first_run;
  if (view.error) {
    $('failed').textContent = `Demeter could not start: ${view.error}`;
    $('failed').hidden = false;
  }
  if (view.overridden_by_env.length) {
    $('env').textContent = `Set for this app by the environment, which wins over saved settings: ${view.overridden_by_env.join(', ')}.`;
    $('env').hidden = false;
  }
  if (view.lan_url) $('status').textContent = `Phones reach the status page at ${view.lan_url}`;
}

$('choose').addEventListener('click', async () => {
  try {
    const dir = await invoke('choose_folder');
    if (dir) $('watch-dir').value = dir;
  } catch (e) {
    $('status').textContent = `Cannot open the folder picker: ${e}`;
  }
});

$('settings').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const settings = {
    watch_dir: $('watch-dir').value.trim(),
    workers: Number($('workers').value),
    device: $('device').value,
    lan_access: $('lan').checked,
  };
  $('status').textContent = 'Saving…';
  try {
    await invoke('save_settings', { settings, startAtLogin: $('autostart').checked });
    $('status').textContent = 'Saved. Demeter is restarting with these settings.';
    $('welcome').hidden = true;
    $('failed').hidden = true;
  } catch (e) {
    $('status').textContent = `Not saved: ${e}`;
  }
});

load();
