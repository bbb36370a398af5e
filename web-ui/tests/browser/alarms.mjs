// Alarms on the timeline in Debian's headless chromium: logs in, opens the timeline (10 minutes), reads
// the alarm marks drawn on the bar (place, times, right end, hover text) and the summary line, then clicks the
// middle of the mark of alarm ID and records where playback went: the time asked for and the first
// frame shown for it (window.nvrPlayback, sampled every 5 ms: at the end of the recording the page
// goes on after the gap and starts a new list).
// Usage: node alarms.mjs URL USER PASSWORD ID SCREENSHOT.png
// Prints one JSON line: {"bar", "alarms", "summary", "requested_ms", "first_frame", "status"};
// exits 1 on failure.
import { launch, openLive, openTimeline10Min, run } from './common.mjs';

const [url, user, password, id, screenshot] = process.argv.slice(2);
const browser = await launch();
await run(browser, 'browser test', async () => {
  const page = await openLive(browser, url, user, password);
  await openTimeline10Min(page);
  const drawn = await page.evaluate(() => {
    const b = document.querySelector('#tl-bar');
    return {
      bar: { start: Number(b.dataset.start), end: Number(b.dataset.end) },
      alarms: [...b.querySelectorAll('.alarm')].map((a) => ({
        id: a.dataset.id, kind: a.dataset.kind, start_ms: Number(a.dataset.startMs), end_ms: Number(a.dataset.endMs),
        open: a.dataset.open === '1', left: parseFloat(a.style.left), title: a.title, classes: a.className,
        // From the mark's right end to the bar's inner right edge, in pixels.
        right_gap_px: b.getBoundingClientRect().left + b.clientLeft + b.clientWidth - a.getBoundingClientRect().right,
      })),
      summary: document.querySelector('#tl-summary').textContent,
    };
  });
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  // Sample the first frame shown for each playback request.
  await page.evaluate(() => {
    window.alarmTest = { first: {} };
    setInterval(() => {
      const p = window.nvrPlayback;
      if (p.requested_ms !== null && p.frames.length && !(p.requested_ms in window.alarmTest.first)) {
        window.alarmTest.first[p.requested_ms] = { ...p.frames[0], media_start_ms: p.media_start_ms };
      }
    }, 5);
  });
  const mark = page.locator(`#tl-bar .alarm[data-id="${id}"]`);
  const box = await mark.boundingBox();
  await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  const requested = await page.evaluate(() => window.nvrPlayback.requested_ms);
  await page.waitForFunction((t) => t in window.alarmTest.first, requested, { timeout: 60000 });
  const result = await page.evaluate((t) => ({
    first_frame: window.alarmTest.first[t],
    status: window.nvrPlayback.status,
  }), requested);
  console.log(JSON.stringify({ ...drawn, requested_ms: requested, ...result }));
}, async () => JSON.stringify(await browser.contexts()[0].pages()[0].evaluate(() => window.nvrPlayback)));
