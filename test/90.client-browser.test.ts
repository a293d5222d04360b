// The client SDK in a real browser: Debian's Chromium (headless, through playwright-core; see test/65.dashboard)
// imports the ES module the monitor serves at /client.js and talks to a real server — text and binary payloads,
// an ACK and a refusal — and examples/ticker.html, opened as a file, shows the quotes, rides out a server restart
// (its status goes through disconnected and back, each subject reports resync) and shows the quotes after it.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { connect } from 'starling/client';
import { CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM, TIMEOUT_MS, describeWith, startServer } from './helpers';
import { ServerChild } from './hostile-kit';
import { Recorder, restartablePort } from './client-kit';

const SUITE = { timeout: 120_000 };
const TICKER = path.join(__dirname, '..', '..', 'examples', 'ticker.html');
const MONITORED = { Monitor: 'HTTP', 'MonitorHTTP.Listen': '127.0.0.1:0' };

/** Polls the page expression `expr` every 50 ms until it is truthy; returns its value. */
async function pageWait<T>(page: Page, expr: string, what: string): Promise<T> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const v = (await page.evaluate(expr)) as T;
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what} (${expr})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}


describeWith(NEEDS_CHROMIUM, 'the client SDK in headless Chromium', SUITE, () => {
  let browser: Browser;
  const problems: string[] = [];
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
  });

  async function newPage(): Promise<Page> {
    const page = await browser.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // Chromium logs each failed connection attempt (the server is down during a restart): expected, not a problem.
    page.on('console', (m) => m.type() === 'error' && !/^WebSocket connection to .* failed/.test(m.text()) && problems.push(`console error: ${m.text()}`));
    return page;
  }

  it('imports /client.js from the monitor and publishes and subscribes: text as a string, binary as a Uint8Array', async () => {
    const server = startServer(MONITORED);
    await server.monitor!.ready;
    const page = await newPage();
    // Browser code as a string: this project compiles without the DOM library (and would turn import() into require()).
    const result = await page.evaluate(`(async () => {
      const { connect, StarlingError } = await import(${JSON.stringify(server.monitor!.url + 'client.js')});
      const client = connect({ servers: [${JSON.stringify(server.url)}] });
      const got = [];
      const sub = client.subscribe('/browser/b', (m) => got.push(m));
      const at = await sub.ready;
      await client.publish('/browser/b', 'text');
      await client.publish('/browser/b', new Uint8Array([0, 10, 255]));
      let refused;
      try { await client.publish('/__starling__/stats', 'x'); } catch (e) { refused = { isStarlingError: e instanceof StarlingError, code: e.code }; }
      while (got.length < 2) await new Promise((r) => setTimeout(r, 10));
      await client.close();
      return {
        at,
        messages: got.map((m) => ({ kind: m.kind, seq: m.seq, type: m.payload instanceof Uint8Array ? 'bytes' : typeof m.payload, value: typeof m.payload === 'string' ? m.payload : [...m.payload] })),
        refused,
      };
    })()`);
    const r = result as { at: { seq: number }; messages: unknown[]; refused: unknown };
    assert.deepEqual(r.messages, [
      { kind: 'live', seq: r.at.seq + 1, type: 'string', value: 'text' },
      { kind: 'live', seq: r.at.seq + 2, type: 'bytes', value: [0, 10, 255] },
    ]);
    assert.deepEqual(r.refused, { isStarlingError: true, code: 'forbidden' });
    assert.deepEqual(problems, []);
    await page.close();
  });

  it("transport 'sse' in the browser: fetch streams and POSTs, text and binary, a second subscription reopening the stream", async () => {
    const server = startServer(MONITORED);
    await server.monitor!.ready;
    const page = await newPage();
    const http = server.url.replace(/^ws/, 'http');
    await page.goto(http + 'history?subject=/browser/page&n=1'); // (the page's origin is the server's: no CORS needed)
    const result = await page.evaluate(`(async () => {
      const { connect, StarlingError } = await import(${JSON.stringify(server.monitor!.url + 'client.js')});
      const client = connect({ servers: [${JSON.stringify(http)}], transport: 'sse' });
      const got = [];
      const syncs = [];
      client.on('sync', (e) => syncs.push(e.subject));
      const a = await client.subscribe('/browser/sse-a', (m) => got.push(m)).ready;
      await client.publish('/browser/sse-a', 'text');
      await client.publish('/browser/sse-a', new Uint8Array([0, 13, 255]));
      const b = await client.subscribe('/browser/sse-b', (m) => got.push(m)).ready;
      await client.publish('/browser/sse-a', 'cr\\r\\nlf');
      await client.publish('/browser/sse-b', 'on b');
      let refused;
      try { await client.publish('/__starling__/stats', 'x'); } catch (e) { refused = { isStarlingError: e instanceof StarlingError, code: e.code }; }
      while (got.length < 4) await new Promise((r) => setTimeout(r, 10));
      await client.close();
      return {
        a, b, syncs,
        messages: got.map((m) => ({ subject: m.subject, seq: m.seq, type: m.payload instanceof Uint8Array ? 'bytes' : typeof m.payload, value: typeof m.payload === 'string' ? m.payload : [...m.payload] })),
        refused,
      };
    })()`);
    const r = result as { a: { seq: number }; b: { seq: number }; syncs: string[]; messages: unknown[]; refused: unknown };
    assert.deepEqual(r.messages, [
      { subject: '/browser/sse-a', seq: r.a.seq + 1, type: 'string', value: 'text' },
      { subject: '/browser/sse-a', seq: r.a.seq + 2, type: 'bytes', value: [0, 13, 255] },
      { subject: '/browser/sse-a', seq: r.a.seq + 3, type: 'string', value: 'cr\r\nlf' },
      { subject: '/browser/sse-b', seq: r.b.seq + 1, type: 'string', value: 'on b' },
    ]);
    assert.deepEqual(r.syncs, ['/browser/sse-a', '/browser/sse-b'], 'one sync per subscription: the reopening is silent');
    assert.deepEqual(r.refused, { isStarlingError: true, code: 'forbidden' });
    await page.close();
    // Chromium logs every HTTP error status it loads: the refused publish's 403, and the favicon's 404.
    const expected = /^console error: Failed to load resource: the server responded with a status of (403|404) /;
    assert.deepEqual(problems.splice(0).filter((p) => !expected.test(p)), []);
  });

  it('examples/ticker.html shows the quotes, rides out a server restart with a resync per subject, and goes on', async () => {
    const port = await restartablePort();
    const config = { Listen: `127.0.0.1:${port}`, ...MONITORED };
    const url = `ws://127.0.0.1:${port}/`;
    let server = await ServerChild.start(config);
    const page = await newPage();
    const query = new URLSearchParams({ server: url, sdk: `${server.monitor}client.js`, symbols: 'IBM,AAPL' });
    await page.goto(`${pathToFileURL(TICKER).href}?${query}`);
    await pageWait(page, `window.ticker?.events.filter((e) => e.startsWith('sync ')).length === 2`, 'both subscriptions to sync');

    const pub = connect({ servers: [url], reconnect: { min: 5, max: 100, jitter: 0.5 } });
    const pubRec = new Recorder(pub);
    const quote = (symbol: string, price: number, n: number) => pub.publish(`/ticker/${symbol}`, JSON.stringify({ symbol, price, n }), { retained: true });
    await quote('IBM', 141.5, 1);
    await quote('AAPL', 190.25, 2);
    await pageWait(page, `window.ticker.quotes.length === 2`, 'two quotes');
    assert.deepEqual(await page.evaluate(`[...document.querySelectorAll('#quotes .price')].map((td) => td.textContent)`), ['141.50', '190.25']);
    assert.equal(await page.evaluate(`document.getElementById('status').dataset.state`), 'connected');

    await server.kill();
    await pageWait(page, `document.getElementById('status').dataset.state !== 'connected'`, 'the page to see the server gone');
    server = await ServerChild.start(config);
    await pageWait(page, `window.ticker.events.filter((e) => e.startsWith('resync ')).length === 2`, 'a resync per subject');
    assert.equal(await pageWait(page, `document.getElementById('status').dataset.state === 'connected' && 'connected'`, 'connected again'), 'connected');
    await pubRec.event('connected');
    await pubRec.event('disconnected');
    await pubRec.event('connected');
    await quote('IBM', 142, 3);
    await pageWait(page, `window.ticker.quotes.length === 3`, 'the quote after the restart');
    assert.equal(await page.evaluate(`document.querySelector('[data-symbol="IBM"] .price').textContent`), '142.00');
    const quotes = (await page.evaluate(`window.ticker.quotes`)) as { epoch: string; seq: number; kind: string; quote: { n: number } }[];
    assert.deepEqual(quotes.map((q) => [q.quote.n, q.kind]), [
      [1, 'live'],
      [2, 'live'],
      [3, 'live'],
    ]);
    assert.notEqual(quotes[2].epoch, quotes[0].epoch, 'the restarted server has a new epoch');
    const events = (await page.evaluate(`window.ticker.events`)) as string[];
    assert.deepEqual(
      events.map((e) => e.split(' ')[0]),
      ['connected', 'sync', 'sync', 'disconnected', 'connected', 'resync', 'resync'],
      events.join('\n'),
    );
    assert.deepEqual(problems, []);
    await page.close();
  });
});
