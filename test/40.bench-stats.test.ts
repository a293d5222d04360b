// Benchmark statistics (bench/stats.ts) and reporting (bench/report.ts): bucket mapping against latency.h,
// percentiles, Welford and its merge, confidence intervals, histogram JSON, and the Markdown / SVG report.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  Histogram,
  LATENCY_BUCKETS,
  Welford,
  bucketHigh,
  bucketLow,
  bucketOf,
  summarize,
  tQuantile,
} from '../bench/stats';
import {
  TIMELINE_COLUMNS,
  formatTimelineCsv,
  parseTimelineCsv,
  renderMarkdown,
  renderSvg,
  writeReport,
  type RunSummary,
  type TimelineRow,
} from '../bench/report';

const ROOT = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-bench-stats-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Asserts |actual − expected| <= tol. */
function close(actual: number, expected: number, tol: number, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what} ${actual} is not within ${tol} of ${expected}`);
}

/**
 * A small XML well-formedness check (enough for the SVG we generate): tags nest and close, attributes are
 * quoted, text holds no raw '<' and only known entities. Returns the element names in document order.
 */
function checkXml(text: string): string[] {
  const names: string[] = [];
  const stack: string[] = [];
  const s = text.replace(/^<\?xml[^?]*\?>\s*/, '');
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  const checkText = (t: string): void => {
    assert.ok(!/&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.test(t), `bad entity in ${JSON.stringify(t)}`);
  };
  while (i < s.length) {
    const lt = s.indexOf('<', i);
    if (lt < 0) {
      assert.equal(s.slice(i).trim(), '', 'text after the root element');
      break;
    }
    checkText(s.slice(i, lt));
    tag.lastIndex = lt;
    const m = tag.exec(s);
    assert.ok(m, `malformed tag at ${JSON.stringify(s.slice(lt, lt + 60))}`);
    const [, close, name, attrs, self] = m;
    if (close) {
      assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    } else {
      if (names.length > 0) assert.ok(stack.length > 0, 'more than one root element');
      names.push(name);
      checkText(attrs);
      if (!self) stack.push(name);
    }
    i = tag.lastIndex;
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  return names;
}

describe('bucket mapping (native/latency.h)', () => {
  it('matches values computed by hand from latency.h', () => {
    const cases: Array<[number, number, number]> = [
      // [value, bucket, bucket low]
      [0, 0, 0],
      [1, 1, 1],
      [2047, 2047, 2047],
      [2048, 2048, 2048],
      [2049, 2048, 2048],
      [2050, 2049, 2050],
      [4095, 3071, 4094],
      [4096, 3072, 4096],
      [4099, 3072, 4096],
      [4100, 3073, 4100],
      [1_000_000, 11169, 999_936],
    ];
    for (const [v, b, low] of cases) {
      assert.equal(bucketOf(v), b, `bucketOf(${v})`);
      assert.equal(bucketLow(b), low, `bucketLow(${b})`);
    }
    assert.equal(LATENCY_BUCKETS, 27_648);
  });

  it('round-trips every bucket: low and high − 1 map back to it, bounds are contiguous', () => {
    for (let b = 0; b < LATENCY_BUCKETS; b++) {
      const lo = bucketLow(b);
      const hi = bucketHigh(b);
      assert.ok(hi > lo);
      if (bucketOf(lo) !== b || bucketOf(hi - 1) !== b) assert.fail(`bucket ${b}: [${lo}, ${hi})`);
      if (b > 0 && bucketHigh(b - 1) !== lo) assert.fail(`gap before bucket ${b}`);
      if (b >= 2048 && (hi - lo) / lo > 1 / 1024 + 1e-12) assert.fail(`bucket ${b} wider than 0.1%`);
    }
    assert.equal(bucketLow(LATENCY_BUCKETS - 1), 2 ** 36 - 2 ** 25);
    assert.equal(bucketHigh(LATENCY_BUCKETS - 1), 2 ** 36);
  });

  it('truncates fractions, floors negatives and clamps past the range', () => {
    assert.equal(bucketOf(12.9), 12);
    assert.equal(bucketOf(-5), 0);
    assert.equal(bucketOf(NaN), 0);
    assert.equal(bucketOf(2 ** 36 - 1), LATENCY_BUCKETS - 1);
    assert.equal(bucketOf(2 ** 36), LATENCY_BUCKETS - 1);
    assert.equal(bucketOf(2 ** 60), LATENCY_BUCKETS - 1);
    // Octave edges above 2^32, where the exact log2 switches to the high word.
    assert.equal(bucketOf(2 ** 32), 2048 + 21 * 1024);
    assert.equal(bucketOf(2 ** 32 - 1), 2048 + 21 * 1024 - 1);
  });
});

describe('Histogram', () => {
  it('percentiles of 1..100000 are within 0.1%', () => {
    const h = new Histogram();
    for (let v = 1; v <= 100_000; v++) h.record(v);
    assert.equal(h.count, 100_000);
    assert.equal(h.min, 1);
    assert.equal(h.max, 100_000);
    for (const [p, want] of [[50, 50_000], [90, 90_000], [99, 99_000], [99.9, 99_900], [99.99, 99_990]]) {
      const got = h.percentile(p);
      assert.ok(got >= want, `p${p} = ${got} < ${want}`); // highest equivalent value: never below the true one
      close(got, want, want * 0.001, `p${p}`);
    }
    assert.equal(h.percentile(100), 100_000);
    assert.equal(h.percentile(0), 1);
  });

  it('is exact below 2048 µs (nearest rank)', () => {
    const h = new Histogram();
    for (let v = 1; v <= 100; v++) h.record(v);
    assert.equal(h.percentile(50), 50);
    assert.equal(h.percentile(50.5), 51);
    assert.equal(h.percentile(99), 99);
    assert.equal(h.percentile(0.5), 1);
    assert.equal(h.percentile(100), 100);
    assert.throws(() => h.percentile(101), RangeError);
    assert.ok(Number.isNaN(new Histogram().percentile(50)));
  });

  it('reports a bucket\'s highest equivalent value, capped to the exact max', () => {
    const h = new Histogram();
    h.record(1_000_000); // bucket [999936, 1000448)
    h.record(1_000_001, 3);
    assert.equal(h.count, 4);
    assert.equal(h.percentile(50), 1_000_001); // bucket high − 1 = 1000447, capped to the max recorded
    const raw = new Histogram();
    raw.addCounts(h.counts); // no extremes: bucket resolution
    assert.equal(raw.max, 1_000_447);
    assert.equal(raw.min, 999_936);
    assert.equal(raw.percentile(50), 1_000_447);
    const known = new Histogram();
    known.addCounts(h.counts, { min: 1_000_000, max: 1_000_001 });
    assert.equal(known.percentile(99), 1_000_001);
    assert.equal(known.min, 1_000_000);
  });

  it('merges and round-trips through sparse JSON', () => {
    const a = new Histogram();
    const b = new Histogram();
    const all = new Histogram();
    for (let i = 0; i < 5000; i++) {
      const v = Math.floor(((i * 7919) % 10007) ** 1.5);
      (i % 3 === 0 ? a : b).record(v);
      all.record(v);
    }
    const copy = Histogram.fromJSON(JSON.parse(JSON.stringify(a)));
    assert.deepEqual(copy.toJSON(), a.toJSON());
    assert.equal(copy.count, a.count);
    assert.equal(copy.max, a.max);
    assert.equal(copy.percentile(99), a.percentile(99));
    const json = a.toJSON();
    assert.ok(json.buckets.length < 5000 && json.buckets.every(([bk, c]) => bk >= 0 && c > 0));

    copy.merge(b);
    assert.deepEqual(copy.toJSON(), all.toJSON());
    for (const p of [50, 90, 99, 99.9]) assert.equal(copy.percentile(p), all.percentile(p));
    assert.equal(copy.min, all.min);
    assert.equal(copy.max, all.max);

    // A merged histogram whose part had no known extremes falls back to bucket bounds.
    const raw = new Histogram();
    raw.addCounts(b.counts);
    const mixed = Histogram.fromJSON(a.toJSON());
    mixed.merge(raw);
    assert.equal(mixed.count, all.count);
    assert.equal(mixed.toJSON().max, undefined);
    assert.equal(mixed.max, bucketHigh(bucketOf(all.max)) - 1);
  });
});

describe('Welford', () => {
  const data = [2, 4, 4, 4, 5, 5, 7, 9];

  it('computes mean, sample variance, stddev, min and max', () => {
    const w = new Welford();
    for (const x of data) w.add(x);
    assert.equal(w.n, 8);
    close(w.mean, 5, 1e-12);
    close(w.variance, 32 / 7, 1e-12);
    close(w.stddev, Math.sqrt(32 / 7), 1e-12);
    assert.equal(w.min, 2);
    assert.equal(w.max, 9);
    const empty = new Welford();
    assert.ok(Number.isNaN(empty.mean) && Number.isNaN(empty.variance) && Number.isNaN(empty.min));
  });

  it('merges (Chan et al.) to the same result as one accumulator over the union', () => {
    const xs = Array.from({ length: 1000 }, (_, i) => 1000 + ((i * 37) % 101) * 3.5 + (i % 7));
    const one = new Welford();
    for (const x of xs) one.add(x);
    const parts = [new Welford(), new Welford(), new Welford()];
    xs.forEach((x, i) => parts[i < 100 ? 0 : i < 700 ? 1 : 2].add(x));
    const merged = new Welford();
    for (const p of parts) merged.merge(Welford.fromJSON(JSON.parse(JSON.stringify(p))));
    merged.merge(new Welford()); // an empty part changes nothing
    assert.equal(merged.n, one.n);
    close(merged.mean, one.mean, 1e-9);
    close(merged.variance, one.variance, 1e-7);
    assert.equal(merged.min, one.min);
    assert.equal(merged.max, one.max);

    const a = new Welford();
    const b = new Welford();
    data.slice(0, 3).forEach((x) => a.add(x));
    data.slice(3).forEach((x) => b.add(x));
    a.merge(b);
    close(a.variance, 32 / 7, 1e-12);
  });

  it('builds from native parts', () => {
    const w = Welford.fromParts(8, 5, 32, 2, 9);
    close(w.variance, 32 / 7, 1e-12);
    assert.deepEqual(w.toJSON(), { n: 8, mean: 5, m2: 32, min: 2, max: 9 });
    assert.equal(Welford.fromParts(0, 0, 0, Infinity, 0).n, 0);
  });

  it('gives Student-t confidence intervals of the mean', () => {
    const w = new Welford();
    for (const x of data) w.add(x);
    // se = sqrt(32/7)/sqrt(8) = 0.7559289; t(7) = 2.3646 (95%), 1.8946 (90%).
    const [lo95, hi95] = w.confidenceInterval(0.95);
    close(lo95, 3.21253, 1e-4);
    close(hi95, 6.78747, 1e-4);
    const [lo90, hi90] = w.confidenceInterval(0.9);
    close(lo90, 3.56782, 1e-4);
    close(hi90, 6.43218, 1e-4);

    // Large n: normal quantiles.
    const big = Welford.fromParts(1_000_000, 100, 400 * 999_999, 0, 1000); // sd 20, se 0.02
    const [blo, bhi] = big.confidenceInterval(0.95);
    close(bhi - 100, 1.96 * 0.02, 1e-4);
    close(100 - blo, 1.96 * 0.02, 1e-4);

    assert.ok(w.confidenceInterval(0.95)[0] < w.confidenceInterval(0.9)[0]);
    const one = new Welford();
    one.add(3);
    assert.ok(Number.isNaN(one.confidenceInterval(0.95)[0]));
  });

  it('tabulates t and continues smoothly past df 30', () => {
    assert.equal(tQuantile(0.95, 1), 12.7062);
    assert.equal(tQuantile(0.9, 30), 1.6973);
    close(tQuantile(0.9, 31), 1.69552, 1e-4);
    close(tQuantile(0.95, 40), 2.02108, 1e-4);
    close(tQuantile(0.95, 120), 1.97993, 1e-4);
    close(tQuantile(0.9, 1e9), 1.64485, 1e-5);
    close(tQuantile(0.95, 1e9), 1.95996, 1e-5);
    for (let df = 1; df < 200; df++) assert.ok(tQuantile(0.95, df + 1) < tQuantile(0.95, df), `t not decreasing at ${df}`);
  });
});

describe('summarize', () => {
  it('combines histogram percentiles with Welford moments', () => {
    const h = new Histogram();
    const w = new Welford();
    for (let v = 1; v <= 1000; v++) {
      h.record(v * 10);
      w.add(v * 10);
    }
    const s = summarize(h, w);
    assert.equal(s.count, 1000);
    assert.equal(s.min, 10);
    assert.equal(s.max, 10_000);
    assert.equal(s.mean, 5005);
    // Each percentile is its bucket's highest equivalent value: 5000 is in [5000, 5004), 9000 in [9000, 9008),
    // 9900 in [9896, 9904), 9990 in [9984, 9992).
    assert.equal(s.p50, 5003);
    assert.equal(s.p90, 9007);
    assert.equal(s.p99, 9903);
    assert.equal(s.p999, 9991);
    close(s.stddev!, 10 * Math.sqrt((1000 * 1001) / 12), 0.01);
    assert.ok(s.ci95![0] < 5005 && s.ci95![1] > 5005 && s.ci90![0] > s.ci95![0]);
  });

  it('is all nulls for an empty run', () => {
    const s = summarize(new Histogram(), new Welford());
    assert.deepEqual(s, {
      count: 0, min: null, max: null, mean: null, stddev: null, ci90: null, ci95: null,
      p50: null, p90: null, p99: null, p999: null,
    });
  });
});

/** A small synthetic run: 6 intervals of 5 s, one without messages. */
function syntheticRun(): { run: RunSummary; rows: TimelineRow[] } {
  const rows: TimelineRow[] = [5, 10, 15, 20, 25, 30].map((t, i) => ({
    t,
    connections: 15_000,
    messages: i === 3 ? 0 : 100_000 + i * 1000,
    rate: i === 3 ? 0 : 20_000 + i * 200,
    p50: i === 3 ? null : 200 + i * 10,
    p90: i === 3 ? null : 900 + i,
    p99: i === 3 ? null : 7_500 + i * 100,
    p999: i === 3 ? null : 15_000 + i * 1000,
    max: i === 3 ? null : 20_000,
    mean: i === 3 ? null : 310.25,
    rxMbps: 83.2,
    txMbps: 82.9,
  }));
  const h = new Histogram();
  const w = new Welford();
  for (let v = 100; v < 30_000; v += 7) {
    h.record(v);
    w.add(v);
  }
  const run: RunSummary = {
    tool: 'benchsub',
    started: '2025-01-01T12:00:00.000Z',
    ended: '2025-01-01T12:00:30.000Z',
    command: 'node dist/bench/benchsub.js --workload W1 --subject "/p/s|x" --rate 20000',
    machine: { host: 'testbox', cpus: 2, cpuModel: 'Test CPU @ 2.0GHz <virtual>', memGiB: 7.8, kernel: '6.1.0', node: 'v20.20.2' },
    config: { workload: 'W1', subscribers: 15_000, rate: 20_000, payloadBytes: 512, uring: false },
    totals: { messages: 505_000, bytes: 272_700_000, connections: 15_000, seconds: 30, ratePerSecond: 16_833.3 },
    latency: summarize(h, w),
    timelinePath: 'run1.csv',
  };
  return { run, rows };
}

describe('report', () => {
  it('writes and parses the timeline CSV', () => {
    const { rows } = syntheticRun();
    const csv = formatTimelineCsv(rows);
    const lines = csv.trimEnd().split('\n');
    assert.equal(lines[0], 't_seconds,connections,messages,rate_per_second,p50_us,p90_us,p99_us,p999_us,max_us,mean_us,rx_mbps,tx_mbps');
    assert.equal(lines.length, 7);
    assert.equal(lines[1], '5,15000,100000,20000,200,900,7500,15000,20000,310.25,83.2,82.9');
    assert.equal(lines[4], '20,15000,0,0,,,,,,,83.2,82.9');
    assert.deepEqual(parseTimelineCsv(csv), rows);
    assert.equal(TIMELINE_COLUMNS.length, 12);
    // Columns are found by name: order and extra columns do not matter.
    const shuffled = 'extra,tx_mbps,rx_mbps,mean_us,max_us,p999_us,p99_us,p90_us,p50_us,rate_per_second,messages,connections,t_seconds\n' +
      'x,2,1,10,40,30,20,15,12,100,500,3,5\n';
    assert.deepEqual(parseTimelineCsv(shuffled), [
      { t: 5, connections: 3, messages: 500, rate: 100, p50: 12, p90: 15, p99: 20, p999: 30, max: 40, mean: 10, rxMbps: 1, txMbps: 2 },
    ]);
    assert.throws(() => parseTimelineCsv('t_seconds,messages\n1,2\n'), /no column "connections"/);
    assert.throws(() => parseTimelineCsv(csv.replace('20,15000,0,0', '20,,0,0')), /connections is empty/);
  });

  it('renders Markdown with the machine header, summary and timeline', () => {
    const { run, rows } = syntheticRun();
    const md = renderMarkdown(run, rows, 'run1.svg');
    assert.match(md, /^# benchsub run, 2025-01-01T12:00:00.000Z/);
    assert.match(md, /\*\*Machine:\*\* testbox, 2 × Test CPU @ 2\.0GHz <virtual>, 7\.8 GiB, Linux 6\.1\.0, Node v20\.20\.2/);
    assert.ok(md.includes(run.command));
    const header = md.split('\n').find((l) => l.startsWith('| count |'))!;
    for (const col of ['min', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'stddev', 'mean 90% CI', 'mean 95% CI'])
      assert.ok(header.includes(`| ${col} |`), `latency column ${col}`);
    const summaryRow = md.split('\n')[md.split('\n').indexOf(header) + 2];
    assert.ok(summaryRow.includes(`| ${(run.latency.p99! / 1000).toFixed(3)} |`), summaryRow);
    const tl = md.split('\n').find((l) => l.startsWith('| t (s) |'))!;
    for (const col of ['connections', 'messages', 'msg/s', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'rx Mbps', 'tx Mbps'])
      assert.ok(tl.includes(`| ${col} |`), `timeline column ${col}`);
    assert.ok(md.includes('| 5 | 15,000 | 100,000 | 20,000 | 0.200 | 0.900 | 7.500 | 15.000 | 20.000 | 0.310 | 83.2 | 82.9 |'));
    assert.ok(md.includes('| 20 | 15,000 | 0 | 0 | – | – | – | – | – | – | 83.2 | 82.9 |'));
    assert.ok(md.includes('| workload | W1 |') && md.includes('| uring | false |'));
    assert.ok(md.includes('![latency percentiles and message rate over time](run1.svg)'));
    // Every table row has as many cells as its header (escaped pipes do not split cells).
    for (const block of md.split('\n\n')) {
      const trs = block.split('\n').filter((l) => l.startsWith('|'));
      const cells = trs.map((l) => l.replace(/\\\|/g, '').split('|').length);
      assert.ok(cells.every((c) => c === cells[0]), block);
    }
  });

  it('renders a well-formed SVG with a path per series, axes and a legend', () => {
    const { run, rows } = syntheticRun();
    const svg = renderSvg(run, rows);
    const names = checkXml(svg);
    assert.equal(names[0], 'svg');
    assert.ok(svg.includes('xmlns="http://www.w3.org/2000/svg"'));
    for (const id of ['p50', 'p99', 'p999', 'rate']) {
      const m = new RegExp(`<path id="series-${id}" d="([^"]+)"`).exec(svg);
      assert.ok(m, `path for ${id}`);
      const moves = m[1].match(/[ML]/g)!;
      if (id === 'rate') assert.deepEqual(moves, ['M', 'L', 'L', 'L', 'L', 'L']);
      else assert.deepEqual(moves, ['M', 'L', 'L', 'M', 'L'], `${id}: the empty interval breaks the line`);
    }
    for (const label of ['p50', 'p99', 'p99.9', 'msg/s (right axis)', 'time (s)', 'latency (ms, log scale)', 'messages per second'])
      assert.ok(svg.includes(`>${label}</text>`), `label ${label}`);
    // Log axis: decades from 0.1 ms (p50 0.2 ms) to 100 ms (p99.9 20 ms); rate axis up to 25k.
    for (const tick of ['>0.1<', '>1<', '>10<', '>100<', '>25k<', '>30<']) assert.ok(svg.includes(tick), `tick ${tick}`);
    assert.ok(svg.includes('&lt;virtual&gt;'), 'text is escaped');
    assert.ok(!/NaN|undefined|Infinity/.test(svg));
    // The same for an empty timeline.
    const empty = renderSvg(run, []);
    checkXml(empty);
    assert.ok(empty.includes('no timeline data') && !/NaN|Infinity/.test(empty));
  });

  it('writes <base>.md and <base>.svg from the command line', () => {
    const { run, rows } = syntheticRun();
    const dir = path.join(tmp, 'runs');
    fs.mkdirSync(dir);
    const json = path.join(dir, 'run1.json');
    fs.writeFileSync(json, JSON.stringify(run, null, 2));
    fs.writeFileSync(path.join(dir, 'run1.csv'), formatTimelineCsv(rows));
    const out = path.join(tmp, 'out');
    const stdout = execFileSync(process.execPath, [path.join(ROOT, 'dist/bench/report.js'), json, '--out', out], {
      encoding: 'utf8',
    });
    assert.deepEqual(stdout.trim().split('\n'), [path.join(out, 'run1.md'), path.join(out, 'run1.svg')]);
    assert.ok(fs.readFileSync(path.join(out, 'run1.md'), 'utf8').includes('| t (s) |'));
    checkXml(fs.readFileSync(path.join(out, 'run1.svg'), 'utf8'));

    // Default output folder: the JSON's; a missing timeline still gives a report.
    fs.rmSync(path.join(dir, 'run1.csv'));
    const written = writeReport(json);
    assert.equal(written.md, path.join(dir, 'run1.md'));
    assert.ok(fs.readFileSync(written.md, 'utf8').includes('No timeline rows.'));

    fs.writeFileSync(path.join(dir, 'bad.json'), '{"tool":"other"}');
    assert.throws(
      () => execFileSync(process.execPath, [path.join(ROOT, 'dist/bench/report.js'), path.join(dir, 'bad.json')], { stdio: 'pipe' }),
      /not a benchsub run summary/,
    );
  });
});
