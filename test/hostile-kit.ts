// The kit of the core-defect suites (test/32.*, 33.*, 34.*): a Starling server in a child process (its
// memory and CPU read from /proc, its exit observed), well-behaved subscribers that check every sequence
// number, and the hostile clients — flooders and non-readers on raw sockets that complete the WebSocket
// handshake and then never read. Everything it opens is closed or killed when the test file ends, whether
// the tests passed or not.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import WebSocket from 'ws';
import { OP, takeServerFrame, upgradeRequest, within, type ServerFrame } from './helpers';

export const MB = 1024 * 1024;
/** How far the server's RSS may stay above its baseline once an attack is over. */
export const RSS_SLACK = 64 * MB;
/** How long the RSS has to come back. */
export const RSS_SETTLE_MS = 10_000;

const FIXTURE = path.join(__dirname, 'fixtures', 'server-child.js');
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

// ---------------------------------------------------------------------------------------------------
// Cleanup: everything opened here is destroyed when the file's tests end.

const owned = new Set<{ destroy(): void }>();
const children = new Set<ServerChild>();

/** Destroys what the kit opened so far (sockets first, then server children). Also runs after the file. */
export async function cleanup(): Promise<void> {
  for (const s of owned) {
    try {
      s.destroy();
    } catch {
      /* already gone */
    }
  }
  owned.clear();
  await Promise.all([...children].map((c) => c.kill()));
}

after(cleanup);
process.on('exit', () => {
  for (const c of children) c.proc.kill('SIGKILL');
});

/** Registers something to destroy at cleanup (a socket, a `ws` client wrapped as { destroy }). Returns it. */
export function track<T extends { destroy(): void }>(x: T): T {
  owned.add(x);
  return x;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` every `every` ms until it returns a value (not undefined) or `ms` passes; then undefined. */
export async function poll<T>(probe: () => T | undefined | Promise<T | undefined>, ms: number, every = 50): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) return undefined;
    await sleep(every);
  }
}

// ---------------------------------------------------------------------------------------------------
// The server child

export interface SpawnOptions {
  /** prlimit(1) options, e.g. ['--nofile=300:300'] or ['--data=1500000000']. */
  limits?: string[];
  /** Log lines of the child go to the test's stderr as well when set (debugging). */
  echo?: boolean;
  /** Variables added to the child's environment. */
  env?: Record<string, string>;
}

/** What the child said when it exited: its code or the signal that ended it. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Test defaults: loopback, a free port, two workgroups assigned round-robin (BenchmarkMode), no monitor. */
// CacheSize: the history cache keeps up to CacheSize of what a flood published, by design (bounded by configuration);
// the floods here measure that queues and sessions give their memory back, so the cache is kept small beside the
// 64 MB tolerance of assertRssBack.
// IoBackend: the backend TEST_IO_BACKEND names (epoll by default), as test/helpers.ts does for in-process servers, so
// that test/uring-pass.sh runs these suites on io_uring too.
export const CHILD_DEFAULTS = {
  Listen: '127.0.0.1:0',
  Workgroups: 2,
  BenchmarkMode: true,
  LogLevel: 'warn',
  Monitor: '',
  CacheSize: '8M',
  IoBackend: process.env.TEST_IO_BACKEND ?? 'epoll',
};

/** A Starling server running in a child process (test/fixtures/server-child.ts). */
export class ServerChild {
  readonly host = '127.0.0.1';
  /** TCP connections the kit opened to this server, in connect order: with BenchmarkMode the i-th goes to workgroup i % Workgroups. */
  connections = 0;
  exit: Exit | null = null;
  readonly exited: Promise<Exit>;
  private statsWaiters: ((s: any) => void)[] = [];

  private constructor(
    readonly proc: ChildProcess,
    readonly pid: number,
    readonly port: number,
    readonly workgroups: number,
    /** URL of the monitor (`/stats`), when the config turns it on. */
    readonly monitor: string | null,
    exited: Promise<Exit>,
    private readonly log: () => string,
  ) {
    this.exited = exited;
    exited.then((e) => (this.exit = e));
  }

  /** Starts `node server-child.js <config>` (under prlimit when `limits` are given) and waits until it listens. */
  static async start(config: Record<string, unknown> = {}, o: SpawnOptions = {}): Promise<ServerChild> {
    const full = { ...CHILD_DEFAULTS, ...config };
    const argv = [process.execPath, FIXTURE, JSON.stringify(full)];
    const cmd = o.limits?.length ? ['prlimit', ...o.limits, '--', ...argv] : argv;
    const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
    let log = '';
    let resolveExit!: (e: Exit) => void;
    const exited = new Promise<Exit>((r) => (resolveExit = r));
    proc.on('exit', (code, signal) => resolveExit({ code, signal }));
    proc.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (o.echo) process.stderr.write(`[child] ${d}`);
    });
    const lines = readline.createInterface({ input: proc.stdout! });
    let child: ServerChild | null = null;
    const ready = new Promise<{ pid: number; port: number; monitor: string | null }>((resolve, reject) => {
      lines.on('line', (line) => {
        if (line.startsWith('READY ')) resolve(JSON.parse(line.slice(6)));
        else if (line.startsWith('STATS ') && child) child.statsWaiters.shift()?.(JSON.parse(line.slice(6)));
        else if (o.echo) process.stderr.write(`[child out] ${line}\n`);
      });
      exited.then((e) => reject(new Error(`the server child exited before listening (${JSON.stringify(e)}): ${log.slice(-2000)}`)));
    });
    const killEarly = { destroy: () => proc.kill('SIGKILL') };
    owned.add(killEarly);
    const info = await within(ready, 'the server child to listen');
    owned.delete(killEarly);
    child = new ServerChild(proc, info.pid, info.port, Number(full.Workgroups), info.monitor ?? null, exited, () => log);
    children.add(child);
    return child;
  }

  get url(): string {
    return `ws://${this.host}:${this.port}/`;
  }

  get alive(): boolean {
    return this.exit === null;
  }

  /** The child's stderr so far (its log lines, or why it aborted). */
  get output(): string {
    return this.log();
  }

  /** Workgroup the next connection the kit opens will be placed on (BenchmarkMode round-robin). */
  get nextWorkgroup(): number {
    return this.connections % this.workgroups;
  }

  /** Resident memory of the child in bytes (VmRSS). */
  rss(): number {
    const status = fs.readFileSync(`/proc/${this.pid}/status`, 'latin1');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    assert.ok(m, 'VmRSS in /proc/<pid>/status');
    return Number(m[1]) * 1024;
  }

  /** CPU time the child used so far (user + system), in milliseconds. */
  cpuMs(): number {
    const stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command: state(3) ppid ... utime is field 14, stime 15 (1-based over the whole line).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  }

  /**
   * CPU time (user + system, ms) of the child's threads whose name starts with `prefix` — by default the native
   * ones (starling-wg<i>, starling-accept), leaving out Node's own threads. The whole process if none matches.
   */
  threadCpuMs(prefix = 'starling-'): number {
    let total = 0;
    let found = false;
    for (const t of fs.readdirSync(`/proc/${this.pid}/task`)) {
      try {
        if (!fs.readFileSync(`/proc/${this.pid}/task/${t}/comm`, 'latin1').startsWith(prefix)) continue;
        const stat = fs.readFileSync(`/proc/${this.pid}/task/${t}/stat`, 'latin1');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        total += ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
        found = true;
      } catch {
        /* the thread ended */
      }
    }
    return found ? total : this.cpuMs();
  }

  /** Open file descriptors of the child. */
  fds(): number {
    return fs.readdirSync(`/proc/${this.pid}/fd`).length;
  }

  /** server.stats() inside the child. */
  stats(): Promise<any> {
    assert.ok(this.alive, `the server child is gone: ${JSON.stringify(this.exit)}`);
    const p = new Promise<any>((resolve) => this.statsWaiters.push(resolve));
    this.proc.stdin!.write('stats\n');
    return within(Promise.race([p, this.exited.then((e) => Promise.reject(new Error(`server child exited ${JSON.stringify(e)}`)))]), 'stats from the server child');
  }

  /** Fails unless the child is still running (with what it printed if it is not). */
  assertAlive(what = 'the server'): void {
    assert.ok(this.alive, `${what} died: ${JSON.stringify(this.exit)}; its last output: ${this.log().slice(-1500)}`);
  }

  /**
   * Waits (up to RSS_SETTLE_MS) for the RSS to come back within RSS_SLACK of `baseline`, and fails with the
   * readings otherwise.
   */
  async assertRssBack(baseline: number, what: string): Promise<void> {
    this.assertAlive();
    const readings: number[] = [];
    const ok = await poll(() => {
      const r = this.rss();
      readings.push(r);
      return r <= baseline + RSS_SLACK ? true : undefined;
    }, RSS_SETTLE_MS, 250);
    const mb = (b: number) => (b / MB).toFixed(1);
    assert.ok(ok, `${what}: the server's RSS did not come back within ${mb(RSS_SLACK)} MB of its baseline ${mb(baseline)} MB in ${RSS_SETTLE_MS} ms; last readings (MB): ${readings.slice(-8).map(mb).join(', ')}`);
  }

  /** Sends SIGKILL (if still running) and waits for the exit. */
  async kill(): Promise<void> {
    children.delete(this);
    if (this.alive) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** Samples the child's RSS every `every` ms until stopped; `max` is the highest reading. */
export class RssSampler {
  max = 0;
  private timer: NodeJS.Timeout;
  constructor(private readonly child: ServerChild, every = 100) {
    const take = () => {
      try {
        if (this.child.alive) this.max = Math.max(this.max, this.child.rss());
      } catch {
        /* exited between the check and the read */
      }
    };
    take();
    this.timer = setInterval(take, every);
  }
  stop(): number {
    clearInterval(this.timer);
    return this.max;
  }
}

// ---------------------------------------------------------------------------------------------------
// Client frames without the cost of masking in JavaScript

/**
 * A masked client frame with an all-zero mask key (legal: the key is the client's choice, and XOR with zero
 * leaves the payload as is), so floods of thousands of frames are cheap to build.
 */
export function zeroMaskFrame(opcode: number, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const len = body.length;
  let head: Buffer;
  if (len <= 125) head = Buffer.from([0x80 | opcode, 0x80 | len, 0, 0, 0, 0]);
  else if (len <= 0xffff) head = Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff, 0, 0, 0, 0]);
  else {
    head = Buffer.alloc(14);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, body]);
}

/** Client frames (zero mask key) appended to one growing buffer: cheap enough for floods of 100,000 PUBs. */
export class FrameBatch {
  private buf = Buffer.allocUnsafe(4096);
  private len = 0;

  /** Appends one masked text frame whose payload is `head` (latin1) followed by `body`. */
  text(head: string, body?: Buffer): this {
    const n = head.length + (body?.length ?? 0);
    const hl = n <= 125 ? 6 : n <= 0xffff ? 8 : 14;
    this.reserve(hl + n);
    const b = this.buf;
    let o = this.len;
    b[o++] = 0x80 | OP.text;
    if (n <= 125) b[o++] = 0x80 | n;
    else if (n <= 0xffff) {
      b[o++] = 0x80 | 126;
      b.writeUInt16BE(n, o);
      o += 2;
    } else {
      b[o++] = 0x80 | 127;
      b.writeBigUInt64BE(BigInt(n), o);
      o += 8;
    }
    b.writeUInt32BE(0, o); // mask key 0
    o += 4;
    o += b.write(head, o, 'latin1');
    if (body) o += body.copy(b, o);
    this.len = o;
    return this;
  }

  /** Appends `PUB <subject>[ <id>]\n<payload>`. */
  pub(subject: string, id: string | null, payload: Buffer): this {
    return this.text(id === null ? `PUB ${subject}\n` : `PUB ${subject} ${id}\n`, payload);
  }

  /** The frames so far (a view; do not append afterwards). */
  get bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(grown, 0, 0, this.len);
    this.buf = grown;
  }
}

/** `n` PUB frames `PUB <subject> <idPrefix><i>\n<payload>` for i = from… (no id when idPrefix is null). */
export function pubFrames(subject: string, n: number, payload: Buffer | string, idPrefix: string | null, from = 0): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const batch = new FrameBatch();
  for (let i = from; i < from + n; i++) batch.pub(subject, idPrefix === null ? null : `${idPrefix}${i}`, body);
  return batch.bytes;
}

// ---------------------------------------------------------------------------------------------------
// Raw WebSocket clients

export interface RawOptions {
  /** Bind this local address (127.x.y.z). */
  localAddress?: string;
}

/**
 * A WebSocket client on a raw TCP socket: it completes the handshake and then sends exactly the bytes it is
 * given. It reads (and parses frames) until pause(); a paused client reads nothing at all, so the kernel
 * buffers fill and the server must queue or cut it.
 */
export class RawWs {
  readonly socket: net.Socket;
  /** Resolves when the TCP connection is over; `error` is the socket error code if it ended with one (ECONNRESET…). */
  readonly ended: Promise<void>;
  error: string | null = null;
  /** The server sent FIN ('end' event). */
  gotEnd = false;
  /** Server frames received, in order, while `keep` is true (see onFrame for streaming). */
  readonly frames: ServerFrame[] = [];
  keep = true;
  onFrame: ((f: ServerFrame) => void) | null = null;
  /** Bytes received over the whole connection (after the handshake). */
  bytesReceived = 0;
  private buf: Buffer = Buffer.alloc(0);
  private upgraded = false;
  private waiters: (() => void)[] = [];
  private done = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.take(d));
    this.ended = new Promise((resolve) => {
      socket.on('end', () => {
        this.gotEnd = true;
        this.notify();
      });
      socket.on('error', (e: NodeJS.ErrnoException) => (this.error = e.code ?? e.message));
      socket.on('close', () => {
        this.done = true;
        this.notify();
        resolve();
      });
    });
  }

  /** Connects to `child` (counting the connection for workgroup placement) without a handshake. */
  static async connect(child: ServerChild, o: RawOptions = {}): Promise<RawWs> {
    const socket = net.connect({ host: child.host, port: child.port, localAddress: o.localAddress });
    child.connections++;
    owned.add(socket);
    socket.on('error', () => {});
    await within(new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject)), 'a TCP connection to the server child');
    return new RawWs(socket);
  }

  /** Connects and completes the WebSocket handshake. */
  static async open(child: ServerChild, o: RawOptions = {}): Promise<RawWs> {
    const raw = await RawWs.connect(child, o);
    await raw.handshake();
    return raw;
  }

  /** Sends an upgrade request and waits for the 101. */
  async handshake(): Promise<void> {
    this.socket.write(upgradeRequest());
    await this.until('the 101 response', () => this.upgraded || undefined);
  }

  private take(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    if (!this.upgraded) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = this.buf.subarray(0, 12).toString('latin1');
      assert.equal(status, 'HTTP/1.1 101', `handshake answered ${JSON.stringify(this.buf.subarray(0, 60).toString('latin1'))}`);
      this.buf = this.buf.subarray(end + 4);
      this.upgraded = true;
    }
    this.bytesReceived += d.length;
    for (;;) {
      const f = takeServerFrame(this.buf);
      if (!f) break;
      this.buf = this.buf.subarray(f.size);
      const fr = { ...f.frame, payload: Buffer.from(f.frame.payload) };
      if (this.keep) this.frames.push(fr);
      this.onFrame?.(fr);
    }
    this.notify();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `probe` returns a value; fails if the connection ends first or after `ms`. */
  async until<T>(what: string, probe: () => T | undefined, ms = 15_000): Promise<T> {
    const wait = async (): Promise<T> => {
      for (;;) {
        const v = probe();
        if (v !== undefined) return v;
        if (this.done) throw new Error(`the connection ended (${this.error ?? 'clean'}) while waiting for ${what}`);
        await new Promise<void>((r) => this.waiters.push(r));
      }
    };
    return within(wait(), what, ms);
  }

  write(b: Buffer | string): boolean {
    return this.socket.write(b);
  }

  /** Sends one masked text frame. */
  command(text: string): void {
    this.write(zeroMaskFrame(OP.text, text));
  }

  /** Texts of the frames kept so far. */
  texts(): string[] {
    return this.frames.filter((f) => f.opcode === OP.text).map((f) => f.payload.toString());
  }

  /** Sends `PING <token>` and waits for `PONG <token>`. */
  async ping(token = `t${crypto.randomBytes(4).toString('hex')}`, ms = 15_000): Promise<void> {
    const keep = this.keep;
    this.keep = true;
    const start = this.frames.length;
    this.command(`PING ${token}`);
    await this.until(`PONG ${token}`, () => (this.frames.slice(start).some((f) => f.opcode === OP.text && f.payload.toString() === `PONG ${token}`) ? true : undefined), ms);
    this.keep = keep;
  }

  /** The close code of the server's close frame, if one arrived. */
  closeCode(): number | null {
    const f = this.frames.find((x) => x.opcode === OP.close);
    return f && f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
  }

  /** Stops reading from the socket: from now on the kernel buffers fill. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  get isEnded(): boolean {
    return this.done;
  }

  destroy(): void {
    this.socket.destroy();
    owned.delete(this.socket);
  }
}

/**
 * A subscriber that never reads: handshake, `SUB <subjects>`, a PING barrier (so the subscriptions are in
 * place), then its socket is paused for good.
 */
export async function openNonReader(child: ServerChild, subjects: string[], o: RawOptions = {}): Promise<RawWs> {
  const raw = await RawWs.open(child, o);
  if (subjects.length) raw.command(`SUB ${subjects.join(' ')}`);
  await raw.ping();
  raw.keep = false;
  raw.pause();
  return raw;
}

// ---------------------------------------------------------------------------------------------------
// A well-behaved subscriber

let tokens = 0;

/**
 * A `ws` subscriber that reads everything as it arrives and checks, per subject, that `seq` goes up by
 * exactly one from message to message under one epoch. Problems (gaps, duplicates, epoch changes, unexpected
 * replies) are recorded, not thrown, and reported by assertHealthy().
 */
export class SeqSubscriber {
  readonly ws: WebSocket;
  readonly counts = new Map<string, number>();
  readonly problems: string[] = [];
  closedWith: { code: number; reason: string } | null = null;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly last = new Map<string, { epoch: string; seq: number }>();
  private pongs = new Map<string, () => void>();
  private progress: (() => void)[] = [];

  private constructor(ws: WebSocket, readonly name: string) {
    this.ws = ws;
    ws.on('message', (data: Buffer, binary: boolean) => this.onMessage(data, binary));
    ws.on('error', (e) => this.problems.length < 50 && this.problems.push(`socket error ${e.message}`));
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closedWith = { code, reason: reason.toString() };
        for (const w of this.progress.splice(0)) w();
        resolve(this.closedWith);
      }),
    );
  }

  /** Opens a subscriber on `child` (counted for workgroup placement) and subscribes it, with a PING barrier. */
  static async open(child: ServerChild, subjects: string[], name = 'the healthy subscriber'): Promise<SeqSubscriber> {
    child.connections++;
    const ws = new WebSocket(child.url, { perMessageDeflate: false });
    owned.add({ destroy: () => ws.terminate() });
    await within(new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject)), `${name}'s handshake`);
    const s = new SeqSubscriber(ws, name);
    if (subjects.length) ws.send(`SUB ${subjects.join(' ')}`);
    await s.ping();
    return s;
  }

  private onMessage(data: Buffer, binary: boolean): void {
    const nl = data.indexOf(0x0a);
    const header = data.subarray(0, nl < 0 ? Math.min(data.length, 200) : nl).toString('latin1');
    const m = /^MSG (\S+) ([0-9a-z]+):([0-9]+)$/.exec(header);
    if (m) {
      const [, subject, epoch, seqText] = m;
      const seq = Number(seqText);
      const prev = this.last.get(subject);
      if (!prev) {
        if (seq !== 1 && this.problems.length < 50) this.problems.push(`${subject}: first message has seq ${seq}, not 1`);
      } else if (prev.epoch !== epoch) {
        if (this.problems.length < 50) this.problems.push(`${subject}: epoch changed ${prev.epoch} -> ${epoch} at seq ${seq}`);
      } else if (seq !== prev.seq + 1) {
        if (this.problems.length < 50) this.problems.push(`${subject}: seq ${prev.seq} followed by ${seq} (${seq > prev.seq ? `${seq - prev.seq - 1} missing` : 'out of order'})`);
      }
      this.last.set(subject, { epoch, seq });
      this.counts.set(subject, (this.counts.get(subject) ?? 0) + 1);
    } else if (!binary && header.startsWith('PONG ')) {
      const w = this.pongs.get(header.slice(5));
      this.pongs.delete(header.slice(5));
      w?.();
    } else if (this.problems.length < 50) {
      this.problems.push(`unexpected message ${JSON.stringify(header.slice(0, 100))}`);
    }
    if (this.progress.length) for (const w of this.progress.splice(0)) w();
  }

  /** Messages received on `subject`. */
  count(subject: string): number {
    return this.counts.get(subject) ?? 0;
  }

  /** Sends `PING <token>` and resolves with the milliseconds until its PONG; fails after `ms`. */
  async ping(ms = 15_000): Promise<number> {
    const token = `k${++tokens}`;
    const start = performance.now();
    const pong = new Promise<void>((resolve, reject) => {
      this.pongs.set(token, resolve);
      this.closed.then((c) => reject(new Error(`${this.name} was closed (${c.code} ${c.reason}) while waiting for PONG`)));
    });
    this.ws.send(`PING ${token}`);
    await within(pong, `${this.name}'s PONG`, ms);
    return performance.now() - start;
  }

  /** Waits until `count(subject) >= n`; fails (naming what arrived) after `ms` or if the connection closes. */
  async waitCount(subject: string, n: number, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.count(subject) < n) {
      if (this.closedWith) assert.fail(`${this.name} was closed (${this.closedWith.code} ${this.closedWith.reason}) after ${this.count(subject)} of ${n} messages on ${subject}; problems: ${this.problems.slice(0, 5).join('; ')}`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`${this.name} got ${this.count(subject)} of ${n} messages on ${subject} in ${ms} ms; problems: ${this.problems.slice(0, 5).join('; ')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.progress.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Fails if the subscriber was closed, saw a gap or anything unexpected, or (given `expected`) missed a message. */
  assertHealthy(expected: Record<string, number> = {}): void {
    assert.equal(this.closedWith, null, `${this.name} was closed: ${JSON.stringify(this.closedWith)}`);
    assert.deepEqual(this.problems, [], `${this.name} saw problems`);
    for (const [subject, n] of Object.entries(expected)) assert.equal(this.count(subject), n, `${this.name}: messages received on ${subject}`);
  }

  close(): void {
    this.ws.terminate();
  }
}

/** A `ws` client that does nothing but stay connected (and answer pings, as `ws` does); used to steer placement. */
export async function openIdle(child: ServerChild): Promise<SeqSubscriber> {
  return SeqSubscriber.open(child, [], 'an idle client');
}

// ---------------------------------------------------------------------------------------------------
// Publishers

/**
 * A publisher on a raw socket that keeps reading: it sends PUB frames (prebuilt, in large writes) and
 * tallies the replies — `ACK <id>` and `ERR <code> …`.
 */
export class Publisher {
  readonly acks = new Set<string>();
  readonly errs = new Map<string, number>();
  /** Ids named by ERR replies, with the code. */
  readonly errIds = new Map<string, string>();
  readonly others: string[] = [];
  private constructor(readonly raw: RawWs) {
    raw.keep = false;
    raw.onFrame = (f) => {
      if (f.opcode !== OP.text) return;
      const t = f.payload.toString();
      if (t.startsWith('ACK ')) this.acks.add(t.slice(4));
      else if (t.startsWith('ERR ')) {
        const [, code, id] = t.split(' ');
        this.errs.set(code, (this.errs.get(code) ?? 0) + 1);
        if (id) this.errIds.set(id, code);
      } else if (this.others.length < 20) this.others.push(t.slice(0, 100));
    };
  }

  static async open(child: ServerChild, o: RawOptions = {}): Promise<Publisher> {
    return new Publisher(await RawWs.open(child, o));
  }

  /** Queues `bytes` (PUB frames) on the socket; resolves when Node handed them all to the kernel, or the connection ended. */
  send(bytes: Buffer): Promise<void> {
    if (this.raw.isEnded || this.raw.write(bytes)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.raw.socket.off('drain', done);
        resolve();
      };
      this.raw.socket.once('drain', done);
      void this.raw.ended.then(done);
    });
  }

  get errTotal(): number {
    let n = 0;
    for (const v of this.errs.values()) n += v;
    return n;
  }

  /**
   * Waits until every id in `ids` has been answered (ACK or ERR), the connection ended, or `ms` passed;
   * returns the ids that got no ACK.
   */
  async waitAcks(ids: string[], ms: number): Promise<string[]> {
    await poll(() => (this.raw.isEnded || ids.every((id) => this.acks.has(id) || this.errIds.has(id)) ? true : undefined), ms, 100);
    return ids.filter((id) => !this.acks.has(id));
  }

  destroy(): void {
    this.raw.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------
// /proc/net/sockstat

/** TCP orphans and memory pages in this network namespace (/proc/net/sockstat). */
export function sockstat(): { orphan: number; memPages: number; inuse: number } {
  const text = fs.readFileSync('/proc/net/sockstat', 'latin1');
  const m = /TCP: inuse (\d+) orphan (\d+) tw \d+ alloc \d+ mem (\d+)/.exec(text);
  assert.ok(m, text);
  return { inuse: Number(m[1]), orphan: Number(m[2]), memPages: Number(m[3]) };
}

// ---------------------------------------------------------------------------------------------------
// Placement, pacing, starvation, floods

/**
 * Opens idle `ws` clients until the next connection the kit opens goes to workgroup `wg` (BenchmarkMode
 * round-robin; connections must be opened one at a time for this to hold).
 */
export async function placeNextOn(child: ServerChild, wg: number): Promise<void> {
  while (child.nextWorkgroup !== wg) await openIdle(child);
}

/**
 * Checks the per-workgroup `connections` counters against what placement predicted (`atLeast[w]` open
 * connections on workgroup w). Skipped if the stats do not carry per-workgroup connections.
 */
export async function assertPlacement(child: ServerChild, atLeast: number[]): Promise<void> {
  const s = await child.stats();
  const got = (s?.workgroups ?? []).map((w: any) => w?.counters?.connections ?? w?.connections);
  if (got.length !== atLeast.length || got.some((v: unknown) => typeof v !== 'number')) return;
  for (let w = 0; w < atLeast.length; w++)
    assert.ok(got[w] >= atLeast[w], `placement: expected at least ${atLeast[w]} connections on workgroup ${w}, stats say ${JSON.stringify(got)}`);
}

/**
 * Publishes `PUB <subject> <prefix><i>\n<payload>` at a steady `rate` per second from a well-behaved publisher
 * until stop(); `sent` counts the messages, `ids` their ids (each must be ACKed).
 */
export class Ticker {
  sent = 0;
  readonly ids: string[] = [];
  private running = true;
  private readonly done: Promise<void>;
  constructor(readonly pub: Publisher, readonly subject: string, rate: number, payload: Buffer, readonly prefix = 't') {
    const start = Date.now();
    this.done = (async () => {
      while (this.running && !pub.raw.isEnded) {
        const due = Math.floor(((Date.now() - start) / 1000) * rate);
        if (due > this.sent) {
          const n = due - this.sent;
          for (let i = this.sent; i < due; i++) this.ids.push(`${prefix}${i}`);
          await pub.send(pubFrames(subject, n, payload, prefix, this.sent));
          this.sent = due;
        }
        await sleep(10);
      }
    })();
  }
  /** Stops publishing; waits (at most 10 s) for the last batch to be handed to the kernel. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.race([this.done, sleep(10_000)]);
  }
}

/**
 * Takes a workgroup's CPU away for `ms`: its thread (`starling-wg<wg>`, pinned to `cpu` by WorkgroupCpus) is
 * put in SCHED_IDLE and a busy loop runs on `cpu`, so the workgroup gets almost no CPU — as on a machine whose
 * CPU is taken by other work. Resolves once the busy loop runs; `done` resolves when it is over and the thread's
 * policy is restored. Needs chrt and taskset (util-linux).
 */
export async function starveWorkgroup(child: ServerChild, wg: number, cpu: number, ms: number): Promise<{ done: Promise<void> }> {
  const tid = fs
    .readdirSync(`/proc/${child.pid}/task`)
    .find((t) => fs.readFileSync(`/proc/${child.pid}/task/${t}/comm`, 'latin1').trim() === `starling-wg${wg}`);
  assert.ok(tid, `thread starling-wg${wg} of the server child`);
  // Restored asynchronously: the burst that piled up reaches the test's own readers the moment the hog ends,
  // and a synchronous spawn would block their event loop just then (on a loaded machine, for half a second).
  const restore = () => new Promise<void>((resolve) => execFile('chrt', ['--other', '-p', '0', tid], () => resolve()));
  execFileSync('chrt', ['--idle', '-p', '0', tid]);
  const hog = spawn('taskset', ['-c', String(cpu), 'timeout', String(ms / 1000), 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
  const kill = { destroy: () => hog.kill('SIGKILL') };
  owned.add(kill);
  const done = new Promise<void>((resolve) =>
    hog.on('exit', () => {
      owned.delete(kill);
      void restore().then(resolve);
    }),
  );
  await new Promise<void>((resolve) => hog.once('spawn', () => resolve()));
  await sleep(100);
  return { done };
}

/**
 * Writes `chunk` to each client over and over, as fast as its socket takes it, until `stop()` returns true
 * or the client's connection ends (the server cut it). Resolves when every client stopped.
 */
export async function flood(clients: RawWs[], chunk: Buffer, stop: () => boolean): Promise<void> {
  await Promise.all(
    clients.map(async (c) => {
      while (!stop() && !c.isEnded) {
        if (c.write(chunk)) continue;
        // Wait for the socket to take more (the server may have stopped reading: then we only poll stop()).
        let drained = false;
        let wake!: () => void;
        const onDrain = () => {
          drained = true;
          wake();
        };
        c.socket.once('drain', onDrain);
        while (!drained && !stop() && !c.isEnded) await Promise.race([c.ended, sleep(50), new Promise<void>((r) => (wake = r))]);
        c.socket.off('drain', onDrain);
      }
    }),
  );
}

/** How one connection attempt went: upgraded (`open`), refused (closed, reset, or an HTTP error), or no answer at all. */
export type Attempt = { kind: 'open' | 'refused' | 'hang'; detail: string; socket: net.Socket };

/** Connects and sends an upgrade request; classifies what happens within `ms`. The socket is left open. */
export function attempt(child: ServerChild, ms: number): Promise<Attempt> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: child.host, port: child.port });
    owned.add(socket);
    let buf = '';
    let settled = false;
    const settle = (kind: Attempt['kind'], detail: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ kind, detail, socket });
    };
    const timer = setTimeout(() => settle('hang', `no answer in ${ms} ms`), ms);
    socket.on('error', (e: NodeJS.ErrnoException) => settle('refused', e.code ?? e.message));
    socket.on('connect', () => socket.write(upgradeRequest()));
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end >= 0) settle(buf.startsWith('HTTP/1.1 101') ? 'open' : 'refused', buf.slice(0, buf.indexOf('\r\n')));
    });
    socket.on('close', () => settle('refused', 'closed'));
  });
}
