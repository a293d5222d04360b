// The side-by-side benchmark (BENCHMARKS.md): W3, W1, W2, W1-max and W5 against Starling and each peer, one
// server at a time, in one run, with the same load tools. Writes bench/results/<date>.md (and .json).
//
//   node dist/bench/compare.js [--servers starling,uws,ws,nats] [--workloads W3,W1,W2,W1max,W5,W6,W7,W1x3,W2x3]
//   (a variant with ClusterEngine=redis runs on a fresh redis-server of its own; W1x3 / W2x3 run W1 / W2 on
//   three cluster nodes of each Starling server named: bench/cluster.ts)
//                              (a Starling variant: --servers starling:Workgroups=1,uws)
//                              [--clients 15000] [--seconds 20] [--warmup 3] [--rates 20000,30000,...]
//                              [--w5-drop 5000] [--w5-mode reset|close]
//
// W7 (entitled): W1 again with Entitlement = JWT and a token per client (see w7); run with W1 to get the ratio.
// W5 (the reconnect storm) runs W1, then drops --w5-drop of the subscribers at once (a third of --clients by
// default: 5,000 of 15,000) and reconnects them from their last positions while publishing continues
// (benchsub's ReconnectAfter). Starling only: the peers have no recovery protocol.
// W6 (server-sent events; opt-in, --workloads W6): W3, W1 and W2 again with the subscribers on GET /sse event streams
// (benchsub Transport = sse), Starling only; the ratios SSE / WebSocket of CPU per message (W1, W2) and bytes per
// idle connection (W3) are against the WebSocket runs of the same server in the same run, which W6 adds when
// --workloads does not name them. Then HTTP publish throughput (W6-POST): benchpub Transport = http on one
// kept-alive connection and on 100, offered more than the server takes (each connection keeps 64 requests in
// flight), to 1,000 subjects nobody subscribes to (each cached at its home, so every publish crosses to it).
// And the heartbeat cost (W6-HB): idle connections on a server with KeepAlive = 1, WebSocket pings then
// event-stream heartbeats, server CPU per connection per interval.
import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commandLine, describeMachine, type RecoverySummary, type RunSummary } from './report';
import { startBenchRedis, wantsCluster, withRedis, type BenchRedis } from './cluster';
import { startServer, stopChild, type ServerHandle } from './servers';
import { cpuSeconds, rssBytes, sleep } from './tools';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const PORT = 8810;
// Subscribers come from 19 source addresses, as the seeds' benchsub did (LocalAddresses), which also keeps
// every run clear of the ephemeral-port limit of one address.
const LOCAL_ADDRESSES = '127.0.0.{2..20}';
// Seconds of traffic before a window opens (--warmup): 3 by default. A longer one measures the steady state of a
// server whose cache has filled: W1 keeps about 13.6 MB/s, so the default CacheSize (an eighth of Memory: 1.5 GB
// on a 24 GiB machine) takes about 115 s (docs/tuning.md, huge pages).
let warmupSeconds = 3;
// BENCHMARKS.md: a workload is held when delivered/s is within 2% of offered (W1-max: ≥ 99% delivered with
// p99 ≤ 10 ms).
const W1MAX_DELIVERED = 0.99;
const W1MAX_P99_US = 10_000;
// BENCHMARKS.md goal for W5: 0 lost, 0 duplicated, every client back in sync within 2 s (and, with the default
// cache, no RESYNC).
const W5_SYNC_US = 2_000_000;
const W5_TIMEOUT_SECONDS = 10;

interface Row {
  server: string;
  workload: string;
  offered?: number;
  delivered?: number;
  cpuMicrosPerMessage?: number | null;
  p50?: number | null;
  p99?: number | null;
  max?: number | null;
  bytesPerConnection?: number;
  connections?: number;
  disconnects?: number;
  /** Starling dialect: messages missing from a subject's sequence / received twice, over the whole run. */
  lost?: number;
  duplicated?: number;
  recovery?: RecoverySummary;
  note?: string;
}

function waitForLine(child: ChildProcess, stream: 'stdout' | 'stderr', re: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} (got: ${buf.slice(-500)})`)), timeoutMs);
    child[stream]!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = buf.split('\n').find((l) => re.test(l));
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before ${re}: ${buf.slice(-500)}`));
    });
  });
}

/** A load tool as a child process, with a promise of its exit code taken before anything can race it. */
function tool(name: 'benchsub' | 'benchpub', defines: Record<string, string | number | boolean>): ChildProcess & { done: Promise<number | null> } {
  const args = [CLI, name, ...Object.entries(defines).map(([k, v]) => `-D${k}=${v}`)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const done = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return Object.assign(child, { done });
}

type SubTransport = 'websocket' | 'sse';

/** Subscribers connect; then publishers start; benchsub measures its window and writes its summary. */
/** Other processes whose CPU a run reads over its window (a cluster's Redis and nodes): name → pid. */
type Watched = Record<string, number>;
/** What a run's window cost the watched processes: name → CPU seconds. */
type WatchedCpu = Record<string, number>;

async function measure(
  server: ServerHandle,
  out: string,
  sub: Record<string, string | number | boolean>,
  pub: Record<string, string | number | boolean> | null,
  seconds: number,
  more: { servers?: ServerHandle[]; watch?: Watched; cpu?: WatchedCpu } = {},
): Promise<RunSummary> {
  const all = [server, ...(more.servers ?? [])];
  const common = { ServerAddresses: all.map((s) => `127.0.0.1:${s.port}`).join(','), Dialect: server.dialect };
  // A server named twice in --servers (to interleave runs) must not overwrite the raw files of its first run.
  for (let n = 2, first = out; fs.existsSync(out + '.json'); n++) out = `${first}-${n}`;
  const subscriber = tool('benchsub', {
    ...common,
    LocalAddresses: LOCAL_ADDRESSES,
    Warmup: warmupSeconds,
    Duration: seconds,
    ReportInterval: 5,
    ServerPid: server.pid,
    Output: out,
    ...sub,
  });
  let log = '';
  subscriber.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  subscriber.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await waitForLine(subscriber, 'stdout', /^connected:/, 180_000);
  const publisher = pub ? tool('benchpub', { ...common, Duration: 0, ...pub }) : null;
  // The watched processes' CPU over about benchsub's window: from the end of its warm-up to its exit.
  const watch = Object.entries(more.watch ?? {});
  const window = watch.length
    ? sleep(warmupSeconds * 1000).then(() => watch.map(([, pid]) => cpuSeconds(pid)))
    : Promise.resolve([] as number[]);
  const code = await subscriber.done;
  const before = await window;
  watch.forEach(([name, pid], i) => (more.cpu![name] = cpuSeconds(pid) - before[i]));
  if (publisher) await stopChild(publisher);
  fs.writeFileSync(out + '.log', log);
  if (code !== 0) throw new Error(`benchsub failed (${code}): ${log.slice(-800)}`);
  return JSON.parse(fs.readFileSync(out + '.json', 'utf8')) as RunSummary;
}

function latencyRow(server: string, workload: string, offered: number, r: RunSummary): Row {
  return {
    server,
    workload,
    offered,
    delivered: r.totals.ratePerSecond,
    cpuMicrosPerMessage: r.totals.serverCpuMicrosPerMessage ?? null,
    p50: r.latency.p50,
    p99: r.latency.p99,
    max: r.latency.max,
    connections: r.totals.connections,
    disconnects: r.totals.disconnects,
    ...(r.totals.lost !== undefined ? { lost: r.totals.lost, duplicated: r.totals.duplicated } : {}),
  };
}

async function w1(server: ServerHandle, dir: string, clients: number, rate: number, seconds: number, label = 'W1', transport: SubTransport = 'websocket', cluster?: ClusterRun): Promise<Row> {
  const subjects = `/p/s{1..${clients}}`;
  const out = path.join(dir, `${label}-${rate}-${server.name}`.replace(/[^A-Za-z0-9_.=,:{}-]+/g, '_'));
  const r = await measure(
    server,
    out,
    { Clients: clients, Subjects: subjects, OneToOne: true, Transport: transport },
    { Publishers: 4, Frequency: rate, Subjects: subjects, MessageSize: 512 },
    seconds,
    cluster ?? {},
  );
  const row = latencyRow(server.name, label, rate, r);
  const t = label === 'W1' || label === 'W6-W1' ? connectSeconds(out) : null;
  if (t) row.note = `${clients} clients connected in ${t.toFixed(1)} s (${Math.round(clients / t)}/s)${connectP99(r)}`;
  if (cluster) clusterRow(row, r, cluster);
  return row;
}

/** The `connected: N/M in X s` line of a benchsub log: how long opening every subscriber took (the upgrade and,
 * with tokens, the decision included). */
function connectSeconds(out: string): number | null {
  try {
    const m = /^connected: \d+\/\d+ in ([\d.]+) s/m.exec(fs.readFileSync(out + '.log', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** ", connect p50 / p99 x / y ms" of a run (each connection's socket to its 101, or to its AUTH answer with tokens). */
function connectP99(r: RunSummary): string {
  const c = r.connectTime;
  return c && c.p99 !== null ? `, connect p50 / p99 ${msOf(c.p50)} / ${msOf(c.p99)} ms` : '';
}

/** An HS256 JWT signed here with node:crypto (the server verifies it with jose). */
function signJwt(secret: Buffer, claims: Record<string, unknown>): string {
  const part = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * W7 (BENCHMARKS.md): W1 with Entitlement = JWT. Every subscriber connects with a token of its own on the upgrade
 * URL (15,000 distinct tokens verified through the batch path as they connect at once); half of them are granted
 * their subject exactly (`/p/s17`), half through a wildcard (`/p/{id}`); the publishers' token grants `/p/*`.
 * The row's note carries the connect time; the ratio to W1 is in the summary.
 */
async function w7(server: ServerHandle, base: string, dir: string, clients: number, rate: number, seconds: number, secret: Buffer): Promise<Row> {
  const subjects = `/p/s{1..${clients}}`;
  const exp = Math.floor(Date.now() / 1000) + 24 * 3600;
  const subTokens: string[] = [];
  for (let i = 0; i < clients; i++)
    subTokens.push(signJwt(secret, { exp, cid: i, permissions: { sub: [i % 2 === 0 ? `/p/s${i + 1}` : '/p/{id}'] } }));
  const subFile = path.join(dir, `W7-sub-tokens.txt`);
  const pubFile = path.join(dir, `W7-pub-tokens.txt`);
  fs.writeFileSync(subFile, subTokens.join('\n') + '\n');
  fs.writeFileSync(pubFile, signJwt(secret, { exp, permissions: { pub: ['/p/*'] } }) + '\n');
  const out = path.join(dir, `W7-${rate}-${base.replace(/[^A-Za-z0-9_.-]+/g, '_')}`);
  const r = await measure(
    server,
    out,
    { Clients: clients, Subjects: subjects, OneToOne: true, TokenFile: subFile },
    { Publishers: 4, Frequency: rate, Subjects: subjects, MessageSize: 512, TokenFile: pubFile },
    seconds,
  );
  const row = latencyRow(`${base} +JWT`, 'W7', rate, r);
  const t = connectSeconds(out);
  row.note = t ? `${clients} clients with distinct tokens connected in ${t.toFixed(1)} s (${Math.round(clients / t)}/s)${connectP99(r)}` : '';
  return row;
}

/** Whether a W5 run met its goal (BENCHMARKS.md), and if not, why. */
export function w5Verdict(r: RecoverySummary): { met: boolean; why: string[] } {
  const why: string[] = [];
  if (r.timedOut || r.synced + r.unpositioned < r.selected) why.push(`${r.selected - r.synced - r.unpositioned} of ${r.selected} not back in sync`);
  if (r.unpositioned > 0) why.push(`${r.unpositioned} without a position to recover from`);
  if ((r.syncTime.max ?? Infinity) > W5_SYNC_US) why.push(`max drop-to-SYNC ${((r.syncTime.max ?? NaN) / 1e6).toFixed(2)} s > 2 s`);
  if (r.lost > 0) why.push(`${r.lost} lost`);
  if (r.duplicated > 0) why.push(`${r.duplicated} duplicated`);
  if (r.resyncs > 0) why.push(`${r.resyncs} RESYNC`);
  if (r.epochChanges > 0) why.push(`${r.epochChanges} epoch changes`);
  if (r.errors > 0) why.push(`${r.errors} ERR`);
  return { met: why.length === 0, why };
}

async function w5(server: ServerHandle, dir: string, clients: number, drop: number, mode: string, seconds: number): Promise<Row> {
  const rate = 20000;
  const subjects = `/p/s{1..${clients}}`;
  // The storm a third of the way into the window (at least 2 s, at most 5 s in), so that every subject has
  // had its first messages and the live load after the storm is measured as long as before it.
  const after = Math.max(2, Math.min(5, Math.floor(seconds / 3)));
  const r = await measure(
    server,
    path.join(dir, `W5-${server.name.replace(/[^A-Za-z0-9_.-]+/g, '_')}`),
    {
      Clients: clients,
      Subjects: subjects,
      OneToOne: true,
      ReconnectAfter: after,
      ReconnectClients: drop,
      ReconnectMode: mode,
      ReconnectTimeout: W5_TIMEOUT_SECONDS,
    },
    { Publishers: 4, Frequency: rate, Subjects: subjects, MessageSize: 512 },
    seconds,
  );
  const row = latencyRow(server.name, 'W5', rate, r);
  if (!r.recovery) throw new Error('benchsub wrote no recovery summary');
  row.recovery = r.recovery;
  const v = w5Verdict(r.recovery);
  row.note = `${r.recovery.dropped} dropped, ${v.met ? 'goal met' : 'goal NOT met: ' + v.why.join(', ')}`;
  return row;
}

async function w2(server: ServerHandle, dir: string, clients: number, seconds: number, label = 'W2', transport: SubTransport = 'websocket', cluster?: ClusterRun): Promise<Row> {
  const r = await measure(
    server,
    path.join(dir, `${label}-${server.name}`.replace(/[^A-Za-z0-9_.=,:{}-]+/g, '_')),
    { Clients: clients, Subjects: '/p/s1', SubjectsPerClient: 1, Transport: transport },
    { Publishers: 1, Frequency: 20, Subjects: '/p/s1', MessageSize: 512 },
    seconds,
    cluster ?? {},
  );
  const row = latencyRow(server.name, label, 20 * clients, r);
  if (cluster) clusterRow(row, r, cluster);
  return row;
}

/**
 * A run on the cluster engine: its Redis (and, for the three-node workloads, the other nodes) watched over the
 * window. The row's CPU is every node's together per message delivered; the note has each node's and Redis's.
 */
interface ClusterRun {
  servers?: ServerHandle[];
  watch: Watched;
  cpu: WatchedCpu;
  /** Publishes per second the engine numbered (the offered rate: each is one script run). */
  published: number;
}

function clusterRow(row: Row, r: RunSummary, c: ClusterRun): void {
  const messages = r.totals.messages;
  const per = (name: string) => (messages > 0 ? (c.cpu[name] * 1e6) / messages : NaN);
  const nodes = Object.keys(c.watch).filter((n) => n !== 'redis');
  if (nodes.length > 1) row.cpuMicrosPerMessage = nodes.reduce((sum, n) => sum + per(n), 0);
  const seconds = r.totals.seconds;
  const redisPerPublish = seconds > 0 && c.published > 0 ? (c.cpu.redis * 1e6) / (c.published * seconds) : NaN;
  const parts = [
    ...(nodes.length > 1 ? nodes.map((n) => `${n} ${per(n).toFixed(2)}`) : []),
    `Redis ${per('redis').toFixed(2)} µs/msg delivered (${redisPerPublish.toFixed(1)} µs per publish, ${((c.cpu.redis / seconds) * 100).toFixed(0)}% of a core)`,
  ];
  row.note = [row.note, `CPU ${parts.join(', ')}`].filter(Boolean).join('; ');
}

/** W6-HB: the keep-alive interval the heartbeat runs use (seconds): each connection gets one every this long. */
const HB_INTERVAL_S = 1;

/**
 * W6-HB (the heartbeat cost): `clients` idle subscribers (each on its own subject, no message published) on a
 * server with KeepAlive = HB_INTERVAL_S, for `seconds`: server CPU per connection per interval — a comment line
 * to an event stream, or a ping (and its pong) to a WebSocket. What a million connections at the default
 * KeepAlive (30 s) would cost follows from it.
 */
async function heartbeats(server: ServerHandle, dir: string, clients: number, seconds: number, label: string, transport: SubTransport): Promise<Row> {
  const subscriber = await idleSubscribers(server, dir, clients, label, transport, seconds + 4);
  await sleep(2000); // every connection past its first interval
  const cpu0 = cpuSeconds(server.pid);
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const cpu = cpuSeconds(server.pid) - cpu0;
  const beats = (clients * (Date.now() - t0)) / 1000 / HB_INTERVAL_S;
  const code = await subscriber.done;
  if (code !== 0) throw new Error(`benchsub failed (${code})`);
  const perBeat = (cpu * 1e6) / beats;
  return {
    server: server.name,
    workload: label,
    connections: clients,
    cpuMicrosPerMessage: perBeat,
    note: `${clients} idle ${transport === 'sse' ? 'event streams' : 'WebSockets'}, KeepAlive ${HB_INTERVAL_S} s: server CPU µs per ${transport === 'sse' ? 'heartbeat' : 'ping and pong'}; at 1,000,000 connections and KeepAlive 30: ${((perBeat * 1e6) / 30 / 1e4).toFixed(1)}% of a core`,
  };
}

/** Offered to the HTTP publish runs: more than one server takes, so the rate measured is the server's (or the load tool's). */
const W6_POST_OFFERED = 2_000_000;
const BENCHPUB_REPORT_SECONDS = 5;

/**
 * W6-POST: benchpub Transport = http on `publishers` kept-alive connections for `seconds` (after its first report,
 * a warm-up): the requests answered 200 per second, and the server's CPU per answered publish.
 */
async function w6post(server: ServerHandle, publishers: number, seconds: number): Promise<Row> {
  const window = Math.max(2, Math.round(seconds / BENCHPUB_REPORT_SECONDS)) * BENCHPUB_REPORT_SECONDS;
  const pub = tool('benchpub', {
    ServerAddresses: `127.0.0.1:${server.port}`,
    Dialect: server.dialect,
    LocalAddresses: LOCAL_ADDRESSES,
    Transport: 'http',
    Publishers: publishers,
    Frequency: W6_POST_OFFERED,
    MessageSize: 512,
    Subjects: '/post/s{1..1000}',
    Duration: window + BENCHPUB_REPORT_SECONDS,
  });
  const reports: { at: number; answered: number; errors: number; cpu: number }[] = [];
  let log = '';
  pub.stdout!.on('data', (d: Buffer) => {
    log += d.toString();
    for (const m of d.toString().matchAll(/^\[(\d+) s\].*answered 200 (\d+) \| errors (\d+)/gm))
      reports.push({ at: Number(m[1]), answered: Number(m[2]), errors: Number(m[3]), cpu: cpuSeconds(server.pid) });
  });
  pub.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const code = await pub.done;
  if (code !== 0 || reports.length < 2) throw new Error(`benchpub failed (${code}): ${log.slice(-800)}`);
  const [first, last] = [reports[0], reports[reports.length - 1]];
  const answered = last.answered - first.answered;
  const rate = answered / (last.at - first.at);
  return {
    server: server.name,
    workload: `W6-POST ×${publishers}`,
    offered: W6_POST_OFFERED,
    delivered: Math.round(rate),
    cpuMicrosPerMessage: answered > 0 ? ((last.cpu - first.cpu) * 1e6) / answered : null,
    connections: publishers,
    note: `POST /publish answered 200 per second on ${publishers} kept-alive connection${publishers > 1 ? 's' : ''} (64 in flight each); ${last.errors} errors`,
  };
}

/** `clients` subscribers, each on its own subject, that receive nothing and stay `seconds`; resolves once all are connected. */
async function idleSubscribers(server: ServerHandle, dir: string, clients: number, label: string, transport: SubTransport, seconds: number) {
  const subscriber = tool('benchsub', {
    ServerAddresses: `127.0.0.1:${server.port}`,
    Dialect: server.dialect,
    LocalAddresses: LOCAL_ADDRESSES,
    Clients: clients,
    Subjects: `/p/s{1..${clients}}`,
    OneToOne: true,
    Transport: transport,
    Duration: seconds,
    Output: path.join(dir, `${label}-${server.name}`.replace(/[^A-Za-z0-9_.-]+/g, '_')),
  });
  await waitForLine(subscriber, 'stdout', /^connected:/, 180_000);
  return subscriber;
}

async function w3(server: ServerHandle, dir: string, clients: number, label = 'W3', transport: SubTransport = 'websocket'): Promise<Row> {
  await sleep(1000);
  const before = rssBytes(server.pid);
  const subscriber = await idleSubscribers(server, dir, clients, label, transport, 1);
  await sleep(2000); // let the subscriptions settle
  const after = rssBytes(server.pid);
  await subscriber.done;
  return { server: server.name, workload: label, connections: clients, bytesPerConnection: Math.round((after - before) / clients) };
}

function parseArgs(argv: string[]) {
  const opts = {
    servers: ['starling', 'uws', 'ws', 'nats'],
    workloads: ['W3', 'W1', 'W2', 'W1max'],
    clients: 15000,
    seconds: 20,
    rates: [20000, 30000, 40000, 50000, 60000, 70000, 80000],
    w1maxServers: ['starling', 'uws'],
    w5Drop: 0, // 0: a third of --clients
    w5Mode: 'reset',
    out: path.join(ROOT, 'bench', 'results'),
  };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--servers': opts.servers = v.split(/,(?![A-Za-z.]+=)/); i++; break;
      case '--workloads': opts.workloads = v.split(','); i++; break;
      case '--clients': opts.clients = Number(v); i++; break;
      case '--seconds': opts.seconds = Number(v); i++; break;
      case '--warmup':
        warmupSeconds = Number(v);
        if (!Number.isFinite(warmupSeconds) || warmupSeconds < 0) throw new Error(`--warmup takes seconds (0 or more), not ${v}`);
        i++; break;
      case '--rates': opts.rates = v.split(',').map(Number); i++; break;
      case '--w1max-servers': opts.w1maxServers = v.split(/,(?![A-Za-z.]+=)/); i++; break;
      case '--w5-drop': opts.w5Drop = Number(v); i++; break;
      case '--w5-mode':
        if (v !== 'reset' && v !== 'close') throw new Error('--w5-mode takes reset or close');
        opts.w5Mode = v; i++; break;
      case '--out': opts.out = v; i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return opts;
}

const fmt = (x: number | null | undefined, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const msOf = (us: number | null | undefined) => (us === null || us === undefined ? '–' : (us / 1000).toFixed(2));

const isStarling = (name: string) => name === 'starling' || name.startsWith('starling:') || name.startsWith('starling@');
const w5DropOf = (opts: ReturnType<typeof parseArgs>) => opts.w5Drop || Math.round(opts.clients / 3);

function renderW5(opts: ReturnType<typeof parseArgs>, rows: Row[]): string[] {
  const w5 = rows.filter((r) => r.workload === 'W5' && r.recovery);
  const skipped = opts.servers.filter((s) => !isStarling(s));
  if (!opts.workloads.includes('W5')) return [];
  const lines = ['', '## W5 reconnect storm', ''];
  lines.push(
    `W1 (${opts.clients} subscribers, 20,000 msg/s), then ${w5DropOf(opts)} subscribers (one in every ${Math.max(1, Math.floor(opts.clients / w5DropOf(opts)))}) dropped at once by ` +
      `${opts.w5Mode === 'reset' ? 'TCP reset (SO_LINGER 0)' : 'a close frame (1001), not waiting for the answer'} and reconnected at once, each with ` +
      '`SUB <subject>@<epoch>:<seq>` from the last message it received, while publishing continues. *Drop to SYNC*: from a ' +
      "client's drop to its SYNC (the load tool closing and reopening, TCP, the upgrade and the server's answer); *SUB to SYNC*: " +
      "from its recovery SUB (sent as the 101 arrives) to its SYNC, the server's part; *all back*: from the drop until every " +
      'client was seen in sync (polled every 20 ms). ' +
      'Lost / duplicated / RESYNC: sequence checks of every subscriber over the whole run. Server CPU: from the drop ' +
      'until all were back; *excess* subtracts what the live messages delivered meanwhile cost (at the CPU per live message before the drop); CPU time ' +
      'is read in 10 ms ticks. Goal (BENCHMARKS.md): 0 lost, 0 duplicated, every client back in sync within 2 s.',
  );
  lines.push('');
  if (w5.length) {
    lines.push('| server | dropped | back in sync | all back s | drop to SYNC p50 / p99 / max ms | SUB to SYNC p50 / p99 / max ms | recovered msgs | lost | duplicated | RESYNC | server CPU s (storm) | excess CPU s | µs / reconnect | µs / recovered msg | goal |');
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const row of w5) {
      const r = row.recovery!;
      const v = w5Verdict(r);
      lines.push(
        `| ${row.server} | ${r.dropped} | ${r.synced}${r.unpositioned ? ` (+${r.unpositioned} unpositioned)` : ''} | ${r.seconds.toFixed(3)}${r.timedOut ? ' (timed out)' : ''} | ` +
          `${msOf(r.syncTime.p50)} / ${msOf(r.syncTime.p99)} / ${msOf(r.syncTime.max)} | ` +
          `${msOf(r.resubscribeTime.p50)} / ${msOf(r.resubscribeTime.p99)} / ${msOf(r.resubscribeTime.max)} | ${r.recovered} | ${r.lost} | ${r.duplicated} | ${r.resyncs} | ` +
          `${fmt(r.serverCpuSeconds, 2)} | ${fmt(r.serverCpuExcessSeconds, 2)} | ${fmt(r.serverCpuMicrosPerReconnect, 0)} | ${fmt(r.serverCpuMicrosPerRecovered, 0)} | ` +
          `${v.met ? 'met' : 'NOT met: ' + v.why.join(', ')} |`,
      );
    }
  }
  if (skipped.length) lines.push('', `Not run for ${skipped.join(', ')}: the peers have no recovery protocol (no positions, SYNC or RESYNC).`);
  return lines;
}

function renderResults(opts: ReturnType<typeof parseArgs>, rows: Row[], command: string, started: Date, errors: string[]): string {
  const m = describeMachine();
  const lines = [
    `# Benchmark results ${started.toISOString().slice(0, 10)}`,
    '',
    `- Machine: ${m.host}, ${m.cpus} × ${m.cpuModel}, ${m.memGiB} GiB; kernel ${m.kernel}; Node ${m.node}`,
    `- Date: ${started.toISOString()}`,
    `- Command: \`${command}\``,
    `- Method: BENCHMARKS.md. Server, publishers and subscribers share this machine; loopback; 512-byte payloads;`,
    `  subscribers from ${LOCAL_ADDRESSES}; benchsub and benchpub are Starling's native client engine, one thread each;`,
    `  ${warmupSeconds} s warm-up, then a ${opts.seconds} s window. CPU µs/msg = server utime+stime over the window /`,
    `  messages delivered in it. Starling runs with its defaults (Workgroups = CPU count) and BenchmarkMode = true.`,
    // (malloc's settings change what a server costs: a run made with them says so)
    ...(process.env.GLIBC_TUNABLES ? [`- Environment of every process: GLIBC_TUNABLES=${process.env.GLIBC_TUNABLES}`] : []),
    '',
    '| server | workload | offered msg/s | delivered msg/s | CPU µs/msg | p50 ms | p99 ms | max ms | bytes/idle conn | notes |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const integrity = r.lost || r.duplicated ? `${r.lost} lost, ${r.duplicated} duplicated` : '';
    const note = [r.disconnects ? `${r.disconnects} disconnects` : '', integrity, r.note ?? ''].filter(Boolean).join('; ');
    lines.push(
      `| ${r.server} | ${r.workload} | ${fmt(r.offered, 0)} | ${fmt(r.delivered, 0)} | ${fmt(r.cpuMicrosPerMessage, 2)} | ${msOf(r.p50)} | ${msOf(r.p99)} | ${msOf(r.max)} | ${fmt(r.bytesPerConnection, 0)} | ${note} |`,
    );
  }
  // Each Starling variant of the run against uWebSockets.js: the mean over the interleaved runs of each.
  const mean = (server: string, workload: string, field: keyof Row) => {
    const v = rows.filter((r) => r.server === server && r.workload === workload).map((r) => r[field] as number | null | undefined);
    const ok = v.filter((x): x is number => typeof x === 'number' && x > 0);
    return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : null;
  };
  const ratios = (workload: string, field: keyof Row) => {
    const u = mean('uws', workload, field);
    const each = [...new Set(opts.servers.filter(isStarling))].map((s) => {
      const v = mean(s, workload, field);
      return v !== null && u !== null ? `${s} ${(v / u).toFixed(2)}` : null;
    });
    return each.filter(Boolean).join(', ') || '–';
  };
  lines.push(...renderRepeats(rows));
  if (opts.servers.includes('uws')) {
    lines.push('', '## Ratios, Starling / uWebSockets.js (same run; means of interleaved runs)', '');
    lines.push(`- W1 CPU µs/msg: ${ratios('W1', 'cpuMicrosPerMessage')} (goal ≤ 0.6)`);
    lines.push(`- W2 CPU µs/msg: ${ratios('W2', 'cpuMicrosPerMessage')}`);
    lines.push(`- W3 bytes per idle connection: ${ratios('W3', 'bytesPerConnection')}`);
  }
  for (const server of opts.workloads.includes('W1max') ? opts.w1maxServers : []) {
    const held = rows.filter((r) => r.server === server && r.workload === 'W1-max' && r.note === 'held').map((r) => r.offered ?? 0);
    lines.push(`- W1-max ${server}: ${held.length ? `${Math.max(...held)} msg/s held` : 'no rate held'} (held = ≥ 99% delivered, p99 ≤ 10 ms)`);
  }
  rows.forEach((w7, i) => {
    if (w7.workload !== 'W7') return;
    // Against the W1 run of the same server just before it (servers named twice interleave their runs).
    const base = w7.server.replace(/ \+JWT$/, '');
    const w1 = rows.slice(0, i).reverse().find((r) => r.server === base && r.workload === 'W1');
    const ratio = w1?.cpuMicrosPerMessage && w7.cpuMicrosPerMessage ? (w7.cpuMicrosPerMessage / w1.cpuMicrosPerMessage).toFixed(3) : '–';
    lines.push(`- W7 ${base}: CPU µs/msg with JWT entitlement / without (the W1 run before it): ${ratio} (goal ≤ 1.05)`);
  });
  const w6Lines: string[] = [];
  rows.forEach((w6, i) => {
    const of = /^W6-(W[123])$/.exec(w6.workload)?.[1];
    if (!of) return;
    // Against the WebSocket run of the same server and workload just before it.
    const ws = rows.slice(0, i).reverse().find((r) => r.server === w6.server && r.workload === of);
    const field = of === 'W3' ? 'bytesPerConnection' : 'cpuMicrosPerMessage';
    const ratio = ws?.[field] && w6[field] ? (w6[field] / ws[field]).toFixed(3) : '–';
    const goal = of === 'W1' ? ' (goal ≤ 1.25)' : of === 'W3' ? ` (${fmt(w6.bytesPerConnection, 0)} B per idle event stream; goal ≤ 400)` : '';
    w6Lines.push(`- ${w6.server}: ${of} over server-sent events / over WebSocket, ${of === 'W3' ? 'bytes per idle connection' : 'CPU µs/msg'}: ${ratio}${goal}`);
  });
  for (const post of rows.filter((r) => r.workload.startsWith('W6-POST')))
    w6Lines.push(`- ${post.server}: HTTP publish, ${post.connections} kept-alive connection${post.connections === 1 ? '' : 's'}: ${fmt(post.delivered, 0)} answered/s, ${fmt(post.cpuMicrosPerMessage, 2)} server CPU µs each`);
  const hb = (t: string) => rows.find((r) => r.workload === `W6-HB ${t}`);
  if (hb('sse')) w6Lines.push(`- heartbeats: ${hb('sse')!.note}${hb('websocket') ? `; a WebSocket ping and pong: ${fmt(hb('websocket')!.cpuMicrosPerMessage, 2)} µs` : ''}`);
  if (w6Lines.length) lines.push('', '## W6, server-sent events / WebSocket (same run)', '', ...w6Lines);
  lines.push(...renderW5(opts, rows));
  if (errors.length) lines.push('', '## Errors', '', ...errors.map((e) => `- ${e}`));
  return lines.join('\n') + '\n';
}

/**
 * Servers named more than once (interleaved runs, e.g. starling,starling:CacheSize=0,starling:CacheSize=0,starling):
 * the mean CPU µs/msg of each per workload, and its ratio to the mean of the first server named.
 */
function renderRepeats(rows: Row[]): string[] {
  const lines: string[] = [];
  for (const workload of [...new Set(rows.map((r) => r.workload))]) {
    const of = rows.filter((r) => r.workload === workload && r.cpuMicrosPerMessage);
    const servers = [...new Set(of.map((r) => r.server))];
    const runs = (server: string) => of.filter((r) => r.server === server).map((r) => r.cpuMicrosPerMessage!);
    if (!servers.some((s) => runs(s).length > 1)) continue;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const base = mean(runs(servers[0]));
    lines.push('', `## ${workload}, interleaved runs: mean CPU µs/msg`, '');
    for (const server of servers) {
      const xs = runs(server);
      const ratio = server === servers[0] ? '' : `; / ${servers[0]}: ${(mean(xs) / base).toFixed(3)}`;
      lines.push(`- ${server}: ${fmt(mean(xs), 2)} over ${xs.length} run${xs.length === 1 ? '' : 's'} (${xs.map((x) => fmt(x, 2)).join(', ')})${ratio}`);
    }
  }
  return lines;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const started = new Date();
  const command = commandLine(['node', path.relative(ROOT, __filename), ...process.argv.slice(2)]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-compare-'));
  const rows: Row[] = [];
  const errors: string[] = [];
  const log = (s: string) => console.log(`[compare] ${s}`);

  // A variant with ClusterEngine=redis runs against a fresh Redis of its own (bench/cluster.ts), watched.
  let engine: ClusterRun | undefined;
  const run = async (name: string, workload: string, body: (s: ServerHandle) => Promise<Row | Row[]>) => {
    let server: ServerHandle | null = null;
    let redis: BenchRedis | null = null;
    try {
      if (wantsCluster(name)) {
        redis = await startBenchRedis();
        engine = { watch: { redis: redis.pid }, cpu: {}, published: 0 };
      }
      server = await startServer(redis ? withRedis(name, redis) : name, PORT);
      server.name = name;
      log(`${name} ${workload} (pid ${server.pid})`);
      const r = await body(server);
      for (const row of Array.isArray(r) ? r : [r]) {
        rows.push(row);
        log(JSON.stringify(row));
      }
    } catch (e) {
      errors.push(`${name} ${workload}: ${(e as Error).message.split('\n')[0]}`);
      log(`error: ${name} ${workload}: ${(e as Error).message}`);
    } finally {
      if (server) await server.stop();
      if (redis) await redis.stop();
      engine = undefined;
      await sleep(1000);
    }
  };
  // W1x3 / W2x3: three nodes of a cluster on one Redis, benchsub's subscribers and benchpub's publishers spread
  // over them (round robin).
  const run3 = async (name: string, of: 'W1' | 'W2') => {
    const redis = await startBenchRedis().catch((e: Error) => {
      errors.push(`${name} ${of}x3: ${e.message}`);
      return null;
    });
    if (!redis) return;
    const nodes: ServerHandle[] = [];
    try {
      const base = `${name}${name.includes(':') ? ',' : ':'}ClusterEngine=redis,ClusterRedis=${redis.url}`;
      for (let i = 0; i < 3; i++) nodes.push(await startServer(`${base},ClusterNodeName=node${i + 1}`, PORT + 1 + i));
      const label = `${name} ×3 nodes`;
      nodes[0].name = label;
      const watch: Watched = { redis: redis.pid };
      nodes.forEach((n, i) => (watch[`node${i + 1}`] = n.pid));
      const c: ClusterRun = { servers: nodes.slice(1), watch, cpu: {}, published: of === 'W1' ? 20000 : 20 };
      log(`${label} ${of}x3 (pids ${nodes.map((n) => n.pid).join(', ')}, redis ${redis.pid})`);
      const row = of === 'W1' ? await w1(nodes[0], dir, opts.clients, 20000, opts.seconds, 'W1x3', 'websocket', c) : await w2(nodes[0], dir, opts.clients, opts.seconds, 'W2x3', 'websocket', c);
      rows.push(row);
      log(JSON.stringify(row));
    } catch (e) {
      errors.push(`${name} ${of}x3: ${(e as Error).message.split('\n')[0]}`);
      log(`error: ${name} ${of}x3: ${(e as Error).message}`);
    } finally {
      for (const n of nodes) await n.stop();
      await redis.stop();
      await sleep(1000);
    }
  };

  // W3, W1 or W2 with the subscribers on `transport` (labelled W6-… over server-sent events).
  const workload = (s: ServerHandle, of: 'W1' | 'W2' | 'W3', transport: SubTransport) => {
    const label = transport === 'sse' ? `W6-${of}` : of;
    if (of === 'W3') return w3(s, dir, opts.clients, label, transport);
    if (of === 'W1') return w1(s, dir, opts.clients, 20000, opts.seconds, label, transport);
    return w2(s, dir, opts.clients, opts.seconds, label, transport);
  };
  const threeNodes = new Set<string>();
  for (const name of opts.servers) {
    if (opts.workloads.includes('W3')) await run(name, 'W3', (s) => w3(s, dir, opts.clients));
    const published = (c: ClusterRun | undefined, rate: number) => c && Object.assign(c, { published: rate });
    if (opts.workloads.includes('W1')) await run(name, 'W1', (s) => w1(s, dir, opts.clients, 20000, opts.seconds, 'W1', 'websocket', published(engine, 20000)));
    if (opts.workloads.includes('W2')) await run(name, 'W2', (s) => w2(s, dir, opts.clients, opts.seconds, 'W2', 'websocket', published(engine, 20)));
    for (const of of ['W1', 'W2'] as const)
      if (opts.workloads.includes(`${of}x3`) && !threeNodes.has(`${name} ${of}`)) {
        threeNodes.add(`${name} ${of}`);  // (once per server, when it is named twice to interleave)
        if (isStarling(name) && !wantsCluster(name)) await run3(name, of);
        else log(`${name} ${of}x3: skipped, ${isStarling(name) ? 'the three nodes are clustered anyway' : 'the peers have no cluster'}`);
      }
    if (opts.workloads.includes('W7')) {
      if (isStarling(name)) {
        const secret = crypto.randomBytes(32);
        const entitled = `${name}${name.includes(':') ? ',' : ':'}Entitlement=JWT,Entitlement.JWT.Secret=${secret.toString('base64')}`;
        await run(entitled, 'W7', (s) => w7(s, name, dir, opts.clients, 20000, opts.seconds, secret));
      } else {
        log(`${name} W7: skipped, the peers have no entitlement`);
      }
    }
    if (opts.workloads.includes('W6')) {
      if (isStarling(name)) {
        // Each over WebSocket first (unless run above) for the ratio, then over server-sent events.
        for (const of of ['W3', 'W1', 'W2'] as const) {
          if (!opts.workloads.includes(of)) await run(name, of, (s) => workload(s, of, 'websocket'));
          await run(name, `W6-${of}`, (s) => workload(s, of, 'sse'));
        }
        for (const publishers of [1, 100]) await run(name, `W6-POST ×${publishers}`, (s) => w6post(s, publishers, opts.seconds));
        const hb = `${name}${name.includes(':') ? ',' : ':'}KeepAlive=${HB_INTERVAL_S}`;
        await run(hb, 'W6-HB websocket', (s) => heartbeats(s, dir, opts.clients, opts.seconds, 'W6-HB websocket', 'websocket'));
        await run(hb, 'W6-HB sse', (s) => heartbeats(s, dir, opts.clients, opts.seconds, 'W6-HB sse', 'sse'));
      } else {
        log(`${name} W6: skipped, the peers have no HTTP transport`);
      }
    }
    if (opts.workloads.includes('W5')) {
      if (isStarling(name)) await run(name, 'W5', (s) => w5(s, dir, opts.clients, w5DropOf(opts), opts.w5Mode, opts.seconds));
      else log(`${name} W5: skipped, the peers have no recovery protocol`);
    }
  }
  if (opts.workloads.includes('W1max')) {
    for (const name of opts.w1maxServers.filter((s) => opts.servers.includes(s))) {
      for (const rate of opts.rates) {
        let held = false;
        await run(name, `W1-max ${rate}`, async (s) => {
          const row = await w1(s, dir, opts.clients, rate, opts.seconds, 'W1-max');
          held = (row.delivered ?? 0) >= W1MAX_DELIVERED * rate && (row.p99 ?? Infinity) <= W1MAX_P99_US;
          row.note = held ? 'held' : 'not held';
          return row;
        });
        if (!held) break;
      }
    }
  }

  fs.mkdirSync(opts.out, { recursive: true });
  const base = path.join(opts.out, started.toISOString().slice(0, 16).replace(/[:T]/g, '-'));
  fs.writeFileSync(base + '.md', renderResults(opts, rows, command, started, errors));
  fs.writeFileSync(base + '.json', JSON.stringify({ command, started: started.toISOString(), machine: describeMachine(), rows, errors }, null, 2) + '\n');
  log(`wrote ${base}.md (raw runs in ${dir})`);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
