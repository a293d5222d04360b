// The addon's surface, typed. Everything native is reached through this module; arguments are already
// validated by the caller (src/server.ts), so the binding only marshals.
import * as path from 'node:path';

export interface NativeOptions {
  listen: { host: string; port: number }[];
  path: string;
  /** HTTP.AllowOrigins. */
  allowOrigins: string[];
  /** HTTP.SseRetry, milliseconds. */
  sseRetry: number;
  workgroups: number;
  cpus: number[];
  benchmarkMode: boolean;
  sendBuffer: number;
  receiveBuffer: number;
  maxMessageSize: number;
  maxSubscriptions: number;
  /** Bytes the socket may refuse (MaxBacklog). */
  maxBacklog: number;
  /** Milliseconds over maxBacklog before a slow-consumer close (MaxBacklogTime). */
  maxBacklogTime: number;
  /** Server-wide budget in bytes (Memory). */
  memory: number;
  /** Seconds of silence before a ping, and again before a close; 0: off (KeepAlive). */
  keepAlive: number;
  /** Client connections held at once; 0: RLIMIT_NOFILE less 256 (MaxConnections). */
  maxConnections: number;
  /** History cache bytes, all subjects (CacheSize); 0: off. */
  cacheSize: number;
  maxCachedMessagesPerSubject: number;
  /** Seconds; 0: never (CacheExpireTime). */
  cacheExpireTime: number;
  /** EntitlementMode of native/runtime/server.h. */
  entitlement: Entitlement;
  /** Seconds before a token's expiry that `AUTH expiring` is sent (Entitlement.RenewBefore). */
  renewBefore: number;
  /** PublishAllowFromAddressList: "<address>/<bits>"; empty: every address may publish. */
  publishAllow: string[];
  /** IoChoice of native/runtime/server.h: 0 auto, 1 epoll, 2 io_uring (IoBackend). */
  ioBackend: number;
  /** ClusterOptions of native/cluster/options.h. */
  cluster: {
    /** ClusterRedis (RedisAddress: user and password percent-decoded), tried in order; empty: ClusterEngine = none. */
    redis: { host: string; port: number; user: string; password: string; db: number }[];
    /** ClusterDeliveryMode = Guaranteed. */
    guaranteed: boolean;
    /** ClusterNodeName in effect (never empty with a cluster: see clusterNodeName in src/config/schema.ts). */
    node: string;
  };
}

/** The cluster link as the monitor shows it (ClusterStatus of native/cluster/options.h). */
export interface ClusterStatus {
  /** `off`: ClusterEngine = none; `connecting`: no connection made yet; `up`: publishes are taken; `down`: lost or
   * refused, publishes are refused with ERR unavailable until it is back. */
  state: 'off' | 'connecting' | 'up' | 'down';
  /** The Redis server in use (host:port), or the one last tried; '' when off. */
  redis: string;
  /** Why it is not up, in words for an operator; '' when up or off. */
  detail: string;
  /** The last error Redis answered to a publish while up (maxmemory reached, ...); '' if none. */
  error: string;
}

/** The I/O backend a server runs (NativeServer.io). */
export interface IoInfo {
  backend: 'epoll' | 'io_uring';
  /** Why IoBackend = auto runs epoll ("" otherwise). */
  note: string;
  /** Connections per io_uring ring (0 with epoll). */
  ringFiles: number;
  /** The connection cap in effect (MaxConnections or its default). */
  maxConnections: number;
}

/** How the native side checks SUB and PUB (EntitlementMode in native/runtime/server.h). */
export const enum Entitlement {
  /** Nothing is checked. */
  None = 0,
  /** Anyone may subscribe; publishing needs an accepted token. */
  Basic = 1,
  /** JWT, Custom: nothing without an accepted token. */
  Token = 2,
}

/** Result of NativeServer.publish. */
export const enum Published {
  Routed = 0,
  NoSubscribers = 1,
  Overflow = 2,
  /** Never returned: a subject that breaks the protocol's rule (checked natively, one definition of it) makes
   * publish() throw a TypeError with the reason a client's PUB would get. */
  BadSubject = 3,
  /** ClusterEngine = redis and the engine is unreachable: not published. */
  Unavailable = 4,
}

export interface NativeServer {
  start(): void;
  ports(): number[];
  io(): IoInfo;
  publish(subject: string, payload: Buffer, binary: boolean): Published;
  counterSlots(): number;
  readCounters(out: Float64Array): void;
  /** Before start(): `callback` runs when tokens wait for decisions (take them with takeAuthRequests). */
  onAuthRequests(callback: () => void): void;
  /** Every waiting request: [wg, id, token, address] × n. */
  takeAuthRequests(): (number | string)[];
  /** The answers: [wg, id, set (a compilePermissions result) | null, expiry (unix s, 0: never), detail] × n. */
  decide(flat: unknown[]): void;
  /** The cluster link's state now (state `off` without a cluster); cheap enough for once a second. */
  clusterStatus(): ClusterStatus;
  stop(): Promise<void>;
}

/**
 * One native counter, as the X-macros of native/runtime/counters.h and native/runtime/server.h declare it. Its
 * name is the one name it has everywhere: in server.stats(), in /stats, in the stats log and (as
 * `starling_<name>`, `_total` for counters) in Prometheus. Nothing in TypeScript lists counter names again.
 */
export interface CounterInfo {
  /** snake_case, as in C++. */
  readonly name: string;
  /** `gauge`: a level (goes up and down); `counter`: a total since start (only grows). */
  readonly kind: 'gauge' | 'counter';
  /** What it counts, in a few words. */
  readonly doc: string;
}

interface Addon {
  NativeServer: new (options: NativeOptions) => NativeServer;
  /** The per-workgroup counters, in the order readCounters writes them for each workgroup. */
  workgroupCounters: readonly CounterInfo[];
  /** The server-wide counters, written after all workgroups. */
  serverCounters: readonly CounterInfo[];
  /** The protocol's numeric contracts, from native/pubsub/protocol.h. */
  protocolLimits: { maxSubjectBytes: number; maxIdBytes: number; maxPubHeaderBytes: number; maxTokenBytes: number };
  /** An opaque compiled permission set (native/pubsub/permissions.h) for decide(); throws TypeError naming a
   * pattern that is not one. */
  compilePermissions(sub: string[], pub: string[], all: string[]): unknown;
  /** Whether this process can run the io_uring backend ("" unavailable: it can), tried once per process. */
  ioUring(): { unavailable: string; classicBuffers: boolean };
}

/** Names another build of the addon (e.g. the sanitized one of `npm run test:asan`). */
export const ADDON_ENV = 'STARLING_ADDON';

/** The package root: dist/src/native.js → <package root>. */
const ROOT = path.join(__dirname, '..', '..');

/** Where the addon is loaded from: STARLING_ADDON, else <package root>/build/Release/starling.node. */
export function addonPath(): string {
  return process.env[ADDON_ENV] || path.join(ROOT, 'build', 'Release', 'starling.node');
}

/** The addon is not built, or this build cannot be loaded; the message says what to run. */
export class AddonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AddonError';
  }
}

let loaded: Addon | undefined;

/**
 * Loads the addon (once). Nothing loads it before a command needs it, so `starling --help`, `config --print`,
 * `doctor` and `tune` work without a build. Throws AddonError saying what to run when it is missing or broken.
 */
export function loadAddon(): Addon {
  if (loaded) return loaded;
  const file = addonPath();
  const fromEnv = Boolean(process.env[ADDON_ENV]);
  try {
    loaded = require(file) as Addon;
    return loaded;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const build = `run \`npm install\` (or \`npm run build\`) in ${ROOT}; it needs g++, make and python3`;
    if (e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(file)) {
      throw new AddonError(
        fromEnv
          ? `the native addon named by ${ADDON_ENV} does not exist: ${file}. Unset ${ADDON_ENV} to use the default build, or build that one`
          : `the native addon is not built (${file} is missing): ${build}`,
      );
    }
    const reason = String(e.message ?? err).split('\n')[0];
    throw new AddonError(`the native addon ${file} cannot be loaded (${reason}): rebuild it: ${build}`);
  }
}

/**
 * The addon's surface, loaded on first use (see loadAddon): importing this module loads nothing.
 */
export const addon: Addon = new Proxy({} as Addon, {
  get: (_target, key) => Reflect.get(loadAddon(), key),
  has: (_target, key) => Reflect.has(loadAddon(), key),
  ownKeys: () => Reflect.ownKeys(loadAddon()),
  getOwnPropertyDescriptor: (_target, key) => {
    const d = Reflect.getOwnPropertyDescriptor(loadAddon(), key);
    return d && { ...d, configurable: true };
  },
});
