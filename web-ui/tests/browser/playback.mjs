// Timeline playback in Debian's headless chromium: logs in, opens the timeline (10 minutes), reads the
// drawn gaps, clicks the bar at wall time T and records the frames shown (camsim stamps, from the page's
// window.nvrPlayback), steps one frame while paused, then plays at 4× on past the outage; reads the events
// drawn on the bar, then zooms in with the + button and out with the mouse wheel (a second screenshot,
// SCREENSHOT-zoom.png, shows the timeline then).
// Usage: node playback.mjs URL USER PASSWORD T_MS SCREENSHOT.png
// Prints one JSON line: {"bar", "gaps", "requested_ms", "media_start_ms", "frames", "rate",
// "step_before", "step_after", "continued", "events", "zoom"}; exits 1 on failure.
import { launch, openLive, openTimeline10Min, run } from './common.mjs';

const [url, user, password, tArg, screenshot] = process.argv.slice(2);
const t = Number(tArg);
const browser = await launch();
await run(browser, 'browser test', async () => {
  const page = await openLive(browser, url, user, password);
  await openTimeline10Min(page);
  const { bar, gaps, events } = await page.evaluate(() => {
    const b = document.querySelector('#tl-bar');
    return {
      bar: { start: Number(b.dataset.start), end: Number(b.dataset.end) },
      gaps: [...b.querySelectorAll('.gap')].map((g) => ({
        start_ms: Number(g.dataset.startMs), end_ms: Number(g.dataset.endMs), left: parseFloat(g.style.left),
      })),
      events: [...b.querySelectorAll('.event')].map((e) => ({
        time_ms: Number(e.dataset.timeMs), kind: e.dataset.kind, left: parseFloat(e.style.left),
      })),
    };
  });
  const box = await page.locator('#tl-bar').boundingBox();
  const x = box.x + ((t - bar.start) / (bar.end - bar.start)) * box.width;
  await page.mouse.click(x, box.y + box.height / 2);
  // About four seconds of playback from the click.
  await page.waitForFunction(() => window.nvrPlayback.frames.filter((f) => f.seq !== null).length > 0, null, { timeout: 60000 });
  await page.waitForFunction(() => {
    const f = window.nvrPlayback.frames;
    return f.length && f[f.length - 1].wall_ms - window.nvrPlayback.requested_ms > 4000;
  }, null, { timeout: 60000 });
  const state = await page.evaluate(() => ({
    requested_ms: window.nvrPlayback.requested_ms,
    media_start_ms: window.nvrPlayback.media_start_ms,
    frames: window.nvrPlayback.frames.slice(0, 400),
  }));
  if (screenshot) await page.screenshot({ path: screenshot });
  // Paused, one frame forward.
  await page.click('#pb-play');
  await page.waitForFunction(() => document.querySelector('#pb-video').paused);
  await page.waitForTimeout(500);
  const before = await page.evaluate(() => { const f = window.nvrPlayback.frames; return { n: f.length, last: f[f.length - 1] }; });
  await page.click('#pb-step');
  await page.waitForFunction((n) => window.nvrPlayback.frames.length > n, before.n, { timeout: 30000 });
  await page.waitForTimeout(300);
  const after = await page.evaluate(() => { const f = window.nvrPlayback.frames; return f[f.length - 1]; });
  // 4×, playing on to the end of the recording before the outage: the page goes on after the gap.
  await page.selectOption('#pb-speed', '4');
  const rate = await page.evaluate(() => document.querySelector('#pb-video').playbackRate);
  await page.click('#pb-play');
  const first = state.requested_ms;
  await page.waitForFunction((t) => window.nvrPlayback.requested_ms !== t && window.nvrPlayback.frames.length > 0, first, { timeout: 60000 });
  const continued = await page.evaluate(() => ({ at: window.nvrPlayback.requested_ms, frame: window.nvrPlayback.frames[0] }));
  // Zoom: the + button halves the visible span around its middle, the wheel over the bar doubles it.
  const barNow = () => page.evaluate(() => {
    const b = document.querySelector('#tl-bar');
    return { start: Number(b.dataset.start), end: Number(b.dataset.end) };
  });
  const spanIs = (ms) => page.waitForFunction((want) => {
    const b = document.querySelector('#tl-bar');
    return Number(b.dataset.end) - Number(b.dataset.start) === want;
  }, ms, { timeout: 30000 });
  const zoomFrom = await barNow();
  await page.click('#tl-zoom-in');
  await spanIs((zoomFrom.end - zoomFrom.start) / 2);
  const zoomIn = await barNow();
  const zbox = await page.locator('#tl-bar').boundingBox();
  await page.mouse.move(zbox.x + zbox.width / 2, zbox.y + zbox.height / 2);
  await page.mouse.wheel(0, 100);
  await spanIs((zoomIn.end - zoomIn.start) * 2);
  const zoomOut = await barNow();
  if (screenshot) await page.screenshot({ path: screenshot.replace(/\.png$/, '-zoom.png'), fullPage: true });
  const zoom = { from: zoomFrom, zoom_in: zoomIn, wheel_out: zoomOut, label: await page.textContent('#tl-span') };
  console.log(JSON.stringify({ bar, gaps, events, ...state, rate, step_before: before.last, step_after: after, continued, zoom }));
}, async () => JSON.stringify(await browser.contexts()[0].pages()[0].evaluate(() => window.nvrPlayback)));
