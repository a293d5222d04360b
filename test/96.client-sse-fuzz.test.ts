// The client's event-stream parser (transport 'sse') against hostile server input, at random: a scripted HTTP
// server answers every GET /sse with well-formed events of every type, mutations of them (byte flips, truncations,
// CR / LF / CRLF mixed, NUL, invalid UTF-8, doubled fields, huge numbers) and random bytes, cut into random chunks,
// then a sentinel on a subject the noise never names. Nothing may escape to the process; every error event must be
// a StarlingError (an `err` event's code is whatever the server wrote); and the sentinel must be delivered once.
//
// Deterministic: FUZZ_SEED=<n> replays one seed (the seed is in every failure message).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, StarlingError, type Message } from 'starling/client';
import { atEnd, Recorder, until } from './client-kit';
import { rng } from './recovery-kit';

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : 0x96e55e;
const ROUNDS = 40;
const PER_ROUND = 60;

const TEMPLATES = [
  'id: /fuzz/s@k1:1\ndata: text\n\n',
  'event: recovered\nid: /fuzz/s@k1:2\ndata: line one\ndata: line two\n\n',
  'event: message-base64\nid: /fuzz/s@k1:3\ndata: AAEC/w==\n\n',
  'event: history-utf8-base64\nid: /fuzz/s@k1:4\ndata: YQ1i\n\n',
  'event: sync\nid: /fuzz/s@k1:4\ndata: /fuzz/s k1:4\n\n',
  'event: resync\nid: /fuzz/s@k2:0\ndata: /fuzz/s k2:0\n\n',
  'event: err\ndata: forbidden /fuzz/x: not permitted by the token\n\n',
  'event: auth\ndata: expiring 30\n\n',
  ': heartbeat\n',
  'retry: 2000\n\n',
  'event: snapshot\nid: /fuzz/other@k1:9\ndata: not ours\n\n',
];

function noise(next: () => number): Buffer {
  const pick = <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)];
  const base = Buffer.from(pick(TEMPLATES));
  switch (Math.floor(next() * 8)) {
    case 0: // flip a byte
      base[Math.floor(next() * base.length)] = Math.floor(next() * 256);
      return base;
    case 1: // truncate (the rest of the event joins the next one)
      return base.subarray(0, Math.floor(next() * base.length));
    case 2: // other line ends
      return Buffer.from(base.toString('latin1').replace(/\n/g, () => pick(['\r', '\r\n', '\n', '\n\n'])), 'latin1');
    case 3: // NUL and invalid UTF-8
      return Buffer.concat([base.subarray(0, 8), Buffer.from([0, 0xff, 0xc3, 0x28]), base.subarray(8)]);
    case 4: // huge or negative numbers
      return Buffer.from(base.toString('latin1').replace(/:\d+/, pick([':99999999999999999999', ':-1', ':1e3', ':0x10'])), 'latin1');
    case 5: // random bytes
      return Buffer.from(Array.from({ length: Math.floor(next() * 64) }, () => Math.floor(next() * 256)));
    case 6: // a long data line
      return Buffer.from(`id: /fuzz/s@k1:7\ndata: ${'z'.repeat(Math.floor(next() * 100_000))}\n\n`);
    default:
      return base;
  }
}

describe('the event-stream transport under random hostile input', { timeout: 120_000 }, () => {
  it(`reports garbage, never throws, and delivers the sentinel once (seed ${SEED})`, async () => {
    const next = rng(SEED);
    const script: Buffer[] = [];
    for (let i = 0; i < ROUNDS * PER_ROUND; i++) script.push(noise(next));
    // The noise can leave an event open: a blank line closes it before the sentinel.
    script.push(Buffer.from('\n\nevent: sync\nid: /fuzz/done@z9:0\ndata: /fuzz/done z9:0\n\nid: /fuzz/done@z9:1\ndata: sentinel\n\n'));
    const cuts = script.map(() => Math.floor(next() * 3));
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      let i = 0;
      const pump = (): void => {
        // A few events per turn, each possibly cut in two writes.
        for (let k = 0; k < PER_ROUND && i < script.length && !res.destroyed; k++, i++) {
          const b = script[i];
          const at = cuts[i] === 0 ? Math.floor(b.length / 2) : b.length;
          res.write(b.subarray(0, at));
          if (at < b.length) res.write(b.subarray(at));
        }
        if (i < script.length && !res.destroyed) setImmediate(pump);
      };
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    atEnd(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))));
    const escaped: unknown[] = [];
    const onUncaught = (e: unknown): void => void escaped.push(e);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    try {
      const c = connect({ servers: [`http://127.0.0.1:${(server.address() as AddressInfo).port}/`], transport: 'sse', reconnect: { min: 5, max: 50, jitter: 0 } });
      const rec = new Recorder(c);
      // The noise's subject is not subscribed: every event is parsed, none starts a recovery (a server that keeps
      // sending gaps makes the client reopen its stream at once, each time: see the closing note).
      const payloads: Message['payload'][] = [];
      const done: string[] = [];
      c.subscribe('/fuzz/done', (m) => done.push(String(m.payload)));
      await until(`the sentinel (seed ${SEED})`, () => done.length >= 1);
      await new Promise((r) => setTimeout(r, 200)); // any later reopening would replay the script
      assert.deepEqual(done, ['sentinel'], `the sentinel once (seed ${SEED}, ${requests} streams)`);
      assert.deepEqual(payloads, [], 'nothing delivered for a subject not subscribed');
      // (An `err` event reports whatever code it carries: docs/client.md, codes of later server versions.)
      const errors = rec.events.pending.filter((e) => e.event === 'error').map((e) => e.value);
      assert.ok(errors.some((e) => (e as StarlingError).code === 'protocol'), 'the noise was reported as protocol errors');
      assert.ok(errors.every((e) => e instanceof StarlingError), `every report a StarlingError (seed ${SEED})`);
      await c.close();
    } finally {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUncaught);
    }
    assert.deepEqual(escaped, [], `nothing escaped to the process (seed ${SEED})`);
  });
});
