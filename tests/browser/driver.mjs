// driver.mjs — a headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core, one
// JSON command per line on stdin, one JSON answer per line on stdout. tests/e2e/browser.py starts
// it and speaks to it; the tests themselves are Python, beside the daemon they drive.
//
// A command: {"op": ..., "page": "main", ...}. "page" names a browser context of its own
// (cookies are per context), made by the first command that names it. Answers:
// {"ok": true, "value": ...} or {"ok": false, "error": "..."}.
//   goto {url}                 -> the HTTP status of the main resource
//   click {selector}           fill {selector, value}       select {selector, value}
//   check {selector}           upload {selector, path}      press {selector, key}
//   text {selector}            -> innerText of the first match
//   texts {selector}           -> innerText of every match
//   count {selector}           -> how many match now
//   wait {selector, state?, timeout?}   state: visible (default) | hidden | attached | detached
//   wait_text {selector, text, timeout?} until the element's text contains `text`
//   eval {expr}                -> the value of a JavaScript expression in the page
//   url                        -> the page's URL
//   screenshot {path}          (a full-page PNG)
//   cookies                    -> the context's cookies
//   errors                     -> page errors and console errors seen so far (then cleared)
//   close {page}               quit
// Chromium runs with --no-sandbox (tests run as root); certificate errors are ignored because
// the consoles' test certificates come from the daemon's own test CAs, which the tests check
// through the API and openssl instead.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const executablePath = process.env.POSTERN_CHROMIUM || '/usr/bin/chromium';
const defaultTimeout = Number(process.env.POSTERN_BROWSER_TIMEOUT_MS || 15000);
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const pages = new Map();  // name -> {context, page, errors}

async function pageOf(name) {
  name = name || 'main';
  let p = pages.get(name);
  if (!p) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(defaultTimeout);
    const errors = [];
    page.on('pageerror', (e) => errors.push('pageerror: ' + e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
    p = { context, page, errors };
    pages.set(name, p);
  }
  return p;
}

async function run(cmd) {
  const p = await pageOf(cmd.page);
  const page = p.page;
  const t = cmd.timeout !== undefined ? { timeout: cmd.timeout } : {};
  switch (cmd.op) {
    case 'goto': {
      const r = await page.goto(cmd.url, { waitUntil: 'load', ...t });
      return r ? r.status() : null;
    }
    case 'click': await page.click(cmd.selector, t); return null;
    case 'fill': await page.fill(cmd.selector, String(cmd.value), t); return null;
    case 'select': await page.selectOption(cmd.selector, String(cmd.value), t); return null;
    case 'check': await page.check(cmd.selector, t); return null;
    case 'upload': await page.setInputFiles(cmd.selector, cmd.path, t); return null;
    case 'press': await page.press(cmd.selector, cmd.key, t); return null;
    case 'text': return await page.innerText(cmd.selector, t);
    case 'texts': return await page.locator(cmd.selector).allInnerTexts();
    case 'count': return await page.locator(cmd.selector).count();
    case 'wait': await page.waitForSelector(cmd.selector, { state: cmd.state || 'visible', ...t }); return null;
    case 'wait_text':
      await page.waitForFunction(
        ([sel, text]) => { const e = document.querySelector(sel); return !!e && e.innerText.includes(text); },
        [cmd.selector, cmd.text], t);
      return null;
    case 'eval': return await page.evaluate(cmd.expr);
    case 'url': return page.url();
    case 'screenshot': await page.screenshot({ path: cmd.path, fullPage: true }); return cmd.path;
    case 'cookies': return await p.context.cookies();
    case 'errors': { const e = p.errors.splice(0); return e; }
    case 'close_page': await p.context.close(); pages.delete(cmd.page || 'main'); return null;
    default: throw new Error('unknown op ' + cmd.op);
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let cmd;
  try { cmd = JSON.parse(line); } catch (e) { process.stdout.write(JSON.stringify({ ok: false, error: 'bad JSON: ' + e.message }) + '\n'); continue; }
  if (cmd.op === 'close') break;
  try {
    const value = await run(cmd);
    process.stdout.write(JSON.stringify({ ok: true, value: value === undefined ? null : value }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e).split('\n').slice(0, 6).join('\n') }) + '\n');
  }
}
await browser.close();
