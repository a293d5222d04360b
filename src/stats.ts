// What one batched native counter read means: the addon describes its counters ({name, kind, doc}, from the
// X-macros in native/runtime/counters.h and native/runtime/server.h) and readCounters fills one Float64Array
// in that order, workgroup after workgroup, then the server-wide counters. This module turns such a batch
// into ServerStats, keyed by the native names; it lists no counter of its own, so a counter added in C++
// appears in server.stats(), /stats, /metrics and the stats log without a TypeScript edit.
import type { CounterInfo } from './native';

/** Counter values by native name (`connections`, `messages_in`, `accept_refused`, …). */
export type Counters = Record<string, number>;

export interface WorkgroupStats {
  workgroup: number;
  /** This workgroup's counters. */
  counters: Counters;
  /** `<name>_per_second` of each of its counters of kind `counter`, over the last sampling interval. */
  rates: Counters;
}

export interface ServerStats {
  uptimeSeconds: number;
  /** Application publishes (server.publish) dropped because the subject's home workgroup was overloaded. */
  publishOverflows: number;
  /** Entitlement = Custom: authorize hook calls that failed (threw, rejected, answered a malformed grant). */
  authorizeErrors: number;
  /** Entitlement = Custom: authorize hook calls that did not answer in time. */
  authorizeTimeouts: number;
  /** Server-wide: every workgroup counter summed over the workgroups, then the server-only counters. */
  total: Counters;
  /** `<name>_per_second` of each counter of kind `counter` in `total`, over the last sampling interval. */
  rates: Counters;
  workgroups: WorkgroupStats[];
}

/** The name of a counter's per-second rate. */
export const rateName = (counter: string): string => `${counter}_per_second`;

/** The layout of one readCounters batch, and its decoding into ServerStats. */
export class CounterLayout {
  /** Doubles in one batch. */
  readonly slots: number;

  constructor(
    readonly workgroups: number,
    readonly workgroupCounters: readonly CounterInfo[],
    readonly serverCounters: readonly CounterInfo[],
  ) {
    const seen = new Set<string>();
    for (const c of [...workgroupCounters, ...serverCounters]) {
      if (seen.has(c.name)) throw new Error(`native counters: ${c.name} is declared twice`);
      seen.add(c.name);
    }
    this.slots = workgroups * workgroupCounters.length + serverCounters.length;
  }

  /**
   * Per-second rates between two batches taken `seconds` apart, slot by slot (0 for gauges). A counter that
   * went down (it cannot, but a sanitizer build or a restart of the addon could make it) gives 0, not a
   * negative rate.
   */
  rates(previous: Float64Array, current: Float64Array, seconds: number): Float64Array {
    const out = new Float64Array(this.slots);
    if (!(seconds > 0)) return out;
    const k = this.workgroupCounters.length;
    const kindAt = (slot: number) =>
      slot < this.workgroups * k ? this.workgroupCounters[slot % k].kind : this.serverCounters[slot - this.workgroups * k].kind;
    for (let slot = 0; slot < this.slots; slot++)
      if (kindAt(slot) === 'counter') out[slot] = Math.max(0, current[slot] - previous[slot]) / seconds;
    return out;
  }

  /** ServerStats from one batch and the rates of the last interval (from rates(); null: all 0). */
  decode(values: Float64Array, rates: Float64Array | null, extra: { uptimeSeconds: number; publishOverflows: number; authorizeErrors: number; authorizeTimeouts: number }): ServerStats {
    const k = this.workgroupCounters.length;
    const total: Counters = {};
    const totalRates: Counters = {};
    for (const c of this.workgroupCounters) {
      total[c.name] = 0;
      if (c.kind === 'counter') totalRates[rateName(c.name)] = 0;
    }
    const workgroups: WorkgroupStats[] = [];
    for (let w = 0; w < this.workgroups; w++) {
      const counters: Counters = {};
      const wgRates: Counters = {};
      this.workgroupCounters.forEach((c, i) => {
        const slot = w * k + i;
        counters[c.name] = values[slot];
        total[c.name] += values[slot];
        if (c.kind === 'counter') {
          const r = rates ? rates[slot] : 0;
          wgRates[rateName(c.name)] = r;
          totalRates[rateName(c.name)] += r;
        }
      });
      workgroups.push({ workgroup: w, counters, rates: wgRates });
    }
    this.serverCounters.forEach((c, i) => {
      const slot = this.workgroups * k + i;
      total[c.name] = values[slot];
      if (c.kind === 'counter') totalRates[rateName(c.name)] = rates ? rates[slot] : 0;
    });
    return { ...extra, total, rates: totalRates, workgroups };
  }
}
