// The monitoring indicators: what each one is called (JSON key, stats-log key, Prometheus metric), what it
// means, and how one snapshot of all of them is computed from the server's once-a-second counter sample and
// from the process. The native counters come from the addon ({name, kind, doc}); this file adds only what is
// derived from them (per-second rates, the protocol-error sum) and what the control plane and the process
// know. One table (IndicatorSet.defs) drives /stats, /metrics, the stats log, the dashboard and the
// indicator reference in docs/monitoring.md.
import * as os from 'node:os';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { addon, type ClusterStatus, type CounterInfo } from '../native';
import { rateName, type Counters, type ServerStats } from '../stats';

/** Indicator values by name: a native counter's name, `<counter>_per_second`, or a derived or control-plane name. */
export type Indicators = Record<string, number>;

export interface ProcessIndicators {
  cpu_percent: number;
  cpu_seconds: number;
  cpus: number;
  rss_bytes: number;
  heap_used_bytes: number;
  heap_total_bytes: number;
  event_loop_delay_seconds: number;
  event_loop_delay_p99_seconds: number;
  event_loop_delay_max_seconds: number;
}

/** What /stats serves and PUSH stats publishes: one sample of every indicator. */
export interface Snapshot {
  /** Sample number, 0 at start, +1 a second: two answers with the same seq carry the same values. */
  seq: number;
  /** When the sample was taken (ISO 8601). */
  time: string;
  /** Seconds the rates are measured over (the time since the previous sample; 0 for seq 0). */
  intervalSeconds: number;
  /** Server-wide: every workgroup indicator summed, and those that exist only server-wide. */
  server: Indicators;
  /** Per workgroup: `workgroup` (its number) and the workgroup indicators. */
  workgroups: Indicators[];
  process: ProcessIndicators;
  /** The cluster link (ClusterEngine = redis) when the sample was taken: state `off` and '' elsewhere without a
   * cluster. Its numbers are the `cluster_*` indicators of `server`. */
  cluster: SnapshotCluster;
}

/** The `cluster` of a Snapshot: this node's name and the link's status. */
export interface SnapshotCluster extends ClusterStatus {
  /** ClusterNodeName in effect ('' with ClusterEngine = none). */
  node: string;
}

export type Scope = 'workgroup' | 'server' | 'process';

/** One indicator: a row of the table that /metrics, the stats log, the dashboard and the docs are built from. */
export interface IndicatorDef {
  /** JSON key (in `server`, `workgroups[]` or `process`) and stats-log key. */
  name: string;
  /** `workgroup`: per workgroup and summed in `server`; `server`: server-wide only; `process`: the Node process. */
  scope: Scope;
  /** `counter`: a total since start; `gauge`: a level or a rate. */
  kind: 'counter' | 'gauge';
  /** Prometheus metric: metricName(name, scope, kind). Workgroup-scoped metrics carry a `workgroup` label. */
  metric: string;
  /** Docs, dashboard and Prometheus HELP: what it counts, in which unit. */
  help: string;
  /**
   * `native`: a counter of the addon; `rate`: the per-second rate of the indicator named in `of`; `derived`: a
   * sum of native counters; `control`: kept by the TypeScript control plane; `process`: the Node.js process.
   */
  source: 'native' | 'rate' | 'derived' | 'control' | 'process';
  /** For a rate: the counter it is the rate of. */
  of?: string;
}

/**
 * The one rule from an indicator name to its Prometheus metric: `starling_`, then `process_` for the process,
 * the name, and `_total` for counters (Prometheus' convention).
 */
export function metricName(name: string, scope: Scope, kind: 'counter' | 'gauge'): string {
  return `starling_${scope === 'process' ? 'process_' : ''}${name}${kind === 'counter' && !name.endsWith('_total') ? '_total' : ''}`;
}

/**
 * Counters that are protocol errors, by name: every `err_<code>` (an ERR reply) and every `close_<status>` whose
 * WebSocket status means the client broke the protocol (RFC 6455: 1002 protocol error, 1003 unacceptable data,
 * 1007 invalid payload, 1009 too big). 1008 (policy: slow consumers, memory) is not a protocol error.
 */
export const isProtocolError = (counter: string): boolean => /^err_[a-z0-9_]+$/.test(counter) || /^close_100[2379]$/.test(counter);

/** The derived sum of the protocol-error counters. */
export const PROTOCOL_ERRORS = 'protocol_errors';

/** Rates are measured over about a second; two decimals are all the precision they have. */
const round2 = (x: number) => Math.round(x * 100) / 100;

/** Indicators the control plane and the process add to the native counters (their names are TypeScript's own). */
const CONTROL: readonly Omit<IndicatorDef, 'metric' | 'source'>[] = [
  { name: 'publish_overflows', scope: 'server', kind: 'counter',
    help: 'Application publishes (server.publish) dropped because the subject\'s home workgroup was overloaded.' },
  { name: 'authorize_errors', scope: 'server', kind: 'counter',
    help: 'Entitlement = Custom: authorize hook calls that threw, rejected or answered a malformed grant (the token was refused).' },
  { name: 'authorize_timeouts', scope: 'server', kind: 'counter',
    help: 'Entitlement = Custom: authorize hook calls that did not answer in time (the token was refused).' },
  { name: 'workgroups', scope: 'server', kind: 'gauge', help: 'Workgroups (native threads) the server runs.' },
  { name: 'uptime_seconds', scope: 'server', kind: 'gauge', help: 'Seconds since the server started.' },
];
const PROCESS: readonly (Omit<IndicatorDef, 'metric' | 'source' | 'name'> & { name: keyof ProcessIndicators })[] = [
  { name: 'cpu_percent', scope: 'process', kind: 'gauge',
    help: 'CPU used by the whole process (workgroup threads included) over the last second, in percent of one CPU (200 = two CPUs busy).' },
  { name: 'cpu_seconds', scope: 'process', kind: 'counter', help: 'CPU seconds (user + system) the process used since it started.' },
  { name: 'cpus', scope: 'process', kind: 'gauge', help: 'CPUs available to the process (the ceiling of cpu_percent is 100 × cpus).' },
  { name: 'rss_bytes', scope: 'process', kind: 'gauge',
    help: 'Resident set size of the process: native connection state, kernel-facing buffers and the JS heap.' },
  { name: 'heap_used_bytes', scope: 'process', kind: 'gauge', help: 'JavaScript heap in use.' },
  { name: 'heap_total_bytes', scope: 'process', kind: 'gauge', help: 'JavaScript heap reserved.' },
  { name: 'event_loop_delay_seconds', scope: 'process', kind: 'gauge',
    help: 'Mean delay of the Node.js event loop (the control plane) over the last second, beyond its 10 ms sampling period.' },
  { name: 'event_loop_delay_p99_seconds', scope: 'process', kind: 'gauge', help: '99th percentile of the event-loop delay over the last second.' },
  { name: 'event_loop_delay_max_seconds', scope: 'process', kind: 'gauge', help: 'Longest event-loop delay over the last second.' },
];

/** A native counter's doc as a sentence. */
const sentence = (doc: string) => (doc.length > 0 ? doc[0].toUpperCase() + doc.slice(1) + (/[.!?]$/.test(doc) ? '' : '.') : '');

/**
 * Every indicator of a server whose addon has these counters, and how a snapshot of them is computed from
 * the server's sample. Nothing here names a native counter: they are taken as the addon describes them.
 */
export class IndicatorSet {
  readonly defs: readonly IndicatorDef[];
  /** The native workgroup counters that make up `protocol_errors`. */
  readonly protocolErrors: readonly string[];

  constructor(
    readonly workgroupCounters: readonly CounterInfo[] = addon.workgroupCounters,
    readonly serverCounters: readonly CounterInfo[] = addon.serverCounters,
  ) {
    const defs: IndicatorDef[] = [];
    const add = (d: Omit<IndicatorDef, 'metric'>) => defs.push({ ...d, metric: metricName(d.name, d.scope, d.kind) });
    const native = (c: CounterInfo, scope: Scope) => {
      add({ name: c.name, scope, kind: c.kind, help: sentence(c.doc), source: 'native' });
      if (c.kind === 'counter')
        add({ name: rateName(c.name), scope, kind: 'gauge', help: `${sentence(c.doc)} Per second, over the last second.`, source: 'rate', of: c.name });
    };
    for (const c of workgroupCounters) native(c, 'workgroup');
    this.protocolErrors = workgroupCounters.filter((c) => c.kind === 'counter' && isProtocolError(c.name)).map((c) => c.name);
    if (this.protocolErrors.length > 0) {
      const help = `Protocol errors: the sum of ${this.protocolErrors.join(', ')}.`;
      add({ name: PROTOCOL_ERRORS, scope: 'workgroup', kind: 'counter', help, source: 'derived' });
      add({ name: rateName(PROTOCOL_ERRORS), scope: 'workgroup', kind: 'gauge', help: `${help} Per second, over the last second.`, source: 'rate', of: PROTOCOL_ERRORS });
    }
    for (const c of serverCounters) native(c, 'server');
    for (const d of CONTROL) add({ ...d, source: 'control' });
    for (const d of PROCESS) add({ ...d, source: 'process' });
    // One name, one indicator: a native counter may not take a name the control plane uses, or a rate's name.
    const seen = new Set<string>();
    for (const d of defs) {
      const key = `${d.scope === 'process' ? 'process' : 'server'}.${d.name}`;
      if (seen.has(key) || d.name === 'workgroup') throw new Error(`indicators: ${d.name} is defined twice (a native counter clashes with a derived name)`);
      seen.add(key);
    }
    this.defs = defs;
  }

  /** The server and workgroup parts of a snapshot, from one ServerStats (the server's once-a-second sample). */
  indicators(stats: ServerStats): Pick<Snapshot, 'server' | 'workgroups'> {
    const workgroups = stats.workgroups.map((w) => ({ workgroup: w.workgroup, ...this.workgroupPart(w.counters, w.rates) }));
    const server: Indicators = this.workgroupPart(stats.total, stats.rates);
    for (const c of this.serverCounters) {
      server[c.name] = stats.total[c.name];
      if (c.kind === 'counter') server[rateName(c.name)] = round2(stats.rates[rateName(c.name)]);
    }
    server.publish_overflows = stats.publishOverflows;
    server.authorize_errors = stats.authorizeErrors;
    server.authorize_timeouts = stats.authorizeTimeouts;
    server.workgroups = stats.workgroups.length;
    server.uptime_seconds = stats.uptimeSeconds;
    return { server, workgroups };
  }

  private workgroupPart(counters: Counters, rates: Counters): Indicators {
    const out: Indicators = {};
    for (const c of this.workgroupCounters) {
      out[c.name] = counters[c.name];
      if (c.kind === 'counter') out[rateName(c.name)] = round2(rates[rateName(c.name)]);
    }
    if (this.protocolErrors.length > 0) {
      out[PROTOCOL_ERRORS] = this.protocolErrors.reduce((sum, name) => sum + counters[name], 0);
      out[rateName(PROTOCOL_ERRORS)] = round2(this.protocolErrors.reduce((sum, name) => sum + rates[rateName(name)], 0));
    }
    return out;
  }
}

/** The indicators of this build of the addon. */
export const DEFAULT_INDICATORS = new IndicatorSet();
/** Its table. */
export const INDICATORS: readonly IndicatorDef[] = DEFAULT_INDICATORS.defs;

/** Where a stats-log interval started: the server indicators then, and the process figures accumulated since. */
export interface IntervalStart {
  at: number;
  server: Indicators;
  cpuSeconds: number;
  samples: number;
  loopMeans: number;
  loopMax: number;
}

/**
 * The stats log line's fields, in table order: server-wide gauges as they are now; counters that have a rate
 * as that rate (`<name>_per_second`) averaged over the whole interval, not just its last second; other
 * counters as totals; then the process' CPU (interval average), memory and event-loop delay (interval mean and
 * maximum).
 */
export function statsLineFields(set: IndicatorSet, start: IntervalStart, now: number, latest: Snapshot): [string, number][] {
  const seconds = (now - start.at) / 1000;
  const s = latest.server;
  const rated = new Set(set.defs.filter((d) => d.source === 'rate').map((d) => d.of));
  const fields: [string, number][] = [];
  for (const d of set.defs) {
    if (d.scope === 'process' || d.source === 'rate') continue;
    if (d.kind === 'counter' && rated.has(d.name)) fields.push([rateName(d.name), round2((s[d.name] - start.server[d.name]) / seconds)]);
    else fields.push([d.name, s[d.name]]);
  }
  const p = latest.process;
  fields.push(
    ['cpu_percent', Math.round(((p.cpu_seconds - start.cpuSeconds) / seconds) * 1000) / 10],
    ['rss_bytes', p.rss_bytes],
    ['heap_used_bytes', p.heap_used_bytes],
    ['event_loop_delay_seconds', roundMicros(start.loopMeans / Math.max(1, start.samples))],
    ['event_loop_delay_max_seconds', start.loopMax],
  );
  return fields;
}

/** Marks the generated indicator reference in docs/monitoring.md. */
export const DOCS_BEGIN =
  '<!-- Indicators: generated from the addon\'s counters and src/monitor/indicators.ts by ' +
  '`node dist/src/monitor/gendocs.js docs/monitoring.md`; do not edit by hand. -->';
export const DOCS_END = '<!-- End of the generated indicators. -->';

/** The indicator reference of docs/monitoring.md, markers included: one table per scope. */
export function renderIndicatorDocs(set: IndicatorSet = DEFAULT_INDICATORS): string {
  const cell = (text: string) => text.replace(/\|/g, '\\|');
  const sections: [Scope, string, string][] = [
    ['workgroup', 'Per workgroup and server-wide', 'JSON `workgroups[i].<name>` and `server.<name>` (their sum); Prometheus label `workgroup`.'],
    ['server', 'Server-wide', 'JSON `server.<name>`.'],
    ['process', 'Process', 'JSON `process.<name>`: the Node.js process, native threads included.'],
  ];
  const out = [DOCS_BEGIN];
  for (const [scope, title, where] of sections) {
    out.push('', `#### ${title}`, '', where, '', '| Indicator | Kind | Prometheus metric | Source | Meaning |', '|---|---|---|---|---|');
    for (const d of set.defs.filter((d) => d.scope === scope))
      out.push(`| \`${d.name}\` | ${d.kind} | \`${d.metric}\` | ${d.source}${d.of ? ` of \`${d.of}\`` : ''} | ${cell(d.help)} |`);
  }
  out.push('', DOCS_END);
  return out.join('\n');
}

/** Seconds to 10 µs. */
const roundMicros = (seconds: number) => Math.round(seconds * 1e5) / 1e5;

/**
 * Samples the process: CPU since the previous sample, memory now, and the event-loop delay histogram
 * (which it resets). The histogram is a libuv timer of its own; it exists only while monitoring is on.
 */
export class ProcessSampler {
  private readonly loop: IntervalHistogram = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  private readonly cpus = os.availableParallelism();
  private lastCpu = process.cpuUsage();
  private lastAt = process.hrtime.bigint();

  constructor() {
    this.loop.enable();
  }

  sample(): ProcessIndicators {
    const now = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    const usedMicros = cpu.user - this.lastCpu.user + (cpu.system - this.lastCpu.system);
    const elapsedMicros = Number(now - this.lastAt) / 1000;
    this.lastCpu = cpu;
    this.lastAt = now;
    const memory = process.memoryUsage();
    // The histogram records each period of its timer, the resolution included: the delay is what is beyond it.
    // It is empty when the loop was blocked for the whole interval: report 0 rather than NaN. Seconds, to 10 µs.
    const delay = (ns: number) =>
      this.loop.count > 0 && Number.isFinite(ns) ? Math.max(0, roundMicros((ns - LOOP_RESOLUTION_MS * 1e6) / 1e9)) : 0;
    const result: ProcessIndicators = {
      cpu_percent: elapsedMicros > 0 ? Math.round((usedMicros / elapsedMicros) * 1000) / 10 : 0,
      cpu_seconds: Math.round((cpu.user + cpu.system) / 1e3) / 1e3,
      cpus: this.cpus,
      rss_bytes: memory.rss,
      heap_used_bytes: memory.heapUsed,
      heap_total_bytes: memory.heapTotal,
      event_loop_delay_seconds: delay(this.loop.mean),
      event_loop_delay_p99_seconds: delay(this.loop.percentile(99)),
      event_loop_delay_max_seconds: delay(this.loop.max),
    };
    this.loop.reset();
    return result;
  }

  stop(): void {
    this.loop.disable();
  }
}

/** Event-loop delay sampling period: fine enough to see a 10 ms stall, cheap enough to be invisible (100 wakeups/s). */
const LOOP_RESOLUTION_MS = 10;
