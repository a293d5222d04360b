// Latency statistics for the benchmark kit: the log-linear histogram that the native client fills (the bucket
// mapping mirrors native/latency.h exactly), Welford's running mean and variance with the parallel merge, and
// the summary every report prints. Pure computation: no I/O.

/** Values below this many microseconds each have their own bucket (latency.h kLinear). */
export const LINEAR_BUCKETS = 2048;
/** Buckets per power of two above LINEAR_BUCKETS (latency.h kSubBuckets). */
export const SUB_BUCKETS = 1024;
/** Powers of two covered above LINEAR_BUCKETS: [2^11, 2^36) µs (latency.h kOctaves). */
export const OCTAVES = 25;
/** Number of histogram buckets: 2048 + 25 * 1024 = 27,648 (latency.h kLatencyBuckets). */
export const LATENCY_BUCKETS = LINEAR_BUCKETS + OCTAVES * SUB_BUCKETS;
/** The exclusive upper bound of the histogram's range, 2^36 µs; larger values land in the last bucket. */
export const LATENCY_RANGE_END = 2 ** 36;

const TWO_32 = 2 ** 32;

/** floor(log2(v)) for an integer 1 <= v < 2^53, exact (no floating-point log). */
function log2Floor(v: number): number {
  if (v < TWO_32) return 31 - Math.clz32(v);
  return 63 - Math.clz32(Math.floor(v / TWO_32));
}

/**
 * The bucket of a latency of `us` microseconds, as latency_bucket() in latency.h: values are truncated to whole
 * microseconds (negative and NaN values count as 0); values >= 2^36 µs land in the last bucket.
 */
export function bucketOf(us: number): number {
  const v = us > 0 ? Math.floor(us) : 0;
  if (v < LINEAR_BUCKETS) return v;
  const e = log2Floor(Math.min(v, Number.MAX_SAFE_INTEGER));
  const octave = e - 11;
  if (octave >= OCTAVES) return LATENCY_BUCKETS - 1;
  const sub = Math.floor(v / 2 ** (e - 10)) - SUB_BUCKETS; // top 11 bits, minus the leading one
  return LINEAR_BUCKETS + octave * SUB_BUCKETS + sub;
}

/** The smallest value (µs) of bucket `b`, as latency_bucket_low() in latency.h. */
export function bucketLow(b: number): number {
  if (b < LINEAR_BUCKETS) return b;
  const octave = Math.floor((b - LINEAR_BUCKETS) / SUB_BUCKETS);
  const sub = (b - LINEAR_BUCKETS) % SUB_BUCKETS;
  return (SUB_BUCKETS + sub) * 2 ** (octave + 1);
}

/** The exclusive upper bound (µs) of bucket `b`: bucketLow(b + 1), and 2^36 for the last bucket. */
export function bucketHigh(b: number): number {
  return b >= LATENCY_BUCKETS - 1 ? LATENCY_RANGE_END : bucketLow(b + 1);
}

/** A histogram in its sparse JSON form (Histogram.toJSON). min/max are the exact extremes when known. */
export interface HistogramJSON {
  buckets: Array<[number, number]>;
  min?: number;
  max?: number;
}

/**
 * A log-linear latency histogram (µs) with the bucket layout of native/latency.h: every value is kept to
 * within 1/1024 of itself (0.1%).
 *
 * Exact extremes: record() tracks the exact min and max. Raw counts merged with addCounts() only know their
 * buckets, unless the caller passes the exact extremes (from the native Welford accumulator); once any
 * contribution's extremes are unknown, `min`/`max` fall back to the bucket bounds.
 */
export class Histogram {
  /** Count per bucket (Float64Array: exact integers up to 2^53). */
  readonly counts = new Float64Array(LATENCY_BUCKETS);
  private total = 0;
  private exactMin: number | undefined = undefined;
  private exactMax: number | undefined = undefined;
  private extremesKnown = true;

  /** Records `count` occurrences of a latency of `us` microseconds. */
  record(us: number, count = 1): void {
    if (!(count > 0)) return;
    const v = us > 0 ? Math.floor(us) : 0;
    this.counts[bucketOf(v)] += count;
    this.total += count;
    this.exactMin = this.exactMin === undefined ? v : Math.min(this.exactMin, v);
    this.exactMax = this.exactMax === undefined ? v : Math.max(this.exactMax, v);
  }

  /**
   * Adds a raw bucket array (as read from the native client: `counts[b]` values in bucket b; an array shorter
   * than LATENCY_BUCKETS covers the first buckets). `extremes`, when given, are the exact min/max of the values
   * those counts hold; without them the histogram's extremes become bucket-resolution.
   */
  addCounts(counts: ArrayLike<number>, extremes?: { min: number; max: number }): void {
    if (counts.length > LATENCY_BUCKETS) throw new RangeError(`${counts.length} buckets > ${LATENCY_BUCKETS}`);
    let added = 0;
    for (let b = 0; b < counts.length; b++) {
      const c = counts[b];
      if (c > 0) {
        this.counts[b] += c;
        added += c;
      }
    }
    if (added === 0) return;
    this.total += added;
    this.mergeExtremes(extremes);
  }

  /** Adds every count of `other` (another thread's or process's histogram) to this one. */
  merge(other: Histogram): void {
    if (other.total === 0) return;
    for (let b = 0; b < LATENCY_BUCKETS; b++) this.counts[b] += other.counts[b];
    this.total += other.total;
    this.mergeExtremes(
      other.extremesKnown && other.exactMin !== undefined && other.exactMax !== undefined
        ? { min: other.exactMin, max: other.exactMax }
        : undefined,
    );
  }

  private mergeExtremes(extremes: { min: number; max: number } | undefined): void {
    if (!extremes) {
      this.extremesKnown = false;
      return;
    }
    this.exactMin = this.exactMin === undefined ? extremes.min : Math.min(this.exactMin, extremes.min);
    this.exactMax = this.exactMax === undefined ? extremes.max : Math.max(this.exactMax, extremes.max);
  }

  /** Number of values recorded. */
  get count(): number {
    return this.total;
  }

  /** Smallest value recorded: exact when known, else the low bound of the lowest non-empty bucket; NaN if empty. */
  get min(): number {
    if (this.total === 0) return NaN;
    if (this.extremesKnown && this.exactMin !== undefined) return this.exactMin;
    for (let b = 0; b < LATENCY_BUCKETS; b++) if (this.counts[b] > 0) return bucketLow(b);
    return NaN;
  }

  /**
   * Largest value recorded: exact when known, else the highest equivalent value (bucketHigh - 1) of the highest
   * non-empty bucket; NaN if empty.
   */
  get max(): number {
    if (this.total === 0) return NaN;
    if (this.extremesKnown && this.exactMax !== undefined) return this.exactMax;
    for (let b = LATENCY_BUCKETS - 1; b >= 0; b--) if (this.counts[b] > 0) return bucketHigh(b) - 1;
    return NaN;
  }

  /**
   * The value at or below which `p`% of the recorded values fall (HDR convention, nearest rank):
   * rank = max(1, ceil(p/100 × count)); b = the first bucket where the cumulative count reaches rank; the
   * result is b's highest equivalent value, bucketHigh(b) − 1, clamped to [min, max] (so p100 is the max, and
   * exact where a bucket holds one value, i.e. below 2048 µs). p = 0 returns the min. NaN if empty.
   */
  percentile(p: number): number {
    if (this.total === 0) return NaN;
    if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is not in [0, 100]`);
    if (p === 0) return this.min;
    // Nearest rank; p/100 × n within 1e-12 of an integer is taken as that integer, so that rounding in the
    // product (0.999 × 100,000 = 99,900.00000000001) does not move the rank up by one.
    const x = (p / 100) * this.total;
    const r = Math.round(x);
    const rank = Math.max(1, Math.abs(x - r) <= 1e-12 * x ? r : Math.ceil(x));
    let seen = 0;
    for (let b = 0; b < LATENCY_BUCKETS; b++) {
      seen += this.counts[b];
      if (seen >= rank) return Math.min(Math.max(bucketHigh(b) - 1, this.min), this.max);
    }
    return this.max;
  }

  /** Sparse form: non-empty buckets as [bucket, count] in bucket order, plus exact min/max when known. */
  toJSON(): HistogramJSON {
    const buckets: Array<[number, number]> = [];
    for (let b = 0; b < LATENCY_BUCKETS; b++) if (this.counts[b] > 0) buckets.push([b, this.counts[b]]);
    const json: HistogramJSON = { buckets };
    if (this.total > 0 && this.extremesKnown && this.exactMin !== undefined && this.exactMax !== undefined) {
      json.min = this.exactMin;
      json.max = this.exactMax;
    }
    return json;
  }

  /** Rebuilds a histogram from toJSON()'s form. */
  static fromJSON(json: HistogramJSON): Histogram {
    const h = new Histogram();
    let added = 0;
    for (const [b, c] of json.buckets) {
      if (!Number.isInteger(b) || b < 0 || b >= LATENCY_BUCKETS) throw new RangeError(`bad bucket ${b}`);
      if (!(c > 0)) continue;
      h.counts[b] += c;
      added += c;
    }
    h.total = added;
    if (added > 0) h.mergeExtremes(json.min !== undefined && json.max !== undefined ? { min: json.min, max: json.max } : undefined);
    return h;
  }
}

// Student's t quantiles for two-sided 90% (t_0.95) and 95% (t_0.975) intervals, df = 1..30.
const T90 = [
  6.3138, 2.92, 2.3534, 2.1318, 2.015, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823, 1.7709, 1.7613,
  1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109, 1.7081, 1.7056, 1.7033, 1.7011,
  1.6991, 1.6973,
];
const T95 = [
  12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.306, 2.2622, 2.2281, 2.201, 2.1788, 2.1604, 2.1448,
  2.1314, 2.1199, 2.1098, 2.1009, 2.093, 2.086, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484,
  2.0452, 2.0423,
];
const Z90 = 1.6448536269514722;
const Z95 = 1.959963984540054;

/**
 * Student's t quantile for a two-sided `level` interval with `df` degrees of freedom: tabled (4 decimals) for
 * df <= 30; beyond, the Cornish-Fisher expansion around the normal quantile (error < 1e-5 for df > 30, tending
 * to 1.645 / 1.960).
 */
export function tQuantile(level: 0.9 | 0.95, df: number): number {
  if (!(df >= 1)) throw new RangeError(`df ${df} < 1`);
  const d = Math.floor(df);
  if (d <= 30) return (level === 0.9 ? T90 : T95)[d - 1];
  const z = level === 0.9 ? Z90 : Z95;
  const z3 = z ** 3, z5 = z ** 5, z7 = z ** 7;
  return (
    z +
    (z3 + z) / (4 * d) +
    (5 * z5 + 16 * z3 + 3 * z) / (96 * d ** 2) +
    (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * d ** 3)
  );
}

/** Welford.toJSON's form: the same fields as native/latency.h's Welford (min/max null when n = 0). */
export interface WelfordJSON {
  n: number;
  mean: number;
  m2: number;
  min: number | null;
  max: number | null;
}

/** Welford's running mean and variance (numerically stable), mergeable across threads and processes. */
export class Welford {
  private count = 0;
  private mu = 0;
  private m2 = 0;
  private lo = Infinity;
  private hi = -Infinity;

  /** Adds one observation. */
  add(x: number): void {
    this.count += 1;
    const d = x - this.mu;
    this.mu += d / this.count;
    this.m2 += d * (x - this.mu);
    if (x < this.lo) this.lo = x;
    if (x > this.hi) this.hi = x;
  }

  /** An accumulator from its parts (e.g. the fields of the native Welford: n, mean, m2 = Σ(x − mean)², min, max). */
  static fromParts(n: number, mean: number, m2: number, min: number, max: number): Welford {
    const w = new Welford();
    if (n > 0) {
      w.count = n;
      w.mu = mean;
      w.m2 = m2;
      w.lo = min;
      w.hi = max;
    }
    return w;
  }

  /** Combines `other` into this (Chan, Golub & LeVeque's parallel formula): as if all its values were added here. */
  merge(other: Welford): void {
    if (other.count === 0) return;
    if (this.count === 0) {
      this.count = other.count;
      this.mu = other.mu;
      this.m2 = other.m2;
      this.lo = other.lo;
      this.hi = other.hi;
      return;
    }
    const n = this.count + other.count;
    const delta = other.mu - this.mu;
    this.mu += (delta * other.count) / n;
    this.m2 += other.m2 + (delta * delta * this.count * other.count) / n;
    this.count = n;
    this.lo = Math.min(this.lo, other.lo);
    this.hi = Math.max(this.hi, other.hi);
  }

  /** Number of observations. */
  get n(): number {
    return this.count;
  }
  /** Mean; NaN when empty. */
  get mean(): number {
    return this.count > 0 ? this.mu : NaN;
  }
  /** Sample variance (divides by n − 1); NaN when n < 2. */
  get variance(): number {
    return this.count > 1 ? this.m2 / (this.count - 1) : NaN;
  }
  /** Sample standard deviation; NaN when n < 2. */
  get stddev(): number {
    return Math.sqrt(this.variance);
  }
  /** Smallest observation; NaN when empty. */
  get min(): number {
    return this.count > 0 ? this.lo : NaN;
  }
  /** Largest observation; NaN when empty. */
  get max(): number {
    return this.count > 0 ? this.hi : NaN;
  }

  /**
   * Two-sided confidence interval of the mean: mean ± t(level, n − 1) × stddev / √n (Student's t; see
   * tQuantile). [NaN, NaN] when n < 2. Assumes independent observations, which consecutive latencies are not
   * (they come in bursts): read it as a lower bound on the uncertainty.
   */
  confidenceInterval(level: 0.9 | 0.95): [number, number] {
    if (this.count < 2) return [NaN, NaN];
    const half = (tQuantile(level, this.count - 1) * this.stddev) / Math.sqrt(this.count);
    return [this.mu - half, this.mu + half];
  }

  /** Plain form for JSON. */
  toJSON(): WelfordJSON {
    return {
      n: this.count,
      mean: this.count > 0 ? this.mu : 0,
      m2: this.m2,
      min: this.count > 0 ? this.lo : null,
      max: this.count > 0 ? this.hi : null,
    };
  }

  /** Rebuilds from toJSON()'s form. */
  static fromJSON(json: WelfordJSON): Welford {
    return Welford.fromParts(json.n, json.mean, json.m2, json.min ?? Infinity, json.max ?? -Infinity);
  }
}

/**
 * A latency summary, all values in µs. Percentiles are whole µs (see Histogram.percentile); mean, stddev and
 * the intervals are rounded to 0.01 µs. Fields that are undefined for the data (empty run; stddev and
 * intervals with fewer than two values) are null.
 */
export interface Summary {
  count: number;
  min: number | null;
  max: number | null;
  mean: number | null;
  stddev: number | null;
  ci90: [number, number] | null;
  ci95: [number, number] | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  p999: number | null;
}

const round2 = (x: number): number => Math.round(x * 100) / 100;
const orNull = (x: number): number | null => (Number.isFinite(x) ? x : null);

/**
 * Summarizes a run: the count and percentiles come from the histogram; mean, stddev, the confidence
 * intervals and the exact min/max come from the Welford accumulator (which saw the same values), and
 * percentiles are clamped to its [min, max]. With an empty Welford, min/max come from the histogram.
 */
export function summarize(h: Histogram, w: Welford): Summary {
  const haveW = w.n > 0;
  const lo = haveW ? w.min : h.min;
  const hi = haveW ? w.max : h.max;
  const pct = (p: number): number | null => {
    const v = h.percentile(p);
    return Number.isFinite(v) ? Math.min(Math.max(v, Math.floor(lo)), Math.ceil(hi)) : null;
  };
  const ci = (level: 0.9 | 0.95): [number, number] | null => {
    const [a, b] = w.confidenceInterval(level);
    return Number.isFinite(a) && Number.isFinite(b) ? [round2(a), round2(b)] : null;
  };
  return {
    count: h.count,
    min: orNull(lo),
    max: orNull(hi),
    mean: haveW ? round2(w.mean) : null,
    stddev: orNull(round2(w.stddev)),
    ci90: ci(0.9),
    ci95: ci(0.95),
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    p999: pct(99.9),
  };
}
