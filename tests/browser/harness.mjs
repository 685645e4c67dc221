// SPDX-License-Identifier: MIT
// harness.mjs: what a browser test of the web page needs around the page:
// counted checks, a temporary folder and child processes cleaned up on every
// exit path, a watchdog, the tiny model, `imgsearch serve` on 127.0.0.1 port
// 0, Debian's Chromium through playwright-core (no browser download), a
// watcher that records requests to other origins and console errors, and
// screenshots into the artifacts folder.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export function harness(name, watchdogMs) {
  const h = { passed: 0, failures: [], children: [], browser: null, expectErrors: false };
  h.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `ims-${name}-`));
  h.check = (cond, what) => {
    if (cond) h.passed++;
    else { h.failures.push(what); console.log(`FAIL: ${what}`); }
    return cond;
  };
  const cleanup = () => {
    for (const c of h.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(h.tmp, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  const watchdog = setTimeout(() => {
    console.log(`FAIL: watchdog: ${name} took too long`);
    process.exit(1);
  }, watchdogMs);

  h.tinyModel = (srcDir, dest) => {
    fs.mkdirSync(dest);
    for (const f of ['config.json', 'model.safetensors'])
      fs.copyFileSync(path.join(srcDir, 'tests/golden/clip/tiny', f), path.join(dest, f));
    for (const f of ['vocab.json', 'merges.txt'])
      fs.copyFileSync(path.join(srcDir, 'data/vocab', f), path.join(dest, f));
    return dest;
  };

  h.waitLine = (child, re, what, ms = 90_000) => new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${buf}`)), ms);
    const on = (d) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) { clearTimeout(t); resolve(m); }
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`${what} exited ${code}: ${buf}`)); });
  });

  // `imgsearch serve` on 127.0.0.1, a free port; apiKey: required for writes
  h.startServe = async (exe, data, model, apiKey = null) => {
    const env = { ...process.env };
    delete env.IMGSEARCH_API_KEY;
    if (apiKey) env.IMGSEARCH_API_KEY = apiKey;
    const c = spawn(exe, ['serve', '--data', data, '--model', model, '--host', '127.0.0.1', '--port', '0'],
      { stdio: ['ignore', 'ignore', 'pipe'], env });
    h.children.push(c);
    const m = await h.waitLine(c, /serving (http:\/\/127\.0\.0\.1:\d+)\//, 'imgsearch serve');
    return m[1];
  };

  h.launch = async (executablePath, viewport) => {
    const userData = fs.mkdtempSync(path.join(h.tmp, 'chromium-'));
    h.browser = await chromium.launchPersistentContext(userData, {
      executablePath, headless: true, viewport,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        // no name resolves but loopback: nothing the browser itself starts
        // (or a page asks for) can leave the machine
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]'],
    });
    return h.browser;
  };

  // every request must go to `origin`; console errors are failures except the
  // "Failed to load resource: 4xx" of a step that provokes one (h.expectErrors)
  h.foreign = [];
  h.consoleErrors = [];
  h.watch = async (page, origin) => {
    // requests to any other origin are recorded (a failure) and blocked
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin + '/')) return route.continue();
      h.foreign.push(url);
      return route.abort('blockedbyclient');
    });
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (h.expectErrors && /Failed to load resource: the server responded with a status of (4\d\d)/.test(m.text())) return;
      h.consoleErrors.push(`${m.text()} [${m.location().url}]`);
    });
    page.on('pageerror', (e) => h.consoleErrors.push(`pageerror: ${e.message}`));
    page.on('dialog', (d) => d.accept());
  };

  h.shot = async (page, dir, file) => {
    const p = path.join(dir, file);
    await page.screenshot({ path: p, fullPage: true });
    console.log(`screenshot: ${p}`);
  };

  // runs main(), then reports and exits with 0 only when every check passed
  h.run = async (main) => {
    try {
      await main();
    } catch (e) {
      console.log(`FAIL: ${e.stack || e}`);
      h.failures.push(String(e));
    } finally {
      if (h.browser) await h.browser.close().catch(() => {});
      clearTimeout(watchdog);
    }
    console.log(`${h.passed} passed, ${h.failures.length} failed`);
    const code = h.failures.length ? 1 : 0;
    cleanup();
    process.exit(code);
  };
  return h;
}
