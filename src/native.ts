// The addon's surface, typed. Everything native is reached through this module; arguments are already
// validated by the caller (src/server.ts), so the binding only marshals.
import * as path from 'node:path';

export interface NativeOptions {
  listen: { host: string; port: number }[];
  path: string;
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
}

/** Result of NativeServer.publish. */
export const enum Published {
  Routed = 0,
  NoSubscribers = 1,
  Overflow = 2,
  /** The subject breaks the protocol's subject rule (checked natively: one definition of it). */
  BadSubject = 3,
}

export interface NativeServer {
  start(): void;
  ports(): number[];
  publish(subject: string, payload: Buffer, binary: boolean): Published;
  counterSlots(): number;
  readCounters(out: Float64Array): void;
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
  protocolLimits: { maxSubjectBytes: number; maxIdBytes: number; maxPubHeaderBytes: number };
}

/** Names another build of the addon (e.g. the sanitized one of `npm run test:asan`). */
export const ADDON_ENV = 'STARLING_ADDON';

// dist/src/native.js → <package root>/build/Release/starling.node
export const addon: Addon = require(process.env[ADDON_ENV] || path.join(__dirname, '..', '..', 'build', 'Release', 'starling.node'));
