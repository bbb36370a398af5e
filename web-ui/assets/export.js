// Evidence export from the timeline, for operators and admins (hidden for viewers): a range chosen in
// the From/To fields or by a shift-drag along the timeline bar, exported through
// /api/streams/…/export.mp4 (docs/api.md, "Exports"); the MP4 is downloaded, then its signed manifest
// (/api/exports/{id}/manifest, written once the last byte went out). window.nvrExport.last holds the
// outcome (the browser test reads it). Uses $ from app.js.
'use strict';

window.nvrExport = (() => {
  const state = { last: null };
  const pad = (n) => String(n).padStart(2, '0');

  /// Wall time as a datetime-local value (local time, to the second).
  function toLocal(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fromLocal(value) {
    const t = new Date(value).getTime();
    return value && Number.isFinite(t) ? t : null;
  }

  function status(text) {
    $('ex-status').textContent = text;
  }

  function setRole(role) {
    $('export').hidden = !(role === 'operator' || role === 'admin');
  }

  /// Sets the range to export (from a shift-drag on the bar).
  function select(a, b) {
    $('ex-from').value = toLocal(Math.min(a, b));
    $('ex-to').value = toLocal(Math.max(a, b));
  }

  function save(blob, name) {
    const href = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = href;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  }

  async function errorText(resp) {
    const data = await resp.json().catch(() => ({}));
    return (data.error && data.error.message) || resp.statusText;
  }

  /// The manifest, once the server has signed it (it is written after the last byte went out).
  async function manifest(id) {
    const deadline = Date.now() + 30000;
    for (;;) {
      const resp = await fetch(`/api/exports/${encodeURIComponent(id)}/manifest`, { credentials: 'same-origin' });
      if (resp.ok) return resp.blob();
      if (resp.status !== 404 || Date.now() > deadline) throw new Error(`manifest: ${await errorText(resp)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async function run() {
    const key = $('tl-stream').value;
    const start = fromLocal($('ex-from').value);
    const end = fromLocal($('ex-to').value);
    if (!key || start === null || end === null || end <= start) {
      status('choose a stream and a range (from before to)');
      return;
    }
    const [camera, stream] = key.split('/');
    const name = `${camera}-${stream}-${toLocal(start).replace(/[-:]/g, '')}`;
    $('ex-go').disabled = true;
    status('exporting…');
    try {
      const resp = await fetch(
        `/api/streams/${encodeURIComponent(camera)}/${encodeURIComponent(stream)}/export.mp4?start_ms=${start}&end_ms=${end}`,
        { credentials: 'same-origin' },
      );
      if (!resp.ok) throw new Error(`export refused: ${await errorText(resp)}`);
      const id = resp.headers.get('X-Export-Id');
      const mp4 = await resp.blob();
      save(mp4, `${name}.mp4`);
      status('signing…');
      save(await manifest(id), `${name}.manifest.json`);
      state.last = { id, bytes: mp4.size, start_ms: start, end_ms: end, ok: true };
      status(`exported ${(mp4.size / 1e6).toFixed(1)} MB: ${name}.mp4 and its manifest downloaded`);
    } catch (e) {
      state.last = { ok: false, error: e.message };
      status(e.message);
    } finally {
      $('ex-go').disabled = false;
    }
  }

  $('ex-go').addEventListener('click', run);
  state.setRole = setRole;
  state.select = select;
  state.toLocal = toLocal;
  return state;
})();
