// The 16-tile live benchmark: logs in to nvr-web in Debian's headless chromium, shows the 16-tile grid and
// collects each tile's latency (camsim's SEI send time to the rendered frame, window.nvrLiveLatencies)
// over a window after warm-up. CPU (utime+stime from /proc/PID/stat) of the viewer and the recorder is
// taken over an equal window with no viewer (before the page is opened) and over the 16-tile window;
// chromium's (every process below this script's) over the 16-tile window, for reference.
// Usage: node grid.mjs URL USER PASSWORD WEB_PID RECORDER_PID SECONDS
// Prints one JSON line: {"tiles", "streams", "seconds", "latencies_ms": {stream: [ms…]},
// "idle_ticks": {web, recorder}, "grid_ticks": {web, recorder, chromium}, "ticks_per_s"}; exits 1 on failure.
import { launch, openLive, run } from './common.mjs';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

const [url, user, password, webPid, recorderPid, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const ticksPerS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

/// [ppid, utime + stime] of a process from /proc/PID/stat, or null if it is gone.
function stat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command (field 2) is in parentheses and may hold spaces: fields are counted after its ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return [Number(f[1]), Number(f[11]) + Number(f[12])];
}

/// utime + stime (ticks) of `pid` alone.
function ticks(pid) {
  const s = stat(pid);
  if (!s) throw new Error(`process ${pid} is gone`);
  return s[1];
}

/// utime + stime (ticks) of `root` and every process below it, keyed by pid.
function treeTicks(root) {
  const all = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = stat(name);
    if (s) all.set(Number(name), s);
  }
  const out = new Map();
  const walk = (pid) => {
    out.set(pid, all.get(pid)[1]);
    for (const [child, [ppid]] of all) if (ppid === pid) walk(child);
  };
  if (all.has(root)) walk(root);
  return out;
}

/// The ticks of every process below this one: the chromium that playwright launched, all its processes.
function chromiumTicks() {
  const tree = treeTicks(process.pid);
  tree.delete(process.pid);
  return tree;
}

/// Ticks used between two treeTicks snapshots by processes alive at the end (one that started in between
/// counts from zero; one that ended in between is not counted).
function treeDelta(before, after) {
  let sum = 0;
  for (const [pid, t] of after) sum += t - (before.get(pid) || 0);
  return sum;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// No viewer: the recorder records, nvr-web waits.
const idle0 = { web: ticks(webPid), recorder: ticks(recorderPid) };
await sleep(seconds * 1000);
const idleTicks = { web: ticks(webPid) - idle0.web, recorder: ticks(recorderPid) - idle0.recorder };

const browser = await launch();
await run(browser, 'grid benchmark', async () => {
  const page = await openLive(browser, url, user, password, { height: 800 });
  await page.selectOption('#grid-size', '16');
  // Warm-up: every tile plays.
  try {
    await page.waitForFunction(() => {
      const v = document.querySelectorAll('#live video');
      return v.length === 16 && [...v].every((x) => x.currentTime > 1);
    }, null, { timeout: 60000 });
  } catch (e) {
    const times = await page.evaluate(() => [...document.querySelectorAll('#live video')]
      .map((v) => `${v.dataset.stream} ${v.currentTime.toFixed(1)} s`));
    throw new Error(`not every tile plays after 60 s: ${times.join(', ')}: ${e.message}`);
  }
  const tiles = await page.locator('#live .tile').count();
  const streams = await page.evaluate(() => [...document.querySelectorAll('#live video')].map((v) => v.dataset.stream));
  // The window: latencies from here on, CPU of the three over the same span.
  await page.evaluate(() => { for (const list of Object.values(window.nvrLiveLatencies)) list.length = 0; });
  const g0 = { web: ticks(webPid), recorder: ticks(recorderPid), chromium: chromiumTicks() };
  await sleep(seconds * 1000);
  const g1 = { web: ticks(webPid), recorder: ticks(recorderPid), chromium: chromiumTicks() };
  const latencies = await page.evaluate(() => window.nvrLiveLatencies);
  const gridTicks = {
    web: g1.web - g0.web,
    recorder: g1.recorder - g0.recorder,
    chromium: treeDelta(g0.chromium, g1.chromium),
  };
  console.log(JSON.stringify({
    tiles, streams, seconds, latencies_ms: latencies, idle_ticks: idleTicks, grid_ticks: gridTicks, ticks_per_s: ticksPerS,
  }));
});
