// Starts the real `demeter` binary on temp folders for a browser test, like tests/helper does
// for the Rust end-to-end tests.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../..');
export const realPhotos = resolve(repo, '../shared/data/real');

export function photo(i) {
  const manifest = JSON.parse(readFileSync(join(realPhotos, 'manifest.json'), 'utf8'));
  return join(realPhotos, manifest.images[i].file);
}

async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
    s.on('error', fail);
  });
}

/** The admin token the test daemons run with. */
export const ADMIN_TOKEN = 'browser-admin-token-0123456789abcdef0123456789';

export async function waitFor(what, fn, timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startDaemon(env = {}, config = '') {
  const root = mkdtempSync(join(tmpdir(), 'demeter-browser-'));
  const watch = join(root, 'photos');
  mkdirSync(watch);
  writeFileSync(join(root, 'empty.toml'), config);
  const port = await freePort();
  const bin = process.env.DEMETER_BIN || join(repo, 'target/debug/demeter');
  const log = openSync(join(root, 'daemon.log'), 'a');
  const child = spawn(bin, ['run', '--watch', watch, '--data', join(root, 'data'), '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, DEMETER_CONFIG: join(root, 'empty.toml'), DEMETER_STABILITY_WINDOW_MS: '400', DEMETER_ADMIN_TOKEN: ADMIN_TOKEN, DEMETER_RESCAN_INTERVAL_SECS: '2', ...env },
    stdio: ['ignore', log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the daemon', async () => (await fetch(`${url}/health`)).ok, 30000);
  return {
    url, watch, root,
    api: async (path, options = {}) => {
      const r = await fetch(url + path, { ...options, headers: { ...(options.headers || {}), authorization: `Bearer ${ADMIN_TOKEN}` } });
      return r.json();
    },
    stop: () => child.kill('SIGKILL'),
    log: () => readFileSync(join(root, 'daemon.log'), 'utf8'),
  };
}
