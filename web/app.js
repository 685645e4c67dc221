// SPDX-License-Identifier: MIT
// app.js: the imgsearch page. Vanilla JS, no framework, no build step.
// State: `current` describes the last search as a function from offset to a
// fetch() request, so "load more" / infinite scroll just asks for the next
// page of the same query (text, image upload, "more like this", or mixes).
// Every request goes to this server's JSON API (see /api/v1/openapi.json).
// The search (text, "without", "more like this"), its filters, the
// near-duplicates switch and the duplicates view live in the page URL in the
// API's query-parameter names (q, neg, like, added_from ... source_prefix,
// tag, dedup, view, threshold): a URL can be shared and Back/Forward restore
// the search. Features the server answers 404/400 for (tags, dedup,
// duplicates on an older server) hide themselves.
'use strict';

const PAGE = 24;
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid);
  return e;
};

let current = null;      // {make(offset) -> [url, init]}
let offset = 0;
let loading = false;
let exhausted = false;
let generation = 0;      // bumped by each new search
let queryFile = null;    // the File used as an image term
let detailsItem = null;  // the result shown in the dialog
let dedupSupported = true;  // false once the server refused "dedup"
const DEDUP = 0.95;
const FORMATS = ['jpeg', 'png', 'webp', 'gif', 'bmp', 'heic', 'avif', 'tiff'];

function message(text, isError = false) {
  const m = $('message');
  m.textContent = text;
  m.classList.toggle('error', isError);
}

async function api(url, init = {}) {
  const resp = await fetch(url, init);
  let body = null;
  const type = resp.headers.get('Content-Type') || '';
  if (type.startsWith('application/json')) body = await resp.json();
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `HTTP ${resp.status}`;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function authHeaders() {
  const key = $('apikey').value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function loadStats() {
  try {
    const s = await api('/api/v1/stats');
    $('stats').textContent = `${s.images} images · ${s.model || ''}`;
  } catch (e) {
    $('stats').textContent = '';
  }
}

// ---- searching -------------------------------------------------------------

function textWeight() { return 1 - Number($('weight').value) / 100; }

// ---- filters -------------------------------------------------------------------

// The filter controls as the API's query parameters ([name, value] pairs, the
// GET names; `tag` repeats) and as the JSON body's "filter" object.
function readFilters() {
  const params = [];
  const filter = {};
  const kind = $('f-date-kind').value;
  const from = $('f-from').value;
  const to = $('f-to').value;
  if (from || to) {
    filter[kind] = {};
    if (from) { params.push([`${kind}_from`, from]); filter[kind].from = from; }
    if (to) { params.push([`${kind}_to`, to]); filter[kind].to = to; }
  }
  const orientation = $('f-orientation').value;
  if (orientation) { params.push(['orientation', orientation]); filter.orientation = orientation; }
  const formats = [...document.querySelectorAll('#f-formats input:checked')].map((c) => c.value);
  if (formats.length) { params.push(['format', formats.join(',')]); filter.format = formats; }
  for (const [id, name] of [['f-min-width', 'min_width'], ['f-min-height', 'min_height']]) {
    const v = $(id).value.trim();
    if (v !== '') {
      params.push([name, v]);
      filter[name] = /^\d+$/.test(v) && Number.isSafeInteger(Number(v)) ? Number(v) : v;
    }
  }
  const folder = $('f-folder').value.trim();
  if (folder) { params.push(['source_prefix', folder]); filter.source_prefix = folder; }
  const tags = splitTags($('f-tags').value);
  if (tags.length) { for (const t of tags) params.push(['tag', t]); filter.tags = tags; }
  return { params, filter: Object.keys(filter).length ? filter : null, count: countFilters(filter) };
}

function countFilters(filter) {
  return Object.keys(filter).length;
}

function splitTags(text) {
  const seen = new Set();
  return text.split(',').map((t) => t.trim()).filter((t) => {
    const k = t.toLowerCase();
    if (!t || seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

// Sets the controls from query parameters (a URLSearchParams).
function writeFilters(p) {
  const kind = p.has('added_from') || p.has('added_to') ? 'added' : 'taken';
  $('f-date-kind').value = kind;
  $('f-from').value = p.get(`${kind}_from`) || '';
  $('f-to').value = p.get(`${kind}_to`) || '';
  $('f-orientation').value = ['landscape', 'portrait', 'square'].includes(p.get('orientation'))
    ? p.get('orientation') : '';
  const formats = (p.get('format') || '').split(',');
  for (const c of document.querySelectorAll('#f-formats input')) c.checked = formats.includes(c.value);
  $('f-min-width').value = p.get('min_width') || '';
  $('f-min-height').value = p.get('min_height') || '';
  $('f-folder').value = p.get('source_prefix') || '';
  $('f-tags').value = p.getAll('tag').join(', ');
  filtersChanged();
}

function clearFilters() {
  writeFilters(new URLSearchParams());
}

function filtersChanged() {
  const n = readFilters().count;
  $('filters-count').textContent = n ? ` (${n})` : '';
  clearFieldErrors();
}

// Which control an API message is about: "filter.taken.from: ...",
// "min_width: ...", "format: unknown format ...", "filter.tags: ...", "tag: ...".
const FIELD_OF = [
  [/^(filter\.)?(added|taken)/, 'f-date-err', 'f-from'],
  [/^(filter\.)?min_(width|height)/, 'f-size-err', 'f-min-width'],
  [/^(filter\.)?format/, 'f-format-err', null],
  [/^(filter\.)?orientation/, 'f-orientation-err', 'f-orientation'],
  [/^(filter\.)?source_prefix/, 'f-folder-err', 'f-folder'],
  [/^(filter\.)?tags?\b/, 'f-tags-err', 'f-tags'],
];

function fieldError(msg) {
  for (const [re, errId, inputId] of FIELD_OF) {
    if (!re.test(msg)) continue;
    $(errId).textContent = msg;
    if (inputId) $(inputId).setAttribute('aria-invalid', 'true');
    openFilters(false);
    return true;
  }
  return false;
}

function clearFieldErrors() {
  for (const [, errId, inputId] of FIELD_OF) {
    $(errId).textContent = '';
    if (inputId) $(inputId).removeAttribute('aria-invalid');
  }
}

function openFilters(focus) {
  $('filters').hidden = false;
  $('filters-toggle').setAttribute('aria-expanded', 'true');
  if (focus) $('f-date-kind').focus();
}

function closeFilters() {
  $('filters').hidden = true;
  $('filters-toggle').setAttribute('aria-expanded', 'false');
}

// ---- searching -------------------------------------------------------------

function textWeight() { return 1 - Number($('weight').value) / 100; }

function dedupOn() { return dedupSupported && $('dedup').checked; }

function buildQuery() {
  const text = $('q').value.trim();
  const neg = $('neg').value.trim();
  if (queryFile) {
    const file = queryFile;
    const dedup = dedupOn();
    const { filter, count } = readFilters();
    return {
      make(off) {
        const fd = new FormData();
        fd.append('file', file, file.name || 'query');
        if (text) fd.append('text', text);
        if (neg) fd.append('negative', neg);
        fd.append('text_weight', String(textWeight()));
        fd.append('file_weight', String(1 - textWeight()));
        fd.append('k', String(PAGE));
        fd.append('offset', String(off));
        if (dedup) fd.append('dedup', String(DEDUP));
        if (filter) fd.append('filter', JSON.stringify(filter));
        return ['/api/v1/search', { method: 'POST', body: fd }];
      },
      label: text ? `image + “${text}”` : 'image',
      filtered: count > 0,
      dedup,
      url: { q: text, neg },
    };
  }
  if (!text && !neg) return null;
  const terms = [];
  if (text) terms.push({ text, weight: 1 });
  if (neg) terms.push({ text: neg, weight: -0.5 });
  return jsonQuery(terms, text ? `“${text}”` : `without “${neg}”`, { q: text, neg });
}

// A JSON search; the filters and the dedup switch are read now, so that
// "load more" pages the same search.
function jsonQuery(terms, label, url) {
  const { filter, count } = readFilters();
  const dedup = dedupOn();
  return {
    make(off) {
      const body = { terms, k: PAGE, offset: off };
      if (filter) body.filter = filter;
      if (dedup) body.dedup = DEDUP;
      return ['/api/v1/search', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      }];
    },
    label,
    filtered: count > 0,
    dedup,
    url,
  };
}

function likeQuery(id) {
  return jsonQuery([{ image_id: id, weight: 1 }], `images like #${id}`, { like: String(id) });
}

// ---- the page URL ----------------------------------------------------------------

function pageParams(q) {
  const p = new URLSearchParams();
  const u = (q && q.url) || {};
  if (u.q) p.set('q', u.q);
  if (u.neg) p.set('neg', u.neg);
  if (u.like) p.set('like', u.like);
  for (const [k, v] of readFilters().params) p.append(k, v);
  if ($('dedup').checked) p.set('dedup', String(DEDUP));
  if (!$('dups').hidden) {
    p.set('view', 'duplicates');
    p.set('threshold', Number($('dups-threshold').value).toFixed(3));
  }
  return p;
}

function saveUrl(q, push) {
  const search = pageParams(q).toString();
  const url = search ? `?${search}` : location.pathname;
  if (`?${search}` === location.search || (!search && !location.search)) return;
  if (push) history.pushState(null, '', url); else history.replaceState(null, '', url);
}

// Restores the controls from the page URL and runs what it describes.
function loadUrl() {
  const p = new URLSearchParams(location.search);
  $('q').value = p.get('q') || '';
  $('neg').value = p.get('neg') || '';
  $('dedup').checked = p.has('dedup') && dedupSupported;
  writeFilters(p);
  if (p.get('view') === 'duplicates') {
    const t = Number(p.get('threshold'));
    if (t >= 0.8 && t <= 0.999) setThreshold(t);
    showDups(false);
  } else {
    hideDups(false);
  }
  const like = Number(p.get('like'));
  let q = null;
  if (Number.isSafeInteger(like) && like > 0) q = likeQuery(like);
  else if (!queryFile && (p.get('q') || p.get('neg'))) q = buildQuery();
  if (q) startSearch(q, false);
  else if (!queryFile) { current = null; $('results').replaceChildren(); $('more').hidden = true; message(''); $('empty').hidden = true; }
}

window.addEventListener('popstate', loadUrl);

function startSearch(q, push = true) {
  if (!q) { message('Type something or choose an image.'); return; }
  clearFieldErrors();
  $('empty').hidden = true;
  saveUrl(q, push);
  current = q;
  offset = 0;
  exhausted = false;
  generation++;        // a page of the previous search still in flight is dropped
  loading = false;
  $('results').replaceChildren();
  loadMore();
}

async function loadMore() {
  if (!current || loading || exhausted) return;
  const mine = generation;
  loading = true;
  let ok = false;
  $('more').hidden = true;
  message('Searching…');
  try {
    const [url, init] = current.make(offset);
    const res = await api(url, init);
    if (mine !== generation) return;
    const items = res.results || [];
    for (const item of items) $('results').append(tile(item));
    offset += items.length;
    exhausted = items.length < PAGE;
    const n = $('results').querySelectorAll(':scope > li:not(.folded)').length;
    if (!n && current.filtered) {
      message('');
      $('empty').hidden = false;
    } else {
      message(n ? `${n} result${n === 1 ? '' : 's'} for ${current.label} · ${res.took_ms.toFixed(1)} ms`
                : `No results for ${current.label}.`);
    }
    $('more').hidden = exhausted;
    ok = true;
  } catch (e) {
    if (mine === generation) searchFailed(e);
  } finally {
    if (mine === generation) loading = false;
  }
  // not after an error: that would retry in a loop while the area is in view
  if (moreObserver && ok && !exhausted) {
    moreObserver.unobserve(moreArea);
    moreObserver.observe(moreArea);
  }
}

// A refused search: a filter's message goes next to its control; a server
// without "dedup" turns the switch off and the search runs again without it.
function searchFailed(e) {
  if (e.status === 400 && current && current.dedup && /\bdedup\b/.test(e.message) && /unknown/.test(e.message)) {
    dedupSupported = false;
    $('dedup').checked = false;
    $('dedup-label').hidden = true;
    const q = current;
    startSearch(q.url && q.url.like ? likeQuery(Number(q.url.like)) : buildQuery(), false);
    return;
  }
  if (e.status === 400 && fieldError(e.message)) {
    message('Check the filters.', true);
    return;
  }
  message(e.message, true);
}

function thumbOf(id) { return `/api/v1/images/${id}/thumb`; }

function tile(item, folded = null) {
  const img = el('img', { src: item.thumb || thumbOf(item.id), alt: item.url ? `Image from ${item.url}` : `Image ${item.id}`, loading: 'lazy' });
  const label = folded !== null ? `Image ${item.id}, a near-duplicate of image ${folded}. Open details`
    : `Image ${item.id}, score ${item.score.toFixed(3)}. Open details`;
  const btn = el('button', {
    class: 'tile', type: 'button', 'aria-label': label,
    onclick: () => openDetails(item, btn),
  }, img);
  if (folded === null) btn.append(el('span', { class: 'score', 'aria-hidden': 'true' }, item.score.toFixed(2)));
  const li = el('li', folded !== null ? { class: 'folded', 'data-of': String(folded) } : {}, btn);
  const dups = folded === null && Array.isArray(item.duplicates) ? item.duplicates : [];
  if (dups.length) {
    const badge = el('button', {
      class: 'similar', type: 'button', 'aria-expanded': 'false',
      'aria-label': `Show ${dups.length} near-duplicate${dups.length === 1 ? '' : 's'} of image ${item.id}`,
      onclick: () => toggleFolded(li, badge, item.id, dups),
    }, `+${dups.length} similar`);
    li.append(badge);
  }
  return li;
}

// The folded near-duplicates of a kept row, shown as tiles right after it.
function toggleFolded(li, badge, id, dups) {
  const open = badge.getAttribute('aria-expanded') === 'true';
  for (const x of [...$('results').querySelectorAll(`li.folded[data-of="${id}"]`)]) x.remove();
  badge.setAttribute('aria-expanded', String(!open));
  if (open) return;
  let at = li;
  for (const d of dups) {
    const f = tile({ id: d }, id);
    at.after(f);
    at = f;
  }
}

// ---- details dialog ----------------------------------------------------------

function showField(id, text) {
  $(id).textContent = text || '';
  $(id).hidden = !text;
  $(`${id}-dt`).hidden = !text;
}

async function openDetails(item, opener) {
  detailsItem = { item, opener };
  $('details-img').src = item.thumb || thumbOf(item.id);
  $('details-img').alt = `Image ${item.id}`;
  $('details-title').textContent = `Image ${item.id}`;
  fillDetails(item);
  $('details-score').textContent = item.score !== undefined ? item.score.toFixed(4) : '';
  $('details-date').textContent = '';
  $('tags-box').hidden = true;
  $('tag-error').textContent = '';
  $('tag-input').value = '';
  $('details').showModal();
  try {
    const row = await api(`/api/v1/images/${item.id}`);
    if (!detailsItem || detailsItem.item !== item) return;
    $('details-date').textContent = new Date(row.added * 1000).toLocaleString();
    fillDetails(row);
  } catch (e) {
    $('details-date').textContent = e.message;
  }
}

function fillDetails(row) {
  const src = $('details-src');
  src.textContent = row.url || '(upload)';
  if (row.url && /^https?:\/\//.test(row.url)) src.href = row.url; else src.removeAttribute('href');
  $('details-size').textContent = row.width !== undefined ? `${row.width} × ${row.height}` : '';
  showField('details-taken', row.taken ? new Date(row.taken * 1000).toLocaleString() : '');
  showField('details-format', row.format ? row.format.toUpperCase() : '');
  const ex = row.exif || (row.metadata && row.metadata.exif) || null;
  showField('details-camera', ex ? [ex.make, ex.model].filter(Boolean).join(' ') : '');
  // tags: editable when the server reports them on rows
  if (Array.isArray(row.tags)) {
    renderTags(row.tags);
    $('tags-box').hidden = false;
  }
}

function renderTags(tags) {
  $('details-tags').replaceChildren(...tags.map((t) => el('li', { class: 'chip' },
    el('span', {}, t),
    el('button', { type: 'button', class: 'chip-remove', 'aria-label': `Remove tag ${t}`,
      onclick: () => editTags([], [t]) }, '×'))));
  if (!tags.length) $('details-tags').append(el('li', { class: 'chip-none' }, 'No tags yet'));
}

async function editTags(add, remove) {
  if (!detailsItem) return;
  const { item } = detailsItem;
  $('tag-error').textContent = '';
  try {
    const row = await api(`/api/v1/images/${item.id}/tags`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify({ add, remove }),
    });
    if (detailsItem.item !== item) return;
    const tags = row && Array.isArray(row.tags) ? row.tags : [];
    item.tags = tags;
    renderTags(tags);
    $('tag-input').value = '';
    // focus stays in the editor: on the input after an add or a removal
    $('tag-input').focus();
  } catch (e) {
    $('tag-error').textContent = e.status === 401 || e.status === 403
      ? `${e.message} (enter the API key under “Add images”)`
      : e.status === 404 && !/image/i.test(e.message) ? 'This server does not support tags.' : e.message;
  }
}

$('tag-add').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const tags = splitTags($('tag-input').value);
  if (!tags.length) { $('tag-error').textContent = 'Type a tag first.'; return; }
  editTags(tags, []);
});

$('details').addEventListener('close', () => {
  if (detailsItem && detailsItem.opener && detailsItem.opener.isConnected) detailsItem.opener.focus();
});

$('details-like').addEventListener('click', () => {
  const { item } = detailsItem;
  $('details').close();
  hideDups(false);
  startSearch(likeQuery(item.id));
});

$('details-delete').addEventListener('click', async () => {
  const { item, opener } = detailsItem;
  if (!confirm(`Delete image ${item.id}?`)) return;
  try {
    await api(`/api/v1/images/${item.id}`, { method: 'DELETE', headers: authHeaders() });
    $('details').close();
    if (opener) opener.closest('li').remove();
    message(`Deleted image ${item.id}.`);
    loadStats();
  } catch (e) {
    message(`Delete failed: ${e.message}`, true);
  }
});

// ---- the duplicates view -----------------------------------------------------------------

let dupsGeneration = 0;
let dupsTimer = null;

function setThreshold(t) {
  $('dups-threshold').value = String(t);
  $('dups-value').textContent = Number($('dups-threshold').value).toFixed(3);
}

function showDups(push) {
  const wasHidden = $('dups').hidden;
  $('dups').hidden = false;
  $('dups-open').setAttribute('aria-expanded', 'true');
  for (const id of ['results', 'message']) $(id).hidden = true;
  $('empty').hidden = true;
  $('more').closest('.more').hidden = true;
  if (push) saveUrl(current, true);
  if (wasHidden || push) loadDups();
}

function hideDups(push) {
  if ($('dups').hidden) return;
  $('dups').hidden = true;
  $('dups-open').setAttribute('aria-expanded', 'false');
  for (const id of ['results', 'message']) $(id).hidden = false;
  $('more').closest('.more').hidden = false;
  dupsGeneration++;
  if (push) saveUrl(current, true);
}

async function loadDups() {
  const mine = ++dupsGeneration;
  const t = Number($('dups-threshold').value).toFixed(3);
  $('dups-status').textContent = 'Looking for near-duplicates…';
  $('dups-status').classList.remove('error');
  try {
    const res = await api(`/api/v1/duplicates?threshold=${t}`);
    if (mine !== dupsGeneration) return;
    const groups = res.groups || [];
    $('dups-groups').replaceChildren(...groups.map((g, i) => {
      const head = el('p', { class: 'group-head' },
        `${g.ids.length} images · similarity ≥ ${Number(g.min_score).toFixed(3)}`);
      const row = el('ul', { class: 'group-thumbs', 'aria-label': `Group ${i + 1}` },
        ...g.ids.map((id) => {
          const b = el('button', { class: 'thumb', type: 'button', 'aria-label': `Image ${id}. Open details`,
            onclick: () => openDetails({ id }, b) },
          el('img', { src: thumbOf(id), alt: `Image ${id}`, loading: 'lazy' }));
          return el('li', {}, b);
        }));
      return el('li', { class: 'group' }, head, row);
    }));
    $('dups-status').textContent = groups.length
      ? `${groups.length} group${groups.length === 1 ? '' : 's'} at similarity ≥ ${t}`
      : `No near-duplicates at similarity ≥ ${t}.`;
  } catch (e) {
    if (mine !== dupsGeneration) return;
    $('dups-groups').replaceChildren();
    if (e.status === 404 || e.status === 405 || e.status === 501) {
      // an older server: no such route
      $('dups-open').hidden = true;
      hideDups(false);
      saveUrl(current, false);
      message('This server does not list near-duplicates.', true);
      return;
    }
    $('dups-status').textContent = e.message;
    $('dups-status').classList.add('error');
  }
}

$('dups-open').addEventListener('click', () => {
  if ($('dups').hidden) { showDups(true); $('dups-title').focus(); } else hideDups(true);
});
$('dups-close').addEventListener('click', () => { hideDups(true); $('dups-open').focus(); });
$('dups-threshold').addEventListener('input', () => setThreshold($('dups-threshold').value));
$('dups-threshold').addEventListener('change', () => {
  clearTimeout(dupsTimer);
  dupsTimer = setTimeout(() => { saveUrl(current, false); loadDups(); }, 250);
});

// ---- query image: choose or drop --------------------------------------------------

function setQueryFile(file) {
  queryFile = file;
  $('file-name').textContent = file ? file.name : '';
  $('file-clear').hidden = !file;
  $('mix').hidden = !file;
}

$('file').addEventListener('change', () => {
  const f = $('file').files[0];
  if (f) { setQueryFile(f); startSearch(buildQuery()); }
});
$('file-clear').addEventListener('click', () => { $('file').value = ''; setQueryFile(null); });
document.querySelector('.file-label').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); $('file').click(); }
});

const form = $('search');
['dragenter', 'dragover'].forEach((t) => document.addEventListener(t, (ev) => {
  if (ev.dataTransfer && [...ev.dataTransfer.types].includes('Files')) {
    ev.preventDefault();
    form.classList.add('dragging');
  }
}));
['dragleave', 'dragend'].forEach((t) => document.addEventListener(t, (ev) => {
  if (!ev.relatedTarget) form.classList.remove('dragging');
}));
document.addEventListener('drop', (ev) => {
  form.classList.remove('dragging');
  const f = ev.dataTransfer && ev.dataTransfer.files[0];
  if (!f) return;
  ev.preventDefault();
  if (!f.type.startsWith('image/')) { message('Drop an image file.', true); return; }
  setQueryFile(f);
  startSearch(buildQuery());
});

form.addEventListener('submit', (ev) => { ev.preventDefault(); startSearch(buildQuery()); });
$('weight').addEventListener('change', () => { if (queryFile) startSearch(buildQuery()); });
$('more').addEventListener('click', loadMore);

// ---- filter panel and switches ---------------------------------------------------

$('filters-toggle').addEventListener('click', () => {
  if ($('filters').hidden) openFilters(true); else closeFilters();
});
// a change re-runs the current search (its filters are read again); text
// fields change on Enter (which submits the form) or when focus leaves them
$('filters').addEventListener('change', (ev) => {
  filtersChanged();
  if (ev.target.type === 'text' || ev.target.type === 'number') return;
  rerun();
});
$('filters').addEventListener('focusout', (ev) => {
  if ((ev.target.type === 'text' || ev.target.type === 'number') && current) {
    const before = new URLSearchParams(location.search).toString();
    if (pageParams(current).toString() !== before) rerun();
  }
});
function rerun() {
  if (!current) { saveUrl(null, false); return; }
  if (current.url && current.url.like) startSearch(likeQuery(Number(current.url.like)));
  else startSearch(buildQuery());
}
$('filters-clear').addEventListener('click', () => { clearFilters(); rerun(); $('f-date-kind').focus(); });
$('empty-clear').addEventListener('click', () => { clearFilters(); rerun(); $('q').focus(); });
$('dedup').addEventListener('change', rerun);

// Escape closes the innermost open panel (the details dialog closes itself).
document.addEventListener('keydown', (ev) => {
  if (ev.key !== 'Escape' || $('details').open) return;
  if (!$('filters').hidden) {
    ev.preventDefault();
    closeFilters();
    $('filters-toggle').focus();
  } else if (!$('dups').hidden) {
    ev.preventDefault();
    hideDups(true);
    $('dups-open').focus();
  }
});

// Infinite scroll: when the "load more" area comes into view, fetch the next page.
// The observer reports changes only: if a page was too short to push the area
// out of view, nothing changes, so loadMore() re-observes it after each page
// (observe() reports the current state once) to keep going.
const moreArea = document.querySelector('.more');
const moreObserver = 'IntersectionObserver' in window
  ? new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: '400px' })
  : null;
if (moreObserver) moreObserver.observe(moreArea);

// ---- adding images by URL, with job progress ------------------------------------------

$('add').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const urls = $('urls').value.split(/\s+/).map((u) => u.trim()).filter(Boolean);
  $('job-errors').replaceChildren();
  $('progress').hidden = true;   // the bar of a previous job is not this one's
  jobStatus('');
  if (!urls.length) { jobStatus('Paste at least one URL.', true); return; }
  try {
    const res = await api('/api/v1/images', {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify({ urls }),
    });
    pollJob(res.job);
  } catch (e) {
    jobStatus(`Could not add: ${e.message}`, true);
  }
});

function jobStatus(text, isError = false) {
  const s = $('job-status');
  s.textContent = text;
  s.classList.toggle('error', isError);
}

async function pollJob(id) {
  const bar = $('progress');
  bar.hidden = false;
  for (;;) {
    let job;
    try {
      job = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
    } catch (e) {
      jobStatus(`Job ${id}: ${e.message}`, true);
      return;
    }
    bar.max = Math.max(1, job.total);
    bar.value = job.done + job.failed;
    jobStatus(`Job ${id}: ${job.state} · ${job.done} added, ${job.failed} failed of ${job.total}`,
      job.state === 'failed');
    $('job-errors').replaceChildren(...(job.errors || []).map((e) => el('li', {}, `${e.url}: ${e.error}`)));
    if (job.state === 'done' || job.state === 'failed') { loadStats(); return; }
    await new Promise((r) => setTimeout(r, 700));
  }
}

loadStats();
loadUrl();
$('q').focus();
