// Saves the two dashboard screenshots of docs/monitoring.md:
//   docs/img/dashboard-history.png     — a page opened after the server has been sampling for a while: the
//                                        charts are filled from GET /history at once;
//   docs/img/dashboard-unreachable.png — the same page after the server stopped: banner, stale tiles.
// Run after `npm run build`:  node dist/test/tools/dashboard-screenshots.js [seconds of traffic, default 90]
// Needs Chromium (/usr/bin/chromium, or STARLING_CHROMIUM); downloads nothing.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { createServer } from '../../src/index';

const CHROMIUM = process.env.STARLING_CHROMIUM || '/usr/bin/chromium';
const IMG = path.join(__dirname, '..', '..', '..', 'docs', 'img');
const SECONDS = Number(process.argv[2] ?? 90);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const open = (url: string) =>
  new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });

async function until(what: string, probe: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function main(): Promise<void> {
  const server = createServer({ Listen: '127.0.0.1:0', Workgroups: 2, Monitor: 'HTTP, PROMETHEUS', 'MonitorHTTP.Listen': '127.0.0.1:0', LogLevel: 'warn' });
  await server.monitor!.ready;
  const url = server.monitor!.url!;
  console.log(`server ${server.url}, monitor ${url}; ${SECONDS} s of traffic`);

  // Traffic that changes over time: subscribers join in waves, the publish rate follows a slow wave.
  const subscribers: WebSocket[] = [];
  const publisher = await open(server.url);
  const started = Date.now();
  let stop = false;
  const traffic = (async () => {
  while (!stop) {
    const s = (Date.now() - started) / 1000;
    const wanted = 4 + Math.round(6 * (1 + Math.sin(s / 15)));
    while (subscribers.length < wanted) {
      const ws = await open(server.url);
      ws.send('SUB /demo/ticks');
      subscribers.push(ws);
    }
    while (subscribers.length > wanted) subscribers.pop()!.close();
    const burst = Math.round(10 + 10 * (1 + Math.sin(s / 8)));
    for (let i = 0; i < burst; i++) publisher.send(`PUB /demo/ticks\n${JSON.stringify({ s, i })}`);
    await sleep(50);
  }
  })();
  // The traffic goes on while the page opens, so the charts end at the current rate.
  await sleep(SECONDS * 1000);

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(url);
    await until('the history and a poll', () => page.evaluate(`document.getElementById('status').className === 'live' && Number(document.body.dataset.historyLength) > 10`));
    fs.mkdirSync(IMG, { recursive: true });
    await page.screenshot({ path: path.join(IMG, 'dashboard-history.png') });
    console.log(`${path.join(IMG, 'dashboard-history.png')}: ${await page.evaluate('document.body.dataset.historyLength')} points on opening`);

    stop = true;
    await traffic;
    for (const ws of [publisher, ...subscribers]) ws.close();
    await server.close();
    await until('the unreachable banner', () => page.evaluate(`document.body.dataset.reachable === 'false'`));
    await sleep(1500); // a second retry, so the page shows the steady unreachable state
    await page.screenshot({ path: path.join(IMG, 'dashboard-unreachable.png') });
    console.log(`${path.join(IMG, 'dashboard-unreachable.png')}: ${await page.evaluate(`document.getElementById('unreachable').textContent`)}`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
    await server.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
