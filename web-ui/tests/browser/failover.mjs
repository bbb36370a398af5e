// Client failover and the cluster pages in Debian's headless chromium (run by web-ui/tests/browser_cluster.rs).
// Usage: node failover.mjs URL_A URL_B USER PASSWORD A_WEB_PID A_OTHER_PIDS SCREENSHOT_DIR MODE STREAM_A STREAM_B PAGES PREFIX
// A_OTHER_PIDS: node A's other processes (recorder, …), comma-separated; MODE: kill or stop; STREAM_A and
// STREAM_B: the live tile to watch on each node; PAGES: "pages" to visit and screenshot every page first;
// PREFIX: of the screenshots' file names.
// Logs in on node A and sees its live tile play; with PAGES, the alarm banner (acknowledged by the
// admin: it goes), the timeline and the cluster page (both nodes), with a screenshot of each. Then
// SIGKILLs node A's viewer (with MODE stop: SIGSTOPs it, a viewer that hangs without refusing
// connections) and measures how long until the page uses node B and until B's live tile plays,
// SIGKILLs A's other processes, and checks the page went on without a reload, with the same session.
// Prints one JSON line; exits 1 on failure.
import { launch, newPage, run, submitLogin } from './common.mjs';

const [urlA, urlB, user, password, webPid, otherPids, shots, mode, streamA, streamB, pages, prefix = ''] = process.argv.slice(2);
const browser = await launch();
const out = { screenshots: [] };

/// Waits until the tile of `stream` shows frames advancing; returns when (ms since the epoch).
async function tilePlays(page, stream, timeout) {
  await page.waitForFunction((s) => {
    const v = document.querySelector(`#live video[data-stream="${s}"]`);
    if (!v || v.readyState < 2) return false;
    if (v.dataset.firstTime === undefined) { v.dataset.firstTime = String(v.currentTime); return false; }
    return v.currentTime > Number(v.dataset.firstTime);
  }, stream, { timeout, polling: 20 });
  return Date.now();
}

async function shot(page, name) {
  const path = `${shots}/${prefix}${name}.png`;
  await page.screenshot({ path });
  out.screenshots.push(path);
}

await run(browser, 'browser test', async () => {
  // Each viewer's certificate is self-signed (the Rust tests check certificates against their files).
  const page = await newPage(browser, { height: 800 });
  let loads = 0;
  page.on('load', () => { loads++; });
  await page.goto(`${urlA}/`);
  await page.waitForSelector('#login-form', { state: 'visible' });
  await shot(page, 'login');
  await submitLogin(page, user, password);
  await tilePlays(page, streamA, 60000);
  if (pages === 'pages') await visitPages(page);
  await page.evaluate(() => { window.nvrTestMarker = 'same page'; });

  // Node A's viewer dies (or hangs).
  process.kill(Number(webPid), mode === 'stop' ? 'SIGSTOP' : 'SIGKILL');
  const killedMs = Date.now();
  await page.waitForFunction((b) => window.nvrFailover.base === b, urlB, { timeout: 30000, polling: 20 });
  out.switch_ms = Date.now() - killedMs;
  out.live_resumed_ms = (await tilePlays(page, streamB, 30000)) - killedMs;

  // Then the rest of node A. The page goes on from B.
  for (const pid of otherPids.split(',')) process.kill(Number(pid), 'SIGKILL');
  const tile = `#live video[data-stream="${streamB}"]`;
  const before = await page.evaluate((t) => document.querySelector(t).currentTime, tile);
  await page.waitForTimeout(3000);
  out.advanced_s = (await page.evaluate((t) => document.querySelector(t).currentTime, tile)) - before;
  out.marker = await page.evaluate(() => window.nvrTestMarker);
  out.loads = loads;
  out.login_hidden = await page.isHidden('#login');
  out.me = await page.evaluate(async () => (await fetch('/api/me')).json());
  out.badge = await page.textContent('#node-badge');
  out.switches = await page.evaluate(() => window.nvrFailover.switches);
  await shot(page, 'live-after-failover');
  await page.click('#tab-cluster');
  await page.waitForFunction(() => document.querySelector('#cluster .cluster-node.down'), null, { timeout: 30000 });
  out.cluster_after = await page.textContent('#cluster');
  await shot(page, 'cluster-after-failover');
  console.log(JSON.stringify(out));
}, async () => JSON.stringify(out));

/// The alarm banner (acknowledged by the admin: it goes), the timeline and the cluster page, each
/// with its screenshot; back to the live grid.
async function visitPages(page) {
  // The banner: node A's camera that cannot be reached; the admin acknowledges it and it goes.
  await page.waitForSelector('#alarm-banner .alarm.camera_down', { timeout: 60000 });
  out.banner_text = await page.textContent('#alarm-banner');
  await page.waitForTimeout(1500); // the live tile has some seconds on screen
  await shot(page, 'live-with-alarm-banner');
  await page.click('#alarm-banner button.ack');
  await page.waitForSelector('#alarm-banner', { state: 'hidden', timeout: 15000 });
  out.banner_hidden_after_ack = true;
  await shot(page, 'live');

  await page.click('#tab-timeline');
  await page.waitForFunction(() => document.querySelector('#tl-summary').textContent !== '', null, { timeout: 30000 });
  out.timeline = await page.textContent('#tl-summary');
  await shot(page, 'timeline');

  await page.click('#tab-cluster');
  await page.waitForFunction(() => document.querySelectorAll('#cluster .cluster-node[data-node]').length === 2, null, { timeout: 30000 });
  out.cluster_nodes = await page.$$eval('#cluster .cluster-node[data-node]', (s) => s.map((e) => e.dataset.node));
  out.cluster_text = await page.textContent('#cluster');
  await shot(page, 'cluster');

  await page.click('#tab-live');
  await tilePlays(page, streamA, 60000);
}
