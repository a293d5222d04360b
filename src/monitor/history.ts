// The dashboard's history, kept in the server so that a page opened during an incident charts what happened
// before it was opened. Two fixed-size rings of compact samples (the chart values only, not the whole
// snapshot): every sample of the last FINE_SECONDS, and one mean per minute for the last COARSE_MINUTES.
// Memory is allocated once, at start, and never grows: see HistoryRing.bytes() and docs/monitoring.md.
import type { Snapshot } from './indicators';

/** Every once-a-second sample is kept this long: ten minutes. */
export const FINE_SECONDS = 600;
/** One mean per minute is kept this long: six hours. */
export const COARSE_MINUTES = 360;

/** The values charted per scope (the server, then each workgroup), in the order of each sample's `scopes` rows. */
export const SCOPED_FIELDS = [
  'connections',
  'messages_in_per_second',
  'messages_out_per_second',
  'bytes_in_per_second',
  'bytes_out_per_second',
  'accepted_per_second',
  'closed_per_second',
] as const;
/** The process values charted, in the order of each sample's `process` row. */
export const PROCESS_FIELDS = ['cpu_percent', 'rss_bytes', 'heap_used_bytes', 'heap_total_bytes'] as const;

/** One point of the history as /history serves it. */
export interface HistoryPoint {
  /** The sample's seq (for a per-minute mean: the seq of its last sample). */
  seq: number;
  /** When it was taken, epoch ms (for a per-minute mean: the time of its last sample). */
  t: number;
  /** The spacing of its kind of point, ms: 1000 for a sample, 60000 for a per-minute mean. */
  step: number;
  /** SCOPED_FIELDS of the server, then of each workgroup. */
  scopes: number[][];
  /** PROCESS_FIELDS. */
  process: number[];
}

/** What GET /history answers: the field names, then every point kept, oldest first (means, then samples). */
export interface HistoryReply {
  fine: { seconds: number; step: number };
  coarse: { minutes: number; step: number };
  scoped: readonly string[];
  process: readonly string[];
  points: HistoryPoint[];
}

/** A ring of `capacity` rows of `width` numbers, in one Float64Array. */
class Ring {
  readonly data: Float64Array;
  private start = 0;
  length = 0;

  constructor(
    readonly capacity: number,
    readonly width: number,
  ) {
    this.data = new Float64Array(capacity * width);
  }

  /** The row to write the next value into (overwriting the oldest once full). */
  next(): Float64Array {
    let i: number;
    if (this.length < this.capacity) i = (this.start + this.length++) % this.capacity;
    else {
      i = this.start;
      this.start = (this.start + 1) % this.capacity;
    }
    return this.data.subarray(i * this.width, (i + 1) * this.width);
  }

  /** Row `k`, oldest first. */
  row(k: number): Float64Array {
    const i = (this.start + k) % this.capacity;
    return this.data.subarray(i * this.width, (i + 1) * this.width);
  }

  clear(): void {
    this.start = 0;
    this.length = 0;
  }
}

// Row layout: seq, t, step, then the scoped values of each scope, then the process values.
const HEAD = 3;

/**
 * The last FINE_SECONDS samples at full resolution and COARSE_MINUTES per-minute means. Time is given by the
 * caller (the sample's time), so tests drive it with a fake clock.
 */
export class HistoryRing {
  private readonly width: number;
  private readonly fine: Ring;
  private readonly coarse: Ring;
  /** Sums of the current minute's samples (a row in the same layout), and how many. */
  private readonly minute: Float64Array;
  private minuteKey = -1;
  private minuteCount = 0;

  constructor(
    /** Workgroups of the server (fixed for its life). */
    readonly workgroups: number,
    readonly fineCapacity = FINE_SECONDS,
    readonly coarseCapacity = COARSE_MINUTES,
  ) {
    this.width = HEAD + (workgroups + 1) * SCOPED_FIELDS.length + PROCESS_FIELDS.length;
    this.fine = new Ring(fineCapacity, this.width);
    this.coarse = new Ring(coarseCapacity, this.width);
    this.minute = new Float64Array(this.width);
  }

  /** Bytes of sample storage, allocated at construction and constant: (fine + coarse + 1) rows of `width` doubles. */
  bytes(): number {
    return this.fine.data.byteLength + this.coarse.data.byteLength + this.minute.byteLength;
  }

  /** Points held now (at most fineCapacity + coarseCapacity). */
  get length(): number {
    return this.fine.length + this.coarse.length;
  }

  /** Adds the sample `s`, taken at `t` (epoch ms). */
  add(s: Snapshot, t: number): void {
    const row = this.fine.next();
    row[0] = s.seq;
    row[1] = t;
    row[2] = 1000;
    let o = HEAD;
    const scopes = [s.server, ...s.workgroups];
    for (let w = 0; w <= this.workgroups; w++) {
      const x = (scopes[w] ?? {}) as unknown as Record<string, number>;
      for (const k of SCOPED_FIELDS) row[o++] = Number(x[k]) || 0;
    }
    const p = s.process as unknown as Record<string, number>;
    for (const k of PROCESS_FIELDS) row[o++] = Number(p[k]) || 0;

    // The per-minute mean: a sample of a new minute closes the previous one.
    const key = Math.floor(t / 60_000);
    if (key !== this.minuteKey) {
      this.flushMinute();
      this.minuteKey = key;
    }
    for (let i = HEAD; i < this.width; i++) this.minute[i] += row[i];
    this.minute[0] = row[0];
    this.minute[1] = t;
    this.minuteCount++;
  }

  /** Forgets everything (the server's counters restarted). */
  clear(): void {
    this.fine.clear();
    this.coarse.clear();
    this.minute.fill(0);
    this.minuteKey = -1;
    this.minuteCount = 0;
  }

  /**
   * Every point, oldest first: the per-minute means older than the oldest full-resolution sample, then the
   * samples. Points older than `since` (epoch ms) are left out.
   */
  points(since = -Infinity): HistoryPoint[] {
    const out: HistoryPoint[] = [];
    const firstFine = this.fine.length ? this.fine.row(0)[1] : Infinity;
    for (let k = 0; k < this.coarse.length; k++) {
      const r = this.coarse.row(k);
      if (r[1] < firstFine && r[1] >= since) out.push(this.point(r));
    }
    for (let k = 0; k < this.fine.length; k++) {
      const r = this.fine.row(k);
      if (r[1] >= since) out.push(this.point(r));
    }
    return out;
  }

  /** The /history answer. */
  reply(): HistoryReply {
    return {
      fine: { seconds: this.fineCapacity, step: 1000 },
      coarse: { minutes: this.coarseCapacity, step: 60_000 },
      scoped: SCOPED_FIELDS,
      process: PROCESS_FIELDS,
      points: this.points(),
    };
  }

  private point(r: Float64Array): HistoryPoint {
    const scopes: number[][] = [];
    let o = HEAD;
    for (let w = 0; w <= this.workgroups; w++) {
      scopes.push(Array.from(r.subarray(o, o + SCOPED_FIELDS.length), round));
      o += SCOPED_FIELDS.length;
    }
    return { seq: r[0], t: r[1], step: r[2], scopes, process: Array.from(r.subarray(o, o + PROCESS_FIELDS.length), round) };
  }

  private flushMinute(): void {
    if (this.minuteCount === 0) return;
    const row = this.coarse.next();
    row[0] = this.minute[0];
    row[1] = this.minute[1];
    row[2] = 60_000;
    for (let i = HEAD; i < this.width; i++) row[i] = this.minute[i] / this.minuteCount;
    this.minute.fill(0);
    this.minuteCount = 0;
  }
}

/** Means get two decimals, like the rates; integers stay integers. */
const round = (v: number): number => (Number.isInteger(v) ? v : Math.round(v * 100) / 100);
