// The viewer's page: login, live grid (MSE over the chunked fMP4 of /api/streams/…/live) and a
// per-stream timeline of recordings, gaps, the stream's events and the alarms that concern it, zoomed
// from a day to a minute (buttons or the mouse wheel). Uses only the JSON API (docs/api.md).
'use strict';

const $ = (id) => document.getElementById(id);
let csrf = '';
let tiles = [];

async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
  const resp = await fetch(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function show(section) {
  $('login').hidden = section !== 'login';
  $('main').hidden = section !== 'main';
}

async function start() {
  try {
    const me = await api('GET', '/api/me');
    enter(me);
  } catch (e) {
    show('login');
  }
}

function enter(me) {
  csrf = me.csrf;
  $('whoami').textContent = `${me.user} (${me.role})`;
  show('main');
  buildGrid();
  fillTimelineStreams();
  window.nvrExport.setRole(me.role);
  window.nvrFailover.start(me);
  window.nvrCluster.pollAlarms();
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('login-error').textContent = '';
  try {
    const me = await api('POST', '/api/login', {
      user: $('login-user').value,
      password: $('login-password').value,
    });
    $('login-password').value = '';
    enter(me);
  } catch (e) {
    $('login-error').textContent = e.message;
  }
});

$('logout').addEventListener('click', async () => {
  stopTiles();
  await api('POST', '/api/logout').catch(() => {});
  csrf = '';
  show('login');
});

$('tab-live').addEventListener('click', () => switchTab('live'));
$('tab-timeline').addEventListener('click', () => switchTab('timeline'));
$('tab-cluster').addEventListener('click', () => switchTab('cluster'));
$('grid-size').addEventListener('change', () => { focused = null; buildGrid(); });
// Tiles hidden with the page are stopped (no decoding, no stream from the recorder) and start again
// at the live edge when it is shown.
document.addEventListener('visibilitychange', () => {
  if ($('main').hidden || $('live').hidden) return;
  if (document.hidden) stopTiles(); else buildGrid();
});

/// A camera shown alone with its main stream (a click on its tile), or null for the grid.
let focused = null;

function switchTab(tab) {
  $('tab-live').classList.toggle('active', tab === 'live');
  $('tab-timeline').classList.toggle('active', tab === 'timeline');
  $('live').hidden = tab !== 'live';
  $('timeline').hidden = tab !== 'timeline';
  $('tab-cluster').classList.toggle('active', tab === 'cluster');
  $('cluster').hidden = tab !== 'cluster';
  if (tab === 'live') buildGrid(); else { stopTiles(); if (tab === 'timeline') drawTimeline(); else window.nvrCluster.drawCluster(); }
}

// --- live grid -----------------------------------------------------------------------------------

function stopTiles() {
  for (const t of tiles) t.abort.abort();
  tiles = [];
  $('live').replaceChildren();
}

/// One stream a camera for the grid: its sub stream if it has one, else its main stream.
function gridStreams(cameras) {
  return cameras.map((c) => {
    const sub = c.streams.find((s) => s.stream === 'sub');
    return { camera: c.name, stream: (sub || c.streams[0]).stream, info: sub || c.streams[0] };
  }).filter((s) => s.info);
}

async function buildGrid() {
  stopTiles();
  let n = Number($('grid-size').value);
  const grid = $('live');
  grid.className = `grid n${n}`;
  let cams;
  try {
    cams = await api('GET', '/api/cameras');
    $('main-error').textContent = cams.recorder_error ? `recorder: ${cams.recorder_error}` : '';
  } catch (e) {
    $('main-error').textContent = e.message;
    return;
  }
  let streams = gridStreams(cams.cameras).slice(0, n);
  if (focused) {
    const cam = cams.cameras.find((c) => c.name === focused);
    const main = cam && cam.streams.find((s) => s.stream === 'main');
    streams = main ? [{ camera: cam.name, stream: 'main', info: main }] : streams;
    if (main) { n = 1; grid.className = 'grid n1'; }
  }
  for (let i = 0; i < n; i++) {
    const div = document.createElement('div');
    div.className = 'tile';
    const s = streams[i];
    if (!s) { div.classList.add('empty'); grid.append(div); continue; }
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.dataset.stream = `${s.camera}/${s.stream}`;
    const label = document.createElement('div');
    label.className = 'label';
    const state = s.info.status ? s.info.status.state : 'unknown';
    label.textContent = `${s.camera}/${s.stream} · ${cams.node} · ${state}`;
    div.append(video, label);
    div.title = focused ? 'Click: back to the grid' : 'Click: main stream, full size';
    div.addEventListener('click', () => { focused = focused ? null : s.camera; buildGrid(); });
    grid.append(div);
    const abort = new AbortController();
    tiles.push({ abort });
    playLive(video, `/api/streams/${encodeURIComponent(s.camera)}/${encodeURIComponent(s.stream)}/live`, abort.signal, label);
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/// The RFC 6381 codec string of an H.264 init segment ('avc1.PPCCLL'), once its avcC box is in `buf`.
function avcCodec(buf) {
  for (let i = 4; i + 8 <= buf.length; i++) {
    if (buf[i] === 0x61 && buf[i + 1] === 0x76 && buf[i + 2] === 0x63 && buf[i + 3] === 0x43) {
      const hex = (b) => b.toString(16).padStart(2, '0');
      return `avc1.${hex(buf[i + 5])}${hex(buf[i + 6])}${hex(buf[i + 7])}`;
    }
  }
  return null;
}

// --- camsim frame stamps: live latency ------------------------------------------------------------
// Frames from the camera simulator carry an SEI with their send time (docs/camsim.md). Where present,
// each tile shows how long ago the frame on screen was sent, and window.nvrLiveLatencies collects the
// figures per stream (the browser test reads them). Real cameras have no stamps: nothing is shown.

const STAMP_UUID = [0x2e, 0x2b, 0x97, 0xd7, 0xd8, 0xa3, 0x4e, 0x9e, 0x99, 0xa9, 0x84, 0x8a, 0x43, 0xe7, 0x10, 0xe1];
window.nvrLiveLatencies = {};

/// Reads top-level boxes from the live byte stream: the decode time of each fragment (tfdt, in the
/// track's timescale) and the send time of its stamped frame, if any.
class StampReader {
  constructor() { this.buf = new Uint8Array(0); this.timescale = 90000; this.decodeTime = null; this.byTime = new Map(); }
  push(bytes) {
    this.buf = concat(this.buf, bytes);
    for (;;) {
      if (this.buf.length < 8) return;
      const size = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(0);
      if (size < 8 || this.buf.length < size) return;
      const type = String.fromCharCode(...this.buf.subarray(4, 8));
      const box = this.buf.subarray(0, size);
      if (type === 'moov') this.timescale = findTimescale(box) || this.timescale;
      if (type === 'moof') this.decodeTime = findDecodeTime(box);
      if (type === 'mdat' && this.decodeTime !== null) {
        const sendUs = findStamp(box);
        if (sendUs !== null) {
          this.byTime.set(Math.round((this.decodeTime / this.timescale) * 1000), sendUs);
          if (this.byTime.size > 600) this.byTime.delete(this.byTime.keys().next().value);
        }
      }
      this.buf = this.buf.slice(size);
    }
  }
}

function indexOf(buf, pattern, from) {
  outer: for (let i = from; i + pattern.length <= buf.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

function findTimescale(moov) {
  const i = indexOf(moov, [0x6d, 0x64, 0x68, 0x64], 0); // 'mdhd'
  if (i < 0) return null;
  const dv = new DataView(moov.buffer, moov.byteOffset);
  return moov[i + 4] === 1 ? dv.getUint32(i + 24) : dv.getUint32(i + 16);
}

function findDecodeTime(moof) {
  const i = indexOf(moof, [0x74, 0x66, 0x64, 0x74], 0); // 'tfdt'
  if (i < 0) return null;
  const dv = new DataView(moof.buffer, moof.byteOffset);
  return moof[i + 4] === 1 ? dv.getUint32(i + 8) * 2 ** 32 + dv.getUint32(i + 12) : dv.getUint32(i + 8);
}

/// The send time (µs) of a camsim stamp in an mdat: the 16 bytes after the UUID, emulation prevention
/// bytes (a 03 after two zeros) removed; seq first, then the send time.
function findStamp(mdat) {
  const i = indexOf(mdat, STAMP_UUID, 8);
  if (i < 0) return null;
  const out = [];
  let zeros = 0;
  for (let k = i + 16; k < mdat.length && out.length < 16; k++) {
    const b = mdat[k];
    if (zeros >= 2 && b === 3) { zeros = 0; continue; }
    zeros = b === 0 ? zeros + 1 : 0;
    out.push(b);
  }
  if (out.length < 16) return null;
  let t = 0;
  for (let k = 8; k < 16; k++) t = t * 256 + out[k];
  return t;
}

function watchLatency(video, stamps, key, label, base) {
  if (!video.requestVideoFrameCallback) return;
  const list = (window.nvrLiveLatencies[key] = []);
  const onFrame = (now, meta) => {
    const sendUs = stamps.byTime.get(Math.round(meta.mediaTime * 1000));
    if (sendUs !== undefined) {
      const ms = performance.timeOrigin + meta.presentationTime - sendUs / 1000;
      list.push(ms);
      if (list.length > 1000) list.shift();
      if (list.length % 25 === 1) label.textContent = `${base} · ${Math.round(ms)} ms`;
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function playLive(video, url, signal, label) {
  const stamps = new StampReader();
  watchLatency(video, stamps, video.dataset.stream, label, label.textContent);
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
  let resp;
  try {
    resp = await fetch(url, { credentials: 'same-origin', signal });
  } catch (e) {
    return;
  }
  if (!resp.ok) {
    const data = await resp.json().catch(() => ({}));
    label.textContent += ` · ${(data.error && data.error.message) || resp.statusText}`;
    return;
  }
  const reader = resp.body.getReader();
  let sb = null;
  let head = new Uint8Array(0);
  const pending = [];
  const pump = () => {
    if (!sb || sb.updating) return;
    if (pending.length) { sb.appendBuffer(pending.shift()); return; }
    // Keep about 10 s behind the play position.
    if (sb.buffered.length && video.currentTime - sb.buffered.start(0) > 30) {
      sb.remove(0, video.currentTime - 10);
    }
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stamps.push(value);
      if (!sb) {
        head = concat(head, value);
        const codec = avcCodec(head);
        if (!codec) { if (head.length > 1 << 20) throw new Error('no H.264 init segment'); continue; }
        sb = ms.addSourceBuffer(`video/mp4; codecs="${codec}"`);
        sb.addEventListener('updateend', pump);
        pending.push(head);
      } else {
        pending.push(value);
      }
      pump();
      const b = video.buffered;
      if (b.length) {
        const end = b.end(b.length - 1);
        if (end - video.currentTime > 1.5 || video.currentTime < b.start(0)) video.currentTime = Math.max(b.start(b.length - 1), end - 0.3);
      }
      if (video.paused) video.play().catch(() => {});
    }
  } catch (e) {
    if (!signal.aborted) label.textContent += ` · ${e.message}`;
  }
}

// --- timeline ------------------------------------------------------------------------------------

async function fillTimelineStreams() {
  const sel = $('tl-stream');
  try {
    const cams = await api('GET', '/api/cameras');
    sel.replaceChildren(...cams.cameras.flatMap((c) => c.streams.map((s) => new Option(s.key, s.key))));
    // The timeline tab may have been opened before the list came: it drew nothing then.
    if (!$('timeline').hidden) drawTimeline();
  } catch (e) {
    $('main-error').textContent = e.message;
  }
}

/// What the timeline shows: `spanMs` ending at `endMs` (null: now). Zoom runs from a day to a minute.
const tlView = { spanMs: 3600000, endMs: null };
const TL_MIN_SPAN_MS = 60000;
const TL_MAX_SPAN_MS = 86400000;

/// Zooms by `factor` (below 1: in) keeping wall time `atMs` (default: the middle) at its place.
function tlZoom(factor, atMs) {
  const bar = $('tl-bar');
  const start = Number(bar.dataset.start);
  const end = Number(bar.dataset.end);
  if (!end) return;
  const span = Math.min(Math.max(Math.round(tlView.spanMs * factor), TL_MIN_SPAN_MS), TL_MAX_SPAN_MS);
  const at = atMs === undefined ? (start + end) / 2 : atMs;
  const newEnd = Math.round(at + (1 - (at - start) / (end - start)) * span);
  tlView.spanMs = span;
  tlView.endMs = newEnd >= Date.now() ? null : newEnd;
  drawTimeline();
}

function tlSpanText(ms) {
  if (ms >= 3600000) return `${+(ms / 3600000).toFixed(1)} h`;
  if (ms >= 60000) return `${+(ms / 60000).toFixed(1)} min`;
  return `${ms / 1000} s`;
}

$('tl-refresh').addEventListener('click', drawTimeline);
$('tl-stream').addEventListener('change', drawTimeline);
$('tl-range').addEventListener('change', () => {
  tlView.spanMs = Number($('tl-range').value);
  tlView.endMs = null;
  drawTimeline();
});
$('tl-zoom-in').addEventListener('click', () => tlZoom(0.5));
$('tl-zoom-out').addEventListener('click', () => tlZoom(2));
$('tl-bar').addEventListener('wheel', (ev) => {
  ev.preventDefault();
  const bar = $('tl-bar');
  const r = bar.getBoundingClientRect();
  const f = Math.min(Math.max((ev.clientX - r.left) / r.width, 0), 1);
  const start = Number(bar.dataset.start);
  const end = Number(bar.dataset.end);
  tlZoom(ev.deltaY < 0 ? 0.5 : 2, start + f * (end - start));
}, { passive: false });

const fmt = (ms) => new Date(ms).toLocaleString();

/// Draws started; an answer that comes back after a newer draw started is dropped.
let timelineDraws = 0;

/// An alarm's mark: from its start to its end, or to the bar's right edge while it is open; dimmed
/// once acknowledged. A click on it plays from its start (playback.js).
function tlAlarmMark(span, a, barEnd) {
  const el = span(a.acknowledged ? 'alarm acked' : 'alarm', a.start_ms, a.end_ms === null ? barEnd : a.end_ms, [
    `alarm ${a.kind} (${a.category}) on ${a.node}: ${a.detail}`,
    `${fmt(a.start_ms)} – ${a.end_ms === null ? 'still open' : fmt(a.end_ms)}`,
    a.acknowledged ? `acknowledged by ${a.acknowledged.by} at ${fmt(a.acknowledged.time_ms)}` : 'not acknowledged',
    'click: play from its start',
  ].join('\n'));
  el.dataset.id = a.id;
  el.dataset.kind = a.kind;
  el.dataset.open = a.end_ms === null ? '1' : '';
  return el;
}

async function drawTimeline() {
  const key = $('tl-stream').value;
  if (!key) return;
  const draw = ++timelineDraws;
  const [camera, stream] = key.split('/');
  const end = tlView.endMs === null ? Date.now() : tlView.endMs;
  const start = end - tlView.spanMs;
  let data;
  try {
    data = await api('GET', `/api/streams/${encodeURIComponent(camera)}/${encodeURIComponent(stream)}/recordings?start_ms=${start}&end_ms=${end}`);
  } catch (e) {
    $('main-error').textContent = e.message;
    return;
  }
  if (draw !== timelineDraws) return;
  const bar = $('tl-bar');
  const pct = (ms) => `${((Math.min(Math.max(ms, start), end) - start) / (end - start)) * 100}%`;
  const span = (cls, a, b, title) => {
    const el = document.createElement('span');
    el.className = cls;
    el.style.left = pct(a);
    el.style.width = `calc(${pct(b)} - ${pct(a)})`;
    el.title = title;
    el.dataset.startMs = a;
    el.dataset.endMs = b;
    return el;
  };
  bar.dataset.start = start;
  bar.dataset.end = end;
  bar.replaceChildren(
    ...data.spans.map((s) => span('rec', s.start_ms, s.end_ms, `${fmt(s.start_ms)} – ${fmt(s.end_ms)} recorded by ${s.node}`)),
    ...data.gaps.map((g) => span('gap', g.start_ms, g.end_ms, `no recording ${fmt(g.start_ms)} – ${fmt(g.end_ms)}`)),
    ...data.events.map((e) => {
      const el = document.createElement('span');
      el.className = 'event';
      el.style.left = pct(e.time_ms);
      el.title = `${fmt(e.time_ms)} ${e.kind}: ${e.message}`;
      el.dataset.timeMs = e.time_ms;
      el.dataset.kind = e.kind;
      return el;
    }),
    ...data.alarms.map((a) => tlAlarmMark(span, a, end)),
  );
  $('tl-span').textContent = tlSpanText(tlView.spanMs);
  $('tl-start').textContent = fmt(start);
  $('tl-end').textContent = fmt(end);
  const open = data.alarms.filter((a) => a.end_ms === null).length;
  $('tl-summary').textContent = `${data.segment_count} segments, ${data.gaps.length} gaps, ${data.events.length}${data.events_truncated ? '+' : ''} events (orange marks; hover for what happened), `
    + `${data.alarms.length}${data.alarms_truncated ? '+' : ''} alarm${data.alarms.length === 1 ? '' : 's'}${open ? ` (${open} open)` : ''} (striped marks along the top; click one to play from its start)`;
  if (data.alarm_problems.length) $('main-error').textContent = `alarms: ${data.alarm_problems.join('; ')}`;
  $('tl-gaps').tBodies[0].replaceChildren(...data.gaps.map((g) => {
    const tr = document.createElement('tr');
    for (const t of [fmt(g.start_ms), fmt(g.end_ms), `${((g.end_ms - g.start_ms) / 1000).toFixed(1)} s`]) {
      const td = document.createElement('td');
      td.textContent = t;
      tr.append(td);
    }
    return tr;
  }));
}

start();
