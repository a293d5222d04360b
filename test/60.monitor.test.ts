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
import { INDICATORS, Logger, PROTOCOL_ERROR_CODES, STATS_SUBJECT, type Server, type Snapshot } from '../src/index';
import { Client, TIMEOUT_MS, assertServes, parseErr, parseMsg, startServer, within } from './helpers';

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

const WORKGROUP_KEYS = INDICATORS.filter((d) => d.scope === 'workgroup').map((d) => d.name);
const COUNTER_KEYS = INDICATORS.filter((d) => d.scope === 'workgroup' && d.type === 'counter' && d.name !== 'ProtocolErrors').map((d) => d.name);

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
      if (key === 'ProtocolErrors') continue;
      const sum = s.workgroups.reduce((a, w) => a + (w[key as keyof typeof w] as number), 0);
      assert.ok(Math.abs(sum - (s.server[key as keyof typeof s.server] as number)) < 0.02, `server.${key} is the sum of the workgroups`);
    }
    assert.deepEqual(Object.keys(s.server.ProtocolErrors).sort(), [...PROTOCOL_ERROR_CODES].sort());
    assert.equal(s.server.Workgroups, 2);
    assert.equal(s.process.Cpus >= 1, true);
    assert.equal(s.process.RssBytes > 0 && s.process.HeapUsedBytes > 0, true);
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
      (s) => s.server.InPublishMessagesTotal === before.total.messagesIn + 20 && s.server.OutPublishMessagesTotal === before.total.messagesOut + 60,
    );
    assert.equal(s.server.ConnectedSessions, before.total.connections + 4);
    assert.equal(s.server.Subscriptions, before.total.subscriptions + 3);
    assert.equal(s.server.Subjects >= 1, true);
    assert.equal(s.server.Handshakes, before.total.handshakes + 4);
    assert.equal(s.server.ConnectionsTotal, before.total.accepted + 4);
    // Round-robin placement: both workgroups hold some of the four connections.
    assert.deepEqual(s.workgroups.map((w) => w.ConnectedSessions > 0), [true, true]);
    await Promise.all([...subs, pub].map((c) => c.close()));
    await statsWhen(server, 'the disconnections to be counted', (s) => s.server.DisconnectionsTotal === before.total.closed + 4);
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
        return p && s.server.OutPublishMessagesPerSecond > 0 && p.server.OutPublishMessagesTotal > 0 ? [p, s] : undefined;
      });
      for (const [total, perSecond] of [
        ['InPublishMessagesTotal', 'InPublishMessagesPerSecond'],
        ['OutPublishMessagesTotal', 'OutPublishMessagesPerSecond'],
        ['InBytesTotal', 'InBytesPerSecond'],
        ['OutBytesTotal', 'OutBytesPerSecond'],
      ] as const) {
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

  it('counts protocol errors by ERR code and by close code', async () => {
    const before = (await stats(server)).server.ProtocolErrors;
    const c = await Client.open(server);
    c.send('HELLO');
    assert.equal(parseErr(await c.next()).code, 'bad-command');
    c.send('SUB no-slash');
    assert.equal(parseErr(await c.next()).code, 'bad-subject');
    c.send('PUB /big\n' + 'x'.repeat(1100));
    assert.equal(parseErr(await c.next()).code, 'too-large');
    c.send('x'.repeat(4096)); // far over MaxMessageSize + the longest header: closed with 1009
    assert.equal((await within(c.closed, 'the 1009 close')).code, 1009);

    const s = await statsWhen(server, 'the four protocol errors', (s) => s.server.ProtocolErrors['1009'] === before['1009'] + 1);
    for (const code of ['bad-command', 'bad-subject', 'too-large', '1009'] as const) assert.equal(s.server.ProtocolErrors[code], before[code] + 1, code);
    for (const code of ['1002', '1007', 'limit'] as const) assert.equal(s.server.ProtocolErrors[code], before[code], code);

    const prom = parsePrometheus((await request(server, '/metrics')).text);
    for (const code of PROTOCOL_ERROR_CODES) {
      const total = s.workgroups.reduce((a, w) => a + sample(prom, 'starling_protocol_errors_total', { workgroup: String(w.workgroup), code }), 0);
      assert.equal(total, s.server.ProtocolErrors[code], `starling_protocol_errors_total{code="${code}"}`);
    }
  });

  it('exposes every indicator to Prometheus at /metrics: starling_* names, workgroup labels, counters and gauges', async () => {
    // Idle: totals no longer move, so /metrics and /stats must agree on them whichever second each was served.
    const idle = await statsWhen(server, 'an idle second', (s) => s.server.InPublishMessagesPerSecond === 0 && s.server.ConnectionsPerSecond === 0);
    const r = await request(server, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const prom = parsePrometheus(r.text);
    for (const s of prom.samples) assert.match(s.name, /^starling_/);
    for (const def of INDICATORS) {
      assert.equal(prom.types.get(def.metric), def.type, `# TYPE ${def.metric}`);
      assert.ok(prom.help.get(def.metric), `# HELP ${def.metric}`);
      if (def.type === 'counter') assert.match(def.metric, /_total$/);
      const series = prom.samples.filter((s) => s.name === def.metric);
      if (def.scope === 'workgroup') {
        const wgs = [...new Set(series.map((s) => s.labels.workgroup))].sort();
        assert.deepEqual(wgs, ['0', '1'], `${def.metric} has one series per workgroup`);
      } else {
        assert.equal(series.length, 1, `${def.metric} is one series`);
        assert.deepEqual(series[0].labels, {});
      }
    }
    for (const key of [...COUNTER_KEYS, 'ConnectedSessions', 'Subscriptions'] as const) {
      const def = INDICATORS.find((d) => d.name === key)!;
      for (const w of idle.workgroups)
        assert.equal(sample(prom, def.metric, { workgroup: String(w.workgroup) }), w[key as keyof typeof w], `${def.metric}{workgroup="${w.workgroup}"}`);
    }
    assert.equal(sample(prom, 'starling_subjects'), idle.server.Subjects);
    assert.equal(sample(prom, 'starling_workgroups'), 2);
    assert.equal(sample(prom, 'starling_info', { version: require(path.join(ROOT, 'package.json')).version }), 1);
    assert.ok(sample(prom, 'starling_process_resident_memory_bytes') > 0);
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
    for (const route of ['/', '/stats', '/metrics', '/nothing']) {
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
    for (const route of ['/', '/stats', '/metrics']) assert.equal((await request(server, route, { auth })).status, 200, route);
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
    assert.equal((await request(s, '/')).status, 404);
  });

  it('serves /stats and the dashboard but not /metrics with Monitor = HTTP', async () => {
    const s = startServer({ ...MONITORED, Monitor: 'HTTP' });
    await s.monitor!.ready;
    assert.equal((await request(s, '/stats')).status, 200);
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
    assert.equal(a.server.ConnectedSessions >= 1, true, 'the subscriber itself is connected');
    assert.equal(a.server.Subscriptions >= 1, true);
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
    assert.deepEqual(Object.keys(fields), [
      'ConnectedSessions', 'ConnectionsPerSecond', 'DisconnectionsPerSecond', 'Subjects', 'Subscriptions',
      'InPublishMessagesPerSecond', 'OutPublishMessagesPerSecond', 'InBytesPerSecond', 'OutBytesPerSecond',
      'SlowConsumerDisconnects', 'ProtocolErrors', 'CpuPercent', 'RssBytes', 'HeapUsedBytes',
      'EventLoopDelayMs', 'EventLoopDelayMaxMs', 'UptimeSeconds',
    ]);
    assert.equal(Number(fields.ConnectedSessions), server.stats().total.connections);
    assert.equal(Number(fields.Subscriptions), 1);
    assert.equal(Number(fields.RssBytes) > 0, true);
    assert.equal(Number(fields.UptimeSeconds) >= 2 * INTERVAL, true);
    await Promise.all(clients.map((c) => c.close()));
  });
});

describe('documentation', () => {
  it('docs/monitoring.md lists every indicator with its JSON key and Prometheus metric', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/monitoring.md'), 'utf8');
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
    for (const needed of ['starling_connected_sessions', 'starling_out_publish_messages_per_second', 'starling_process_cpu_percent'])
      assert.ok(exprs.some((e) => e.includes(needed)), `a panel shows ${needed}`);
  });
});
