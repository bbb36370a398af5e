// The cluster page and the alarm banner (docs/web.md). Every node's viewer is asked for its own view
// (GET /api/cluster) and its alarms (GET /api/alarms, every 5 s, for the banner on every page); admins
// acknowledge alarms, hand a stream over and drain a node, each request sent to the node concerned.
// Also redraws the page from another node after a client failover (failover.js).
'use strict';

(() => {
  const ALARM_POLL_MS = 5000;
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  };
  const fo = () => window.nvrFailover;
  const ms = (t) => (t === null || t === undefined ? '–' : new Date(t).toLocaleString());
  const age = (a) => (a === null || a === undefined ? 'never' : `${(a / 1000).toFixed(1)} s`);
  const bytes = (b) => {
    if (b === null || b === undefined) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
  };

  /// GET or POST `path` at `origin` as this session; the JSON answer, or an Error with the API's message.
  async function call(origin, method, path, body) {
    const init = { method, headers: {}, signal: AbortSignal.timeout(4000) };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (method !== 'GET') init.headers['X-CSRF-Token'] = csrf;
    const resp = await fo().fetchAt(origin, path, init);
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
    return data;
  }

  /// `path` from every node at once: [{origin, data} | {origin, error}].
  const fromEvery = (path) => Promise.all(fo().origins().map((origin) => call(origin, 'GET', path)
    .then((data) => ({ origin, data }), (e) => ({ origin, error: e.message }))));

  const isAdmin = () => /\(admin\)/.test(document.getElementById('whoami').textContent);

  function ackButton(origin, alarm, after) {
    if (!isAdmin() || alarm.acknowledged) return null;
    return el('button', {
      class: 'ack',
      'data-alarm': alarm.id,
      onclick: async (ev) => {
        ev.target.disabled = true;
        try { await call(origin, 'POST', '/api/alarms/ack', { id: alarm.id }); } catch (e) { ev.target.title = e.message; }
        after();
      },
    }, 'Acknowledge');
  }

  // --- alarm banner ------------------------------------------------------------------------------

  let pollTimer = null;

  async function drawBanner() {
    const banner = document.getElementById('alarm-banner');
    if (!banner || document.getElementById('main').hidden) return;
    const answers = await fromEvery('/api/alarms');
    const open = answers.flatMap((a) => (a.data ? a.data.alarms : [])
      .filter((x) => x.banner && !x.acknowledged).map((x) => ({ origin: a.origin, alarm: x })));
    banner.hidden = open.length === 0;
    banner.replaceChildren(...open.slice(0, 5).map(({ origin, alarm }) => el('div', { class: `alarm ${alarm.category}` },
      el('strong', {}, `${alarm.category.replace('_', ' ')} on ${alarm.node}: `),
      `${alarm.detail || alarm.kind} (${ms(alarm.time_ms)}) `,
      ackButton(origin, alarm, drawBanner))),
    ...(open.length > 5 ? [el('div', {}, `and ${open.length - 5} more on the cluster page`)] : []));
  }

  function pollAlarms() {
    clearTimeout(pollTimer);
    drawBanner().catch(() => {}).finally(() => { pollTimer = setTimeout(pollAlarms, ALARM_POLL_MS); });
  }

  // --- cluster page ------------------------------------------------------------------------------

  function table(head, rows) {
    return el('table', {}, el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
      el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', {}, c))))));
  }

  function nodeSelect(view, exclude) {
    return el('select', {}, ...view.nodes.filter((n) => n.name !== exclude).map((n) => el('option', { value: n.name }, n.name)));
  }

  function action(label, origin, path, bodyOf, result) {
    return el('button', {
      class: 'admin-action',
      onclick: async () => {
        result.textContent = '…';
        try {
          const r = await call(origin, 'POST', path, bodyOf());
          result.textContent = `done: ${JSON.stringify(r.result)}`;
        } catch (e) {
          result.textContent = e.message;
        }
        setTimeout(drawCluster, 1000);
      },
    }, label);
  }

  function nodeSection(origin, view) {
    const admin = isAdmin();
    const result = el('p', { class: 'action-result' });
    const drainTo = nodeSelect(view, view.node);
    const section = el('section', { class: 'cluster-node', 'data-node': view.node },
      el('h2', {}, `Seen from ${view.node}`, el('small', {}, ` (${view.source === 'arbiter' ? "arbiter's view" : view.source === 'sync' ? "sync agent's view, no arbiter" : 'cluster file only'}, ${ms(view.updated_ms)})`)),
      table(['node', 'role', 'state', 'last heartbeat', 'sync link', 'viewer'], view.nodes.map((n) => [
        `${n.name}${n.self ? ' (this)' : ''}`, n.role,
        n.alive === true ? 'alive' : n.alive === false ? 'DOWN' : 'unknown',
        n.self ? '–' : age(n.heartbeat_age_ms) + (n.flapping ? ' (flapping)' : ''),
        n.sync_connected === null ? '–' : n.sync_connected ? 'connected' : `down${n.sync_error ? `: ${n.sync_error}` : ''}`,
        n.web_url || '–',
      ])),
      table(['stream', 'owner', 'recorded by', 'epoch', 'recorder', 'mirroring lag', 'stored', 'oldest (retention horizon)', ''],
        view.streams.map((s) => {
          const to = nodeSelect(view, s.holder);
          const held = s.holder === view.node;
          return [
            s.stream, s.owner || '–', s.uncovered ? 'NOBODY (uncovered)' : s.holder || '–', s.epoch === null ? '–' : s.epoch,
            s.recorder ? `${s.recorder.mode} · ${s.recorder.state}` : '–',
            s.mirror.length ? s.mirror.map((m) => `${m.peer}: ${age(m.lag_ms)}, ${bytes(m.lag_bytes)}`).join('; ') : '–',
            s.storage ? `${bytes(s.storage.size_bytes)} in ${s.storage.segments}` : '–',
            s.storage ? ms(s.storage.oldest_ms) : '–',
            admin && held && view.source === 'arbiter'
              ? el('span', {}, to, action('Hand over', origin, '/api/cluster/handover', () => ({ stream: s.stream, to: to.value }), result))
              : '',
          ];
        })),
      el('p', {}, `Recordings ${bytes(view.storage.recordings_bytes)}; free on the data disk ${view.storage.disk ? bytes(view.storage.disk.free_bytes) : '–'}; retention: ${
        view.storage.retention.max_age_days ? `${view.storage.retention.max_age_days} days` : 'no age limit'}, ${
        view.storage.retention.max_bytes_per_stream ? `${bytes(view.storage.retention.max_bytes_per_stream)} per stream` : 'no size limit'}, keeps ${bytes(view.storage.retention.min_free_bytes)} free`),
      admin && view.source === 'arbiter' ? el('p', {}, `Drain ${view.node} (hand every stream it records) to `, drainTo,
        action('Drain', origin, '/api/cluster/drain', () => ({ to: drainTo.value }), result)) : null,
      result,
      view.alarms.length ? table(['alarm', 'time', 'about', 'detail', 'acknowledged'], view.alarms.map((a) => [
        `${a.category} · ${a.kind}`, ms(a.time_ms), a.subject || '–', a.detail,
        a.acknowledged ? `by ${a.acknowledged.by}, ${ms(a.acknowledged.time_ms)}` : ackButton(origin, a, () => { drawCluster(); drawBanner(); }) || 'no',
      ])) : el('p', {}, 'No alarms.'),
      view.problems.length ? el('ul', { class: 'problems' }, ...view.problems.map((p) => el('li', {}, p))) : null,
      view.events.length ? el('details', {}, el('summary', {}, 'Recent arbiter events'),
        el('ul', {}, ...view.events.map((e) => el('li', {}, `${ms(e.time_ms)} ${e.message}`)))) : null);
    return section;
  }

  const nodeName = (origin) => {
    const n = fo().nodes.find((x) => x.web_url === origin);
    return n ? `${n.name} (${origin})` : origin;
  };

  async function drawCluster() {
    const box = document.getElementById('cluster');
    if (!box || box.hidden) return;
    const answers = await fromEvery('/api/cluster');
    const toolbar = el('p', { class: 'controls' }, el('button', { id: 'cluster-refresh', onclick: drawCluster }, 'Refresh'),
      ` as of ${new Date().toLocaleTimeString()}`);
    box.replaceChildren(toolbar, ...answers.map((a) => (a.data ? nodeSection(a.origin, a.data)
      : el('section', { class: 'cluster-node down' }, el('h2', {}, nodeName(a.origin)), el('p', { class: 'error' }, `does not answer: ${a.error}`)))));
    box.dataset.drawn = String(Date.now());
  }

  window.nvrCluster = { drawCluster, drawBanner, pollAlarms };

  // Another node took over serving this page: redraw what is shown from it.
  window.addEventListener('nvr-node-changed', () => {
    if (!document.getElementById('live').hidden) buildGrid();
    if (!document.getElementById('timeline').hidden) fillTimelineStreams().then(drawTimeline);
    drawCluster();
    pollAlarms();
  });
})();
