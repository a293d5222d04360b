// Monitoring end to end: indicators at /stats (JSON) and /metrics (Prometheus, parsed), Basic authentication,
// the Monitor setting (which endpoints; off = no port, no timer), the stats log line (through the server's
// Logger sink) and PUSH stats on /__starling__/stats, all against a real server with real `ws` clients.
// Nothing here asserts timing: every wait is on a condition (a counter reached, a line logged, a message received).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { ConfigError } from '../src/config/config';
import { INDICATORS, IndicatorSet, Logger, STATS_SUBJECT, metricName, rateName, type CounterInfo, type Server, type Snapshot } from '../src/index';
import { PrometheusExporter } from '../src/monitor/prometheus';
import { DEFAULT_INDICATORS, renderIndicatorDocs, statsLineFields } from '../src/monitor/indicators';
import { CounterLayout } from '../src/stats';
import { clusterNodeName } from '../src/config/schema';
import { Client, TIMEOUT_MS, assertServes, freePort, parseErr, parseMsg, startServer, within } from './helpers';

// The module object itself (an `import * as` namespace would be a copy): the monitor looks the function up on it.
const perfHooks: typeof import('node:perf_hooks') = require('node:perf_hooks');

const SUITE = { timeout: 120_000 };
const ROOT = path.resolve(__dirname, '../..');
/** Monitoring on, on a free port of its own. */
const MONITORED = { Monitor: 'HTTP, PROMETHEUS', 'MonitorHTTP.Listen': '127.0.0.1:0' };

// ---------------------------------------------------------------------------------------------------
// Helpers

interface Reply {
  status: number;
  headers: Headers;
  text: string;
}

/** GET (or another method) on the monitor of `server`, with optional Basic credentials. */
async function request(server: Server, route: string, opts: { auth?: [string, string]; header?: string; method?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (opts.auth) headers.authorization = 'Basic ' + Buffer.from(opts.auth.join(':'), 'utf8').toString('base64');
  if (opts.header !== undefined) headers.authorization = opts.header;
  const url = new URL(route, monitorUrl(server));
  const res = await within(fetch(url, { method: opts.method ?? 'GET', headers }), `${opts.method ?? 'GET'} ${url}`);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

function monitorUrl(server: Server): string {
  const url = server.monitor?.url;
  assert.ok(url, 'the monitor is not listening');
  return url;
}

async function stats(server: Server, auth?: [string, string]): Promise<Snapshot> {
  const r = await request(server, '/stats', { auth });
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  return JSON.parse(r.text) as Snapshot;
}

/** Polls the async `probe` every 50 ms until it returns a value; fails after TIMEOUT_MS with `what` and the last value seen. */
async function eventually<T>(what: string, probe: () => Promise<T | undefined>, last: () => unknown = () => ''): Promise<T> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what}; last: ${JSON.stringify(last())}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until /stats satisfies `ok`, and returns that snapshot. */
async function statsWhen(server: Server, what: string, ok: (s: Snapshot) => boolean, auth?: [string, string]): Promise<Snapshot> {
  let last: Snapshot | undefined;
  return eventually(what, async () => ((last = await stats(server, auth)), ok(last) ? last : undefined), () => last?.server);
}

/** A Logger whose lines are kept in `lines`. */
function capturingLogger(level: 'info' | 'warn' = 'info'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger(level, (l) => lines.push(l)), lines };
}

interface PromText {
  help: Map<string, string>;
  types: Map<string, string>;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

/** Parses the Prometheus text exposition format (version 0.0.4); fails on any line it does not understand. */
function parsePrometheus(text: string): PromText {
  const out: PromText = { help: new Map(), types: new Map(), samples: [] };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      (m[1] === 'HELP' ? out.help : out.types).set(m[2], m[3]);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g)) labels[l[1]] = l[2];
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN', `bad value in ${JSON.stringify(line)}`);
    out.samples.push({ name: m[1], labels, value });
  }
  return out;
}

/** The value of one series; fails unless exactly one sample matches. */
function sample(p: PromText, name: string, labels: Record<string, string> = {}): number {
  const found = p.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: expected one sample, found ${found.length}`);
  return found[0].value;
}

/** The cluster link's counters (native/runtime/server.h), in every server's /stats and /metrics. */
const CLUSTER_COUNTERS = ['cluster_state', 'cluster_rtt_us', 'cluster_reconnects', 'cluster_published', 'cluster_received', 'cluster_refused', 'cluster_refilled'];
const WORKGROUP_KEYS = INDICATORS.filter((d) => d.scope === 'workgroup').map((d) => d.name);
const NATIVE_WORKGROUP_KEYS = INDICATORS.filter((d) => d.scope === 'workgroup' && d.source === 'native').map((d) => d.name);
/** The protocol-error counters, as the addon names them. */
const PROTOCOL_ERROR_KEYS = DEFAULT_INDICATORS.protocolErrors;

// ---------------------------------------------------------------------------------------------------

describe('indicators over HTTP', SUITE, () => {
  const server = startServer({ ...MONITORED, MaxMessageSize: 1024 });

  it('serves every indicator at /stats, server-wide and per workgroup, the server-wide value the sum', async () => {
    await server.monitor!.ready;
    const s = await stats(server);
    assert.equal(typeof s.seq, 'number');
    assert.ok(!Number.isNaN(Date.parse(s.time)));
    assert.equal(s.workgroups.length, 2);
    for (const def of INDICATORS) {
      const holder = def.scope === 'process' ? s.process : s.server;
      assert.ok(def.name in holder, `${def.name} missing from ${def.scope === 'process' ? 'process' : 'server'}`);
    }
    for (const key of WORKGROUP_KEYS) {
      for (const w of s.workgroups) assert.ok(key in w, `workgroups[${w.workgroup}].${key} missing`);
      const sum = s.workgroups.reduce((a, w) => a + w[key], 0);
      assert.ok(Math.abs(sum - s.server[key]) < 0.02, `server.${key} is the sum of the workgroups`);
    }
    // Nothing but the table: no key that the table does not describe.
    const names = new Set(INDICATORS.map((d) => d.name));
    for (const key of Object.keys(s.server)) assert.ok(names.has(key), `server.${key} is in INDICATORS`);
    for (const key of Object.keys(s.process)) assert.ok(names.has(key), `process.${key} is in INDICATORS`);
    // One name everywhere: every native counter is in server.stats().total under the name /stats uses.
    const total = server.stats().total;
    for (const key of NATIVE_WORKGROUP_KEYS) assert.ok(key in total, `server.stats().total.${key}`);
    assert.ok(PROTOCOL_ERROR_KEYS.length >= 1 && PROTOCOL_ERROR_KEYS.every((k) => k in total), PROTOCOL_ERROR_KEYS.join());
    assert.equal(s.server.protocol_errors, PROTOCOL_ERROR_KEYS.reduce((a, k) => a + s.server[k], 0));
    assert.equal(s.server.workgroups, 2);
    // The cluster block: the link's status (off: ClusterEngine = none); its numbers are server indicators.
    assert.deepEqual(s.cluster, { node: '', state: 'off', redis: '', detail: '', error: '' });
    for (const key of CLUSTER_COUNTERS) assert.ok(key in s.server, `server.${key}`);
    assert.equal(s.server.cluster_state, 0, 'cluster_state 0: off');
    assert.equal(s.process.cpus >= 1, true);
    assert.equal(s.process.rss_bytes > 0 && s.process.heap_used_bytes > 0, true);
  });

  it('counts the sessions, subscriptions and messages that clients make', async () => {
    const before = server.stats();
    const subs = await Promise.all([0, 1, 2].map(() => Client.open(server)));
    const pub = await Client.open(server);
    for (const sub of subs) await sub.command('SUB /count/a');
    for (let i = 0; i < 20; i++) pub.send(`PUB /count/a\nmessage ${i}`);
    for (const sub of subs) for (let i = 0; i < 20; i++) await sub.nextMsg(`message ${i}`);

    const s = await statsWhen(
      server,
      '/stats to show the 20 messages in and 60 out',
      (s) => s.server.messages_in === before.total.messages_in + 20 && s.server.messages_out === before.total.messages_out + 60,
    );
    assert.equal(s.server.connections, before.total.connections + 4);
    assert.equal(s.server.subscriptions, before.total.subscriptions + 3);
    assert.equal(s.server.subjects >= 1, true);
    assert.equal(s.server.handshakes, before.total.handshakes + 4);
    assert.equal(s.server.accepted, before.total.accepted + 4);
    // Round-robin placement: both workgroups hold some of the four connections.
    assert.deepEqual(s.workgroups.map((w) => w.connections > 0), [true, true]);
    await Promise.all([...subs, pub].map((c) => c.close()));
    await statsWhen(server, 'the disconnections to be counted', (s) => s.server.closed === before.total.closed + 4);
  });

  it('gives rates over the last second that agree with the totals of consecutive samples', async () => {
    const sub = await Client.open(server);
    const pub = await Client.open(server);
    await sub.command('SUB /rate/a');
    const timer = setInterval(() => {
      for (let i = 0; i < 20; i++) pub.send('PUB /rate/a\nx');
      while (sub.pending > 0) void sub.next();
    }, 20);
    try {
      const seen = new Map<number, Snapshot>();
      const [prev, cur] = await eventually('two consecutive samples while messages flow', async () => {
        const s = await stats(server);
        seen.set(s.seq, s);
        const p = seen.get(s.seq - 1);
        return p && s.server.messages_out_per_second > 0 && p.server.messages_out > 0 ? [p, s] : undefined;
      });
      // Every rate in the table, of native and derived counters alike.
      const pairs = INDICATORS.filter((d) => d.source === 'rate' && d.scope === 'workgroup').map((d) => [d.of!, d.name] as const);
      assert.ok(pairs.some(([total]) => total === 'messages_out'));
      for (const [total, perSecond] of pairs) {
        const expected = (cur.server[total] - prev.server[total]) / cur.intervalSeconds;
        assert.ok(Math.abs(cur.server[perSecond] - expected) <= 0.0051, `${perSecond} ${cur.server[perSecond]} vs ${expected}`);
        for (let w = 0; w < 2; w++) {
          const e = (cur.workgroups[w][total] - prev.workgroups[w][total]) / cur.intervalSeconds;
          assert.ok(Math.abs(cur.workgroups[w][perSecond] - e) <= 0.0051, `workgroups[${w}].${perSecond}`);
        }
      }
      assert.ok(cur.intervalSeconds > 0);
    } finally {
      clearInterval(timer);
    }
    await Promise.all([sub.close(), pub.close()]);
  });

  it('counts protocol errors by ERR code and by close code, and their sum', async () => {
    const before = (await stats(server)).server;
    const c = await Client.open(server);
    c.send('HELLO');
    assert.equal(parseErr(await c.next()).code, 'bad-command');
    c.send('SUB no-slash');
    assert.equal(parseErr(await c.next()).code, 'bad-subject');
    c.send('PUB /big\n' + 'x'.repeat(1100));
    assert.equal(parseErr(await c.next()).code, 'too-large');
    c.send('x'.repeat(9000)); // over MaxMessageSize + the longest header and the longest AUTH command: closed with 1009
    assert.equal((await within(c.closed, 'the 1009 close')).code, 1009);

    const s = await statsWhen(server, 'the four protocol errors', (s) => s.server.close_1009 === before.close_1009 + 1);
    for (const key of ['err_bad_command', 'err_bad_subject', 'err_too_large', 'close_1009']) assert.equal(s.server[key], before[key] + 1, key);
    for (const key of ['close_1002', 'close_1007', 'err_limit']) assert.equal(s.server[key], before[key], key);
    assert.equal(s.server.protocol_errors, before.protocol_errors + 4);

    const prom = parsePrometheus((await request(server, '/metrics')).text);
    for (const key of [...PROTOCOL_ERROR_KEYS, 'protocol_errors']) {
      const metric = metricName(key, 'workgroup', 'counter');
      const total = s.workgroups.reduce((a, w) => a + sample(prom, metric, { workgroup: String(w.workgroup) }), 0);
      assert.equal(total, s.server[key], metric);
    }
  });

  it('exposes every indicator to Prometheus at /metrics: starling_* names, workgroup labels, counters and gauges', async () => {
    // Idle: totals no longer move, so /metrics and /stats must agree on them whichever second each was served.
    const idle = await statsWhen(server, 'an idle second', (s) => s.server.messages_in_per_second === 0 && s.server.accepted_per_second === 0);
    const r = await request(server, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const prom = parsePrometheus(r.text);
    for (const s of prom.samples) assert.match(s.name, /^starling_/);
    for (const def of INDICATORS) {
      assert.equal(def.metric, metricName(def.name, def.scope, def.kind), `${def.name}: one name, one rule`);
      assert.equal(prom.types.get(def.metric), def.kind, `# TYPE ${def.metric}`);
      assert.ok(prom.help.get(def.metric), `# HELP ${def.metric}`);
      if (def.kind === 'counter') assert.match(def.metric, /_total$/);
      const series = prom.samples.filter((s) => s.name === def.metric);
      if (def.scope === 'workgroup') {
        const wgs = [...new Set(series.map((s) => s.labels.workgroup))].sort();
        assert.deepEqual(wgs, ['0', '1'], `${def.metric} has one series per workgroup`);
      } else {
        assert.equal(series.length, 1, `${def.metric} is one series`);
        assert.deepEqual(series[0].labels, {});
      }
    }
    // Totals and levels (not rates, which are of whichever second each request saw) agree with /stats.
    for (const def of INDICATORS.filter((d) => d.scope === 'workgroup' && d.source !== 'rate')) {
      for (const w of idle.workgroups)
        assert.equal(sample(prom, def.metric, { workgroup: String(w.workgroup) }), w[def.name], `${def.metric}{workgroup="${w.workgroup}"}`);
    }
    assert.equal(sample(prom, 'starling_connections', { workgroup: '0' }), idle.workgroups[0].connections);
    assert.equal(sample(prom, 'starling_messages_out_total', { workgroup: '1' }), idle.workgroups[1].messages_out);
    assert.equal(sample(prom, 'starling_subjects'), idle.server.subjects);
    assert.equal(sample(prom, 'starling_workgroups'), 2);
    assert.equal(sample(prom, 'starling_cluster_state'), 0);
    assert.equal(sample(prom, 'starling_cluster_refused_total'), 0);
    assert.equal(prom.types.get('starling_cluster_published_total'), 'counter');
    assert.equal(sample(prom, 'starling_info', { version: require(path.join(ROOT, 'package.json')).version }), 1);
    assert.ok(sample(prom, 'starling_process_rss_bytes') > 0);
  });

  it('answers 404 to unknown paths and 405 to methods other than GET and HEAD', async () => {
    assert.equal((await request(server, '/nothing')).status, 404);
    const post = await request(server, '/stats', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const head = await request(server, '/stats', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
  });

  it('serves a self-contained dashboard at / that may only talk to its own origin', async () => {
    const r = await request(server, '/');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(r.headers.get('content-security-policy') ?? '', /default-src 'none'.*connect-src 'self'/);
    assert.match(r.text, /<canvas/);
    assert.doesNotMatch(r.text, /<script[^>]+src=|<link[^>]+href=|@import|url\(\s*['"]?https?:/i, 'no external script, style or font');
    assert.doesNotMatch(r.text, /https?:\/\//, 'no absolute URL at all');
  });

  it('serves the client SDK as one ES module at /client.js, importable by pages of any origin', async () => {
    const r = await request(server, '/client.js');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    assert.match(r.text, /^export function connect\(/m);
    assert.doesNotMatch(r.text, /^\s*import\s|\brequire\(/m, 'self-contained: no static import, no require');
  });

  it('stops listening on the monitoring port when the server closes', async () => {
    const s = startServer(MONITORED);
    await s.monitor!.ready;
    const url = monitorUrl(s);
    assert.equal((await request(s, '/stats')).status, 200);
    await s.close();
    await assert.rejects(fetch(url + 'stats'), 'the port is closed');
  });
});

describe('HTTP Basic authentication', SUITE, () => {
  const USER = 'ops';
  const PASSWORD = 'pa:ss wörd'; // a colon and UTF-8: only the first colon separates user and password
  const server = startServer({ ...MONITORED, 'MonitorHTTP.Authentication': true, MonitorUsername: USER, MonitorPassword: PASSWORD });

  it('answers 401 with a Basic challenge and no data to missing, wrong or malformed credentials', async () => {
    await server.monitor!.ready;
    const attempts: { auth?: [string, string]; header?: string }[] = [
      {},
      { auth: [USER, 'wrong'] },
      { auth: ['someone', PASSWORD] },
      { auth: [USER, ''] },
      { auth: [USER, PASSWORD + ' '] },
      { header: 'Basic' },
      { header: 'Basic !!!' },
      { header: 'Bearer ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64') },
      { header: 'Basic ' + Buffer.from(USER).toString('base64') },
    ];
    for (const route of ['/', '/stats', '/history', '/metrics', '/nothing']) {
      for (const a of attempts) {
        const r = await request(server, route, a);
        assert.equal(r.status, 401, `${route} with ${JSON.stringify(a)}`);
        assert.equal(r.headers.get('www-authenticate'), 'Basic realm="Starling monitor", charset="UTF-8"');
        assert.doesNotMatch(r.text, /starling_|Connected|<html/i, 'a 401 shows nothing');
      }
    }
  });

  it('serves every endpoint to the right credentials', async () => {
    const auth: [string, string] = [USER, PASSWORD];
    for (const route of ['/', '/stats', '/history', '/metrics']) assert.equal((await request(server, route, { auth })).status, 200, route);
    assert.equal((await stats(server, auth)).workgroups.length, 2);
  });

  it('refuses to start with Authentication on and a credential missing', () => {
    assert.throws(
      () => startServer({ ...MONITORED, 'MonitorHTTP.Authentication': true, MonitorUsername: USER }),
      (e: ConfigError) =>
        e instanceof ConfigError &&
        e.errors.join('\n') ===
          'createServer(): MonitorHTTP.Authentication: expected MonitorUsername and MonitorPassword to be set when true, got MonitorPassword empty',
    );
  });
});

describe('the Monitor setting', SUITE, () => {
  it('serves only /metrics with Monitor = PROMETHEUS', async () => {
    const s = startServer({ ...MONITORED, Monitor: 'PROMETHEUS' });
    await s.monitor!.ready;
    assert.equal((await request(s, '/metrics')).status, 200);
    assert.equal((await request(s, '/stats')).status, 404);
    assert.equal((await request(s, '/history')).status, 404);
    assert.equal((await request(s, '/')).status, 404);
    assert.equal((await request(s, '/client.js')).status, 404);
  });

  it('serves /stats and the dashboard but not /metrics with Monitor = HTTP', async () => {
    const s = startServer({ ...MONITORED, Monitor: 'HTTP' });
    await s.monitor!.ready;
    assert.equal((await request(s, '/stats')).status, 200);
    assert.equal((await request(s, '/history')).status, 200);
    assert.equal((await request(s, '/')).status, 200);
    assert.equal((await request(s, '/metrics')).status, 404);
  });

  it('opens no port and starts no timer beyond the sampler when Monitor is empty', () => {
    // Count what server construction creates: listening sockets, JS timers, event-loop delay monitors.
    const created = { listen: 0, setInterval: 0, setTimeout: 0, loopMonitor: 0 };
    const listen = net.Server.prototype.listen;
    const [si, st] = [global.setInterval, global.setTimeout];
    const eld = perfHooks.monitorEventLoopDelay;
    const spy = <F extends (...a: never[]) => unknown>(key: keyof typeof created, f: F) =>
      function (this: unknown, ...args: Parameters<F>) {
        created[key]++;
        return f.apply(this, args);
      };
    net.Server.prototype.listen = spy('listen', listen) as typeof listen;
    global.setInterval = spy('setInterval', si) as typeof si;
    global.setTimeout = spy('setTimeout', st) as typeof st;
    (perfHooks as { monitorEventLoopDelay: typeof eld }).monitorEventLoopDelay = spy('loopMonitor', eld) as typeof eld;
    let off: Server, on: Server;
    const counts: (typeof created)[] = [];
    try {
      off = startServer({ Monitor: '' });
      counts.push({ ...created });
      Object.keys(created).forEach((k) => (created[k as keyof typeof created] = 0));
      on = startServer(MONITORED);
      counts.push({ ...created });
    } finally {
      net.Server.prototype.listen = listen;
      global.setInterval = si;
      global.setTimeout = st;
      (perfHooks as { monitorEventLoopDelay: typeof eld }).monitorEventLoopDelay = eld;
    }
    assert.equal(off.monitor, null);
    assert.deepEqual(counts[0], { listen: 0, setInterval: 1, setTimeout: 0, loopMonitor: 0 }, 'monitoring off: only the sampler');
    // The same spies see the monitor's port and its event-loop delay monitor when it is on.
    assert.deepEqual(counts[1], { listen: 1, setInterval: 1, setTimeout: 0, loopMonitor: 1 }, 'monitoring on');
    assert.ok(on.monitor);
  });

  it('logs a monitoring port that cannot be bound, rejects monitor.ready, and goes on serving clients', async () => {
    const first = startServer(MONITORED);
    await first.monitor!.ready;
    const port = new URL(monitorUrl(first)).port;
    const { log, lines } = capturingLogger('warn');
    const second = startServer({ ...MONITORED, 'MonitorHTTP.Listen': `127.0.0.1:${port}` }, log);
    await assert.rejects(second.monitor!.ready, new RegExp(`^Error: monitor: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE$`));
    assert.ok(lines.some((l) => / ERROR monitor: cannot listen on .*EADDRINUSE; serving without monitoring endpoints$/.test(l)), lines.join('\n'));
    await assertServes(second);
  });
});

describe('cluster status', SUITE, () => {
  it('shows a node of a cluster at /stats: its name, the link\'s state, the Redis server and why it is not up', async () => {
    // Nothing listens on this port: the link cannot be up, whatever the cluster link does about it.
    const port = await freePort();
    const server = startServer({ ...MONITORED, ClusterEngine: 'redis', ClusterRedis: `redis://:pw@127.0.0.1:${port}`, ClusterNodeName: 'mon-node' });
    await server.monitor!.ready;
    const s = await stats(server);
    assert.deepEqual(Object.keys(s.cluster), ['node', 'state', 'redis', 'detail', 'error']);
    assert.equal(s.cluster.node, 'mon-node');
    assert.ok(['connecting', 'down'].includes(s.cluster.state), s.cluster.state);
    assert.ok(['', `127.0.0.1:${port}`].includes(s.cluster.redis), s.cluster.redis);
    assert.equal(typeof s.cluster.detail, 'string');
    assert.ok(!JSON.stringify(s).includes(':pw@'), 'no password in /stats');
    assert.ok(['connecting', 'down'].includes(server.cluster.state), 'server.cluster reads the same link');
  });

  it('names a node without ClusterNodeName after the host and, with port 0, the process', async () => {
    const port = await freePort();
    const server = startServer({ ...MONITORED, ClusterEngine: 'redis', ClusterRedis: `redis://127.0.0.1:${port}` });
    await server.monitor!.ready;
    assert.equal((await stats(server)).cluster.node, clusterNodeName({ ClusterNodeName: '', Listen: [{ port: 0 }] }));
    assert.match((await stats(server)).cluster.node, new RegExp(`:pid${process.pid}$`));
  });

  it('warns at start about cluster keys set while ClusterEngine = none, and runs without a cluster', async () => {
    const { log, lines } = capturingLogger('warn');
    const server = startServer({ ...MONITORED, ClusterRedis: 'redis://:secret-pw@10.0.0.5', ClusterDeliveryMode: 'Guaranteed' }, log);
    assert.deepEqual(lines.map((l) => l.replace(/^\S+ /, '')), [
      'WARN  createServer(): ClusterRedis: is set but ClusterEngine is none (default), so it is ignored: set ClusterEngine = redis ' +
        'to run this server as a node of a cluster, or remove ClusterRedis',
      'WARN  createServer(): ClusterDeliveryMode: is set but ClusterEngine is none (default), so it is ignored: set ClusterEngine = ' +
        'redis to run this server as a node of a cluster, or remove ClusterDeliveryMode',
    ]);
    assert.deepEqual(server.cluster, { state: 'off', redis: '', detail: '', error: '' });
    await server.monitor!.ready;
    assert.equal((await stats(server)).cluster.state, 'off');
  });
});

describe('stats log and PUSH stats', SUITE, () => {
  const INTERVAL = 5;
  const { log, lines } = capturingLogger();
  const server = startServer({ ...MONITORED, 'Stats.LogInterval': INTERVAL, LogLevel: 'info' }, log);

  it('publishes the indicators as JSON on /__starling__/stats every Stats.LogInterval seconds', async () => {
    const sub = await Client.open(server);
    await sub.command(`SUB ${STATS_SUBJECT}`);
    const first = parseMsg(await sub.next('the first PUSH stats message', TIMEOUT_MS + INTERVAL * 1000));
    const second = parseMsg(await sub.next('the second PUSH stats message', TIMEOUT_MS + INTERVAL * 1000));
    assert.equal(first.subject, STATS_SUBJECT);
    assert.equal(first.binary, false);
    const a = JSON.parse(first.payload.toString()) as Snapshot;
    const b = JSON.parse(second.payload.toString()) as Snapshot;
    assert.equal(b.seq - a.seq, INTERVAL, 'one message every Stats.LogInterval samples');
    assert.equal(a.server.connections >= 1, true, 'the subscriber itself is connected');
    assert.equal(a.server.subscriptions >= 1, true);
    assert.equal(a.workgroups.length, 2);
    // The same document /stats serves.
    const s = await stats(server);
    assert.deepEqual(Object.keys(a).sort(), Object.keys(s).sort());
    assert.deepEqual(Object.keys(a.server).sort(), Object.keys(s.server).sort());
    assert.deepEqual(Object.keys(a.process).sort(), Object.keys(s.process).sort());
    await sub.close();
  });

  it('writes a key=value line of the main indicators every Stats.LogInterval seconds', async () => {
    const clients = await Promise.all([0, 1, 2].map(() => Client.open(server)));
    await clients[0].command('SUB /log/a');
    const from = lines.length;
    // Two lines after the clients connected: the second covers an interval in which all three were connected.
    const statsLines = () => lines.slice(from).filter((l) => / INFO  stats /.test(l));
    await eventually('two stats log lines', async () => (statsLines().length >= 2 ? true : undefined), () => lines.slice(-3));
    const line = statsLines()[1];
    assert.match(line, /^\d{4}-\d\d-\d\dT\S+Z INFO  stats (\w+=-?[\d.]+ ?)+$/, line);
    const fields = Object.fromEntries(line.split(' stats ')[1].split(' ').map((kv) => kv.split('=')));
    // Table order: gauges by name, counters with a rate as that rate, the rest by name; then the process.
    const rated = new Set(INDICATORS.filter((d) => d.source === 'rate').map((d) => d.of));
    const expected = INDICATORS.filter((d) => d.scope !== 'process' && d.source !== 'rate').map((d) =>
      d.kind === 'counter' && rated.has(d.name) ? rateName(d.name) : d.name,
    );
    expected.push('cpu_percent', 'rss_bytes', 'heap_used_bytes', 'event_loop_delay_seconds', 'event_loop_delay_max_seconds');
    assert.deepEqual(Object.keys(fields), expected);
    for (const key of ['connections', 'messages_in_per_second', 'messages_out_per_second', 'subjects', 'uptime_seconds'])
      assert.ok(key in fields, key);
    assert.equal(Number(fields.connections), server.stats().total.connections);
    assert.equal(Number(fields.subscriptions), 1);
    assert.equal(Number(fields.rss_bytes) > 0, true);
    assert.equal(Number(fields.uptime_seconds) >= 2 * INTERVAL, true);
    await Promise.all(clients.map((c) => c.close()));
  });
});

describe('counters the addon adds', () => {
  // What a later build of the addon might declare: new counters of both kinds in both scopes, and a new ERR code.
  const WORKGROUP: CounterInfo[] = [
    { name: 'connections', kind: 'gauge', doc: 'connections open' },
    { name: 'messages_out', kind: 'counter', doc: 'MSG deliveries queued to subscribers' },
    { name: 'publish_pauses', kind: 'counter', doc: 'times a publisher was paused' },
    { name: 'memory_cuts', kind: 'counter', doc: 'connections cut because Memory was used up' },
    { name: 'queued_bytes', kind: 'gauge', doc: 'bytes queued to sockets that refused them' },
    { name: 'close_1002', kind: 'counter', doc: 'connections closed with 1002' },
    { name: 'close_1008', kind: 'counter', doc: 'connections closed with 1008' },
    { name: 'err_memory', kind: 'counter', doc: 'ERR memory replies' },
  ];
  const SERVER: CounterInfo[] = [
    { name: 'subjects', kind: 'gauge', doc: 'subjects with at least one subscriber' },
    { name: 'connections_refused', kind: 'counter', doc: 'connections refused past MaxConnections' },
  ];
  const set = new IndicatorSet(WORKGROUP, SERVER);
  const layout = new CounterLayout(2, WORKGROUP, SERVER);
  // Workgroup w's counter i is 10 * (w + 1) + i; the server counters are 7 and 9. One second later, each counter
  // grew by its index + 1; the server counters stayed.
  const batch = (grown: boolean) =>
    Float64Array.from({ length: layout.slots }, (_, slot) => {
      const k = WORKGROUP.length;
      const base = slot < 2 * k ? 10 * (Math.floor(slot / k) + 1) + (slot % k) : [7, 9][slot - 2 * k];
      return base + (grown && slot < 2 * k ? (slot % k) + 1 : 0);
    });

  it('are in server.stats(), /stats, /metrics and the stats log under their own names, with rates', async () => {
    const before = batch(false);
    const after = batch(true);
    const stats = layout.decode(after, layout.rates(before, after, 1), { uptimeSeconds: 5, publishOverflows: 0, authorizeErrors: 0, authorizeTimeouts: 0 });
    assert.equal(stats.total.memory_cuts, 17 + 27);
    assert.equal(stats.total.connections_refused, 9, 'server counters decode after the workgroups');
    assert.equal(stats.workgroups[1].counters.publish_pauses, 22 + 3);
    assert.equal(stats.rates.memory_cuts_per_second, 8, 'rates of counters');
    assert.equal(stats.rates.connections_refused_per_second, 0);
    assert.ok(!('queued_bytes_per_second' in stats.rates), 'no rate of a gauge');

    const names = set.defs.map((d) => d.name);
    for (const name of ['publish_pauses', 'publish_pauses_per_second', 'memory_cuts', 'queued_bytes', 'connections_refused', 'connections_refused_per_second'])
      assert.ok(names.includes(name), name);
    assert.deepEqual(set.protocolErrors, ['close_1002', 'err_memory'], 'a new err_ counter is a protocol error; 1008 is not');
    const def = set.defs.find((d) => d.name === 'memory_cuts')!;
    assert.deepEqual([def.metric, def.kind, def.scope, def.help], ['starling_memory_cuts_total', 'counter', 'workgroup', 'Connections cut because Memory was used up.']);
    assert.equal(set.defs.find((d) => d.name === 'queued_bytes')!.metric, 'starling_queued_bytes');

    const process = { cpu_percent: 1, cpu_seconds: 2, cpus: 2, rss_bytes: 3, heap_used_bytes: 4, heap_total_bytes: 5,
      event_loop_delay_seconds: 0, event_loop_delay_p99_seconds: 0, event_loop_delay_max_seconds: 0 };
    const cluster = { node: '', state: 'off' as const, redis: '', detail: '', error: '' };
    const snapshot: Snapshot = { seq: 1, time: new Date().toISOString(), intervalSeconds: 1, ...set.indicators(stats), process, cluster };
    assert.equal(snapshot.server.publish_pauses, 15 + 25);
    assert.equal(snapshot.workgroups[0].memory_cuts, 13 + 4);
    assert.equal(snapshot.server.protocol_errors, stats.total.close_1002 + stats.total.err_memory);
    assert.equal(snapshot.server.connections_refused, 9);

    const prom = parsePrometheus(await new PrometheusExporter('0.0.0', set).render(snapshot));
    assert.equal(sample(prom, 'starling_memory_cuts_total', { workgroup: '1' }), 27);
    assert.equal(prom.types.get('starling_publish_pauses_total'), 'counter');
    assert.equal(sample(prom, 'starling_connections_refused_total'), 9);
    assert.equal(sample(prom, 'starling_queued_bytes', { workgroup: '0' }), 14 + 5);

    const start = { at: 0, server: set.indicators(layout.decode(before, null, { uptimeSeconds: 0, publishOverflows: 0, authorizeErrors: 0, authorizeTimeouts: 0 })).server,
      cpuSeconds: 0, samples: 1, loopMeans: 0, loopMax: 0 };
    const fields = Object.fromEntries(statsLineFields(set, start, 2000, snapshot));
    assert.equal(fields.memory_cuts_per_second, 4, 'averaged over the two seconds of the interval');
    assert.equal(fields.queued_bytes, 19 + 29);
    assert.equal(fields.connections_refused_per_second, 0);

    assert.match(renderIndicatorDocs(set), /\| `publish_pauses` \| counter \| `starling_publish_pauses_total` \| native \| Times a publisher was paused\. \|/);
  });

  it('may not take a name the control plane derives', () => {
    assert.throws(() => new IndicatorSet([{ name: 'uptime_seconds', kind: 'gauge', doc: '' }], []), /uptime_seconds is defined twice/);
    assert.throws(() => new IndicatorSet([{ name: 'a', kind: 'counter', doc: '' }, { name: 'a_per_second', kind: 'gauge', doc: '' }], []), /defined twice/);
    assert.throws(() => new CounterLayout(1, [{ name: 'a', kind: 'counter', doc: '' }], [{ name: 'a', kind: 'gauge', doc: '' }]), /declared twice/);
  });
});

describe('documentation', () => {
  it('docs/monitoring.md lists every indicator of this addon, as renderIndicatorDocs() writes them', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/monitoring.md'), 'utf8');
    assert.ok(doc.includes(renderIndicatorDocs()), 'regenerate with: node dist/src/monitor/gendocs.js docs/monitoring.md');
    for (const def of INDICATORS) {
      assert.ok(doc.includes(`\`${def.name}\``), `${def.name} in docs/monitoring.md`);
      assert.ok(doc.includes(`\`${def.metric}\``), `${def.metric} in docs/monitoring.md`);
    }
  });

  it('tuning/grafana-dashboard.json is a Grafana dashboard whose queries use only metrics the server exports', () => {
    const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'tuning/grafana-dashboard.json'), 'utf8'));
    const metrics = new Set([...INDICATORS.map((d) => d.metric), 'starling_info']);
    const exprs: string[] = [];
    const walk = (x: unknown): void => {
      if (Array.isArray(x)) x.forEach(walk);
      else if (x && typeof x === 'object') for (const [k, v] of Object.entries(x)) k === 'expr' && typeof v === 'string' ? exprs.push(v) : walk(v);
    };
    walk(dashboard.panels);
    assert.ok(exprs.length >= 8, 'has panels with queries');
    for (const e of exprs) for (const m of e.match(/starling_[a-z0-9_]+/g) ?? []) assert.ok(metrics.has(m), `${m} in ${e}`);
    for (const needed of ['starling_connections', 'starling_messages_out_per_second', 'starling_process_cpu_percent'])
      assert.ok(exprs.some((e) => e.includes(needed)), `a panel shows ${needed}`);
  });
});
