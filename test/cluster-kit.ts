// The kit of the cluster suites (test/98.cluster*.test.ts): nodes of one cluster (ClusterEngine = redis) on a real
// redis-server (test/redis-kit.ts), started in this process (test/helpers.ts startServer) and waited for until their
// link is up; a raw WebSocket client (`Tap`) that records every MSG per subject and, when asked, repairs a gap the
// way the SDK does (UNSUB, then SUB <subject>@<epoch>:<last>); and a publisher (`Pub`) that sends PUBs with ids and
// records each id's answer (ACK, or ERR with its code and detail). Everything it opens is closed when the test file
// ends.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import type { Server } from '../src/index';
import { TIMEOUT_MS, startServer, within } from './helpers';
import type { RedisInstance } from './redis-kit';

const opened = new Set<{ terminate(): void }>();
after(() => {
  for (const o of opened) o.terminate();
  opened.clear();
});

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The configuration keys of a node of a cluster on `redis` (a URL or the kit's instance). */
export function clusterConfig(redis: RedisInstance | string, name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ClusterEngine: 'redis',
    ClusterRedis: typeof redis === 'string' ? redis : redis.url,
    ClusterNodeName: name,
    ...extra,
  };
}

/** Starts `n` nodes (node-a, node-b, …) on `redis` with `extra` keys and waits until each link is up. */
export async function startNodes(redis: RedisInstance | string, n: number, extra: Record<string, unknown> = {}): Promise<Server[]> {
  const nodes: Server[] = [];
  for (let i = 0; i < n; i++) nodes.push(startServer(clusterConfig(redis, `node-${String.fromCharCode(97 + i)}`, extra)));
  for (const node of nodes) await waitState(node, 'up');
  return nodes;
}

/** Waits (polling every 5 ms, up to `ms`) until the node's link is in `state`; fails with the last status. */
export async function waitState(node: Server, state: 'up' | 'down' | 'connecting', ms = TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (node.cluster.state !== state) {
    if (Date.now() > deadline) assert.fail(`the link of ${node.config.ClusterNodeName} is not ${state} after ${ms} ms: ${JSON.stringify(node.cluster)}`);
    await sleep(5);
  }
}

/** Polls `probe` (sync or async, every `every` ms) until it is true; fails after `ms` with `what` and `describe()`. */
export async function eventually(what: string, probe: () => boolean | Promise<boolean>, describe: () => unknown = () => '', ms = TIMEOUT_MS, every = 20): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(describe())}`);
    await sleep(every);
  }
}

/** A server-wide counter of an in-process node. */
export const total = (node: Server, name: string): number => {
  const t = node.stats().total;
  assert.ok(name in t, `the server has a counter named ${name}`);
  return t[name];
};

/** `PUBSUB NUMSUB` of the channels of `subjects` (database 0): subscribers (nodes) per subject. */
export async function numsub(redis: RedisInstance, subjects: string[]): Promise<Map<string, number>> {
  const reply = (await redis.command('PUBSUB', 'NUMSUB', ...subjects.map(channel))) as (string | number)[];
  const out = new Map<string, number>();
  for (let i = 0; i < reply.length; i += 2) out.set(String(reply[i]).slice('starling:0:'.length), Number(reply[i + 1]));
  return out;
}

/** The Redis pub/sub channel of a subject (database 0): `starling:0:<subject>`. */
export const channel = (subject: string) => `starling:0:${subject}`;

// ---------------------------------------------------------------------------------------------------
// A recording subscriber

/** One MSG as received. */
export interface Rec {
  epoch: string;
  seq: number;
  kind: string;
  payload: Buffer;
  binary: boolean;
}

const MSG = /^MSG (\S+) ([0-9a-z]+):([0-9]+)(?: (snapshot|history|recovered))?$/;
const POS = /^(SYNC|RESYNC) (\S+) ([0-9a-z]+):([0-9]+)$/;

let tokens = 0;

/**
 * A raw `ws` client that records what it receives: MSGs per subject (`msgs`), SYNC/RESYNC lines (`syncs`), and
 * every other text line (`lines`). With `repair`, a live MSG that does not follow the last one of its subject (a gap,
 * or another epoch) makes it resubscribe from its last position (UNSUB, SUB <s>@<epoch>:<last>), as the client SDK
 * does; what the old subscription still sends is dropped (only the next seq is taken), so `msgs` stays the
 * application's view: consecutive unless a RESYNC (counted in `resyncs`) says messages are gone.
 */
export class Tap {
  readonly msgs = new Map<string, Rec[]>();
  readonly syncs: string[] = [];
  readonly lines: string[] = [];
  /** Gaps seen (and repaired, with `repair`): `<subject> <last> -> <seq>`. */
  readonly gaps: string[] = [];
  /** Problems: a MSG that is not one, a duplicate or an out-of-order seq without `repair`. */
  readonly problems: string[] = [];
  resyncs = 0;
  received = 0;
  closedWith: { code: number; reason: string } | null = null;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly recovering = new Set<string>();
  private readonly pongs = new Map<string, () => void>();
  private progress: (() => void)[] = [];

  private constructor(
    readonly ws: WebSocket,
    readonly name: string,
    readonly repair: boolean,
  ) {
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

  /** Opens a connection to `node` (a server or a URL). */
  static async open(node: Server | string, name = 'a subscriber', o: { repair?: boolean } = {}): Promise<Tap> {
    const url = typeof node === 'string' ? node : node.url;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    opened.add(ws);
    await within(new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject)), `${name}'s handshake with ${url}`);
    return new Tap(ws, name, o.repair ?? false);
  }

  /** The messages of `subject` received so far. */
  of(subject: string): Rec[] {
    let list = this.msgs.get(subject);
    if (!list) this.msgs.set(subject, (list = []));
    return list;
  }

  /** Their payloads as text. */
  texts(subject: string): string[] {
    return this.of(subject).map((r) => r.payload.toString('utf8'));
  }

  send(data: string | Buffer): void {
    this.ws.send(data, { binary: typeof data !== 'string' });
  }

  /** Sends `PING <token>` and waits for its PONG: every command sent before has taken effect. */
  async ping(ms = TIMEOUT_MS): Promise<void> {
    const token = `c${++tokens}`;
    const pong = new Promise<void>((resolve, reject) => {
      this.pongs.set(token, resolve);
      void this.closed.then((c) => reject(new Error(`${this.name} was closed (${c.code} ${c.reason}) while waiting for PONG`)));
    });
    this.ws.send(`PING ${token}`);
    await within(pong, `${this.name}'s PONG`, ms);
  }

  /** Sends `SUB …` (specs as given) and waits for the PONG after it. */
  async sub(...specs: string[]): Promise<void> {
    this.send(`SUB ${specs.join(' ')}`);
    await this.ping();
  }

  /** Waits until `probe()` holds, rechecking on every message (and every 200 ms); fails after `ms` with `describe()`. */
  async until(what: string, probe: () => boolean, describe: () => unknown = () => '', ms = TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + ms;
    while (!probe()) {
      if (this.closedWith) assert.fail(`${this.name} was closed (${this.closedWith.code} ${this.closedWith.reason}) while waiting for ${what}; last: ${JSON.stringify(describe())}`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`${this.name}: timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(describe())}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.progress.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits until `subject` holds at least `n` messages. */
  count(subject: string, n: number, ms = TIMEOUT_MS): Promise<void> {
    return this.until(`${n} messages on ${subject}`, () => this.of(subject).length >= n, () => ({ got: this.of(subject).length, last: this.of(subject).at(-1)?.seq, gaps: this.gaps.slice(-3), lines: this.lines.slice(-3) }), ms);
  }

  /** Stops reading the socket: the kernel buffers fill, the server must queue or cut this client. */
  pause(): void {
    (this.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  }

  terminate(): void {
    this.ws.terminate();
  }

  private onMessage(data: Buffer, binary: boolean): void {
    this.received++;
    const nl = data.indexOf(0x0a);
    const header = data.subarray(0, nl < 0 ? Math.min(data.length, 400) : nl).toString('latin1');
    try {
      if (header.startsWith('MSG ')) return this.onMsg(header, nl < 0 ? Buffer.alloc(0) : data.subarray(nl + 1), binary);
      if (binary) return void (this.problems.length < 50 && this.problems.push(`a binary frame that is not a MSG: ${JSON.stringify(header.slice(0, 80))}`));
      const text = data.toString('utf8');
      if (text.startsWith('PONG ')) {
        const w = this.pongs.get(text.slice(5));
        this.pongs.delete(text.slice(5));
        return w?.();
      }
      const pos = POS.exec(text);
      if (pos) {
        this.syncs.push(text);
        const [, what, subject, epoch, seq] = pos;
        if (what === 'RESYNC') this.resyncs++;
        this.recovering.delete(subject);
        this.position.set(subject, { epoch, seq: Number(seq) });
        return;
      }
      this.lines.push(text);
    } finally {
      if (this.progress.length) for (const w of this.progress.splice(0)) w();
    }
  }

  /** The last position per subject: of the last MSG taken, or of the last SYNC/RESYNC. */
  readonly position = new Map<string, { epoch: string; seq: number }>();

  private onMsg(header: string, payload: Buffer, binary: boolean): void {
    const m = MSG.exec(header);
    if (!m) return void (this.problems.length < 50 && this.problems.push(`malformed MSG header ${JSON.stringify(header.slice(0, 100))}`));
    const [, subject, epoch, seqText, kind = 'live'] = m;
    const seq = Number(seqText);
    const last = this.position.get(subject);
    const rec: Rec = { epoch, seq, kind, payload: Buffer.from(payload), binary };
    if (kind === 'snapshot') {
      this.of(subject).push(rec);
      if (!last || last.epoch !== epoch || last.seq < seq) this.position.set(subject, { epoch, seq });
      return;
    }
    if (this.recovering.has(subject)) {
      // Only the next message is taken: older ones are duplicates, later ones the recovery sends again.
      if (last && last.epoch === epoch && seq === last.seq + 1) {
        this.of(subject).push(rec);
        this.position.set(subject, { epoch, seq });
      }
      return;
    }
    if (last && (last.epoch !== epoch || seq !== last.seq + 1)) {
      this.gaps.push(`${subject} ${last.epoch}:${last.seq} -> ${epoch}:${seq} (${kind})`);
      if (this.repair) {
        if (last.epoch === epoch && seq <= last.seq) return; // a duplicate: dropped
        this.recovering.add(subject);
        this.send(`UNSUB ${subject}`);
        this.send(`SUB ${subject}@${last.epoch}:${last.seq}`);
        return;
      }
      if (this.problems.length < 50) this.problems.push(`${subject}: ${last.epoch}:${last.seq} followed by ${epoch}:${seq} (${kind})`);
    }
    this.of(subject).push(rec);
    this.position.set(subject, { epoch, seq });
  }
}

// ---------------------------------------------------------------------------------------------------
// A publisher that records each answer

/** The answer to one PUB with an id. */
export interface Answer {
  ok: boolean;
  /** The ERR code (`unavailable`, …) when not ok. */
  code?: string;
  /** The ERR detail when not ok. */
  detail?: string;
}

/**
 * A raw `ws` publisher: `PUB <subject> <id>\n<payload>`, ids `<prefix><n>` from 1. `answers` maps each id to its
 * answer once it came; `acked` lists the acknowledged ids in the order of their ACKs.
 */
export class Pub {
  readonly answers = new Map<string, Answer>();
  readonly acked: string[] = [];
  readonly sent: string[] = [];
  readonly others: string[] = [];
  private waiters: (() => void)[] = [];
  closedWith: { code: number; reason: string } | null = null;
  private n = 0;

  private constructor(
    readonly ws: WebSocket,
    readonly prefix: string,
  ) {
    ws.on('message', (data: Buffer) => {
      const t = data.toString('utf8');
      if (t.startsWith('ACK ')) {
        const id = t.slice(4);
        this.answers.set(id, { ok: true });
        this.acked.push(id);
      } else if (t.startsWith('ERR ')) {
        const [, code, id, ...rest] = t.split(' ');
        if (id && this.sentSet.has(id)) this.answers.set(id, { ok: false, code, detail: rest.join(' ') });
        else if (this.others.length < 50) this.others.push(t);
      } else if (this.others.length < 50) this.others.push(t.slice(0, 200));
      for (const w of this.waiters.splice(0)) w();
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      this.closedWith = { code, reason: reason.toString() };
      for (const w of this.waiters.splice(0)) w();
    });
  }

  private readonly sentSet = new Set<string>();

  static async open(node: Server | string, prefix: string): Promise<Pub> {
    const url = typeof node === 'string' ? node : node.url;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    opened.add(ws);
    await within(new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject)), `a publisher's handshake with ${url}`);
    return new Pub(ws, prefix);
  }

  /** Sends one PUB with the next id; returns the id. */
  publish(subject: string, payload?: string | Buffer, o: { retained?: boolean } = {}): string {
    const id = `${this.prefix}${++this.n}`;
    const body = payload ?? id;
    const head = Buffer.from(`PUB ${subject} ${id}${o.retained ? ' +retained' : ''}\n`, 'latin1');
    const bin = typeof body !== 'string';
    this.sent.push(id);
    this.sentSet.add(id);
    this.ws.send(Buffer.concat([head, bin ? body : Buffer.from(body, 'utf8')]), { binary: bin });
    return id;
  }

  /** Ids sent and not answered yet. */
  get inFlight(): number {
    return this.sent.length - this.answers.size;
  }

  /** Waits until fewer than `n` are unanswered (or the connection closed). */
  async below(n: number, ms = TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.inFlight >= n && !this.closedWith) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`a publisher: ${this.inFlight} publishes unanswered for ${ms} ms (last sent ${this.sent.at(-1)})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits until every publish sent is answered. */
  all(ms = TIMEOUT_MS): Promise<void> {
    return this.below(1, ms);
  }

  /** The ids whose answer is an ERR with `code` (and whose detail matches `detail`, if given). */
  refused(code: string, detail?: RegExp): string[] {
    return [...this.answers].filter(([, a]) => !a.ok && a.code === code && (!detail || detail.test(a.detail ?? ''))).map(([id]) => id);
  }

  terminate(): void {
    this.ws.terminate();
  }
}

/**
 * Publishes `payload(i)` to `subject` for i = 1… with at most `window` unanswered, until `stop()`; after an ERR it
 * waits `pauseAfterErr` ms (a node whose engine is down refuses at once: no need to spin).
 */
export class PubLoop {
  private stopped = false;
  readonly done: Promise<void>;
  constructor(
    readonly pub: Pub,
    readonly subject: string,
    readonly window = 20,
    readonly pauseAfterErr = 20,
  ) {
    this.done = this.run();
    this.done.catch(() => {});
  }

  private async run(): Promise<void> {
    let refused = 0;
    while (!this.stopped && !this.pub.closedWith) {
      await this.pub.below(this.window, 30_000);
      if (this.stopped) break;
      const now = this.pub.answers.size - this.pub.acked.length;
      if (now > refused) {
        refused = now;
        await sleep(this.pauseAfterErr);
      }
      this.pub.publish(this.subject);
    }
  }

  /** Stops sending and waits for the answer to each publish sent. */
  async stop(ms = TIMEOUT_MS): Promise<void> {
    this.stopped = true;
    await this.done;
    await this.pub.all(ms);
  }
}

/** Fails unless `recs` are consecutive seqs of one epoch, from `first` (if given); returns the epoch. */
export function assertConsecutive(recs: readonly { epoch: string; seq: number }[], what: string, first?: number): string {
  assert.ok(recs.length > 0, `${what}: no messages`);
  const epoch = recs[0].epoch;
  if (first !== undefined) assert.equal(recs[0].seq, first, `${what}: the first seq`);
  for (let i = 1; i < recs.length; i++) {
    assert.equal(recs[i].epoch, epoch, `${what}: the epoch changed at message ${i} (${recs[i - 1].epoch}:${recs[i - 1].seq} -> ${recs[i].epoch}:${recs[i].seq})`);
    if (recs[i].seq !== recs[i - 1].seq + 1) assert.fail(`${what}: seq ${recs[i - 1].seq} is followed by ${recs[i].seq} (message ${i})`);
  }
  return epoch;
}

/** The elements that occur more than once. */
export function duplicates<T>(xs: T[]): T[] {
  const seen = new Set<T>();
  const dup = new Set<T>();
  for (const x of xs) (seen.has(x) ? dup : seen).add(x);
  return [...dup];
}
