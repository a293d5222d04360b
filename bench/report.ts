// Benchmark report: turns benchsub's run summary (JSON) and timeline (CSV) into a Markdown report and a
// self-contained SVG chart.
//
//   node dist/bench/report.js <run.json> [--out DIR]
//
// writes DIR/<base>.md and DIR/<base>.svg, where <base> is the JSON file's name without ".json" and DIR
// defaults to the JSON file's folder. The Markdown embeds the chart by its file name (same folder).
//
// ## Run summary: <base>.json (written once, at the end of a run)
//
//   {
//     "tool": "benchsub",
//     "started": "2025-01-01T12:00:00.000Z",      // ISO 8601, start of the measured window
//     "ended":   "2025-01-01T12:01:00.000Z",      // ISO 8601, end of the measured window
//     "command": "node dist/bench/benchsub.js --workload W1 ...",   // the command line, quoted for the shell (commandLine())
//     "machine": { "host": "box", "cpus": 2, "cpuModel": "AMD EPYC 7B13", "memGiB": 7.8,
//                  "kernel": "6.1.0-18-amd64", "node": "v20.20.2" },   // describeMachine() gives this
//     "config": { "workload": "W1", "subscribers": 15000, ... },     // flat: string | number | boolean | null
//     "totals": {
//       "messages": 1200000,      // messages received by all subscribers in the measured window
//       "bytes": 650000000,       // WebSocket bytes (frames, headers included) those subscribers received
//       "connections": 15000,     // subscriber connections open at the end of the window
//       "seconds": 60.0,          // length of the measured window
//       "ratePerSecond": 20000.0  // messages / seconds
//     },
//     "latency": Summary,         // bench/stats.ts summarize(): µs, over every message of the window
//     "recovery": RecoverySummary,   // only with ReconnectAfter (W5, the reconnect storm); see below
//     "timelinePath": "<base>.csv"   // relative to the JSON file's folder (or absolute)
//   }
//
// Summary (µs; null where undefined, e.g. no messages):
//   { "count", "min", "max", "mean", "stddev", "ci90": [lo, hi], "ci95": [lo, hi], "p50", "p90", "p99", "p999" }
// Readers ignore fields they do not know, so benchsub may add more (e.g. in totals or config).
// totals may also hold the sequence checks of the Starling dialect over the whole run: lost, duplicated,
// syncs, resyncs, recovered (see native/client/client.h for each counter).
//
// ## Timeline: <base>.csv (one row per report interval, 5 s by default; a header row first)
//
//   t_seconds,connections,messages,rate_per_second,p50_us,p90_us,p99_us,p999_us,max_us,mean_us,rx_mbps,tx_mbps
//
//   t_seconds        end of the interval, seconds since the start of the measured window
//   connections      subscriber connections open at the end of the interval
//   messages         messages received by subscribers during the interval
//   rate_per_second  messages / interval length
//   p50_us..max_us   latency over the interval's messages only (not cumulative), whole µs (HDR convention)
//   mean_us          mean latency over the interval's messages, µs
//   rx_mbps, tx_mbps megabits (10^6 bits) per second of WebSocket bytes the client received / sent
//
// Plain decimal numbers (no thousands separators, no quotes); an empty cell means "no value" (e.g. latency
// of an interval without messages). Columns are found by header name, so extra columns are ignored.
// formatTimelineCsv() writes exactly this.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Summary } from './stats';

/** The machine a run was taken on. */
export interface MachineInfo {
  host: string;
  cpus: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
}

/** benchsub's run summary (see the format at the top of this file). */
export interface RunSummary {
  tool: 'benchsub';
  started: string;
  ended: string;
  command: string;
  machine: MachineInfo;
  config: Record<string, string | number | boolean | null>;
  totals: {
    messages: number;
    bytes: number;
    connections: number;
    seconds: number;
    ratePerSecond: number;
    /** Subscriber connections the server closed during the window. */
    disconnects?: number;
    /** With benchsub's ServerPid: the server's CPU time over the window, and per message delivered. */
    serverCpuSeconds?: number;
    serverCpuMicrosPerMessage?: number | null;
    /** Starling dialect, over the whole run: messages missing from a subject's sequence, and received twice. */
    lost?: number;
    duplicated?: number;
    syncs?: number;
    resyncs?: number;
    /** Messages of kind recovered (not in `messages` nor the latency). */
    recovered?: number;
  };
  latency: Summary;
  /** Each subscriber connection's connect time (µs): socket to the 101, or with a TokenFile to its AUTH answer. */
  connectTime?: Summary;
  /** With ReconnectAfter: the reconnect storm (W5). */
  recovery?: RecoverySummary;
  timelinePath: string;
}

/**
 * The reconnect storm of a benchsub run (ReconnectAfter, workload W5): `selected` clients dropped at once
 * (`mode`: reset = TCP reset, close = a close frame) and reconnected, each subscribing from its last
 * position. `syncTime` (µs) is the time from a client's drop to the SYNC (or RESYNC) of its last subject;
 * `seconds` from the drop until all were seen back (synced, or with nothing to recover: unpositioned).
 * lost / duplicated / resyncs / epochChanges / errors are over the whole run; storm* over the storm only.
 */
export interface RecoverySummary {
  mode: 'reset' | 'close';
  selected: number;
  dropped: number;
  synced: number;
  unpositioned: number;
  failed: number;
  timedOut: boolean;
  seconds: number;
  syncTime: Summary;
  /** From a client's recovery SUBs (sent as its 101 arrives) to its last SYNC/RESYNC: the server's answer. */
  resubscribeTime: Summary;
  recovered: number;
  syncs: number;
  stormResyncs: number;
  stormLost: number;
  stormDuplicated: number;
  lost: number;
  duplicated: number;
  resyncs: number;
  epochChanges: number;
  errors: number;
  /** With ServerPid: the server's CPU from the drop until all were back; what the live messages delivered
   * meanwhile cost at the CPU per live message before the drop; the difference (the storm's own cost), and that
   * per reconnection and per recovered message. */
  serverCpuSeconds?: number;
  serverCpuLiveSeconds?: number;
  serverCpuExcessSeconds?: number;
  serverCpuMicrosPerReconnect?: number | null;
  serverCpuMicrosPerRecovered?: number | null;
}

/** One timeline row (a CSV line); latency fields in µs, null when the interval has none. */
export interface TimelineRow {
  t: number;
  connections: number;
  messages: number;
  rate: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  p999: number | null;
  max: number | null;
  mean: number | null;
  rxMbps: number;
  txMbps: number;
}

/** CSV column names, in order, with the TimelineRow field each holds. */
export const TIMELINE_COLUMNS: ReadonlyArray<readonly [string, keyof TimelineRow]> = [
  ['t_seconds', 't'],
  ['connections', 'connections'],
  ['messages', 'messages'],
  ['rate_per_second', 'rate'],
  ['p50_us', 'p50'],
  ['p90_us', 'p90'],
  ['p99_us', 'p99'],
  ['p999_us', 'p999'],
  ['max_us', 'max'],
  ['mean_us', 'mean'],
  ['rx_mbps', 'rxMbps'],
  ['tx_mbps', 'txMbps'],
];
const NULLABLE = new Set<keyof TimelineRow>(['p50', 'p90', 'p99', 'p999', 'max', 'mean']);

/** Describes this machine in the run summary's `machine` form. */
export function describeMachine(): MachineInfo {
  const cpus = os.cpus();
  return {
    host: os.hostname(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
  };
}

/** A number with at most `decimals` decimals and no trailing zeros (CSV form); '' for null/NaN. */
function plain(x: number | null, decimals = 3): string {
  if (x === null || !Number.isFinite(x)) return '';
  return String(Math.round(x * 10 ** decimals) / 10 ** decimals);
}

/** The timeline CSV (header row and one line per row, each ending in a newline). */
export function formatTimelineCsv(rows: readonly TimelineRow[]): string {
  const lines = [TIMELINE_COLUMNS.map(([name]) => name).join(',')];
  for (const row of rows) lines.push(TIMELINE_COLUMNS.map(([, key]) => plain(row[key])).join(','));
  return lines.join('\n') + '\n';
}

/** Parses a timeline CSV; throws on a missing column or a malformed number. */
export function parseTimelineCsv(text: string): TimelineRow[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) return [];
  const header = lines[0].split(',').map((h) => h.trim());
  const index = TIMELINE_COLUMNS.map(([name]) => {
    const i = header.indexOf(name);
    if (i < 0) throw new Error(`timeline CSV: no column "${name}"`);
    return i;
  });
  return lines.slice(1).map((line, n) => {
    const cells = line.split(',');
    const row = {} as Record<keyof TimelineRow, number | null>;
    TIMELINE_COLUMNS.forEach(([name, key], c) => {
      const cell = (cells[index[c]] ?? '').trim();
      if (cell === '') {
        if (!NULLABLE.has(key)) throw new Error(`timeline CSV line ${n + 2}: ${name} is empty`);
        row[key] = null;
        return;
      }
      const v = Number(cell);
      if (!Number.isFinite(v)) throw new Error(`timeline CSV line ${n + 2}: ${name} "${cell}" is not a number`);
      row[key] = v;
    });
    return row as unknown as TimelineRow;
  });
}

// ---------------------------------------------------------------------------------------------------------
// Markdown

/** µs as ms with µs resolution ("0.220"); "–" for null. */
function ms(us: number | null | undefined): string {
  return us === null || us === undefined || !Number.isFinite(us) ? '–' : (us / 1000).toFixed(3);
}

/** A number with thousands separators and at most `decimals` decimals; "–" for null. */
function grouped(x: number | null | undefined, decimals = 0): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { maximumFractionDigits: decimals, minimumFractionDigits: 0 });
}

/** Escapes a Markdown table cell. */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function table(header: string[], rows: string[][], align?: string[]): string {
  const sep = header.map((_, i) => align?.[i] ?? '---:');
  return [header, sep, ...rows].map((r) => `| ${r.map(cell).join(' | ')} |`).join('\n');
}

/** The Markdown report of a run: machine header, command, config, totals, latency summary, chart, timeline. */
export function renderMarkdown(run: RunSummary, rows: readonly TimelineRow[], svgName?: string): string {
  const m = run.machine;
  const l = run.latency;
  const t = run.totals;
  const out: string[] = [];
  out.push(`# benchsub run, ${run.started}`);
  out.push('');
  out.push(
    `**Machine:** ${m.host}, ${m.cpus} × ${m.cpuModel}, ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}  `,
  );
  out.push(`**Window:** ${run.started} → ${run.ended} (${grouped(t.seconds, 1)} s)`);
  out.push('');
  out.push('```');
  out.push(quoteRanges(run.command));
  out.push('```');
  out.push('');
  const config = Object.entries(run.config ?? {});
  if (config.length > 0) {
    out.push('## Configuration');
    out.push('');
    out.push(table(['setting', 'value'], config.map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]), ['---', '---']));
    out.push('');
  }
  out.push('## Totals');
  out.push('');
  out.push(
    table(
      ['messages', 'bytes', 'connections', 'seconds', 'msg/s'],
      [[grouped(t.messages), grouped(t.bytes), grouped(t.connections), grouped(t.seconds, 1), grouped(t.ratePerSecond, 1)]],
    ),
  );
  out.push('');
  if (t.lost !== undefined) {
    out.push('Sequence checks over the whole run: ' + `lost ${grouped(t.lost)}, duplicated ${grouped(t.duplicated)}, SYNC ${grouped(t.syncs)}, RESYNC ${grouped(t.resyncs)}, recovered ${grouped(t.recovered)}.`);
    out.push('');
  }
  const r = run.recovery;
  if (r) {
    out.push('## Reconnect storm');
    out.push('');
    out.push(
      table(
        ['dropped', 'back in sync', 'unpositioned', 'failed', 'all back (s)', 'drop to SYNC p50 ms', 'p99 ms', 'max ms', 'SUB to SYNC p99 ms', 'max ms', 'recovered', 'lost', 'duplicated', 'RESYNC', 'server CPU s', 'excess CPU s', 'µs / reconnect'],
        [[
          grouped(r.dropped),
          grouped(r.synced),
          grouped(r.unpositioned),
          grouped(r.failed),
          grouped(r.seconds, 3) + (r.timedOut ? ' (timed out)' : ''),
          ms(r.syncTime.p50),
          ms(r.syncTime.p99),
          ms(r.syncTime.max),
          ms(r.resubscribeTime.p99),
          ms(r.resubscribeTime.max),
          grouped(r.recovered),
          grouped(r.lost),
          grouped(r.duplicated),
          grouped(r.resyncs),
          grouped(r.serverCpuSeconds, 2),
          grouped(r.serverCpuExcessSeconds, 2),
          grouped(r.serverCpuMicrosPerReconnect, 0),
        ]],
      ),
    );
    out.push('');
    out.push(`Dropped by ${r.mode === 'reset' ? 'TCP reset (SO_LINGER 0)' : 'a close frame (1001), not waiting for the answer'}; lost, duplicated and RESYNC over the whole run.`);
    out.push('');
  }
  out.push('## Latency (ms)');
  out.push('');
  const ci = (c: [number, number] | null): string => (c ? `${ms(c[0])} – ${ms(c[1])}` : '–');
  out.push(
    table(
      ['count', 'min', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'stddev', 'mean 90% CI', 'mean 95% CI'],
      [[grouped(l.count), ms(l.min), ms(l.p50), ms(l.p90), ms(l.p99), ms(l.p999), ms(l.max), ms(l.mean), ms(l.stddev), ci(l.ci90), ci(l.ci95)]],
    ),
  );
  out.push('');
  if (svgName) {
    out.push(`![latency percentiles and message rate over time](${svgName})`);
    out.push('');
  }
  out.push('## Timeline');
  out.push('');
  if (rows.length === 0) {
    out.push('No timeline rows.');
  } else {
    out.push(
      table(
        ['t (s)', 'connections', 'messages', 'msg/s', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'rx Mbps', 'tx Mbps'],
        rows.map((r) => [
          grouped(r.t, 1),
          grouped(r.connections),
          grouped(r.messages),
          grouped(r.rate, 1),
          ms(r.p50),
          ms(r.p90),
          ms(r.p99),
          ms(r.p999),
          ms(r.max),
          ms(r.mean),
          grouped(r.rxMbps, 2),
          grouped(r.txMbps, 2),
        ]),
      ),
    );
    out.push('');
    out.push('Latency columns in ms, over each interval\'s messages only.');
  }
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// SVG chart

/** Escapes text for XML content and attribute values. */
function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A "nice" step (1, 2 or 5 × 10^k) for about `count` intervals over [0, span]. */
function niceStep(span: number, count: number): number {
  if (!(span > 0)) return 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** Short tick label: 1500 → "1.5k", 2000000 → "2M", 0.05 → "0.05". */
function tickLabel(v: number): string {
  const trim = (x: number): string => String(Math.round(x * 1000) / 1000);
  if (Math.abs(v) >= 1e6) return trim(v / 1e6) + 'M';
  if (Math.abs(v) >= 1e3) return trim(v / 1e3) + 'k';
  return String(Number(v.toPrecision(6)));
}

/** Latency tick label in ms: 0.001 … 1,000,000, no exponent. */
function msLabel(v: number): string {
  return Number(v.toPrecision(6)).toLocaleString('en-US', { maximumFractionDigits: 6 });
}

/** The series the chart draws: latency percentiles on the log axis, the rate on the right axis. */
export const CHART_SERIES = [
  { id: 'p50', label: 'p50', color: '#1f77b4', dash: '' },
  { id: 'p99', label: 'p99', color: '#ff7f0e', dash: '' },
  { id: 'p999', label: 'p99.9', color: '#d62728', dash: '' },
  { id: 'rate', label: 'msg/s (right axis)', color: '#555555', dash: '6 4' },
] as const;

/**
 * A self-contained SVG chart of the timeline: p50 / p99 / p99.9 latency (ms, log-scale left axis) and the
 * message rate (msg/s, linear right axis) over time (s), with grid, ticks, labels and a legend. Each series is
 * one <path id="series-<id>"> (p50, p99, p999, rate); missing values break the line. Latencies of 0 µs are
 * drawn on the axis floor.
 */
export function renderSvg(run: RunSummary, rows: readonly TimelineRow[]): string {
  const W = 960, H = 480;
  const left = 72, right = 82, top = 78, bottom = 56;
  const pw = W - left - right, ph = H - top - bottom;

  // x: time from 0 to a nice bound.
  const tMax = Math.max(0, ...rows.map((r) => r.t));
  const tTop = tMax || 10; // an empty timeline still gets a readable axis
  const xStep = niceStep(tTop, 8);
  const xEnd = Math.max(xStep, Math.ceil(tTop / xStep) * xStep);
  const X = (t: number): number => left + (t / xEnd) * pw;

  // left y: latency in ms, log10, whole decades.
  const lat: number[] = [];
  for (const r of rows) for (const v of [r.p50, r.p99, r.p999]) if (v !== null && v > 0) lat.push(v / 1000);
  let dLo = lat.length ? Math.floor(Math.log10(Math.min(...lat))) : -1;
  let dHi = lat.length ? Math.ceil(Math.log10(Math.max(...lat))) : 2;
  if (dHi <= dLo) dHi = dLo + 1;
  if (dHi - dLo < 2) dLo = dHi - 2; // at least two decades, so the scale reads as logarithmic
  const Y = (msv: number): number => {
    const lv = Math.min(Math.max(Math.log10(Math.max(msv, 10 ** dLo)), dLo), dHi);
    return top + ph - ((lv - dLo) / (dHi - dLo)) * ph;
  };

  // right y: rate, linear from 0.
  const rTop = (Math.max(0, ...rows.map((r) => r.rate)) || 1000) * 1.08; // headroom above the highest rate
  const rStep = niceStep(rTop, 5);
  const rEnd = Math.max(rStep, Math.ceil(rTop / rStep) * rStep);
  const R = (v: number): number => top + ph - (v / rEnd) * ph;

  const f = (v: number): string => v.toFixed(1);
  const o: string[] = [];
  o.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  o.push(`<title>benchsub: latency percentiles and message rate, ${xml(run.started)}</title>`);
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(
    `<defs><clipPath id="plot-area"><rect x="${left - 4}" y="${top - 4}" width="${pw + 8}" height="${ph + 8}"/></clipPath></defs>`,
  );
  o.push(`<text x="${left}" y="24" font-size="16" font-weight="bold" fill="#222">Latency percentiles and message rate</text>`);
  const m = run.machine;
  o.push(
    `<text x="${left}" y="43" fill="#555">${xml(`${m.host} · ${m.cpus} × ${m.cpuModel} · ${run.started}`)}</text>`,
  );

  // Grid and left axis ticks (decades labelled; 2 and 5 as minor grid when the range is 4 decades or less).
  o.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (let d = dLo; d <= dHi; d++) {
    o.push(`<line x1="${left}" y1="${f(Y(10 ** d))}" x2="${left + pw}" y2="${f(Y(10 ** d))}" stroke="#d0d0d0"/>`);
    if (d < dHi && dHi - dLo <= 4)
      for (const k of [2, 5]) o.push(`<line x1="${left}" y1="${f(Y(k * 10 ** d))}" x2="${left + pw}" y2="${f(Y(k * 10 ** d))}"/>`);
  }
  for (let t = xStep; t <= xEnd + 1e-9; t += xStep) o.push(`<line x1="${f(X(t))}" y1="${top}" x2="${f(X(t))}" y2="${top + ph}"/>`);
  o.push(`</g>`);

  // Axes.
  o.push(`<g stroke="#333" stroke-width="1" fill="none">`);
  o.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}"/>`);
  o.push(`<line x1="${left + pw}" y1="${top}" x2="${left + pw}" y2="${top + ph}"/>`);
  o.push(`<line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}"/>`);
  o.push(`</g>`);

  o.push(`<g fill="#333" stroke="none">`);
  for (let d = dLo; d <= dHi; d++) {
    const y = Y(10 ** d);
    o.push(`<line x1="${left - 5}" y1="${f(y)}" x2="${left}" y2="${f(y)}" stroke="#333"/>`);
    o.push(`<text x="${left - 8}" y="${f(y + 4)}" text-anchor="end">${msLabel(10 ** d)}</text>`);
    if (d < dHi && dHi - dLo <= 4)
      for (const k of [2, 5]) {
        const yk = Y(k * 10 ** d);
        o.push(`<line x1="${left - 3}" y1="${f(yk)}" x2="${left}" y2="${f(yk)}" stroke="#333"/>`);
        if (dHi - dLo <= 2) o.push(`<text x="${left - 8}" y="${f(yk + 4)}" text-anchor="end" fill="#777">${msLabel(k * 10 ** d)}</text>`);
      }
  }
  for (let v = 0; v <= rEnd + 1e-9; v += rStep) {
    const y = R(v);
    o.push(`<line x1="${left + pw}" y1="${f(y)}" x2="${left + pw + 5}" y2="${f(y)}" stroke="#333"/>`);
    o.push(`<text x="${left + pw + 8}" y="${f(y + 4)}" text-anchor="start">${tickLabel(v)}</text>`);
  }
  for (let t = 0; t <= xEnd + 1e-9; t += xStep) {
    const x = X(t);
    o.push(`<line x1="${f(x)}" y1="${top + ph}" x2="${f(x)}" y2="${top + ph + 5}" stroke="#333"/>`);
    o.push(`<text x="${f(x)}" y="${top + ph + 19}" text-anchor="middle">${tickLabel(t)}</text>`);
  }
  o.push(`<text x="${left + pw / 2}" y="${H - 12}" text-anchor="middle">time (s)</text>`);
  o.push(
    `<text transform="translate(18 ${top + ph / 2}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>`,
  );
  o.push(
    `<text transform="translate(${W - 14} ${top + ph / 2}) rotate(90)" text-anchor="middle">messages per second</text>`,
  );
  o.push(`</g>`);

  // Series.
  const value = (r: TimelineRow, id: string): number | null => {
    if (id === 'rate') return r.rate;
    const v = r[id as 'p50' | 'p99' | 'p999'];
    return v === null ? null : v / 1000;
  };
  const markers = rows.length <= 120;
  o.push(`<g clip-path="url(#plot-area)">`);
  for (const s of CHART_SERIES) {
    const yOf = (v: number): number => (s.id === 'rate' ? R(v) : Y(v));
    let d = '';
    let pen = false;
    const pts: string[] = [];
    for (const r of rows) {
      const v = value(r, s.id);
      if (v === null) {
        pen = false;
        continue;
      }
      const x = f(X(r.t)), y = f(yOf(v));
      d += `${pen ? 'L' : 'M'}${x} ${y} `;
      pen = true;
      if (markers) pts.push(`<circle cx="${x}" cy="${y}" r="2.5"/>`);
    }
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
    o.push(
      `<path id="series-${s.id}" d="${d.trim() || `M${left} ${top + ph}`}" fill="none" stroke="${s.color}" ` +
        `stroke-width="2" stroke-linejoin="round"${dash}${d ? '' : ' stroke-opacity="0"'}/>`,
    );
    if (pts.length) o.push(`<g fill="${s.color}">${pts.join('')}</g>`);
  }
  o.push(`</g>`);
  if (rows.length === 0)
    o.push(`<text x="${left + pw / 2}" y="${top + ph / 2}" text-anchor="middle" fill="#777">no timeline data</text>`);

  // Legend, top right, above the plot.
  let lx = left + pw;
  const legend: string[] = [];
  for (const s of [...CHART_SERIES].reverse()) {
    const w = 30 + s.label.length * 6.8;
    lx -= w + 14;
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
    legend.push(
      `<line x1="${f(lx)}" y1="${top - 14}" x2="${f(lx + 22)}" y2="${top - 14}" stroke="${s.color}" stroke-width="2"${dash}/>` +
        `<text x="${f(lx + 28)}" y="${top - 10}" fill="#222">${xml(s.label)}</text>`,
    );
  }
  o.push(`<g>${legend.reverse().join('')}</g>`);
  o.push(`</svg>`);
  return o.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------------
// Files and command line

/**
 * One argument as the shell must be given it: as is when it holds only characters the shell leaves alone,
 * else in single quotes. `-DSubjects=/p/s{1..500}` unquoted would be expanded into 500 arguments.
 */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_\-.,:/=@%+]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** A command line that gives the same arguments when pasted into a shell (ranges and spaces quoted). */
export function commandLine(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/**
 * A stored command line made safe to paste: summaries written before commandLine() joined the arguments
 * unquoted, so a word with a `{a..b}` range is quoted here. A command that has quotes already is kept as is.
 */
export function quoteRanges(command: string): string {
  if (/['"]/.test(command)) return command;
  return command
    .split(' ')
    .map((word) => (/[{}*?\[\]$`;&|<>()!~#\\]/.test(word) ? shellQuote(word) : word))
    .join(' ');
}

/** Reads a run summary, checking the fields the report needs. */
export function readRun(jsonPath: string): RunSummary {
  const run = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as RunSummary;
  if (run?.tool !== 'benchsub') throw new Error(`${jsonPath}: not a benchsub run summary (tool is ${JSON.stringify(run?.tool)})`);
  for (const k of ['started', 'ended', 'command', 'machine', 'totals', 'latency'] as const)
    if (run[k] === undefined) throw new Error(`${jsonPath}: no "${k}"`);
  return run;
}

/**
 * Writes `<base>.md` and `<base>.svg` for the run summary at `jsonPath` into `outDir` (default: the JSON's
 * folder), reading the timeline from `timelinePath` (relative to the JSON's folder). A missing timeline file
 * gives a report without timeline. Returns the paths written.
 */
export function writeReport(jsonPath: string, outDir?: string): { md: string; svg: string } {
  const run = readRun(jsonPath);
  const dir = path.dirname(jsonPath);
  let rows: TimelineRow[] = [];
  if (run.timelinePath) {
    const csv = path.resolve(dir, run.timelinePath);
    if (fs.existsSync(csv)) rows = parseTimelineCsv(fs.readFileSync(csv, 'utf8'));
    else process.stderr.write(`report: timeline ${csv} not found; reporting without it\n`);
  }
  const base = path.basename(jsonPath).replace(/\.json$/i, '');
  const out = outDir ?? dir;
  fs.mkdirSync(out, { recursive: true });
  const md = path.join(out, `${base}.md`);
  const svg = path.join(out, `${base}.svg`);
  fs.writeFileSync(svg, renderSvg(run, rows));
  fs.writeFileSync(md, renderMarkdown(run, rows, `${base}.svg`));
  return { md, svg };
}

function main(argv: string[]): number {
  let json: string | undefined;
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') out = argv[++i];
    else if (a.startsWith('--out=')) out = a.slice(6);
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: node dist/bench/report.js <run.json> [--out DIR]\n');
      return 0;
    } else if (!json) json = a;
    else {
      process.stderr.write(`report: unexpected argument ${a}\n`);
      return 2;
    }
  }
  if (!json || (argv.includes('--out') && !out)) {
    process.stderr.write('usage: node dist/bench/report.js <run.json> [--out DIR]\n');
    return 2;
  }
  try {
    const { md, svg } = writeReport(json, out);
    process.stdout.write(`${md}\n${svg}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`report: ${(e as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
