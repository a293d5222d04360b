// Test helpers for the end-to-end suites: a `ws` client with an awaitable message queue, servers that
// are closed when the test file ends, and a raw TCP client that sends arbitrary bytes (hand-built
// frames, broken HTTP) and reads what the server answers. Everything waits on events with a generous
// timeout that fails with a description of what was awaited; nothing sleeps to let the server "catch up".
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import WebSocket from 'ws';
import { createServer, type Logger, type Server } from '../src/index';

/** How long any single wait may take before the test fails. Generous: CI machines have 2 cores. */
export const TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------------------------------------------
// Optional programs

/** True in CI: .ci/run exports CI=true, and there every optional program is required. */
export const IN_CI = process.env.CI === 'true';

/**
 * Programs to report missing although installed: HIDE_TEST_PROGRAMS=chromium,nats-server,redis-server. test/fresh-clone.sh sets
 * it to run `npm test` as on a machine that has only the build tools.
 */
export const HIDDEN_PROGRAMS = new Set((process.env.HIDE_TEST_PROGRAMS ?? '').split(',').map((p) => p.trim()).filter(Boolean));

/** A program some suite needs that a developer's machine may lack. */
export interface NeededProgram {
  /** Its name, as the line says it: `chromium`, `nats-server`. */
  program: string;
  /** Where it was found, or null when it was not. */
  path: string | null | undefined;
  /** The command that installs it: `apt-get install chromium`. */
  install: string;
}

/**
 * describe() for a suite that needs an optional program. When it is missing, outside CI the suite is skipped
 * with one line saying what to install; in CI (CI=true) the program is required: the suite is replaced by one
 * failing test with that line.
 */
export function describeWith(need: NeededProgram, name: string, options: { timeout?: number }, fn: () => void): void {
  if (need.path && !HIDDEN_PROGRAMS.has(need.program)) {
    describe(name, options, fn);
    return;
  }
  const line = `${need.program} is not installed (${need.install})`;
  if (!IN_CI) describe(name, { ...options, skip: line }, fn);
  else describe(name, options, () => it(`needs ${need.program}`, () => assert.fail(`${line}; it is required when CI=true`)));
}

// ---------------------------------------------------------------------------------------------------
// Servers

const servers = new Set<Server>();
const sockets = new Set<{ destroy(): void }>();

after(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all([...servers].map((s) => s.close()));
});

/**
 * Defaults for tests: loopback, an ephemeral port, two workgroups assigned round-robin, quiet logs, no monitor
 * (its default port 8900 would be shared by every server; test/60.monitor.test.ts turns it on), and the I/O
 * backend TEST_IO_BACKEND names (epoll by default).
 */
export const TEST_CONFIG = {
  Listen: '127.0.0.1:0',
  Workgroups: 2,
  BenchmarkMode: true,
  LogLevel: 'warn',
  Monitor: '',
  // `npm test` runs the server suites once per backend (test/uring-pass.sh sets TEST_IO_BACKEND for the second pass).
  IoBackend: process.env.TEST_IO_BACKEND ?? 'epoll',
};

/**
 * Starts a server with TEST_CONFIG plus `overrides` (and `log`, to capture its log lines); it is closed when the
 * test file ends (or earlier by the test).
 */
export function startServer(overrides: Record<string, unknown> = {}, log?: Logger): Server {
  const server = createServer({ ...TEST_CONFIG, ...overrides }, log);
  servers.add(server);
  return server;
}

/** A loopback port no process listens on now (the kernel's pick for 127.0.0.1:0, released at once): for a server
 * a test starts itself, or an address where nothing answers. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Fails with `what` unless `promise` settles within `ms`. */
export function within<T>(promise: Promise<T>, what: string, ms = TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls `probe` (every 10 ms) until it returns true; for server state that has no event to wait on,
 * such as counters. Fails after TIMEOUT_MS with `what` and the last value `describe` gives.
 */
export async function waitFor(what: string, probe: () => boolean, describe: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!probe()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what}; last: ${JSON.stringify(describe())}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Per-workgroup value of one counter, e.g. perWorkgroup(server, 'connections') → [1, 0]. */
export function perWorkgroup(server: Server, counter: string): number[] {
  const stats = server.stats();
  if (!(counter in stats.total)) throw new Error(`the addon has no counter named ${counter}`);
  return stats.workgroups.map((w) => w.counters[counter]);
}

// ---------------------------------------------------------------------------------------------------
// WebSocket client

/** A message as the client received it. */
export interface Message {
  data: Buffer;
  binary: boolean;
  /** data as UTF-8. */
  text: string;
}

/** A parsed `MSG <subject> <epoch>:<seq>\n<payload>`. */
export interface Msg {
  subject: string;
  epoch: string;
  seq: number;
  payload: Buffer;
  binary: boolean;
}

export interface Closed {
  code: number;
  reason: string;
}

let syncCounter = 0;

/** A `ws` client whose messages queue up until the test takes them with next(). */
export class Client {
  readonly ws: WebSocket;
  /** Resolves when the connection closes, with the close code the peer sent (1006 if none). */
  readonly closed: Promise<Closed>;
  private readonly queue: Message[] = [];
  private waiter: ((m: Message) => void) | null = null;
  private closedWith: Closed | null = null;
  private error: Error | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, binary: boolean) => {
      const m = { data, binary, text: data.toString('utf8') };
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(m);
      } else {
        this.queue.push(m);
      }
    });
    ws.on('error', (err) => (this.error = err));
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closedWith = { code, reason: reason.toString() };
        resolve(this.closedWith);
      }),
    );
  }

  /** Opens a connection to `server` (or a URL) and waits for the handshake. */
  static async open(server: Server | string, options: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<Client> {
    const url = typeof server === 'string' ? server : server.url;
    const { protocols, ...rest } = options;
    const ws = new WebSocket(url, protocols ?? [], { perMessageDeflate: false, ...rest });
    sockets.add({ destroy: () => ws.terminate() });
    await within(
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected HTTP ${res.statusCode}`)));
      }),
      `the WebSocket handshake with ${url}`,
    );
    return new Client(ws);
  }

  /** Sends one message: a string as a text frame, a Buffer as a binary frame. */
  send(data: string | Buffer): void {
    this.ws.send(data, { binary: typeof data !== 'string' });
  }

  /** The next message, in arrival order. Fails if none arrives in time or the connection closes first. */
  next(what = 'a message', ms = TIMEOUT_MS): Promise<Message> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.error || this.closedWith)
      return Promise.reject(new Error(`waiting for ${what}, but the connection is closed (${JSON.stringify(this.closedWith)}, error ${this.error})`));
    const arrival = new Promise<Message>((resolve, reject) => {
      this.waiter = resolve;
      this.closed.then((c) => reject(new Error(`connection closed (code ${c.code} ${c.reason}) while waiting for ${what}`)));
    });
    return within(arrival, what, ms).finally(() => (this.waiter = null));
  }

  /** The next message, which must be a text frame equal to `text`. */
  async expect(text: string): Promise<void> {
    const m = await this.next(JSON.stringify(text));
    assert.equal(m.binary, false, `expected text frame ${JSON.stringify(text)}, got a binary frame`);
    assert.equal(m.text, text);
  }

  /** The next message, which must be a MSG; returned parsed. */
  async nextMsg(what = 'a MSG'): Promise<Msg> {
    return parseMsg(await this.next(what));
  }

  /**
   * A PING barrier: sends `PING <unique token>` and returns every message that arrived before the
   * matching PONG. When it returns, every command this client sent earlier has been processed.
   */
  async sync(): Promise<Message[]> {
    const token = `sync-${++syncCounter}`;
    this.send(`PING ${token}`);
    const before: Message[] = [];
    for (;;) {
      const m = await this.next(`PONG ${token}`);
      if (!m.binary && m.text === `PONG ${token}`) return before;
      before.push(m);
    }
  }

  /** Sends the commands, then a PING barrier; fails if anything (an ERR, say) came back before the PONG. */
  async command(...commands: (string | Buffer)[]): Promise<void> {
    for (const c of commands) this.send(c);
    const replies = await this.sync();
    assert.deepEqual(replies.map((m) => m.text), [], `unexpected replies to ${JSON.stringify(commands.map(String))}`);
  }

  /** Messages received and not yet taken. */
  get pending(): number {
    return this.queue.length;
  }

  /** Closes with 1000 and waits for the close handshake. */
  async close(): Promise<Closed> {
    if (!this.closedWith) this.ws.close(1000);
    return within(this.closed, 'the close handshake');
  }
}

/** Opens `n` clients, at most `parallel` handshakes at a time. */
export async function openMany(server: Server, n: number, parallel = 100): Promise<Client[]> {
  const clients: Client[] = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, () => Client.open(server)));
    clients.push(...batch);
  }
  return clients;
}

/**
 * Opens a client and reports the workgroup it was placed on (the one whose `accepted` counter moved).
 * Connections must be opened one at a time for this to be unambiguous.
 */
export async function openPlaced(server: Server, options: WebSocket.ClientOptions = {}): Promise<{ client: Client; workgroup: number }> {
  const before = perWorkgroup(server, 'accepted');
  const client = await Client.open(server, options);
  const moved = perWorkgroup(server, 'accepted').map((v, i) => v - before[i]);
  assert.deepEqual(moved.filter((d) => d !== 0), [1], `expected exactly one new connection, got ${JSON.stringify(moved)}`);
  return { client, workgroup: moved.indexOf(1) };
}

/** Parses a server MSG; fails if `m` is not one. */
export function parseMsg(m: Message): Msg {
  const nl = m.data.indexOf(0x0a);
  const header = m.data.subarray(0, nl < 0 ? m.data.length : nl).toString('latin1');
  const match = /^MSG (\S+) ([0-9a-z]+):([0-9]+)$/.exec(header);
  assert.ok(match && nl >= 0, `expected "MSG <subject> <epoch>:<seq>\\n<payload>", got ${JSON.stringify(m.data.subarray(0, 120).toString('latin1'))}`);
  return { subject: match[1], epoch: match[2], seq: Number(match[3]), payload: m.data.subarray(nl + 1), binary: m.binary };
}

/** Splits `ERR <code> [<id>] [<detail>]` into its code and the rest; fails if `m` is not an ERR. */
export function parseErr(m: Message): { code: string; rest: string[] } {
  assert.equal(m.binary, false, 'ERR must be a text frame');
  const parts = m.text.split(' ');
  assert.equal(parts[0], 'ERR', `expected an ERR, got ${JSON.stringify(m.text)}`);
  return { code: parts[1], rest: parts.slice(2) };
}

/**
 * Proves the server still serves: a fresh subscriber and a fresh publisher on `server` complete a
 * SUB / PUB / MSG round trip (the publisher gets its ACK, the subscriber the message).
 */
export async function assertServes(server: Server): Promise<void> {
  const subject = `/health/${++syncCounter}`;
  const sub = await Client.open(server);
  const pub = await Client.open(server);
  await sub.command(`SUB ${subject}`);
  pub.send(`PUB ${subject} h1\nstill serving`);
  await pub.expect('ACK h1');
  const m = await sub.nextMsg(`the health-check message on ${subject}`);
  assert.equal(m.subject, subject);
  assert.equal(m.payload.toString(), 'still serving');
  await Promise.all([sub.close(), pub.close()]);
}

// ---------------------------------------------------------------------------------------------------
// Raw TCP: hand-built frames and HTTP

export const OP = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

export interface FrameOptions {
  fin?: boolean;
  /** RSV1-3 as a 3-bit number (4 = RSV1). */
  rsv?: number;
  /** Client frames must be masked; false builds an illegal unmasked frame. */
  mask?: boolean;
  /** Payload length to announce instead of the real one (the bytes sent stay `payload`). */
  announce?: number;
}

/** A client frame: `payload` masked with a fixed non-zero key unless `mask` is false. */
export function frame(opcode: number, payload: string | Buffer = Buffer.alloc(0), o: FrameOptions = {}): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const len = o.announce ?? body.length;
  const masked = o.mask ?? true;
  const head: number[] = [((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (len <= 125) head.push(maskBit | len);
  else if (len <= 0xffff) head.push(maskBit | 126, len >> 8, len & 0xff);
  else {
    head.push(maskBit | 127);
    const big = Buffer.alloc(8);
    big.writeBigUInt64BE(BigInt(len));
    head.push(...big);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), body]);
  const key = [0x37, 0xfa, 0x21, 0x3d];
  const out = Buffer.from(body);
  for (let i = 0; i < out.length; i++) out[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from(head), Buffer.from(key), out]);
}

/** A masked close frame with `code`. */
export function closeFrame(code: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return frame(OP.close, b);
}

/** An HTTP/1.1 upgrade request for `path`; `headers` replace or (with null) remove default ones. */
export function upgradeRequest(path = '/', headers: Record<string, string | null> = {}, method = 'GET'): string {
  const all: Record<string, string | null> = {
    Host: 'localhost',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...headers,
  };
  const lines = Object.entries(all).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`);
  return `${method} ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}

export interface HttpResponse {
  status: number;
  statusLine: string;
  headers: Record<string, string>;
  body: string;
}

export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** A TCP connection to the server that sends exactly the bytes it is given. */
export class Raw {
  readonly socket: net.Socket;
  /** Resolves when the server has closed its side (or the connection was reset). */
  readonly ended: Promise<void>;
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private done = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.notify();
    });
    this.ended = new Promise((resolve) => {
      const end = () => {
        this.done = true;
        this.notify();
        resolve();
      };
      socket.on('end', end);
      socket.on('close', end);
      socket.on('error', () => {}); // a reset is an end too; 'close' follows
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  static async connect(server: Server): Promise<Raw> {
    const { host, port } = server.addresses[0];
    const socket = net.connect({ host, port });
    sockets.add(socket);
    await within(new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject)), 'a TCP connection');
    return new Raw(socket);
  }

  /**
   * Connects and, without waiting for the connection to be established, sends `bytes` followed by a
   * FIN (socket.end): a client whose whole life reaches the server at once.
   */
  static sendAndEnd(server: Server, bytes: Buffer): Raw {
    const { host, port } = server.addresses[0];
    const socket = net.connect({ host, port });
    sockets.add(socket);
    socket.end(bytes);
    return new Raw(socket);
  }

  /** Connects and completes a WebSocket handshake; fails unless the server answers 101. */
  static async open(server: Server): Promise<Raw> {
    const raw = await Raw.connect(server);
    raw.write(upgradeRequest());
    const res = await raw.response();
    assert.equal(res.status, 101, `expected 101, got ${res.statusLine}`);
    return raw;
  }

  write(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** Sends a masked text frame. */
  command(text: string): void {
    this.write(frame(OP.text, text));
  }

  /** Bytes received and not yet consumed. */
  get received(): Buffer {
    return this.buf;
  }

  /** Waits until `take` returns something from the buffered bytes (it may consume a prefix). */
  private async until<T>(what: string, take: () => T | undefined): Promise<T> {
    const wait = async (): Promise<T> => {
      for (;;) {
        const r = take();
        if (r !== undefined) return r;
        if (this.done) throw new Error(`the server closed the connection while we waited for ${what}; unread: ${JSON.stringify(this.buf.toString('latin1').slice(0, 200))}`);
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    return within(wait(), what);
  }

  /** The response head at the start of the buffer (its status line, headers and size), or undefined. */
  private parseHead(): { status: number; statusLine: string; headers: Record<string, string>; size: number } | undefined {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0])?.[1] ?? NaN);
    return { status, statusLine: lines[0], headers, size: end + 4 };
  }

  /** Reads an HTTP response head (and a Content-Length body). Leaves any later bytes unread. */
  response(): Promise<HttpResponse> {
    return this.until('an HTTP response', () => {
      const head = this.parseHead();
      if (!head) return undefined;
      const length = Number(head.headers['content-length'] ?? 0);
      if (this.buf.length < head.size + length) return undefined;
      const body = this.buf.subarray(head.size, head.size + length).toString('utf8');
      this.buf = this.buf.subarray(head.size + length);
      return { status: head.status, statusLine: head.statusLine, headers: head.headers, body };
    });
  }

  /** Reads an HTTP response head only, leaving its body unread (an event stream's never ends). */
  head(): Promise<HttpResponse> {
    return this.until('an HTTP response head', () => {
      const head = this.parseHead();
      if (!head) return undefined;
      this.buf = this.buf.subarray(head.size);
      return { status: head.status, statusLine: head.statusLine, headers: head.headers, body: '' };
    });
  }

  /** Takes every byte received and not yet consumed, waiting (up to ms) until there is at least one. */
  take(what: string, ms = TIMEOUT_MS): Promise<Buffer> {
    const wait = async (): Promise<Buffer> => {
      for (;;) {
        if (this.buf.length) {
          const out = this.buf;
          this.buf = Buffer.alloc(0);
          return out;
        }
        if (this.done) throw new Error(`the server closed the connection while we waited for ${what}`);
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    return within(wait(), what, Math.max(1, ms));
  }

  /** True once the server closed its side (or reset). */
  get closed(): boolean {
    return this.done;
  }

  /** Reads the next server frame. */
  nextFrame(): Promise<ServerFrame> {
    return this.until('a WebSocket frame', () => {
      const f = takeServerFrame(this.buf);
      if (!f) return undefined;
      this.buf = this.buf.subarray(f.size);
      return f.frame;
    });
  }

  /**
   * Reads the next frame, or null when the server closed the connection first (no partial frame left). With
   * `reset` the connection may end inside a frame: a reset (a cut slow consumer) drops what was not delivered.
   */
  nextFrameOrEnd(opts: { reset?: boolean } = {}): Promise<ServerFrame | null> {
    return this.until('a WebSocket frame or the end of the connection', () => {
      const f = takeServerFrame(this.buf);
      if (f) {
        this.buf = this.buf.subarray(f.size);
        return f.frame;
      }
      if (this.done) {
        if (!opts.reset) assert.equal(this.buf.length, 0, 'the connection ended inside a frame');
        return null;
      }
      return undefined;
    });
  }

  /** Reads the next frame, which must be a text frame; returns its text. */
  async nextText(): Promise<string> {
    const f = await this.nextFrame();
    assert.equal(f.opcode, OP.text, `expected a text frame, got opcode ${f.opcode}: ${f.payload.toString('latin1').slice(0, 100)}`);
    return f.payload.toString('utf8');
  }

  /**
   * Reads frames up to the server's close frame and returns its code; fails if a non-close frame comes
   * first unless `skipOthers`. Then completes the close handshake and waits for the server to close TCP.
   */
  async closeCode(skipOthers = false): Promise<number> {
    for (;;) {
      const f = await this.nextFrame();
      if (f.opcode === OP.close) {
        assert.ok(f.payload.length >= 2, 'the close frame carries a code');
        const code = f.payload.readUInt16BE(0);
        if (!this.done) this.write(closeFrame(code));
        await within(this.ended, 'the server to close the TCP connection after its close frame');
        return code;
      }
      if (!skipOthers) assert.fail(`expected a close frame, got opcode ${f.opcode}: ${f.payload.toString('latin1').slice(0, 100)}`);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Parses one server frame at the start of `buf` (server frames are unmasked); undefined if incomplete. */
export function takeServerFrame(buf: Buffer): { frame: ServerFrame; size: number } | undefined {
  if (buf.length < 2) return undefined;
  assert.equal(buf[1] & 0x80, 0, 'server frames must not be masked');
  assert.equal(buf[0] & 0x70, 0, 'server frames must not set RSV bits');
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return undefined;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return undefined;
    len = Number(buf.readBigUInt64BE(2));
    off = 10;
  }
  if (buf.length < off + len) return undefined;
  return { frame: { fin: (buf[0] & 0x80) !== 0, opcode: buf[0] & 0x0f, payload: buf.subarray(off, off + len) }, size: off + len };
}

// ---------------------------------------------------------------------------------------------------
// Headless Chromium (Debian's package; STARLING_CHROMIUM names another build; nothing downloads a browser)

export const CHROMIUM = process.env.STARLING_CHROMIUM || '/usr/bin/chromium';
/** Flags for a quiet, sandbox-free headless browser in a test. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'];
/** For describeWith: skipped outside CI with the line saying what to install, required with CI=true. */
export const NEEDS_CHROMIUM = { program: 'chromium', path: fs.existsSync(CHROMIUM) ? CHROMIUM : null, install: 'apt-get install chromium' };
