// Logs in to nvr-web through its page in Debian's headless chromium and waits for a live tile to play.
// Usage: node live.mjs URL USER PASSWORD SCREENSHOT.png
// Prints one JSON line: {"wrong_password_error", "login_hidden", "tiles", "samples": [currentTime…], "timeline",
// "recorded_spans", "latencies_ms", "grid_stream", "focused_stream", "focused_tiles"}; exits 1 on failure.
import { launch, newPage, run, submitLogin } from './common.mjs';

const [url, user, password, screenshot] = process.argv.slice(2);
const browser = await launch();
await run(browser, 'browser test', async () => {
  const page = await newPage(browser, { height: 800 });
  await page.goto(url);
  await submitLogin(page, user, 'not the password');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent !== '');
  const wrongPasswordError = await page.textContent('#login-error');
  await submitLogin(page, user, password);
  await page.waitForSelector('#live video', { timeout: 30000 });
  await page.waitForFunction(() => {
    const v = document.querySelector('#live video');
    return v && v.currentTime > 1;
  }, null, { timeout: 60000 });
  const samples = [];
  for (let i = 0; i < 4; i++) {
    samples.push(await page.evaluate(() => document.querySelector('#live video').currentTime));
    await page.waitForTimeout(500);
  }
  // Latency from camsim's send time to the frame on screen (requestVideoFrameCallback), over ~4 s.
  await page.waitForTimeout(4000);
  const latencies = await page.evaluate(() => window.nvrLiveLatencies['cam/sub'] || []);
  const tiles = await page.locator('#live .tile').count();
  const loginHidden = await page.isHidden('#login');
  const gridStream = await page.getAttribute('#live video', 'data-stream');
  if (screenshot) await page.screenshot({ path: screenshot });
  // A click on a tile shows its camera's main stream alone, playing.
  await page.click('#live .tile');
  await page.waitForFunction(() => {
    const v = document.querySelectorAll('#live video');
    return v.length === 1 && v[0].dataset.stream.endsWith('/main') && v[0].currentTime > 1;
  }, null, { timeout: 60000 });
  const focusedStream = await page.getAttribute('#live video', 'data-stream');
  const focusedTiles = await page.locator('#live .tile').count();
  // The timeline of the first stream: recorded spans drawn, a summary line.
  await page.click('#tab-timeline');
  await page.waitForFunction(() => document.querySelector('#tl-summary').textContent !== '', null, { timeout: 30000 });
  const timeline = await page.textContent('#tl-summary');
  const recordedSpans = await page.locator('#tl-bar .rec').count();
  if (screenshot) await page.screenshot({ path: screenshot.replace(/\.png$/, '-timeline.png') });
  console.log(JSON.stringify({
    wrong_password_error: wrongPasswordError, login_hidden: loginHidden, tiles, samples, timeline, recorded_spans: recordedSpans,
    latencies_ms: latencies, grid_stream: gridStream, focused_stream: focusedStream, focused_tiles: focusedTiles,
  }));
});
