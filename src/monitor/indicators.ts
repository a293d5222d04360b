// The monitoring indicators: what each one is called (JSON key, stats-log key, Prometheus metric), what it
// means, and how one snapshot of all of them is computed from the server's once-a-second counter sample and
// from the process. One table (INDICATORS) drives /stats, /metrics, the stats log and docs/monitoring.md.
import * as os from 'node:os';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { ServerStats, WorkgroupCounters, Rates } from '../server';

/** The close codes and ERR codes counted as protocol errors, as they appear on the wire (PROTOCOL.md). */
export const PROTOCOL_ERROR_CODES = ['1002', '1007', '1009', 'bad-command', 'bad-subject', 'too-large', 'limit', 'forbidden'] as const;
export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];

/** The native counter behind each protocol error code. */
const PROTOCOL_ERROR_COUNTERS: Record<ProtocolErrorCode, keyof WorkgroupCounters> = {
  '1002': 'close1002',
  '1007': 'close1007',
  '1009': 'close1009',
  'bad-command': 'errBadCommand',
  'bad-subject': 'errBadSubject',
  'too-large': 'errTooLarge',
  limit: 'errLimit',
  forbidden: 'errForbidden',
};

/** Indicators each workgroup has; the server-wide value is the sum over workgroups. */
export interface WorkgroupIndicators {
  ConnectedSessions: number;
  ConnectionsTotal: number;
  ConnectionsPerSecond: number;
  DisconnectionsTotal: number;
  DisconnectionsPerSecond: number;
  Subscriptions: number;
  InPublishMessagesTotal: number;
  InPublishMessagesPerSecond: number;
  OutPublishMessagesTotal: number;
  OutPublishMessagesPerSecond: number;
  InBytesTotal: number;
  InBytesPerSecond: number;
  OutBytesTotal: number;
  OutBytesPerSecond: number;
  SlowConsumerDisconnects: number;
  /** By close code or ERR code. */
  ProtocolErrors: Record<ProtocolErrorCode, number>;
  Handshakes: number;
  HttpErrors: number;
  RingOverflows: number;
}

/** Server-wide: the workgroup indicators summed, and those that only exist server-wide. */
export interface ServerIndicators extends WorkgroupIndicators {
  Subjects: number;
  AcceptRefused: number;
  PublishOverflows: number;
  Workgroups: number;
  UptimeSeconds: number;
}

export interface ProcessIndicators {
  CpuPercent: number;
  CpuSecondsTotal: number;
  Cpus: number;
  RssBytes: number;
  HeapUsedBytes: number;
  HeapTotalBytes: number;
  EventLoopDelayMs: number;
  EventLoopDelayP99Ms: number;
  EventLoopDelayMaxMs: number;
}

/** What /stats serves and PUSH stats publishes: one sample of every indicator. */
export interface Snapshot {
  /** Sample number, 0 at start, +1 a second: two answers with the same seq carry the same values. */
  seq: number;
  /** When the sample was taken (ISO 8601). */
  time: string;
  /** Seconds the rates are measured over (the time since the previous sample; 0 for seq 0). */
  intervalSeconds: number;
  server: ServerIndicators;
  workgroups: (WorkgroupIndicators & { workgroup: number })[];
  process: ProcessIndicators;
}

export type Scope = 'workgroup' | 'server' | 'process';

/** One indicator: the table that /metrics, the stats log and docs/monitoring.md are built from. */
export interface IndicatorDef {
  /** JSON key (in `server`, `workgroups[]` or `process`) and stats-log key; MigratoryData's name where it has one. */
  name: keyof ServerIndicators | keyof ProcessIndicators;
  /** `workgroup`: per workgroup and summed in `server`; `server`: server-wide only; `process`: the Node process. */
  scope: Scope;
  /** Prometheus metric; counters end in `_total`. Workgroup-scoped metrics carry a `workgroup` label. */
  metric: string;
  type: 'counter' | 'gauge';
  /** Prometheus value = JSON value × scale (milliseconds in JSON, seconds in Prometheus). */
  scale?: number;
  /** Docs and Prometheus HELP: what it counts, in which unit. */
  help: string;
}

export const INDICATORS: readonly IndicatorDef[] = [
  { name: 'ConnectedSessions', scope: 'workgroup', metric: 'starling_connected_sessions', type: 'gauge',
    help: 'Connections open now: WebSocket sessions and connections still in the HTTP upgrade.' },
  { name: 'ConnectionsTotal', scope: 'workgroup', metric: 'starling_connections_total', type: 'counter',
    help: 'TCP connections accepted since start.' },
  { name: 'ConnectionsPerSecond', scope: 'workgroup', metric: 'starling_connections_per_second', type: 'gauge',
    help: 'TCP connections accepted per second, over the last second.' },
  { name: 'DisconnectionsTotal', scope: 'workgroup', metric: 'starling_disconnections_total', type: 'counter',
    help: 'Connections closed since start, for any reason.' },
  { name: 'DisconnectionsPerSecond', scope: 'workgroup', metric: 'starling_disconnections_per_second', type: 'gauge',
    help: 'Connections closed per second, over the last second.' },
  { name: 'Subjects', scope: 'server', metric: 'starling_subjects', type: 'gauge',
    help: 'Subjects with at least one subscriber.' },
  { name: 'Subscriptions', scope: 'workgroup', metric: 'starling_subscriptions', type: 'gauge',
    help: 'Subscriptions held now (one per connection and subject).' },
  { name: 'InPublishMessagesTotal', scope: 'workgroup', metric: 'starling_in_publish_messages_total', type: 'counter',
    help: 'PUB commands accepted from clients since start.' },
  { name: 'InPublishMessagesPerSecond', scope: 'workgroup', metric: 'starling_in_publish_messages_per_second', type: 'gauge',
    help: 'PUB commands accepted per second, over the last second.' },
  { name: 'OutPublishMessagesTotal', scope: 'workgroup', metric: 'starling_out_publish_messages_total', type: 'counter',
    help: 'MSG deliveries queued to subscribers since start (one per subscriber and message).' },
  { name: 'OutPublishMessagesPerSecond', scope: 'workgroup', metric: 'starling_out_publish_messages_per_second', type: 'gauge',
    help: 'MSG deliveries per second, over the last second.' },
  { name: 'InBytesTotal', scope: 'workgroup', metric: 'starling_in_bytes_total', type: 'counter',
    help: 'Bytes read from client sockets since start (HTTP upgrades and WebSocket frames).' },
  { name: 'InBytesPerSecond', scope: 'workgroup', metric: 'starling_in_bytes_per_second', type: 'gauge',
    help: 'Bytes read from client sockets per second, over the last second.' },
  { name: 'OutBytesTotal', scope: 'workgroup', metric: 'starling_out_bytes_total', type: 'counter',
    help: 'Bytes written to client sockets since start.' },
  { name: 'OutBytesPerSecond', scope: 'workgroup', metric: 'starling_out_bytes_per_second', type: 'gauge',
    help: 'Bytes written to client sockets per second, over the last second.' },
  { name: 'SlowConsumerDisconnects', scope: 'workgroup', metric: 'starling_slow_consumer_disconnects_total', type: 'counter',
    help: 'Connections closed with 1008 because their backlog passed MaxBacklog.' },
  { name: 'ProtocolErrors', scope: 'workgroup', metric: 'starling_protocol_errors_total', type: 'counter',
    help: 'Protocol errors by code (label code): closes with 1002, 1007, 1009 and ERR bad-command, bad-subject, too-large, limit replies.' },
  { name: 'Handshakes', scope: 'workgroup', metric: 'starling_handshakes_total', type: 'counter',
    help: 'Successful WebSocket upgrades since start.' },
  { name: 'HttpErrors', scope: 'workgroup', metric: 'starling_http_errors_total', type: 'counter',
    help: 'Upgrade requests answered with an HTTP error (400, 404, 426) or timed out.' },
  { name: 'RingOverflows', scope: 'workgroup', metric: 'starling_ring_overflows_total', type: 'counter',
    help: 'Messages dropped because a cross-workgroup ring was full.' },
  { name: 'AcceptRefused', scope: 'server', metric: 'starling_accept_refused_total', type: 'counter',
    help: 'Connections refused because the fd table or a workgroup inbox was full.' },
  { name: 'PublishOverflows', scope: 'server', metric: 'starling_publish_overflows_total', type: 'counter',
    help: 'Application publishes (server.publish) dropped because the home workgroup was overloaded.' },
  { name: 'Workgroups', scope: 'server', metric: 'starling_workgroups', type: 'gauge',
    help: 'Workgroups (native threads) the server runs.' },
  { name: 'UptimeSeconds', scope: 'server', metric: 'starling_uptime_seconds', type: 'gauge',
    help: 'Seconds since the server started.' },
  { name: 'CpuPercent', scope: 'process', metric: 'starling_process_cpu_percent', type: 'gauge',
    help: 'CPU used by the whole process (workgroup threads included) over the last second, in percent of one CPU (200 = two CPUs busy).' },
  { name: 'CpuSecondsTotal', scope: 'process', metric: 'starling_process_cpu_seconds_total', type: 'counter',
    help: 'CPU seconds (user + system) the process used since it started.' },
  { name: 'Cpus', scope: 'process', metric: 'starling_process_cpus', type: 'gauge',
    help: 'CPUs available to the process (the ceiling of CpuPercent is 100 × Cpus).' },
  { name: 'RssBytes', scope: 'process', metric: 'starling_process_resident_memory_bytes', type: 'gauge',
    help: 'Resident set size of the process: native connection state, kernel-facing buffers and the JS heap.' },
  { name: 'HeapUsedBytes', scope: 'process', metric: 'starling_heap_used_bytes', type: 'gauge',
    help: 'JavaScript heap in use.' },
  { name: 'HeapTotalBytes', scope: 'process', metric: 'starling_heap_total_bytes', type: 'gauge',
    help: 'JavaScript heap reserved.' },
  { name: 'EventLoopDelayMs', scope: 'process', metric: 'starling_event_loop_delay_seconds', type: 'gauge', scale: 1e-3,
    help: 'Mean delay of the Node.js event loop (the control plane) over the last second; milliseconds in JSON, seconds in Prometheus.' },
  { name: 'EventLoopDelayP99Ms', scope: 'process', metric: 'starling_event_loop_delay_p99_seconds', type: 'gauge', scale: 1e-3,
    help: '99th percentile of the event-loop delay over the last second.' },
  { name: 'EventLoopDelayMaxMs', scope: 'process', metric: 'starling_event_loop_delay_max_seconds', type: 'gauge', scale: 1e-3,
    help: 'Longest event-loop delay over the last second.' },
];

/** Rates are measured over about a second; two decimals are all the precision they have. */
const round2 = (x: number) => Math.round(x * 100) / 100;

function workgroupIndicators(c: WorkgroupCounters, r: Rates): WorkgroupIndicators {
  const errors = {} as Record<ProtocolErrorCode, number>;
  for (const code of PROTOCOL_ERROR_CODES) errors[code] = c[PROTOCOL_ERROR_COUNTERS[code]];
  return {
    ConnectedSessions: c.connections,
    ConnectionsTotal: c.accepted,
    ConnectionsPerSecond: round2(r.connectionsPerSecond),
    DisconnectionsTotal: c.closed,
    DisconnectionsPerSecond: round2(r.disconnectionsPerSecond),
    Subscriptions: c.subscriptions,
    InPublishMessagesTotal: c.messagesIn,
    InPublishMessagesPerSecond: round2(r.messagesInPerSecond),
    OutPublishMessagesTotal: c.messagesOut,
    OutPublishMessagesPerSecond: round2(r.messagesOutPerSecond),
    InBytesTotal: c.bytesIn,
    InBytesPerSecond: round2(r.bytesInPerSecond),
    OutBytesTotal: c.bytesOut,
    OutBytesPerSecond: round2(r.bytesOutPerSecond),
    SlowConsumerDisconnects: c.slowConsumerCloses,
    ProtocolErrors: errors,
    Handshakes: c.handshakes,
    HttpErrors: c.httpErrors,
    RingOverflows: c.ringOverflows,
  };
}

/** Server and workgroup indicators from one ServerStats (the server's once-a-second sample). */
export function serverIndicators(stats: ServerStats): Pick<Snapshot, 'server' | 'workgroups'> {
  const workgroups = stats.workgroups.map((w) => ({ workgroup: w.workgroup, ...workgroupIndicators(w, w.rates) }));
  return {
    server: {
      ...workgroupIndicators(stats.total, stats.rates),
      Subjects: stats.subjects,
      AcceptRefused: stats.acceptRefused,
      PublishOverflows: stats.publishOverflows,
      Workgroups: stats.workgroups.length,
      UptimeSeconds: stats.uptimeSeconds,
    },
    workgroups,
  };
}

/** The sum of a ProtocolErrors object. */
export const protocolErrorCount = (errors: Record<ProtocolErrorCode, number>): number =>
  PROTOCOL_ERROR_CODES.reduce((sum, code) => sum + errors[code], 0);

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
    // It is empty when the loop was blocked for the whole interval: report 0 rather than NaN.
    const ms = (ns: number) =>
      this.loop.count > 0 && Number.isFinite(ns) ? Math.max(0, Math.round((ns - LOOP_RESOLUTION_MS * 1e6) / 1e4) / 100) : 0;
    const result: ProcessIndicators = {
      CpuPercent: elapsedMicros > 0 ? Math.round((usedMicros / elapsedMicros) * 1000) / 10 : 0,
      CpuSecondsTotal: Math.round((cpu.user + cpu.system) / 1e3) / 1e3,
      Cpus: this.cpus,
      RssBytes: memory.rss,
      HeapUsedBytes: memory.heapUsed,
      HeapTotalBytes: memory.heapTotal,
      EventLoopDelayMs: ms(this.loop.mean),
      EventLoopDelayP99Ms: ms(this.loop.percentile(99)),
      EventLoopDelayMaxMs: ms(this.loop.max),
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
