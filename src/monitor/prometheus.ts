// /metrics: the indicators in the Prometheus text exposition format, through prom-client. The metrics live
// in a registry of their own (never prom-client's global one, which an application might use) and are
// filled from the latest snapshot when scraped, so a scrape costs no native read. Every indicator of the
// table is one metric, named by metricName() (`starling_<name>`, `_total` for counters); nothing here names
// an indicator.
import { Counter, Gauge, Registry } from 'prom-client';
import { DEFAULT_INDICATORS, type IndicatorDef, type IndicatorSet, type Snapshot } from './indicators';

type Metric = Counter<string> | Gauge<string>;

export class PrometheusExporter {
  readonly registry = new Registry();
  private readonly metrics = new Map<IndicatorDef, Metric>();
  /** seq of the snapshot the metrics hold; a scrape within the same second reuses them. */
  private filled = -1;

  constructor(version: string, indicators: IndicatorSet = DEFAULT_INDICATORS) {
    for (const def of indicators.defs) {
      const labelNames = def.scope === 'workgroup' ? ['workgroup'] : [];
      const config = { name: def.metric, help: def.help, labelNames, registers: [this.registry] };
      this.metrics.set(def, def.kind === 'counter' ? new Counter(config) : new Gauge(config));
    }
    const info = new Gauge({
      name: 'starling_info',
      help: 'Always 1; the labels carry the Starling and Node.js versions.',
      labelNames: ['version', 'node'],
      registers: [this.registry],
    });
    info.set({ version, node: process.version }, 1);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text of `snapshot`. */
  async render(snapshot: Snapshot): Promise<string> {
    if (snapshot.seq !== this.filled) this.fill(snapshot);
    return this.registry.metrics();
  }

  private fill(s: Snapshot): void {
    for (const [def, metric] of this.metrics) {
      // Counters only go up in prom-client (inc); the native counters are already totals, so start from zero.
      const set = (labels: Record<string, string>, value: number | undefined) => {
        const v = value ?? 0;
        if (metric instanceof Counter) metric.inc(labels, v);
        else metric.set(labels, v);
      };
      if (metric instanceof Counter) metric.reset();
      if (def.scope === 'process') set({}, s.process[def.name as keyof Snapshot['process']]);
      else if (def.scope === 'server') set({}, s.server[def.name]);
      else for (const w of s.workgroups) set({ workgroup: String(w.workgroup) }, w[def.name]);
    }
    this.filled = s.seq;
  }
}
