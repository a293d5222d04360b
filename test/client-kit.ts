// The kit of the client SDK suites (test/90.client*.test.ts): a scripted server — a real WebSocket server (the `ws`
// package) on loopback whose every answer the test writes, to drive the client through cases a correct Starling
// server never produces (a gap, a changed epoch, malformed lines) — a TCP proxy that can cut connections and hold
// new ones back, and an awaitable recorder of what a client delivers and reports. Everything it opens is closed when
// the test file ends.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Client, ClientEvent, ClientEvents, Message } from 'starling/client';
import { TIMEOUT_MS, within } from './helpers';

const closers = new Set<() => Promise<void> | void>();
after(async () => {
  for (const c of [...closers].reverse()) await c();
});

/** Registers `close` to run when the test file ends (clients first: they were registered last). */
export function atEnd(close: () => Promise<void> | void): void {
  closers.add(close);
}

// ---------------------------------------------------------------------------------------------------
// An awaitable queue

/** Items pushed by callbacks, taken in order by the test; a take waits (up to TIMEOUT_MS) for the next. */
export class Queue<T> {
  private readonly items: T[] = [];
  private waiters: ((item: T) => void)[] = [];

  push(item: T): void {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.items.push(item);
  }

  take(what: string): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift()!);
    return within(new Promise<T>((resolve) => this.waiters.push(resolve)), what);
  }

  /** Items not taken yet. */
  get pending(): readonly T[] {
    return this.items;
  }
}

// ---------------------------------------------------------------------------------------------------
// The scripted server

/** One client connection to the scripted server: the commands it sent, and a way to answer. */
export class ScriptedConnection {
  readonly commands = new Queue<string>();
  readonly closed: Promise<void>;
  /** The request URL of the upgrade (path and query). */
  readonly url: string;

  constructor(
    readonly ws: WebSocket,
    url: string,
    autoPong: boolean,
  ) {
    this.url = url;
    this.closed = new Promise((resolve) => ws.on('close', () => resolve()));
    ws.on('message', (data: Buffer, binary: boolean) => {
      const text = binary ? `(binary) ${data.toString('latin1')}` : data.toString('utf8');
      if (autoPong && text.startsWith('PING')) this.send(`PONG${text.slice(4)}`);
      else this.commands.push(text);
    });
  }

  /** The next command, which must equal `expected` (a string) or match it (a RegExp); returned. */
  async expect(expected: string | RegExp): Promise<string> {
    const got = await this.commands.take(`the client to send ${expected}`);
    if (typeof expected === 'string') assert.equal(got, expected);
    else assert.match(got, expected);
    return got;
  }

  /** Takes the next command, a `PING <token>`, and answers `PONG <token>` (the manual mode's barrier). */
  async pong(): Promise<string> {
    const ping = await this.expect(/^PING \S+$/);
    const token = ping.slice(5);
    this.send(`PONG ${token}`);
    return token;
  }

  /** Sends a text frame (a string) or a binary frame (a Buffer). */
  send(data: string | Buffer): void {
    this.ws.send(data, { binary: typeof data !== 'string' });
  }

  /** Closes with a close frame. */
  close(code = 1000): void {
    this.ws.close(code);
  }

  /** Cuts the TCP connection (no close frame). */
  terminate(): void {
    this.ws.terminate();
  }
}

/**
 * A WebSocket server on 127.0.0.1 whose answers the test writes. With `autoPong` (the default) it answers each
 * PING at once, as a server that processed every earlier command would; without, the test answers them.
 */
export class ScriptedServer {
  readonly connections = new Queue<ScriptedConnection>();
  private constructor(
    private readonly wss: WebSocketServer,
    readonly url: string,
  ) {}

  static async start(o: { autoPong?: boolean } = {}): Promise<ScriptedServer> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await within(new Promise<void>((resolve) => wss.once('listening', () => resolve())), 'the scripted server to listen');
    const server = new ScriptedServer(wss, `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`);
    wss.on('connection', (ws, req) => server.connections.push(new ScriptedConnection(ws, req.url ?? '/', o.autoPong ?? true)));
    atEnd(() => server.close());
    return server;
  }

  /** The next connection a client opens. */
  accept(): Promise<ScriptedConnection> {
    return this.connections.take('a client to connect to the scripted server');
  }

  close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------------
// A TCP proxy

/**
 * Forwards 127.0.0.1:<port> to a server. cut() resets every connection it carries; hold() makes new connections
 * wait (accepted, nothing forwarded) until release(), so a client stays disconnected while the test publishes.
 */
export class Proxy {
  readonly port: number;
  private readonly pairs = new Set<net.Socket>();
  private held: net.Socket[] | null = null;

  private constructor(
    private readonly listener: net.Server,
    private readonly target: { host: string; port: number },
  ) {
    this.port = (listener.address() as net.AddressInfo).port;
  }

  static async start(target: { host: string; port: number }): Promise<Proxy> {
    const listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', () => resolve()));
    const proxy = new Proxy(listener, target);
    listener.on('connection', (socket) => proxy.accept(socket));
    atEnd(() => proxy.close());
    return proxy;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/`;
  }

  /** Connections carried now. */
  get open(): number {
    return this.pairs.size / 2;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {});
    if (this.held) this.held.push(client);
    else this.forward(client);
  }

  private forward(client: net.Socket): void {
    if (client.destroyed) return;
    const upstream = net.connect(this.target);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    for (const s of [client, upstream]) {
      this.pairs.add(s);
      s.on('close', () => {
        this.pairs.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Resets every connection it carries (the client sees the connection drop; the server sees it go). */
  cut(): void {
    for (const s of this.pairs) s.resetAndDestroy();
  }

  /** New connections wait until release(). */
  hold(): void {
    this.held ??= [];
  }

  release(): void {
    const held = this.held ?? [];
    this.held = null;
    for (const s of held) this.forward(s);
  }

  close(): Promise<void> {
    this.cut();
    for (const s of this.held ?? []) s.destroy();
    return new Promise((resolve) => this.listener.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------------
// What a client delivers and reports

/** A delivered message with a text payload (binary payloads as latin1 text, marked). */
export interface Seen {
  subject: string;
  text: string;
  binary: boolean;
  epoch: string;
  seq: number;
  kind: Message['kind'];
}

export type Event = { [K in ClientEvent]: { event: K; value: ClientEvents[K] } }[ClientEvent];

/** Records a client's events in one queue and the messages of its subscriptions (made through it) in another. */
export class Recorder {
  readonly events = new Queue<Event>();
  readonly messages = new Queue<Seen>();
  /** Every message ever delivered, in order. */
  readonly all: Seen[] = [];

  constructor(readonly client: Client) {
    for (const event of ['connected', 'disconnected', 'reconnecting', 'sync', 'resync', 'auth', 'error'] as const)
      client.on(event, (value: ClientEvents[typeof event]) => this.events.push({ event, value } as Event));
    atEnd(() => client.close());
  }

  /** A handler for subscribe() that records into this recorder. */
  readonly handler = (m: Message): void => {
    const binary = typeof m.payload !== 'string';
    const seen: Seen = {
      subject: m.subject,
      text: binary ? Buffer.from(m.payload as Uint8Array).toString('latin1') : (m.payload as string),
      binary,
      epoch: m.epoch,
      seq: m.seq,
      kind: m.kind,
    };
    this.all.push(seen);
    this.messages.push(seen);
  };

  /** The next event, skipping `reconnecting` ones unless asked for; it must be `event`. */
  async event<K extends ClientEvent>(event: K): Promise<ClientEvents[K]> {
    for (;;) {
      const e = await this.events.take(`a ${event} event`);
      if (e.event === 'reconnecting' && event !== 'reconnecting') continue;
      assert.equal(e.event, event, `expected a ${event} event, got ${e.event} ${JSON.stringify(e.value, errorFields)}`);
      return e.value as ClientEvents[K];
    }
  }

  /** The next message, as [text, kind, seq] for compact assertions. */
  async message(): Promise<[string, Message['kind'], number]> {
    const m = await this.messages.take('a message');
    return [m.text, m.kind, m.seq];
  }

  /** The next `n` messages, as message() gives them. */
  async messagesOf(n: number): Promise<[string, Message['kind'], number][]> {
    const out: [string, Message['kind'], number][] = [];
    for (let i = 0; i < n; i++) out.push(await this.message());
    return out;
  }
}

/** JSON.stringify replacer that shows an Error's code and detail. */
function errorFields(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message, ...(value as object) };
  return value;
}

/** Every message's seq is the previous one's + 1 (one epoch, no conflation): nothing missed, nothing twice. */
export function assertConsecutive(seen: Seen[], what: string): void {
  for (let i = 1; i < seen.length; i++) {
    const [a, b] = [seen[i - 1], seen[i]];
    assert.equal(b.epoch, a.epoch, `${what}: the epoch changed at message ${i}`);
    assert.equal(b.seq, a.seq + 1, `${what}: ${a.epoch}:${a.seq} is followed by ${b.epoch}:${b.seq}`);
  }
}

/** Waits until `probe` is true, checking after every turn of the event loop (10 ms apart). */
export async function until(what: string, probe: () => boolean): Promise<void> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!probe()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${TIMEOUT_MS} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---------------------------------------------------------------------------------------------------
// A port to restart a server on

/**
 * A free port below the kernel's ephemeral range (ip_local_port_range): a server killed and started again on it
 * cannot find it taken by the local end of some outgoing connection in between, as a port from the range could.
 */
export async function restartablePort(): Promise<number> {
  let low = 32768;
  try {
    low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    /* not Linux: the usual default */
  }
  for (let tries = 0; tries < 50; tries++) {
    const port = 10_000 + Math.floor(Math.random() * Math.max(1, low - 10_000));
    const free = await new Promise<boolean>((resolve) => {
      const probe = net.createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port between 10000 and ${low}`);
}

// ---------------------------------------------------------------------------------------------------
// A publisher that keeps publishing

/**
 * Publishes 1, 2, 3 … on `subject`, each after the previous one's answer, until stopped. A publish the connection
 * lost before its ACK (connection-lost: it may or may not have gone out) is noted in `lost`; the loop goes on and
 * the client holds the next one until it is connected again. Any other refusal stops the loop and fails stop().
 */
export class PublishLoop {
  readonly acked: number[] = [];
  readonly lost: number[] = [];
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly client: Client,
    private readonly subject: string,
  ) {
    this.done = this.run();
    this.done.catch(() => {}); // reported by stop()
  }

  private async run(): Promise<void> {
    for (let i = 1; !this.stopped; i++) {
      try {
        await this.client.publish(this.subject, String(i));
        this.acked.push(i);
      } catch (e) {
        if ((e as { code?: string }).code !== 'connection-lost') throw e;
        this.lost.push(i);
      }
    }
  }

  /** Stops after the publish in progress; rejects if a publish was refused. */
  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }
}

// ---------------------------------------------------------------------------------------------------
// The examples, run as a user runs them

/** A process running one of examples/*.mjs, its stdout lines awaitable. Killed when the test file ends. */
export class ExampleProcess {
  readonly lines = new Queue<string>();
  readonly output: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stderr = '';

  constructor(readonly proc: ChildProcess) {
    readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
      this.output.push(line);
      this.lines.push(line);
    });
    proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    atEnd(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    });
  }

  /** `node examples/<name> <args>` from the repository root, as the examples' headers say to run them. */
  static start(name: string, args: string[]): ExampleProcess {
    const root = path.join(__dirname, '..', '..');
    return new ExampleProcess(spawn(process.execPath, [path.join('examples', name), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  /** Takes lines until one matches `pattern`; returns its match. The lines passed over stay in `output`. */
  async line(pattern: RegExp): Promise<RegExpMatchArray> {
    for (;;) {
      const line = await this.lines.take(`a line matching ${pattern} (stderr so far: ${this.stderr.slice(-500)})`);
      const m = pattern.exec(line);
      if (m) return m;
    }
  }

  /** What it wrote to stderr. */
  get errors(): string {
    return this.stderr;
  }
}
