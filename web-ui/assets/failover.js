// Client failover between the cluster's viewers (docs/web.md, "Client failover"). Loaded before
// app.js: it wraps fetch() so that every /api/ request goes to the node in use, which is this page's
// own origin until that node stops answering. Requests to another node's origin carry the session as
// `Authorization: Bearer` (the cookie does not reach other origins) and no cookie; that node's CORS
// answer allows exactly the cluster's viewer origins. A heartbeat (GET /api/me every 500 ms, 1 s
// timeout) or any failed request starts a race of /api/me on every node; the first that accepts the
// session becomes the node in use, and the page redraws from it (live tiles restart) without a reload.
'use strict';

(() => {
  const nativeFetch = window.fetch.bind(window);
  const HEARTBEAT_MS = 500;
  const TIMEOUT_MS = 1000;
  const state = {
    base: location.origin, // the node in use
    node: '',
    token: '',
    nodes: [], // [{name, role, web_url}] from /api/nodes
    switches: [], // [{from, to, node, at_ms}]
    racing: null,
    running: false,
  };
  window.nvrFailover = state;

  /// fetch() of an API path at `origin`, authenticated as this page's session.
  state.fetchAt = (origin, path, init) => {
    if (origin === location.origin) return nativeFetch(path, { credentials: 'same-origin', ...init });
    const headers = new Headers((init && init.headers) || {});
    headers.set('Authorization', `Bearer ${state.token}`);
    return nativeFetch(origin + path, { ...init, headers, credentials: 'omit', mode: 'cors' });
  };

  /// The origins to read cluster-wide data from: every node's viewer (the node in use by the origin
  /// the page reaches it at, which may be another name than its web_url), or this one alone.
  state.origins = () => {
    const urls = state.nodes
      .map((n) => (n.name === state.node ? state.base : n.web_url))
      .filter(Boolean);
    return urls.length ? [...new Set(urls)] : [state.base];
  };

  window.fetch = (input, init) => {
    if (typeof input !== 'string' || !input.startsWith('/api/')) return nativeFetch(input, init);
    return state.fetchAt(state.base, input, init).catch((e) => {
      if (!(init && init.signal && init.signal.aborted)) suspect();
      throw e;
    });
  };

  async function me(origin, timeoutMs) {
    const resp = await state.fetchAt(origin, '/api/me', { signal: AbortSignal.timeout(timeoutMs) });
    if (!resp.ok) {
      const err = new Error(`${origin}: ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return resp.json();
  }

  function suspect() {
    if (!state.running || state.racing) return;
    state.racing = race().finally(() => { state.racing = null; });
  }

  /// /api/me on every node at once; the first to accept the session is the node in use.
  async function race() {
    const candidates = [...new Set([state.base, ...state.nodes.map((n) => n.web_url).filter(Boolean)])];
    let winner;
    try {
      winner = await Promise.any(candidates.map((o) => me(o, 1500).then((m) => [o, m])));
    } catch (e) {
      setBadge('no node answers');
      return;
    }
    const [origin, answer] = winner;
    if (origin === state.base) return;
    const from = state.base;
    state.base = origin;
    state.node = answer.node;
    state.switches.push({ from, to: origin, node: answer.node, at_ms: Date.now() });
    setBadge(`via ${answer.node}`);
    window.dispatchEvent(new CustomEvent('nvr-node-changed', { detail: { from, to: origin, node: answer.node } }));
  }

  function setBadge(text) {
    const el = document.getElementById('node-badge');
    if (el) el.textContent = text;
  }

  async function beat() {
    if (!state.running) return;
    const main = document.getElementById('main');
    if (main && !main.hidden && !state.racing) {
      try {
        await me(state.base, TIMEOUT_MS);
      } catch (e) {
        if (e.status === 401) {
          // Logged out or the user removed: the page shows the login form again.
          state.running = false;
          if (typeof show === 'function') show('login');
          return;
        }
        suspect();
      }
    }
    setTimeout(beat, HEARTBEAT_MS);
  }

  // Logging out forgets the token, once app.js's handler has sent its request with it.
  const logout = document.getElementById('logout');
  if (logout) logout.addEventListener('click', () => setTimeout(() => { state.token = ''; }, 0));

  /// Called once logged in (app.js): keeps the session's token, learns the viewers, starts beating.
  state.start = async (session) => {
    if (session.token) state.token = session.token;
    state.node = session.node || state.node;
    try {
      const resp = await state.fetchAt(state.base, '/api/nodes', {});
      if (resp.ok) {
        const answer = await resp.json();
        state.nodes = answer.nodes;
        state.node = answer.node;
      }
    } catch (e) {
      suspect();
    }
    if (!state.running) {
      state.running = true;
      setTimeout(beat, HEARTBEAT_MS);
    }
  };
})();
