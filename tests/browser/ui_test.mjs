// SPDX-License-Identifier: MIT
// ui_test.mjs: the web page in Debian's Chromium (headless, driven by
// playwright-core; no browser download) against the real `imgsearch serve`
// with the tiny model and a temporary data folder.
//
//   node ui_test.mjs IMGSEARCH_EXE SOURCE_DIR ARTIFACTS_DIR
//
// What it checks: text search shows a grid of thumbnails with scores in the
// API's order; "more like this"; search by choosing a file; text + image
// with the weight slider; a "without" term; adding images by URL (from a
// loopback server) with the progress bar and per-URL errors; details
// (source, size, date) and delete; paging (load more + infinite scroll);
// keyboard use (Tab to a result, Enter opens, Escape closes and gives focus
// back); a phone-sized viewport without horizontal overflow; user-facing
// error messages. Throughout: every request the page makes goes to the
// server's own origin, and the console shows no error. Screenshots go to
// ARTIFACTS_DIR. Bounded: a watchdog ends the run; children are killed and
// the temporary folder removed on every exit path.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [exe, srcDir, artifacts] = process.argv.slice(2);
if (!exe || !srcDir || !artifacts) {
  console.error('usage: node ui_test.mjs IMGSEARCH_EXE SOURCE_DIR ARTIFACTS_DIR');
  process.exit(2);
}
const CHROMIUM = process.env.IMS_CHROMIUM || '/usr/bin/chromium';
const PAGE = 24; // app.js page size
const N_GENERATED = 30;

let passed = 0;
const failures = [];
function check(cond, what) {
  if (cond) passed++;
  else { failures.push(what); console.log(`FAIL: ${what}`); }
  return cond;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ims-ui-'));
const children = [];
let browser = null;
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
const watchdog = setTimeout(() => {
  console.log('FAIL: watchdog: the browser test took too long');
  process.exit(1);
}, 240_000);

// ---- fixtures: model, images, loopback picture server, imgsearch serve ----------------

function tinyModel(dest) {
  fs.mkdirSync(dest);
  for (const f of ['config.json', 'model.safetensors'])
    fs.copyFileSync(path.join(srcDir, 'tests/golden/clip/tiny', f), path.join(dest, f));
  for (const f of ['vocab.json', 'merges.txt'])
    fs.copyFileSync(path.join(srcDir, 'data/vocab', f), path.join(dest, f));
  return dest;
}

// Distinct small PNGs made by hostile_server.png_bytes (the integration tests' helper).
function makePngs(dir, n) {
  fs.mkdirSync(dir, { recursive: true });
  const script = 'import sys, os\nsys.path.insert(0, sys.argv[1])\nfrom hostile_server import png_bytes\n' +
    'for i in range(int(sys.argv[3])):\n' +
    '    open(os.path.join(sys.argv[2], "gen%02d.png" % i), "wb").write(png_bytes(48 + i, 40 + 2 * i, i + 1))\n';
  execFileSync('python3', ['-c', script, path.join(srcDir, 'tests/integration'), dir, String(n)]);
  return fs.readdirSync(dir).filter((f) => f.endsWith('.png')).sort().map((f) => path.join(dir, f));
}

function waitLine(child, re, what, ms = 90_000) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${buf}`)), ms);
    const on = (d) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) { clearTimeout(t); resolve(m); }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`${what} exited ${code}: ${buf}`)); });
  });
}

async function startPictures(root) {
  const log = path.join(tmp, 'pics.log');
  const c = spawn('python3', [path.join(srcDir, 'tests/integration/hostile_server.py'), '--root', root,
    '--delay-ms', '150', '--max-life', '300', '--log', log], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(c);
  const m = await waitLine(c, /PORT (\d+)/, 'picture server', 20_000);
  return { base: `http://127.0.0.1:${m[1]}`, log };
}

async function startServe(data, model) {
  const env = { ...process.env };
  delete env.IMGSEARCH_API_KEY;
  const c = spawn(exe, ['serve', '--data', data, '--model', model, '--host', '127.0.0.1', '--port', '0',
    '--allow-private-urls'], { stdio: ['ignore', 'ignore', 'pipe'], env });
  children.push(c);
  const m = await waitLine(c, /serving (http:\/\/127\.0\.0\.1:\d+)\//, 'imgsearch serve');
  return { origin: m[1], proc: c };
}

async function api(origin, p, init) {
  const r = await fetch(origin + p, init);
  const body = (r.headers.get('content-type') || '').startsWith('application/json') ? await r.json() : null;
  return { status: r.status, body };
}

async function upload(origin, files) {
  const fd = new FormData();
  for (const f of files) fd.append('file', new Blob([fs.readFileSync(f)]), path.basename(f));
  const r = await api(origin, '/api/v1/images', { method: 'POST', body: fd });
  if (r.status !== 200) throw new Error(`upload failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.images;
}

async function searchIds(origin, body) {
  const init = body instanceof FormData ? { method: 'POST', body }
    : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  const r = await api(origin, '/api/v1/search', init);
  return (r.body && r.body.results || []).map((x) => x.id);
}

// ---- page helpers --------------------------------------------------------------------------

const tileIds = (page) => page.$$eval('#results .tile img', (imgs) =>
  imgs.map((i) => Number((i.getAttribute('src').match(/images\/(\d+)\/thumb/) || [])[1])));

async function settle(page) {
  // the search message leaves "Searching…" when a page of results has arrived
  await page.waitForFunction(() => !document.getElementById('message').textContent.startsWith('Searching'),
    null, { timeout: 30_000 });
}

async function runSearchForm(page, text, neg = '') {
  await page.fill('#q', text);
  await page.fill('#neg', neg);
  const resp = page.waitForResponse((r) => r.url().endsWith('/api/v1/search'));
  await page.press('#q', 'Enter');
  await resp;
  await settle(page);
}

async function shot(page, name) {
  const p = path.join(artifacts, name);
  await page.screenshot({ path: p, fullPage: true });
  console.log(`screenshot: ${p}`);
}

// ---- the test -------------------------------------------------------------------------------

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const model = tinyModel(path.join(tmp, 'model'));
  const fixtures = path.join(srcDir, 'tests/golden/clip/images');
  const generated = makePngs(path.join(tmp, 'gen'), N_GENERATED);
  const named = ['large_1600x1200.jpg', 'baseline.jpg', 'odd_crop_225x300.png', 'rgb.png', 'lossy.webp']
    .map((f) => path.join(fixtures, f));
  const pics = await startPictures(fixtures);
  const { origin } = await startServe(path.join(tmp, 'data'), model);

  // the catalogue: 5 fixtures + 30 generated PNGs (more than one page)
  const rows = await upload(origin, [...named, ...generated]);
  check(rows.length === named.length + N_GENERATED, `${rows.length} images uploaded`);
  const idOf = Object.fromEntries(rows.map((r) => [r.url.split('/').pop(), r.id]));
  let nImages = rows.length;

  const userData = fs.mkdtempSync(path.join(tmp, 'chromium-'));
  browser = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]'], // loopback only
    viewport: { width: 1280, height: 560 }, // one page of tiles is taller than the screen
  });
  const foreign = [];
  const consoleErrors = [];
  let expectErrors = false; // set while a step provokes an HTTP error on purpose
  const watch = async (page) => {
    // requests to any other origin are recorded (a failure) and blocked
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin + '/')) return route.continue();
      foreign.push(url);
      return route.abort('blockedbyclient');
    });
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (expectErrors && /Failed to load resource: the server responded with a status of (4\d\d)/.test(m.text())) return;
      consoleErrors.push(`${m.text()} [${m.location().url}]`);
    });
    page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
    page.on('dialog', (d) => d.accept());
  };
  const page = browser.pages()[0] || await browser.newPage();
  await watch(page);

  // -- first view --------------------------------------------------------------------------
  await page.goto(origin + '/');
  await page.waitForFunction(() => /\d+ images/.test(document.getElementById('stats').textContent));
  check((await page.textContent('#stats')).startsWith(`${nImages} images`), 'header shows the image count');
  check(await page.evaluate(() => document.activeElement.id === 'q'), 'the search box has focus on load');
  await shot(page, '01-empty.png');
  await page.click('button[type=submit].primary');
  check((await page.textContent('#message')).length > 0, 'an empty search explains what to do');

  // -- text search ------------------------------------------------------------------------------
  await runSearchForm(page, 'a red bicycle by the sea');
  let ids = await tileIds(page);
  const apiText = await searchIds(origin, { text: 'a red bicycle by the sea', k: nImages });
  check(ids.length === PAGE, `first page shows ${PAGE} tiles (${ids.length})`);
  check(JSON.stringify(ids) === JSON.stringify(apiText.slice(0, PAGE)), 'tiles in the API order');
  const scores = await page.$$eval('#results .tile .score', (s) => s.map((x) => x.textContent));
  check(scores.length === ids.length && scores.every((s) => /^-?\d\.\d\d$/.test(s)), 'every tile shows a score');
  await page.waitForFunction(() => [...document.querySelectorAll('#results img')].slice(0, 6)
    .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 15_000 });
  check(/\d+ results for/.test(await page.textContent('#message')), 'the result count is shown');
  check(await page.isVisible('#more'), 'a "Load more" button while more results exist');
  await shot(page, '02-text-search.png');

  // -- paging: load more, then infinite scroll -----------------------------------------------------
  // a DOM click: scrolling to the button would trigger infinite scroll first
  await page.$eval('#more', (b) => b.click());
  await page.waitForFunction((n) => document.querySelectorAll('#results li').length > n, PAGE);
  await settle(page);
  ids = await tileIds(page);
  check(ids.length === nImages, `after load more: all ${nImages} tiles (${ids.length})`);
  check(new Set(ids).size === ids.length, 'no tile twice');
  check(JSON.stringify(ids) === JSON.stringify(apiText), 'page 2 continues page 1 in the API order');
  check(!(await page.isVisible('#more')), 'no "Load more" once the results are exhausted');
  await runSearchForm(page, 'a mountain lake');
  check((await tileIds(page)).length === PAGE, 'a new search starts at one page');
  const more = page.waitForResponse((r) => r.url().endsWith('/api/v1/search'));
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await more;
  await page.waitForFunction((n) => document.querySelectorAll('#results li').length > n, PAGE);
  check((await tileIds(page)).length === nImages, 'scrolling to the end loads the next page');

  // -- keyboard: Tab to a result, Enter opens, Escape closes -------------------------------------------
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.focus('#q');
  let onTile = false;
  for (let i = 0; i < 40 && !onTile; i++) {
    await page.keyboard.press('Tab');
    onTile = await page.evaluate(() => document.activeElement.classList.contains('tile'));
  }
  check(onTile, 'Tab reaches a result tile');
  const focusedLabel = await page.evaluate(() => document.activeElement.getAttribute('aria-label'));
  check(/^Image \d+, score/.test(focusedLabel || ''), `the tile has a spoken label (${focusedLabel})`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#details[open]');
  check(true, 'Enter opens the details');
  await page.waitForFunction(() => document.getElementById('details-date').textContent !== '');
  await shot(page, '03-details.png');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#details:not([open])', { state: 'attached' });
  check(await page.evaluate((l) => document.activeElement.getAttribute('aria-label') === l, focusedLabel),
    'Escape closes the details and gives focus back to the tile');

  // -- details: source, size, date -----------------------------------------------------------------------
  const large = idOf['large_1600x1200.jpg'];
  await runSearchForm(page, 'a photo');
  let tile = page.locator(`#results .tile:has(img[src="/api/v1/images/${large}/thumb"])`);
  if (!(await tile.count())) {
    await page.$eval('#more', (b) => b.click());
    await page.waitForFunction((n) => document.querySelectorAll('#results li').length > n, PAGE);
    await settle(page);
  }
  tile = page.locator(`#results .tile:has(img[src="/api/v1/images/${large}/thumb"])`);
  await tile.click();
  await page.waitForSelector('#details[open]');
  await page.waitForFunction(() => document.getElementById('details-date').textContent !== '');
  check((await page.textContent('#details-src')).includes('large_1600x1200.jpg'), 'details show the source');
  check((await page.textContent('#details-size')) === '1600 × 1200', 'details show the size');
  const date = await page.textContent('#details-date');
  check(!Number.isNaN(Date.parse(date)) || /\d{4}|\d{1,2}[/.]\d{1,2}/.test(date), `details show the date (${date})`);
  check((await page.textContent('#details-title')) === `Image ${large}`, 'details title names the id');

  // -- more like this ---------------------------------------------------------------------------------------
  await page.click('#details-like');
  await page.waitForSelector('#details:not([open])', { state: 'attached' });
  await settle(page);
  ids = await tileIds(page);
  check(ids[0] === large, 'more like this: the image itself first');
  check((await page.textContent('#results li:first-child .score')) === '1.00', 'more like this: score 1.00');
  check(JSON.stringify(ids) === JSON.stringify((await searchIds(origin, { image_id: large, k: PAGE }))),
    'more like this == the API\'s image_id search');

  // -- delete from the details --------------------------------------------------------------------------------
  const victim = ids[1];
  await page.click(`#results .tile:has(img[src="/api/v1/images/${victim}/thumb"])`);
  await page.waitForSelector('#details[open]');
  await page.click('#details-delete');
  await page.waitForSelector('#details:not([open])', { state: 'attached' });
  await page.waitForFunction((v) => !document.querySelector(`#results img[src="/api/v1/images/${v}/thumb"]`), victim);
  check((await page.textContent('#message')).includes(`Deleted image ${victim}`), 'delete confirms in the message');
  check((await api(origin, `/api/v1/images/${victim}`)).status === 404, 'the deleted image is gone from the API');
  nImages--;
  await page.waitForFunction((n) => document.getElementById('stats').textContent.startsWith(`${n} images`), nImages);
  check(true, 'the header count follows the delete');

  // -- search by choosing a file ---------------------------------------------------------------------------------
  await page.fill('#q', '');
  await page.fill('#neg', '');
  const choose = page.waitForResponse((r) => r.url().endsWith('/api/v1/search'));
  await page.setInputFiles('#file', path.join(fixtures, 'odd_crop_225x300.png'));
  await choose;
  await settle(page);
  ids = await tileIds(page);
  check(ids[0] === idOf['odd_crop_225x300.png'], 'search by a chosen file: the same image first');
  check((await page.textContent('#results li:first-child .score')) === '1.00', 'its score is 1.00');
  check(await page.isVisible('#mix'), 'the text/image weight slider appears with a query image');
  check((await page.textContent('#file-name')) === 'odd_crop_225x300.png', 'the chosen file is named');
  await shot(page, '04-image-search.png');

  // -- text + image with the weight slider --------------------------------------------------------------------------
  await page.fill('#q', 'a grey cat');
  // Chromium does not hand out multipart bodies holding a file: record the
  // form's text fields as the page passes them to fetch()
  await page.evaluate(() => {
    const orig = window.fetch;
    window.fetch = (url, init) => {
      if (init && init.body instanceof FormData)
        window.sentForm = Object.fromEntries([...init.body.entries()].filter(([, v]) => typeof v === 'string'));
      return orig(url, init);
    };
  });
  const weightedResp = page.waitForResponse((r) => r.url().endsWith('/api/v1/search'));
  await page.$eval('#weight', (w) => { w.value = '80'; w.dispatchEvent(new Event('change')); });
  await weightedResp;
  await settle(page);
  const form = await page.evaluate(() => window.sentForm || {});
  check(form.text === 'a grey cat', 'the slider search sends the text');
  check(Math.abs(Number(form.text_weight) - 0.2) < 1e-9 && Math.abs(Number(form.file_weight) - 0.8) < 1e-9,
    `slider at 80 sends text 0.2 / image 0.8 (${form.text_weight} / ${form.file_weight})`);
  const fd = new FormData();
  fd.append('file', new Blob([fs.readFileSync(path.join(fixtures, 'odd_crop_225x300.png'))]), 'q.png');
  fd.append('text', 'a grey cat');
  fd.append('text_weight', '0.2');
  fd.append('file_weight', '0.8');
  fd.append('k', String(PAGE));
  check(JSON.stringify(await tileIds(page)) === JSON.stringify(await searchIds(origin, fd)),
    'text + image tiles == the API\'s answer for the same weights');
  await shot(page, '05-text-plus-image.png');

  // -- a "without" term ---------------------------------------------------------------------------------------------
  await page.click('#file-clear');
  check(!(await page.isVisible('#mix')), 'removing the query image hides the slider');
  const negReq = page.waitForRequest((r) => r.url().endsWith('/api/v1/search'));
  await runSearchForm(page, 'a photo', 'people');
  const sent = JSON.parse((await negReq).postData());
  check(JSON.stringify(sent.terms) === JSON.stringify([{ text: 'a photo', weight: 1 }, { text: 'people', weight: -0.5 }]),
    `"without" sends a negative term (${JSON.stringify(sent.terms)})`);
  check(JSON.stringify(await tileIds(page)) === JSON.stringify(await searchIds(origin, { terms: sent.terms, k: PAGE })),
    '"without" tiles == the API\'s answer');

  // -- add images by URL, with progress and errors ------------------------------------------------------------
  await page.click('details.add summary');
  const good = ['plain.bmp', 'palette.png', 'grey.jpg', 'rgba.png'].map((f) => `${pics.base}/files/${f}`);
  const bad = `${pics.base}/404`;
  await page.fill('#urls', [...good, bad].join('\n'));
  const statuses = new Set();
  const poll = setInterval(() => {
    page.textContent('#job-status').then((t) => statuses.add(t)).catch(() => {});
  }, 100);
  await page.click('#add button[type=submit]');
  await page.waitForFunction(() => /: (done|failed) ·/.test(document.getElementById('job-status').textContent),
    null, { timeout: 60_000 });
  clearInterval(poll);
  const status = await page.textContent('#job-status');
  check(status.includes(`${good.length} added, 1 failed of ${good.length + 1}`), `job summary (${status})`);
  check(await page.isVisible('#progress'), 'the progress bar is shown');
  check(await page.$eval('#progress', (p) => p.value === p.max && p.max === 5), 'the bar is full at the end');
  const errs = await page.$$eval('#job-errors li', (l) => l.map((x) => x.textContent));
  check(errs.length === 1 && errs[0].startsWith(bad) && /404/.test(errs[0]), `the failed URL and why (${errs})`);
  // (not asserted: whether a poll lands while the job runs depends on timing)
  console.log(`job statuses seen: ${[...statuses].join(' | ')}`);
  nImages += good.length;
  await page.waitForFunction((n) => document.getElementById('stats').textContent.startsWith(`${n} images`), nImages);
  check(true, 'the header count follows the job');
  await shot(page, '06-add-urls.png');

  // -- errors shown to the user ---------------------------------------------------------------------------------------
  expectErrors = true;
  await page.fill('#urls', 'ftp://example.invalid/x.jpg');
  await page.click('#add button[type=submit]');
  await page.waitForFunction(() => document.getElementById('job-status').textContent.startsWith('Could not add') ||
    /failed of 1/.test(document.getElementById('job-status').textContent), null, { timeout: 30_000 });
  const errText = await page.textContent('#job-status');
  check(errText.length > 20, `a bad URL is explained (${errText})`);
  check(await page.$eval('#job-status', (e) => e.classList.contains('error') &&
    getComputedStyle(e).color !== getComputedStyle(document.body).color), 'the error is shown as an error');
  check(!(await page.isVisible('#progress')), 'the previous job\'s progress bar is gone');
  await shot(page, '07-add-error.png');
  expectErrors = false;

  // -- a screen taller than one page: infinite scroll goes on by itself ----------------------------------
  const tall = await browser.newPage();
  await watch(tall);
  await tall.setViewportSize({ width: 1280, height: 1600 });
  await tall.goto(origin + '/');
  await runSearchForm(tall, 'a red bicycle by the sea');
  await tall.waitForFunction((n) => document.querySelectorAll('#results li').length === n, nImages, { timeout: 30_000 })
    .catch(() => {});
  check((await tileIds(tall)).length === nImages,
    `a tall screen loads every page without scrolling (${(await tileIds(tall)).length} of ${nImages})`);
  await tall.close();

  // -- phone-sized viewport ----------------------------------------------------------------------------------------------
  const phone = await browser.newPage();
  await watch(phone);
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(origin + '/');
  await runSearchForm(phone, 'a red bicycle by the sea');
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 390, `no horizontal scrolling at 390 px (${overflow})`);
  const cols = await phone.$$eval('#results li', (l) => new Set(l.slice(0, 6).map((x) => x.getBoundingClientRect().left)).size);
  check(cols === 2, `two columns of tiles on a phone (${cols})`);
  await phone.screenshot({ path: path.join(artifacts, '08-phone.png') });
  console.log(`screenshot: ${path.join(artifacts, '08-phone.png')}`);
  await phone.locator('#results .tile').first().click();
  await phone.waitForSelector('#details[open]');
  const box = await phone.$eval('#details', (d) => d.getBoundingClientRect().right);
  check(box <= 390, `the details fit the phone screen (${box})`);
  await phone.screenshot({ path: path.join(artifacts, '09-phone-details.png') });
  await phone.close();

  // -- over the whole run --------------------------------------------------------------------------------------------------
  check(foreign.length === 0, `every request went to ${origin} (others: ${foreign.slice(0, 5).join(', ')})`);
  check(consoleErrors.length === 0, `no console errors (${consoleErrors.slice(0, 5).join(' | ')})`);
}

let code = 0;
try {
  await main();
} catch (e) {
  console.log(`FAIL: ${e.stack || e}`);
  failures.push(String(e));
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
console.log(`${passed} passed, ${failures.length} failed`);
code = failures.length ? 1 : 0;
cleanup();
process.exit(code);
