// Shared parts of benchsub and benchpub: their configuration keys (parsed by the server's own config
// loader), the native client engine's typed surface, and batched snapshots of its statistics.
import * as fs from 'node:fs';
import { ConfigError, KeySet, loadKeys, strayArgument } from '../src/config/config';
import type { ListenAddress } from '../src/config/types';
import { TOOL_TYPES, type ToolKeyDef } from './config';
import { addon } from '../src/native';
import { Histogram, type HistogramJSON, LATENCY_BUCKETS, Welford, type WelfordJSON } from './stats';

export type Dialect = 'starling' | 'plain' | 'nats';
/** How connections carry the protocol: WebSocket, or Starling's HTTP transport (benchsub sse, benchpub http). */
export type Transport = 'websocket' | 'sse' | 'http';

const COMMON: ToolKeyDef[] = [
  {
    name: 'ServerAddresses',
    type: 'listen',
    default: '127.0.0.1:8800',
    example: '127.0.0.1:8800, 127.0.0.1:8801',
    doc: 'Servers to connect to; connections are spread over them round-robin.',
  },
  { name: 'Path', type: 'path', default: '/', example: '/', doc: 'WebSocket request path.' },
  {
    name: 'TokenFile',
    type: 'string',
    default: '',
    example: '/tmp/w7-tokens.txt',
    doc:
      'Entitlement tokens, one per line (URL-safe, as JWTs are): connection i upgrades with `?token=` and line i (modulo the count), ' +
      'so every client authenticates as it connects. Empty: no token.',
  },
  {
    name: 'Dialect',
    type: 'enum',
    choices: ['starling', 'plain', 'nats'],
    default: 'starling',
    example: 'plain',
    doc: 'Protocol: starling (this server), plain (bench/peers uws and ws), nats (nats-server over WebSocket).',
  },
  {
    name: 'Subjects',
    type: 'subjects',
    default: '/p/s{1..1000}',
    example: '/p/s{1..15000}/-',
    doc: 'Subjects, with {a..b} ranges.',
  },
  {
    name: 'LocalAddresses',
    type: 'hosts',
    default: '',
    example: '127.0.0.{2..20}',
    doc: 'Source addresses for the connections, round-robin (beats the ephemeral-port limit of one address).',
  },
  {
    name: 'BufferSize',
    type: 'size',
    min: 0,
    max: 64 * 1024 * 1024,
    default: '0',
    example: '16K',
    doc: 'SO_RCVBUF and SO_SNDBUF of each connection; 0 = kernel default.',
  },
  { name: 'Threads', type: 'int', min: 1, max: 64, default: '1', example: '2', doc: 'Native client threads per process.' },
  {
    name: 'Duration',
    type: 'int',
    min: 0,
    max: 86400 * 30,
    default: '0',
    example: '60',
    doc: 'Seconds to run after all connections are open; 0 = until interrupted.',
  },
  {
    name: 'MaxConnecting',
    type: 'int',
    min: 1,
    max: 100000,
    default: '1000',
    example: '2000',
    doc: 'Connection attempts in flight per thread (bounds SYN bursts).',
  },
];

export const BENCHSUB_KEYS = new KeySet(
  [
    ...COMMON,
    { name: 'Clients', type: 'int', min: 1, max: 10_000_000, default: '1000', example: '15000', doc: 'Subscriber connections.' },
    {
      name: 'SubjectsPerClient',
      type: 'int',
      min: 1,
      max: 100000,
      default: '1',
      example: '10',
      doc: 'Subjects each client subscribes to: client i takes subjects i*n .. i*n+n-1 (wrapping).',
    },
    {
      name: 'OneToOne',
      type: 'bool',
      default: 'false',
      example: 'true',
      doc: 'Client i subscribes to subject i only (needs as many subjects as clients).',
    },
    {
      name: 'ReportInterval',
      type: 'int',
      min: 1,
      max: 3600,
      default: '5',
      example: '5',
      doc: 'Seconds between statistics lines (the seeds printed every 5 s).',
    },
    {
      name: 'ConnectionsPerProcess',
      type: 'int',
      min: 1,
      max: 10_000_000,
      default: '18000',
      example: '18000',
      doc: 'Beyond this many clients benchsub forks worker processes (each process has its own fd table). With IoBackend = io_uring one process holds far more: set it to Clients.',
    },
    {
      name: 'Transport',
      type: 'enum',
      choices: ['websocket', 'sse'],
      default: 'websocket',
      example: 'sse',
      doc:
        'websocket, or sse: each client is a server-sent event stream, GET /sse?subject=… with all its subjects (Dialect = starling; ' +
        'Path is not used), its message events timed and sequence-checked as WebSocket messages (workload W6).',
    },
    {
      name: 'IoBackend',
      type: 'enum',
      choices: ['epoll', 'io_uring'],
      default: 'epoll',
      example: 'io_uring',
      doc: 'io_uring: once open and subscribed, each connection is moved into an io_uring ring as a direct descriptor (off the fd table), so one process holds more connections than its fd limit; only those being set up (MaxConnecting per thread) use descriptors. benchsub refuses to start, with the reason, where the kernel does not allow io_uring.',
    },
    {
      name: 'Warmup',
      type: 'int',
      min: 0,
      max: 3600,
      default: '0',
      example: '5',
      doc: 'Seconds between all clients being connected and the start of the measured window.',
    },
    {
      name: 'ServerPid',
      type: 'int',
      min: 0,
      max: 4194304,
      default: '0',
      example: '12345',
      doc: 'Process id of the server (same machine): its CPU time over the window gives CPU µs per message. 0 = not measured.',
    },
    {
      name: 'ReconnectAfter',
      type: 'int',
      min: 0,
      max: 86400,
      default: '0',
      example: '5',
      doc:
        'Reconnect storm (workload W5): this many seconds into the measured window, drop ReconnectClients of the ' +
        'clients at once and reconnect them, each subscribing from its last position (SUB <subject>@<epoch>:<seq>; ' +
        'Dialect = starling). 0 = no storm.',
    },
    {
      name: 'ReconnectClients',
      type: 'int',
      min: 1,
      max: 10_000_000,
      default: '1000',
      example: '5000',
      doc: 'How many clients the storm drops, spread evenly: every (Clients / ReconnectClients)-th client from the first.',
    },
    {
      name: 'ReconnectMode',
      type: 'enum',
      choices: ['reset', 'close'],
      default: 'reset',
      example: 'close',
      doc: 'How the storm drops a client: reset (SO_LINGER 0, the server sees a TCP reset) or close (a 1001 close frame, then the socket closed without waiting for the answer; with Transport = sse the socket is closed alone).',
    },
    {
      name: 'ReconnectTimeout',
      type: 'int',
      min: 1,
      max: 3600,
      default: '10',
      example: '10',
      doc: 'Seconds the storm waits for the dropped clients to be back in sync before reporting those that are not.',
    },
    {
      name: 'Output',
      type: 'path',
      default: '/tmp/benchsub',
      example: '/tmp/w1-starling',
      doc: 'Path prefix of the JSON summary and CSV timeline written at the end.',
    },
  ],
  'BENCHSUB_',
  [],
  TOOL_TYPES,
);

export const BENCHPUB_KEYS = new KeySet(
  [
    ...COMMON,
    { name: 'Publishers', type: 'int', min: 1, max: 100000, default: '4', example: '4', doc: 'Publisher connections.' },
    {
      name: 'Frequency',
      type: 'number',
      min: 0,
      max: 10_000_000,
      default: '1000',
      example: '20000',
      doc: 'Messages per second, all publishers together, each to a random subject.',
    },
    {
      name: 'MessageSize',
      type: 'size',
      min: 16,
      max: 64 * 1024 * 1024,
      default: '512',
      example: '512',
      doc: 'Payload bytes; the first 16 are the creation timestamp (µs).',
    },
    {
      name: 'Transport',
      type: 'enum',
      choices: ['websocket', 'http'],
      default: 'websocket',
      example: 'http',
      doc:
        'websocket, or http: each message is a POST /publish?subject=… (text/plain, the same payload) on kept-alive connections, ' +
        'at most 64 requests unanswered per connection (a publish beyond that is skipped and counted as a stall); Dialect = starling.',
    },
  ],
  'BENCHPUB_',
  [],
  TOOL_TYPES,
);

/**
 * A tool's command line: `--config FILE` (or `-c FILE`, `--config=FILE`) and `-DKey=value` arguments. A key
 * given twice on the command line, and a stray argument after a -D (both what an unquoted `{a..b}` range or a
 * value with spaces turns into in the shell), are refused with the quoted form to use instead.
 */
export function parseToolArgs(argv: string[]): { file?: string; defines: string[] } {
  let file: string | undefined;
  const defines: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') {
      if (i + 1 >= argv.length) throw new ConfigError([`${a} needs a file name`]);
      file = argv[++i];
    } else if (a.startsWith('--config=')) file = a.slice('--config='.length);
    else if (a.startsWith('-D') && a.length > 2) defines.push(a);
    else throw new ConfigError([strayArgument(a, defines[defines.length - 1])]);
  }
  return { file, defines };
}

export function loadTool(keys: KeySet<ToolKeyDef>, argv: string[], env: NodeJS.ProcessEnv): Record<string, unknown> {
  const { file, defines } = parseToolArgs(argv);
  return loadKeys(keys, { file, defines, env, repeatedDefines: 'refuse' }).config;
}

export interface ClientOptions {
  servers: ListenAddress[];
  localAddresses: string[];
  path: string;
  dialect: Dialect;
  transport: Transport;
  threads: number;
  connections: number;
  firstIndex: number;
  subjects: string[];
  subjectsPerClient: number;
  publisher: boolean;
  frequency: number;
  messageSize: number;
  maxConnecting: number;
  socketBuffer: number;
  /** Per-connection entitlement tokens (connection i: tokens[i % length]); [] for none. */
  tokens: string[];
  /** Subscribers: hold open connections as io_uring direct descriptors (benchsub IoBackend = io_uring). */
  direct: boolean;
}

/**
 * Which connections Client.reconnect() drops: global indices i in [from, to) with (i − from) % every = 0 that
 * are open. closeFrame: false drops abruptly (SO_LINGER 0: the server sees a TCP reset); true writes a close
 * frame (1001) and closes without waiting for the answer.
 */
export interface ReconnectSelection {
  from: number;
  to: number;
  every: number;
  closeFrame: boolean;
}

interface NativeClient {
  start(): void;
  stop(): void;
  slots(): number;
  read(out: Float64Array): void;
  reconnect(selection: ReconnectSelection): void;
}

// Read from the addon on first use: importing this module (e.g. for `starling benchsub --help`) loads nothing.
const nativeClient = () => (addon as unknown as { NativeClient: new (o: ClientOptions) => NativeClient }).NativeClient;
let counterNames: string[] | undefined;
// Latency records per client thread (native/client/client.h kClientLatencyRecords).
const RECORDS = 4;
const counters = (): string[] => (counterNames ??= (addon as unknown as { clientCounters: string[] }).clientCounters);

/** A latency record of the engine: Welford accumulator and histogram of the same values (µs). */
export interface LatencyRecord {
  welford: Welford;
  histogram: Histogram;
}
const emptyRecord = (): LatencyRecord => ({ welford: new Welford(), histogram: new Histogram() });
const mergeRecord = (into: LatencyRecord, r: LatencyRecord) => {
  into.welford.merge(r.welford);
  into.histogram.merge(r.histogram);
};
const recordToJSON = (r: LatencyRecord) => ({ welford: r.welford.toJSON(), histogram: r.histogram.toJSON() });
const recordFromJSON = (j: { welford: WelfordJSON; histogram: HistogramJSON }): LatencyRecord => ({
  welford: Welford.fromJSON(j.welford),
  histogram: Histogram.fromJSON(j.histogram),
});

/**
 * A snapshot of one or more client engines: counters summed, latency merged. `welford`/`histogram`: latency of
 * live messages. reconnect(): `sync` is the time from a connection's drop to the SYNC/RESYNC of its last
 * subject; `resubscribe` from its recovery SUBs (sent as the 101 arrives) to that SYNC/RESYNC (µs). `connect`: each
 * new connection's connect time, from its socket to the 101 (with a TokenFile: to its AUTH answer) (µs).
 */
export interface Snapshot {
  counters: Record<string, number>;
  welford: Welford;
  histogram: Histogram;
  sync: LatencyRecord;
  resubscribe: LatencyRecord;
  connect: LatencyRecord;
}

export function emptySnapshot(): Snapshot {
  return {
    counters: Object.fromEntries(counters().map((c) => [c, 0])),
    welford: new Welford(),
    histogram: new Histogram(),
    sync: emptyRecord(),
    resubscribe: emptyRecord(),
    connect: emptyRecord(),
  };
}

export function mergeSnapshot(into: Snapshot, s: Snapshot): void {
  for (const [k, v] of Object.entries(s.counters)) into.counters[k] = (into.counters[k] ?? 0) + v;
  into.welford.merge(s.welford);
  into.histogram.merge(s.histogram);
  mergeRecord(into.sync, s.sync);
  mergeRecord(into.resubscribe, s.resubscribe);
  mergeRecord(into.connect, s.connect);
}

/** A snapshot in the form a worker process sends (JSON over IPC), and back. */
export interface SnapshotJSON {
  counters: Record<string, number>;
  welford: WelfordJSON;
  histogram: HistogramJSON;
  sync: { welford: WelfordJSON; histogram: HistogramJSON };
  resubscribe: { welford: WelfordJSON; histogram: HistogramJSON };
  connect: { welford: WelfordJSON; histogram: HistogramJSON };
}

export function snapshotToJSON(s: Snapshot): SnapshotJSON {
  return {
    counters: s.counters,
    welford: s.welford.toJSON(),
    histogram: s.histogram.toJSON(),
    sync: recordToJSON(s.sync),
    resubscribe: recordToJSON(s.resubscribe),
    connect: recordToJSON(s.connect),
  };
}

export function snapshotFromJSON(j: SnapshotJSON): Snapshot {
  return {
    counters: j.counters,
    welford: Welford.fromJSON(j.welford),
    histogram: Histogram.fromJSON(j.histogram),
    sync: recordFromJSON(j.sync),
    resubscribe: recordFromJSON(j.resubscribe),
    connect: recordFromJSON(j.connect),
  };
}

/** The native benchmark client: many connections per native thread; read() is one batched call. */
export class Client {
  private readonly native: NativeClient;
  private readonly buf: Float64Array;
  constructor(readonly options: ClientOptions) {
    this.native = new (nativeClient())(options);
    this.buf = new Float64Array(this.native.slots());
  }
  start(): void {
    this.native.start();
  }
  stop(): void {
    this.native.stop();
  }
  /** Drops the selected open connections and opens them again (asynchronous: watch the reconnects_* counters). */
  reconnect(selection: ReconnectSelection): void {
    const { from, to, every } = selection;
    for (const v of [from, to, every])
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`reconnect: ${v} is not a connection index`);
    if (every < 1) throw new RangeError('reconnect: every must be at least 1');
    this.native.reconnect({ from, to, every, closeFrame: Boolean(selection.closeFrame) });
  }
  /** The counters alone (summed over threads): cheaper than snapshot(), for polling. */
  counters(): Record<string, number> {
    this.native.read(this.buf);
    const COUNTERS = counters();
    const per = COUNTERS.length + RECORDS * (5 + LATENCY_BUCKETS);
    const out: Record<string, number> = Object.fromEntries(COUNTERS.map((c) => [c, 0]));
    for (let t = 0; t < this.options.threads; t++) COUNTERS.forEach((name, i) => (out[name] += this.buf[t * per + i]));
    return out;
  }
  snapshot(): Snapshot {
    this.native.read(this.buf);
    const snap = emptySnapshot();
    const COUNTERS = counters();
    // Per thread: the counters, then four latency records (Welford n, mean, m2, min, max; then the buckets).
    const per = COUNTERS.length + RECORDS * (5 + LATENCY_BUCKETS);
    const record = (at: number, welford: Welford, histogram: Histogram) => {
      const [n, mean, m2, min, max] = this.buf.subarray(at, at + 5);
      if (n > 0) {
        welford.merge(Welford.fromParts(n, mean, m2, min, max));
        histogram.addCounts(this.buf.subarray(at + 5, at + 5 + LATENCY_BUCKETS), { min, max });
      }
    };
    for (let t = 0; t < this.options.threads; t++) {
      const base = t * per;
      COUNTERS.forEach((name, i) => (snap.counters[name] += this.buf[base + i]));
      const w = base + COUNTERS.length;
      record(w, snap.welford, snap.histogram);
      record(w + 5 + LATENCY_BUCKETS, snap.sync.welford, snap.sync.histogram);
      record(w + 2 * (5 + LATENCY_BUCKETS), snap.resubscribe.welford, snap.resubscribe.histogram);
      record(w + 3 * (5 + LATENCY_BUCKETS), snap.connect.welford, snap.connect.histogram);
    }
    return snap;
  }
}

/** Bytes received and sent on all interfaces but loopback-less accounting: every interface in /proc/net/dev. */
export function netBytes(): { rx: number; tx: number } {
  let rx = 0;
  let tx = 0;
  try {
    for (const line of fs.readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2)) {
      const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
      if (!m) continue;
      const f = m[2].trim().split(/\s+/).map(Number);
      rx += f[0];
      tx += f[8];
    }
  } catch {
    // not Linux: bandwidth is reported as 0
  }
  return { rx, tx };
}

export function clientOptions(cfg: Record<string, unknown>, publisher: boolean, connections: number, firstIndex = 0): ClientOptions {
  const transport = (cfg.Transport as Transport | undefined) ?? 'websocket';
  if (transport !== 'websocket' && cfg.Dialect !== 'starling')
    throw new ConfigError([`Transport = ${transport} is Starling's HTTP transport: it needs Dialect = starling (not ${cfg.Dialect as string}); the peers speak WebSocket only`]);
  return {
    servers: cfg.ServerAddresses as ListenAddress[],
    localAddresses: cfg.LocalAddresses as string[],
    path: cfg.Path as string,
    dialect: cfg.Dialect as Dialect,
    transport,
    threads: cfg.Threads as number,
    connections,
    firstIndex,
    subjects: cfg.Subjects as string[],
    subjectsPerClient: publisher ? 1 : cfg.OneToOne ? 1 : (cfg.SubjectsPerClient as number),
    publisher,
    frequency: publisher ? (cfg.Frequency as number) : 0,
    messageSize: publisher ? (cfg.MessageSize as number) : 0,
    maxConnecting: cfg.MaxConnecting as number,
    socketBuffer: cfg.BufferSize as number,
    tokens: readTokens(cfg.TokenFile as string),
    direct: !publisher && cfg.IoBackend === 'io_uring',
  };
}

/** The tokens of a TokenFile (one per line; blank lines skipped); [] for none. Throws ConfigError naming the file. */
function readTokens(file: string): string[] {
  if (!file) return [];
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`TokenFile: cannot read ${file}: ${(e as Error).message}`]);
  }
  const tokens = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const bad = tokens.findIndex((t) => !/^[A-Za-z0-9._~-]+$/.test(t));
  if (bad >= 0) throw new ConfigError([`TokenFile: ${file}: line ${bad + 1} is not URL-safe (letters, digits and . _ ~ - only)`]);
  if (tokens.length === 0) throw new ConfigError([`TokenFile: ${file} holds no token`]);
  return tokens;
}

/** utime + stime of a process in seconds (/proc/<pid>/stat), or NaN if it cannot be read. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[11] and fields[12] are utime and stime (fields 14 and 15 of proc(5)), in clock ticks.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** sysconf(_SC_CLK_TCK): 100 on every Linux architecture Node supports. */
const CLOCK_TICKS = 100;

/** Resident set size of a process in bytes (/proc/<pid>/status VmRSS), or NaN. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A tool's run loop ends on SIGINT/SIGTERM: `interrupted` turns true; dispose() removes the handlers. */
export function interruption(): { readonly interrupted: boolean; dispose(): void } {
  const state = { interrupted: false, dispose: () => {} };
  const on = () => (state.interrupted = true);
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  state.dispose = () => {
    process.removeListener('SIGINT', on);
    process.removeListener('SIGTERM', on);
  };
  return state;
}
