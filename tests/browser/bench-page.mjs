// The status page's cost on a large session, in Debian's Chromium against the real daemon (the
// page benchmark of `make bench`; crates/demeter-bench/src/page.rs runs it and reports it).
//
// The daemon's queue is paused, PHOTOS photos are dropped into its folder, and the page opens
// their session (one row per photo). The queue is resumed and the page follows the real event
// stream. Measured inside the page, on its main thread:
// - per event: the SSE handler's time, plus each animation-frame callback's time *with* the style
//   and layout it causes (forced at the end of the callback), until EVENTS events are applied;
// - the baseline, in the same page: one rebuild of the whole table from the same rows with the
//   page's own row renderer (what every event cost before rows were patched), layout included;
// - the longest main-thread task while events were applied (PerformanceObserver, ≥ 50 ms only).
//
//   PHOTO=small.jpg PHOTOS=5000 EVENTS=1000 DEMETER_BIN=target/release/demeter node bench-page.mjs
// prints one JSON object.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startDaemon, waitFor, ADMIN_TOKEN } from './daemon.mjs';

const photos = Number(process.env.PHOTOS || 5000);
const events = Number(process.env.EVENTS || 1000);
const rebuilds = Number(process.env.REBUILDS || 5);
const bytes = readFileSync(process.env.PHOTO);

// Installed before the page's own script: times what the page does with each event.
function instrument() {
  const m = { events: 0, handlerMs: 0, frames: 0, frameMs: 0, longestFrameMs: 0, longTasks: [], done: null, target: 0 };
  window.__bench = m;
  const add = EventSource.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (type, fn, opts) {
    if (type !== 'job') return add.call(this, type, fn, opts);
    m.source = this;
    return add.call(this, type, (ev) => {
      const t = performance.now();
      fn(ev);
      m.handlerMs += performance.now() - t;
      m.events += 1;
    }, opts);
  };
  // Whole-session reloads (the poll answer) while events were applied: each redraws every row.
  const fetch0 = window.fetch.bind(window);
  window.fetch = (url, ...rest) => {
    if (m.startAt !== undefined && !m.done && String(url).includes('/photos/jobs/status')) m.reloads = (m.reloads || 0) + 1;
    return fetch0(url, ...rest);
  };
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (fn) => raf((ts) => {
    const t = performance.now();
    fn(ts);
    void document.body.offsetHeight; // the style and layout this frame's changes cost
    const took = performance.now() - t;
    m.frames += 1;
    m.frameMs += took;
    m.longestFrameMs = Math.max(m.longestFrameMs, took);
    if (m.target && !m.done && m.events >= m.target) {
      m.done = { events: m.events, frames: m.frames, ms: m.handlerMs + m.frameMs, longestFrameMs: m.longestFrameMs, at: performance.now() };
    }
  });
  // Long tasks between the target being set and reached (the baseline's rebuilds come after).
  new PerformanceObserver((list) => list.getEntries().forEach((e) => {
    if (m.startAt !== undefined && e.startTime >= m.startAt && (!m.done || e.startTime < m.done.at)) m.longTasks.push(e.duration);
  }))
    .observe({ type: 'longtask', buffered: false });
}

// One worker: the browser keeps a core of its own (on two cores the workers would otherwise take both).
const daemon = await startDaemon({ DEMETER_LOG: 'warn', DEMETER_WORKERS: '1' });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
});
try {
  await daemon.api('/api/v1/queue/pause', { method: 'POST' });
  for (let i = 0; i < photos; i++) {
    // Distinct bytes: each file is its own photo.
    writeFileSync(join(daemon.watch, `bench-${String(i).padStart(5, '0')}.jpg`),
      Buffer.concat([bytes, Buffer.from(String(i))]));
  }
  const id = await waitFor(`a session of ${photos} photos`, async () => {
    const d = await daemon.api('/api/v1/sessions');
    return d.sessions.find((s) => s.summary.total_jobs === photos)?.upload_session_id;
  }, 300000);

  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  await context.addInitScript(instrument);
  const login = await context.request.post(`${daemon.url}/auth/login`, { data: { token: ADMIN_TOKEN } });
  if (!login.ok()) throw new Error(`sign-in: ${login.status()}`);
  const page = await context.newPage();

  const t0 = Date.now();
  await page.goto(`${daemon.url}/#/session/${id}`);
  await page.waitForFunction((n) => document.querySelectorAll('#jobs tbody tr').length === n, photos, { timeout: 120000 });
  const loadMs = Date.now() - t0;
  // The page's event stream is open.
  await page.waitForFunction(() => window.__bench.source?.readyState === 1, null, { timeout: 30000 });

  await page.evaluate((n) => {
    Object.assign(window.__bench, { events: 0, handlerMs: 0, frames: 0, frameMs: 0, longestFrameMs: 0, target: n, startAt: performance.now() });
  }, events);
  await daemon.api('/api/v1/queue/resume', { method: 'POST' });
  await page.waitForFunction(() => window.__bench.done, null, { timeout: 600000, polling: 100 });
  // Long-task entries arrive after the task: give them a moment.
  await page.waitForTimeout(500);
  const m = await page.evaluate(() => { const { source, ...rest } = window.__bench; return rest; });

  // The baseline: the whole table rebuilt from the same rows, as every event once did.
  const rebuild = await page.evaluate(async (times) => {
    const state = await (await fetch(location.hash.replace('#/session/', '/api/v1/photos/jobs/status?upload_session_id='))).json();
    const tbody = document.querySelector('#jobs tbody');
    const took = [];
    for (let k = 0; k < times; k++) {
      const t = performance.now();
      tbody.replaceChildren(...state.jobs.map(jobRow)); // eslint-disable-line no-undef
      void document.body.offsetHeight;
      took.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 50));
    }
    return { rows: state.jobs.length, ms: took.sort((a, b) => a - b) };
  }, rebuilds);

  const done = m.done;
  process.stdout.write(JSON.stringify({
    photos,
    rows: rebuild.rows,
    load_ms: loadMs,
    events: done.events,
    frames: done.frames,
    apply_ms: done.ms,
    per_event_ms: done.ms / done.events,
    longest_frame_ms: done.longestFrameMs,
    long_tasks_ms: m.longTasks,
    reloads: m.reloads || 0,
    rebuild_ms: rebuild.ms,
  }) + '\n');
} finally {
  await browser.close();
  daemon.stop();
}
