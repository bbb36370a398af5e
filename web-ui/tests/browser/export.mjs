// Export from the page in Debian's headless chromium: logs in as an operator, opens the timeline, types
// the range into the export fields, clicks Export and saves the two downloads (the MP4 and its
// manifest); then logs in as a viewer and reads whether the export controls are shown.
// Usage: node export.mjs URL OPERATOR VIEWER PASSWORD FROM_MS TO_MS OUT_DIR SCREENSHOT.png
// Prints one JSON line: {"operator_sees_export", "viewer_sees_export", "last", "downloads": [paths]};
// exits 1 on failure.
import { launch, newPage, run, submitLogin } from './common.mjs';
import path from 'node:path';

const [url, operator, viewer, password, fromArg, toArg, outDir, screenshot] = process.argv.slice(2);
const browser = await launch({ autoplay: false });

async function login(user) {
  const page = await newPage(browser, { acceptDownloads: true });
  await page.goto(url);
  await submitLogin(page, user, password);
  await page.waitForSelector('#main:not([hidden])', { timeout: 30000 });
  await page.click('#tab-timeline');
  await page.waitForFunction(() => document.querySelector('#tl-bar').dataset.end, null, { timeout: 30000 });
  return page;
}

await run(browser, 'browser test', async () => {
  const page = await login(operator);
  const operatorSees = await page.isVisible('#export');
  const [from, to] = await page.evaluate(([a, b]) => [window.nvrExport.toLocal(a), window.nvrExport.toLocal(b)], [Number(fromArg), Number(toArg)]);
  await page.fill('#ex-from', from);
  await page.fill('#ex-to', to);
  const downloads = [];
  page.on('download', (d) => downloads.push(d));
  await page.click('#ex-go');
  await page.waitForFunction(() => window.nvrExport.last !== null, null, { timeout: 120000 });
  const last = await page.evaluate(() => window.nvrExport.last);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  const saved = [];
  for (const d of downloads) {
    const p = path.join(outDir, d.suggestedFilename());
    await d.saveAs(p);
    saved.push(p);
  }
  const viewerPage = await login(viewer);
  const viewerSees = await viewerPage.isVisible('#export');
  console.log(JSON.stringify({ operator_sees_export: operatorSees, viewer_sees_export: viewerSees, last, downloads: saved }));
});
