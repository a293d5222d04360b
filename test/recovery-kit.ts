// Helpers of the protocol v2 suites (test/35.recovery.test.ts, test/36.recovery-hostile.test.ts): parsing what
// the server sends in v2 (`MSG <s> <e>:<n>[ <kind>]`, `SYNC`, `RESYNC`), showing it as one comparable line,
// opening clients on a chosen workgroup (BenchmarkMode round-robin), publishing with ids and checking the ACKs,
// and a subscriber that disconnects and recovers from its position over and over while it checks every message.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client, openPlaced, type Message } from './helpers';
import type { Server } from '../src/index';

/** One server message, parsed. */
export interface Reply {
  verb: 'MSG' | 'SYNC' | 'RESYNC' | 'OTHER';
  subject: string;
  epoch: string;
  seq: number;
  /** MSG: `snapshot`, `history`, `recovered`, or null for a live message. */
  kind: string | null;
  payload: Buffer;
  binary: boolean;
  /** The header line (the whole text for anything but MSG). */
  head: string;
}

const MSG_RE = /^MSG (\S+) ([0-9a-z]+):([0-9]+)(?: (\S+))?$/;
const LINE_RE = /^(SYNC|RESYNC) (\S+) ([0-9a-z]+):([0-9]+)$/;

export function parseReply(data: Buffer, binary: boolean): Reply {
  const nl = data.indexOf(0x0a);
  const head = data.subarray(0, nl < 0 ? Math.min(data.length, 400) : nl).toString('latin1');
  const m = nl >= 0 ? MSG_RE.exec(head) : null;
  if (m) return { verb: 'MSG', subject: m[1], epoch: m[2], seq: Number(m[3]), kind: m[4] ?? null, payload: data.subarray(nl + 1), binary, head };
  const l = !binary ? LINE_RE.exec(head) : null;
  if (l) return { verb: l[1] as 'SYNC' | 'RESYNC', subject: l[2], epoch: l[3], seq: Number(l[4]), kind: null, payload: Buffer.alloc(0), binary, head };
  return { verb: 'OTHER', subject: '', epoch: '', seq: 0, kind: null, payload: Buffer.alloc(0), binary, head };
}

/**
 * A message as one line to compare: `MSG /s e:3 recovered <payload>` (a binary frame's payload as `bin:<hex>`),
 * `SYNC /s e:3`, or the text as sent.
 */
export function show(m: Message): string {
  const r = parseReply(m.data, m.binary);
  if (r.verb === 'MSG') {
    const body = r.binary ? `bin:${r.payload.toString('hex')}` : r.payload.toString('utf8');
    return `MSG ${r.subject} ${r.epoch}:${r.seq}${r.kind ? ` ${r.kind}` : ''} ${body}`;
  }
  return m.binary ? `bin:${m.data.subarray(0, 200).toString('hex')}` : m.text;
}

/** Everything the client received until a PING barrier, shown (see show()). */
export async function replies(c: Client): Promise<string[]> {
  return (await c.sync()).map(show);
}

/** Sends `text` and returns what arrived before a PING barrier: the SUB answers, in order, complete. */
export async function ask(c: Client, text: string): Promise<string[]> {
  c.send(text);
  return replies(c);
}

/** The next message, shown; fails if none comes in time. */
export async function nextShown(c: Client, what = 'a message'): Promise<string> {
  return show(await c.next(what));
}

/**
 * Opens idle clients until the next connection to `server` goes to workgroup `wg` (BenchmarkMode round-robin:
 * the i-th accepted connection goes to workgroup i % Workgroups). Connections must be opened one at a time.
 */
export async function placeNext(server: Server, wg: number): Promise<void> {
  const next = () => server.stats().workgroups.reduce((n, w) => n + w.counters.accepted, 0) % server.stats().workgroups.length;
  while (next() !== wg) await Client.open(server);
}

/** Opens clients on `server` one at a time until one is placed on workgroup `wg` (round-robin); closes the others. */
export async function openOn(server: Server, wg: number): Promise<Client> {
  for (let i = 0; i < 8; i++) {
    const { client, workgroup } = await openPlaced(server);
    if (workgroup === wg) return client;
    await client.close();
  }
  throw new Error(`could not place a connection on workgroup ${wg}`);
}

/** `SUB <subject>#0` on `c`: subscribes and returns the subject's epoch and position from the SYNC. */
export async function position(c: Client, subject: string): Promise<{ epoch: string; seq: number }> {
  const got = await ask(c, `SUB ${subject}#0`);
  const m = got.length === 1 ? /^SYNC (\S+) ([0-9a-z]+):([0-9]+)$/.exec(got[0]) : null;
  assert.ok(m && m[1] === subject, `SUB ${subject}#0 is answered with one SYNC; got ${JSON.stringify(got)}`);
  return { epoch: m[2], seq: Number(m[3]) };
}

/**
 * Publishes `PUB <subject> <id>[ +retained]\n<payload>` for each payload (ids `<prefix><i>`), pipelined, then a
 * PING barrier; fails unless exactly the ACKs came back, in order.
 */
export async function publish(c: Client, subject: string, payloads: (string | Buffer)[], prefix = 'p', retained = false): Promise<void> {
  const ids: string[] = [];
  payloads.forEach((p, i) => {
    const id = `${prefix}${i}`;
    ids.push(`ACK ${id}`);
    const head = `PUB ${subject} ${id}${retained ? ' +retained' : ''}\n`;
    c.send(typeof p === 'string' ? head + p : Buffer.concat([Buffer.from(head), p]));
  });
  assert.deepEqual(await replies(c), ids, `the publishes to ${subject} are acknowledged, in order`);
}

/** Takes `n` messages from `c` and returns them shown. */
export async function take(c: Client, n: number, what: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(show(await c.next(`${what} (${i + 1} of ${n})`)));
  return out;
}

/** Deterministic pseudo-random numbers (mulberry32), so that a failing run can be replayed with its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------------
// A subscriber that recovers from its position, checking every message

/** Every Recoverer and FastPublisher made: stopped when the test file ends, whatever happened. */
const live = new Set<{ shutdown(): void }>();
after(() => {
  for (const x of live) x.shutdown();
  live.clear();
});

interface SubjectState {
  epoch: string | null;
  last: number;
  /** A SYNC has come since the last (re)connection: live messages may follow. */
  live: boolean;
}

/**
 * A subscriber to `subjects` that checks, per subject, that what it receives is exactly the subject's sequence:
 * after each (re)connection `MSG … recovered` for every seq after the position it held, then `SYNC` at the last
 * one, then live messages, each seq exactly once, consecutive, same epoch — and that every payload is
 * `<subject>:<seq>` (what the test's publishers send). Its first connection subscribes with `<subject>#0`.
 *
 * With `disconnectEvery` > 0 it disconnects (at random: a TCP reset or a close handshake) and reconnects at once
 * with `SUB <subject>@<epoch>:<last seq>` for each subject: on four connections in five after 1..disconnectEvery
 * live messages, on the fifth after 1..20 messages of any kind (usually in the middle of its recovery).
 * Problems are recorded, not thrown; the test asserts `problems` is empty.
 */
export class Recoverer {
  readonly state = new Map<string, SubjectState>();
  readonly problems: string[] = [];
  /** Reconnections made (not counting the first connection). */
  reconnects = 0;
  /** Reconnections after which a live message followed the recovery (publishing went on meanwhile). */
  overlapped = 0;
  /** Connections the server closed (not the test). */
  serverCloses: string[] = [];
  syncs = 0;
  recovered = 0;
  received = 0;
  /** No more disconnections once set. */
  settled = false;
  private ws: WebSocket | null = null;
  private budget = Infinity;
  /** The budget counts live messages only (else every message). */
  private budgetLive = true;
  /** Disconnections made in the middle of a recovery (before every SYNC had come). */
  midRecovery = 0;
  private first = true;
  private sawLive = false;
  private progress: (() => void)[] = [];
  private readonly random: () => number;

  constructor(
    readonly url: string,
    readonly subjects: string[],
    readonly name: string,
    readonly disconnectEvery = 0,
    seed = 1,
  ) {
    this.random = rng(seed);
    for (const s of subjects) this.state.set(s, { epoch: null, last: 0, live: false });
    live.add(this);
  }

  /** Leaves at once and never reconnects (test-file cleanup). */
  shutdown(): void {
    this.settled = true;
    const ws = this.ws;
    this.ws = null;
    ws?.terminate();
  }

  /** Opens the first connection and waits for its handshake (the SUB answers come as messages). */
  async start(): Promise<void> {
    await this.connect();
  }

  private problem(text: string): void {
    if (this.problems.length < 20) this.problems.push(`${this.name}: ${text}`);
  }

  private async connect(): Promise<void> {
    const ws = new WebSocket(this.url, { perMessageDeflate: false });
    this.ws = ws;
    this.sawLive = false;
    this.budgetLive = this.random() < 0.8;
    this.budget = this.disconnectEvery <= 0 ? Infinity : 1 + Math.floor(this.random() * (this.budgetLive ? this.disconnectEvery : 20));
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (this.ws !== ws) return; // the test left this connection: what it still delivers is not taken
      const r = parseReply(data, binary);
      this.take(r);
      if ((!this.budgetLive || (r.verb === 'MSG' && r.kind === null)) && --this.budget <= 0 && !this.settled) {
        if ([...this.state.values()].some((st) => !st.live)) this.midRecovery++;
        void this.reconnect('test');
      }
      this.wake();
    });
    ws.on('error', () => {});
    let opened = false;
    ws.on('close', (code, reason) => {
      if (this.ws !== ws || !opened) return; // a connection that never opened: connect() fails instead
      this.serverCloses.push(`${code} ${reason}`);
      if (!this.settled) void this.reconnect('server');
      else this.wake();
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('close', () => reject(new Error('closed before the handshake completed')));
    });
    opened = true;
    for (const st of this.state.values()) st.live = false;
    const specs = this.subjects.map((s) => {
      const st = this.state.get(s)!;
      return this.first ? `${s}#0` : `${s}@${st.epoch}:${st.last}`;
    });
    this.first = false;
    ws.send(`SUB ${specs.join(' ')}`);
  }

  /** Leaves the current connection (reset or close handshake, at random) and opens a new one. */
  private async reconnect(why: 'test' | 'server'): Promise<void> {
    const old = this.ws;
    this.ws = null;
    if (old && why === 'test') {
      if (this.random() < 0.5) old.terminate();
      else old.close(1000);
    }
    this.reconnects++;
    try {
      await this.connect();
    } catch (e) {
      // No retry: a server that refuses a reconnection is a failure of the test.
      this.problem(`reconnection failed: ${(e as Error).message}`);
      this.settled = true;
      this.ws = null;
      this.wake();
    }
  }

  private take(r: Reply): void {
    this.received++;
    const st = this.state.get(r.subject);
    if (r.verb === 'OTHER' || !st) {
      this.problem(`unexpected message ${JSON.stringify(r.head.slice(0, 120))}`);
      return;
    }
    const where = `${r.subject} ${r.epoch}:${r.seq}${r.kind ? ` ${r.kind}` : ''}`;
    if (r.verb === 'RESYNC') {
      this.problem(`RESYNC ${where} after holding ${st.epoch}:${st.last} (every position is still cached)`);
      return;
    }
    if (r.verb === 'SYNC') {
      if (st.live) this.problem(`second SYNC ${where} on one connection`);
      if (st.epoch === null) {
        st.epoch = r.epoch;
        st.last = r.seq;
      } else if (r.epoch !== st.epoch || r.seq !== st.last) {
        this.problem(`SYNC ${where}, but the last message received was ${st.epoch}:${st.last}`);
      }
      st.live = true;
      this.syncs++;
      return;
    }
    if (r.kind !== null && r.kind !== 'recovered') {
      this.problem(`unexpected ${where}`);
      return;
    }
    if (r.kind === 'recovered' && st.live) this.problem(`${where} after the SYNC`);
    if (r.kind === null && !st.live) this.problem(`live ${where} before the SYNC of the recovery (held ${st.epoch}:${st.last})`);
    if (r.epoch !== st.epoch) this.problem(`${where}: epoch changed from ${st.epoch}`);
    else if (r.seq !== st.last + 1) this.problem(`${where} after ${st.last} (${r.seq > st.last ? `${r.seq - st.last - 1} missing` : 'duplicate or out of order'})`);
    const want = `${r.subject}:${r.seq}`;
    if (r.payload.toString() !== want) this.problem(`${where} carries ${JSON.stringify(r.payload.toString().slice(0, 60))}, not ${JSON.stringify(want)}`);
    st.last = r.seq;
    if (r.kind === 'recovered') this.recovered++;
    else if (!this.sawLive && this.reconnects > 0) {
      this.sawLive = true;
      this.overlapped++;
    }
  }

  private wake(): void {
    for (const w of this.progress.splice(0)) w();
  }

  /** Last seq received on `subject`. */
  last(subject: string): number {
    return this.state.get(subject)!.last;
  }

  /** True once a SYNC came on every subject of the current connection and each is at `want[subject]`. */
  caughtUp(want: Record<string, number>): boolean {
    return this.subjects.every((s) => this.state.get(s)!.live && this.state.get(s)!.last === want[s]);
  }

  /** Waits until caughtUp(want), a problem, or `ms`; fails naming where each subject is. */
  async waitCaughtUp(want: Record<string, number>, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.caughtUp(want) && !this.problems.length) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const at = this.subjects.map((s) => `${s} at ${this.state.get(s)!.last}${this.state.get(s)!.live ? '' : ' (recovering)'} of ${want[s]}`);
        assert.fail(`${this.name} did not catch up in ${ms} ms: ${at.join(', ')}; server closes: ${JSON.stringify(this.serverCloses.slice(-3))}`);
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 100));
        this.progress.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Leaves for good (a close handshake). */
  async stop(): Promise<void> {
    this.settled = true;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN) {
      const closed = new Promise<void>((r) => ws.once('close', () => r()));
      ws.close(1000);
      await closed;
    } else ws?.terminate();
  }

  /** Makes one more reconnection now (no disconnections after it) and waits for its answers. */
  async reconnectOnce(): Promise<void> {
    this.settled = true;
    await this.reconnect('test');
  }
}

// ---------------------------------------------------------------------------------------------------
// A publisher as fast as the server acknowledges

/**
 * Publishes `PUB <subject> <id>\n<subject>:<seq>` round-robin over `subjects` as fast as it can: pipelined, at
 * most `window` unacknowledged. `seq` is the count of its publishes to that subject so far plus `offset[subject]`
 * (the subject's seq before it started), which is the seq the home gives the message when this publisher is the
 * subject's only one. Checks that the ACKs come back in order, and that nothing else does.
 */
export class FastPublisher {
  readonly sent: Record<string, number> = {};
  acked = 0;
  readonly problems: string[] = [];
  private readonly ids: string[] = [];
  private waiter: (() => void) | null = null;
  private closed = false;

  private constructor(
    readonly ws: WebSocket,
    readonly subjects: string[],
    readonly offset: Record<string, number>,
  ) {
    for (const s of subjects) this.sent[s] = 0;
    live.add(this);
    ws.on('message', (data: Buffer) => {
      const t = data.toString();
      const want = this.ids[this.acked];
      if (t === `ACK ${want}`) this.acked++;
      else if (this.problems.length < 10) this.problems.push(`publisher got ${JSON.stringify(t.slice(0, 120))}, expected ACK ${want}`);
      this.wake();
    });
    ws.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static async open(url: string, subjects: string[], offset: Record<string, number> = {}): Promise<FastPublisher> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
    return new FastPublisher(ws, subjects, offset);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private waitProgress(): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(r, 1000);
      this.waiter = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  /** Total publishes sent. */
  get total(): number {
    return this.ids.length;
  }

  /**
   * Publishes until `more()` returns false (checked between batches), never more than `window` unacknowledged and
   * not while `hold()` is true (flow control by the test: the subscribers must keep up); then waits for every ACK.
   */
  async run(more: () => boolean, window = 1000, batch = 100, hold: () => boolean = () => false): Promise<void> {
    let k = 0;
    while (more() && !this.closed && !this.problems.length) {
      while (this.ids.length - this.acked >= window && !this.closed && !this.problems.length) await this.waitProgress();
      const held = Date.now();
      while (hold() && !this.closed) {
        if (Date.now() - held > 20_000) {
          this.problems.push('held back for 20 s: a subscriber stopped making progress');
          break;
        }
        await new Promise((r) => setTimeout(r, 1));
      }
      for (let i = 0; i < batch; i++) {
        const s = this.subjects[k++ % this.subjects.length];
        const seq = ++this.sent[s] + (this.offset[s] ?? 0);
        const id = `${this.ids.length}`;
        this.ids.push(id);
        this.ws.send(`PUB ${s} ${id}\n${s}:${seq}`);
      }
      // Let the subscribers' sockets be read between batches (they share this thread).
      await new Promise((r) => setImmediate(r));
    }
    const deadline = Date.now() + 20_000;
    while (this.acked < this.ids.length && !this.closed && !this.problems.length && Date.now() < deadline) await this.waitProgress();
    assert.deepEqual(this.problems, [], 'the publisher got only its ACKs, in order');
    assert.equal(this.acked, this.ids.length, `every publish is acknowledged (closed: ${this.closed})`);
  }

  /** The seq of the last message published to `subject`. */
  lastSeq(subject: string): number {
    return this.sent[subject] + (this.offset[subject] ?? 0);
  }

  close(): void {
    this.ws.close(1000);
  }

  /** Leaves at once (test-file cleanup); run() ends. */
  shutdown(): void {
    this.closed = true;
    this.ws.terminate();
    this.wake();
  }
}
