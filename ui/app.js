// Demeter status page: sessions, live session view (SSE with polling fallback), job detail,
// uploads, and the results archive (locations over time, a gallery). No framework; every value from the server goes into the page through textContent.
'use strict';

const main = document.getElementById('main');
const conn = document.getElementById('conn');
const BACKOFF = [2, 4, 8, 16, 32];
let view = null; // the current view's cleanup function

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function eta(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds <= 0) return 'done';
  if (seconds < 60) return `about ${Math.ceil(seconds)} s left`;
  return `about ${Math.ceil(seconds / 60)} min left`;
}

function badge(status) {
  return el('span', { class: `badge ${status}`, text: status });
}

function bar(percent, status, label) {
  const cls = status === 'completed' ? 'bar done' : status === 'failed' ? 'bar bad' : 'bar';
  const fill = el('span');
  fill.style.width = `${status === 'failed' ? 100 : percent}%`;
  return el('div', { class: cls, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.round(percent), 'aria-label': label }, fill);
}

function setConn(text, lost) {
  conn.textContent = text;
  conn.className = lost ? 'conn lost' : 'conn';
}

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function getJson(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new HttpError(r.status, (body && body.detail) || `HTTP ${r.status}`);
  return body;
}

// Retries `load` on network failure with 2, 4, 8, 16, 32 s back-off, then offers a button. One
// schedule decides when the next request goes: while a retry is scheduled or the connection is
// lost, the views' regular polls (`run`) send nothing, so back-off really slows the requests,
// and there is never more than one "Connection lost" banner.
function withBackoff(load, onLost) {
  let attempt = 0;
  let timer = null;
  let stopped = false;
  let failing = false;
  let busy = false;
  const attemptNow = async () => {
    timer = null;
    if (busy || stopped) return;
    busy = true;
    try {
      await load();
      attempt = 0;
      // Back from a failure: its notice goes. Otherwise the status line is left alone (it may
      // say the event stream is live).
      if (failing) { setConn('', false); clearLost(); }
      failing = false;
    } catch (e) {
      if (stopped) return;
      if (e instanceof HttpError && e.status === 401) { showSignIn('Your sign-in has ended; sign in again.'); return; }
      if (e instanceof HttpError) throw e;
      failing = true;
      if (attempt < BACKOFF.length) {
        const wait = BACKOFF[attempt++];
        setConn(`reconnecting in ${wait} s…`, false);
        timer = setTimeout(attemptNow, wait * 1000);
      } else {
        setConn('connection lost', true);
        onLost(() => { attempt = 0; attemptNow(); });
      }
    } finally {
      busy = false;
    }
  };
  const run = () => (failing ? Promise.resolve() : attemptNow());
  return { run, failing: () => failing, stop: () => { stopped = true; clearTimeout(timer); } };
}

function clearLost() {
  document.getElementById('lost')?.remove();
}

function lostMessage(retry) {
  clearLost();
  const box = el('div', { class: 'banner allfailed', role: 'alert', id: 'lost' }, 'Connection lost. ',
    el('button', { type: 'button', on: { click: () => { clearLost(); retry(); } } }, 'Retry'));
  main.prepend(box);
}

// ---- sessions list ---------------------------------------------------------------------------

function sessionState(s) {
  const m = s.summary;
  if (m.pending + m.processing > 0) return m.processing > 0 ? 'processing' : 'pending';
  if (s.waiting_for_more_photos) return 'waiting';
  return m.failed > 0 ? 'failed' : 'completed';
}

// Every photo so far is done, but the batch stays open for photos still arriving (the
// session gap): it is announced when that closes.
const WAITING_TEXT = 'waiting for more photos';

function stateBadge(state) {
  return state === 'waiting'
    ? el('span', { class: 'badge waiting', title: 'Every photo so far is done; the batch is announced when no more arrive', text: WAITING_TEXT })
    : badge(state);
}

function sourceLabel(src) {
  if (src.kind === 'upload') return 'uploaded';
  return src.subfolder ? `folder ${src.subfolder}` : 'photo folder';
}

async function showSessions() {
  const render = async () => {
    const d = await getJson('/api/v1/sessions');
    const list = el('ul', { class: 'sessions' });
    for (const s of d.sessions) {
      const m = s.summary;
      list.append(el('li', {}, el('a', { href: `#/session/${s.upload_session_id}` },
        el('strong', { text: new Date(s.created_at).toLocaleString() }),
        el('span', { class: 'muted', text: sourceLabel(s.source) }),
        el('span', { text: `${m.completed + m.failed} of ${m.total_jobs} processed` }),
        stateBadge(sessionState(s)))));
    }
    main.replaceChildren(el('h1', { text: 'Recent sessions' }),
      d.sessions.length ? list : el('p', { text: 'No sessions yet: drop photos into the watched folder or send some below.' }));
  };
  const poller = withBackoff(render, lostMessage);
  await poller.run();
  const every = setInterval(() => poller.run(), 5000);
  return () => { clearInterval(every); poller.stop(); };
}

// ---- one session, live -----------------------------------------------------------------------

function jobRow(j) {
  const thumb = j.status === 'completed'
    ? el('img', { src: `/api/v1/jobs/${j.job_id}/thumbnail`, alt: '', loading: 'lazy' })
    : el('span', { class: 'ph' });
  const plants = j.result ? String(j.result.total_detected) : '';
  const doubt = j.result && j.result.trust && !j.result.trust.trusted
    ? el('span', { class: 'badge uncertain', title: trustText(j.result.trust), text: 'uncertain' }) : null;
  const loc = j.result && j.result.storage_location_id ? j.result.storage_location_id : '';
  return el('tr', { id: `job-${j.job_id}`, 'data-status': j.status, role: 'row' },
    el('td', { class: 'thumb', role: 'cell' }, thumb),
    el('td', { 'data-label': 'Photo', role: 'cell' }, el('a', { href: `#/job/${j.job_id}`, text: j.filename })),
    el('td', { 'data-label': 'Status', role: 'cell' }, badge(j.status)),
    el('td', { 'data-label': 'Progress', role: 'cell' }, bar(j.progress_percent, j.status, `${j.filename} progress`)),
    el('td', { 'data-label': 'ETA', role: 'cell', text: j.status === 'completed' || j.status === 'failed' ? '' : eta(j.eta_seconds) }),
    el('td', { 'data-label': 'Plants', class: 'plants', role: 'cell' }, plants, doubt ? ' ' : '', doubt || ''),
    el('td', { 'data-label': 'Location', role: 'cell', text: loc }),
    el('td', { 'data-label': 'Error', class: 'err', role: 'cell', text: j.error_message || '' }));
}

function banner(summary, id, onReview) {
  const { total_jobs: total, completed, failed, pending, processing } = summary;
  if (total === 0 || pending + processing > 0) return null;
  if (failed === 0) {
    return el('div', { class: 'banner success', role: 'status' },
      total === 1 ? 'The photo is processed.' : `All ${total} photos processed.`);
  }
  if (failed === total && total > 5) {
    return el('div', { class: 'banner allfailed', role: 'alert' },
      `All ${total} photos failed — probably a system problem (model, GPU or disk). `, retryButton(id));
  }
  return el('div', { class: 'banner partial', role: 'status' },
    `Completed ${completed}, failed ${failed}. `,
    el('button', { type: 'button', class: 'link', id: 'review-errors', on: { click: onReview } }, 'Review errors'), ' ',
    retryButton(id));
}

function retryButton(id) {
  return el('button', { type: 'button', on: { click: async (ev) => {
    ev.target.disabled = true;
    try {
      await getJson(`/api/v1/sessions/${id}/retry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    } catch (e) { alert(e.message); }
  } } }, 'Retry failed photos');
}

function overall(summary, etaSeconds, waiting) {
  const done = summary.completed + summary.failed;
  const pct = summary.overall_progress_percent;
  const badges = el('div');
  for (const k of ['processing', 'pending', 'completed', 'failed']) {
    if (summary[k] > 0) badges.append(el('span', { class: `badge ${k}`, text: `${summary[k]} ${k}` }), ' ');
  }
  if (waiting) badges.append(stateBadge('waiting'));
  return el('div', { class: 'overall', id: 'overall' },
    el('div', { id: 'overall-text', text: `${done} of ${summary.total_jobs} photos processed (${pct.toFixed(1)} %)` }),
    bar(pct, done === summary.total_jobs && summary.total_jobs > 0 ? 'completed' : 'processing', 'session progress'),
    badges,
    el('div', { class: 'muted', id: 'session-eta', text: `Time left: ${eta(etaSeconds)}` }));
}

function notFound() {
  main.replaceChildren(el('h1', { text: 'Session not found' }),
    el('p', { role: 'alert', text: 'This session was not found or has expired (24 h).' }),
    el('p', {}, el('a', { href: '#/', text: 'Back to recent sessions' })));
}

// A session's title: where its photos came from and when it started.
function sessionTitle(d) {
  const from = d.source ? sourceLabel(d.source) : 'Session';
  const when = d.created_at ? new Date(d.created_at).toLocaleString() : '';
  return when ? `${from[0].toUpperCase()}${from.slice(1)}, ${when}` : from;
}

async function showSession(id) {
  let state = null; // last poll body, patched by events
  let source = null;
  let pollTimer = null;
  let interrupted = false; // the event stream failed and has not reopened yet
  let onlyFailed = false;
  const rowOf = new Map(); // job id → its <tr>
  const indexOf = new Map(); // job id → its place in state.jobs
  const dirty = new Set(); // job ids whose rows need redrawing
  let frame = 0;
  let head = null;
  let tbody = null;
  let filterNote = null;

  const showRow = (tr) => { tr.hidden = onlyFailed && tr.dataset.status !== 'failed'; };
  const setFilter = (failedOnly) => {
    onlyFailed = failedOnly;
    for (const tr of rowOf.values()) showRow(tr);
    filterNote.hidden = !onlyFailed;
    if (onlyFailed) {
      const first = tbody.querySelector('tr[data-status="failed"]');
      (first || tbody).scrollIntoView({ block: 'start' });
      first?.querySelector('a')?.focus({ preventScroll: true });
    }
  };
  const drawHead = () => {
    head.replaceChildren(banner(state.summary, id, () => setFilter(true)) || '',
      overall(state.summary, state.eta_seconds, state.waiting_for_more_photos));
  };
  // The whole view, once per load; events then patch single rows.
  const drawAll = () => {
    rowOf.clear();
    indexOf.clear();
    tbody = el('tbody', { role: 'rowgroup' });
    state.jobs.forEach((j, i) => {
      const tr = jobRow(j);
      showRow(tr);
      rowOf.set(j.job_id, tr);
      indexOf.set(j.job_id, i);
      tbody.append(tr);
    });
    head = el('div', { id: 'session-head' });
    filterNote = el('p', { id: 'failed-only', class: 'filter', hidden: !onlyFailed },
      'Showing the failed photos only. ',
      el('button', { type: 'button', class: 'link', on: { click: () => setFilter(false) } }, 'Show all photos'));
    const title = sessionTitle(state);
    document.title = `${title} — Demeter`;
    drawHead();
    main.replaceChildren(
      el('p', {}, el('a', { href: '#/', text: '← All sessions' })),
      el('h1', { text: title }),
      head,
      filterNote,
      // Laid out as a grid of independent rows (style.css), so the table's meaning is stated.
      el('table', { id: 'jobs', role: 'table' },
        el('thead', { role: 'rowgroup' }, el('tr', { role: 'row' },
          ...['', 'Photo', 'Status', 'Progress', 'ETA', 'Plants', 'Location', 'Error']
            .map((h) => el('th', { scope: 'col', role: 'columnheader', text: h })))),
        tbody));
  };
  // Redraws only the rows events changed, at most once per animation frame.
  const flush = () => {
    frame = 0;
    for (const jobId of dirty) {
      const tr = jobRow(state.jobs[indexOf.get(jobId)]);
      showRow(tr);
      const old = rowOf.get(jobId);
      if (old) old.replaceWith(tr); else tbody.append(tr);
      rowOf.set(jobId, tr);
    }
    dirty.clear();
    drawHead();
  };

  const load = async () => {
    try {
      state = await getJson(`/api/v1/photos/jobs/status?upload_session_id=${encodeURIComponent(id)}`);
    } catch (e) {
      if (e instanceof HttpError && (e.status === 404 || e.status === 400)) { stopAll(); notFound(); return; }
      throw e;
    }
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
    dirty.clear();
    drawAll();
    followWaiting();
  };
  // Done with every photo so far, the batch stays open for the session gap; its end is a
  // matter of time, not an event, so the view polls until it comes.
  const followWaiting = () => {
    const m = state.summary;
    if (state.waiting_for_more_photos) startPolling();
    else if (m.total_jobs > 0 && m.pending + m.processing === 0) stopPolling();
  };

  const poller = withBackoff(load, lostMessage);
  const startPolling = () => {
    if (pollTimer) return;
    pollTimer = setInterval(() => poller.run(), 2000);
  };
  const stopPolling = () => { clearInterval(pollTimer); pollTimer = null; };
  const stopAll = () => {
    stopPolling(); poller.stop(); if (source) source.close();
    if (frame) cancelAnimationFrame(frame);
    document.title = 'Demeter';
  };

  const apply = (ev) => {
    if (!state) return;
    const d = JSON.parse(ev.data);
    if (d.upload_session_id !== id) return;
    const i = indexOf.get(d.job.job_id);
    if (i === undefined) { indexOf.set(d.job.job_id, state.jobs.length); state.jobs.push(d.job); } else state.jobs[i] = d.job;
    state.summary = d.summary;
    state.eta_seconds = d.eta_seconds;
    state.waiting_for_more_photos = d.waiting_for_more_photos;
    followWaiting();
    dirty.add(d.job.job_id);
    if (!frame) frame = requestAnimationFrame(flush);
  };

  await poller.run();
  if (!state) return stopAll;
  if ('EventSource' in window) {
    source = new EventSource(`/api/v1/events?upload_session_id=${encodeURIComponent(id)}`);
    source.addEventListener('job', apply);
    source.addEventListener('resync', () => poller.run());
    source.onopen = () => { interrupted = false; stopPolling(); setConn('live', false); poller.run(); };
    source.onerror = () => {
      // The browser reconnects by itself (with Last-Event-ID); meanwhile poll every 2 s. Said
      // once per interruption: each failed reconnect must not hide the back-off's own status.
      if (interrupted) return;
      interrupted = true;
      // A poll may have failed first: its back-off status says more than this.
      if (!poller.failing()) setConn('live updates interrupted; polling', false);
      startPolling();
    };
  } else {
    startPolling();
  }
  return stopAll;
}

// ---- one job ---------------------------------------------------------------------------------

const TRUST = {
  no_plants: 'no plants found in this photo',
  closed_canopy: 'closed canopy: plants grow into each other, so the count is a lower bound',
  crowded_cells: 'several cells hold more than one plant: check the per-cell counts',
  touching_plants: 'plants touch: the count depends on where they were separated',
};
function trustText(t) { return t.reasons.map((r) => TRUST[r] || r).join('; '); }

// The tray's cells as a small table: plants per cell, empty cells marked.
function cellTable(g) {
  const rows = [];
  for (let r = 0; r < g.rows; r++) {
    const cells = [el('th', { scope: 'row', text: String(r + 1) })];
    for (let c = 0; c < g.cols; c++) {
      const n = g.plants_per_cell[r * g.cols + c];
      cells.push(el('td', { class: n === 0 ? 'empty' : n > 1 ? 'crowded' : '', text: n === 0 ? 'empty' : String(n),
        'aria-label': `row ${r + 1}, column ${c + 1}: ${n === 0 ? 'empty' : `${n} plant${n > 1 ? 's' : ''}`}` }));
    }
    rows.push(el('tr', {}, ...cells));
  }
  const head = el('tr', {}, el('th', {}), ...Array.from({ length: g.cols }, (_, c) => el('th', { scope: 'col', text: String(c + 1) })));
  return el('table', { class: 'cells' }, el('caption', { text: 'Plants per cell' }), el('thead', {}, head), el('tbody', {}, ...rows));
}

// What each box colour in a multi-class overlay means (the colours come from the API, as the
// overlay was drawn with them).
function legend(entries) {
  return el('figcaption', { class: 'legend' }, el('ul', {}, ...entries.map((c) => {
    // Set through the CSSOM: the page's CSP allows no inline style attributes.
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.borderColor = c.colour;
    return el('li', {}, swatch, el('span', { text: `${c.class}: ${c.count}${c.plant ? ' (plants, numbered)' : ''}` }));
  })));
}

async function showJob(id) {
  let d;
  try {
    d = await getJson(`/api/v1/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    main.replaceChildren(el('h1', { text: 'Photo not found' }),
      el('p', { role: 'alert', text: 'This photo was not found or has expired (48 h).' }),
      el('p', {}, el('a', { href: '#/', text: 'Back to recent sessions' })));
    return null;
  }
  const info = el('dl');
  const add = (k, v) => info.append(el('dt', { text: k }), el('dd', { text: v }));
  add('Status', d.status);
  add('Attempts', String(d.attempts));
  if (d.error_message) add('Error', d.error_message);
  const rules = { qr_code: 'QR label', subfolder: 'folder', filename_pattern: 'file name', default: 'default' };
  if (d.details) {
    add('Plants', String(d.details.total_detected));
    if (d.legend.length) {
      add('By class', d.legend.map((c) => `${c.class} ${c.count}${c.plant ? ' (plants)' : ''}`).join(', '));
    }
    const g = d.details.grid;
    if (g) {
      const occupied = g.plants_per_cell.filter((n) => n > 0).length;
      const cells = g.rows * g.cols;
      const crowded = g.plants_per_cell.filter((n) => n > 1).length;
      add('Tray', `${g.rows} × ${g.cols} cells: ${occupied} occupied, ${cells - occupied} empty (${Math.round(100 * occupied / cells)} % germinated)`
        + (crowded ? `; ${crowded} with more than one plant` : ''));
    } else {
      add('Tray', 'no grid of cells found');
    }
    const where = d.details.storage_location_name || d.details.storage_location_id;
    add('Location', where ? `${where}${d.details.location_rule ? ` (from the ${rules[d.details.location_rule]})` : ''}` : '—');
    add('Model', `${d.details.model.name} ${d.details.model.version}`);
    if (d.details.execution_provider) add('Ran on', `${d.details.execution_provider} (${d.details.device})`);
    add('Plant cover', `${(d.details.plant_area_fraction * 100).toFixed(1)} %`);
    for (const [stage, ms] of Object.entries(d.details.timings_ms)) add(`Stage ${stage}`, `${ms} ms`);
  }
  if (d.previous_result) {
    const p = d.previous_result;
    add('Before reprocessing', `${p.total_detected} plants with ${p.model.name} ${p.model.version}`);
  }
  if (d.model && !d.details) add('Reprocessing with', d.model);
  const picture = d.details
    ? el('img', { src: d.overlay_url, alt: `${d.filename} with ${d.details.total_detected} plants boxed and numbered` })
    : el('p', { class: 'muted', text: 'No image yet.' });
  const t = d.details && d.details.trust;
  const warning = t && !t.trusted
    ? el('div', { class: 'banner partial trust', role: 'status', text: `Count uncertain: ${trustText(t)}.` }) : null;
  const cells = d.details && d.details.grid ? cellTable(d.details.grid) : null;
  main.replaceChildren(...[
    el('p', {}, el('a', { href: `#/session/${d.upload_session_id}`, text: '← Session' })),
    el('h1', { text: d.filename }),
    warning,
    el('div', { class: 'detail' }, d.legend.length ? el('figure', {}, picture, legend(d.legend)) : picture, info),
    cells].filter(Boolean));
  return null;
}

// ---- results archive: locations over time, gallery ----------------------------------------------

function day(iso) {
  return new Date(iso).toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
}

function changeText(loc) {
  if (loc.change === null) return 'first photo';
  const sign = loc.change > 0 ? '+' : loc.change < 0 ? '−' : '±';
  return `${sign}${Math.abs(loc.change)} since ${day(loc.previous.taken_at)}`;
}

// A location's count (left axis) and plant cover (right axis) over time, one point per photo.
// uPlot draws on a canvas sized to its box: it is resized with the page, so it reads at phone
// width. Beside it, the same numbers as a table for screen readers and copying.
function seriesChart(points, label) {
  const box = el('div', { class: 'chart', role: 'img', 'aria-label': `${label}: plants and cover over time, ${points.length} photos`,
    'data-points': String(points.length) });
  const xs = points.map((p) => new Date(p.taken_at).getTime() / 1000);
  const data = [xs, points.map((p) => p.total_detected), points.map((p) => Math.round(p.plant_cover * 1000) / 10)];
  let plot = null;
  const draw = () => {
    const width = Math.max(240, box.clientWidth);
    if (plot) { plot.setSize({ width, height: 220 }); return; }
    // Counts from zero (a drop from 20 to 19 must not look like a collapse), in whole plants;
    // cover in percent on the right. The axes name the lines; the key below the chart colours them.
    plot = new uPlot({
      width, height: 220,
      legend: { show: false },
      scales: {
        // One photo: a month around it, not an axis of years.
        x: { time: true, range: (u, min, max) => (min === max ? [min - 15 * 86400, max + 15 * 86400] : [min, max]) },
        plants: { range: (u, min, max) => [0, Math.max(5, Math.ceil(max * 1.15))] },
        cover: { range: [0, 100] },
      },
      axes: [
        { space: 60 },
        { scale: 'plants', label: 'plants', size: 44, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
        { scale: 'cover', side: 1, label: 'cover %', size: 44, grid: { show: false } },
      ],
      series: [
        {},
        { label: 'plants', scale: 'plants', stroke: '#2e7d32', width: 2, points: { show: true, size: 7, fill: '#2e7d32' } },
        { label: 'cover %', scale: 'cover', stroke: '#1565c0', dash: [4, 4], points: { show: true, size: 5 } },
      ],
    }, data, box);
  };
  const resize = new ResizeObserver(() => { if (box.isConnected) draw(); });
  resize.observe(box);
  const rows = points.map((p) => el('tr', {}, el('td', { text: new Date(p.taken_at).toLocaleString() }),
    el('td', { text: String(p.total_detected) }), el('td', { text: `${(p.plant_cover * 100).toFixed(1)} %` })));
  const table = el('details', { class: 'points' }, el('summary', { text: 'Numbers' }),
    el('table', {}, el('thead', {}, el('tr', {}, el('th', { text: 'Taken' }), el('th', { text: 'Plants' }), el('th', { text: 'Cover' }))),
      el('tbody', {}, ...rows)));
  const key = el('p', { class: 'key' }, el('span', { class: 'key-plants', text: 'plants' }), ' ',
    el('span', { class: 'key-cover', text: 'plant cover %' }));
  return { node: el('div', {}, box, key, table), stop: () => resize.disconnect() };
}

async function showLocations() {
  let d;
  try {
    d = await getJson('/api/v1/locations');
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) { showSignIn(); return null; }
    main.replaceChildren(el('h1', { text: 'Locations' }), el('p', { role: 'alert', text: `Cannot load the locations: ${e.message}` }));
    return null;
  }
  const charts = [];
  const cards = await Promise.all(d.locations.map(async (loc) => {
    const label = loc.name || loc.id || 'No location';
    const s = await getJson(`/api/v1/series?location=${encodeURIComponent(loc.id)}`);
    const chart = seriesChart(s.points, label);
    charts.push(chart);
    const alert = loc.dropped
      ? el('span', { class: 'badge failed alert', role: 'status', text: `dropped more than ${d.drop_percent} %` }) : null;
    return el('section', { class: 'location', 'data-location': loc.id, 'aria-label': label },
      el('div', { class: 'location-head' },
        el('img', { src: loc.latest.thumbnail_url, alt: '', loading: 'lazy' }),
        el('div', {},
          el('h2', { text: label }),
          el('p', {}, el('strong', { class: 'count', text: `${loc.latest.total_detected} plants` }),
            ` on ${day(loc.latest.taken_at)} · `, el('span', { class: loc.change < 0 ? 'down' : 'up', text: changeText(loc) }), ' ', alert),
          el('p', {}, el('a', { href: `#/gallery?location=${encodeURIComponent(loc.id)}`, text: `Photos of ${label}` })))),
      chart.node);
  }));
  main.replaceChildren(el('h1', { text: 'Locations' }),
    cards.length ? el('div', { class: 'locations' }, ...cards)
      : el('p', { text: 'No results yet: counted photos appear here by location, and stay after their sessions end.' }));
  return () => charts.forEach((c) => c.stop());
}

// The gallery: archived results, newest first, filtered by location, date and model; a lightbox
// with previous and next and the boxes drawn over the photo.
function galleryQuery() {
  const q = (location.hash.split('?')[1]) || '';
  return new URLSearchParams(q);
}

async function showGallery() {
  const params = galleryQuery();
  const filters = {};
  for (const k of ['location', 'since', 'until', 'model', 'q']) if (params.get(k)) filters[k] = params.get(k);
  let locs = [];
  try { locs = (await getJson('/api/v1/locations')).locations; } catch (_) { /* the filter offers none */ }
  const form = el('form', { class: 'filters', 'aria-label': 'Filter photos' });
  const field = (label, input) => el('label', {}, el('span', { text: label }), input);
  const locSelect = el('select', { name: 'location' }, el('option', { value: '', text: 'All locations' }),
    ...locs.map((l) => el('option', { value: l.id, text: l.name || l.id || 'No location', selected: filters.location === l.id })));
  form.append(field('Location', locSelect),
    field('From', el('input', { type: 'date', name: 'since', value: filters.since || '' })),
    field('To', el('input', { type: 'date', name: 'until', value: filters.until || '' })),
    field('Model', el('input', { type: 'text', name: 'model', value: filters.model || '', placeholder: 'any' })),
    field('File name', el('input', { type: 'search', name: 'q', value: filters.q || '' })),
    el('button', { type: 'submit', class: 'primary', text: 'Show' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) next.set(k, v);
    location.hash = `#/gallery?${next}`;
  });
  const grid = el('ul', { class: 'gallery', 'aria-label': 'Photos' });
  const more = el('button', { type: 'button', hidden: true, text: 'Load more' });
  const status = el('p', { class: 'muted', role: 'status' });
  const items = [];
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams(filters);
    // "To" a day includes that day: the API's `until` is exclusive.
    if (filters.until) q.set('until', new Date(Date.parse(filters.until) + 86400000).toISOString().slice(0, 10));
    q.set('limit', '60');
    if (cursor) q.set('cursor', cursor);
    const page = await getJson(`/api/v1/results?${q}`);
    for (const r of page.results) {
      const i = items.length;
      items.push(r);
      grid.append(el('li', {}, el('button', { type: 'button', class: 'tile', 'aria-label': `${r.filename}, ${r.total_detected} plants`, on: { click: () => open(i) } },
        el('img', { src: r.thumbnail_url, alt: '', loading: 'lazy' }),
        el('span', { class: 'tile-count', text: String(r.total_detected) }),
        el('span', { class: 'tile-caption', text: `${r.location_name || r.location_id || '—'} · ${day(r.taken_at)}` }))));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    status.textContent = items.length ? `${items.length} photo${items.length === 1 ? '' : 's'}${cursor ? ' so far' : ''}` : 'No photos match.';
  };
  more.addEventListener('click', () => load().catch((e) => { status.textContent = e.message; }));

  const box = el('dialog', { class: 'lightbox', 'aria-label': 'Photo' });
  const show = (i) => {
    const r = items[i];
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', `0 0 ${r.width} ${r.height}`);
    svg.setAttribute('class', 'boxes');
    svg.setAttribute('aria-hidden', 'true');
    for (const [x, y, w, h] of r.boxes) {
      const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
      for (const [k, v] of Object.entries({ x, y, width: w, height: h })) rect.setAttribute(k, String(v));
      svg.append(rect);
    }
    const prev = el('button', { type: 'button', text: '← Previous', disabled: i === 0, on: { click: () => { show(i - 1); refocus('prev'); } } });
    const next = el('button', { type: 'button', text: 'Next →', disabled: i === items.length - 1, on: { click: () => { show(i + 1); refocus('next'); } } });
    prev.dataset.nav = 'prev';
    next.dataset.nav = 'next';
    const where = r.location_name || r.location_id || 'no location';
    box.replaceChildren(
      el('figure', {}, el('div', { class: 'overlay-wrap' }, el('img', { src: r.thumbnail_url, alt: `${r.filename}: ${r.total_detected} plants` }), svg),
        el('figcaption', {}, el('strong', { text: `${r.total_detected} plants` }),
          ` · ${where} · taken ${new Date(r.taken_at).toLocaleString()} · ${r.model_name} ${r.model_version} · ${r.filename}`,
          r.trusted ? null : el('span', { class: 'muted', text: ' · count uncertain' }))),
      el('div', { class: 'lightbox-nav' }, prev, el('span', { text: `${i + 1} of ${items.length}` }), next,
        el('button', { type: 'button', text: 'Close', on: { click: () => box.close() } })));
    box.dataset.index = String(i);
  };
  // Keeps the focus on the button pressed (or its enabled neighbour at either end).
  const refocus = (which) => {
    const b = box.querySelector(`button[data-nav="${which}"]`);
    (b && !b.disabled ? b : box.querySelector('button[data-nav]:not([disabled])'))?.focus();
  };
  const open = (i) => { show(i); if (!box.open) box.showModal(); };
  // Arrow keys page through while the lightbox is open, wherever the focus is (the button that
  // had it is replaced with the photo).
  const onKey = (ev) => {
    if (!box.open) return;
    const i = Number(box.dataset.index);
    if (ev.key === 'ArrowLeft' && i > 0) show(i - 1);
    if (ev.key === 'ArrowRight' && i < items.length - 1) show(i + 1);
  };
  document.addEventListener('keydown', onKey);
  main.replaceChildren(el('h1', { text: 'Gallery' }), form, status, grid, more, box);
  try { await load(); } catch (e) { status.textContent = `Cannot load the photos: ${e.message}`; }
  return () => { document.removeEventListener('keydown', onKey); if (box.open) box.close(); };
}

// ---- sign-in ---------------------------------------------------------------------------------

const user = document.getElementById('user');
const uploadSection = document.getElementById('upload');

function showSignIn(message) {
  if (view) view();
  view = null;
  clearInterval(healthTimer);
  warningsBox.hidden = true;
  user.replaceChildren();
  uploadSection.hidden = true;
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const status = el('p', { role: 'alert', class: 'err', text: message || '' });
  const form = el('form', { class: 'signin', on: { submit: async (ev) => {
    ev.preventDefault();
    try {
      await getJson('/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: input.value.trim() }) });
      route();
    } catch (e) {
      status.textContent = e.status === 401 ? 'That token is not valid.' : `Sign-in failed: ${e.message}`;
    }
  } } },
  el('label', { for: 'token', text: 'Access token' }), input,
  el('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  el('p', { class: 'muted', text: 'Ask the appliance administrator for a token (demeter token create).' }), status);
  main.replaceChildren(el('h1', { text: 'Sign in' }), form);
  input.focus();
}

// ---- the appliance's own warnings ------------------------------------------------------------

const warningsBox = document.getElementById('warnings');
let healthTimer = null;

// What `/health` warns of, on every view: a CPU fallback (the GPU could not be used), a corrupt
// store rebuilt, and processing paused because the inference device keeps failing.
function showWarnings(h) {
  const lines = [];
  const inf = h.inference || {};
  if (inf.state === 'open' || inf.state === 'probing') {
    const next = inf.retry_in_secs ? ` Next try in ${inf.retry_in_secs} s.` : '';
    lines.push(el('p', { class: 'warning', role: 'alert',
      text: `Processing is paused: the inference device keeps failing (${inf.reason || 'unknown error'}).${next}` }));
  }
  for (const w of h.warnings || []) lines.push(el('p', { class: 'note', role: 'status', text: w }));
  warningsBox.replaceChildren(...lines);
  warningsBox.hidden = lines.length === 0;
}

function followHealth() {
  // `/health` answers 503 while processing is paused, with the same body: read it either way.
  const check = async () => {
    try {
      const r = await fetch('/health');
      if (r.status === 401) return;
      showWarnings(await r.json());
    } catch (_) { /* the views report lost connections */ }
  };
  clearInterval(healthTimer);
  healthTimer = setInterval(check, 10000);
  return check();
}

async function whoAmI() {
  try {
    const me = await getJson('/auth/me');
    const pairButton = me.role === 'admin'
      ? el('button', { type: 'button', on: { click: () => { location.hash = '#/pair-phone'; } } }, 'Pair a phone') : null;
    user.replaceChildren(el('span', { class: 'muted', text: `${me.name} (${me.role})` }), pairButton || '',
      el('button', { type: 'button', on: { click: async () => {
        await fetch('/auth/logout', { method: 'POST' });
        showSignIn('Signed out.');
      } } }, 'Sign out'));
    uploadSection.hidden = me.role === 'viewer';
    return me;
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) return null;
    throw e;
  }
}

// ---- pairing a phone -------------------------------------------------------------------------

async function showPairing() {
  if (view) view();
  view = null;
  let offer;
  try {
    offer = await getJson('/auth/pair', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ role: 'uploader' }) });
  } catch (e) {
    main.replaceChildren(el('p', { role: 'alert', class: 'err', text: `Cannot make a pairing code: ${e.message}` }));
    return;
  }
  const qr = el('img', { id: 'pair-qr', alt: 'QR code to sign a phone in',
    src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(offer.qr_svg)}`, width: 220, height: 220 });
  main.replaceChildren(
    el('p', {}, el('a', { href: '#/', text: '← All sessions' })),
    el('h1', { text: 'Pair a phone' }),
    el('p', { text: 'Scan this code with the phone\'s camera. It signs the phone in as an uploader, once, within 10 minutes.' }),
    qr,
    el('p', {}, 'Or open this link on the phone: ', el('code', { id: 'pair-url', text: offer.url })),
    offer.reachable_from_lan === false
      ? el('p', { role: 'alert', class: 'err', id: 'pair-lan-off',
        text: 'LAN access is off: this computer serves the page to itself only, so a phone cannot open this link. '
          + 'Turn on "Serve the status page on the local network" in Settings (or set server.listen = "0.0.0.0:7878").' })
      : '',
    el('p', { class: 'muted', text: `Valid until ${new Date(offer.expires_at).toLocaleTimeString()}.` }));
}

// `#/pair/CODE` signs in and shows the sessions; `#/pair/CODE/session/ID` (the desktop app's
// links) then goes on to that view.
async function redeemPairing(code, next) {
  try {
    await getJson('/auth/pair/redeem', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code }) });
    location.hash = /^(session|job)\/[0-9a-f-]+$|^pair-phone$/.test(next) ? `#/${next}` : '#/';
  } catch (e) {
    showSignIn('This pairing link is not valid any more (used, expired, or mistyped). Ask for a new one.');
  }
}

// ---- routing and upload ----------------------------------------------------------------------

async function route() {
  if (view) view();
  view = null;
  setConn('', false);
  const [, first, code, ...next] = (location.hash || '#/').split('/');
  if (first === 'pair' && code) { await redeemPairing(code, next.join('/')); return; }
  let me;
  try { me = await whoAmI(); } catch (_) { me = undefined; }
  if (me === null) { showSignIn(); return; }
  followHealth();
  const [, kind, id] = (location.hash || '#/').split('/');
  if (kind === 'pair-phone') { await showPairing(); main.focus({ preventScroll: true }); return; }
  const page = (kind || '').split('?')[0];
  for (const a of document.querySelectorAll('nav.views a')) {
    if (a.dataset.view === (page || 'sessions')) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (kind === 'session' && id) view = await showSession(id);
  else if (kind === 'job' && id) view = await showJob(id);
  else if (page === 'locations') view = await showLocations();
  else if (page === 'gallery') view = await showGallery();
  else view = await showSessions();
  main.focus({ preventScroll: true });
}

document.getElementById('upload-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = document.getElementById('upload-files');
  const status = document.getElementById('upload-status');
  if (!input.files.length) return;
  const body = new FormData();
  for (const f of input.files) body.append('photos', f, f.name);
  status.textContent = `Sending ${input.files.length} photo(s)…`;
  try {
    const r = await getJson('/api/v1/photos/upload', { method: 'POST', body });
    const skipped = r.skipped.map((f) => `${f.name}: ${f.reason}`).join('; ');
    status.textContent = `Sent ${r.files.length} photo(s).` + (skipped ? ` Not sent, not photos: ${skipped}.` : '');
    input.value = '';
    location.hash = `#/session/${r.upload_session_id}`;
  } catch (e) {
    status.textContent = `Upload failed: ${e.message}`;
  }
});

window.addEventListener('hashchange', route);
route();
