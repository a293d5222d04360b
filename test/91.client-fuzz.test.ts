// The client SDK against hostile server input, at random: thousands of server messages — well-formed lines of every
// form, mutations of them (byte flips, every truncation, spaces doubled or dropped, huge, negative and non-decimal
// numbers, epochs the server cannot write, empty subjects, no newline, \r, NUL, invalid UTF-8, binary frames holding
// text lines, 100 KB lines) and random bytes — played at a subscribed client by the scripted server of
// test/client-kit.ts, in batches. Each input is first classified by an oracle written from docs/protocol.md and
// docs/client.md (a protocol error, a well-formed line with nothing to do, an ERR or AUTH event); each batch ends with
// a well-formed MSG (the sentinel), after which the client must have delivered exactly the sentinel, reported every
// malformed input as one `error` event with code `protocol` and the rest as documented, sent nothing back, and kept
// its connection. Invalid UTF-8 in a text frame is the WebSocket's to refuse (RFC 6455 fails the connection, 1007):
// there the client must reconnect, resubscribe from its position and recover. Nothing may escape to the process.
//
// Deterministic: the seed is printed with every failure; FUZZ_SEED=<n> replays one (or tries another).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { connect, subjectProblem, StarlingError, type Client, type ClientEvent, type ClientEvents, type Message } from 'starling/client';
import { ScriptedServer, atEnd, type ScriptedConnection } from './client-kit';
import { within } from './helpers';
import { rng } from './recovery-kit';

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : 0x91c1f022;
const REPLAY = `seed ${SEED} (FUZZ_SEED=${SEED} node --test dist/test/91.client-fuzz.test.js replays it)`;
const SUITE = { timeout: 60_000 };
/** Reconnect at once (5 ms, no jitter). */
const FAST = { min: 5, max: 50, jitter: 0 };
/** The subscribed subject; every other subject is one the client does not subscribe to. */
const SUBJECT = '/fuzz/live';
/** Mixed batches, inputs per batch; every KILL_EVERY-th batch ends with a text frame that is not UTF-8. */
const BATCHES = 200;
const PER_BATCH = 48;
const KILL_EVERY = 11;
/** How long a sentinel may take: far more than a batch needs on loopback; a hang fails with the batch shown. */
const SENTINEL_MS = 5_000;
const LONG = 100_000;

// ---------------------------------------------------------------------------------------------------
// Nothing may escape to the process

const escaped: unknown[] = [];
const onEscape = (e: unknown): void => void escaped.push(e);
before(() => {
  process.on('uncaughtException', onEscape);
  process.on('unhandledRejection', onEscape);
});
after(() => {
  process.off('uncaughtException', onEscape);
  process.off('unhandledRejection', onEscape);
});

// ---------------------------------------------------------------------------------------------------
// Randomness

class Rand {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = rng(seed);
  }
  /** 0 … n − 1 */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

// ---------------------------------------------------------------------------------------------------
// Inputs, and what the protocol says the client must do with each

/** One server message: its bytes, sent as a text or a binary frame; `how` says how it was made. */
interface Input {
  data: Buffer;
  binary: boolean;
  how: string;
}

const txt = (s: string, how: string): Input => ({ data: Buffer.from(s, 'utf8'), binary: false, how });
const bin = (head: string | Buffer, body: Buffer | string, how: string): Input => ({
  data: Buffer.concat([Buffer.from(head), Buffer.from(body)]),
  binary: true,
  how,
});

/**
 * What the client must do with an input (docs/client.md, "How the client reads the server"; docs/protocol.md):
 * - protocol: it does not parse — exactly one `error` event, code `protocol`; nothing delivered;
 * - silent: well-formed, nothing to do — a message or SYNC for another subject, a duplicate, a SYNC while live;
 * - silent-or-protocol: well-formed but for a subject no client can subscribe to (silent now; a protocol error
 *   would be as right);
 * - error / auth: an ERR with nothing outstanding is an `error` event with its code; AUTH an `auth` event;
 * - moves: a well-formed MSG of the subscribed subject that is no duplicate — it would be delivered or start a
 *   recovery, as it should: not garbage, so never sent (90.client-protocol covers those).
 */
type Outcome =
  | { is: 'protocol' }
  | { is: 'silent' }
  | { is: 'silent-or-protocol' }
  | { is: 'error'; code: string; detail: string }
  | { is: 'auth'; state: string; detail: string }
  | { is: 'moves' };

/** Where the subscription stands (the last position delivered, or of the last SYNC/RESYNC). */
interface Position {
  epoch: string;
  seq: number;
}

/**
 * An epoch the server can write (lower-case base 36, at most 13 characters, at most 2^64 − 1) and a seq the SDK can
 * hold (decimal, at most 16 digits, at most 2^53 − 1: a number).
 */
function position(token: string | undefined): Position | null {
  const m = token === undefined ? null : /^([0-9a-z]{1,13}):([0-9]{1,16})$/.exec(token);
  if (!m) return null;
  let epoch = 0n;
  for (const c of m[1]) epoch = epoch * 36n + BigInt(parseInt(c, 36));
  const seq = Number(m[2]);
  return epoch < 2n ** 64n && seq <= Number.MAX_SAFE_INTEGER ? { epoch: m[1], seq } : null;
}

/** The longest header the SDK reads; a valid one is under 310 bytes ("too long" in docs/client.md). */
const MAX_HEADER = 512;
const PROTOCOL: Outcome = { is: 'protocol' };
const SILENT: Outcome = { is: 'silent' };

/** The oracle: what the client at `at` must do with `input` (nothing is in flight, no PING outstanding). */
function expected(input: Input, at: Position): Outcome {
  const { data } = input;
  const nl = data.indexOf(0x0a);
  let head = nl < 0 ? data : data.subarray(0, nl);
  if (head.length > MAX_HEADER) return PROTOCOL;
  if (head.length > 0 && head[head.length - 1] === 0x0d) head = head.subarray(0, head.length - 1);
  for (const b of head) if (b < 0x20 || b > 0x7e) return PROTOCOL;
  const t = head.toString('latin1').split(' ');
  switch (t[0]) {
    case 'MSG': {
      const pos = position(t[2]);
      if (nl < 0 || (t.length !== 3 && t.length !== 4) || !t[1] || !pos) return PROTOCOL;
      if (t.length === 4 && !['snapshot', 'history', 'recovered'].includes(t[3])) return PROTOCOL;
      if (t[1] === SUBJECT) return pos.epoch === at.epoch && pos.seq <= at.seq ? SILENT : { is: 'moves' };
      return subjectProblem(t[1]) ? { is: 'silent-or-protocol' } : SILENT;
    }
    case 'SYNC':
    case 'RESYNC':
      if (t.length !== 3 || !t[1] || !position(t[2])) return PROTOCOL;
      return subjectProblem(t[1]) ? { is: 'silent-or-protocol' } : SILENT;
    case 'ERR':
      return t[1] ? { is: 'error', code: t[1], detail: t.slice(2).join(' ') } : PROTOCOL;
    case 'AUTH':
      return t[1] ? { is: 'auth', state: t[1], detail: t.slice(2).join(' ') } : PROTOCOL;
    default:
      // ACK and PONG too: no publish is in flight, no PING waits for its answer.
      return PROTOCOL;
  }
}

// ---------------------------------------------------------------------------------------------------
// Well-formed lines

const KIND_SUFFIX = ['', '', ' snapshot', ' history', ' recovered'];
const SEGMENT_CHARS = 'abcxyzABC019-_.~!"#$%&\'()+,:;<=>?@[\\]^`{|}';
const ODD_SUBJECTS = ['/__proto__', '/constructor', '/toString', '/fuzz', '/fuzz/live/x', '/fuzz/livE', '/fuzz/live#1', '/fuzz/live@e1:1', `/${'x'.repeat(254)}`];
const ERR_CODES = ['bad-command', 'bad-subject', 'too-large', 'limit', 'forbidden', 'overloaded', 'x', 'constructor', '__proto__', 'closed'];
const AUTH_STATES = ['ok', 'invalid', 'expiring', 'expired', 'later-state', '__proto__'];

function otherSubject(r: Rand): string {
  if (r.chance(0.2)) return r.pick(ODD_SUBJECTS);
  let s = '';
  for (let n = r.range(1, 4); n > 0; n--) {
    s += '/';
    for (let k = r.range(1, 8); k > 0; k--) s += SEGMENT_CHARS[r.int(SEGMENT_CHARS.length)];
  }
  return s === SUBJECT ? `${s}/x` : s;
}

function epochToken(r: Rand): string {
  if (r.chance(0.3)) return r.pick(['e1', '0', 'z', '3w5e11264sgsf', '0000000000001']);
  let e = '';
  for (let n = r.range(1, 12); n > 0; n--) e += r.int(36).toString(36);
  return e;
}

function seqToken(r: Rand): string {
  return String(r.pick([0, 1, r.int(1000), r.int(2 ** 31), Number.MAX_SAFE_INTEGER]));
}

function printable(r: Rand, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(0x20 + r.int(95));
  return s;
}

/** A text payload: anything (newlines, \r, NUL, non-ASCII), it follows the header's newline. */
function payloadText(r: Rand): string {
  const parts = ['a', 'hello', ' ', '\n', '\r', '\r\n', '\0', '\u00e9', '\u20ac', '\u{1f600}', '\uffff', '\u2028', 'MSG /fuzz/live e1:1\nx', '{"p":1}'];
  let s = '';
  for (let n = r.int(8); n > 0; n--) s += r.pick(parts);
  return s;
}

function payloadBytes(r: Rand): Buffer {
  return r.chance(0.2) ? Buffer.from([0x00, 0xff, 0x0a, 0x0d, 0x80]) : r.bytes(r.int(48));
}

/** The next message of the subscription (well-formed: it `moves` it); mutated, it is the most dangerous garbage. */
function nextLine(r: Rand, at: Position): Input {
  const head = `MSG ${SUBJECT} ${at.epoch}:${at.seq + 1}${r.pick(KIND_SUFFIX)}\n`;
  return r.chance(0.3) ? bin(head, payloadBytes(r), 'the next MSG (binary)') : txt(head + payloadText(r), 'the next MSG');
}

/** A well-formed server line of any form. */
function validLine(r: Rand, at: Position): Input {
  const nl = r.chance(0.15) ? '\r\n' : '\n';
  /** Optional newline (and ignored body) after a line that takes none. */
  const tail = (): string => r.pick(['', '', nl, `${nl}ignored body`]);
  switch (r.int(11)) {
    case 0:
    case 1: {
      const head = `MSG ${otherSubject(r)} ${epochToken(r)}:${seqToken(r)}${r.pick(KIND_SUFFIX)}${nl}`;
      return r.chance(0.4) ? bin(head, payloadBytes(r), 'MSG of another subject (binary)') : txt(head + payloadText(r), 'MSG of another subject');
    }
    case 2: {
      const head = `MSG ${SUBJECT} ${at.epoch}:${r.int(at.seq + 1)}${r.pick(KIND_SUFFIX)}${nl}`;
      return r.chance(0.4) ? bin(head, payloadBytes(r), 'a duplicate (binary)') : txt(head + payloadText(r), 'a duplicate');
    }
    case 3: {
      const subject = r.chance(0.5) ? SUBJECT : otherSubject(r);
      const pos = subject === SUBJECT && r.chance(0.5) ? `${at.epoch}:${r.int(at.seq + 2)}` : `${epochToken(r)}:${seqToken(r)}`;
      return txt(`${r.pick(['SYNC', 'RESYNC'])} ${subject} ${pos}${tail()}`, 'SYNC/RESYNC');
    }
    case 4:
    case 5: {
      const id = r.chance(0.5) ? ` p${r.int(100).toString(36)}` : '';
      const detail = r.chance(0.7) ? ` ${printable(r, r.int(60))}` : '';
      return txt(`ERR ${r.pick(ERR_CODES)}${id}${detail}${tail()}`, 'ERR');
    }
    case 6:
      return txt(`AUTH ${r.pick(AUTH_STATES)}${r.chance(0.6) ? ` ${printable(r, r.int(30))}` : ''}${tail()}`, 'AUTH');
    case 7:
      return txt(`ACK p${r.int(100).toString(36)}${tail()}`, 'ACK of nothing in flight');
    case 8:
      return txt(`PONG ${r.pick(['b1', 'b2', 'x', printable(r, 8).replace(/ /g, '_')])}${tail()}`, 'PONG of no PING');
    default: {
      // A text line in a binary frame.
      const line = r.pick([`SYNC ${SUBJECT} ${at.epoch}:${at.seq}`, `ERR limit ${printable(r, 20)}`, `AUTH ok`, `ACK p1`, `PONG b1`, `RESYNC /x e1:1`]);
      return bin(line, r.chance(0.5) ? '' : nl, 'a text line in a binary frame');
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Mutations

const INTERESTING_BYTES = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x2f, 0x3a, 0x7f, 0x80, 0xc3, 0xff];
const BAD_EPOCHS = ['', 'E1', 'e1E', '-1', 'e-1', 'e_1', '\u00e9', 'abcdefghijklmn', 'a'.repeat(16), 'a'.repeat(17), '0'.repeat(14), 'zzzzzzzzzzzzz', '3w5e11264sgsg', '99999999999999999999999', '3w5e11264sgsf', '0000000000001'];
const BAD_SEQS = ['', '-1', '-0', '+1', '1.5', '1e3', '0x1f', '0b1', '99999999999999999999999', '9007199254740992', '9007199254740991', '18446744073709551616', 'NaN', 'Infinity', '\uff11', '\u0663', '1_000', '00000000000000001', '0'];
const TOKENS = [
  '', 'MSG', 'SYNC', 'RESYNC', 'ACK', 'ERR', 'PONG', 'AUTH', 'PING', 'PUB', 'SUB', 'msg', 'Msg', 'live', 'LIVE', 'snapshot', 'history', 'recovered',
  'Snapshot', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString',
  '__defineGetter__', '__lookupSetter__', 'then', 'prototype', 'length', 'undefined', 'null', 'NaN', 'e1:1', 'e1:0', ':', '::', 'e1:', ':1',
  '0:0', '/', '//', SUBJECT, `${SUBJECT}/`, '*', '#1', '@e1:1', '\u00e9', '\u0000', '\t', '99999999999999999999999', '-1', '+retained',
];
const INVALID_UTF8 = [[0xff], [0xc3], [0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xe2, 0x82]];

interface Frame {
  data: Buffer;
  binary: boolean;
}

/** The header (before the first \n) as tokens, and the rest (from the \n on); join() puts them back. */
function tokens(f: Frame): { t: Buffer[]; rest: Buffer; join(t: Buffer[]): void } {
  const nl = f.data.indexOf(0x0a);
  const head = nl < 0 ? f.data : f.data.subarray(0, nl);
  const rest = nl < 0 ? Buffer.alloc(0) : f.data.subarray(nl);
  const t: Buffer[] = [];
  let from = 0;
  for (let i = 0; i <= head.length; i++)
    if (i === head.length || head[i] === 0x20) {
      t.push(head.subarray(from, i));
      from = i + 1;
    }
  const join = (parts: Buffer[]): void => {
    const out: Buffer[] = [];
    parts.forEach((p, i) => out.push(...(i ? [Buffer.from(' '), p] : [p])));
    f.data = Buffer.concat([...out, rest]);
  };
  return { t, rest, join };
}

function headLength(f: Frame): number {
  const nl = f.data.indexOf(0x0a);
  return nl < 0 ? f.data.length : nl;
}

function splice(f: Frame, at: number, remove: number, insert: Buffer | number[] = []): void {
  f.data = Buffer.concat([f.data.subarray(0, at), Buffer.from(insert), f.data.subarray(at + remove)]);
}

/** Replaces the epoch (before ':') or the seq (after it) of the header's position token, if it has one. */
function replacePosition(r: Rand, f: Frame, part: 'epoch' | 'seq'): void {
  const { t, join } = tokens(f);
  const i = t.findIndex((x) => x.includes(0x3a));
  if (i < 0) return;
  const colon = t[i].indexOf(0x3a);
  const value = Buffer.from(r.pick(part === 'epoch' ? BAD_EPOCHS : BAD_SEQS));
  t[i] = part === 'epoch' ? Buffer.concat([value, t[i].subarray(colon)]) : Buffer.concat([t[i].subarray(0, colon + 1), value]);
  join(t);
}

const OPS: [string, (r: Rand, f: Frame) => void][] = [
  [
    'flip a bit',
    (r, f) => {
      if (!f.data.length) return;
      const i = r.int(f.data.length);
      splice(f, i, 1, [f.data[i] ^ (1 << r.int(8))]);
    },
  ],
  ['set a byte', (r, f) => f.data.length && splice(f, r.int(f.data.length), 1, [r.chance(0.5) ? r.pick(INTERESTING_BYTES) : r.int(256)])],
  ['insert a byte', (r, f) => splice(f, r.int(f.data.length + 1), 0, [r.chance(0.5) ? r.pick(INTERESTING_BYTES) : r.int(256)])],
  ['delete a byte', (r, f) => f.data.length && splice(f, r.int(f.data.length), 1)],
  ['truncate', (r, f) => (f.data = f.data.subarray(0, r.int(f.data.length + 1)))],
  [
    'double a space',
    (r, f) => {
      const spaces = [...f.data.subarray(0, headLength(f)).entries()].filter(([, b]) => b === 0x20).map(([i]) => i);
      if (spaces.length) splice(f, r.pick(spaces), 0, [0x20]);
    },
  ],
  [
    'drop a space',
    (r, f) => {
      const spaces = [...f.data.subarray(0, headLength(f)).entries()].filter(([, b]) => b === 0x20).map(([i]) => i);
      if (spaces.length) splice(f, r.pick(spaces), 1);
    },
  ],
  ['space at an end', (r, f) => splice(f, r.chance(0.5) ? 0 : headLength(f), 0, [0x20])],
  [
    'replace a token',
    (r, f) => {
      const { t, join } = tokens(f);
      t[r.int(t.length)] = Buffer.from(r.pick(TOKENS));
      join(t);
    },
  ],
  [
    'append a token',
    (r, f) => {
      const { t, join } = tokens(f);
      join([...t, Buffer.from(r.pick(TOKENS))]);
    },
  ],
  [
    'duplicate or swap tokens',
    (r, f) => {
      const { t, join } = tokens(f);
      const [i, j] = [r.int(t.length), r.int(t.length)];
      if (r.chance(0.5)) t.splice(i, 0, t[i]);
      else [t[i], t[j]] = [t[j], t[i]];
      join(t);
    },
  ],
  ['hostile epoch', (r, f) => replacePosition(r, f, 'epoch')],
  ['hostile seq', (r, f) => replacePosition(r, f, 'seq')],
  [
    'hostile subject',
    (r, f) => {
      const { t, join } = tokens(f);
      if (t.length > 1) t[1] = Buffer.from(r.pick(['', '', '/', 'fuzz/live', '/fuzz//live', `${SUBJECT}/`, '/a*', '/\u00e9', `${SUBJECT}\t`]));
      join(t);
    },
  ],
  [
    'lose the newline',
    (r, f) => {
      const nl = f.data.indexOf(0x0a);
      if (nl >= 0) f.data = r.chance(0.5) ? f.data.subarray(0, nl) : Buffer.concat([f.data.subarray(0, nl), f.data.subarray(nl + 1)]);
    },
  ],
  ['\\r in the header', (r, f) => splice(f, r.chance(0.5) ? headLength(f) : r.int(headLength(f) + 1), 0, r.chance(0.7) ? [0x0d] : [0x0d, 0x0d])],
  ['NUL', (r, f) => splice(f, r.chance(0.7) ? r.int(headLength(f) + 1) : r.int(f.data.length + 1), 0, [0x00])],
  ['invalid UTF-8', (r, f) => splice(f, r.int(f.data.length + 1), 0, r.pick(INVALID_UTF8))],
  ['other frame type', (_r, f) => (f.binary = !f.binary)],
  [
    'change case',
    (r, f) => {
      const n = headLength(f);
      const head = f.data.subarray(0, n).toString('latin1');
      splice(f, 0, n, Buffer.from(r.chance(0.5) ? head.toLowerCase() : head.toUpperCase(), 'latin1'));
    },
  ],
];

/** One to four mutations of `base`. A text frame that is no longer UTF-8 goes as a binary frame (see killFrame). */
function mutate(r: Rand, base: Input): Input {
  const f: Frame = { data: Buffer.from(base.data), binary: base.binary };
  const done: string[] = [];
  for (let n = r.chance(0.7) ? 1 : r.range(2, 4); n > 0; n--) {
    const [name, op] = r.pick(OPS);
    op(r, f);
    done.push(name);
  }
  let how = `${base.how}: ${done.join(', ')}`;
  if (!f.binary && !isUtf8(f.data)) {
    f.binary = true;
    how += ' (binary: not UTF-8)';
  }
  return { ...f, how };
}

// ---------------------------------------------------------------------------------------------------
// Random bytes, long lines, connection killers

function randomInput(r: Rand): Input {
  switch (r.int(5)) {
    case 0:
      return { data: r.bytes(r.int(300)), binary: true, how: 'random bytes' };
    case 1: {
      let s = '';
      for (let n = r.int(80); n > 0; n--) {
        const range = r.pick([
          [0, 0x7f],
          [0x80, 0x7ff],
          [0x800, 0xd7ff],
          [0xe000, 0xffff],
          [0x10000, 0x10ffff],
        ]);
        s += String.fromCodePoint(r.range(range[0], range[1]));
      }
      return txt(s, 'random characters');
    }
    case 2:
      return txt(printable(r, r.int(200)), 'random printable ASCII');
    case 3: {
      let s = r.pick(['MSG', 'SYNC', 'RESYNC', 'ACK', 'ERR', 'PONG', 'AUTH', 'MSG ', '']);
      for (let n = r.int(6); n > 0; n--) s += ` ${printable(r, r.int(12)).replace(/ /g, '')}`;
      return txt(r.chance(0.5) ? `${s}\n${printable(r, r.int(20))}` : s, 'a verb and random tokens');
    }
    default:
      return bin(r.pick(['MSG ', `MSG ${SUBJECT} `, 'SYNC ', 'ERR ', 'AUTH ']), r.bytes(r.int(100)), 'a verb and random bytes');
  }
}

const LONG_LINES: ((at: Position) => Input)[] = [
  () => txt('x'.repeat(LONG), '100 KB line, no newline'),
  () => txt(`MSG /${'a'.repeat(LONG)} e1:1\nx`, '100 KB subject'),
  (at) => txt(`MSG ${SUBJECT} ${at.epoch}:${'9'.repeat(LONG)}\nx`, '100 KB seq'),
  () => txt(`MSG ${SUBJECT} ${'e'.repeat(LONG)}:1\nx`, '100 KB epoch'),
  () => bin('A'.repeat(LONG), '', '100 KB binary line'),
  () => txt(`${' '.repeat(LONG)}\n`, '100 KB of spaces'),
  () => txt(`ERR limit ${'d'.repeat(LONG)}`, '100 KB ERR detail'),
  () => txt('MSG '.repeat(LONG / 4), 'MSG MSG MSG … (100 KB)'),
  () => txt(`MSG /fuzz/other e1:1\n${'p'.repeat(LONG)}`, 'MSG of another subject, 100 KB payload'),
  (at) => bin(`MSG ${SUBJECT} ${at.epoch}:${at.seq}\n`, Buffer.alloc(LONG, 0x0a), 'a duplicate, 100 KB of newlines'),
];

/** A text frame that is not UTF-8: the WebSocket fails the connection (1007) before the client sees it. */
function killFrame(r: Rand, at: Position): Input {
  const bad = Buffer.from(r.pick(INVALID_UTF8));
  let x: Input;
  switch (r.int(3)) {
    case 0:
      // The next message itself: never delivered from this frame; the server recovers it after the reconnect, or not.
      x = { data: Buffer.concat([Buffer.from(`MSG ${SUBJECT} ${at.epoch}:${at.seq + 1}\nok `), bad, Buffer.from(' tail')]), binary: false, how: 'the next MSG, payload not UTF-8' };
      break;
    case 1:
      x = { data: Buffer.concat([Buffer.from(`MSG ${SUBJECT} `), bad, Buffer.from(`:${at.seq + 1}\nx`)]), binary: false, how: 'a header not UTF-8' };
      break;
    default:
      x = { data: Buffer.concat([r.bytes(r.int(20)), bad]), binary: false, how: 'random bytes, not UTF-8' };
  }
  // Random bytes before a lone continuation byte can make a valid sequence (D2 80 is U+0480); 0xFF never is one.
  if (isUtf8(x.data)) x.data = Buffer.concat([x.data, Buffer.from([0xff])]);
  return x;
}

/** Valid lines of every form, ASCII only: each is sent cut at every position (text stays UTF-8). */
function truncationBases(at: Position): Input[] {
  return [
    txt(`MSG ${SUBJECT} ${at.epoch}:${at.seq + 1}\npayload`, 'the next MSG'),
    txt(`MSG ${SUBJECT} ${at.epoch}:${at.seq + 1} recovered\r\np`, 'the next MSG, recovered, CRLF'),
    txt(`MSG ${SUBJECT} ${at.epoch}:${at.seq} snapshot\n{"p":1}`, 'a duplicate snapshot'),
    txt('MSG /fuzz/other 3w5e11264sgsf:9007199254740991 history\nh', 'MSG of another subject'),
    bin(`MSG ${SUBJECT} ${at.epoch}:${at.seq + 1}\n`, Buffer.from([0x00, 0xff, 0x0a, 0x0d]), 'the next MSG (binary)'),
    txt(`SYNC ${SUBJECT} ${at.epoch}:${at.seq}`, 'SYNC'),
    txt(`RESYNC /fuzz/other k2x9:123\n`, 'RESYNC'),
    txt('ERR too-large p7 payload of 1025 bytes is over MaxMessageSize (1024)', 'ERR with an id'),
    txt('ERR limit\r\n', 'ERR, CRLF'),
    txt('AUTH expiring 30', 'AUTH'),
    txt('ACK p1z', 'ACK'),
    txt('PONG b1', 'PONG'),
  ];
}

// ---------------------------------------------------------------------------------------------------
// The harness: a scripted server (manual PONGs: every command the client sends is seen) and a subscribed client

type Logged = { [K in ClientEvent]: { event: K; value: ClientEvents[K] } }[ClientEvent];
const EVENTS = ['connected', 'disconnected', 'reconnecting', 'sync', 'resync', 'auth', 'error'] as const;

function isProtocolError(e: Logged | undefined): boolean {
  return (
    e?.event === 'error' &&
    e.value instanceof StarlingError &&
    e.value.code === 'protocol' &&
    e.value.subject === undefined &&
    e.value.detail.startsWith('malformed server message ')
  );
}

function showEvent(e: Logged | undefined): string {
  if (!e) return 'nothing';
  if (e.event === 'error') return `error ${e.value.code} ${JSON.stringify(e.value.detail.slice(0, 100))}`;
  return `${e.event} ${JSON.stringify(e.value)}`;
}

function showInput(x: Input): string {
  const shown = x.data.subarray(0, 100).toString('latin1') + (x.data.length > 100 ? `… (${x.data.length} bytes)` : '');
  return `${x.binary ? 'bin' : 'txt'} ${JSON.stringify(shown)} [${x.how}]`;
}

function showOutcome(o: Outcome): string {
  if (o.is === 'error') return `error ${o.code} ${JSON.stringify(o.detail.slice(0, 60))}`;
  if (o.is === 'auth') return `auth ${o.state} ${JSON.stringify(o.detail.slice(0, 60))}`;
  return o.is;
}

/**
 * Matches the events a batch caused against the oracle's outcomes, in order: ERR and AUTH events are anchors;
 * between two, the protocol errors must number between the inputs that must and those that may cause one.
 */
function matchEvents(outcomes: Outcome[], events: Logged[]): string | null {
  let i = 0;
  let min = 0;
  let max = 0;
  const flush = (where: string): string | null => {
    let n = 0;
    while (isProtocolError(events[i])) {
      i++;
      n++;
    }
    const want = min === max ? `${min}` : `${min} to ${max}`;
    const problem = n < min || n > max ? `${where}: ${n} protocol errors, the oracle expects ${want}` : null;
    min = max = 0;
    return problem;
  };
  for (const [k, o] of outcomes.entries()) {
    if (o.is === 'protocol') {
      min++;
      max++;
    } else if (o.is === 'silent-or-protocol') max++;
    else if (o.is === 'error' || o.is === 'auth') {
      const problem = flush(`before input #${k}`);
      if (problem) return problem;
      const e = events[i++];
      const ok =
        o.is === 'error'
          ? e?.event === 'error' && !isProtocolError(e) && e.value.code === o.code && e.value.detail === o.detail && e.value.subject === undefined
          : e?.event === 'auth' && e.value.state === o.state && e.value.detail === o.detail;
      if (!ok) return `input #${k}: expected ${showOutcome(o)}, got ${showEvent(e)}`;
    }
  }
  const problem = flush('after the last ERR/AUTH input');
  if (problem) return problem;
  return i < events.length ? `unexpected event ${showEvent(events[i])}` : null;
}

/** A delivered (or expected) message as one comparable line. */
function showMessage(m: Pick<Message, 'subject' | 'epoch' | 'seq' | 'kind' | 'payload'>): string {
  const payload = typeof m.payload === 'string' ? `text ${JSON.stringify(m.payload)}` : `bytes ${Buffer.from(m.payload).toString('hex')}`;
  return `${m.subject} ${m.epoch}:${m.seq} ${String(m.kind)} ${payload}`;
}

const stats = { generated: 0, sent: 0, batches: 0, reconnects: 0, protocol: 0, silent: 0, 'silent-or-protocol': 0, error: 0, auth: 0, moves: 0 };

class Harness implements Position {
  readonly delivered: Message[] = [];
  readonly log: Logged[] = [];
  epoch = 'e1';
  seq = 0;
  private epochs = 1;
  private wake: (() => void)[] = [];

  private constructor(
    readonly server: ScriptedServer,
    readonly client: Client,
    public conn: ScriptedConnection,
  ) {}

  /** A client subscribed to SUBJECT at e1:0, its SUB's barrier answered (nothing outstanding). */
  static async start(): Promise<Harness> {
    const server = await ScriptedServer.start({ autoPong: false });
    const client = connect({ servers: [server.url], reconnect: FAST, keepAlive: 0 });
    atEnd(() => client.close());
    const h = new Harness(server, client, await server.accept());
    for (const event of EVENTS) client.on(event, (value: ClientEvents[typeof event]) => void h.log.push({ event, value } as Logged));
    const sub = client.subscribe(SUBJECT, (m) => {
      h.delivered.push(m);
      for (const w of h.wake.splice(0)) w();
    });
    await h.conn.expect(`SUB ${SUBJECT}#0`);
    await h.conn.pong();
    h.conn.send(`SYNC ${SUBJECT} e1:0`);
    assert.deepEqual(await sub.ready, { epoch: 'e1', seq: 0 });
    assert.deepEqual(
      h.log.map((e) => e.event),
      ['connected', 'sync'],
    );
    return h;
  }

  send(x: Input): void {
    this.conn.ws.send(x.data, { binary: x.binary });
  }

  /** Waits until `probe` holds (checked at each delivery), at most `ms`; false if it never did. */
  private async delivery(probe: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!probe()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  /**
   * Sends `inputs` (those the oracle says would move the subscription left out), then — with `kill` — a text frame
   * that is not UTF-8 and the recovery on the next connection, then the sentinel; checks everything the batch did.
   */
  async batch(r: Rand, label: string, inputs: Input[], kill?: Input): Promise<void> {
    const logFrom = this.log.length;
    const deliveredFrom = this.delivered.length;
    const sent: { input: Input; outcome: Outcome }[] = [];
    for (const input of inputs) {
      const outcome = expected(input, this);
      stats.generated++;
      stats[outcome.is]++;
      if (outcome.is === 'moves') continue;
      this.send(input);
      sent.push({ input, outcome });
    }
    stats.sent += sent.length;
    stats.batches++;
    const problems: string[] = [];
    const report = (): string =>
      [
        `${REPLAY}, ${label}:`,
        ...problems.map((p) => `  ${p}`),
        'inputs sent (the oracle says):',
        ...sent.map((s, k) => `  #${k} ${showInput(s.input)} → ${showOutcome(s.outcome)}`),
        ...(kill ? [`  then ${showInput(kill)} → the connection fails (1007)`] : []),
        'events seen:',
        ...this.log.slice(logFrom).map((e) => `  ${showEvent(e)}`),
        'delivered:',
        ...this.delivered.slice(deliveredFrom).map((m) => `  ${showMessage(m)}`),
        `escaped to the process: ${escaped.map(String).join('; ') || 'nothing'}`,
      ].join('\n');

    const want: Pick<Message, 'subject' | 'epoch' | 'seq' | 'kind' | 'payload'>[] = [];
    const tail: Logged['event'][] = [];
    let synced: unknown = null;
    if (kill) {
      stats.generated++;
      stats.reconnects++;
      this.send(kill);
      try {
        this.conn = await within(this.server.accept(), 'the client to reconnect', SENTINEL_MS);
        await this.conn.expect(`SUB ${SUBJECT}@${this.epoch}:${this.seq}`);
        await this.conn.pong();
      } catch (e) {
        problems.push(`after the connection failed: ${(e as Error).message}`);
        assert.fail(report());
      }
      tail.push('disconnected', 'connected');
      if (r.chance(0.6)) {
        // The server still has what was missed: recovered messages, then SYNC.
        for (let n = r.int(4); n > 0; n--) {
          const m = { subject: SUBJECT, epoch: this.epoch, seq: ++this.seq, kind: 'recovered' as const, payload: `recovered ${this.seq}` };
          this.conn.send(`MSG ${SUBJECT} ${m.epoch}:${m.seq} recovered\n${m.payload}`);
          want.push(m);
        }
        this.conn.send(`SYNC ${SUBJECT} ${this.epoch}:${this.seq}`);
        tail.push('sync');
        synced = { subject: SUBJECT, epoch: this.epoch, seq: this.seq };
      } else {
        // A restarted server: a new epoch, messages missed.
        const previous = { epoch: this.epoch, seq: this.seq };
        this.epoch = `e${++this.epochs}`;
        this.seq = r.int(1000);
        this.conn.send(`RESYNC ${SUBJECT} ${this.epoch}:${this.seq}`);
        tail.push('resync');
        synced = { subject: SUBJECT, epoch: this.epoch, seq: this.seq, previous };
      }
    }

    // The sentinel: the next live message, text or binary, its payload anything.
    const binary = r.chance(0.3);
    const payload = binary ? payloadBytes(r) : payloadText(r);
    const sentinel = { subject: SUBJECT, epoch: this.epoch, seq: ++this.seq, kind: 'live' as const, payload: binary ? new Uint8Array(payload as Buffer) : (payload as string) };
    this.send({ data: Buffer.concat([Buffer.from(`MSG ${SUBJECT} ${sentinel.epoch}:${sentinel.seq}\n`), Buffer.from(payload)]), binary, how: 'sentinel' });
    want.push(sentinel);
    const wanted = want.map(showMessage);
    const arrived = await this.delivery(() => this.delivered.slice(deliveredFrom).some((m) => showMessage(m) === wanted[wanted.length - 1]), SENTINEL_MS);
    if (!arrived) problems.push(`the sentinel ${wanted[wanted.length - 1]} was not delivered within ${SENTINEL_MS} ms`);

    // Delivered: exactly what was wanted, in order, once — no garbage.
    const got = this.delivered.slice(deliveredFrom).map(showMessage);
    if (JSON.stringify(got) !== JSON.stringify(wanted)) problems.push(`delivered ${JSON.stringify(got)}, expected ${JSON.stringify(wanted)}`);

    // Events: the garbage's, as the oracle says; then (after a kill) disconnected, connected, sync/resync.
    const events = this.log.slice(logFrom).filter((e) => e.event !== 'reconnecting');
    const cut = kill ? events.findIndex((e) => e.event === 'disconnected') : -1;
    const garbage = cut < 0 ? events : events.slice(0, cut);
    const closing = cut < 0 ? [] : events.slice(cut);
    const mismatch = matchEvents(
      sent.map((s) => s.outcome),
      garbage,
    );
    if (mismatch) problems.push(mismatch);
    if (JSON.stringify(closing.map((e) => e.event)) !== JSON.stringify(tail)) problems.push(`connection events ${JSON.stringify(closing.map((e) => e.event))}, expected ${JSON.stringify(tail)}`);
    else if (synced && JSON.stringify(closing.at(-1)?.value) !== JSON.stringify(synced)) problems.push(`${showEvent(closing.at(-1))}, expected ${JSON.stringify(synced)}`);

    // Nothing sent back (no recovery, no UNSUB), still connected, nothing escaped.
    if (this.conn.commands.pending.length) problems.push(`the client sent ${JSON.stringify(this.conn.commands.pending)}`);
    if (!this.client.connected) problems.push('the client is not connected');
    if (escaped.length) problems.push(`${escaped.length} exceptions escaped to the process`);
    if (problems.length) assert.fail(report());
  }
}

// ---------------------------------------------------------------------------------------------------

describe('the client SDK under random hostile server input', SUITE, () => {
  it('reports garbage as protocol errors, delivers each well-formed message once and in order, recovers from a failed connection', async (t) => {
    const r = new Rand(SEED);
    const h = await Harness.start();
    const t0 = Date.now();

    // Every truncation of a valid line of every form.
    for (const base of truncationBases(h)) {
      const cuts: Input[] = [];
      for (let n = 0; n <= base.data.length; n++) cuts.push({ data: base.data.subarray(0, n), binary: base.binary, how: `${base.how} cut to ${n} bytes` });
      await h.batch(r, `every truncation of ${base.how}`, cuts);
    }

    // Valid lines, mutations (of valid lines and of the next message), random input; a 100 KB line in every tenth
    // batch; a text frame that is not UTF-8 at the end of every KILL_EVERY-th.
    let long = 0;
    for (let b = 0; b < BATCHES; b++) {
      const inputs: Input[] = [];
      for (let k = 0; k < PER_BATCH; k++) {
        const c = r.int(100);
        if (c < 20) inputs.push(validLine(r, h));
        else if (c < 55) inputs.push(mutate(r, validLine(r, h)));
        else if (c < 75) inputs.push(mutate(r, nextLine(r, h)));
        else inputs.push(randomInput(r));
      }
      if (b % 10 === 5) inputs.splice(r.int(inputs.length + 1), 0, LONG_LINES[long++ % LONG_LINES.length](h));
      const kill = b % KILL_EVERY === KILL_EVERY - 1 ? killFrame(r, h) : undefined;
      await h.batch(r, `batch ${b}`, inputs, kill);
    }

    // Publishing still works: a publish sent among garbage is resolved by its ACK.
    const published = h.client.publish('/fuzz/out', 'after the storm');
    const id = (await h.conn.expect(/^PUB \/fuzz\/out \S+\nafter the storm$/)).split(/[ \n]/)[2];
    const errorsBefore = h.log.length;
    let garbage = 0;
    while (garbage < 100) {
      const x = r.chance(0.5) ? mutate(r, validLine(r, h)) : randomInput(r);
      if (expected(x, h).is !== 'protocol' || x.data.includes(id)) continue;
      h.send(x);
      garbage++;
    }
    h.conn.send(`ACK ${id}`);
    await within(published, `the ACK of ${id} to resolve the publish (${REPLAY})`, SENTINEL_MS);
    assert.equal(h.log.slice(errorsBefore).filter(isProtocolError).length, 100, REPLAY);
    assert.equal(h.log.length - errorsBefore, 100, `${REPLAY}: only the 100 protocol errors`);

    const ms = Date.now() - t0;
    t.diagnostic(
      `${REPLAY}: ${stats.generated} inputs in ${stats.batches} batches (${stats.sent} sent — ${stats.protocol} protocol errors, ` +
        `${stats.silent} silent, ${stats['silent-or-protocol']} silent-or-protocol, ${stats.error} ERR, ${stats.auth} AUTH; ` +
        `${stats.moves} well-formed messages that would move the subscription, not sent; ${stats.reconnects} connections failed by ` +
        `invalid UTF-8), ${h.delivered.length} messages delivered, ${ms} ms`,
    );
    assert.ok(stats.generated >= 5000, `${REPLAY}: only ${stats.generated} inputs`);
    assert.deepEqual(escaped, [], REPLAY);
  });
});

// Inputs the fuzzing found, kept by name. Each goes through the same checks: a protocol error each, nothing delivered,
// nothing sent back, the next message still delivered.
describe('regressions found by fuzzing', SUITE, () => {
  it('a MSG whose kind is an Object.prototype property (constructor, __proto__, toString, …) is a protocol error, not a message', async () => {
    // Was: KINDS[token] on a plain object found Object.prototype's members, so `MSG /s e1:1 constructor` was delivered
    // with kind = the Object function (and with no gap check, whatever its seq), and `__proto__` with kind = an object.
    const h = await Harness.start();
    const inputs = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__'].flatMap((kind) => [
      txt(`MSG ${SUBJECT} e1:1 ${kind}\nevil`, `kind ${kind}`),
      txt(`MSG ${SUBJECT} e1:7 ${kind}\nevil`, `kind ${kind}, a gap`),
      txt(`MSG /fuzz/other e1:1 ${kind}\nx`, `kind ${kind}, another subject`),
    ]);
    for (const x of inputs) assert.equal(expected(x, h).is, 'protocol');
    await h.batch(new Rand(SEED), 'Object.prototype kinds', inputs);
  });

  it('a position whose epoch the server cannot write (over 13 characters, or over 2^64 − 1) is a protocol error, and starts no recovery', async () => {
    // Was: epochs of up to 16 characters were taken, so `MSG /s abcdefghijklmn:1` looked like a new epoch of the
    // subject and made the client resubscribe from `SUB /s@e1:0` and drop everything until that answer; a RESYNC or
    // a recovered message with one set the position to it, and the next SUB <s>@<epoch>:<seq> was refused by the
    // server (ERR bad-command: not an epoch), which ended the subscription.
    const h = await Harness.start();
    const epochs = ['abcdefghijklmn', 'a'.repeat(16), '0'.repeat(14), 'zzzzzzzzzzzzz', '3w5e11264sgsg'];
    const inputs = epochs.flatMap((e) => [
      txt(`MSG ${SUBJECT} ${e}:1\nnew epoch?`, `epoch ${e}`),
      txt(`MSG ${SUBJECT} ${e}:1 recovered\nrecovered?`, `epoch ${e}, recovered`),
      txt(`SYNC ${SUBJECT} ${e}:1`, `SYNC, epoch ${e}`),
      txt(`RESYNC ${SUBJECT} ${e}:1`, `RESYNC, epoch ${e}`),
      txt(`MSG /fuzz/other ${e}:1\nx`, `epoch ${e}, another subject`),
    ]);
    // The largest epoch there is (2^64 − 1) is one.
    const edge = [txt(`MSG /fuzz/other 3w5e11264sgsf:1\nx`, 'epoch 2^64 − 1'), txt(`SYNC ${SUBJECT} 3w5e11264sgsf:1`, 'SYNC, epoch 2^64 − 1')];
    for (const x of inputs) assert.equal(expected(x, h).is, 'protocol');
    for (const x of edge) assert.equal(expected(x, h).is, 'silent');
    await h.batch(new Rand(SEED), 'epochs the server cannot write', [...inputs, ...edge]);
  });
});
