// The HTTP transport in a real browser: examples/sse.html, served from another origin (so CORS is in play), reads
// a Starling event stream with Chromium's own EventSource — text and binary messages; after the network drops,
// EventSource reconnects with Last-Event-ID and gets exactly what it missed (recovered, then sync); after the
// server restarts, it is told resync and goes on with the new epoch.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, Client, NEEDS_CHROMIUM, TIMEOUT_MS, describeWith, startServer } from './helpers';
import { Proxy, restartablePort } from './client-kit';

const SUITE = { timeout: 120_000 };
const PAGE = path.join(__dirname, '..', '..', 'examples', 'sse.html');

interface Seen {
  subject: string;
  epoch: string;
  seq: number;
  kind: string;
  text: string;
  binary: boolean;
}
interface Ticker {
  messages: Seen[];
  syncs: string[];
  resyncs: string[];
  errors: string[];
  opens: number;
}

async function ticker(page: Page): Promise<Ticker> {
  return (await page.evaluate('window.ticker')) as Ticker;
}

async function until(page: Page, what: string, probe: (t: Ticker) => boolean): Promise<Ticker> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const t = await ticker(page);
    if (probe(t)) return t;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; the page saw ${JSON.stringify(t)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describeWith(NEEDS_CHROMIUM, 'examples/sse.html in headless Chromium (EventSource, no library)', SUITE, () => {
  let browser: Browser;
  let site: http.Server;
  let origin = '';
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    // The page comes from its own origin: the server must allow it (HTTP.AllowOrigins).
    site = http.createServer((_, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end(fs.readFileSync(PAGE)));
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', () => resolve()));
    origin = `http://127.0.0.1:${(site.address() as { port: number }).port}`;
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => site?.close(resolve));
  });

  it('receives text and binary, recovers exactly after a drop (Last-Event-ID), and is told resync after a restart', async () => {
    const port = await restartablePort();
    const config = { Listen: `127.0.0.1:${port}`, 'HTTP.AllowOrigins': origin, 'HTTP.SseRetry': 200 };
    let server = startServer(config);
    const proxy = await Proxy.start({ host: '127.0.0.1', port });
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    await page.goto(`${origin}/?server=${encodeURIComponent(`http://127.0.0.1:${proxy.port}`)}&subjects=/browser/sse`);
    await until(page, 'the stream to open', (t) => t.opens === 1);
    const pub = await Client.open(server);
    await pub.command('PUB /browser/sse\nfirst', Buffer.concat([Buffer.from('PUB /browser/sse\n'), Buffer.from([1, 2, 3])]), 'PUB /browser/sse\nthird\nline');
    let t = await until(page, 'three messages', (x) => x.messages.length === 3);
    assert.deepEqual(t.messages.map((m) => [m.seq, m.kind, m.text, m.binary]), [
      [1, 'live', 'first', false],
      [2, 'live', '[3 bytes]', true],
      [3, 'live', 'third\nline', false],
    ]);

    // The network drops; messages go by while the page is away; it comes back by itself.
    proxy.hold();
    proxy.cut();
    await until(page, 'the page to see the drop', () => proxy.open === 0);
    await pub.command('PUB /browser/sse\nfour', 'PUB /browser/sse\nfive');
    proxy.release();
    t = await until(page, 'the missed messages and a sync', (x) => x.messages.length === 5 && x.syncs.length === 1);
    assert.deepEqual(t.messages.slice(3).map((m) => [m.seq, m.kind, m.text]), [
      [4, 'recovered', 'four'],
      [5, 'recovered', 'five'],
    ]);
    await pub.command('PUB /browser/sse\nsix');
    t = await until(page, 'a live message after the recovery', (x) => x.messages.length === 6);
    assert.deepEqual([t.messages[5].seq, t.messages[5].kind], [6, 'live']);
    assert.deepEqual(t.resyncs, []);

    // The server restarts: its cache (and the subject's epoch) are gone, so the page is told it missed messages.
    const epoch = t.messages[5].epoch;
    await server.close();
    server = startServer(config);
    t = await until(page, 'the reconnection after the restart, told resync', (x) => x.opens >= 3 && x.resyncs.length === 1);
    const pub2 = await Client.open(server);
    await pub2.command('PUB /browser/sse\nafter restart');
    t = await until(page, 'a message of the new epoch', (x) => x.messages.length === 7);
    assert.equal(t.messages[6].text, 'after restart');
    assert.equal(t.messages[6].seq, 1);
    assert.notEqual(t.messages[6].epoch, epoch, 'a new epoch');
    assert.deepEqual(problems, []);
    await page.close();
  });
});
