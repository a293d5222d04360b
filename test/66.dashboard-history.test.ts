// The dashboard's history kept in the server (src/monitor/history.ts): the ring buffer with a fake clock (its
// bounds in points and in bytes), GET /history of a sampling server, a page opened after a few seconds of
// sampling that charts them at once, a page whose server stops showing the unreachable banner, and the
// programmatic API's monitor log line (logged once, never after close() resolved).
// With STARLING_SCREENSHOTS=1 the browser part also saves docs/img/dashboard-history.png (right after
// opening) and docs/img/dashboard-unreachable.png (server stopped).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { Logger, type Server, type Snapshot } from '../src/index';
import { COARSE_MINUTES, FINE_SECONDS, HistoryRing, PROCESS_FIELDS, SCOPED_FIELDS, type HistoryReply } from '../src/monitor/history';
import { Client, TIMEOUT_MS, describeWith, startServer, waitFor, within } from './helpers';

const CHROMIUM = process.env.STARLING_CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const NEEDS = { program: 'chromium', path: fs.existsSync(CHROMIUM) ? CHROMIUM : null, install: 'apt-get install chromium' };
const SCREENSHOTS = process.env.STARLING_SCREENSHOTS === '1';
const IMG = path.join(__dirname, '..', '..', 'docs', 'img');
const MONITORED = { Monitor: 'HTTP, PROMETHEUS', 'MonitorHTTP.Listen': '127.0.0.1:0' };

/** A snapshot with every charted field set to `v` (and seq), as the monitor would hand the ring. */
function fakeSnapshot(seq: number, v: number, workgroups = 2): Snapshot {
  const scope = Object.fromEntries(SCOPED_FIELDS.map((k) => [k, v]));
  return {
    seq,
    time: '',
    intervalSeconds: 1,
    server: { ...scope },
    workgroups: Array.from({ length: workgroups }, (_, i) => ({ workgroup: i, ...scope })),
    process: Object.fromEntries(PROCESS_FIELDS.map((k) => [k, v])),
  } as unknown as Snapshot;
}

describe('server-side history ring (fake clock)', () => {
  const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

  it('keeps every sample of the last ten minutes, oldest first', () => {
    const ring = new HistoryRing(2);
    for (let i = 1; i <= 300; i++) ring.add(fakeSnapshot(i, i), T0 + i * 1000);
    const points = ring.points().filter((p) => p.step === 1000);
    assert.equal(points.length, 300);
    assert.deepEqual(points.map((p) => p.seq), Array.from({ length: 300 }, (_, i) => i + 1));
    assert.equal(points[0].scopes.length, 3, 'the server and two workgroups');
    assert.equal(points[0].scopes[0].length, SCOPED_FIELDS.length);
    assert.equal(points[0].process.length, PROCESS_FIELDS.length);
    assert.equal(points[299].scopes[2][SCOPED_FIELDS.indexOf('messages_out_per_second')], 300);
  });

  it('is bounded: 600 samples and 360 per-minute means, in storage allocated once, however long it runs', () => {
    const ring = new HistoryRing(2);
    const bytes = ring.bytes();
    // Eight hours at one sample a second.
    const hours = 8;
    for (let i = 1; i <= hours * 3600; i++) ring.add(fakeSnapshot(i, i % 100), T0 + i * 1000);
    assert.equal(ring.bytes(), bytes, 'no growth');
    const width = 3 + 3 * SCOPED_FIELDS.length + PROCESS_FIELDS.length;
    assert.equal(bytes, (FINE_SECONDS + COARSE_MINUTES + 1) * width * 8);
    assert.ok(bytes < 256 * 1024, `${bytes} bytes for two workgroups`);
    const points = ring.points();
    assert.ok(ring.length <= FINE_SECONDS + COARSE_MINUTES);
    const fine = points.filter((p) => p.step === 1000);
    const coarse = points.filter((p) => p.step > 1000);
    assert.equal(fine.length, FINE_SECONDS);
    // The means cover the six hours before the samples (those overlapping the samples are not served).
    assert.ok(coarse.length >= COARSE_MINUTES - 11 && coarse.length <= COARSE_MINUTES, `${coarse.length} means`);
    const oldest = points[0].t;
    const newest = points[points.length - 1].t;
    assert.ok(newest - oldest <= 6 * 3600 * 1000 + 60_000, 'at most six hours (and the minute in progress)');
    assert.ok(newest - oldest >= 6 * 3600 * 1000 - 60_000, 'at least six hours');
    // In time order, means before samples.
    for (let i = 1; i < points.length; i++) assert.ok(points[i].t > points[i - 1].t, `time order at ${i}`);
    // The JSON a dashboard fetches is bounded too.
    const json = JSON.stringify({ ...ring.reply() });
    assert.ok(json.length < 256 * 1024, `${json.length} bytes of JSON`);
  });

  it('keeps per-minute means of the samples of each minute', () => {
    const ring = new HistoryRing(1, 1, 10);
    // Minute 0: values 0..59 (mean 29.5); minute 1: 100 each; then one sample of minute 2 closes minute 1.
    for (let i = 0; i < 60; i++) ring.add(fakeSnapshot(i + 1, i, 1), T0 + i * 1000);
    for (let i = 0; i < 60; i++) ring.add(fakeSnapshot(61 + i, 100, 1), T0 + 60_000 + i * 1000);
    ring.add(fakeSnapshot(121, 7, 1), T0 + 120_000);
    const points = ring.points();
    const coarse = points.filter((p) => p.step > 1000);
    assert.equal(coarse.length, 2);
    assert.equal(coarse[0].scopes[0][0], 29.5);
    assert.equal(coarse[0].seq, 60, 'a mean carries the seq of its last sample');
    assert.equal(coarse[0].t, T0 + 59_000);
    assert.equal(coarse[0].step, 60_000);
    assert.equal(coarse[1].process[0], 100);
    const fine = points.filter((p) => p.step === 1000);
    assert.deepEqual(fine.map((p) => p.seq), [121], 'one sample kept (capacity 1)');
    // Capacity 10: twelve minutes later only the last ten means remain.
    for (let m = 3; m < 15; m++) ring.add(fakeSnapshot(200 + m, m, 1), T0 + m * 60_000);
    // Kept: the means of minutes 4..13 (ten), and the sample of minute 14.
    assert.equal(ring.length, 10 + 1);
    assert.deepEqual(ring.points().filter((p) => p.step > 1000).map((p) => p.seq), [204, 205, 206, 207, 208, 209, 210, 211, 212, 213]);
    // A sample older than a mean's end is served; a mean overlapping the samples is not.
    const overlap = new HistoryRing(1, 5, 10);
    for (let i = 0; i < 70; i++) overlap.add(fakeSnapshot(i + 1, i, 1), T0 + i * 1000);
    overlap.add(fakeSnapshot(71, 0, 1), T0 + 120_000); // closes minute 1, whose mean ends after the oldest sample
    assert.deepEqual(overlap.points().map((p) => [p.seq, p.step]), [[60, 60_000], [67, 1000], [68, 1000], [69, 1000], [70, 1000], [71, 1000]]);
    ring.clear();
    assert.equal(ring.length, 0);
  });
});

describe('GET /history', { timeout: 60_000 }, () => {
  it('serves the samples the server took, in order, with the field names, and their seq and values match /stats', async () => {
    const server = startServer(MONITORED);
    await server.monitor!.ready;
    await waitFor('three samples', () => server.monitor!.snapshot.seq >= 3);
    const stats = (await (await fetch(server.monitor!.url + 'stats')).json()) as Snapshot;
    const res = await fetch(server.monitor!.url + 'history');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const h = (await res.json()) as HistoryReply;
    assert.deepEqual(h.scoped, [...SCOPED_FIELDS]);
    assert.deepEqual(h.process, [...PROCESS_FIELDS]);
    assert.deepEqual(h.fine, { seconds: 600, step: 1000 });
    assert.deepEqual(h.coarse, { minutes: 360, step: 60_000 });
    assert.ok(h.points.length >= 3);
    const seqs = h.points.map((p) => p.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'every sample from the first');
    const same = h.points.find((p) => p.seq === stats.seq);
    assert.ok(same, `seq ${stats.seq} in the history`);
    assert.equal(same.t, Date.parse(stats.time));
    assert.equal(same.scopes[0][0], stats.server.connections);
    assert.equal(same.process[PROCESS_FIELDS.indexOf('rss_bytes')], stats.process.rss_bytes);
    assert.equal(same.scopes.length, 1 + stats.workgroups.length);
  });

  it('is 404 with Monitor = PROMETHEUS (it belongs to the dashboard)', async () => {
    const server = startServer({ ...MONITORED, Monitor: 'PROMETHEUS' });
    await server.monitor!.ready;
    assert.equal((await fetch(server.monitor!.url + 'history')).status, 404);
  });
});

describe('the monitor log line of the programmatic API', { timeout: 60_000 }, () => {
  function capture(): { log: Logger; lines: string[] } {
    const lines: string[] = [];
    return { log: new Logger('info', (l) => lines.push(l)), lines };
  }

  it('logs the monitor URL once, at info, with how to turn monitoring off', async () => {
    const { log, lines } = capture();
    const server = startServer({ ...MONITORED, LogLevel: 'info' }, log);
    await server.monitor!.ready;
    const info = lines.filter((l) => / INFO  monitor: http:\/\//.test(l));
    assert.equal(info.length, 1, lines.join('\n'));
    assert.ok(info[0].includes(server.monitor!.url!), info[0]);
    assert.match(info[0], /set Monitor empty to turn monitoring off/);
    await server.close();
  });

  it('logs nothing after close() resolved, even when close() is called before the port is bound', async () => {
    for (const when of ['at once', 'after ready', 'after a sample']) {
      const { log, lines } = capture();
      const server: Server = startServer({ ...MONITORED, LogLevel: 'debug', 'Stats.LogInterval': 5 }, log);
      if (when !== 'at once') await server.monitor!.ready;
      if (when === 'after a sample') await waitFor('a sample', () => server.monitor!.snapshot.seq >= 1);
      const url = server.monitor!.url;
      await within(server.close(), `close() ${when}`);
      const n = lines.length;
      // The monitor is fully closed: its port refuses connections.
      if (url) await assert.rejects(fetch(url + 'stats'));
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(lines.slice(n), [], `no line after close() resolved (${when})`);
    }
  });
});

describeWith(NEEDS, 'dashboard history and unreachable server in headless Chromium', { timeout: 120_000 }, () => {
  let server: Server;
  let monitorUrl: string;
  let context: BrowserContext;
  let profile: string;
  let page: Page;
  const clients: Client[] = [];
  let publishing: NodeJS.Timeout | null = null;
  const problems: string[] = [];

  before(async () => {
    server = startServer(MONITORED);
    await server.monitor!.ready;
    monitorUrl = server.monitor!.url!;
    for (let i = 0; i < 2; i++) clients.push(await Client.open(server));
    for (const c of clients) await c.command('SUB /hist/a');
    const pub = await Client.open(server);
    clients.push(pub);
    publishing = setInterval(() => {
      for (let i = 0; i < 10; i++) pub.send(`PUB /hist/a\ntick ${i}`);
      for (const c of clients) while (c.pending > 0) void c.next();
    }, 20);
    profile = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-chromium-'));
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1400, height: 1000 } });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  });

  after(async () => {
    if (publishing) clearInterval(publishing);
    await context?.close();
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
  });

  async function pageWait(expr: string, what: string): Promise<void> {
    const deadline = Date.now() + TIMEOUT_MS;
    while (!(await page.evaluate(expr))) {
      if (Date.now() > deadline) assert.fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what} (${expr})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('opened after the server sampled for a few seconds, charts those samples at once', async () => {
    await waitFor('five samples before the page opens', () => server.monitor!.snapshot.seq >= 5);
    const before = server.monitor!.snapshot.seq;
    await page.goto(server.monitor!.url!, { timeout: TIMEOUT_MS });
    // The first render: the history request answers before the first poll.
    await pageWait(`Number(document.body.dataset.historyLength) >= ${before}`, 'the server history in the page');
    const view = (await page.evaluate(`({
      charts: Object.fromEntries(Object.entries(window.dashboard.charts).map(([id, c]) => [id, c.data()[0].points.map((p) => p.seq)])),
      historyLength: Number(document.body.dataset.historyLength),
    })`)) as { charts: Record<string, number[]>; historyLength: number };
    for (const [id, seqs] of Object.entries(view.charts)) {
      for (let seq = 1; seq <= before; seq++) assert.ok(seqs.includes(seq), `chart ${id} has the sample ${seq} taken before the page opened: ${seqs}`);
    }
    await pageWait(`document.getElementById('status').className === 'live'`, 'the first poll');
    if (SCREENSHOTS) {
      fs.mkdirSync(IMG, { recursive: true });
      await page.screenshot({ path: path.join(IMG, 'dashboard-history.png'), fullPage: false });
    }
  });

  it('shows the unreachable banner within a few seconds of the server stopping, and the time of its last sample', async () => {
    assert.equal(await page.evaluate(`document.getElementById('unreachable').hidden`), true, 'no banner while the server answers');
    const last = server.monitor!.snapshot;
    if (publishing) clearInterval(publishing);
    publishing = null;
    await Promise.all(clients.map((c) => c.close()));
    const stopped = Date.now();
    await server.close();
    await pageWait(`document.body.dataset.reachable === 'false' && !document.getElementById('unreachable').hidden`, 'the unreachable banner');
    assert.ok(Date.now() - stopped < 5000, `banner after ${Date.now() - stopped} ms`);
    const shown = (await page.evaluate(`({
      banner: document.getElementById('unreachable').textContent,
      cls: document.body.className,
      lastSample: document.body.dataset.lastSample,
      staleTiles: [...document.querySelectorAll('.tile .stale')].filter((e) => getComputedStyle(e).display !== 'none').length,
      tiles: document.querySelectorAll('.tile').length,
    })`)) as { banner: string; cls: string; lastSample: string; staleTiles: number; tiles: number };
    assert.match(shown.banner, /^Server unreachable since \d\d:\d\d:\d\d .*last sample, at \d\d:\d\d:\d\d/);
    assert.match(shown.cls, /\bunreachable\b/);
    // The page's newest point, which is the server's last sample or one it took before (the page polls every second).
    const newest = (await page.evaluate('new Date(window.dashboard.history.at(-1).t).toISOString()')) as string;
    assert.equal(shown.lastSample, newest);
    const behind = Date.parse(last.time) - Date.parse(shown.lastSample);
    assert.ok(behind >= 0 && behind <= 3000, `last sample ${shown.lastSample}, the server's ${last.time}`);
    assert.equal(shown.staleTiles, shown.tiles, 'every tile marked stale');
    if (SCREENSHOTS) await page.screenshot({ path: path.join(IMG, 'dashboard-unreachable.png'), fullPage: false });
  });

  it('recovers when a server answers again on the same address', async () => {
    const port = new URL(monitorUrl).port;
    const again = startServer({ ...MONITORED, 'MonitorHTTP.Listen': `127.0.0.1:${port}` });
    await again.monitor!.ready;
    await pageWait(`document.body.dataset.reachable === 'true' && document.getElementById('unreachable').hidden`, 'the banner to go');
    assert.doesNotMatch((await page.evaluate('document.body.className')) as string, /unreachable/);
    assert.deepEqual(problems, []);
    await again.close();
  });
});
