// SPDX-License-Identifier: MIT
// filters_test.mjs: the web page's search filters, near-duplicates and tags
// (issue 10 item 8) in Debian's Chromium against the real `imgsearch serve`
// (tiny model) over a library added with `imgsearch add` from
// make_library.py (two folders; JPEG, PNG, WebP, HEIC; known sizes and EXIF
// dates; three near-identical pictures).
//
//   node filters_test.mjs IMGSEARCH_EXE SOURCE_DIR ARTIFACTS_DIR
//
// What it checks, at a desktop width and at 390 px:
// - the Filters panel opens from the keyboard (focus goes into it) and
//   Escape closes it (focus back on its button);
// - formats, date taken, orientation + minimum size, folder: the search
//   request carries the filter (also a search by an uploaded image, in the
//   form's "filter" field), the page URL carries the API's GET names,
//   and the tiles are exactly the API's GET answer for that URL and the
//   images the library says match; Back and Forward restore the controls
//   and the results; a shared URL opens with the controls set;
// - no match: the "no results match these filters" state and its Clear;
//   an API 400 is shown next to its control (aria-invalid);
// - the near-duplicates switch sends dedup=0.95, shows the API's answer and
//   a "+N similar" badge that expands to the folded ids; the duplicates
//   view shows the API's groups and follows its threshold slider; Escape
//   closes it;
// - tags: the tags filter, and adding/removing tags in the details (with
//   the API key the page sends for writes; a refusal without it is shown);
// - on a server without tags/dedup/duplicates the page hides those;
// - no horizontal overflow at 390 px; every request to the server's own
//   origin; no console error. Screenshots go to ARTIFACTS_DIR.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { harness } from './harness.mjs';

const [exe, srcDir, artifacts] = process.argv.slice(2);
if (!exe || !srcDir || !artifacts) {
  console.error('usage: node filters_test.mjs IMGSEARCH_EXE SOURCE_DIR ARTIFACTS_DIR');
  process.exit(2);
}
const CHROMIUM = process.env.IMS_CHROMIUM || '/usr/bin/chromium';
const KEY = 'browser-test-key-0123456789';
const QUERY = 'a photo';
const h = harness('filters', 240_000);
const { check } = h;

const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const sorted = (a) => [...a].sort((x, y) => x - y);

async function api(origin, p, init) {
  const r = await fetch(origin + p, init);
  const body = (r.headers.get('content-type') || '').startsWith('application/json') ? await r.json() : null;
  return { status: r.status, body };
}

const tileIds = (page) => page.$$eval('#results > li:not(.folded) .tile img', (imgs) =>
  imgs.map((i) => Number((i.getAttribute('src').match(/images\/(\d+)\/thumb/) || [])[1])));

const isSearch = (r) => {
  const req = typeof r.request === 'function' ? r.request() : r;
  return req.url().endsWith('/api/v1/search') && req.method() === 'POST';
};

// Runs `action` (which starts a search) and returns the JSON body the page
// sent (null for a multipart one), after the answer is on the page.
async function pageSearch(page, action) {
  const req = page.waitForRequest(isSearch);
  const resp = page.waitForResponse(isSearch);
  await action();
  // a JSON body; an image search sends multipart (the caller reads its form)
  const r = await req;
  const sent = (r.headers()['content-type'] || '').startsWith('application/json')
    ? JSON.parse(r.postData()) : null;
  await resp;
  await page.waitForFunction(() => !document.getElementById('message').textContent.startsWith('Searching'),
    null, { timeout: 30_000 });
  return sent;
}

// The API's GET answer for the search the page URL describes (its filter
// parameters are the API's names), k = one page.
async function getForPageUrl(origin, page) {
  const p = new URL(page.url()).searchParams;
  for (const k of ['neg', 'like', 'view', 'threshold', 'dedup']) p.delete(k);
  p.set('k', '24');
  const r = await api(origin, `/api/v1/search?${p}`);
  return r.status === 200 ? r.body.results : null;
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const model = h.tinyModel(srcDir, path.join(h.tmp, 'model'));
  const lib = path.join(h.tmp, 'lib');
  execFileSync('python3', [path.join(srcDir, 'tests/browser/make_library.py'), srcDir, lib]);
  const data = path.join(h.tmp, 'data');
  execFileSync(exe, ['add', '--data', data, '--model', model, lib], { stdio: ['ignore', 'ignore', 'pipe'] });
  const origin = await h.startServe(exe, data, model, KEY);

  // the library as the API lists it: name -> row
  const all = (await api(origin, '/api/v1/search', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ text: QUERY, k: 100 }),
  })).body.results;
  check(all.length === 21, `21 images in the library (${all.length})`);
  const byName = Object.fromEntries(all.map((r) => [path.basename(r.url), r]));
  const idOf = (n) => byName[n].id;
  const idsWhere = (pred) => sorted(all.filter(pred).map((r) => r.id));

  // what the server supports of the newer API (tags, dedup, duplicates)
  const probeTags = await api(origin, `/api/v1/images/${idOf('rgb.png')}/tags`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ add: [], remove: [] }),
  });
  const hasTags = probeTags.status === 200;
  const dupsProbe = await api(origin, '/api/v1/duplicates?threshold=0.95');
  const hasDups = dupsProbe.status === 200;
  const hasDedup = (await api(origin, '/api/v1/search', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ text: QUERY, k: 5, dedup: 0.95 }),
  })).status === 200;
  console.log(`server has: tags ${hasTags}, dedup ${hasDedup}, duplicates ${hasDups}`);
  // the page degrades on an older server, but this repository's server has
  // all three: a broken one must fail here, not take the degraded branches
  check(hasTags && hasDedup && hasDups,
        `this server answers tags (${probeTags.status}), dedup and duplicates (${dupsProbe.status})`);

  await h.launch(CHROMIUM, { width: 1280, height: 900 });
  const page = h.browser.pages()[0] || await h.browser.newPage();
  await h.watch(page, origin);
  await page.goto(origin + '/');
  await page.waitForFunction(() => /\d+ images/.test(document.getElementById('stats').textContent));
  await pageSearch(page, async () => { await page.fill('#q', QUERY); await page.press('#q', 'Enter'); });
  check((await tileIds(page)).length === 21, 'an unfiltered search shows the whole library');

  // -- the panel from the keyboard ----------------------------------------------------------------------
  check(await page.isHidden('#filters'), 'the filters panel starts closed');
  await page.focus('#filters-toggle');
  await page.keyboard.press('Enter');
  check(await page.isVisible('#filters'), 'Enter on "Filters" opens the panel');
  check(await page.getAttribute('#filters-toggle', 'aria-expanded') === 'true', 'the button says it is expanded');
  check(await page.evaluate(() => document.activeElement.id === 'f-date-kind'), 'focus moves into the panel');
  await page.keyboard.press('Escape');
  check(await page.isHidden('#filters'), 'Escape closes the panel');
  check(await page.evaluate(() => document.activeElement.id === 'filters-toggle'), 'focus goes back to "Filters"');
  await page.click('#filters-toggle');
  // every control has a label
  const unlabelled = await page.$$eval('#filters input, #filters select', (els) =>
    els.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.id || e.name));
  check(unlabelled.length === 0, `every filter control is labelled (${unlabelled})`);

  // -- formats ----------------------------------------------------------------------------------------------
  let sent = await pageSearch(page, () => page.check('#f-formats input[value=heic]'));
  check(eq(sent.filter, { format: ['heic'] }), `HEIC: the request's filter (${JSON.stringify(sent.filter)})`);
  sent = await pageSearch(page, () => page.check('#f-formats input[value=png]'));
  check(eq(sent.filter, { format: ['png', 'heic'] }), `PNG + HEIC: the request's filter (${JSON.stringify(sent.filter)})`);
  check(new URL(page.url()).searchParams.get('format') === 'png,heic', `the page URL has format=png,heic (${page.url()})`);
  check(new URL(page.url()).searchParams.get('q') === QUERY, 'the page URL has the query');
  let ids = await tileIds(page);
  const pngHeic = idsWhere((r) => r.format === 'png' || r.format === 'heic');
  check(eq(sorted(ids), pngHeic), `PNG + HEIC: exactly the PNG and HEIC images (${ids.length} of ${pngHeic.length})`);
  check(eq(ids, (await getForPageUrl(origin, page)).map((r) => r.id)), 'PNG + HEIC: tiles == the API GET of the page URL');
  check(await page.textContent('#filters-count') === ' (1)', 'the button counts the active filters');

  // -- date taken -------------------------------------------------------------------------------------------
  // each change re-runs the search: wait for each, so the request read
  // below is the one sent after the last change (not a late earlier one)
  await pageSearch(page, () => page.selectOption('#f-date-kind', 'taken'));
  await pageSearch(page, () => page.fill('#f-from', '2024-05-17'));
  sent = await pageSearch(page, () => page.fill('#f-to', '2024-05-17'));
  check(eq(sent.filter.taken, { from: '2024-05-17', to: '2024-05-17' }), `taken: the request (${JSON.stringify(sent.filter)})`);
  const dateUrl = page.url();
  const u = new URL(dateUrl).searchParams;
  check(u.get('taken_from') === '2024-05-17' && u.get('taken_to') === '2024-05-17', `the page URL has the dates (${dateUrl})`);
  ids = await tileIds(page);
  const takenThatDay = sorted([idOf('exif.png'), idOf('quad_exif.heic')]);
  check(eq(sorted(ids), takenThatDay), `taken 2024-05-17: the two photos with that EXIF date (${ids})`);
  check(eq(ids, (await getForPageUrl(origin, page)).map((r) => r.id)), 'taken: tiles == the API GET of the page URL');
  await h.shot(page, artifacts, 'f01-filters-desktop.png');
  // the details of a photo with EXIF: date taken, format, camera
  await page.click(`#results .tile:has(img[src="/api/v1/images/${idOf('exif.png')}/thumb"])`);
  await page.waitForSelector('#details[open]');
  await page.waitForFunction(() => document.getElementById('details-camera').textContent !== '');
  check(await page.textContent('#details-camera') === 'TestCam Phone 1', 'details: the camera make and model');
  check(await page.textContent('#details-format') === 'PNG', 'details: the format');
  const taken = await page.textContent('#details-taken');
  check(new Date(taken).getTime() === 1715949000 * 1000 || /2024/.test(taken), `details: the date taken (${taken})`);
  check(await page.textContent('#details-size') === '48 × 64', 'details: the upright size');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#details:not([open])', { state: 'attached' });
  check(await page.isVisible('#filters'), 'Escape closed the details, not the filters');

  // -- Back and Forward ---------------------------------------------------------------------------------
  // each change was a step: Back first drops the "to" date, then the "from" date
  await pageSearch(page, () => page.goBack());
  check(await page.inputValue('#f-from') === '2024-05-17' && await page.inputValue('#f-to') === '',
    'Back: the step before (only the "from" date)');
  check(eq(await tileIds(page), (await getForPageUrl(origin, page)).map((r) => r.id)), 'Back: tiles == the API GET of the URL');
  await pageSearch(page, () => page.goBack());
  check(await page.inputValue('#f-from') === '' && await page.inputValue('#f-to') === '', 'Back again: no dates');
  check(await page.isChecked('#f-formats input[value=png]') && await page.isChecked('#f-formats input[value=heic]'),
    'Back: the formats stay');
  check(eq(sorted(await tileIds(page)), pngHeic), 'Back: the PNG + HEIC results again');
  await pageSearch(page, () => page.goForward());
  await pageSearch(page, () => page.goForward());
  check(page.url() === dateUrl, 'Forward twice: the URL with both dates');
  check(await page.inputValue('#f-from') === '2024-05-17' && await page.inputValue('#f-to') === '2024-05-17',
    'Forward: the dates come back');
  check(eq(sorted(await tileIds(page)), takenThatDay), 'Forward: the results of that day again');

  // -- clear, then orientation + minimum size --------------------------------------------------------------
  await pageSearch(page, () => page.click('#filters-clear'));
  check(await page.textContent('#filters-count') === '', 'Clear filters: no filter counted');
  check((await tileIds(page)).length === 21, 'Clear filters: the whole library again');
  check(!new URL(page.url()).searchParams.has('format'), 'Clear filters: the URL has no filter');
  await pageSearch(page, () => page.selectOption('#f-orientation', 'portrait'));
  await page.fill('#f-min-height', '100');
  sent = await pageSearch(page, () => page.press('#f-min-height', 'Enter'));
  check(eq(sent.filter, { orientation: 'portrait', min_height: 100 }), `portrait, 100 px high: the request (${JSON.stringify(sent.filter)})`);
  ids = await tileIds(page);
  const tallOnes = idsWhere((r) => r.height > r.width && r.height >= 100);
  check(tallOnes.length === 2 && eq(sorted(ids), tallOnes), `portrait, >= 100 px high: ${ids} (expected ${tallOnes})`);
  check(eq(ids, (await getForPageUrl(origin, page)).map((r) => r.id)), 'portrait: tiles == the API GET of the page URL');

  // -- folder -------------------------------------------------------------------------------------------------
  await page.click('#filters-clear');
  const trip = path.join(lib, 'trip') + path.sep;
  await page.fill('#f-folder', trip);
  sent = await pageSearch(page, () => page.press('#f-folder', 'Enter'));
  check(sent.filter.source_prefix === trip, 'folder: the request carries the prefix');
  ids = await tileIds(page);
  const inTrip = idsWhere((r) => r.url.startsWith(trip));
  check(inTrip.length === 5 && eq(sorted(ids), inTrip), `folder: the 5 images under trip/ (${ids})`);
  check(eq(ids, (await getForPageUrl(origin, page)).map((r) => r.id)), 'folder: tiles == the API GET of the page URL');

  // -- a shared URL opens with the controls set ------------------------------------------------------------
  const shared = await h.browser.newPage();
  await h.watch(shared, origin);
  const sharedUrl = `${origin}/?q=${encodeURIComponent(QUERY)}&format=jpeg%2Cwebp&min_width=700&source_prefix=${encodeURIComponent(trip)}`;
  await pageSearch(shared, () => shared.goto(sharedUrl));
  check(await shared.inputValue('#q') === QUERY, 'shared URL: the query box is filled');
  check(await shared.isChecked('#f-formats input[value=jpeg]') && await shared.isChecked('#f-formats input[value=webp]') &&
    !(await shared.isChecked('#f-formats input[value=png]')), 'shared URL: the format boxes are set');
  check(await shared.inputValue('#f-min-width') === '700' && await shared.inputValue('#f-folder') === trip,
    'shared URL: size and folder are set');
  check(eq(sorted(await tileIds(shared)), sorted([idOf('large_1600x1200.jpg'), idOf('lossy.webp')])),
    'shared URL: its results (the JPEG and the WebP of trip/, both >= 700 px wide)');
  await shared.close();

  // -- a search by an uploaded image takes the filters too (the form's "filter" field) ----------------
  await page.click('#filters-clear');
  await page.evaluate(() => {
    const orig = window.fetch;
    window.fetch = (url, init) => {
      if (init && init.body instanceof FormData)
        window.sentForm = Object.fromEntries([...init.body.entries()].filter(([, v]) => typeof v === 'string'));
      return orig(url, init);
    };
  });
  await pageSearch(page, () => page.check('#f-formats input[value=heic]'));
  await page.fill('#q', '');
  await pageSearch(page, () => page.setInputFiles('#file', path.join(lib, 'home', 'rgb.png')));
  const form = await page.evaluate(() => window.sentForm || {});
  check(eq(JSON.parse(form.filter || 'null'), { format: ['heic'] }), `image search: the form's filter (${form.filter})`);
  check(eq(sorted(await tileIds(page)), idsWhere((r) => r.format === 'heic')), 'image search: only the HEIC images');
  await page.click('#file-clear');
  await page.fill('#q', QUERY);
  await pageSearch(page, () => page.click('#filters-clear'));

  // -- nothing matches ---------------------------------------------------------------------------------------
  await page.fill('#f-min-width', '5000');
  await pageSearch(page, () => page.press('#f-min-width', 'Enter'));
  check(await page.isVisible('#empty'), 'no match: the empty state is shown');
  check((await page.textContent('#empty')).includes('No results match these filters'), 'no match: it says so');
  check((await tileIds(page)).length === 0, 'no match: no tiles');
  await h.shot(page, artifacts, 'f02-no-match.png');
  await pageSearch(page, () => page.click('#empty-clear'));
  check(await page.isHidden('#empty') && (await tileIds(page)).length === 21, 'its "Clear filters" brings the results back');

  // -- an API 400 next to its control -------------------------------------------------------------------------
  h.expectErrors = true;
  await page.fill('#f-min-width', '2000000000');
  await pageSearch(page, () => page.press('#f-min-width', 'Enter'));
  const sizeErr = await page.textContent('#f-size-err');
  check(/min_width/.test(sizeErr) && await page.isVisible('#f-size-err'), `the API's message by the size fields (${sizeErr})`);
  check(await page.getAttribute('#f-min-width', 'aria-invalid') === 'true', 'the width field is marked invalid');
  check(await page.textContent('#f-date-err') === '', 'no message by the other controls');
  await h.shot(page, artifacts, 'f03-field-error.png');
  await pageSearch(page, () => page.click('#filters-clear'));
  check(await page.textContent('#f-size-err') === '' && !(await page.getAttribute('#f-min-width', 'aria-invalid')),
    'clearing removes the message');

  // -- tags filter -----------------------------------------------------------------------------------------------
  if (hasTags) {
    for (const n of ['exif.png', 'baseline.jpg'])
      await api(origin, `/api/v1/images/${idOf(n)}/tags`, {
        method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ add: ['Trip'] }),
      });
  }
  await page.fill('#f-tags', ' trip, ,TRIP ');
  sent = await pageSearch(page, () => page.press('#f-tags', 'Enter'));
  check(eq(sent.filter, { tags: ['trip'] }), `tags: the request's filter (${JSON.stringify(sent.filter)})`);
  check(eq(new URL(page.url()).searchParams.getAll('tag'), ['trip']), 'tags: the page URL has tag=trip');
  if (hasTags) {
    check(eq(sorted(await tileIds(page)), sorted([idOf('exif.png'), idOf('baseline.jpg')])), 'tags: the tagged images');
    check(eq(await tileIds(page), (await getForPageUrl(origin, page)).map((r) => r.id)), 'tags: tiles == the API GET');
  } else {
    const tagErr = await page.textContent('#f-tags-err');
    check(/tags/.test(tagErr), `tags: a server without tags says so by the tags field (${tagErr})`);
  }
  await pageSearch(page, () => page.click('#filters-clear'));
  h.expectErrors = false;
  await page.keyboard.press('Escape');
  check(await page.isHidden('#filters'), 'Escape closes the panel');

  // -- near-duplicates switch ------------------------------------------------------------------------------------
  const nearIds = ['near0.png', 'near1.png', 'near2.png'].map(idOf);
  if (hasDedup) {
    sent = await pageSearch(page, () => page.check('#dedup'));
    check(sent.dedup === 0.95, `the switch sends dedup 0.95 (${sent.dedup})`);
    check(new URL(page.url()).searchParams.get('dedup') === '0.95', 'the page URL has dedup=0.95');
    const want = (await api(origin, '/api/v1/search', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ text: QUERY, k: 24, dedup: 0.95 }),
    })).body.results;
    ids = await tileIds(page);
    check(eq(ids, want.map((r) => r.id)), 'dedup: tiles == the API answer');
    const kept = want.find((r) => nearIds.includes(r.id));
    check(kept && eq(sorted(kept.duplicates || []), sorted(nearIds.filter((i) => i !== kept.id))),
      `dedup: one of the three near-duplicates is kept with the other two folded (${JSON.stringify(kept)})`);
    const badge = page.locator(`#results > li:has(img[src="/api/v1/images/${kept.id}/thumb"]) .similar`);
    check((await badge.textContent()) === '+2 similar', 'the kept tile has a "+2 similar" badge');
    const badges = await page.$$eval('#results .similar', (b) => b.map((x) => x.textContent));
    check(badges.length === want.filter((r) => (r.duplicates || []).length).length, `one badge per row with duplicates (${badges})`);
    await badge.focus();
    await page.keyboard.press('Enter');
    const folded = await page.$$eval(`#results li.folded[data-of="${kept.id}"] img`, (imgs) =>
      imgs.map((i) => Number(i.getAttribute('src').match(/images\/(\d+)\/thumb/)[1])));
    check(eq(folded, kept.duplicates), `the badge expands to the folded ids (${folded})`);
    check(await badge.getAttribute('aria-expanded') === 'true', 'the badge says it is expanded');
    await h.shot(page, artifacts, 'f04-dedup-expanded.png');
    await badge.click();
    check(await page.locator('#results li.folded').count() === 0, 'a second press folds them again');
    await pageSearch(page, () => page.uncheck('#dedup'));
    check((await tileIds(page)).length === 21, 'switching it off shows every image again');
  } else {
    h.expectErrors = true;
    // the refused search (400), then the same search without dedup (200)
    const refused = page.waitForResponse((r) => isSearch(r) && r.status() === 400);
    const rerun = page.waitForResponse((r) => isSearch(r) && r.status() === 200);
    await page.click('#dedup');
    check(JSON.parse((await refused).request().postData()).dedup === 0.95, 'the switch sends dedup 0.95');
    check(JSON.parse((await rerun).request().postData()).dedup === undefined, 'then the search again without it');
    await page.waitForFunction(() => !document.getElementById('message').textContent.startsWith('Searching'));
    check(await page.isHidden('#dedup-label'), 'a server without dedup: the switch hides itself');
    check((await tileIds(page)).length === 21, 'and the search runs without it');
    h.expectErrors = false;
  }

  // -- duplicates view -------------------------------------------------------------------------------------------
  const isDups = (r) => r.url().includes('/api/v1/duplicates?');
  if (hasDups) {
    let req = page.waitForRequest(isDups);
    await page.click('#dups-open');
    check(new URL((await req).url()).searchParams.get('threshold') === '0.950', 'the view asks for threshold 0.950');
    await page.waitForFunction(() => /group|No near/.test(document.getElementById('dups-status').textContent));
    check(await page.isVisible('#dups') && await page.isHidden('#results'), 'the view replaces the results');
    check(new URL(page.url()).searchParams.get('view') === 'duplicates', 'the page URL names the view');
    const want = (await api(origin, '/api/v1/duplicates?threshold=0.950')).body.groups;
    const shown = await page.$$eval('#dups-groups > li', (gs) => gs.map((g) =>
      [...g.querySelectorAll('img')].map((i) => Number(i.getAttribute('src').match(/images\/(\d+)\/thumb/)[1]))));
    check(eq(shown, want.map((g) => g.ids)), `the groups == the API's (${JSON.stringify(shown)})`);
    check(want.some((g) => eq(sorted(g.ids), sorted(nearIds))), 'the three near-duplicates form a group');
    await h.shot(page, artifacts, 'f05-duplicates.png');
    // the slider from the keyboard: End = its maximum
    req = page.waitForRequest(isDups);
    await page.focus('#dups-threshold');
    await page.keyboard.press('End');
    check(new URL((await req).url()).searchParams.get('threshold') === '0.999', 'the slider asks again at 0.999');
    await page.waitForFunction(() => document.getElementById('dups-status').textContent.includes('0.999'));
    const want2 = (await api(origin, '/api/v1/duplicates?threshold=0.999')).body.groups;
    check(await page.locator('#dups-groups > li').count() === want2.length, 'the groups follow the slider');
    check(new URL(page.url()).searchParams.get('threshold') === '0.999', 'the page URL has the threshold');
    // a thumbnail opens the details
    await page.click('#dups-groups .thumb');
    await page.waitForSelector('#details[open]');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#details:not([open])', { state: 'attached' });
    await page.keyboard.press('Escape');
    check(await page.isHidden('#dups') && await page.isVisible('#results'), 'Escape closes the view');
    check(await page.evaluate(() => document.activeElement.id === 'dups-open'), 'focus back on "Duplicates"');
  } else {
    h.expectErrors = true;
    await page.click('#dups-open');
    if (dupsProbe.status === 404) {
      await page.waitForFunction(() => document.getElementById('dups-open').hidden, null, { timeout: 10_000 });
      check(await page.isHidden('#dups'), 'a server without the duplicates route: the view closes');
      check(await page.isHidden('#dups-open'), 'and its button hides itself');
    } else {
      await page.waitForFunction(() => document.getElementById('dups-status').classList.contains('error'));
      const msg = dupsProbe.body && dupsProbe.body.error ? dupsProbe.body.error.message : '';
      check(msg && await page.textContent('#dups-status') === msg, `the view shows the server's error (${msg})`);
      await page.keyboard.press('Escape');
      check(await page.isHidden('#dups'), 'Escape closes the view');
    }
    h.expectErrors = false;
  }

  // -- tags in the details ------------------------------------------------------------------------------------------
  const target = idOf('rgb.png');
  await page.click(`#results .tile:has(img[src="/api/v1/images/${target}/thumb"])`);
  await page.waitForSelector('#details[open]');
  await page.waitForFunction(() => document.getElementById('details-date').textContent !== '');
  if (hasTags) {
    await page.waitForSelector('#tags-box:not([hidden])');
    // without the key: refused, and the page says why
    h.expectErrors = true;
    await page.fill('#tag-input', 'Beach');
    await page.press('#tag-input', 'Enter');
    await page.waitForFunction(() => document.getElementById('tag-error').textContent !== '');
    check(/API key/.test(await page.textContent('#tag-error')), `without the key: explained (${await page.textContent('#tag-error')})`);
    h.expectErrors = false;
    await page.keyboard.press('Escape');
    await page.click('details.add summary');
    await page.fill('#apikey', KEY);
    await page.click(`#results .tile:has(img[src="/api/v1/images/${target}/thumb"])`);
    await page.waitForSelector('#tags-box:not([hidden])');
    const isTags = (r) => r.url().endsWith(`/api/v1/images/${target}/tags`) && r.method() === 'POST';
    let req = page.waitForRequest(isTags);
    await page.fill('#tag-input', 'Beach, sunset');
    await page.press('#tag-input', 'Enter');
    let r = await req;
    check(eq(JSON.parse(r.postData()), { add: ['Beach', 'sunset'], remove: [] }), `add: the request (${r.postData()})`);
    check(r.headers().authorization === `Bearer ${KEY}`, 'add: the key is sent');
    await page.waitForFunction(() => document.querySelectorAll('#details-tags .chip').length === 2);
    let chips = await page.$$eval('#details-tags .chip span', (s) => s.map((x) => x.textContent));
    check(eq(sorted(chips.map((c) => c.toLowerCase())), ['beach', 'sunset']), `add: two chips (${chips})`);
    let row = (await api(origin, `/api/v1/images/${target}`)).body;
    check(eq((row.tags || []).map((t) => t.toLowerCase()).sort(), ['beach', 'sunset']), `add: stored (${row.tags})`);
    check(await page.evaluate(() => document.activeElement.id === 'tag-input'), 'focus stays in the tag input');
    await page.screenshot({ path: path.join(artifacts, 'f06-details-tags.png') });
    // remove from the keyboard: Tab back to the chip's button
    req = page.waitForRequest(isTags);
    await page.focus('#details-tags .chip-remove[aria-label="Remove tag sunset"]');
    await page.keyboard.press('Enter');
    r = await req;
    check(eq(JSON.parse(r.postData()), { add: [], remove: ['sunset'] }), `remove: the request (${r.postData()})`);
    await page.waitForFunction(() => document.querySelectorAll('#details-tags .chip').length === 1);
    chips = await page.$$eval('#details-tags .chip span', (s) => s.map((x) => x.textContent));
    check(eq(chips, ['Beach']), `remove: one chip left, case kept (${chips})`);
    row = (await api(origin, `/api/v1/images/${target}`)).body;
    check(eq(row.tags, ['Beach']), `remove: stored (${row.tags})`);
  } else {
    check(await page.isHidden('#tags-box'), 'a server without tags: no tag editor in the details');
  }
  await page.keyboard.press('Escape');
  await page.waitForSelector('#details:not([open])', { state: 'attached' });

  // -- phone -------------------------------------------------------------------------------------------------------------
  const phone = await h.browser.newPage();
  await h.watch(phone, origin);
  await phone.setViewportSize({ width: 390, height: 844 });
  await pageSearch(phone, () => phone.goto(`${origin}/?q=${encodeURIComponent(QUERY)}&format=png%2Cjpeg` +
    `&min_width=10&source_prefix=${encodeURIComponent(path.join(lib, 'home'))}`));
  await phone.click('#filters-toggle');
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 390, `phone: no horizontal scrolling with the filters open (${width})`);
  const panelRight = await phone.$eval('#filters', (d) => d.getBoundingClientRect().right);
  check(panelRight <= 390, `phone: the panel fits (${panelRight})`);
  await h.shot(phone, artifacts, 'f07-phone-filters.png');
  await phone.keyboard.press('Escape');
  if (hasDedup) {
    await pageSearch(phone, () => phone.check('#dedup'));
    const b = phone.locator('#results .similar').first();
    if (await b.count()) await b.click();
  }
  const w2 = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(w2 <= 390, `phone: no horizontal scrolling with results (${w2})`);
  await h.shot(phone, artifacts, 'f08-phone-results.png');
  if (hasDups) {
    await phone.click('#dups-open');
    await phone.waitForFunction(() => /group|No near/.test(document.getElementById('dups-status').textContent));
    const w3 = await phone.evaluate(() => document.documentElement.scrollWidth);
    check(w3 <= 390, `phone: the duplicates view fits (${w3})`);
    await h.shot(phone, artifacts, 'f09-phone-duplicates.png');
    await phone.keyboard.press('Escape');
  }
  await phone.locator('#results .tile').first().click();
  await phone.waitForSelector('#details[open]');
  await phone.waitForFunction(() => document.getElementById('details-date').textContent !== '');
  const right = await phone.$eval('#details', (d) => d.getBoundingClientRect().right);
  check(right <= 390, `phone: the details fit (${right})`);
  await phone.screenshot({ path: path.join(artifacts, 'f10-phone-details.png') });
  console.log(`screenshot: ${path.join(artifacts, 'f10-phone-details.png')}`);
  await phone.close();

  check(h.foreign.length === 0, `every request went to ${origin} (others: ${h.foreign.slice(0, 5).join(', ')})`);
  check(h.consoleErrors.length === 0, `no console errors (${h.consoleErrors.slice(0, 5).join(' | ')})`);
}

await h.run(main);
