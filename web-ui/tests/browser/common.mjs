// What the browser scripts share: Debian's headless chromium, a page that trusts the viewer's
// self-signed certificate (the Rust tests check it against its file), the login form, the timeline's
// 10-minute range, and running a script's body so that a failure prints its cause and exits 1.
import { chromium } from 'playwright-core';

/// Debian's headless chromium (`CHROMIUM` names another); with `autoplay`, videos play without a gesture.
export function launch({ autoplay = true } = {}) {
  const args = ['--no-sandbox', '--disable-gpu'];
  if (autoplay) args.push('--autoplay-policy=no-user-gesture-required');
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/lib/chromium/chromium', args });
}

/// A page in a new context of `browser`, 1280 pixels wide and `height` high, with `options` of the context.
export async function newPage(browser, { height = 900, ...options } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height }, ...options });
  return context.newPage();
}

/// Fills the login form with `user` and `password` and submits it.
export async function submitLogin(page, user, password) {
  await page.fill('#login-user', user);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

/// A new page (see `newPage`) at `url`, logged in as `user`, once the live grid shows its first video.
export async function openLive(browser, url, user, password, pageOptions) {
  const page = await newPage(browser, pageOptions);
  await page.goto(url);
  await submitLogin(page, user, password);
  await page.waitForSelector('#live video', { timeout: 30000 });
  return page;
}

/// Opens the timeline tab on its 10-minute range and waits until the bar spans it.
export async function openTimeline10Min(page) {
  await page.click('#tab-timeline');
  await page.selectOption('#tl-range', '600000');
  await page.waitForFunction(() => {
    const b = document.querySelector('#tl-bar');
    return Number(b.dataset.end) - Number(b.dataset.start) === 600000;
  }, null, { timeout: 30000 });
}

/// Runs `body`; if it throws, prints `label` with the error (and what `diagnose` returns, if it can)
/// and exits 1 once `browser` is closed, else exits 0.
export async function run(browser, label, body, diagnose) {
  let code = 0;
  try {
    await body();
  } catch (e) {
    console.error(`${label}: ${e.stack || e}`);
    if (diagnose) {
      try { console.error(await diagnose()); } catch (_) { /* nothing more to tell */ }
    }
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
}
