// The control plane of one Starling server: validates configuration, starts the native workgroups,
// samples their counters once a second (and hands each sample to the monitor), publishes on behalf of the
// application, and shuts down cleanly. Published messages from clients never pass through here (DESIGN.md,
// the one rule).
import { type Config, type Loaded, resolveConfig } from './config/config';
import { Logger } from './log';
import { Monitor } from './monitor/monitor';
import { addon, type NativeServer, Published } from './native';

/** Counters of one workgroup (native relaxed atomics, read in one batch). */
export interface WorkgroupCounters {
  connections: number;
  accepted: number;
  closed: number;
  handshakes: number;
  httpErrors: number;
  subscriptions: number;
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
  slowConsumerCloses: number;
  close1002: number;
  close1007: number;
  close1009: number;
  errBadCommand: number;
  errBadSubject: number;
  errTooLarge: number;
  errLimit: number;
  errForbidden: number;
  ringOverflows: number;
}

export interface Rates {
  connectionsPerSecond: number;
  disconnectionsPerSecond: number;
  messagesInPerSecond: number;
  messagesOutPerSecond: number;
  bytesInPerSecond: number;
  bytesOutPerSecond: number;
}

export interface ServerStats {
  uptimeSeconds: number;
  /** Subjects with at least one subscriber. */
  subjects: number;
  /** Connections refused because the fd table or a workgroup inbox was full. */
  acceptRefused: number;
  /** Application publishes dropped because the home workgroup's control ring was full. */
  publishOverflows: number;
  total: WorkgroupCounters;
  workgroups: (WorkgroupCounters & { workgroup: number; rates: Rates })[];
  /** Per-second rates over the last sampling interval (one second). */
  rates: Rates;
}

/** How often counters are sampled for rates: MigratoryData's and Prometheus' natural resolution. */
const SAMPLE_INTERVAL_MS = 1000;

// PROTOCOL.md subject rule, checked before anything crosses into native code.
const SUBJECT_RE = /^(\/[\x21-\x29\x2b-\x2e\x30-\x7e]+)+$/;
const MAX_SUBJECT_BYTES = 255;

const camel = (name: string): string => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

export class Server {
  readonly config: Config;
  /** Where each configuration value came from. */
  readonly sources: Loaded['sources'];
  readonly log: Logger;
  /** The monitor (HTTP endpoints, stats log, PUSH stats), or null when `Monitor` is empty. */
  readonly monitor: Monitor | null;
  private readonly native: NativeServer;
  private readonly counters: Float64Array;
  private readonly names = addon.workgroupCounters.map(camel);
  private readonly started = Date.now();
  private previous: { at: number; values: Float64Array } | null = null;
  private lastRates: Rates[] = [];
  private publishOverflows = 0;
  private sampler: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;

  constructor(loaded: Loaded, log = new Logger(loaded.config.LogLevel)) {
    this.config = loaded.config;
    this.sources = loaded.sources;
    this.log = log;
    const c = this.config;
    this.native = new addon.NativeServer({
      listen: c.Listen.map((a) => ({ host: a.host, port: a.port })),
      path: c.Path,
      workgroups: c.Workgroups,
      cpus: c.WorkgroupCpus,
      benchmarkMode: c.BenchmarkMode,
      sendBuffer: c['BufferLimit.Send'],
      receiveBuffer: c['BufferLimit.Receive'],
      maxMessageSize: c.MaxMessageSize,
      maxSubscriptions: c.MaxSubscriptionsPerConnection,
      maxBacklog: c.MaxBacklog,
      maxBacklogTime: c.MaxBacklogTime,
      memory: c.Memory,
      keepAlive: c.KeepAlive,
      maxConnections: c.MaxConnections,
    });
    this.counters = new Float64Array(this.native.counterSlots());
    this.native.start();
    // The first sample is the baseline, so that the first tick already has rates.
    this.native.readCounters(this.counters);
    this.previous = { at: Date.now(), values: Float64Array.from(this.counters) };
    this.sampler = setInterval(() => this.sample(), SAMPLE_INTERVAL_MS);
    this.sampler.unref();
    try {
      this.monitor = c.Monitor.length > 0 ? new Monitor(this, this.build(this.previous.values)) : null;
    } catch (e) {
      clearInterval(this.sampler);
      void this.native.stop();
      throw e;
    }
  }

  /** The listen addresses with their bound ports (port 0 in the config is resolved here). */
  get addresses(): { host: string; port: number }[] {
    const ports = this.native.ports();
    return this.config.Listen.map((a, i) => ({ host: a.host, port: ports[i] }));
  }

  /** ws:// URL of the first listen address (a wildcard host becomes 127.0.0.1). */
  get url(): string {
    const a = this.addresses[0];
    const host = a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '[::1]' : a.host.includes(':') ? `[${a.host}]` : a.host;
    return `ws://${host}:${a.port}${this.config.Path}`;
  }

  /**
   * Publishes a message to every subscriber of `subject`, exactly as a client's PUB would: a string is
   * sent as a text frame, bytes as a binary frame. Crosses into native code once, whatever the number of
   * subscribers. Returns false when nobody subscribes to the subject.
   */
  publish(subject: string, payload: string | Uint8Array): boolean {
    if (typeof subject !== 'string' || !SUBJECT_RE.test(subject) || Buffer.byteLength(subject) > MAX_SUBJECT_BYTES)
      throw new TypeError(`publish: invalid subject ${JSON.stringify(subject)} (expected /segment[/segment…], printable ASCII without space or '*', at most 255 bytes)`);
    const binary = typeof payload !== 'string';
    if (binary && !(payload instanceof Uint8Array)) throw new TypeError('publish: payload must be a string, Buffer or Uint8Array');
    const bytes = binary ? Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) : Buffer.from(payload, 'utf8');
    if (bytes.length > this.config.MaxMessageSize)
      throw new RangeError(`publish: payload of ${bytes.length} bytes is over MaxMessageSize (${this.config.MaxMessageSize})`);
    if (this.closing) throw new Error('publish: the server is closed');
    const r = this.native.publish(subject, bytes, binary);
    if (r === Published.Overflow) {
      this.publishOverflows++;
      throw new Error(`publish: the home workgroup of ${subject} is overloaded; message dropped`);
    }
    return r === Published.Routed;
  }

  /** Current counters (one batched native read) and the rates of the last second. */
  stats(): ServerStats {
    this.native.readCounters(this.counters);
    return this.build(this.counters);
  }

  /**
   * Stops accepting, closes every connection with 1001 (Going Away), waits for the close handshakes
   * (at most a second) and stops the native threads and the monitor. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) {
      if (this.sampler) clearInterval(this.sampler);
      this.closing = Promise.all([this.native.stop(), this.monitor?.close()]).then(() => undefined);
    }
    return this.closing;
  }

  /** ServerStats from one batch of counter values (as readCounters wrote them) and the last rates. */
  private build(values: Float64Array): ServerStats {
    const k = this.names.length;
    const n = this.config.Workgroups;
    const workgroups = [];
    const total = {} as Record<string, number>;
    for (const name of this.names) total[name] = 0;
    for (let w = 0; w < n; w++) {
      const wg = { workgroup: w } as Record<string, number>;
      this.names.forEach((name, i) => {
        wg[name] = values[w * k + i];
        total[name] += wg[name];
      });
      workgroups.push({ ...(wg as unknown as WorkgroupCounters), workgroup: w, rates: this.lastRates[w] ?? zeroRates() });
    }
    const server = values.subarray(n * k);
    const names = addon.serverCounters;
    return {
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      subjects: server[names.indexOf('subjects')],
      acceptRefused: server[names.indexOf('accept_refused')],
      publishOverflows: this.publishOverflows,
      total: total as unknown as WorkgroupCounters,
      workgroups,
      rates: sumRates(this.lastRates),
    };
  }

  /** Once a second: one batched native read, the rates since the previous sample, then the monitor. */
  private sample(): void {
    const now = Date.now();
    this.native.readCounters(this.counters);
    const values = Float64Array.from(this.counters);
    let dt = 0;
    if (this.previous) {
      dt = (now - this.previous.at) / 1000;
      const k = this.names.length;
      const idx = (name: string) => this.names.indexOf(name);
      const rate = (w: number, name: string) => (values[w * k + idx(name)] - this.previous!.values[w * k + idx(name)]) / dt;
      this.lastRates = [];
      for (let w = 0; w < this.config.Workgroups; w++) {
        this.lastRates.push({
          connectionsPerSecond: rate(w, 'accepted'),
          disconnectionsPerSecond: rate(w, 'closed'),
          messagesInPerSecond: rate(w, 'messagesIn'),
          messagesOutPerSecond: rate(w, 'messagesOut'),
          bytesInPerSecond: rate(w, 'bytesIn'),
          bytesOutPerSecond: rate(w, 'bytesOut'),
        });
      }
    }
    this.previous = { at: now, values };
    this.monitor?.sampled(this.build(values), now, dt);
  }
}

function zeroRates(): Rates {
  return {
    connectionsPerSecond: 0,
    disconnectionsPerSecond: 0,
    messagesInPerSecond: 0,
    messagesOutPerSecond: 0,
    bytesInPerSecond: 0,
    bytesOutPerSecond: 0,
  };
}

function sumRates(list: Rates[]): Rates {
  const sum = zeroRates();
  for (const r of list) for (const key of Object.keys(sum) as (keyof Rates)[]) sum[key] += r[key];
  return sum;
}

/**
 * Creates and starts a server. `config` takes the config-file keys (`{ Listen: '127.0.0.1:0', Workgroups: 2 }`)
 * as strings or typed values, or an already loaded configuration; missing keys take their defaults.
 * Throws ConfigError for bad configuration and Error when a listen address cannot be bound.
 */
export function createServer(config: Record<string, unknown> | Loaded = {}, log?: Logger): Server {
  const loaded = isLoaded(config) ? config : resolveConfig(config);
  return new Server(loaded, log);
}

function isLoaded(x: Record<string, unknown> | Loaded): x is Loaded {
  return typeof x === 'object' && x !== null && 'config' in x && 'sources' in x;
}
