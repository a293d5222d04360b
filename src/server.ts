// The control plane of one Starling server: validates configuration, starts the native workgroups,
// samples their counters once a second (and hands each sample to the monitor), publishes on behalf of the
// application, and shuts down cleanly. Published messages from clients never pass through here (DESIGN.md,
// the one rule).
import { type Config, ConfigError, configWarnings, type Loaded, resolveConfig } from './config/config';
import { Logger } from './log';
import { Monitor } from './monitor/monitor';
import { addon, type ClusterStatus, Entitlement, type IoInfo, type NativeServer, Published } from './native';
import { type AuthorizeHook, Authorizer, type AuthorizerOptions, DEFAULT_AUTHORIZE_TIMEOUT_MS } from './entitlement/authorizer';
import { jwtOptionsFromConfig } from './entitlement/config';
import { createJwtVerifier } from './entitlement/jwt';
import { CACHE_SHARE_OF_MEMORY, clusterNodeName, memoryCeiling, RUNTIME_RESERVE_BYTES } from './config/schema';
import { CounterLayout, type ServerStats } from './stats';

/** IoBackend as the addon's IoChoice (native/runtime/server.h). */
const IO_CHOICE = { auto: 0, epoll: 1, io_uring: 2 } as const;

export type { Counters, ServerStats, WorkgroupStats } from './stats';
export type { ClusterStatus } from './native';
export type { AuthorizeClient, AuthorizeHook, Grant } from './entitlement/authorizer';

/** What a program gives createServer besides configuration keys. */
export interface ServerHooks {
  /** Entitlement = Custom: decides each token (see AuthorizeHook). Required with Custom, refused otherwise. */
  authorize?: AuthorizeHook;
  /** Milliseconds the authorize hook has to answer before the token is refused. Default 5000. */
  authorizeTimeout?: number;
}

/** How often counters are sampled for rates: MigratoryData's and Prometheus' natural resolution. */
const SAMPLE_INTERVAL_MS = 1000;

// PROTOCOL.md subject rule, checked before anything crosses into native code.

export class Server {
  readonly config: Config;
  /** Where each configuration value came from. */
  readonly sources: Loaded['sources'];
  readonly log: Logger;
  /** The monitor (HTTP endpoints, stats log, PUSH stats), or null when `Monitor` is empty. */
  readonly monitor: Monitor | null;
  private readonly native: NativeServer;
  private readonly layout: CounterLayout;
  private readonly counters: Float64Array;
  private readonly started = Date.now();
  private previous: { at: number; values: Float64Array } | null = null;
  /** Per-slot rates of the last sampling interval (null before the first one). */
  private lastRates: Float64Array | null = null;
  private publishOverflows = 0;
  private readonly authorizer: Authorizer | null;
  private sampler: NodeJS.Timeout | null = null;
  /** The cluster link's state and detail last logged (logClusterChange). */
  private clusterSeen = '';
  private clusterError = '';
  private closing: Promise<void> | null = null;

  constructor(loaded: Loaded, log = new Logger(loaded.config.LogLevel), hooks: ServerHooks = {}) {
    this.config = loaded.config;
    this.sources = loaded.sources;
    this.log = log;
    const c = this.config;
    const decisions = authorizerOptions(c, hooks);
    for (const warning of configWarnings(loaded)) log.warn(warning);
    const ceiling = memoryCeiling();
    if (c.Memory + RUNTIME_RESERVE_BYTES > ceiling.bytes)
      log.warn(
        `Memory = ${Math.round(c.Memory / 2 ** 20)}M leaves less than ${RUNTIME_RESERVE_BYTES / 2 ** 20}M of ${ceiling.source} ` +
          `(${Math.round(ceiling.bytes / 2 ** 20)}M) for the runtime: allocations outside the budget may then fail. Lower Memory.`,
      );
    this.native = new addon.NativeServer({
      listen: c.Listen.map((a) => ({ host: a.host, port: a.port })),
      path: c.Path,
      allowOrigins: c['HTTP.AllowOrigins'],
      sseRetry: c['HTTP.SseRetry'],
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
      // The default CacheSize follows the Memory in effect (an explicit one is checked against it at load).
      cacheSize: this.sources.CacheSize.kind === 'default' ? Math.floor(c.Memory / CACHE_SHARE_OF_MEMORY) : c.CacheSize,
      maxCachedMessagesPerSubject: c.MaxCachedMessagesPerSubject,
      cacheExpireTime: c.CacheExpireTime,
      entitlement: c.Entitlement === 'None' ? Entitlement.None : c.Entitlement === 'Basic' ? Entitlement.Basic : Entitlement.Token,
      renewBefore: c['Entitlement.RenewBefore'],
      publishAllow: c.PublishAllowFromAddressList,
      ioBackend: IO_CHOICE[c.IoBackend],
      cluster:
        c.ClusterEngine === 'redis'
          ? { redis: c.ClusterRedis.map((a) => ({ ...a })), guaranteed: c.ClusterDeliveryMode === 'Guaranteed', node: clusterNodeName(c) }
          : { redis: [], guaranteed: false, node: '' },
    });
    const native = this.native;
    const io = native.io();
    if (io.note) log.warn(`IoBackend = auto: ${io.note}; running epoll`);
    this.authorizer = decisions
      ? new Authorizer(decisions, { compile: (sub, pub, all) => addon.compilePermissions(sub, pub, all), decide: (flat) => native.decide(flat) }, log)
      : null;
    if (this.authorizer) {
      const authorizer = this.authorizer;
      native.onAuthRequests(() => {
        const flat = native.takeAuthRequests();
        const requests = [];
        for (let i = 0; i + 4 <= flat.length; i += 4)
          requests.push({ wg: flat[i] as number, id: flat[i + 1] as number, token: flat[i + 2] as string, address: flat[i + 3] as string });
        authorizer.handle(requests);
      });
    }
    if (c.Entitlement === 'None' && c.Listen.some((a) => !isLoopback(a.host)))
      log.warn(
        `Entitlement = None: anyone who reaches ${c.Listen.filter((a) => !isLoopback(a.host)).map((a) => `${a.host}:${a.port}`).join(', ')} ` +
          'may subscribe to and publish on every subject. Set Entitlement (Basic, JWT or Custom; see docs/security.md), ' +
          'or listen on loopback addresses only.',
      );
    this.layout = new CounterLayout(c.Workgroups, addon.workgroupCounters, addon.serverCounters);
    const slots = this.native.counterSlots();
    if (slots !== this.layout.slots)
      throw new Error(`the addon reports ${slots} counter slots, its counter lists describe ${this.layout.slots}`);
    this.counters = new Float64Array(slots);
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

  /** The I/O backend in effect, and the connection cap that follows from it. */
  get io(): IoInfo {
    return this.native.io();
  }

  /**
   * The cluster link now: its state (`off` with ClusterEngine = none), the Redis server it uses (host:port) and,
   * when it is not up, why. The monitor shows it at /stats (`cluster`) and on the dashboard.
   */
  get cluster(): ClusterStatus {
    return this.native.clusterStatus();
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
   * subscribers. Returns false when nobody subscribes to the subject (with the history cache on, the
   * message is still kept for later `SUB <subject>#<n>` and recovery, as a client's would be). In a cluster
   * (`ClusterEngine = redis`) the message goes to the engine, as a client's does, and true means it was handed to
   * it (other nodes may have subscribers); it throws while the engine is unreachable.
   */
  publish(subject: string, payload: string | Uint8Array): boolean {
    if (typeof subject !== 'string') throw new TypeError(`publish: subject must be a string, got ${typeof subject}`);
    const binary = typeof payload !== 'string';
    if (binary && !(payload instanceof Uint8Array)) throw new TypeError('publish: payload must be a string, Buffer or Uint8Array');
    const bytes = binary ? Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) : Buffer.from(payload, 'utf8');
    if (bytes.length > this.config.MaxMessageSize)
      throw new RangeError(`publish: payload of ${bytes.length} bytes is over MaxMessageSize (${this.config.MaxMessageSize})`);
    if (this.closing) throw new Error('publish: the server is closed');
    const r = this.native.publish(subject, bytes, binary);
    if (r === Published.Unavailable) {
      const st = this.native.clusterStatus();
      throw new Error(`publish: the cluster engine (Redis ${st.redis}) is unreachable${st.detail ? ` (${st.detail})` : ''}; message not published`);
    }
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
   * (at most a second) and stops the native threads and the monitor. Resolves (or rejects with the native
   * stop's error) only once both are done: the monitoring port is closed, and neither logs anything more (the
   * monitor is silent from the call on). Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) {
      if (this.sampler) clearInterval(this.sampler);
      this.authorizer?.close();
      // allSettled: a failing native stop must not resolve close() while the monitor is still closing.
      this.closing = Promise.allSettled([this.native.stop(), this.monitor?.close()]).then((results) => {
        for (const r of results) if (r.status === 'rejected') throw r.reason;
      });
    }
    return this.closing;
  }

  /** ServerStats from one batch of counter values (as readCounters wrote them) and the last rates. */
  private build(values: Float64Array): ServerStats {
    return this.layout.decode(values, this.lastRates, {
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      publishOverflows: this.publishOverflows,
      authorizeErrors: this.authorizer?.hookErrors ?? 0,
      authorizeTimeouts: this.authorizer?.hookTimeouts ?? 0,
    });
  }

  /** Once a second: one batched native read, the rates since the previous sample, then the monitor. */
  private sample(): void {
    const now = Date.now();
    this.native.readCounters(this.counters);
    const values = Float64Array.from(this.counters);
    let dt = 0;
    if (this.previous) {
      dt = (now - this.previous.at) / 1000;
      this.lastRates = this.layout.rates(this.previous.values, values, dt);
    }
    this.previous = { at: now, values };
    if (this.config.ClusterEngine === 'redis') this.logClusterChange();
    this.monitor?.sampled(this.build(values), now, dt);
  }

  /** Logs the cluster link's changes of state (checked once a second): down with why, and back up. */
  private logClusterChange(): void {
    const st = this.native.clusterStatus();
    if (st.error && st.error !== this.clusterError) this.log.warn(`cluster: Redis ${st.redis} refused a publish: ${st.error}`);
    this.clusterError = st.error;
    const key = `${st.state} ${st.detail}`;
    if (key === this.clusterSeen) return;
    const was = this.clusterSeen;
    this.clusterSeen = key;
    if (st.state === 'up') this.log.info(`cluster: connected to Redis ${st.redis}${was ? ' again' : ''}`);
    else if (st.state === 'down' || (st.state === 'connecting' && st.detail))
      this.log.warn(`cluster: Redis ${st.redis} unreachable: ${st.detail}; publishes are refused (ERR unavailable) until it is back`);
  }
}

/**
 * Creates and starts a server. `config` takes the config-file keys (`{ Listen: '127.0.0.1:0', Workgroups: 2 }`)
 * as strings or typed values, or an already loaded configuration; missing keys take their defaults.
 * Throws ConfigError for bad configuration and Error when a listen address cannot be bound.
 */
export function createServer(config: (Record<string, unknown> & ServerHooks) | Loaded = {}, log?: Logger, hooks: ServerHooks = {}): Server {
  if (isLoaded(config)) return new Server(config, log, hooks);
  const { authorize, authorizeTimeout, ...keys } = config;
  return new Server(resolveConfig(keys), log, { authorize: authorize ?? hooks.authorize, authorizeTimeout: authorizeTimeout ?? hooks.authorizeTimeout });
}

/** How the control plane decides tokens, from the configuration and the program's hooks (null: Entitlement = None).
 * Throws ConfigError when they do not fit together. */
function authorizerOptions(c: Config, hooks: ServerHooks): AuthorizerOptions | null {
  if (hooks.authorize !== undefined && typeof hooks.authorize !== 'function')
    throw new ConfigError([`authorize must be a function (token, { address, workgroup }) => grant | null, got ${typeof hooks.authorize}`]);
  if (hooks.authorize && c.Entitlement !== 'Custom')
    throw new ConfigError([`an authorize hook is given but Entitlement is ${c.Entitlement}: set Entitlement = Custom to use it`]);
  switch (c.Entitlement) {
    case 'None':
      return null;
    case 'Basic':
      return { mode: 'Basic', allowToken: c['Entitlement.AllowToken'] };
    case 'JWT':
      return { mode: 'JWT', verifier: createJwtVerifier({ ...jwtOptionsFromConfig(c), maxTokenBytes: addon.protocolLimits.maxTokenBytes }) };
    case 'Custom': {
      if (!hooks.authorize)
        throw new ConfigError([
          'Entitlement = Custom needs the application\'s authorize hook: createServer({ ..., Entitlement: \'Custom\', authorize: async (token, client) => grant | null }). ' +
            'From the command line, use Basic or JWT.',
        ]);
      const timeout = hooks.authorizeTimeout ?? DEFAULT_AUTHORIZE_TIMEOUT_MS;
      if (!Number.isInteger(timeout) || timeout < 1 || timeout > 600_000)
        throw new ConfigError([`authorizeTimeout must be whole milliseconds from 1 to 600000, got ${String(timeout)}`]);
      return { mode: 'Custom', authorize: hooks.authorize, timeoutMs: timeout };
    }
    default:
      throw new ConfigError([`unknown Entitlement ${String(c.Entitlement)}`]);
  }
}

/** Whether a listen host reaches only this machine. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function isLoaded(x: Record<string, unknown> | Loaded): x is Loaded {
  return typeof x === 'object' && x !== null && 'config' in x && 'sources' in x;
}
