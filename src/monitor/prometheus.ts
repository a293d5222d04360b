// /metrics: the indicators in the Prometheus text exposition format, through prom-client. The metrics live
// in a registry of their own (never prom-client's global one, which an application might use) and are
// filled from the latest snapshot when scraped, so a scrape costs no native read.
import { Counter, Gauge, Registry } from 'prom-client';
import { INDICATORS, PROTOCOL_ERROR_CODES, type IndicatorDef, type Snapshot } from './indicators';

type Metric = Counter<string> | Gauge<string>;

export class PrometheusExporter {
  readonly registry = new Registry();
  private readonly metrics = new Map<IndicatorDef, Metric>();
  /** seq of the snapshot the metrics hold; a scrape within the same second reuses them. */
  private filled = -1;

  constructor(version: string) {
    for (const def of INDICATORS) {
      const labelNames = def.scope !== 'workgroup' ? [] : def.name === 'ProtocolErrors' ? ['workgroup', 'code'] : ['workgroup'];
      const config = { name: def.metric, help: def.help, labelNames, registers: [this.registry] };
      this.metrics.set(def, def.type === 'counter' ? new Counter(config) : new Gauge(config));
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
      const scale = def.scale ?? 1;
      // Counters only go up in prom-client (inc); the native counters are already totals, so start from zero.
      const set = (labels: Record<string, string>, value: number) =>
        metric instanceof Counter ? metric.inc(labels, value * scale) : metric.set(labels, value * scale);
      if (metric instanceof Counter) metric.reset();
      if (def.scope === 'process') set({}, s.process[def.name as keyof Snapshot['process']]);
      else if (def.scope === 'server') set({}, s.server[def.name as keyof Snapshot['server']] as number);
      else if (def.name === 'ProtocolErrors') {
        for (const w of s.workgroups) for (const code of PROTOCOL_ERROR_CODES) set({ workgroup: String(w.workgroup), code }, w.ProtocolErrors[code]);
      } else {
        for (const w of s.workgroups) set({ workgroup: String(w.workgroup) }, w[def.name as keyof typeof w] as number);
      }
    }
    this.filled = s.seq;
  }
}
