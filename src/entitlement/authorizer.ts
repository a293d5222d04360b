// The control plane's side of entitlement decisions (PROTOCOL.md "Entitlement", native/THREADS.md
// "Decisions"): the workgroups hand over the tokens of AUTH commands (and `?token=`) in batches; this module
// decides each distinct token once — the Basic allow-token, a JWT (./jwt.ts), or the application's Custom
// hook — turns the permissions into a compiled native set (shared: every connection with the same token
// holds the same set), and answers in batches. No published message passes through here.
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from '../log';
import { type JwtVerifier, MAX_PERMISSION_ENTRIES } from './jwt';

/** What a token grants: subject patterns as in PROTOCOL.md (a last segment `*` or `{name}` grants it and below). */
export interface Grant {
  /** May subscribe to. */
  sub?: string[];
  /** May publish to. */
  pub?: string[];
  /** May subscribe and publish to. */
  all?: string[];
  /** Unix time (seconds) the grant ends: the connection gets `AUTH expiring`, then `AUTH expired` and 1008. 0 or
   * absent: never. */
  expiry?: number;
}

/** Who presents the token, for a Custom hook. */
export interface AuthorizeClient {
  /** The peer's IP address ("192.0.2.1", "2001:db8::1"). */
  address: string;
  /** The workgroup serving the connection. */
  workgroup: number;
}

/**
 * Entitlement = Custom: decides a token. Return (or resolve to) the grant, or null to refuse. A throw, a
 * rejection, a malformed grant or no answer within the timeout refuses the token (logged and counted); it never
 * affects other tokens or the server.
 */
export type AuthorizeHook = (token: string, client: AuthorizeClient) => Grant | null | Promise<Grant | null>;

/** One request as the native side hands it over. */
export interface AuthRequest {
  wg: number;
  id: number;
  token: string;
  address: string;
}

/** The native surface this module needs (src/native.ts). */
export interface DecisionSink {
  /** Compiles permission lists into an opaque native set; throws TypeError naming a bad pattern. */
  compile(sub: string[], pub: string[], all: string[]): unknown;
  /** [wg, id, set | null, expiry, detail] × n. */
  decide(flat: unknown[]): void;
}

export type AuthorizerOptions =
  | { mode: 'Basic'; allowToken: string }
  | { mode: 'JWT'; verifier: JwtVerifier }
  | { mode: 'Custom'; authorize: AuthorizeHook; timeoutMs: number };

/** Default time a Custom hook has to answer before the token is refused. */
export const DEFAULT_AUTHORIZE_TIMEOUT_MS = 5000;
/** Accepted tokens remembered (until they expire), so a reconnect storm of clients sharing tokens verifies each
 * once; compiled sets remembered likewise (LRU). The two bounds keep what they hold small whatever the grants:
 * at most this many entries each, ... */
export const DECISION_CACHE_ENTRIES = 10_000;
/** ... and at most this many bytes of tokens and patterns each (a grant may carry 1,000 patterns of 255 bytes). */
export const DECISION_CACHE_BYTES = 32 * 1024 * 1024;
/** A failing hook is logged at most this often (the count of the failures in between is in the next line). */
const LOG_EVERY_MS = 1000;
/** Native expiries are unsigned 32-bit unix seconds (good until 2106). */
const MAX_EXPIRY = 2 ** 32 - 1;

interface Accepted {
  set: unknown;
  expiry: number;
}

/** A Map kept under DECISION_CACHE_ENTRIES entries and DECISION_CACHE_BYTES (as the caller weighs them), least
 * recently used first out. */
class Lru<V> {
  private readonly map = new Map<string, { value: V; bytes: number }>();
  private bytes = 0;

  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key); // most recently used last
    this.map.set(key, e);
    return e.value;
  }

  set(key: string, value: V, bytes: number): void {
    this.delete(key);
    this.map.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [k, e] of this.map) {
      if (this.map.size <= DECISION_CACHE_ENTRIES && this.bytes <= DECISION_CACHE_BYTES) break;
      this.map.delete(k);
      this.bytes -= e.bytes;
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.map.delete(key);
    this.bytes -= e.bytes;
  }
}
type Verdict = Accepted | { detail: string };

export class Authorizer {
  /** Custom hook calls that threw or rejected, or answered something that is not a grant. */
  hookErrors = 0;
  /** Custom hook calls that did not answer within the timeout. */
  hookTimeouts = 0;
  private readonly accepted = new Lru<Accepted>();
  private readonly sets = new Lru<unknown>();
  private outbox: unknown[] = [];
  private flushing = false;
  private lastLog = 0;
  private unlogged = 0;
  private everything: unknown;
  /** Set by close(): decisions still coming are dropped, and nothing more is logged. */
  private closed = false;

  constructor(
    private readonly options: AuthorizerOptions,
    private readonly sink: DecisionSink,
    private readonly log: Logger,
  ) {}

  /** The server closed: what is still being decided is dropped (its connections are gone), quietly. */
  close(): void {
    this.closed = true;
    this.outbox = [];
  }

  /** Decides a batch: each distinct token (Custom: token and address) once; answers as the decisions come. */
  handle(requests: AuthRequest[]): void {
    const groups = new Map<string, AuthRequest[]>();
    for (const r of requests) {
      const key = this.options.mode === 'Custom' ? `${r.address} ${r.token}` : r.token;
      const group = groups.get(key);
      if (group) group.push(r);
      else groups.set(key, [r]);
    }
    for (const group of groups.values()) {
      const first = group[0];
      const cached = this.options.mode === 'Custom' ? undefined : this.remembered(first.token);
      if (cached) {
        this.answer(group, cached);
        continue;
      }
      this.decideOne(first).then(
        (v) => this.answer(group, v),
        () => this.answer(group, { detail: 'refused (internal error)' }),
      );
    }
  }

  private async decideOne(r: AuthRequest): Promise<Verdict> {
    const o = this.options;
    if (o.mode === 'Basic') return this.basic(o.allowToken, r.token);
    if (o.mode === 'JWT') {
      const d = await o.verifier.verify(r.token);
      if (!d.ok) return { detail: d.detail };
      const v = this.grant(d.permissions, d.expiry);
      if ('set' in v) this.remember(r.token, v);
      return v;
    }
    return this.custom(o.authorize, o.timeoutMs, r);
  }

  private basic(allowToken: string, token: string): Verdict {
    const a = Buffer.from(token);
    const b = Buffer.from(allowToken);
    if (a.length !== b.length || !timingSafeEqual(a, b)) return { detail: 'not the allow-token' };
    this.everything ??= this.sink.compile([], [], ['/*']);
    return { set: this.everything, expiry: 0 };
  }

  private async custom(hook: AuthorizeHook, timeoutMs: number, r: AuthRequest): Promise<Verdict> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
      // The running server keeps the process alive; a hook that never answers must not keep it alive after
      // close() for up to authorizeTimeout (10 minutes at most).
      timer.unref();
    });
    let answer: Grant | null | 'timeout';
    try {
      answer = await Promise.race([Promise.resolve().then(() => hook(r.token, { address: r.address, workgroup: r.wg })), timeout]);
    } catch (err) {
      this.hookErrors++;
      this.warn(`the authorize hook failed for a client at ${r.address}: ${err instanceof Error ? err.message : String(err)}; the token is refused`);
      return { detail: 'authorization failed' };
    } finally {
      clearTimeout(timer);
    }
    if (answer === 'timeout') {
      this.hookTimeouts++;
      this.warn(`the authorize hook did not answer within ${timeoutMs} ms for a client at ${r.address}; the token is refused`);
      return { detail: 'authorization timed out' };
    }
    if (answer === null || answer === undefined) return { detail: 'refused by the application' };
    // Read once (a getter may throw, or answer differently the second time), then checked; a throw while
    // reading is the hook's failure like any other.
    let read: ReadGrant | string;
    try {
      read = readGrant(answer);
    } catch (err) {
      read = `reading it threw: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (typeof read === 'string') {
      this.hookErrors++;
      this.warn(`the authorize hook answered a malformed grant (${read}); the token is refused`);
      return { detail: 'authorization failed' };
    }
    const v = this.grant({ sub: read.sub, pub: read.pub, all: read.all }, read.expiry);
    if ('detail' in v) {
      this.hookErrors++;
      this.warn(`the authorize hook granted a pattern that is not one (${v.detail}); the token is refused`);
    }
    return v;
  }

  /** The compiled set for these lists (shared with every identical grant) and the expiry in whole seconds. */
  private grant(p: { sub: string[]; pub: string[]; all: string[] }, expiry: number): Verdict {
    const key = JSON.stringify([p.sub, p.pub, p.all]);
    let set = this.sets.get(key);
    if (set === undefined) {
      try {
        set = this.sink.compile(p.sub, p.pub, p.all);
      } catch (err) {
        return { detail: `permissions: ${err instanceof Error ? err.message : String(err)}`.slice(0, 200) };
      }
      this.sets.set(key, set, key.length);
    }
    return { set, expiry: Math.min(MAX_EXPIRY, Math.max(0, Math.floor(expiry))) };
  }

  private remembered(token: string): Accepted | undefined {
    const a = this.accepted.get(token);
    if (!a) return undefined;
    if (a.expiry !== 0 && a.expiry * 1000 <= Date.now()) {
      this.accepted.delete(token);
      return undefined;
    }
    return a;
  }

  private remember(token: string, a: Accepted): void {
    this.accepted.set(token, a, token.length);
  }

  private answer(group: AuthRequest[], v: Verdict): void {
    if (this.closed) return;
    for (const r of group) {
      if ('set' in v) this.outbox.push(r.wg, r.id, v.set, v.expiry, '');
      else this.outbox.push(r.wg, r.id, null, 0, v.detail);
    }
    // Everything decided in this turn of the event loop crosses in one call.
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => {
        this.flushing = false;
        const flat = this.outbox;
        this.outbox = [];
        if (!this.closed && flat.length > 0) this.sink.decide(flat);
      });
    }
  }

  private warn(message: string): void {
    if (this.closed) return;
    const now = Date.now();
    if (now - this.lastLog < LOG_EVERY_MS) {
      this.unlogged++;
      return;
    }
    const more = this.unlogged ? ` (and ${this.unlogged} more such problems since the last one logged)` : '';
    this.lastLog = now;
    this.unlogged = 0;
    this.log.warn(`entitlement: ${message}${more}`);
  }
}

/** A Custom hook's answer, each field read once and copied. */
interface ReadGrant {
  sub: string[];
  pub: string[];
  all: string[];
  expiry: number;
}

/** A Custom hook's answer as a ReadGrant, or what makes it not a Grant. May throw (a getter of the answer). */
function readGrant(g: unknown): ReadGrant | string {
  if (typeof g !== 'object' || g === null || Array.isArray(g)) return `expected an object or null, got ${Array.isArray(g) ? 'an array' : typeof g}`;
  const o = g as Record<string, unknown>;
  const out: ReadGrant = { sub: [], pub: [], all: [], expiry: 0 };
  for (const name of ['sub', 'pub', 'all'] as const) {
    const list = o[name];
    if (list === undefined) continue;
    if (!Array.isArray(list)) return `${name} must be an array of strings`;
    const copy = Array.from(list as unknown[]);
    if (!copy.every((p) => typeof p === 'string')) return `${name} must be an array of strings`;
    out[name] = copy as string[];
  }
  const total = out.sub.length + out.pub.length + out.all.length;
  if (total > MAX_PERMISSION_ENTRIES) return `${total} patterns, at most ${MAX_PERMISSION_ENTRIES} (as in a JWT permissions claim)`;
  const expiry = o.expiry;
  if (expiry !== undefined) {
    if (typeof expiry !== 'number' || !Number.isFinite(expiry) || expiry < 0) return 'expiry must be unix seconds (a finite number >= 0)';
    out.expiry = expiry;
  }
  return out;
}
