// benchsub: opens Clients subscriber connections (over worker processes beyond ConnectionsPerProcess),
// records the latency of every message, prints the seeds' statistics every ReportInterval seconds, and
// writes a JSON summary and a CSV timeline at the end (bench/report.ts renders them).
//
// With ReconnectAfter (workload W5, the reconnect storm): that many seconds into the window it drops
// ReconnectClients of the clients at once and reconnects them from their last positions, waits until they
// are back in sync, and reports the time from the drop to each one's SYNC, the messages recovered, lost and
// duplicated, RESYNCs, and the server's CPU over the storm.
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commandLine, describeMachine, formatTimelineCsv, type RecoverySummary, type RunSummary, type TimelineRow, writeReport } from './report';
import { Histogram, LATENCY_BUCKETS, summarize, Welford } from './stats';
import {
  BENCHSUB_KEYS,
  Client,
  clientOptions,
  cpuSeconds,
  emptySnapshot,
  interruption,
  loadTool,
  mergeSnapshot,
  netBytes,
  type ReconnectSelection,
  sleep,
  type Snapshot,
  snapshotFromJSON,
  type SnapshotJSON,
  type LatencyRecord,
} from './tools';

/** How often the end of the connecting phase is looked for: its time is reported to a twentieth of a second. */
const CONNECT_POLL_MS = 50;

interface Source {
  latest(): Snapshot;
  /** The counters alone, as fresh as latest() (cheaper: for polling). */
  counters(): Record<string, number>;
  reconnect(selection: ReconnectSelection): void;
  stop(): void;
}

function inProcess(options: ReturnType<typeof clientOptions>): Source {
  const client = new Client(options);
  client.start();
  return { latest: () => client.snapshot(), counters: () => client.counters(), reconnect: (s) => client.reconnect(s), stop: () => client.stop() };
}

function inWorker(options: ReturnType<typeof clientOptions>): Source {
  const child: ChildProcess = fork(path.join(__dirname, 'worker.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let last = emptySnapshot();
  child.on('message', (m: SnapshotJSON) => {
    last = snapshotFromJSON(m);
  });
  child.send(options);
  return { latest: () => last, counters: () => last.counters, reconnect: (s) => child.send({ reconnect: s }), stop: () => child.connected && child.disconnect() };
}

// How often the storm polls the counters while it waits for the clients to be back in sync (the time to SYNC
// itself is measured by the native engine per connection).
const STORM_POLL_MS = 20;

const ms = (us: number | null) => (us === null ? '-' : (us / 1000).toFixed(3));
const clock = (s: number) => new Date(s * 1000).toISOString().slice(11, 19);

export async function benchsub(argv: string[], env: NodeJS.ProcessEnv, out = (l: string) => console.log(l)): Promise<RunSummary> {
  const cfg = loadTool(BENCHSUB_KEYS, argv, env);
  const clients = cfg.Clients as number;
  const subjects = cfg.Subjects as string[];
  if (cfg.OneToOne && subjects.length < clients)
    throw new Error(`OneToOne needs at least as many subjects as clients (${subjects.length} subjects, ${clients} clients)`);
  const perProcess = cfg.ConnectionsPerProcess as number;
  const processes = Math.ceil(clients / perProcess);
  const sources: Source[] = [];
  for (let p = 0; p < processes; p++) {
    const first = p * perProcess;
    const options = clientOptions(cfg, false, Math.min(perProcess, clients - first), first);
    sources.push(processes === 1 ? inProcess(options) : inWorker(options));
  }
  out(`benchsub: ${clients} clients over ${processes} process${processes > 1 ? 'es' : ''} x ${cfg.Threads} thread(s) -> ${(cfg.ServerAddresses as { host: string; port: number }[]).map((a) => `${a.host}:${a.port}`).join(', ')} (${cfg.Dialect}${cfg.Transport === 'sse' ? ', server-sent events' : ''})`);

  const merged = (): Snapshot => {
    const all = emptySnapshot();
    for (const s of sources) mergeSnapshot(all, s.latest());
    return all;
  };
  const run = interruption();

  // Connecting: progress once a second until every client is connected (or nothing moves for 30 s); the end is
  // looked for every CONNECT_POLL_MS, so that the connect time (W7 compares it with and without tokens) is
  // not rounded up to whole seconds.
  const t0 = Date.now();
  let lastConnected = 0;
  let stalled = 0;
  const done = () => {
    const c = merged().counters;
    return c.connected + c.connect_failures >= clients;
  };
  while (!run.interrupted) {
    for (let i = 0; i < 1000 / CONNECT_POLL_MS && !done(); i++) await sleep(CONNECT_POLL_MS);
    const c = merged().counters;
    const rate = c.connected - lastConnected;
    out(`connecting: ${c.connected}/${clients} open, ${c.connecting} in progress, ${c.connect_failures} failed (${rate}/s)`);
    if (c.connected + c.connect_failures >= clients) break;
    stalled = c.connected === lastConnected ? stalled + 1 : 0;
    if (stalled >= 30) {
      out('connecting: no progress for 30 s; measuring with the connections that are open');
      break;
    }
    lastConnected = c.connected;
  }
  const held = merged().counters;
  const direct = cfg.IoBackend === 'io_uring' ? ` (${held.direct} held as io_uring direct descriptors${held.direct_failures ? `, ${held.direct_failures} could not be moved` : ''})` : '';
  out(`connected: ${held.connected}/${clients} in ${((Date.now() - t0) / 1000).toFixed(1)} s${direct}`);
  // Each connection's own connect time: socket to the 101, or with a TokenFile to its AUTH answer.
  const connected = merged().connect;
  const connectTime = summarize(connected.histogram, connected.welford);
  const ms = (us: number | null) => (us === null ? '–' : (us / 1000).toFixed(2));
  out(`connect time ms: p50 ${ms(connectTime.p50)} p99 ${ms(connectTime.p99)} max ${ms(connectTime.max)}`);

  const warmup = (cfg.Warmup as number) * 1000;
  if (warmup > 0 && !run.interrupted) {
    out(`warming up for ${warmup / 1000} s`);
    await sleep(warmup);
  }

  // Measuring: the window starts now; statistics are over every message received in it.
  const serverPid = cfg.ServerPid as number;
  const cpuStart = serverPid ? cpuSeconds(serverPid) : NaN;
  const base = merged();
  const started = new Date();
  const startNet = netBytes();
  let prev = base;
  let prevNet = startNet;
  let prevAt = Date.now();
  const rows: TimelineRow[] = [];
  const duration = (cfg.Duration as number) * 1000;
  const interval = (cfg.ReportInterval as number) * 1000;
  const storm =
    (cfg.ReconnectAfter as number) > 0
      ? reconnectStorm(cfg, sources, merged, out, { started: started.getTime(), cpu: cpuStart, messages: base.counters.messages_received, serverPid }, () => run.interrupted)
      : null;
  let window = { h: new Histogram(), w: new Welford(), messages: 0, bytes: 0 };
  while (!run.interrupted) {
    const wait = duration > 0 ? Math.min(interval, started.getTime() + duration - Date.now()) : interval;
    if (wait <= 0) break;
    await sleep(wait);
    const now = Date.now();
    const cur = merged();
    const net = netBytes();
    const secs = (now - prevAt) / 1000;
    const step = difference(cur, prev);
    window = difference(cur, base);
    const all = summarize(window.h, window.w);
    const part = summarize(step.h, step.w);
    const rx = ((net.rx - prevNet.rx) * 8) / secs / 1e6;
    const tx = ((net.tx - prevNet.tx) * 8) / secs / 1e6;
    const t = (now - started.getTime()) / 1000;
    rows.push({ t, connections: cur.counters.connected, messages: step.messages, rate: step.messages / secs, p50: part.p50, p90: part.p90, p99: part.p99, p999: part.p999, max: part.max, mean: part.mean, rxMbps: rx, txMbps: tx });
    const cpu = serverPid ? ` | server CPU ${(((cpuSeconds(serverPid) - cpuStart) * 1e6) / Math.max(1, window.messages)).toFixed(2)} µs/msg` : '';
    out(`[${clock(t)}] connections ${cur.counters.connected}/${clients} | messages ${window.messages} (${(step.messages / secs).toFixed(1)}/s) | disconnects ${cur.counters.disconnects}${cpu}`);
    out(`  latency ms: min ${ms(all.min)} max ${ms(all.max)} mean ${ms(all.mean)} sd ${ms(all.stddev)} | mean 90% CI [${ms(all.ci90?.[0] ?? null)}, ${ms(all.ci90?.[1] ?? null)}] 95% CI [${ms(all.ci95?.[0] ?? null)}, ${ms(all.ci95?.[1] ?? null)}]`);
    out(`  percentiles ms (all messages): p50 ${ms(all.p50)} p90 ${ms(all.p90)} p99 ${ms(all.p99)} p99.9 ${ms(all.p999)} | bandwidth rx ${rx.toFixed(1)} Mbps tx ${tx.toFixed(1)} Mbps`);
    prev = cur;
    prevNet = net;
    prevAt = now;
  }
  // A storm still under way when the window ends is waited for (it is bounded by ReconnectTimeout).
  const recovery = storm ? await storm : undefined;
  const ended = new Date();
  const serverCpu = serverPid ? cpuSeconds(serverPid) - cpuStart : NaN;
  const final = merged();
  for (const s of sources) s.stop();
  run.dispose();
  if (recovery) {
    // Sequence checks over the whole run (connecting and warm-up included), read after the window, so that
    // a gap between a SYNC and the first live message after it is seen once that message arrives.
    recovery.lost = final.counters.lost;
    recovery.duplicated = final.counters.duplicated;
    recovery.resyncs = final.counters.resyncs;
    recovery.epochChanges = final.counters.epoch_changes;
    recovery.errors = final.counters.errors;
    out(
      `reconnect storm, whole run: lost ${recovery.lost} | duplicated ${recovery.duplicated} | RESYNC ${recovery.resyncs} | ` +
        `epoch changes ${recovery.epochChanges} | ERR ${recovery.errors}`,
    );
  }

  const seconds = (ended.getTime() - started.getTime()) / 1000;
  const output = cfg.Output as string;
  fs.mkdirSync(path.dirname(output), { recursive: true });
  const summary: RunSummary = {
    tool: 'benchsub',
    started: started.toISOString(),
    ended: ended.toISOString(),
    command: commandLine(['starling', 'benchsub', ...argv]),
    machine: describeMachine(),
    config: Object.fromEntries(
      Object.entries(cfg).map(([k, v]) => [k, Array.isArray(v) ? summarizeList(v) : typeof v === 'object' && v !== null ? JSON.stringify(v) : (v as string | number | boolean)]),
    ),
    totals: {
      messages: window.messages,
      bytes: window.bytes,
      connections: final.counters.connected,
      seconds,
      ratePerSecond: seconds > 0 ? window.messages / seconds : 0,
      disconnects: final.counters.disconnects - base.counters.disconnects,
      lost: final.counters.lost,
      duplicated: final.counters.duplicated,
      syncs: final.counters.syncs,
      resyncs: final.counters.resyncs,
      recovered: final.counters.recovered,
      ...(serverPid ? { serverCpuSeconds: serverCpu, serverCpuMicrosPerMessage: window.messages > 0 ? (serverCpu * 1e6) / window.messages : null } : {}),
    },
    latency: summarize(window.h, window.w),
    connectTime,
    ...(recovery ? { recovery } : {}),
    timelinePath: path.basename(output) + '.csv',
  };
  fs.writeFileSync(output + '.csv', formatTimelineCsv(rows));
  fs.writeFileSync(output + '.json', JSON.stringify(summary, null, 2) + '\n');
  const report = writeReport(output + '.json');
  out(`wrote ${output}.json, ${output}.csv, ${report.md}, ${report.svg}`);
  return summary;
}

function summarizeList(v: unknown[]): string {
  const items = v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x)));
  return items.length <= 3 ? items.join(', ') : `${items[0]} … ${items[items.length - 1]} (${items.length})`;
}

/** What happened between two cumulative snapshots: the histogram and Welford of those messages only. */
function difference(cur: Snapshot, prev: Snapshot): { h: Histogram; w: Welford; messages: number; bytes: number } {
  const h = new Histogram();
  const counts = new Float64Array(LATENCY_BUCKETS);
  for (let b = 0; b < LATENCY_BUCKETS; b++) counts[b] = cur.histogram.counts[b] - prev.histogram.counts[b];
  h.addCounts(counts);
  return {
    h,
    w: welfordMinus(cur.welford, prev.welford, h),
    messages: cur.counters.messages_received - prev.counters.messages_received,
    bytes: cur.counters.bytes_received - prev.counters.bytes_received,
  };
}

/**
 * The accumulator of the values in `total` but not in `part` (Chan's combination, inverted). Min and max of
 * the difference are not recoverable from the parts; they come from the difference's histogram.
 */
function welfordMinus(total: Welford, part: Welford, h: Histogram): Welford {
  const t = total.toJSON();
  const p = part.toJSON();
  const n = t.n - p.n;
  if (n <= 0) return new Welford();
  const mean = (t.n * t.mean - p.n * p.mean) / n;
  const delta = mean - p.mean;
  const m2 = Math.max(0, t.m2 - p.m2 - (delta * delta * p.n * n) / t.n);
  return p.n === 0 ? total : Welford.fromParts(n, mean, m2, h.min, h.max);
}

/**
 * The reconnect storm (W5): at ReconnectAfter seconds into the window, once every subscription has a position
 * (or ReconnectTimeout has passed), drops every (Clients / ReconnectClients)-th client at once and reconnects it
 * from its last positions; then polls until all of them are back in sync (SYNC or RESYNC on every subject), or
 * ReconnectTimeout. The server's CPU over the storm is its CPU from the drop until all were seen back in sync;
 * "excess" subtracts what the live messages delivered meanwhile cost, at the CPU per live message measured from
 * the window's start to the drop.
 * lost / duplicated / resyncs are filled in by the caller at the end of the run.
 */
async function reconnectStorm(
  cfg: Record<string, unknown>,
  sources: Source[],
  merged: () => Snapshot,
  out: (l: string) => void,
  window: { started: number; cpu: number; messages: number; serverPid: number },
  interrupted: () => boolean,
): Promise<RecoverySummary> {
  const clients = cfg.Clients as number;
  const wanted = Math.min(cfg.ReconnectClients as number, clients);
  const every = Math.max(1, Math.floor(clients / wanted));
  const selection: ReconnectSelection = { from: 0, to: Math.min(clients, every * wanted), every, closeFrame: cfg.ReconnectMode === 'close' };
  const selected = Math.ceil(selection.to / every);
  const timeoutMs = (cfg.ReconnectTimeout as number) * 1000;
  const at = window.started + (cfg.ReconnectAfter as number) * 1000;
  while (Date.now() < at && !interrupted()) await sleep(Math.min(100, at - Date.now()));

  // Every subscription should have a position to recover from: wait for the last ones' first message.
  const waitFrom = Date.now();
  let unpositioned = merged().counters.unpositioned;
  while (unpositioned > 0 && Date.now() - waitFrom < timeoutMs && !interrupted()) {
    await sleep(100);
    unpositioned = merged().counters.unpositioned;
  }
  if (unpositioned > 0) out(`reconnect storm: ${unpositioned} subscriptions still without a position after ${timeoutMs / 1000} s; they resubscribe live`);

  const before = merged();
  const t0 = Date.now();
  const cpu0 = window.serverPid ? cpuSeconds(window.serverPid) : NaN;
  for (const s of sources) s.reconnect(selection);
  out(`reconnect storm: dropping ${selected} of ${clients} clients (one in every ${every} from client 0; ${selection.closeFrame ? (cfg.Transport === 'sse' ? 'closed (an event stream has no close frame)' : 'close frame') : 'TCP reset'}) and reconnecting them from their positions`);

  const delta = (cur: Snapshot, k: string) => cur.counters[k] - before.counters[k];
  const countersNow = () => {
    const sum: Record<string, number> = {};
    for (const s of sources) for (const [k, v] of Object.entries(s.counters())) sum[k] = (sum[k] ?? 0) + v;
    return sum;
  };
  let timedOut = false;
  for (;;) {
    await sleep(STORM_POLL_MS);
    const c = countersNow();
    const back = c.reconnects_synced - before.counters.reconnects_synced + c.reconnects_unpositioned - before.counters.reconnects_unpositioned;
    if (back + c.connect_failures - before.counters.connect_failures >= selected) break;
    if (Date.now() - t0 >= timeoutMs || interrupted()) {
      timedOut = true;
      break;
    }
  }
  const t1 = Date.now();
  const cpu1 = window.serverPid ? cpuSeconds(window.serverPid) : NaN;
  const cur = merged();
  const seconds = (t1 - t0) / 1000;
  const since = (now: LatencyRecord, then: LatencyRecord) => {
    const h = new Histogram();
    const counts = new Float64Array(LATENCY_BUCKETS);
    for (let b = 0; b < LATENCY_BUCKETS; b++) counts[b] = now.histogram.counts[b] - then.histogram.counts[b];
    h.addCounts(counts);
    return summarize(h, welfordMinus(now.welford, then.welford, h));
  };
  const syncTime = since(cur.sync, before.sync);
  const resubscribeTime = since(cur.resubscribe, before.resubscribe);
  const recovered = delta(cur, 'recovered');
  const dropped = delta(cur, 'reconnects');
  const cpuSecondsStorm = cpu1 - cpu0;
  // The live load's share of the storm's CPU: its CPU per live message from the window's start to the drop,
  // times the live messages delivered during the storm (fewer than before it: the dropped clients get none).
  const liveBefore = before.counters.messages_received - window.messages;
  const cpuPerLive = liveBefore > 0 ? (cpu0 - window.cpu) / liveBefore : 0;
  const liveDuring = delta(cur, 'messages_received');
  const liveCpu = cpuPerLive * liveDuring;
  const excess = cpuSecondsStorm - liveCpu;
  const r: RecoverySummary = {
    mode: selection.closeFrame ? 'close' : 'reset',
    selected,
    dropped,
    synced: delta(cur, 'reconnects_synced'),
    unpositioned: delta(cur, 'reconnects_unpositioned'),
    failed: delta(cur, 'connect_failures'),
    timedOut,
    seconds,
    syncTime,
    resubscribeTime,
    recovered,
    syncs: delta(cur, 'syncs'),
    stormResyncs: delta(cur, 'resyncs'),
    stormLost: delta(cur, 'lost'),
    stormDuplicated: delta(cur, 'duplicated'),
    lost: 0,
    duplicated: 0,
    resyncs: 0,
    epochChanges: 0,
    errors: 0,
    ...(window.serverPid
      ? {
          serverCpuSeconds: cpuSecondsStorm,
          serverCpuLiveSeconds: liveCpu,
          serverCpuExcessSeconds: excess,
          serverCpuMicrosPerReconnect: dropped > 0 ? (excess * 1e6) / dropped : null,
          serverCpuMicrosPerRecovered: recovered > 0 ? (excess * 1e6) / recovered : null,
        }
      : {}),
  };
  const msOf = (us: number | null) => (us === null ? '-' : (us / 1000).toFixed(1));
  out(
    `reconnect storm: ${r.synced + r.unpositioned}/${selected} back in ${seconds.toFixed(3)} s${timedOut ? ' (TIMED OUT)' : ''} | ` +
      `drop to SYNC ms: p50 ${msOf(syncTime.p50)} p99 ${msOf(syncTime.p99)} max ${msOf(syncTime.max)} | ` +
      `SUB to SYNC ms: p50 ${msOf(resubscribeTime.p50)} p99 ${msOf(resubscribeTime.p99)} max ${msOf(resubscribeTime.max)} | recovered ${recovered} | ` +
      `SYNC ${r.syncs} RESYNC ${r.stormResyncs} | unpositioned ${r.unpositioned} | failed ${r.failed}`,
  );
  if (window.serverPid)
    out(
      `reconnect storm: server CPU ${cpuSecondsStorm.toFixed(2)} s over the storm (its ${liveDuring} live deliveries ~${liveCpu.toFixed(2)} s at ${(cpuPerLive * 1e6).toFixed(1)} µs each; ` +
        `excess ${excess.toFixed(2)} s = ${r.serverCpuMicrosPerReconnect?.toFixed(0) ?? '-'} µs per reconnection)`,
    );
  return r;
}
