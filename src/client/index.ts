// The Starling client SDK (`starling/client`): a connection to one of a list of servers that reconnects with
// backoff, subscriptions that keep their position (epoch, seq) and recover after a reconnect, publishes resolved
// by ACK and rejected with a typed error, and a small typed event API. Wire protocol v2 (docs/protocol.md);
// the behaviour is documented in docs/client.md.
//
// One file on purpose: compiled as an ES module it is the single self-contained file a browser page imports
// (the monitor serves it at /client.js), so it imports nothing. It is written against the platform, not Node or
// the DOM: the WebSocket is the global one (browsers, Node 22+), a constructor passed in the options, or — only
// when neither exists — the `ws` package, loaded with a dynamic import (Node 20 has no global WebSocket).
//
// Ordering is what makes the bookkeeping simple: the server processes a connection's commands in order and
// answers them in order. Every PUB carries an id (answered by ACK or ERR), every SUB/UNSUB/AUTH is followed by
// `PING <token>` (a "barrier"); an `ERR` without an id in flight belongs to the oldest of these still unanswered
// (the `outstanding` queue below) — a SUB refused, a subscription an AUTH's new token no longer grants, or a PUB
// the server could not parse far enough to read its id.
//
// Entitlement: a connection with a token sends `AUTH <token>` first and nothing else until `AUTH ok` (state
// 'authenticating'); a token that expired or was refused is never presented again — refreshToken gives another,
// or, without one, the client waits for authenticate().

// ---------------------------------------------------------------------------------------------------
// Public types

/** What a message is: `live` (published now), or replayed: the retained `snapshot`, `history` (`#n`), `recovered` (`@`). */
export type MessageKind = 'live' | 'snapshot' | 'history' | 'recovered';

/** A payload: a string for a text frame, bytes for a binary frame. */
export type Payload = string | Uint8Array;

/** A subject's position: its epoch (base-36 token; changes whenever its sequence restarts) and sequence number. */
export interface Position {
  epoch: string;
  seq: number;
}

/** A message as a subscription handler receives it. */
export interface Message extends Position {
  subject: string;
  /** A string when the publisher sent a text frame, a Uint8Array when it sent a binary one. */
  payload: Payload;
  kind: MessageKind;
}

export type MessageHandler = (message: Message) => void;

/** Waits between reconnection attempts: min, 2·min, 4·min … up to max ms, each cut by up to `jitter` (0–1) at random. */
export interface ReconnectOptions {
  min: number;
  max: number;
  jitter: number;
}

/** The part of a WebSocket the client uses: the browser's, Node 22's global one and the `ws` package's all fit. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The part of `fetch` the event-stream transport uses: the platform's (browsers, Node 18+) fits. */
export type FetchLike = (
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Uint8Array; signal?: unknown; cache?: 'no-store' },
) => Promise<{
  readonly ok: boolean;
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  readonly body: { getReader(): { read(): Promise<{ done: boolean; value?: Uint8Array }>; cancel(reason?: unknown): Promise<void> } } | null;
}>;

/**
 * How the client talks to the server: `websocket` (one WebSocket connection for everything), or `sse` — an event
 * stream (`GET /sse`, server-sent events) carrying every subscription, and one `POST /publish` per publish, for
 * networks that do not pass WebSocket upgrades (docs/http.md).
 */
export type Transport = 'websocket' | 'sse';

export interface ConnectOptions {
  /**
   * Server URLs, tried in order; at least one. WebSocket URLs (`ws://host:8800/`, `wss://…`); with transport `sse`,
   * the base the HTTP paths are under (`http://host:8800/`; a `ws://` URL is read as `http://`, `wss://` as `https://`).
   */
  servers: string[];
  /** `websocket` (the default) or `sse`: subscriptions on an event stream, publishes as HTTP POSTs. */
  transport?: Transport;
  /**
   * Entitlement token (a JWT, or the Basic allow-token): printable ASCII without spaces. Every connection presents
   * the latest token the client holds as its first command, `AUTH <token>`, and subscribes and publishes once the
   * server has accepted it.
   */
  token?: string;
  /**
   * Gets a fresh token: called when the server says the token is expiring (`AUTH expiring`), when it expired or was
   * refused before a (re)connection, and for the first token when `token` is not given. It has `connectTimeout` ms
   * to answer; a failure is an `error` event (code `auth`) and it is asked again later, never in a tight loop.
   */
  refreshToken?: () => string | Promise<string>;
  /** Backoff between attempts (defaults: min 250, max 10000, jitter 0.5), or false: never reconnect. */
  reconnect?: Partial<ReconnectOptions> | false;
  /** Publishes held while disconnected, sent in order on the next connection (default 1000); more are rejected. */
  maxQueuedPublishes?: number;
  /** Ms of silence from the server before a PING; as long again without an answer drops the connection (default 30000; 0 = off). */
  keepAlive?: number;
  /** Ms a connection attempt may take before it counts as failed (default 10000). */
  connectTimeout?: number;
  /** The WebSocket constructor to use instead of the global one (or `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Transport `sse`: the fetch to use instead of the global one. */
  fetch?: FetchLike;
}

export interface SubscribeOptions {
  /** Messages of the subject's cache to replay first (`SUB <s>#<n>`), after its retained snapshot. Default 0. */
  history?: number;
  /** Deliver at most one message per this many ms, the latest (`conflate=`; a multiple of 100 from 100 to 60000). */
  conflate?: number;
}

export interface PublishOptions {
  /** Make the message the subject's snapshot, sent first to every later subscriber (`+retained`). */
  retained?: boolean;
}

/** A subscription: one per subject per client. */
export interface Subscription {
  readonly subject: string;
  /** Position of the last message delivered, or of the last SYNC/RESYNC; null until the first. */
  readonly position: Position | null;
  /**
   * Resolves with the position at the subscription's first SYNC/RESYNC (everything asked for has been
   * delivered, live messages follow); rejects with a StarlingError when the server refuses the subscription or
   * it is unsubscribed or the client closed first.
   */
  readonly ready: Promise<Position>;
  /** Stops the subscription (sends UNSUB when connected). No message is delivered to it afterwards. */
  unsubscribe(): void;
}

/** Server refusals, and the client's own failures. */
export type ErrorCode =
  // from the server's ERR
  | 'bad-command'
  | 'bad-subject'
  | 'too-large'
  | 'limit'
  | 'forbidden'
  | 'unavailable' // a cluster node could not hand the publish to its engine (docs/cluster.md)
  // the client's
  | 'connection-lost' // a publish was sent, and the connection dropped before its ACK or ERR
  | 'queue-full' // a publish while disconnected, with maxQueuedPublishes already waiting
  | 'closed' // close() was called (or reconnect is off and the connection dropped)
  | 'unsubscribed' // the subscription was stopped before its first SYNC
  | 'protocol' // the server sent something this client cannot parse
  | 'handler' // a subscription handler or an event listener threw (the error is the `cause`)
  | 'connect' // a connection could not even be attempted (no WebSocket implementation, a bad URL)
  | 'auth' // a token refused (AUTH invalid) or expired, or refreshToken failed
  | (string & {}); // codes of later server versions

/** Every error of the SDK: a server refusal (`code` is the ERR code) or one of the client's own. */
export class StarlingError extends Error {
  /** The subject concerned, when there is one. */
  readonly subject: string | undefined;
  constructor(
    readonly code: ErrorCode,
    /** The server's detail (for humans; its wording may change), or the client's explanation. */
    readonly detail: string,
    options: { subject?: string; cause?: unknown } = {},
  ) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = 'StarlingError';
    this.subject = options.subject;
    if (options.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** What each event passes to its listeners. */
export interface ClientEvents {
  /** A connection is open (and its token accepted, when there is one); subscriptions are being (re)sent. */
  connected: { url: string };
  /** A `connected` connection closed (the close code the client saw; 1006 when it was cut, 1008 when its token expired). */
  disconnected: { url: string; code: number; reason: string };
  /** The next attempt goes to `url` after `delay` ms; `attempt` counts from 1 since the last open connection. */
  reconnecting: { url: string; attempt: number; delay: number };
  /** A subscription caught up: every message up to this position was delivered once; live messages follow. */
  sync: { subject: string; epoch: string; seq: number };
  /**
   * Messages were missed: the position asked for could not be recovered (the server restarted, or it no longer
   * caches them). `previous` is the last position delivered; the subscription goes on from `epoch:seq` with
   * the snapshot (if any) and live messages.
   */
  resync: { subject: string; epoch: string; seq: number; previous: Position | null };
  /** Entitlement state (`AUTH ok|invalid|expiring|expired`) with the rest of the server's line, for every AUTH line. */
  auth: { state: string; detail: string };
  /** Something went wrong that no promise reports: malformed server input, a refused subscription, a throwing handler. */
  error: StarlingError;
}

export type ClientEvent = keyof ClientEvents;

/** Opens a client; it connects (and keeps reconnecting) in the background. */
export function connect(options: ConnectOptions): Client {
  return new Client(options);
}

// ---------------------------------------------------------------------------------------------------
// Validation (argument errors throw at once: TypeError for a wrong type or form, RangeError for a number)

const SUBJECT_MAX = 255;
/** A last segment SUB would read as a position or a history request (docs/protocol.md, "Subjects"). */
const SPEC_SUFFIX = /(@[0-9a-z]{1,16}:[0-9]+|#[0-9]+)$/;

/** Why `subject` is not a valid subject, or null. Same rule as the server: `/`-separated non-empty printable segments. */
export function subjectProblem(subject: unknown): string | null {
  if (typeof subject !== 'string') return `a subject must be a string, got ${typeof subject}`;
  if (subject.length > SUBJECT_MAX) return `${subject.slice(0, 40)}...: longer than ${SUBJECT_MAX} bytes (${subject.length})`;
  if (subject[0] !== '/') return `${JSON.stringify(subject)}: must start with '/'`;
  for (let i = 1; i < subject.length; i++) {
    const c = subject.charCodeAt(i);
    if (c === 0x2f && subject.charCodeAt(i - 1) === 0x2f) return `${subject}: empty segment at offset ${i}`;
    if (c === 0x2a) return `${subject}: contains '*' at offset ${i} (wildcards are not allowed)`;
    if (c <= 0x20 || c > 0x7e) return `${JSON.stringify(subject)}: character ${c} at offset ${i} is not printable ASCII (no spaces)`;
  }
  if (subject.length === 1 || subject.endsWith('/')) return `${subject}: ends with '/'`;
  return null;
}

function checkSubject(subject: unknown, what: string): asserts subject is string {
  const problem = subjectProblem(subject);
  if (problem) throw new TypeError(`${what}: ${problem}`);
}

/** Why `token` cannot be sent as `AUTH <token>`, or null (the server takes at most 8192 bytes). */
function tokenProblem(token: unknown): string | null {
  if (typeof token !== 'string') return `a token must be a string, got ${typeof token}`;
  if (!/^[\x21-\x7e]{1,8192}$/.test(token)) return `a token is 1 to 8192 printable ASCII characters without spaces (got ${token.length} characters${/^[\x21-\x7e]*$/.test(token) ? '' : ', some of them spaces or not printable'})`;
  return null;
}

function checkCount(value: unknown, what: string, { min = 0, max = Number.MAX_SAFE_INTEGER, step = 1 } = {}): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max || value % step !== 0) {
    const range = max < Number.MAX_SAFE_INTEGER ? `from ${min} to ${max}` : `of at least ${min}`;
    throw new RangeError(`${what} must be an integer${step > 1 ? ` multiple of ${step}` : ''} ${range}, got ${String(value)}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------
// Parsing server messages (hostile input: anything unexpected is reported, never thrown)

/** Longest server header line: "RESYNC " / "MSG " + subject (255) + position (13 + 1 + 16) + kind, with room. */
const MAX_HEADER = 512;
/** An epoch as the server writes it: lower-case base 36, at most 13 characters, at most 2^64 - 1 (EPOCH_MAX). */
const EPOCH = /^[0-9a-z]{1,13}$/;
const EPOCH_MAX = '3w5e11264sgsf';
const SEQ = /^[0-9]{1,16}$/;
/** A Map, not an object: a token such as `constructor` or `__proto__` must not find Object.prototype's members. */
const KINDS = new Map<string, MessageKind>([
  ['snapshot', 'snapshot'],
  ['history', 'history'],
  ['recovered', 'recovered'],
]);

function parsePosition(token: string | undefined): Position | null {
  if (token === undefined) return null;
  const colon = token.indexOf(':');
  const epoch = token.slice(0, colon);
  const seq = token.slice(colon + 1);
  // Base-36 digits sort as ASCII does, so among 13-character epochs the string order is the numeric one.
  if (colon < 0 || !EPOCH.test(epoch) || (epoch.length === 13 && epoch > EPOCH_MAX) || !SEQ.test(seq)) return null;
  const n = Number(seq);
  return Number.isSafeInteger(n) ? { epoch, seq: n } : null;
}

/** A server message split into its header line and its payload (every byte after the first `\n`). */
interface Frame {
  header: string;
  /** False when there was no `\n` (a MSG must have one; other messages need none). */
  hasBody: boolean;
  payload: Payload;
}

/** Splits a received message; null when it is neither text nor bytes, or its header is not printable ASCII. */
function splitFrame(data: unknown): Frame | null {
  if (typeof data === 'string') {
    const nl = data.indexOf('\n');
    const header = nl < 0 ? data : data.slice(0, nl);
    if (header.length > MAX_HEADER || !/^[\x20-\x7e]*\r?$/.test(header)) return null;
    return { header: header.replace(/\r$/, ''), hasBody: nl >= 0, payload: nl < 0 ? '' : data.slice(nl + 1) };
  }
  let bytes: Uint8Array;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else return null;
  const limit = Math.min(bytes.length, MAX_HEADER + 1);
  let nl = -1;
  for (let i = 0; i < limit; i++) {
    if (bytes[i] === 0x0a) {
      nl = i;
      break;
    }
  }
  const end = nl < 0 ? bytes.length : nl;
  if (end > MAX_HEADER) return null;
  let header = '';
  for (let i = 0; i < end; i++) {
    const c = bytes[i];
    if ((c < 0x20 || c > 0x7e) && !(c === 0x0d && i === end - 1)) return null;
    if (c !== 0x0d) header += String.fromCharCode(c);
  }
  return { header, hasBody: nl >= 0, payload: nl < 0 ? new Uint8Array(0) : bytes.subarray(nl + 1) };
}

function asciiBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The platform

interface Platform {
  WebSocket?: WebSocketConstructor;
  fetch?: FetchLike;
  // (Everywhere the client runs: browsers, Node 18+.)
  AbortController: new () => { readonly signal: unknown; abort(): void };
  TextDecoder: new () => { decode(input?: Uint8Array, options?: { stream?: boolean }): string };
  URL: new (url: string, base?: string) => { readonly href: string };
  atob(data: string): string;
  queueMicrotask(fn: () => void): void;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(timer: unknown): void;
  console?: { error(...args: unknown[]): void };
}
const platform = globalThis as unknown as Platform;

let wsPackage: Promise<WebSocketConstructor> | null = null;

/** The WebSocket to use: the one given, the global one, or the `ws` package (imported once, only then). */
function webSocketConstructor(given: WebSocketConstructor | undefined): WebSocketConstructor | Promise<WebSocketConstructor> {
  if (given) return given;
  if (typeof platform.WebSocket === 'function') return platform.WebSocket;
  // A variable specifier: bundlers for the browser leave it alone, and the ES module build has no static 'ws'.
  const name = 'ws';
  wsPackage ??= import(name).then(
    (m: { WebSocket?: WebSocketConstructor; default?: WebSocketConstructor }) => {
      const ctor = m.WebSocket ?? m.default;
      if (typeof ctor !== 'function') throw new Error('the ws package exports no WebSocket');
      return ctor;
    },
    (e: Error) => {
      wsPackage = null;
      throw new Error(`there is no global WebSocket and the ws package cannot be loaded (npm install ws): ${e.message}`);
    },
  );
  return wsPackage;
}

// ---------------------------------------------------------------------------------------------------
// The event-stream transport's connection

/**
 * Longest event an event stream may send, in characters (its data lines and the line being read together). A
 * message is base64 on one line when binary, so this admits the server's MaxMessageSize up to about 12 MiB; a
 * stream sending more is cut (a hostile or broken server cannot make the client hold more than this).
 */
const MAX_EVENT_CHARS = 16 * 1024 * 1024;
/** The most of a refused request's body kept for the error (the server's JSON detail is far shorter). */
const MAX_ANSWER_BYTES = 64 * 1024;
/** Streams replaced by reopenings kept open at most (each until the current stream has answered every subscription). */
const MAX_RETIRING = 4;
/** Longest event-stream URL sent: the server reads request heads up to 8 KiB, and the rest of the head needs room. */
const MAX_STREAM_URL = 7 * 1024;

type FetchResponse = Awaited<ReturnType<FetchLike>>;

/** An event of a stream, as the WHATWG event-stream parser dispatches it. */
export interface StreamEvent {
  type: string;
  id: string;
  data: string;
}

/** Reads at most `limit` bytes of a response body as text (what is beyond is dropped, and the body cancelled). */
async function readBounded(body: FetchResponse['body'], limit: number): Promise<string> {
  if (!body) return '';
  const reader = body.getReader();
  const decoder = new platform.TextDecoder();
  let text = '';
  let bytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done || !value) break;
    bytes += value.length;
    text += decoder.decode(value, { stream: true });
    if (bytes >= limit) {
      void reader.cancel().catch(() => {});
      break;
    }
  }
  return text + decoder.decode();
}

/**
 * An event stream (`GET /sse`) behind the WebSocketLike interface the client drives: `onopen` once the server
 * answered 200, `onmessage` with each event ({ data: StreamEvent }), `onclose` once, when it ends (1000 after
 * close(), 1006 when the stream broke, 4000 + status when the server refused it — the reason carries its detail).
 * It only reads; `send` is never called on it. The parser is the WHATWG one (lines end with CR, LF or CRLF; a
 * field's value loses one leading space; `data` lines join with LF; a blank line dispatches; comments ignored).
 */
class EventStream implements WebSocketLike {
  readyState = 0;
  binaryType = 'arraybuffer';
  onopen: ((event: any) => void) | null = null;
  onmessage: ((event: any) => void) | null = null;
  onclose: ((event: any) => void) | null = null;
  onerror: ((event: any) => void) | null = null;
  private readonly abort = new platform.AbortController();
  private ended = false;
  // Parser state
  private buf = '';
  /** The last character read was a CR: a LF first in the next chunk belongs to it. */
  private skipLF = false;
  private data: string[] = [];
  private dataChars = 0;
  private type = '';
  private lastId = '';

  constructor(fetchImpl: FetchLike, url: string) {
    fetchImpl(url, { headers: { Accept: 'text/event-stream' }, signal: this.abort.signal, cache: 'no-store' }).then(
      (res) => this.answered(res),
      (e: unknown) => this.end(1006, `${(e as Error)?.message ?? String(e)}`),
    );
  }

  send(): void {
    throw new Error('an event stream is read-only');
  }

  close(code = 1000, reason = ''): void {
    this.abort.abort();
    this.end(code, reason);
  }

  private async answered(res: FetchResponse): Promise<void> {
    if (this.ended) return void res.body?.getReader().cancel().catch(() => {});
    if (!res.ok || !/^text\/event-stream/i.test(res.headers.get('content-type') ?? '')) {
      let detail = '';
      try {
        const text = await readBounded(res.body, MAX_ANSWER_BYTES);
        detail = (JSON.parse(text) as { detail?: unknown }).detail as string;
        if (typeof detail !== 'string') detail = text.slice(0, 200);
      } catch {
        /* no JSON detail */
      }
      return this.end(res.ok ? 1006 : 4000 + res.status, `HTTP ${res.status}${res.ok ? ', not an event stream' : ''}${detail ? `: ${detail}` : ''}`);
    }
    if (!res.body) return this.end(1006, 'HTTP 200 without a body');
    const reader = res.body.getReader();
    this.readyState = 1;
    this.onopen?.({});
    const decoder = new platform.TextDecoder();
    try {
      while (!this.ended) {
        const { done, value } = await reader.read();
        if (done) return this.end(1006, 'the server ended the event stream');
        if (value && !this.ended) this.feed(decoder.decode(value, { stream: true }));
      }
    } catch (e) {
      this.end(1006, `${(e as Error)?.message ?? String(e)}`);
    } finally {
      if (this.ended) void reader.cancel().catch(() => {});
    }
  }

  private end(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.readyState = 3;
    this.abort.abort();
    this.buf = '';
    this.data = [];
    this.onclose?.({ code, reason });
  }

  private feed(chunk: string): void {
    if (this.skipLF && chunk.charCodeAt(0) === 0x0a) chunk = chunk.slice(1);
    this.skipLF = false;
    this.buf += chunk;
    let start = 0;
    for (let i = 0; i < this.buf.length && !this.ended; i++) {
      const c = this.buf.charCodeAt(i);
      if (c !== 0x0a && c !== 0x0d) continue;
      const line = this.buf.slice(start, i);
      if (c === 0x0d) {
        if (i + 1 === this.buf.length) this.skipLF = true;
        else if (this.buf.charCodeAt(i + 1) === 0x0a) i++;
      }
      start = i + 1;
      this.line(line);
    }
    this.buf = this.buf.slice(start);
    if (this.buf.length + this.dataChars > MAX_EVENT_CHARS)
      this.end(1009, `an event longer than ${MAX_EVENT_CHARS} characters`);
  }

  private line(line: string): void {
    if (line === '') return this.dispatch();
    if (line.charCodeAt(0) === 0x3a) return; // a comment: the server's heartbeat
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (field === 'data') {
      this.data.push(value);
      this.dataChars += value.length + 1;
    } else if (field === 'event') this.type = value;
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
    // (retry: the client has its own backoff; other fields are ignored, as the standard says.)
  }

  private dispatch(): void {
    const type = this.type || 'message';
    this.type = '';
    if (this.data.length === 0) return;
    const data = this.data.join('\n');
    this.data = [];
    this.dataChars = 0;
    const event: StreamEvent = { type, id: this.lastId, data };
    this.onmessage?.({ data: event });
  }
}

// ---------------------------------------------------------------------------------------------------
// The client

/** readyState of a socket that is open (the WebSocket constants; not every implementation has them static). */
const OPEN = 1;
const DEFAULT_RECONNECT: ReconnectOptions = { min: 250, max: 10_000, jitter: 0.5 };
/** Close code a server sends when it shuts down: the next attempt goes to the next server in the list. */
const GOING_AWAY = 1001;

interface PendingPublish {
  id: string;
  subject: string;
  body: Payload;
  retained: boolean;
  resolve(): void;
  reject(e: StarlingError): void;
}

/** An `AUTH <token>` sent, waiting for `AUTH ok|invalid`. */
interface AuthCommand {
  token: string;
  /** tokenSeq when it was sent: its answer settles the authenticate() promises up to it. */
  seq: number;
  /** The connection's first: the subscriptions and publishes wait for its answer. */
  initial: boolean;
  /** Sent by a renewal after `AUTH expiring`: the failures so far (a refusal is one more, and it is tried again). */
  renewal?: number;
}

/**
 * A command still waiting for its answer, in the order sent: a publish (ACK or ERR), an AUTH (AUTH ok|invalid), or
 * a `PING <token>` sent after a SUB/UNSUB/AUTH (PONG; an ERR without an id before it is that command's — after an
 * AUTH, a subscription the renewed token no longer grants).
 */
type Outstanding = { publish: PendingPublish } | { auth: AuthCommand } | { token: string; onError(e: StarlingError): void };

/** A subscription's state. `phase`: idle (not sent on this connection), subscribing (SUB sent, no SYNC yet), live. */
class Sub implements Subscription {
  readonly ready: Promise<Position>;
  /** Last position delivered (or set by SYNC/RESYNC): duplicates are at or before it. */
  last: Position | null = null;
  phase: 'idle' | 'subscribing' | 'live' = 'idle';
  /**
   * Set by a RESYNC (to the last position delivered before it, or null): the snapshot that follows is delivered
   * even though it is older than the position RESYNC gave, unless the application already saw it.
   */
  snapshotFloor: Position | null | undefined = undefined;
  /** Transport sse: it was live when its event stream was reopened; that stream's SYNC is not news (a RESYNC is). */
  resumed = false;
  settle: { resolve(p: Position): void; reject(e: StarlingError): void } | null;

  constructor(
    private readonly client: Client,
    readonly subject: string,
    readonly handler: MessageHandler,
    readonly history: number,
    readonly conflate: number | undefined,
  ) {
    let settle!: Sub['settle'];
    this.ready = new Promise<Position>((resolve, reject) => (settle = { resolve, reject }));
    this.settle = settle;
    // A refusal is also an 'error' event; an application that never looks at `ready` must not get an unhandled rejection.
    this.ready.catch(() => {});
  }

  get position(): Position | null {
    return this.last && { ...this.last };
  }

  unsubscribe(): void {
    this.client.unsubscribeSub(this);
  }

  /** The spec SUB sends: a position to recover from once there is one, else the history asked for. */
  spec(): string {
    const spec = this.last ? `${this.subject}@${this.last.epoch}:${this.last.seq}` : `${this.subject}#${this.history}`;
    return this.conflate ? `conflate=${this.conflate} ${spec}` : spec;
  }

  resolveReady(): void {
    this.settle?.resolve({ ...this.last! });
    this.settle = null;
  }

  rejectReady(e: StarlingError): void {
    this.settle?.reject(e);
    this.settle = null;
  }
}

type Listener<K extends ClientEvent> = (value: ClientEvents[K]) => void;

export class Client {
  private readonly servers: string[];
  /** The token presented next (the latest given or fetched; after a refused renewal, the one in force). */
  private token: string | undefined;
  private readonly refreshToken: (() => string | Promise<string>) | undefined;
  private readonly backoff: ReconnectOptions | false;
  private readonly maxQueued: number;
  private readonly keepAlive: number;
  private readonly connectTimeout: number;
  private readonly WebSocketImpl: WebSocketConstructor | undefined;
  private readonly transport: Transport;
  private fetchImpl: FetchLike | undefined;

  /** The WebSocket, or (transport sse) the event stream. */
  private socket: WebSocketLike | null = null;
  /** The socket completed its handshake (still true after close() until its close event). */
  private socketOpened = false;
  /** 'connected' was emitted for the current socket. */
  private announced = false;
  /**
   * connecting: an attempt is under way (or a token for it is being fetched); authenticating: open, its first AUTH
   * not answered yet (subscriptions and publishes wait); open; waiting: for the next attempt (for ever when
   * `suspended`); closed: by close() for good.
   */
  private state: 'connecting' | 'authenticating' | 'open' | 'waiting' | 'closed' = 'waiting';
  /** Index into `servers` of the current (or next) attempt. */
  private server = 0;
  /** Failed attempts since the last open connection. */
  private failures = 0;
  private timer: unknown = null;
  private keepAliveTimer: unknown = null;
  private lastHeard = 0;
  private pingOutstanding = false;
  private counter = 0;

  private readonly subs = new Map<string, Sub>();
  /** Subjects unsubscribed on this connection whose UNSUB's PONG has not come: their messages are the old subscription's. */
  private readonly stale = new Map<string, string>();
  private outstanding: Outstanding[] = [];
  /** Publishes sent on this connection, by id, waiting for ACK or ERR. */
  private readonly inFlight = new Map<string, PendingPublish>();
  /** Publishes made while not connected, sent in order once connected. */
  private queued: PendingPublish[] = [];
  private readonly listeners = new Map<ClientEvent, Set<(value: never) => void>>();
  /** Transport sse: the subscriptions changed (or a token was given); the stream is reopened in a microtask. */
  private reopenQueued = false;
  /** Transport sse: the subscriptions the current event stream was opened with. */
  private streamSubs = new Set<Sub>();
  /**
   * Transport sse: the last POST (the next waits for its answer). One at a time, so that they are numbered in the
   * order made: the server answers an HTTP publish once its subject's home numbered it, whatever connection the
   * next one travels on; POSTs in flight together could be numbered in any order.
   */
  private lastPost: Promise<void> = Promise.resolve();
  /**
   * Transport sse: the streams reopenings replaced, not read any more but kept open until the current one has
   * answered every subscription, so that the server never sees a subject lose its subscriber in between (a
   * subject without subscribers or cached messages forgets its epoch, and the new stream would get RESYNC). At
   * most MAX_RETIRING: a client changing its subscriptions faster than the server answers closes the oldest.
   */
  private retiring: WebSocketLike[] = [];
  private closing: Promise<void> | null = null;
  private closed: (() => void) | null = null;

  // Entitlement
  /** Why `token` must not be presented again (it expired, or was refused when connecting), or null. */
  private tokenStale: string | null = null;
  /** Not reconnecting: the token is stale and there is no refreshToken; authenticate() resumes. */
  private suspended = false;
  /** Bumped with every new token; an AUTH's answer settles the authenticate() promises made up to its token. */
  private tokenSeq = 0;
  private authWaiters: { seq: number; resolve(expiry: number): void; reject(e: StarlingError): void }[] = [];
  /** The token accepted on the current connection. */
  private accepted: string | null = null;
  /** The refreshToken() call under way (one at a time), and its timeout. */
  private tokenRequest: Promise<string> | null = null;
  private tokenTimer: unknown = null;
  /** Renewal after `AUTH expiring`: the next try, and when the token expires (Date.now() ms). */
  private renewTimer: unknown = null;
  private renewBy = 0;

  constructor(options: ConnectOptions) {
    if (!options || !Array.isArray(options.servers) || options.servers.length === 0)
      throw new TypeError('connect: options.servers must be a non-empty array of WebSocket URLs');
    if (options.transport !== undefined && options.transport !== 'websocket' && options.transport !== 'sse')
      throw new TypeError(`connect: options.transport must be 'websocket' or 'sse', got ${JSON.stringify(options.transport)}`);
    this.transport = options.transport ?? 'websocket';
    for (const url of options.servers)
      if (typeof url !== 'string' || !/^(wss?|https?):\/\/[^\s]+$/i.test(url))
        throw new TypeError(
          this.transport === 'sse'
            ? `connect: ${JSON.stringify(url)} is not a server URL (http://host:port/ or https://…)`
            : `connect: ${JSON.stringify(url)} is not a WebSocket URL (ws://host:port/path or wss://…)`,
        );
    if (options.fetch !== undefined && typeof options.fetch !== 'function') throw new TypeError('connect: options.fetch must be a function');
    this.fetchImpl = options.fetch;
    const problem = options.token === undefined ? null : tokenProblem(options.token);
    if (problem) throw new TypeError(`connect: options.token: ${problem}`);
    if (options.refreshToken !== undefined && typeof options.refreshToken !== 'function')
      throw new TypeError('connect: options.refreshToken must be a function returning a token (or a promise of one)');
    this.servers = [...options.servers];
    this.token = options.token;
    this.refreshToken = options.refreshToken;
    if (options.reconnect === false) this.backoff = false;
    else {
      const r = { ...DEFAULT_RECONNECT, ...options.reconnect };
      if (!(r.min > 0) || !(r.max >= r.min) || !(r.jitter >= 0 && r.jitter <= 1))
        throw new RangeError(`connect: reconnect needs 0 < min <= max and 0 <= jitter <= 1, got ${JSON.stringify(r)}`);
      this.backoff = r;
    }
    this.maxQueued = checkCount(options.maxQueuedPublishes, 'connect: maxQueuedPublishes') ?? 1000;
    this.keepAlive = checkCount(options.keepAlive, 'connect: keepAlive') ?? 30_000;
    this.connectTimeout = checkCount(options.connectTimeout, 'connect: connectTimeout', { min: 1 }) ?? 10_000;
    if (options.WebSocket !== undefined && typeof options.WebSocket !== 'function') throw new TypeError('connect: options.WebSocket must be a constructor');
    this.WebSocketImpl = options.WebSocket;
    this.attempt();
  }

  // -------------------------------------------------------------------------------------------------
  // The API

  /** True while a connection is open. */
  get connected(): boolean {
    return this.state === 'open';
  }

  /** URL of the open connection, or null. */
  get url(): string | null {
    return this.state === 'open' ? this.servers[this.server] : null;
  }

  /** Adds a listener; returns the function that removes it. */
  on<K extends ClientEvent>(event: K, listener: Listener<K>): () => void {
    if (typeof listener !== 'function') throw new TypeError(`on(${String(event)}): the listener must be a function`);
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  /**
   * Subscribes `handler` to `subject`. The first SUB asks for `history` messages (default 0) and so always yields
   * a position; after a reconnect the subscription resumes from its last position. Throws on a bad subject or
   * option, or when the client already subscribes to the subject.
   */
  subscribe(subject: string, handler: MessageHandler, options: SubscribeOptions = {}): Subscription {
    checkSubject(subject, 'subscribe');
    if (SPEC_SUFFIX.test(subject))
      throw new TypeError(`subscribe: ${subject}: a last segment ending in @<epoch>:<seq> or #<n> is read by SUB as a position or a history request`);
    if (typeof handler !== 'function') throw new TypeError('subscribe: the handler must be a function');
    const history = checkCount(options.history, 'subscribe: history') ?? 0;
    const conflate = checkCount(options.conflate, 'subscribe: conflate', { min: 100, max: 60_000, step: 100 });
    if (this.subs.has(subject)) throw new Error(`subscribe: already subscribed to ${subject}; unsubscribe first`);
    if (this.transport === 'sse') this.checkStreamRoom(subject, conflate);
    const sub = new Sub(this, subject, handler, history, conflate);
    if (this.state === 'closed') {
      sub.rejectReady(new StarlingError('closed', 'the client is closed', { subject }));
      return sub;
    }
    this.subs.set(subject, sub);
    if (this.state === 'open') this.sendSub(sub);
    return sub;
  }

  /** Stops the client's subscription to `subject`, if any. */
  unsubscribe(subject: string): void {
    const sub = this.subs.get(subject);
    if (sub) this.unsubscribeSub(sub);
  }

  /**
   * Publishes `payload` (a string: a text frame; bytes — a Uint8Array, Buffer, ArrayBuffer or other view — a binary frame). Resolves when the server ACKs it;
   * rejects with a StarlingError: the server's ERR code, or `connection-lost` (sent, then the connection dropped
   * before the answer: it may or may not have been published; it is not sent again), `queue-full` or `closed`.
   * While disconnected, publishes wait (at most maxQueuedPublishes) and are sent, in order, on the next connection.
   */
  publish(subject: string, payload: Payload | ArrayBuffer | ArrayBufferView, options: PublishOptions = {}): Promise<void> {
    checkSubject(subject, 'publish');
    let body: Payload;
    if (typeof payload === 'string' || payload instanceof Uint8Array) body = payload;
    else if (payload instanceof ArrayBuffer) body = new Uint8Array(payload);
    else if (ArrayBuffer.isView(payload)) body = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    else throw new TypeError(`publish: the payload must be a string, an ArrayBuffer or a typed array (Uint8Array, Buffer, …), got ${typeof payload}`);
    if (this.state === 'closed') return Promise.reject(new StarlingError('closed', 'the client is closed', { subject }));
    const id = `p${(++this.counter).toString(36)}`;
    return new Promise<void>((resolve, reject) => {
      const p: PendingPublish = { id, subject, body, retained: options.retained === true, resolve, reject };
      if (this.state === 'open') this.sendPublish(p);
      else if (this.queued.length >= this.maxQueued)
        reject(new StarlingError('queue-full', `not connected, and ${this.maxQueued} publishes are already waiting (maxQueuedPublishes)`, { subject }));
      else this.queued.push(p);
    });
  }

  /**
   * Presents `token` now (`AUTH <token>` on the open connection; otherwise on the next one, which this starts if
   * the client had stopped for want of a valid token) and keeps it for every later connection. Resolves with its
   * expiry (Unix seconds, 0 = never) on `AUTH ok`; rejects with a StarlingError, code `auth`, on `AUTH invalid` (a
   * refused renewal leaves the token in force, on the server and in the client), `closed` if the client
   * is closed first. Throws a TypeError for a token that is not 1 to 8192 printable ASCII characters without spaces.
   */
  authenticate(token: string): Promise<number> {
    const problem = tokenProblem(token);
    if (problem) throw new TypeError(`authenticate: ${problem}`);
    if (this.state === 'closed') return Promise.reject(new StarlingError('closed', 'the client is closed'));
    this.useToken(token);
    const answer = new Promise<number>((resolve, reject) => this.authWaiters.push({ seq: this.tokenSeq, resolve, reject }));
    if ((this.state === 'open' || this.state === 'authenticating') && this.socket) this.sendAuth(token, false);
    else if (this.suspended) {
      this.suspended = false;
      this.attempt();
    }
    return answer;
  }

  /**
   * Closes the connection (1000) and stops reconnecting; no handler or listener but `disconnected` is called from
   * then on. Publishes already sent still get their answer (the server answers every command it read before it
   * closes); those not sent, or left unanswered, are rejected with `closed`. Resolves once the socket is closed.
   * Idempotent.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    const socket = this.socket;
    const wasOpen = this.socketOpened;
    this.state = 'closed';
    this.stopTimers();
    this.retire(null);
    const queued = this.queued;
    this.queued = [];
    for (const p of queued) p.reject(new StarlingError('closed', 'the client was closed before it was sent', { subject: p.subject }));
    if (!wasOpen) this.failInFlight('closed');
    for (const sub of this.subs.values()) sub.rejectReady(new StarlingError('closed', 'the client was closed', { subject: sub.subject }));
    this.settleAuth(Infinity, new StarlingError('closed', 'the client was closed before the server answered'));
    if (this.tokenTimer !== null) platform.clearTimeout(this.tokenTimer);
    this.tokenTimer = null;
    this.closing = new Promise<void>((resolve) => {
      if (!socket) return resolve();
      this.closed = () => {
        this.closed = null;
        resolve();
      };
      // An open connection: its close event emits 'disconnected' and resolves this. One still connecting is
      // abandoned at once.
      if (!wasOpen) {
        this.detach(socket);
        this.socket = null;
      }
      try {
        socket.close(1000);
      } catch {
        /* already closing */
      }
      if (!wasOpen) this.closed?.();
    });
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------------
  // Connections

  private attempt(): void {
    if (this.state === 'closed') return;
    this.state = 'connecting';
    // A token that expired or was refused is not presented again: refreshToken() gives another first (without
    // one, retry() has stopped). A failure counts as a failed attempt: the next one waits longer.
    if (this.refreshToken && (this.token === undefined || this.tokenStale !== null)) {
      const stale = this.token;
      this.requestToken().then(
        (token) => {
          if (this.state !== 'connecting' || this.socket) return;
          if (this.token === stale) this.useToken(token); // else authenticate() gave one meanwhile
          this.connectNow();
        },
        (e: StarlingError) => {
          if (this.state !== 'connecting' || this.socket) return;
          this.emit('error', e);
          if (this.state === 'connecting') this.retry(false, 1006);
        },
      );
      return;
    }
    this.connectNow();
  }

  private connectNow(): void {
    const url = this.servers[this.server];
    if (this.transport === 'sse') {
      const fetchImpl = this.fetchImpl ?? (typeof platform.fetch === 'function' ? platform.fetch.bind(globalThis) : undefined);
      if (!fetchImpl) return this.cannotConnect(url, new Error('there is no global fetch (Node 18 or newer, or a browser); pass options.fetch'));
      this.fetchImpl ??= fetchImpl;
      return this.open(url, () => new EventStream(fetchImpl, this.streamUrl()));
    }
    let ctor: WebSocketConstructor | Promise<WebSocketConstructor>;
    try {
      ctor = webSocketConstructor(this.WebSocketImpl);
    } catch (e) {
      return this.cannotConnect(url, e);
    }
    const make = (c: WebSocketConstructor) => () => {
      const socket = new c(url);
      socket.binaryType = 'arraybuffer';
      return socket;
    };
    if (typeof ctor === 'function') this.open(url, make(ctor));
    else
      ctor.then(
        (c) => this.state === 'connecting' && this.open(url, make(c)),
        (e) => this.state === 'connecting' && this.cannotConnect(url, e),
      );
  }

  private cannotConnect(url: string, e: unknown): void {
    this.emit('error', new StarlingError('connect', `${url}: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
    this.retry(false, 1006);
  }

  /** Opens the connection `make` creates (a WebSocket, or an event stream) and wires it to the client. */
  private open(url: string, make: () => WebSocketLike): void {
    let socket: WebSocketLike;
    try {
      socket = make();
    } catch (e) {
      return this.cannotConnect(url, e);
    }
    this.socket = socket;
    // The attempt includes the answer to the connection's AUTH, when it has a token.
    this.timer = platform.setTimeout(() => {
      this.timer = null;
      // (State open: a reopened event stream, which has as long as a connection to be answered.)
      if (this.socket === socket && (this.state !== 'open' || socket.readyState !== OPEN))
        this.drop(socket, 1006, `no connection${this.state === 'authenticating' ? ' (no answer to AUTH)' : ''} within ${this.connectTimeout} ms`);
    }, this.connectTimeout);
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.socketOpened = true;
      this.heard();
      if (this.keepAliveTimer === null && this.keepAlive > 0) this.keepAliveTimer = platform.setInterval(() => this.checkAlive(), this.keepAlive);
      if (this.state === 'open') return this.clearTimer(); // a reopened event stream
      if (this.token === undefined) return this.opened(url);
      // AUTH first, and nothing else until it is accepted: a subscription sent with a token the server refuses
      // would be refused too, and dropped for good. (An event stream carried its token in its URL: its `auth`
      // event is the answer.)
      this.state = 'authenticating';
      if (this.transport === 'sse') this.outstanding.push({ auth: { token: this.token, seq: this.tokenSeq, initial: true } });
      else this.sendAuth(this.token, true);
    };
    socket.onmessage = (event: { data: unknown }) => {
      if (this.socket !== socket) return;
      this.heard();
      if (this.transport === 'sse') this.receiveEvent(event.data as StreamEvent);
      else this.receive(event.data);
    };
    socket.onclose = (event: { code?: number; reason?: string }) => {
      if (this.socket !== socket) return this.closed?.();
      // An event stream the server refused (4000 + HTTP status) says why; a WebSocket upgrade refused cannot.
      const code = event.code ?? 1006;
      if (code > 4000 && code < 5000 && this.transport === 'sse') this.emit('error', new StarlingError('connect', `${url}: ${event.reason ?? ''}`));
      if (this.socket === socket) this.drop(socket, code, event.reason ?? '');
    };
    // A close event always follows an error event; the `ws` package throws on an error nobody listens to.
    socket.onerror = () => {};
  }

  /** The connection is usable (its token accepted, if it has one): the subscriptions, then the publishes held. */
  private opened(url: string): void {
    this.clearTimer();
    this.state = 'open';
    this.announced = true;
    this.failures = 0;
    this.emit('connected', { url });
    if (this.state !== 'open') return; // a listener closed the client
    for (const sub of this.subs.values()) {
      // (An event stream carries the subscriptions that existed when it was opened; a later one reopens it.)
      if (this.transport !== 'sse') this.sendSub(sub);
      else if (this.streamSubs.has(sub)) sub.phase = 'subscribing';
      else this.reopenSoon();
    }
    const queued = this.queued;
    this.queued = [];
    for (const p of queued) this.sendPublish(p);
  }

  /** The socket is gone (closed, cut, timed out): fail what it carried, then reconnect unless closed. */
  private drop(socket: WebSocketLike, code: number, reason: string): void {
    const wasOpen = this.announced;
    this.announced = false;
    this.socketOpened = false;
    // 1008 (policy violation) is how the server closes a connection whose token expired.
    if (code === 1008 && this.token !== undefined && this.token === this.accepted)
      this.tokenStale ??= 'the server closed the connection with 1008: the token expired';
    this.accepted = null;
    const url = this.servers[this.server];
    this.detach(socket);
    if (this.socket === socket) this.socket = null;
    this.stopTimers();
    try {
      socket.close();
    } catch {
      /* closed already */
    }
    this.outstanding = [];
    this.stale.clear();
    this.retire(null);
    for (const sub of this.subs.values()) {
      sub.phase = 'idle';
      sub.resumed = false;
    }
    this.failInFlight(this.state === 'closed' ? 'closed' : 'connection-lost');
    // Not 'open' for the listeners: what they publish or subscribe waits for the next connection.
    if (this.state !== 'closed') this.state = 'waiting';
    if (wasOpen) this.emit('disconnected', { url, code, reason });
    if (this.state === 'closed') this.closed?.();
    else this.retry(wasOpen, code);
  }

  /** Schedules the next attempt: the same server after a drop, the next one after a failure or a shutdown (1001). */
  private retry(wasOpen: boolean, code: number): void {
    if (this.tokenStale !== null && !this.refreshToken) {
      // Suspended first: a listener may call authenticate() (which resumes) or close().
      if (this.backoff !== false) {
        this.state = 'waiting';
        this.suspended = true;
      }
      this.emit('error', new StarlingError('auth', `${this.tokenStale}; without refreshToken the client does not reconnect until authenticate() gives another token`));
      if (this.backoff !== false || this.state === 'closed') return;
    }
    if (this.backoff === false) {
      void this.close();
      return;
    }
    this.state = 'waiting';
    if (!wasOpen || code === GOING_AWAY) this.server = (this.server + 1) % this.servers.length;
    const { min, max, jitter } = this.backoff;
    const base = Math.min(max, min * 2 ** Math.min(this.failures, 30));
    const delay = Math.round(base * (1 - jitter * Math.random()));
    this.failures++;
    this.emit('reconnecting', { url: this.servers[this.server], attempt: this.failures, delay });
    if (this.state !== 'waiting') return; // a listener closed the client
    this.timer = platform.setTimeout(() => {
      this.timer = null;
      this.attempt();
    }, delay);
  }

  private detach(socket: WebSocketLike): void {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = () => this.closed?.();
  }

  private heard(): void {
    this.lastHeard = Date.now();
    this.pingOutstanding = false;
  }

  /**
   * Keep-alive: PING after keepAlive ms of silence; a second silent period drops the connection. (An event stream
   * cannot be pinged: the server's heartbeats, every KeepAlive seconds, are what it hears.)
   */
  private checkAlive(): void {
    const socket = this.socket;
    if (!socket || Date.now() - this.lastHeard < this.keepAlive) return;
    if (this.pingOutstanding) return this.drop(socket, 1006, `no answer from the server for ${2 * this.keepAlive} ms`);
    this.pingOutstanding = true;
    if (this.transport !== 'sse') this.barrier((e) => this.emit('error', e));
  }

  private clearTimer(): void {
    if (this.timer !== null) platform.clearTimeout(this.timer);
    this.timer = null;
  }

  private stopTimers(): void {
    this.clearTimer();
    if (this.renewTimer !== null) platform.clearTimeout(this.renewTimer);
    this.renewTimer = null;
    if (this.keepAliveTimer !== null) platform.clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = null;
  }

  /** Rejects the publishes sent and not answered: the connection is gone, so is their answer. */
  private failInFlight(code: 'closed' | 'connection-lost'): void {
    const lost = [...this.inFlight.values()];
    this.inFlight.clear();
    const detail =
      code === 'closed'
        ? 'the client was closed before the server answered; the message may or may not have been published'
        : 'the connection closed before the server answered; the message may or may not have been published';
    for (const p of lost) p.reject(new StarlingError(code, detail, { subject: p.subject }));
  }

  // -------------------------------------------------------------------------------------------------
  // Commands

  private send(data: string | Uint8Array): void {
    if (this.socket && this.socket.readyState === OPEN) this.socket.send(data);
  }

  /** Sends `PING <token>` after the commands sent so far; returns the token. */
  private barrier(onError: (e: StarlingError) => void): string {
    const token = `b${(++this.counter).toString(36)}`;
    this.send(`PING ${token}`);
    this.outstanding.push({ token, onError });
    return token;
  }

  private sendSub(sub: Sub): void {
    if (this.transport === 'sse') return this.reopenSoon();
    sub.phase = 'subscribing';
    this.send(`SUB ${sub.spec()}`);
    this.barrier((e) => this.refused(sub, e));
  }

  private sendPublish(p: PendingPublish): void {
    if (this.transport === 'sse') return this.post(p);
    this.inFlight.set(p.id, p);
    this.outstanding.push({ publish: p });
    const header = `PUB ${p.subject} ${p.id}${p.retained ? ' +retained' : ''}\n`;
    if (typeof p.body === 'string') return this.send(header + p.body);
    const frame = new Uint8Array(header.length + p.body.length);
    frame.set(asciiBytes(header));
    frame.set(p.body, header.length);
    this.send(frame);
  }

  /** @internal Subscription.unsubscribe(). */
  unsubscribeSub(sub: Sub): void {
    if (this.subs.get(sub.subject) !== sub) return;
    this.subs.delete(sub.subject);
    sub.rejectReady(new StarlingError('unsubscribed', 'unsubscribed before the first SYNC', { subject: sub.subject }));
    if (this.state === 'open' && sub.phase !== 'idle') this.sendUnsub(sub.subject, (e) => this.emit('error', e));
    sub.phase = 'idle';
  }

  /** UNSUB and its barrier: until that PONG, messages for the subject belong to the old subscription. */
  private sendUnsub(subject: string, onError: (e: StarlingError) => void): void {
    if (this.transport === 'sse') return this.reopenSoon();
    this.send(`UNSUB ${subject}`);
    this.stale.set(subject, this.barrier(onError));
  }

  /** The server refused a SUB: the subscription is over. */
  private refused(sub: Sub, e: StarlingError): void {
    const err = new StarlingError(e.code, e.detail, { subject: sub.subject });
    if (this.subs.get(sub.subject) === sub) {
      this.subs.delete(sub.subject);
      sub.phase = 'idle';
    }
    sub.rejectReady(err);
    this.answeredAll();
    this.emit('error', err);
  }

  /**
   * A gap or an epoch change in a live stream: resubscribe from the last position delivered (UNSUB, then SUB
   * <s>@<epoch>:<seq>); what the old subscription still sends is dropped, the recovery fills the gap.
   */
  private recover(sub: Sub): void {
    if (this.transport === 'sse') return this.reopen(); // now: nothing more of this stream is read

    this.sendUnsub(sub.subject, (e) => this.emit('error', e));
    this.sendSub(sub);
  }

  // -------------------------------------------------------------------------------------------------
  // Entitlement

  private useToken(token: string): void {
    this.token = token;
    this.tokenSeq++;
    this.tokenStale = null;
  }

  /** `AUTH <token>`, then a barrier: an ERR between the AUTH's answer and its PONG is a subscription revoked. */
  private sendAuth(token: string, initial: boolean, renewal?: number): void {
    if (this.transport === 'sse') {
      // The stream is reopened with the token; its `auth` event answers this.
      this.outstanding = this.outstanding.filter((o) => !('auth' in o) || o.auth.initial);
      this.outstanding.push({ auth: { token, seq: this.tokenSeq, initial, renewal } });
      return this.reopenSoon();
    }
    this.send(`AUTH ${token}`);
    this.outstanding.push({ auth: { token, seq: this.tokenSeq, initial, renewal } });
    this.barrier((e) => this.revoked(e));
  }

  /** Settles the authenticate() promises made up to token number `seq`: with the expiry, or rejected with `error`. */
  private settleAuth(seq: number, error: StarlingError | null, expiry = 0): void {
    const settled = this.authWaiters.filter((w) => w.seq <= seq);
    this.authWaiters = this.authWaiters.filter((w) => w.seq > seq);
    for (const w of settled) {
      if (error) w.reject(error);
      else w.resolve(expiry);
    }
  }

  /** The server's answer to an AUTH of ours. */
  private authAnswered(cmd: AuthCommand, expiry: number | null, detail: string): void {
    const refusal = expiry === null ? new StarlingError('auth', `the server refused the token: ${detail}`) : null;
    this.settleAuth(cmd.seq, refusal, expiry ?? 0);
    if (!refusal) {
      this.accepted = cmd.token;
      if (cmd.initial && this.state === 'authenticating') this.opened(this.servers[this.server]);
      return;
    }
    if (cmd.initial) {
      // Another AUTH (authenticate()) follows on this connection: its answer decides instead.
      const next = this.outstanding.find((o): o is { auth: AuthCommand } => 'auth' in o);
      if (next) {
        next.auth.initial = true;
        return;
      }
      // Not presented again: the connection ends, and the next one asks refreshToken for another (retry()
      // reports it and stops without one).
      if (this.token === cmd.token) this.tokenStale = `the server refused the token (${detail})`;
      const socket = this.socket;
      if (this.refreshToken || this.tokenStale === null)
        this.emit('error', new StarlingError('auth', `the server refused the token (${detail})${this.refreshToken ? '; asking refreshToken for another' : ''}`));
      if (socket && this.socket === socket) this.drop(socket, 1000, 'token refused');
      return;
    }
    // A renewal refused: the token in force stays, on the server and for the next connection. (An event stream
    // opened with the refused token is anonymous: it is replaced at once by one with the token in force.)
    if (this.token === cmd.token && this.accepted !== null) this.token = this.accepted;
    if (this.transport === 'sse' && this.state === 'open') this.reopen();
    if (cmd.renewal !== undefined) {
      this.emit('error', new StarlingError('auth', `the server refused the token refreshToken gave: ${detail}`));
      this.renewLater(cmd.renewal + 1);
    }
  }

  /** One refreshToken() call at a time, at most connectTimeout ms; rejects with a StarlingError (code `auth`). */
  private requestToken(): Promise<string> {
    if (!this.tokenRequest) {
      const refresh = this.refreshToken!;
      const request = new Promise<string>((resolve, reject) => {
        this.tokenTimer = platform.setTimeout(() => reject(new Error(`no answer within ${this.connectTimeout} ms (connectTimeout)`)), this.connectTimeout);
        Promise.resolve()
          .then(refresh)
          .then((token) => {
            const problem = tokenProblem(token);
            if (problem) throw new Error(`it gave something that is not a token: ${problem}`);
            resolve(token);
          })
          .catch(reject);
      });
      const done = (): void => {
        platform.clearTimeout(this.tokenTimer);
        this.tokenTimer = null;
        this.tokenRequest = null;
      };
      this.tokenRequest = request.then(
        (token) => (done(), token),
        (e: unknown) => {
          done();
          throw new StarlingError('auth', `refreshToken failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
        },
      );
    }
    return this.tokenRequest;
  }

  /** After `AUTH expiring`: a token from refreshToken(), presented on this connection; a failure is tried again. */
  private renew(failures: number): void {
    const socket = this.socket;
    const live = (): boolean => this.socket === socket && this.state === 'open';
    this.requestToken().then(
      (token) => {
        if (this.state === 'closed') return;
        if (token === this.accepted && live()) {
          this.emit('error', new StarlingError('auth', 'refreshToken gave the token in force, which is expiring'));
          return this.renewLater(failures + 1);
        }
        if (token !== this.token) this.useToken(token);
        if (live()) this.sendAuth(token, false, failures); // else the next connection presents it
      },
      (e: StarlingError) => {
        if (!live()) return; // the reconnection asks again
        this.emit('error', e);
        this.renewLater(failures + 1);
      },
    );
  }

  /** The next renewal try: 1 s after the first failure, twice as long after each, at most half the time left. */
  private renewLater(failures: number): void {
    if (this.renewTimer !== null) platform.clearTimeout(this.renewTimer);
    this.renewTimer = null;
    const left = this.renewBy - Date.now();
    if (left <= 0 || this.state !== 'open') return; // it expires; the reconnection asks refreshToken again
    const delay = Math.max(250, Math.min(1000 * 2 ** Math.min(failures - 1, 10), left / 2));
    this.renewTimer = platform.setTimeout(() => {
      this.renewTimer = null;
      this.renew(failures);
    }, delay);
  }

  /** An ERR after an AUTH's answer: `ERR forbidden <subject>: not permitted by the renewed token`. */
  private revoked(e: StarlingError): void {
    const subject = e.detail.split(' ')[0].replace(/:$/, '');
    const sub = this.subs.get(subject);
    if (sub && e.code === 'forbidden') this.refused(sub, e);
    else this.emit('error', e);
  }

  // -------------------------------------------------------------------------------------------------
  // Server messages

  private receive(data: unknown): void {
    const frame = splitFrame(data);
    if (!frame) {
      if (this.state !== 'closed') this.malformed(typeof data === 'string' ? data : `(${typeof data} data, or a header that is not printable ASCII)`);
      return;
    }
    const { header, hasBody, payload } = frame;
    const parts = header.split(' ');
    // After close(): only the answers to publishes already sent, which the server sends before its close frame.
    if (this.state === 'closed' && !((parts[0] === 'ACK' || parts[0] === 'ERR') && this.inFlight.has(parts[parts[0] === 'ACK' ? 1 : 2])))
      return;
    switch (parts[0]) {
      case 'MSG': {
        const pos = parsePosition(parts[2]);
        const kind = parts.length === 3 ? 'live' : KINDS.get(parts[3]);
        if (!pos || !kind || parts.length > 4 || !parts[1] || !hasBody) return this.malformed(header);
        return this.message(parts[1], pos, kind, payload);
      }
      case 'SYNC':
      case 'RESYNC': {
        const pos = parsePosition(parts[2]);
        if (!pos || parts.length !== 3 || !parts[1]) return this.malformed(header);
        return this.synced(parts[1], pos, parts[0] === 'RESYNC');
      }
      case 'ACK': {
        const p = parts.length === 2 ? this.inFlight.get(parts[1]) : undefined;
        if (!p) return this.malformed(header);
        this.answered(p);
        return p.resolve();
      }
      case 'ERR':
        if (!parts[1]) return this.malformed(header);
        return this.refusal(parts[1], parts.slice(2));
      case 'PONG': {
        // Only the client sends PINGs on its connection, each with a token it still waits for.
        const i = this.outstanding.findIndex((o) => 'token' in o && o.token === parts[1]);
        if (parts.length !== 2 || i < 0) return this.malformed(header);
        this.outstanding.splice(i, 1);
        for (const [subject, t] of this.stale) if (t === parts[1]) this.stale.delete(subject);
        return;
      }
      case 'AUTH':
        if (!parts[1]) return this.malformed(header);
        return this.auth(header, parts[1], parts.slice(2).join(' '));
      default:
        return this.malformed(header);
    }
  }

  /** `AUTH ok <expiry>|invalid <detail>` answers our oldest AUTH; `expiring <s>` and `expired` come on their own. */
  private auth(header: string, state: string, detail: string): void {
    this.emit('auth', { state, detail });
    if (this.state === 'closed') return;
    if (state === 'ok' || state === 'invalid') {
      const i = this.outstanding.findIndex((o) => 'auth' in o);
      if (i < 0 && state === 'invalid' && this.transport === 'sse' && this.socket && this.token === this.accepted) {
        // A reopened event stream's token, the one in force, refused: it expired meanwhile.
        this.tokenStale = `the server refused the token in force (${detail})`;
        return this.drop(this.socket, 1008, 'token refused');
      }
      if (i < 0) return; // not ours to settle (an older server's line, a later protocol's)
      const cmd = (this.outstanding.splice(i, 1)[0] as { auth: AuthCommand }).auth;
      let expiry: number | null = null;
      if (state === 'ok') {
        expiry = /^[0-9]{1,16}$/.test(detail) ? Number(detail) : NaN;
        if (Number.isNaN(expiry)) this.malformed(header);
      }
      return this.authAnswered(cmd, expiry, detail);
    }
    if (state === 'expiring' && this.refreshToken && this.state === 'open') {
      const seconds = /^[0-9]{1,9}$/.test(detail) ? Number(detail) : 0;
      this.renewBy = Date.now() + seconds * 1000;
      if (this.renewTimer !== null) platform.clearTimeout(this.renewTimer);
      this.renewTimer = null;
      this.renew(0);
    } else if (state === 'expired' && this.token !== undefined && this.token === this.accepted) this.tokenStale = 'the token expired';
  }

  /** An event of the event stream (transport sse; docs/http.md): the same as the WebSocket's messages. */
  private receiveEvent(event: StreamEvent): void {
    if (this.state === 'closed') return;
    const { type, data } = event;
    const space = data.indexOf(' ');
    const word = space < 0 ? data : data.slice(0, space);
    const rest = space < 0 ? '' : data.slice(space + 1);
    switch (type) {
      case 'auth':
        return this.auth(`AUTH ${data}`.slice(0, MAX_HEADER), word, rest);
      case 'err': {
        // `<code> <subject>: <detail>` for a refused subject; other refusals name none.
        const e = new StarlingError(word, rest);
        const sub = this.subs.get(rest.split(' ')[0].replace(/:$/, ''));
        if (sub && sub.phase !== 'idle') return this.refused(sub, e);
        return this.emit('error', e);
      }
      case 'sync':
      case 'resync': {
        const pos = parsePosition(rest);
        if (!pos || !word || rest.includes(' ')) return this.malformed(`${type}: ${data}`);
        return this.synced(word, pos, type === 'resync');
      }
    }
    // A message: `message` (live) or its kind, `-base64` when binary, `-utf8-base64` when text with a CR; its id
    // is `<subject>@<epoch>:<seq>`.
    const encoding = /-utf8-base64$/.test(type) ? 'utf8-base64' : /-base64$/.test(type) ? 'base64' : 'text';
    const name = encoding === 'text' ? type : type.slice(0, type.length - encoding.length - 1);
    const kind = name === 'message' ? 'live' : KINDS.get(name);
    const at = event.id.lastIndexOf('@');
    const pos = parsePosition(event.id.slice(at + 1));
    const subject = event.id.slice(0, at);
    if (!kind || at <= 0 || !pos) return this.malformed(`${type} ${event.id}`);
    let payload: Payload = data;
    if (encoding !== 'text') {
      let bytes: Uint8Array;
      try {
        const binary = platform.atob(data);
        bytes = new Uint8Array(binary.length);
        for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      } catch {
        return this.malformed(`${type} ${event.id}: not base64`);
      }
      payload = encoding === 'base64' ? bytes : new platform.TextDecoder().decode(bytes);
    }
    this.message(subject, pos, kind, payload);
  }

  /** The server's base URL for the HTTP paths: the current server's, ws(s):// read as http(s)://. */
  private httpBase(): string {
    return this.servers[this.server].replace(/^ws(s?):/i, 'http$1:');
  }

  /** Every subscription's spec at its position (a subscription without one: its history), and the stream's URL. */
  private streamUrl(): string {
    this.streamSubs = new Set(this.subs.values());
    const params = [...this.subs.values()].map((sub) => `subject=${encodeURIComponent(sub.spec().replace(/^conflate=\d+ /, ''))}`);
    const conflate = [...this.subs.values()][0]?.conflate;
    if (conflate) params.push(`conflate=${conflate}`);
    if (this.token !== undefined) params.push(`token=${encodeURIComponent(this.token)}`);
    return new platform.URL(`sse${params.length ? '?' + params.join('&') : ''}`, this.httpBase()).href;
  }

  /**
   * Transport sse: one event stream carries every subscription, with one `conflate` and a URL the server reads
   * (a head of at most 8 KiB): a subscription that cannot join it is refused at once.
   */
  private checkStreamRoom(subject: string, conflate: number | undefined): void {
    const other = [...this.subs.values()][0];
    if (other && other.conflate !== conflate)
      throw new Error(
        `subscribe: ${subject}: with transport 'sse' every subscription shares one event stream, so one conflate setting (${other.conflate ?? 'none'} here, ${conflate ?? 'none'} asked); use another client, or transport 'websocket'`,
      );
    // The URL with every spec at its longest position (`@` + 13 + `:` + 16 characters).
    let length = new platform.URL('sse', this.httpBase()).href.length + 40 + (this.token ? this.token.length + 7 : 0);
    for (const s of [...this.subs.keys(), subject]) length += 9 + encodeURIComponent(s).length + 33;
    if (length > MAX_STREAM_URL)
      throw new RangeError(
        `subscribe: ${subject}: with transport 'sse' the subscriptions go in the event stream's URL, and ${this.subs.size + 1} of them would make it longer than ${MAX_STREAM_URL} characters (the server reads request heads up to 8 KiB); use another client, or transport 'websocket'`,
      );
  }

  /** Transport sse: reopens the event stream once this task is done (several subscriptions at once, one reopening). */
  private reopenSoon(): void {
    if (this.reopenQueued || this.state !== 'open') return;
    this.reopenQueued = true;
    platform.queueMicrotask(() => {
      this.reopenQueued = false;
      if (this.state === 'open') this.reopen();
    });
  }

  /**
   * Transport sse: replaces the event stream with one carrying the subscriptions as they are now, each from its
   * position, so nothing is missed or repeated. The old stream is cut and nothing more of it is read; a
   * subscription that was live stays so for the application (its new SYNC is silent, a RESYNC is not).
   */
  private reopen(): void {
    const old = this.socket;
    if (!old || this.state !== 'open' || !this.fetchImpl) return;
    this.detach(old);
    old.onclose = null;
    this.retire(old);
    for (const sub of this.subs.values()) {
      sub.resumed ||= sub.phase === 'live'; // (still resumed when reopened again before its SYNC)
      sub.phase = 'subscribing';
    }
    const fetchImpl = this.fetchImpl;
    const url = this.servers[this.server];
    this.clearTimer();
    this.open(url, () => new EventStream(fetchImpl, this.streamUrl()));
  }

  /** Transport sse: once no subscription waits for its SYNC, the stream a reopening replaced is closed. */
  private answeredAll(): void {
    if (this.retiring.length && ![...this.subs.values()].some((s) => s.phase === 'subscribing')) this.retire(null);
  }

  /** Transport sse: keeps `stream` (detached) until the current one answered every subscription; null closes them all now. */
  private retire(stream: WebSocketLike | null): void {
    if (stream) this.retiring.push(stream);
    const close = stream ? this.retiring.splice(0, Math.max(0, this.retiring.length - MAX_RETIRING)) : this.retiring.splice(0);
    for (const old of close) {
      try {
        old.close();
      } catch {
        /* closed already */
      }
    }
  }

  /** Transport sse: a publish as `POST /publish`, once the previous one was answered. */
  private post(p: PendingPublish): void {
    this.lastPost = this.lastPost
      .then(() => this.postNow(p))
      .catch((e: unknown) => p.reject(new StarlingError('connect', `POST /publish: ${(e as Error)?.message ?? String(e)}`, { subject: p.subject, cause: e })));
  }

  private async postNow(p: PendingPublish): Promise<void> {
    if (this.state === 'closed') return p.reject(new StarlingError('closed', 'the client was closed before it was sent', { subject: p.subject }));
    const url = new platform.URL(`publish?subject=${encodeURIComponent(p.subject)}${p.retained ? '&retained=1' : ''}`, this.httpBase()).href;
    const headers: Record<string, string> = { 'Content-Type': typeof p.body === 'string' ? 'text/plain; charset=utf-8' : 'application/octet-stream' };
    const token = this.accepted ?? this.token;
    if (token !== undefined) headers.Authorization = `Bearer ${token}`;
    let status = 0;
    let text: string;
    try {
      const res = await this.fetchImpl!(url, { method: 'POST', headers, body: p.body, cache: 'no-store' });
      status = res.status;
      text = await readBounded(res.body, MAX_ANSWER_BYTES);
    } catch (e) {
      return p.reject(
        new StarlingError('connection-lost', `POST /publish failed before its answer (${(e as Error)?.message ?? String(e)}); the message may or may not have been published`, {
          subject: p.subject,
          cause: e,
        }),
      );
    }
    let answer: { ok?: unknown; error?: unknown; detail?: unknown };
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      return p.reject(new StarlingError('protocol', `POST /publish answered ${status} without JSON: ${JSON.stringify(text.slice(0, 120))}`, { subject: p.subject }));
    }
    if (status === 200 && answer.ok === true) return p.resolve();
    const code = typeof answer.error === 'string' ? answer.error : 'protocol';
    p.reject(new StarlingError(code, typeof answer.detail === 'string' ? answer.detail : `HTTP ${status}`, { subject: p.subject }));
  }

  private malformed(what: string): void {
    this.emit('error', new StarlingError('protocol', `malformed server message ${JSON.stringify(what.slice(0, 120))}`));
  }

  /** A publish got its answer. */
  private answered(p: PendingPublish): void {
    this.inFlight.delete(p.id);
    const i = this.outstanding.findIndex((o) => 'publish' in o && o.publish === p);
    if (i >= 0) this.outstanding.splice(i, 1);
  }

  /** `ERR <code> [<id>] [<detail>]`: a publish's when the token after the code is an id in flight, else the oldest outstanding command's. */
  private refusal(code: string, rest: string[]): void {
    const p = rest.length > 0 ? this.inFlight.get(rest[0]) : undefined;
    if (p) {
      this.answered(p);
      return p.reject(new StarlingError(code, rest.slice(1).join(' '), { subject: p.subject }));
    }
    const e = new StarlingError(code, rest.join(' '));
    const head = this.outstanding[0];
    if (!head) return this.emit('error', e);
    if ('token' in head) return head.onError(e);
    if ('auth' in head) {
      // The AUTH itself refused (the server could not read it): as AUTH invalid.
      this.outstanding.shift();
      return this.authAnswered(head.auth, null, `${code} ${e.detail}`);
    }
    this.answered(head.publish);
    head.publish.reject(new StarlingError(code, e.detail, { subject: head.publish.subject }));
  }

  private message(subject: string, pos: Position, kind: MessageKind, payload: Payload): void {
    if (this.stale.has(subject)) return;
    const sub = this.subs.get(subject);
    if (!sub || sub.phase === 'idle') return;
    const last = sub.last;
    if (kind === 'snapshot' && sub.snapshotFloor !== undefined) {
      // After a RESYNC: the retained snapshot is older than the position RESYNC gave; deliver it unless seen.
      const floor = sub.snapshotFloor;
      sub.snapshotFloor = undefined;
      if (floor && floor.epoch === pos.epoch && pos.seq <= floor.seq) return;
      if (last && last.epoch === pos.epoch && pos.seq > last.seq) sub.last = pos;
      return this.deliver(sub, { subject, payload, epoch: pos.epoch, seq: pos.seq, kind });
    }
    sub.snapshotFloor = undefined;
    if (last && last.epoch === pos.epoch && pos.seq <= last.seq) return; // a duplicate
    if (kind === 'live' && sub.phase === 'live' && last && (pos.epoch !== last.epoch || (!sub.conflate && pos.seq !== last.seq + 1)))
      return this.recover(sub);
    sub.last = pos;
    this.deliver(sub, { subject, payload, epoch: pos.epoch, seq: pos.seq, kind });
  }

  private deliver(sub: Sub, m: Message): void {
    try {
      sub.handler(m);
    } catch (e) {
      this.emit('error', new StarlingError('handler', `the handler of ${sub.subject} threw: ${(e as Error)?.message ?? String(e)}`, { subject: sub.subject, cause: e }));
    }
  }

  private synced(subject: string, pos: Position, resync: boolean): void {
    if (this.stale.has(subject)) return;
    const sub = this.subs.get(subject);
    if (!sub || sub.phase !== 'subscribing') return;
    const previous = sub.last;
    sub.last = pos;
    sub.phase = 'live';
    if (resync) sub.snapshotFloor = previous;
    this.answeredAll();
    sub.resolveReady();
    const resumed = sub.resumed;
    sub.resumed = false;
    if (resumed && !resync) return; // an event stream reopened: nothing was missed, nothing to say
    if (resync) this.emit('resync', { subject, epoch: pos.epoch, seq: pos.seq, previous: previous && { ...previous } });
    else this.emit('sync', { subject, epoch: pos.epoch, seq: pos.seq });
  }

  private emit<K extends ClientEvent>(event: K, value: ClientEvents[K]): void {
    const set = this.listeners.get(event) as Set<Listener<K>> | undefined;
    if (!set || set.size === 0) {
      if (event === 'error') platform.console?.error(`starling client: ${(value as StarlingError).message}`);
      return;
    }
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (e) {
        if (event === 'error') platform.console?.error('starling client: an error listener threw', e);
        else this.emit('error', new StarlingError('handler', `a ${String(event)} listener threw: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
      }
    }
  }
}
