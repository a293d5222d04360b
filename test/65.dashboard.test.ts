// The live dashboard in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven by
// playwright-core. While clients publish, the page must chart and show the same values /stats served for the
// same sample, per workgroup too, and must never make a request outside the monitor's origin. Basic
// authentication is on, as the browser would meet it. No timing assertions: every wait is on a condition.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { INDICATORS, type Snapshot } from '../src/index';
import { Client, TIMEOUT_MS, describeWith, freePort, startServer } from './helpers';

/** Debian's chromium package; STARLING_CHROMIUM names another build. Nothing here downloads a browser. */
const CHROMIUM = process.env.STARLING_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const USER = 'watcher';
const PASSWORD = 'dashboard-secret';
const AUTH = 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
const SUITE = { timeout: 120_000 };

/** What the page shows, read in one evaluate (so from one sample): the seq, the tiles and each chart's last point. */
interface PageView {
  seq: number;
  tiles: Record<string, number>;
  charts: Record<string, { label: string; points: { seq: number; value: number }[] }[]>;
}

// Browser-side code is passed as strings: this project compiles without the DOM library.
const READ_PAGE = `(() => {
  const tiles = {};
  for (const el of document.querySelectorAll('[data-indicator]')) tiles[el.dataset.indicator] = Number(el.dataset.value);
  const charts = {};
  for (const [id, chart] of Object.entries(window.dashboard.charts)) charts[id] = chart.data();
  return { seq: Number(document.body.dataset.seq ?? -1), tiles, charts };
})()`;

/** Pixels of the messages chart in the colour of its "Out" series: the line is really drawn, not only computed. */
const OUT_PIXELS = `(() => {
  const canvas = document.querySelector('canvas[data-chart="messages"]');
  const color = getComputedStyle(document.documentElement).getPropertyValue('--c2').trim();
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 0; i < data.length; i += 4)
    if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40 && data[i + 3] > 200) n++;
  return n;
})()`;

const setScope = (page: Page, scope: string) => page.evaluate(`window.dashboard.setScope(${JSON.stringify(scope)})`);

/**
 * Polls the page expression `expr` every 50 ms until it is truthy. (Not page.waitForFunction: that evaluates
 * strings with eval inside the page, which the dashboard's Content-Security-Policy rightly forbids.)
 */
async function pageWait(page: Page, expr: string, what: string): Promise<void> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!(await page.evaluate(expr))) {
    if (Date.now() > deadline) assert.fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what} (${expr})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function readPage(page: Page): Promise<PageView> {
  return page.evaluate(READ_PAGE) as Promise<PageView>;
}

/** A fresh browser profile (a new --user-data-dir), removed by the returned cleanup. */
async function launch(credentials: { username: string; password: string } | undefined): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    httpCredentials: credentials,
    viewport: { width: 1400, height: 1000 },
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

const NEEDS = { program: 'chromium', path: fs.existsSync(CHROMIUM) ? CHROMIUM : null, install: 'apt-get install chromium' };

describeWith(NEEDS, 'live dashboard in headless Chromium', SUITE, () => {
  const server = startServer({
    Monitor: 'HTTP, PROMETHEUS',
    'MonitorHTTP.Listen': '127.0.0.1:0',
    'MonitorHTTP.Authentication': true,
    MonitorUsername: USER,
    MonitorPassword: PASSWORD,
  });
  let browser: { context: BrowserContext; close(): Promise<void> } | undefined;
  let page: Page;
  const requests: string[] = [];
  const problems: string[] = [];
  /** Every /stats answer the test fetched, by seq. */
  const served = new Map<number, Snapshot>();
  let publishing: NodeJS.Timeout | null = null;
  const clients: Client[] = [];

  async function fetchStats(): Promise<Snapshot> {
    const res = await fetch(server.monitor!.url! + 'stats', { headers: { authorization: AUTH } });
    assert.equal(res.status, 200);
    const s = (await res.json()) as Snapshot;
    served.set(s.seq, s);
    return s;
  }

  /**
   * Polls until `match(view, snapshot)` finds a sample the page shows and /stats served, then returns both.
   * The test fetches /stats every 50 ms and the page polls every second, so every seq the page shows is
   * eventually one the test saw too.
   */
  async function sameSample(what: string, ok: (s: Snapshot) => boolean): Promise<{ view: PageView; s: Snapshot }> {
    const deadline = Date.now() + TIMEOUT_MS;
    let view: PageView | undefined;
    for (;;) {
      await fetchStats();
      view = await readPage(page);
      const s = served.get(view.seq);
      if (s && ok(s)) return { view, s };
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; page at seq ${view.seq}, served ${[...served.keys()].slice(-5)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  before(async () => {
    await server.monitor!.ready;
    // Traffic: three subscribers, one publisher sending 20 messages every 20 ms.
    for (let i = 0; i < 3; i++) clients.push(await Client.open(server));
    for (const c of clients) await c.command('SUB /dash/a');
    const pub = await Client.open(server);
    clients.push(pub);
    publishing = setInterval(() => {
      for (let i = 0; i < 20; i++) pub.send(`PUB /dash/a\ntick ${i}`);
      for (const c of clients) while (c.pending > 0) void c.next();
    }, 20);

    browser = await launch({ username: USER, password: PASSWORD });
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on('request', (r) => requests.push(r.url()));
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
  });

  after(async () => {
    if (publishing) clearInterval(publishing);
    await browser?.close();
  });

  it('loads the page with the browser’s Basic credentials', async () => {
    const res = await page.goto(server.monitor!.url!, { timeout: TIMEOUT_MS });
    assert.equal(res?.status(), 200);
    assert.equal(await page.title(), 'Starling monitor');
    await pageWait(page, `document.getElementById('status').className === 'live'`, 'the page to poll /stats');
  });

  it('charts and shows the values /stats served for the same sample while clients publish', async () => {
    const { view, s } = await sameSample('a sample with messages flowing', (s) => s.server.messages_out_per_second > 0 && s.server.messages_in_per_second > 0);
    // The numbers.
    assert.equal(view.tiles.connections, s.server.connections);
    assert.equal(view.tiles.subjects, s.server.subjects);
    assert.equal(view.tiles.subscriptions, s.server.subscriptions);
    assert.equal(view.tiles.messages_in_per_second, s.server.messages_in_per_second);
    assert.equal(view.tiles.messages_out_per_second, s.server.messages_out_per_second);
    assert.equal(view.tiles.bytes_in_per_second, s.server.bytes_in_per_second);
    assert.equal(view.tiles.bytes_out_per_second, s.server.bytes_out_per_second);
    assert.equal(view.tiles.cpu_percent, s.process.cpu_percent);
    assert.equal(view.tiles.rss_bytes, s.process.rss_bytes);
    assert.equal(view.tiles.heap_used_bytes, s.process.heap_used_bytes);
    // The charts' latest points are that sample.
    const last = (chart: string, series: number) => {
      const points = view.charts[chart][series].points;
      const p = points[points.length - 1];
      assert.equal(p.seq, s.seq, `${chart} ends at the page's sample`);
      return p.value;
    };
    assert.equal(last('connections', 0), s.server.connections);
    assert.equal(last('messages', 0), s.server.messages_in_per_second);
    assert.equal(last('messages', 1), s.server.messages_out_per_second);
    assert.equal(last('bytes', 0), s.server.bytes_in_per_second);
    assert.equal(last('bytes', 1), s.server.bytes_out_per_second);
    assert.equal(last('churn', 0), s.server.accepted_per_second);
    assert.equal(last('cpu', 0), s.process.cpu_percent);
    assert.equal(last('memory', 0), s.process.rss_bytes);
    assert.equal(last('memory', 1), s.process.heap_used_bytes);
    // Every earlier point the test also fetched agrees with what /stats served for it.
    for (const p of view.charts.messages[1].points) {
      const earlier = served.get(p.seq);
      if (earlier) assert.equal(p.value, earlier.server.messages_out_per_second, `messages out at seq ${p.seq}`);
    }
    // And the table of all indicators has a row for each server and workgroup indicator of the server's
    // table (a counter and its rate share one), with a column for the server and one per workgroup.
    const rows = INDICATORS.filter((d) => d.scope !== 'process' && d.source !== 'rate').map((d) => d.name);
    assert.deepEqual(await page.evaluate(`[...document.querySelectorAll('#indicators-table tbody tr')].map((tr) => tr.dataset.indicatorRow)`), rows);
    assert.equal(await page.locator('#indicators-table thead th').count(), 2 + s.workgroups.length);
  });

  it('draws the series on the canvas', async () => {
    // A line needs two points: wait for three samples, then for the pixels (the page draws after each poll).
    await pageWait(page, 'window.dashboard.history.length >= 3', 'three samples');
    await pageWait(page, `${OUT_PIXELS} > 0`, 'the Out line on the messages chart');
    // Over the longest window too (three hours, where the same samples take a few pixels).
    await page.evaluate('window.dashboard.setWindow(10800)');
    await pageWait(page, `${OUT_PIXELS} > 0`, 'the Out line over three hours');
    await page.evaluate('window.dashboard.setWindow(300)');
  });

  it('shows one workgroup when the scope is set to it', async () => {
    for (const w of [0, 1]) {
      await setScope(page, String(w));
      const { view, s } = await sameSample(`a sample of workgroup ${w} with messages flowing`, (s) => s.workgroups[w].messages_out_per_second > 0);
      assert.equal(view.tiles.connections, s.workgroups[w].connections);
      assert.equal(view.tiles.messages_out_per_second, s.workgroups[w].messages_out_per_second);
      const out = view.charts.messages[1].points;
      assert.equal(out[out.length - 1].value, s.workgroups[w].messages_out_per_second);
      const sessions = view.charts.connections[0].points;
      assert.equal(sessions[sessions.length - 1].value, s.workgroups[w].connections);
    }
    await setScope(page, 'server');
  });

  it('hides the Cluster section without a cluster, and shows the link of a node of one', async () => {
    assert.equal(await page.evaluate(`document.getElementById('cluster').hidden`), true);
    assert.equal(await page.evaluate('document.body.dataset.cluster'), 'off');
    // A node whose Redis cannot be reached (nothing listens on the port): connecting or down, never up.
    const port = await freePort();
    const node = startServer({
      Monitor: 'HTTP',
      'MonitorHTTP.Listen': '127.0.0.1:0',
      ClusterEngine: 'redis',
      ClusterRedis: `redis://127.0.0.1:${port}`,
      ClusterNodeName: 'dash-node',
    });
    await node.monitor!.ready;
    const other = await browser!.context.newPage();
    const errors: string[] = [];
    other.on('pageerror', (e) => errors.push(e.message));
    try {
      await other.goto(node.monitor!.url!, { timeout: TIMEOUT_MS });
      await pageWait(other, `['connecting', 'up', 'down'].includes(document.body.dataset.cluster)`, 'the cluster section');
      const view = (await other.evaluate(`(() => ({
        hidden: document.getElementById('cluster').hidden,
        node: document.getElementById('cluster-node').textContent,
        state: document.getElementById('cluster-state').textContent,
        redis: document.getElementById('cluster-redis').textContent,
        tiles: [...document.querySelectorAll('[data-cluster-indicator]')].map((el) => [el.dataset.clusterIndicator, Number(el.dataset.value)]),
      }))()`)) as { hidden: boolean; node: string; state: string; redis: string; tiles: [string, number][] };
      assert.equal(view.hidden, false);
      assert.equal(view.node, 'node dash-node');
      assert.ok(['connecting', 'down'].includes(view.state), view.state);
      assert.ok(['–', `127.0.0.1:${port}`].includes(view.redis), view.redis);
      assert.deepEqual(view.tiles.map(([name]) => name), [
        'cluster_rtt_us', 'cluster_published_per_second', 'cluster_received_per_second', 'cluster_refused', 'cluster_reconnects', 'cluster_refilled',
      ]);
      for (const [name, value] of view.tiles) assert.ok(Number.isFinite(value), name);
      assert.deepEqual(errors, []);
    } finally {
      await other.close();
      await node.close();
    }
  });

  it('made no request outside the monitor’s origin and logged no error', () => {
    const origin = new URL(server.monitor!.url!).origin;
    assert.ok(requests.length > 2, 'the page polled /stats');
    assert.deepEqual(requests.filter((u) => new URL(u).origin !== origin), []);
    assert.deepEqual(problems, []);
  });

  it('shows no dashboard to a browser without credentials or with wrong ones', async () => {
    for (const credentials of [undefined, { username: USER, password: 'wrong' }]) {
      // A browser of its own: Chromium caches Basic credentials per origin for the life of a profile.
      const other = await launch(credentials);
      try {
        const p = other.context.pages()[0] ?? (await other.context.newPage());
        // Headless Chromium gives up on the challenge (net::ERR_INVALID_AUTH_CREDENTIALS) or shows the 401 page.
        const outcome = await p.goto(server.monitor!.url!, { timeout: TIMEOUT_MS }).then(
          (res) => `HTTP ${res?.status()}`,
          (e: Error) => (/ERR_INVALID_AUTH_CREDENTIALS/.test(e.message) ? 'refused' : e.message),
        );
        assert.ok(['HTTP 401', 'refused'].includes(outcome), `${JSON.stringify(credentials)}: ${outcome}`);
        assert.equal(await p.locator('canvas').count(), 0);
      } finally {
        await other.close();
      }
    }
  });
});
