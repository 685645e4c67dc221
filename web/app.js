// SPDX-License-Identifier: MIT
// app.js: the imgsearch page. Vanilla JS, no framework, no build step.
// State: `current` describes the last search as a function from offset to a
// fetch() request, so "load more" / infinite scroll just asks for the next
// page of the same query (text, image upload, "more like this", or mixes).
// Every request goes to this server's JSON API (see /api/v1/openapi.json).
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
    throw new Error(msg);
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

function buildQuery() {
  const text = $('q').value.trim();
  const neg = $('neg').value.trim();
  if (queryFile) {
    const file = queryFile;
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
        return ['/api/v1/search', { method: 'POST', body: fd }];
      },
      label: text ? `image + “${text}”` : 'image',
    };
  }
  if (!text && !neg) return null;
  const terms = [];
  if (text) terms.push({ text, weight: 1 });
  if (neg) terms.push({ text: neg, weight: -0.5 });
  return jsonQuery(terms, text ? `“${text}”` : `without “${neg}”`);
}

function jsonQuery(terms, label) {
  return {
    make(off) {
      return ['/api/v1/search', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ terms, k: PAGE, offset: off }),
      }];
    },
    label,
  };
}

function startSearch(q) {
  if (!q) { message('Type something or choose an image.'); return; }
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
    const n = $('results').children.length;
    message(n ? `${n} result${n === 1 ? '' : 's'} for ${current.label} · ${res.took_ms.toFixed(1)} ms`
              : `No results for ${current.label}.`);
    $('more').hidden = exhausted;
    ok = true;
  } catch (e) {
    if (mine === generation) message(e.message, true);
  } finally {
    if (mine === generation) loading = false;
  }
  // not after an error: that would retry in a loop while the area is in view
  if (moreObserver && ok && !exhausted) {
    moreObserver.unobserve(moreArea);
    moreObserver.observe(moreArea);
  }
}

function tile(item) {
  const img = el('img', { src: item.thumb, alt: item.url ? `Image from ${item.url}` : `Image ${item.id}`, loading: 'lazy' });
  const btn = el('button', {
    class: 'tile', type: 'button',
    'aria-label': `Image ${item.id}, score ${item.score.toFixed(3)}. Open details`,
    onclick: () => openDetails(item, btn),
  }, img, el('span', { class: 'score', 'aria-hidden': 'true' }, item.score.toFixed(2)));
  return el('li', {}, btn);
}

// ---- details dialog ----------------------------------------------------------

async function openDetails(item, opener) {
  detailsItem = { item, opener };
  $('details-img').src = item.thumb;
  $('details-img').alt = `Image ${item.id}`;
  $('details-title').textContent = `Image ${item.id}`;
  const src = $('details-src');
  src.textContent = item.url || '(upload)';
  if (item.url && /^https?:\/\//.test(item.url)) src.href = item.url; else src.removeAttribute('href');
  $('details-size').textContent = `${item.width} × ${item.height}`;
  $('details-score').textContent = item.score !== undefined ? item.score.toFixed(4) : '';
  $('details-date').textContent = '';
  $('details').showModal();
  try {
    const row = await api(`/api/v1/images/${item.id}`);
    $('details-date').textContent = new Date(row.added * 1000).toLocaleString();
  } catch (e) {
    $('details-date').textContent = e.message;
  }
}

$('details').addEventListener('close', () => {
  if (detailsItem && detailsItem.opener.isConnected) detailsItem.opener.focus();
});

$('details-like').addEventListener('click', () => {
  const { item } = detailsItem;
  $('details').close();
  startSearch(jsonQuery([{ image_id: item.id, weight: 1 }], `images like #${item.id}`));
});

$('details-delete').addEventListener('click', async () => {
  const { item, opener } = detailsItem;
  if (!confirm(`Delete image ${item.id}?`)) return;
  try {
    await api(`/api/v1/images/${item.id}`, { method: 'DELETE', headers: authHeaders() });
    $('details').close();
    opener.closest('li').remove();
    message(`Deleted image ${item.id}.`);
    loadStats();
  } catch (e) {
    message(`Delete failed: ${e.message}`, true);
  }
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
$('q').focus();
