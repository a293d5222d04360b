// Core defects, part 3: connections that must end and do not — a FIN that arrives inside a read burst, dead
// peers (KeepAlive), a malformed close frame, a request with bare-LF line endings. The server runs in a child
// process (test/hostile-kit.ts); every check is made from the client side (the server closes its end, or
// answers), so it holds whatever the server's counters are called.
//
// Observed on today's code (87f1ce7, with the local start-up patch described in 32.core-defects.test.ts; it
// accepts KeepAlive and ignores it):
// - FIN in a read burst: 2 to 20 of 20 connections per round were never closed by the server (e.g. [16, 20, 19]).
// - KeepAlive=1: the silent client saw no ping and was still open after 4 s.
// - malformed close frames (999, 1005, 1-byte payload, invalid UTF-8 reason): the close frame came at once, the
//   TCP close only after the 5 s close timeout.
// - bare-LF request: no answer; the connection was dropped after the 10 s handshake timeout.
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { OP, closeFrame, frame, upgradeRequest } from './helpers';
import { RawWs, SeqSubscriber, ServerChild, cleanup, poll, sleep, zeroMaskFrame } from './hostile-kit';

const SUITE = { timeout: 60_000 };

afterEach(cleanup);

/** Resolves true if `raw` ends within `ms`, false otherwise. */
async function endsWithin(raw: RawWs, ms: number): Promise<boolean> {
  await Promise.race([raw.ended, sleep(ms)]);
  return raw.isEnded;
}

describe('a FIN inside a read burst', SUITE, () => {
  it('closes every connection whose FIN arrives with a burst of frames after a partial frame', async () => {
    // Each client: handshake, the first byte of a frame, 20 ms, then the rest of it, 299 more frames of 120 bytes
    // (masked pings) and FIN, all in one write. The server must answer, see the FIN and close its end.
    const child = await ServerChild.start({});
    const ping = zeroMaskFrame(OP.ping, Buffer.alloc(114, 0x70));
    assert.equal(ping.length, 120);
    const rest = Buffer.concat([ping.subarray(1), ...Array<Buffer>(299).fill(ping)]);
    const leaked: number[] = [];
    for (let round = 0; round < 3; round++) {
      const clients: RawWs[] = [];
      for (let i = 0; i < 20; i++) clients.push(await RawWs.open(child));
      for (const c of clients) {
        c.keep = false;
        c.write(ping.subarray(0, 1));
      }
      await sleep(20);
      for (const c of clients) c.socket.end(rest);
      await Promise.race([Promise.all(clients.map((c) => c.ended)), sleep(5000)]);
      leaked.push(clients.filter((c) => !c.isEnded).length);
      for (const c of clients) c.destroy();
    }
    assert.deepEqual(leaked, [0, 0, 0], 'connections per round (of 20) the server had not closed 5 s after their FIN');
    child.assertAlive();
  });
});

describe('KeepAlive', SUITE, () => {
  it('pings a silent peer after KeepAlive seconds and closes it after KeepAlive more, but keeps an idle client that answers', async () => {
    const child = await ServerChild.start({ KeepAlive: 1 });
    const idle = await SeqSubscriber.open(child, [], 'the idle ws client'); // `ws` answers pings by itself
    const silent = await RawWs.open(child); // reads, never answers
    const paused = await RawWs.open(child); // does not even read
    paused.pause();
    // Closed: the server ended the TCP connection, or at least sent its close frame.
    const closed = (raw: RawWs) => raw.isEnded || raw.closeCode() !== null;
    await poll(() => (closed(silent) ? true : undefined), 4000, 50);
    const pings = silent.frames.filter((f) => f.opcode === OP.ping).length;
    assert.ok(closed(silent), `a peer that answers nothing is closed within 4 s with KeepAlive=1 (pings seen: ${pings})`);
    assert.ok(pings >= 1, 'it was pinged before it was closed');
    paused.resume();
    await poll(() => (closed(paused) ? true : undefined), 1000, 50);
    assert.ok(closed(paused), 'a peer that reads nothing was closed too');
    await sleep(1500);
    assert.equal(idle.closedWith, null, 'the idle client that answers pings is still open after 5.5 s');
    await idle.ping(2000);
    idle.assertHealthy();
    child.assertAlive();
  });
});

describe('a malformed close frame', SUITE, () => {
  const cases: [string, Buffer, number][] = [
    ['code 999', closeFrame(999), 1002],
    ['code 1005', closeFrame(1005), 1002],
    ['a 1-byte payload', frame(OP.close, Buffer.from([3])), 1002],
    ['a reason that is not UTF-8', frame(OP.close, Buffer.from([0x03, 0xe8, 0xc3, 0x28])), 1007],
  ];
  it('is answered with a close frame and the TCP connection closed within 1 s, without waiting for another close frame', async () => {
    const child = await ServerChild.start({});
    const results = await Promise.all(
      cases.map(async ([what, bytes, expected]) => {
        const raw = await RawWs.open(child);
        raw.write(bytes);
        const code = await raw.until(`the close frame answering ${what}`, () => raw.closeCode() ?? undefined);
        const start = Date.now();
        const ended = await endsWithin(raw, 1000);
        return { what, code, expected, closedAfterMs: ended ? Date.now() - start : null };
      }),
    );
    for (const r of results) assert.equal(r.code, r.expected, `close code answering ${r.what}`);
    assert.deepEqual(
      results.filter((r) => r.closedAfterMs === null).map((r) => r.what),
      [],
      `the server closes TCP promptly after its close frame: ${JSON.stringify(results)}`,
    );
  });
});

describe('bare-LF line endings', SUITE, () => {
  it('answers a request whose lines end in LF alone with 400 at once', async () => {
    const child = await ServerChild.start({});
    const raw = await RawWs.connect(child);
    let answer = '';
    raw.socket.removeAllListeners('data');
    raw.socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    raw.write(upgradeRequest().replace(/\r\n/g, '\n'));
    const ended = await endsWithin(raw, 1000);
    assert.match(answer, /^HTTP\/1\.1 400 /, `answer within 1 s: ${JSON.stringify(answer.slice(0, 60))}`);
    assert.ok(ended || (await endsWithin(raw, 1000)), 'and the connection is closed');
  });
});
