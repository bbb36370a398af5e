// Timeline playback: a click on the timeline bar (or the end of a drag along it) plays the stream from
// that time (a click on an alarm's mark: from the alarm's start), through Media Source Extensions over /api/streams/…/play.mp4 (docs/api.md, "Playback"):
// one continuous MP4 across segment boundaries; at a gap the file ends and playback goes on at the next
// recording. Speeds 1/2/4/8×, one frame back or forward. Frames carrying camsim stamps are recorded in
// window.nvrPlayback.frames (the browser test reads them). Uses $, concat, avcCodec, findTimescale and
// STAMP_UUID from app.js.
'use strict';

window.nvrPlayback = { requested_ms: null, media_start_ms: null, frames: [], status: '' };
let pbSession = null;

/// Wall time under the pointer on the timeline bar.
function pbTimeAt(ev) {
  const bar = $('tl-bar');
  const r = bar.getBoundingClientRect();
  const f = Math.min(Math.max((ev.clientX - r.left) / r.width, 0), 1);
  const start = Number(bar.dataset.start);
  const end = Number(bar.dataset.end);
  return Math.round(start + f * (end - start));
}

function pbCursor(ms) {
  const bar = $('tl-bar');
  let c = bar.querySelector('.cursor');
  if (!c) {
    c = document.createElement('span');
    c.className = 'cursor';
    bar.append(c);
  }
  const start = Number(bar.dataset.start);
  const end = Number(bar.dataset.end);
  c.style.left = `${((ms - start) / (end - start)) * 100}%`;
}

let pbDragging = false;
let pbDragFrom = null;
/// The alarm mark a press began on, and where: released there, it plays from the alarm's start.
let pbAlarm = null;
$('tl-bar').addEventListener('pointerdown', (ev) => {
  if (!$('tl-bar').dataset.start) return;
  pbDragging = true;
  pbDragFrom = pbTimeAt(ev);
  const mark = ev.target.closest ? ev.target.closest('.alarm') : null;
  pbAlarm = mark ? { mark, x: ev.clientX } : null;
  $('tl-bar').setPointerCapture(ev.pointerId);
  pbCursor(pbTimeAt(ev));
});
$('tl-bar').addEventListener('pointermove', (ev) => { if (pbDragging) pbCursor(pbTimeAt(ev)); });
$('tl-bar').addEventListener('pointerup', (ev) => {
  if (!pbDragging) return;
  pbDragging = false;
  // A shift-drag chooses the range to export (export.js; operators and admins) instead of seeking.
  if (ev.shiftKey && !$('export').hidden) window.nvrExport.select(pbDragFrom, pbTimeAt(ev));
  else if (pbAlarm && Math.abs(ev.clientX - pbAlarm.x) < 4) playAt(Number(pbAlarm.mark.dataset.startMs));
  else playAt(pbTimeAt(ev));
});

$('pb-speed').addEventListener('change', () => { $('pb-video').playbackRate = Number($('pb-speed').value); });
$('pb-play').addEventListener('click', () => {
  const v = $('pb-video');
  if (v.paused) v.play().catch(() => {}); else v.pause();
});
$('pb-video').addEventListener('play', () => { $('pb-play').textContent = 'Pause'; });
$('pb-video').addEventListener('pause', () => { $('pb-play').textContent = 'Play'; });
$('pb-step').addEventListener('click', () => pbStep(1));
$('pb-back').addEventListener('click', () => pbStep(-1));
$('pb-video').addEventListener('ended', () => {
  const s = pbSession;
  if (s && s.next !== null) playAt(s.next);
});

/// One frame forward or back: paused, on the next or previous frame's presentation time.
function pbStep(dir) {
  const s = pbSession;
  const v = $('pb-video');
  if (!s) return;
  v.pause();
  const now = s.lastMediaTime !== null ? s.lastMediaTime : v.currentTime;
  v.currentTime = Math.max(0, now + (dir * s.stamps.frameMs) / 1000 + 0.0005);
}

function pbStatus(text) {
  $('pb-status').textContent = text;
  window.nvrPlayback.status = text;
}

/// The camsim stamp (sequence number, send time in µs) in one sample's NAL units, or null.
function stampOf(sample) {
  const i = indexOf(sample, STAMP_UUID, 0);
  if (i < 0) return null;
  const out = [];
  let zeros = 0;
  for (let k = i + 16; k < sample.length && out.length < 16; k++) {
    const b = sample[k];
    if (zeros >= 2 && b === 3) { zeros = 0; continue; }
    zeros = b === 0 ? zeros + 1 : 0;
    out.push(b);
  }
  if (out.length < 16) return null;
  let seq = 0;
  let sendUs = 0;
  for (let k = 0; k < 8; k++) seq = seq * 256 + out[k];
  for (let k = 8; k < 16; k++) sendUs = sendUs * 256 + out[k];
  return { seq, sendUs };
}

/// Reads the fMP4 as it arrives: every video sample's decode time (ms) → its camsim stamp.
class SampleStamps {
  constructor() { this.buf = new Uint8Array(0); this.timescale = 90000; this.byMs = new Map(); this.frameMs = 40; }
  push(bytes) {
    this.buf = concat(this.buf, bytes);
    let off = 0;
    const size = (at) => (this.buf.length - at >= 8 ? new DataView(this.buf.buffer, this.buf.byteOffset + at).getUint32(0) : 0);
    const type = (at) => String.fromCharCode(...this.buf.subarray(at + 4, at + 8));
    for (;;) {
      const n = size(off);
      if (n < 8 || this.buf.length - off < n) break;
      const t = type(off);
      if (t === 'moof') {
        const m = size(off + n);
        if (m < 8 || this.buf.length - off - n < m) break;
        this.fragment(off, n);
        off += n + m;
        continue;
      }
      if (t === 'moov') this.timescale = findTimescale(this.buf.subarray(off, off + n)) || this.timescale;
      off += n;
    }
    this.buf = this.buf.slice(off);
  }
  /// The first traf of the moof at `at` (the video track) and its samples in the mdat after it.
  fragment(at, len) {
    const dv = new DataView(this.buf.buffer, this.buf.byteOffset);
    let decode = null;
    let trun = null;
    const walk = (from, to) => {
      for (let p = from; p + 8 <= to;) {
        const n = dv.getUint32(p);
        if (n < 8) return;
        const t = String.fromCharCode(...this.buf.subarray(p + 4, p + 8));
        if (t === 'traf') { if (trun === null) walk(p + 8, p + n); else return; }
        if (t === 'tfdt' && decode === null) decode = this.buf[p + 8] === 1 ? dv.getUint32(p + 12) * 2 ** 32 + dv.getUint32(p + 16) : dv.getUint32(p + 12);
        if (t === 'trun' && trun === null) trun = p;
        p += n;
      }
    };
    walk(at + 8, at + len);
    if (decode === null || trun === null) return;
    const flags = dv.getUint32(trun + 8) & 0xffffff;
    const count = dv.getUint32(trun + 12);
    let p = trun + 16;
    let data = at;
    if (flags & 0x1) { data = at + dv.getInt32(p); p += 4; }
    if (flags & 0x4) p += 4;
    for (let i = 0; i < count; i++) {
      const duration = flags & 0x100 ? dv.getUint32(p) : 0;
      if (flags & 0x100) p += 4;
      const sz = flags & 0x200 ? dv.getUint32(p) : 0;
      if (flags & 0x200) p += 4;
      if (flags & 0x400) p += 4;
      if (flags & 0x800) p += 4;
      const st = stampOf(this.buf.subarray(data, data + sz));
      const ms = Math.round((decode / this.timescale) * 1000);
      if (st) this.byMs.set(ms, st);
      if (duration) this.frameMs = (duration / this.timescale) * 1000;
      decode += duration;
      data += sz;
    }
    if (this.byMs.size > 20000) this.byMs.delete(this.byMs.keys().next().value);
  }
  at(mediaTime) {
    const ms = Math.round(mediaTime * 1000);
    return this.byMs.get(ms) || this.byMs.get(ms - 1) || this.byMs.get(ms + 1) || null;
  }
}

function stopPlayback() {
  if (pbSession) pbSession.abort.abort();
  pbSession = null;
}

const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false }) + `.${String(Math.round(ms) % 1000).padStart(3, '0')}`;

/// Plays the selected stream from wall time `t` (ms).
async function playAt(t) {
  stopPlayback();
  const key = $('tl-stream').value;
  if (!key) return;
  const [camera, stream] = key.split('/');
  const s = { abort: new AbortController(), stamps: new SampleStamps(), next: null, mediaStart: null, lastMediaTime: null, seekAt: null };
  pbSession = s;
  window.nvrPlayback.requested_ms = t;
  window.nvrPlayback.media_start_ms = null;
  window.nvrPlayback.frames = [];
  pbCursor(t);
  $('player').hidden = false;
  pbStatus(`loading ${fmtTime(t)}…`);
  const video = $('pb-video');
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
  const end = Math.min(t + 30 * 60 * 1000, Date.now());
  let resp;
  try {
    resp = await fetch(`/api/streams/${encodeURIComponent(camera)}/${encodeURIComponent(stream)}/play.mp4?start_ms=${t}&end_ms=${Math.max(end, t + 1)}`,
      { credentials: 'same-origin', signal: s.abort.signal });
  } catch (e) {
    return;
  }
  if (!resp.ok) {
    const data = await resp.json().catch(() => ({}));
    pbStatus((data.error && data.error.message) || resp.statusText);
    return;
  }
  s.mediaStart = Number(resp.headers.get('X-Media-Start-Ms'));
  const next = resp.headers.get('X-Next-Start-Ms');
  s.next = next === null ? null : Number(next);
  window.nvrPlayback.media_start_ms = s.mediaStart;
  const target = Math.max(0, (t - s.mediaStart) / 1000);
  const onFrame = (now, meta) => {
    if (pbSession !== s) return;
    // Frames presented before the seek to the clicked time is done (the file's first frame) are not
    // counted.
    if (s.seekAt === null || video.seeking) {
      video.requestVideoFrameCallback(onFrame);
      return;
    }
    s.lastMediaTime = meta.mediaTime;
    const wall = s.mediaStart + meta.mediaTime * 1000;
    const st = s.stamps.at(meta.mediaTime);
    const list = window.nvrPlayback.frames;
    list.push({ wall_ms: wall, media_time: meta.mediaTime, seq: st ? st.seq : null, send_us: st ? st.sendUs : null, at_ms: now });
    if (list.length > 5000) list.shift();
    $('pb-time').textContent = fmtTime(wall);
    pbCursor(wall);
    video.requestVideoFrameCallback(onFrame);
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  const reader = resp.body.getReader();
  let sb = null;
  let head = new Uint8Array(0);
  const pending = [];
  let seeked = false;
  const pump = () => {
    if (!sb || sb.updating) return;
    if (pending.length) { sb.appendBuffer(pending.shift()); return; }
    if (sb.buffered.length && video.currentTime - sb.buffered.start(0) > 60) sb.remove(0, video.currentTime - 20);
  };
  const settle = () => new Promise((r) => { if (!sb || !sb.updating) r(); else sb.addEventListener('updateend', r, { once: true }); });
  try {
    for (;;) {
      // Read ahead at most a minute of media.
      while (seeked && video.buffered.length && video.buffered.end(video.buffered.length - 1) - video.currentTime > 60) {
        await new Promise((r) => setTimeout(r, 500));
        if (pbSession !== s) return;
      }
      const { value, done } = await reader.read();
      if (done) break;
      s.stamps.push(value);
      if (!sb) {
        head = concat(head, value);
        const codec = avcCodec(head);
        if (!codec) { if (head.length > 1 << 20) throw new Error('no H.264 init segment'); continue; }
        sb = ms.addSourceBuffer(`video/mp4; codecs="${codec}"`);
        sb.addEventListener('updateend', () => {
          pump();
          const b = video.buffered;
          if (!seeked && b.length && b.end(b.length - 1) > target) {
            seeked = true;
            s.seekAt = performance.now();
            // Paused on the clicked frame first (it is shown, and counted), then playing from it.
            video.addEventListener('seeked', () => {
              if (pbSession !== s) return;
              video.playbackRate = Number($('pb-speed').value);
              setTimeout(() => { if (pbSession === s) video.play().catch(() => {}); }, 100);
            }, { once: true });
            video.currentTime = target;
            pbStatus(s.next === null ? 'playing' : `playing; recording stops at ${fmtTime(Number(resp.headers.get('X-Media-End-Ms')))}, goes on at ${fmtTime(s.next)}`);
          }
        });
        pending.push(head);
      } else {
        pending.push(value);
      }
      pump();
    }
    // Until nothing is pending and the buffer is idle: the updateend listener's pump may start a
    // remove() right after the last append, and endOfStream() throws while the buffer updates.
    while (pending.length || (sb && sb.updating)) { pump(); await settle(); }
    if (ms.readyState === 'open' && !(sb && sb.updating)) ms.endOfStream();
  } catch (e) {
    if (!s.abort.signal.aborted) pbStatus(e.message);
  }
}

// Leaving the timeline stops playback.
$('tab-live').addEventListener('click', () => { stopPlayback(); $('pb-video').pause(); });
