// The status page in Debian's Chromium, driven by playwright-core, against the real daemon
// processing real photos. Screenshots go to $ARTIFACTS (default target/browser-artifacts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startDaemon, photo, waitFor, repo, ADMIN_TOKEN } from './daemon.mjs';

/** Signs in through the page's form, as a person would. */
async function signIn(page, url) {
  await page.goto(url);
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('button:has-text("Sign in")');
  await page.waitForSelector('h1:has-text("Recent sessions")');
}

const artifacts = process.env.ARTIFACTS || join(repo, 'target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });
let browser;
let daemon;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  daemon = await startDaemon();
});

after(async () => {
  await browser?.close();
  daemon?.stop();
});

async function sessionWith(n) {
  return waitFor(`a session with ${n} jobs`, async () => {
    const d = await daemon.api('/api/v1/sessions');
    const s = d.sessions.find((x) => x.summary.total_jobs === n);
    return s && s.upload_session_id;
  });
}

test('jobs move pending → processing → completed on screen without a reload; banner and reasons show', async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await signIn(page, daemon.url);
  // Hold the queue so the page sees the photos waiting, then let them run.
  await daemon.api('/api/v1/queue/pause', { method: 'POST' });
  const names = [];
  for (let i = 0; i < 6; i++) {
    const name = `tray-${i}.jpg`;
    const bytes = readFileSync(photo(i % 4));
    writeFileSync(join(daemon.watch, name), Buffer.concat([bytes, Buffer.from([i])]));
    names.push(name);
  }
  const jpeg = readFileSync(photo(0));
  writeFileSync(join(daemon.watch, 'broken.jpg'), jpeg.subarray(0, jpeg.length / 3));
  const id = await sessionWith(7);

  await page.goto(`${daemon.url}/#/session/${id}`);
  await page.waitForSelector('tr[data-status="pending"]');
  // Record every status each row shows, from inside the page.
  await page.evaluate(() => {
    window.__noReload = true;
    window.__seen = {};
    const record = () => document.querySelectorAll('tr[id^="job-"]').forEach((tr) => {
      const s = (window.__seen[tr.id] ||= []);
      if (s[s.length - 1] !== tr.dataset.status) s.push(tr.dataset.status);
    });
    record();
    new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  await page.screenshot({ path: join(artifacts, 'session-pending.png'), fullPage: true });
  await daemon.api('/api/v1/queue/resume', { method: 'POST' });

  await page.waitForSelector('.banner.partial', { timeout: 60000 });
  await page.screenshot({ path: join(artifacts, 'session-done.png'), fullPage: true });
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  const seen = await page.evaluate(() => window.__seen);
  const histories = Object.values(seen);
  assert.equal(histories.length, 7);
  assert.ok(histories.some((h) => h.join() === 'pending,processing,completed'), JSON.stringify(seen));
  for (const h of histories) assert.equal(h[0], 'pending', JSON.stringify(h));
  assert.match(await page.textContent('.banner.partial'), /Completed 6, failed 1/);
  assert.match(await page.textContent('#overall-text'), /7 of 7 photos processed \(100\.0 %\)/);
  const broken = page.locator('tr', { hasText: 'broken.jpg' });
  assert.match(await broken.textContent(), /corrupt or truncated JPEG/);
  assert.equal(await page.locator('tr[data-status="completed"] img').count(), 6, 'thumbnails shown');

  // Job detail: timings, model, attempts.
  await page.click(`text=${names[0]}`);
  await page.waitForSelector('dl');
  await page.waitForFunction(() => document.querySelector('.detail img')?.naturalWidth > 0);
  const detail = await page.textContent('main');
  assert.match(detail, /Stage segment/);
  assert.match(detail, /plant-exg/);
  assert.match(detail, /Ran onCPU \(cpu\)/, 'where the model ran');
  assert.match(detail, /Attempts1/);
  assert.match(detail, /Location—/, 'a photo at the top of the folder has no location');
  // The tray's grid: the summary, and a cell table of 4 × 5 with the empty cells marked.
  assert.match(detail, /Tray4 × 5 cells: \d+ occupied, \d+ empty \(\d+ % germinated\)/);
  assert.equal(await page.locator('table.cells tbody td').count(), 20);
  const empties = await page.locator('table.cells td.empty').count();
  assert.ok(empties >= 1 && empties <= 2, `${empties} empty cells (the tray has one empty pot)`);
  assert.equal(await page.locator('.banner.trust').count(), 0, 'a clear tray is not flagged');
  await page.screenshot({ path: join(artifacts, 'job-detail.png'), fullPage: true });
  await page.close();
});

// 320 × 240 of flat soil-brown: a photo with no plants in it.
const BARE = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAUAAAADwCAIAAAD+Tyo8AAACDklEQVR42u3TMQ0AQAjAwOfVooAZ6XhgI7mT0KTRlQ+46UsABgYMDBgYDAwYGDAwYGAwMGBgwMBgYMDAgIEBA4OBAQMDBgYMDAYGDAwYGAwMGBgwMGBgMDBgYMDAgIHBwICBAQODgQEDAwYGDAwGBgwMGBgMDBgYMDBgYDAwYGDAwICBwcCAgQEDg4EBAwMGBgwMBgYMDBgYMDAYGDAwYGAwMGBgwMCAgcHAgIEBAwMGBgMDBgYMDAYGDAwYGDAwGBgwMGBgMDBgYMDAgIHBwICBAQMDBgYDAwYGDAwGBgwMGBgwMBgYMDBgYMDAYGDAwICBwcCAgQEDAwYGAwMGBgwMGBgMDBgYMDAYGDAwYGDAwGBgwMCAgcHAgIEBAwMGBgMDBgYMDBgYDAwYGDAwGBgwMGBgwMBgYMDAgIEBA4OBAQMDBgYDAwYGDAwYGAwMGBgwMBgYMDBgYMDAYGDAwICBAQODgQEDAwYGAwMGBgwMGBgMDBgYMDBgYDAwYGDAwGBgwMCAgQEDg4EBAwMGBgwMBgYMDBgYDAwYGDAwYGAwMGBgwMBgYMDAgIEBA4OBAQMDBgYMDAYGDAwYGAwMGBgwMGBgMDBgYMDAgIHBwICBAQODgQEDAwYGDAwGBgwMGBgwMBgYMDBgYDAwYGDAwICBwcCAgQEDg4EBAwMGBgwMBgYMDBgYMDAYGDAwsDddTAM+uIl48wAAAABJRU5ErkJggg==', 'base64');

test('a count that cannot be trusted is marked in the list and explained on the photo', async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await signIn(page, daemon.url);
  mkdirSync(join(daemon.watch, 'bare'));
  writeFileSync(join(daemon.watch, 'bare', 'bare-soil.png'), BARE);
  const { session, job } = await waitFor('the bare photo processed', async () => {
    for (const s of (await daemon.api('/api/v1/sessions')).sessions) {
      const d = await daemon.api(`/api/v1/photos/jobs/status?upload_session_id=${s.upload_session_id}`);
      const j = d.jobs.find((x) => x.filename === 'bare/bare-soil.png' && x.status === 'completed');
      if (j) return { session: s.upload_session_id, job: j };
    }
    return null;
  });
  assert.deepEqual(job.result.trust, { trusted: false, reasons: ['no_plants'] });
  await page.goto(`${daemon.url}/#/session/${session}`);
  const row = page.locator('tr', { hasText: 'bare/bare-soil.png' });
  await row.locator('.badge.uncertain').waitFor();
  assert.match(await row.locator('.badge.uncertain').getAttribute('title'), /no plants found/);
  await page.click('text=bare/bare-soil.png');
  await page.waitForSelector('.banner.trust');
  assert.match(await page.textContent('.banner.trust'), /^Count uncertain: no plants found in this photo\.$/);
  assert.match(await page.textContent('main'), /Trayno grid of cells found/);
  assert.equal(await page.locator('table.cells').count(), 0);
  await page.screenshot({ path: join(artifacts, 'job-uncertain.png'), fullPage: true });
  await page.close();
});

test('an unknown or expired session says so, with a way back', async () => {
  const page = await browser.newPage();
  await signIn(page, daemon.url);
  await page.goto(`${daemon.url}/#/session/0192f5d2-0000-7000-8000-000000000000`);
  await page.waitForSelector('text=not found or has expired (24 h)');
  await page.click('text=Back to recent sessions');
  await page.waitForSelector('h1:has-text("Recent sessions")');
  await page.close();
});

test('a photo sent from the upload form at phone width is processed', async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await signIn(page, daemon.url);
  await page.setInputFiles('#upload-files', [photo(4)]);
  await page.click('button:has-text("Upload")');
  await page.waitForURL(/#\/session\//);
  await page.waitForSelector('.banner.success', { timeout: 60000 });
  assert.match(await page.textContent('.banner.success'), /^The photo is processed\.$/);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling at phone width (overflow ${overflow}px)`);
  await page.screenshot({ path: join(artifacts, 'phone-upload.png'), fullPage: true });
  // Keyboard: Tab reaches the links, the session's photo, the file picker and the Upload button,
  // in reading order, each visibly focused.
  const reached = [];
  for (let i = 0; i < 25; i++) {
    await page.keyboard.press('Tab');
    const f = await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || e === document.body) return null;
      const style = getComputedStyle(e);
      return { id: e.id, text: (e.textContent || '').trim(), tag: e.tagName,
        ring: style.outlineStyle !== 'none' || style.boxShadow !== 'none' };
    });
    if (f) reached.push(f);
  }
  const order = (pred, what) => {
    const i = reached.findIndex(pred);
    assert.ok(i >= 0, `${what} is reached by Tab: ${JSON.stringify(reached.map((r) => r.id || r.text))}`);
    assert.ok(reached[i].ring, `${what} shows its focus`);
    return i;
  };
  const back = order((f) => f.text === '← All sessions', 'the way back');
  const row = order((f) => f.tag === 'A' && /\.jpe?g$/i.test(f.text), "the photo's link");
  const picker = order((f) => f.id === 'upload-files', 'the file picker');
  const send = order((f) => f.text === 'Upload', 'the Upload button');
  assert.ok(back < row && row < picker && picker < send, 'in reading order');
  await page.close();
});

test('when every photo of a large batch fails the page calls it a system problem', async () => {
  const page = await browser.newPage();
  await signIn(page, daemon.url);
  // A subfolder of its own: its own session.
  mkdirSync(join(daemon.watch, 'bad-batch'));
  for (let i = 0; i < 6; i++) writeFileSync(join(daemon.watch, 'bad-batch', `bad-${i}.jpg`), `not a photo ${i}\n`);
  const id = await sessionWith(6);
  await page.goto(`${daemon.url}/#/session/${id}`);
  await page.waitForSelector('.banner.allfailed', { timeout: 60000 });
  assert.match(await page.textContent('.banner.allfailed'), /All 6 photos failed — probably a system problem/);
  await page.screenshot({ path: join(artifacts, 'all-failed.png'), fullPage: true });
  await page.close();
});

test('losing the server is noticed and retried with back-off: one schedule, one banner', async () => {
  const own = await startDaemon();
  const page = await browser.newPage();
  // The page's timers run on a clock the test moves, so a minute of back-off takes a second.
  await page.clock.install();
  try {
    await signIn(page, own.url);
    writeFileSync(join(own.watch, 'one.jpg'), readFileSync(photo(1)));
    const id = await waitFor('a session', async () => (await own.api('/api/v1/sessions')).sessions[0]?.upload_session_id);
    await page.goto(`${own.url}/#/session/${id}`);
    await page.waitForSelector('tr[id^="job-"]');
    let polls = 0;
    page.on('request', (r) => { if (r.url().includes('/api/v1/photos/jobs/status')) polls++; });
    own.stop();
    // Whichever notices first, the event stream or a poll (timers also run in real time).
    await page.waitForFunction(() => /interrupted|reconnecting/.test(document.getElementById('conn').textContent), null, { timeout: 20000 });
    await page.clock.runFor(2000);
    await page.waitForFunction(() => /reconnecting in \d+ s/.test(document.getElementById('conn').textContent), null, { timeout: 20000 });
    await page.screenshot({ path: join(artifacts, 'reconnecting.png') });
    // 80 s of page time in 2 s steps, letting each failed request settle.
    for (let i = 0; i < 40; i++) {
      await page.clock.runFor(2000);
      await page.waitForTimeout(30);
    }
    await page.waitForSelector('#lost', { timeout: 20000 });
    assert.equal(await page.locator('#lost').count(), 1, 'one banner');
    assert.match(await page.locator('#conn').textContent(), /connection lost/);
    // The first poll, then one retry each 2, 4, 8, 16 and 32 s: not one every 2 s beside them.
    assert.ok(polls <= 7, `${polls} polls in 80 s while the server was down`);
    const before = polls;
    for (let i = 0; i < 10; i++) await page.clock.runFor(2000);
    assert.equal(polls, before, 'nothing more until the person asks');
    await page.click('#lost button');
    await page.waitForTimeout(200);
    assert.ok(polls > before, 'Retry tries at once');
    await page.clock.runFor(1000);
    assert.ok(await page.locator('#lost').count() <= 1, 'never two banners');
  } finally {
    own.stop();
    await page.close();
  }
});

test('a session page is titled by its source and time; Review errors shows the failed photos; events patch rows', async () => {
  const id = await sessionWith(7);
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await signIn(page, daemon.url);
  await page.goto(`${daemon.url}/#/session/${id}`);
  await page.waitForSelector('.banner.partial');
  const title = await page.locator('main h1').textContent();
  assert.match(title, /^Photo folder, /, title);
  assert.equal(await page.title(), `${title} — Demeter`);
  // Review errors: the failed photo alone, scrolled to, and the route stays on the session.
  await page.click('#review-errors');
  assert.equal(new URL(page.url()).hash, `#/session/${id}`, 'the link does not leave the session');
  await page.waitForSelector('#failed-only:not([hidden])');
  const visible = await page.locator('#jobs tbody tr:not([hidden])').evaluateAll((rows) => rows.map((r) => r.dataset.status));
  assert.deepEqual(visible, ['failed']);
  // Hidden on screen too, not only marked (the rows' own layout must not override `hidden`).
  const shown = await page.locator('#jobs tbody tr').evaluateAll((rows) => rows.filter((r) => r.checkVisibility()).map((r) => r.dataset.status));
  assert.deepEqual(shown, ['failed']);
  assert.ok(await page.locator('#jobs tbody tr[data-status="failed"]').isVisible());
  await page.screenshot({ path: join(artifacts, 'session-review-errors.png'), fullPage: true });
  await page.click('#failed-only button');
  assert.equal(await page.locator('#jobs tbody tr:not([hidden])').count(), 7);
  // An event redraws its own row only: the other rows stay the same elements.
  await page.evaluate(() => {
    window.__rows = [...document.querySelectorAll('#jobs tbody tr')];
  });
  const failedId = await page.locator('#jobs tbody tr[data-status="failed"]').getAttribute('id');
  await daemon.api(`/api/v1/sessions/${id}/retry`, { method: 'POST' });
  await page.waitForFunction((rid) => document.getElementById(rid)?.dataset.status !== 'failed'
    || !window.__rows.includes(document.getElementById(rid)), failedId, { timeout: 30000 });
  const kept = await page.evaluate((rid) => window.__rows
    .filter((r) => r.id !== rid).every((r) => r.isConnected), failedId);
  assert.ok(kept, 'rows of other photos were not rebuilt');
  await page.close();
});

test('the page asks for a token, refuses a wrong one, and signs out', async () => {
  const page = await browser.newPage();
  await page.goto(daemon.url);
  await page.waitForSelector('h1:has-text("Sign in")');
  assert.equal(await page.isHidden('#upload'), true, 'nothing to use before signing in');
  await page.fill('#token', 'dmt_wrong');
  await page.click('button:has-text("Sign in")');
  await page.waitForSelector('text=That token is not valid.');
  await page.screenshot({ path: join(artifacts, 'sign-in.png') });
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('button:has-text("Sign in")');
  await page.waitForSelector('h1:has-text("Recent sessions")');
  assert.match(await page.textContent('#user'), /admin \(admin\)/);
  const cookies = await page.context().cookies();
  const c = cookies.find((x) => x.name === 'demeter_session');
  assert.ok(c && c.httpOnly && c.sameSite === 'Strict', JSON.stringify(cookies));
  await page.click('button:has-text("Sign out")');
  await page.waitForSelector('h1:has-text("Sign in")');
  await page.reload();
  await page.waitForSelector('h1:has-text("Sign in")');
  await page.close();
});

test('an admin shows a QR code; its link signs a phone in once, as an uploader', async () => {
  const admin = await browser.newPage();
  await signIn(admin, daemon.url);
  await admin.click('button:has-text("Pair a phone")');
  await admin.waitForSelector('#pair-qr');
  await admin.waitForFunction(() => document.getElementById('pair-qr').naturalWidth > 0);
  const link = await admin.textContent('#pair-url');
  assert.match(link, /#\/pair\/[0-9a-f]{32}$/);
  await admin.screenshot({ path: join(artifacts, 'pairing.png') });

  const phoneContext = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const phone = await phoneContext.newPage();
  await phone.goto(link);
  await phone.waitForSelector('h1:has-text("Recent sessions")');
  assert.match(await phone.textContent('#user'), /paired-.* \(uploader\)/);
  assert.equal(await phone.isVisible('#upload'), true, 'an uploader may send photos');
  assert.equal(await phone.isVisible('button:has-text("Pair a phone")'), false, 'only admins pair');
  // The same link does not work twice.
  const other = await (await browser.newContext()).newPage();
  await other.goto(link);
  await other.waitForSelector('text=This pairing link is not valid any more');
  await phoneContext.close();
  await admin.close();
});

test('a batch whose photos are done waits for more photos until the session gap closes', async () => {
  // A daemon of its own with a 12 s gap: long enough to see the wait, short enough to see it end.
  const own = await startDaemon({ DEMETER_SESSION_GAP_SECS: '12' });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
    await signIn(page, own.url);
    writeFileSync(join(own.watch, 'one.jpg'), readFileSync(photo(1)));
    const id = await waitFor('the session', async () => (await own.api('/api/v1/sessions')).sessions[0]?.upload_session_id);
    await page.goto(`${own.url}/#/session/${id}`);
    await page.waitForSelector('tr[data-status="completed"]', { timeout: 60000 });
    const poll = await own.api(`/api/v1/photos/jobs/status?upload_session_id=${id}`);
    assert.equal(poll.waiting_for_more_photos, true, 'the API says so too');
    await page.waitForSelector('#overall .badge.waiting:has-text("waiting for more photos")');
    await page.goto(`${own.url}/#/`);
    await page.waitForSelector('ul.sessions .badge.waiting');
    await page.screenshot({ path: join(artifacts, 'session-waiting.png'), fullPage: true });
    // When no photo has come for the gap, the batch is finished.
    await page.waitForSelector('ul.sessions .badge.completed', { timeout: 30000 });
    assert.equal(await page.locator('.badge.waiting').count(), 0);
  } finally {
    own.stop();
  }
});

test('processing paused by a failing device shows on every view until the device recovers', async () => {
  const root = join(artifacts, `breaker-${Date.now()}`);
  mkdirSync(root, { recursive: true });
  const broken = join(root, 'gpu-broken');
  writeFileSync(broken, '');
  const own = await startDaemon({}, [
    '[workers]', 'breaker_threshold = 2', 'breaker_cooldown_secs = 2',
    '[runtime.faults]', `device_broken_while = ${JSON.stringify(broken)}`,
  ].join('\n'));
  const page = await browser.newPage();
  try {
    await signIn(page, own.url);
    for (let i = 0; i < 3; i++) writeFileSync(join(own.watch, `p${i}.jpg`), Buffer.concat([readFileSync(photo(1)), Buffer.from([i])]));
    await page.waitForSelector('#warnings:not([hidden]) p.warning:has-text("Processing is paused")', { timeout: 60000 });
    await page.screenshot({ path: join(artifacts, 'breaker-open.png') });
    rmSync(broken);
    await page.waitForSelector('#warnings p.warning', { state: 'detached', timeout: 60000 });
  } finally {
    own.stop();
    await page.close();
  }
});


test('a multi-class model shows per-class counts and a legend of the overlay colours on the photo', async () => {
  // tests/models/yolo-detect-v8 (models/yolo_test_models.py): 4 seedlings (the plants), 2 weeds
  // and 2 empty cells in every photo.
  const yolo = await startDaemon({ DEMETER_MODEL: join(repo, 'tests/models/yolo-detect-v8') });
  try {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await page.goto(yolo.url);
    await page.fill('#token', ADMIN_TOKEN);
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector('h1:has-text("Recent sessions")');
    copyFileSync(photo(0), join(yolo.watch, 'classes.jpg'));
    const job = await waitFor('the photo counted', async () => {
      for (const s of (await yolo.api('/api/v1/sessions')).sessions) {
        const d = await yolo.api(`/api/v1/photos/jobs/status?upload_session_id=${s.upload_session_id}`);
        const j = d.jobs.find((x) => x.filename === 'classes.jpg' && x.status === 'completed');
        if (j) return j;
      }
      return null;
    });
    await page.goto(`${yolo.url}/#/job/${job.job_id}`);
    await page.waitForSelector('.legend li');
    assert.match(await page.textContent('main'), /By classempty_cell 2, seedling 4 \(plants\), weed 2/);
    const entries = await page.$$eval('.legend li', (lis) => lis.map((li) => ({
      text: li.textContent, colour: getComputedStyle(li.querySelector('.swatch')).borderTopColor })));
    assert.deepEqual(entries, [
      { text: 'empty_cell: 2', colour: 'rgb(255, 0, 200)' },
      { text: 'seedling: 4 (plants, numbered)', colour: 'rgb(255, 230, 0)' },
      { text: 'weed: 2', colour: 'rgb(0, 90, 255)' },
    ]);
    await page.waitForFunction(() => document.querySelector('.detail img')?.complete);
    await page.screenshot({ path: join(artifacts, 'job-classes.png'), fullPage: true });
    await page.close();
  } finally {
    yolo.stop();
  }
});

test('Locations charts each bench with a point per photo at phone width; the gallery opens a photo with its boxes', async () => {
  // Its own daemon: a clean archive, and sessions swept in seconds (the archive outlives them).
  const d = await startDaemon({ DEMETER_SESSION_TTL_HOURS: '0.0005', DEMETER_JOB_TTL_HOURS: '0.001', DEMETER_SWEEP_INTERVAL_SECS: '1' });
  try {
    mkdirSync(join(d.watch, 'bench-a'));
    mkdirSync(join(d.watch, 'bench-b'));
    for (let i = 0; i < 3; i++) copyFileSync(photo(i), join(d.watch, 'bench-a', `day-${i}.jpg`));
    copyFileSync(photo(3), join(d.watch, 'bench-b', 'day-0.jpg'));
    await waitFor('four results archived', async () => (await d.api('/api/v1/results')).results.length === 4);
    await waitFor('the sessions swept', async () => (await d.api('/api/v1/sessions')).sessions.length === 0);

    const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await page.goto(d.url);
    await page.fill('#token', ADMIN_TOKEN);
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector('h1:has-text("Recent sessions")');
    await page.click('nav.views a:has-text("Locations")');
    await page.waitForSelector('section.location[data-location="bench-a"] canvas');
    const a = page.locator('section.location[data-location="bench-a"]');
    assert.equal(await a.locator('.chart').getAttribute('data-points'), '3', 'one point per photo of bench-a');
    assert.equal(await a.locator('.points tbody tr').count(), 3);
    assert.equal(await page.locator('section.location[data-location="bench-b"] .points tbody tr').count(), 1);
    const latest = (await d.api('/api/v1/series?location=bench-a')).points.at(-1).total_detected;
    assert.match(await a.locator('.count').textContent(), new RegExp(`^${latest} plants$`));
    // The chart fits the phone's width: no sideways scrolling.
    const widths = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, view: innerWidth,
      chart: document.querySelector('.chart canvas').getBoundingClientRect().width }));
    assert.ok(widths.doc <= widths.view && widths.chart > 200 && widths.chart <= widths.view, JSON.stringify(widths));
    await page.screenshot({ path: join(artifacts, 'locations-phone.png'), fullPage: true });

    // From the location to its photos; a photo opens in the lightbox, with next and previous.
    await a.locator('a:has-text("Photos of bench-a")').click();
    await page.waitForSelector('.gallery .tile');
    assert.equal(await page.locator('.gallery .tile').count(), 3);
    await page.locator('.gallery .tile').first().click();
    const box = page.locator('dialog.lightbox');
    await box.waitFor();
    const first = await box.locator('figcaption').textContent();
    assert.match(first, /plants · bench-a · taken /);
    const results = (await d.api('/api/v1/results?location=bench-a')).results;
    assert.equal(await box.locator('svg.boxes rect').count(), results[0].boxes.length, 'every plant boxed');
    await page.waitForFunction(() => document.querySelector('dialog.lightbox img')?.complete);
    await page.screenshot({ path: join(artifacts, 'gallery-lightbox-phone.png') });
    await box.locator('button:has-text("Next")').click();
    assert.notEqual(await box.locator('figcaption').textContent(), first);
    assert.match(await box.textContent(), /2 of 3/);
    await page.keyboard.press('ArrowLeft');
    assert.equal(await box.locator('figcaption').textContent(), first);
    await box.locator('button:has-text("Close")').click();
    await page.close();
  } finally {
    d.stop();
  }
});
