// Hostile and broken peers: bad HTTP, illegal WebSocket frames, protocol garbage, slow consumers and
// stalled clients. Each case checks the server's answer (status line, close code or ERR) and, after it,
// that a fresh well-behaved client still gets service. Protocol: /work/shared/PROTOCOL.md, RFC 6455.
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from '../src/index';
import {
  Client,
  OP,
  Raw,
  assertServes,
  closeFrame,
  frame,
  parseErr,
  startServer,
  upgradeRequest,
  waitFor,
} from './helpers';

const SUITE = { timeout: 60_000 };
const MAX_MESSAGE = 1024;
/** Longest PUB header line ("PUB " + 255-byte subject + " " + 64-character id + "\r\n"): the WebSocket message limit is MaxMessageSize plus this. */
const MAX_PUB_HEADER = 326;
/** Longest AUTH command ("AUTH " + a token of 8192 bytes + slack): always accepted, so that a token one byte too long
 * gets its "AUTH invalid too large" answer. */
const MAX_AUTH_COMMAND = 5 + 8192 + 64;
/** The WebSocket message limit: the larger of the two (here, with MaxMessageSize = 1K, the AUTH command's). */
const LIMIT = Math.max(MAX_MESSAGE + MAX_PUB_HEADER, MAX_AUTH_COMMAND);

const server = startServer({ MaxMessageSize: MAX_MESSAGE });

/** The change of one total counter while `fn` runs. */
async function delta(counter: string, fn: () => Promise<void>, s: Server = server): Promise<number> {
  const before = s.stats().total[counter];
  assert.ok(counter in s.stats().total, `the addon has no counter named ${counter}`);
  await fn();
  return s.stats().total[counter] - before;
}

describe('bad handshakes', SUITE, () => {
  afterEach(() => assertServes(server));

  /** Sends `request`, reads the HTTP response, and checks that the server then closes the connection. */
  async function refused(request: string | Buffer): Promise<{ status: number; statusLine: string; headers: Record<string, string> }> {
    const raw = await Raw.connect(server);
    raw.write(request);
    const res = await raw.response();
    assert.equal(res.headers['connection'], 'close');
    await raw.ended;
    return res;
  }

  it('answers an upgrade for another path with 404 and closes the connection', async () => {
    const res = await refused(upgradeRequest('/other'));
    assert.equal(res.statusLine, 'HTTP/1.1 404 Not Found');
  });

  it('answers a plain GET / without upgrade headers with 426 naming the WebSocket version', async () => {
    const res = await refused('GET / HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n');
    assert.equal(res.statusLine, 'HTTP/1.1 426 Upgrade Required');
    assert.equal(res.headers['upgrade'], 'websocket');
    assert.equal(res.headers['sec-websocket-version'], '13');
  });

  it('answers Sec-WebSocket-Version 8 with 426', async () => {
    const res = await refused(upgradeRequest('/', { 'Sec-WebSocket-Version': '8' }));
    assert.equal(res.status, 426);
  });

  const badRequests: [string, string | Buffer][] = [
    ['a POST', upgradeRequest('/', {}, 'POST')],
    ['a Sec-WebSocket-Key that is not base64 of 16 bytes', upgradeRequest('/', { 'Sec-WebSocket-Key': 'abc' })],
    ['a Sec-WebSocket-Key of 15 bytes', upgradeRequest('/', { 'Sec-WebSocket-Key': Buffer.alloc(15, 1).toString('base64') })],
    ['a missing Sec-WebSocket-Key', upgradeRequest('/', { 'Sec-WebSocket-Key': null })],
    ['a missing Host', upgradeRequest('/', { Host: null })],
    ['HTTP/1.0', upgradeRequest().replace('HTTP/1.1', 'HTTP/1.0')],
    ['a malformed request line', 'HELLO\r\n\r\n'],
    ['a header without a colon', upgradeRequest().replace('Upgrade: websocket', 'Upgrade websocket')],
    ['garbage bytes before the request line', Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0xff, 0xfc]), Buffer.from(upgradeRequest())])],
  ];
  for (const [what, request] of badRequests) {
    it(`answers ${what} with 400 and closes the connection`, async () => {
      const res = await refused(request);
      assert.equal(res.statusLine, 'HTTP/1.1 400 Bad Request');
    });
  }

  it('answers a request head over 8 KiB with 431 and closes the connection', async () => {
    const res = await refused(`GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: ${'a'.repeat(8300)}`);
    assert.equal(res.statusLine, 'HTTP/1.1 431 Request Header Fields Too Large');
  });

  it('upgrades a request whose head arrives in two pieces', async () => {
    const request = upgradeRequest('/', {
      'User-Agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
      Origin: 'http://localhost:8080',
      'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits',
      'Sec-WebSocket-Protocol': 'starling.v1',
    });
    assert.ok(request.length > 300);
    const raw = await Raw.connect(server);
    const bytesIn = server.stats().total.bytes_in;
    raw.write(request.slice(0, 20));
    // Barrier: the server has read the first piece before the second is sent.
    await waitFor('the server to read the first piece', () => server.stats().total.bytes_in >= bytesIn + 20);
    raw.write(request.slice(20));
    const res = await raw.response();
    assert.equal(res.statusLine, 'HTTP/1.1 101 Switching Protocols');
    assert.equal(res.headers['sec-websocket-protocol'], 'starling.v1');
    raw.command('PING split');
    assert.equal(await raw.nextText(), 'PONG split');
    raw.destroy();
  });

  it('upgrades a request that is followed by frames in the same packet', async () => {
    const raw = await Raw.connect(server);
    raw.write(Buffer.concat([Buffer.from(upgradeRequest()), frame(OP.text, 'PING a'), frame(OP.text, 'PING b')]));
    assert.equal((await raw.response()).status, 101);
    assert.equal(await raw.nextText(), 'PONG a');
    assert.equal(await raw.nextText(), 'PONG b');
    raw.destroy();
  });
});

describe('illegal frames', SUITE, () => {
  afterEach(() => assertServes(server));

  /** Opens a WebSocket, sends `bytes`, and returns the close code the server answers with. */
  async function closeCodeFor(...bytes: Buffer[]): Promise<number> {
    const raw = await Raw.open(server);
    for (const b of bytes) raw.write(b);
    return raw.closeCode();
  }

  const protocolErrors: [string, Buffer[]][] = [
    ['an unmasked frame', [frame(OP.text, 'PING', { mask: false })]],
    ['RSV1 set', [frame(OP.text, 'PING', { rsv: 4 })]],
    ['RSV3 set', [frame(OP.binary, 'PING', { rsv: 1 })]],
    ['opcode 3', [frame(0x3, 'PING')]],
    ['opcode 0xB', [frame(0xb, 'x')]],
    ['a continuation frame without a start', [frame(OP.cont, 'PING')]],
    ['a ping with a 126-byte payload', [frame(OP.ping, Buffer.alloc(126, 0x70))]],
    ['a fragmented ping', [frame(OP.ping, 'x', { fin: false })]],
    ['a new text frame while a fragmented message is open', [frame(OP.text, 'PI', { fin: false }), frame(OP.text, 'PING')]],
    ['a 64-bit length with its top bit set', [Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4])]],
    ['a close frame with code 1005, which must not be sent', [closeFrame(1005)]],
    ['a close frame with a 1-byte payload', [frame(OP.close, Buffer.from([3]))]],
  ];
  for (const [what, bytes] of protocolErrors) {
    it(`closes the connection with 1002 on ${what}`, async () => {
      let code = 0;
      assert.equal(await delta('close_1002', async () => void (code = await closeCodeFor(...bytes))), 1);
      assert.equal(code, 1002);
    });
  }

  it('closes with 1009 as soon as a frame head announces more than the limit, without waiting for the payload', async () => {
    let code = 0;
    // Only the head (with its mask key) is sent; the 10 MB never follow.
    const n = await delta('close_1009', async () => void (code = await closeCodeFor(frame(OP.binary, Buffer.alloc(0), { announce: 10_000_000 }))));
    assert.equal(code, 1009);
    assert.equal(n, 1);
  });

  it(`closes with 1009 on a message of ${LIMIT + 1} bytes (the larger of MaxMessageSize + ${MAX_PUB_HEADER} and the longest AUTH command, plus one)`, async () => {
    const message = Buffer.concat([Buffer.from('PUB /big\n'), Buffer.alloc(LIMIT + 1 - 9, 0x41)]);
    assert.equal(await closeCodeFor(frame(OP.binary, message)), 1009);
  });

  it('closes with 1009 on a fragmented message whose fragments add up to more than the limit', async () => {
    const half = Buffer.alloc(Math.ceil(LIMIT / 2) + 1, 0x41);
    assert.equal(await closeCodeFor(frame(OP.binary, Buffer.concat([Buffer.from('PUB /big\n'), half]), { fin: false }), frame(OP.cont, half)), 1009);
  });

  const invalidUtf8: [string, Buffer[]][] = [
    ['a lone continuation byte', [frame(OP.text, Buffer.from([0x50, 0x49, 0x4e, 0x47, 0x20, 0x80]))]],
    ['a truncated two-byte sequence', [frame(OP.text, Buffer.from('PUB /a\n\xc3(', 'latin1'))]],
    ['an overlong encoding of "/"', [frame(OP.text, Buffer.from([0x53, 0x55, 0x42, 0x20, 0xc0, 0xaf]))]],
    ['a UTF-16 surrogate', [frame(OP.text, Buffer.concat([Buffer.from('PUB /a\n'), Buffer.from([0xed, 0xa0, 0x80])]))]],
    [
      'a sequence broken across fragments',
      [frame(OP.text, Buffer.from([0x50, 0x55, 0x42, 0x20, 0x2f, 0x61, 0x0a, 0xe2, 0x82]), { fin: false }), frame(OP.cont, Buffer.from([0x28]))],
    ],
  ];
  for (const [what, bytes] of invalidUtf8) {
    it(`closes with 1007 on a text message with ${what}`, async () => {
      let code = 0;
      assert.equal(await delta('close_1007', async () => void (code = await closeCodeFor(...bytes))), 1);
      assert.equal(code, 1007);
    });
  }

  it('accepts a character split across two fragments of a text message', async () => {
    const raw = await Raw.open(server);
    const euro = Buffer.from('€'); // e2 82 ac
    raw.write(frame(OP.text, Buffer.concat([Buffer.from('PUB /frag/utf8 ok-1\n'), euro.subarray(0, 2)]), { fin: false }));
    raw.write(frame(OP.cont, euro.subarray(2)));
    assert.equal(await raw.nextText(), 'ACK ok-1');
    raw.destroy();
  });

  it('answers a ping in the middle of a fragmented message and then the reassembled command', async () => {
    const raw = await Raw.open(server);
    raw.write(frame(OP.text, 'PING fr', { fin: false }));
    raw.write(frame(OP.ping, 'are you there'));
    raw.write(frame(OP.cont, 'ag'));
    const pong = await raw.nextFrame();
    assert.deepEqual([pong.opcode, pong.payload.toString()], [OP.pong, 'are you there']);
    assert.equal(await raw.nextText(), 'PONG frag');
    raw.destroy();
  });

  it('echoes the client’s close code and closes the connection', async () => {
    const raw = await Raw.open(server);
    raw.write(closeFrame(4000));
    const f = await raw.nextFrame();
    assert.equal(f.opcode, OP.close);
    assert.equal(f.payload.readUInt16BE(0), 4000);
    await raw.ended;
  });
});

describe('protocol garbage', SUITE, () => {
  afterEach(() => assertServes(server));

  // [command, ERR code, id echoed in the ERR]
  const cases: [string | Buffer, string, string?][] = [
    ['FOO', 'bad-command'],
    ['SUB', 'bad-command'],
    ['SUB /a//b', 'bad-subject'],
    ['PUB', 'bad-command'],
    ['SUB /é', 'bad-command'], // header must be printable ASCII
    ['AUTH', 'bad-command'], // AUTH needs a token
    ['AUTH a b', 'bad-command'],
    ['SUB /a  /b', 'bad-command'], // double space
    [' SUB /a', 'bad-command'],
    ['SUB /a ', 'bad-command'],
    ['sub /a', 'bad-command'], // verbs are case-sensitive
    ['', 'bad-command'],
    ['SUB /a\tb', 'bad-command'],
    ['SUB /a\nbody', 'bad-command'],
    ['SUB /a@K2X:17', 'bad-command'], // recovery with an epoch that is not lower-case base 36
    ['SUB /a#1234567890', 'bad-command'], // history count of 10 digits
    ['SUB conflate=150 /a', 'bad-command'], // conflation is in steps of 100 ms
    ['PING a b', 'bad-command'],
    [`PUB /a ${'i'.repeat(65)}\nx`, 'bad-command'], // id over 64 characters
    ['PUB /a b c\nx', 'bad-command'],
    [Buffer.from([0x53, 0x55, 0x42, 0x20, 0x2f, 0xff]), 'bad-command'], // binary frame, non-ASCII header
    ['SUB /a*', 'bad-subject'],
    ['SUB a', 'bad-subject'],
    ['SUB /a/', 'bad-subject'],
    [`SUB /${'x'.repeat(255)}`, 'bad-subject'], // 256 bytes
    ['UNSUB /a//b', 'bad-subject'],
    ['PUB /a//b p7\nx', 'bad-subject', 'p7'],
    ['PUB /__starling__/stats f1\n{"ConnectedSessions":0}', 'forbidden', 'f1'], // server-only subjects
  ];

  for (const [command, code, id] of cases) {
    const shown = JSON.stringify(typeof command === 'string' ? command : command.toString('latin1'));
    it(`answers ${shown} with ERR ${code}${id ? ` ${id}` : ''} and keeps the connection open`, async () => {
      const c = await Client.open(server);
      c.send(command);
      const err = parseErr(await c.next(`ERR ${code}`));
      assert.equal(err.code, code);
      if (id) assert.equal(err.rest[0], id);
      assert.deepEqual(await c.sync(), [], 'nothing else was sent, and the connection answers PING');
      await c.close();
    });
  }

  // The detail says what is wrong and what to change; a refused subject comes first (PROTOCOL.md v2).
  const details: [string, string][] = [
    ['SUB /a//b', "ERR bad-subject /a//b: empty segment (two '/' in a row at offset 2)"],
    ['UNSUB /x/', "ERR bad-subject /x/: ends with '/'; remove the trailing '/'"],
    ['SUB a', "ERR bad-subject a: must start with '/'"],
    ['SUB /a*', "ERR bad-subject /a*: contains '*' at offset 2 (wildcards are not allowed in subjects)"],
    [`SUB /${'x'.repeat(299)}`, `ERR bad-subject /${'x'.repeat(251)}...: longer than 255 bytes (300)`],
    ['PUB /a//b p7\nx', "ERR bad-subject p7 /a//b: empty segment (two '/' in a row at offset 2)"],
    ['sub /a', 'ERR bad-command unknown command "sub"; commands are upper case: SUB'],
    ['Ping', 'ERR bad-command unknown command "Ping"; commands are upper case: PING'],
    ['FOO', 'ERR bad-command unknown command "FOO"; commands are SUB, UNSUB, PUB, PING and AUTH (upper case)'],
    ['SUB', 'ERR bad-command SUB needs at least one subject, e.g. "SUB /a/b"'],
    ['SUB /a  /b', 'ERR bad-command tokens must be separated by single spaces; remove the extra space at offset 7'],
    [`PUB /a ${'i'.repeat(65)}\nx`, 'ERR bad-command PUB id is 65 characters long; the limit is 64'],
    ['PUB /a hello world', 'ERR bad-command PUB takes a subject, an optional id and an optional +retained, got 3 arguments; the payload goes after the first newline'],
    ['SUB /é', 'ERR bad-command header byte 0xC3 at offset 5 is not printable ASCII (0x20-0x7E); only the PUB payload, after the first newline, may hold other bytes'],
  ];
  for (const [command, expected] of details) {
    const shown = JSON.stringify(command.length > 40 ? command.slice(0, 37) + '...' : command);
    it(`explains ${shown}: ${JSON.stringify(expected.length > 90 ? expected.slice(0, 87) + '...' : expected)}`, async () => {
      const c = await Client.open(server);
      c.send(command);
      const m = await c.next('ERR');
      assert.equal(m.text, expected);
      await c.close();
    });
  }

  it('refuses a SUB with one bad subject among good ones without subscribing to any', async () => {
    const c = await Client.open(server);
    c.send('SUB /good/1 /bad//2 /good/3');
    assert.equal(parseErr(await c.next()).code, 'bad-subject');
    assert.equal(server.publish('/good/1', 'x'), false);
    assert.equal(server.publish('/good/3', 'x'), false);
    await c.close();
  });
});

describe('slow and stalled clients', SUITE, () => {
  it('closes a subscriber that never reads, counts it, and keeps delivering every message in order to one that does', async () => {
    // One workgroup: the slow consumer, the good subscriber and the publisher share a thread.
    const s = startServer({ Workgroups: 1, MaxBacklog: '64K', 'BufferLimit.Send': '4K' });
    const slow = await Raw.open(s);
    slow.command('SUB /firehose');
    slow.command('PING ready');
    assert.equal(await slow.nextText(), 'PONG ready');
    slow.socket.pause(); // from now on it reads nothing (beyond what Node buffers on its own)

    const good = await Client.open(s);
    await good.command('SUB /firehose');
    const pub = await Client.open(s);

    // Publish in batches of 16 KiB (well under MaxBacklog), each taken by the good subscriber before
    // the next, until the server gives up on the slow one; then a few more batches.
    const payload = (i: number) => `${String(i).padStart(8, '0')}:${'x'.repeat(1000)}`;
    const batch = 16;
    const limit = 20_000; // 20 MB: far beyond any kernel buffering of the slow socket
    let sent = 0;
    let extraBatches = 5;
    while (extraBatches > 0) {
      assert.ok(sent < limit, `no slow-consumer close after ${sent} messages: ${JSON.stringify(s.stats().total)}`);
      for (let k = 0; k < batch; k++) pub.send(`PUB /firehose\n${payload(sent + k)}`);
      for (let k = 0; k < batch; k++) {
        const m = await good.nextMsg(`message ${sent + k} at the good subscriber`);
        assert.equal(m.seq, sent + k + 1, 'seq +1 per message');
        assert.equal(m.payload.toString(), payload(sent + k), 'every message, in order');
      }
      sent += batch;
      if (s.stats().total.slow_consumer_closes > 0) extraBatches--;
    }
    assert.equal(s.stats().total.slow_consumer_closes, 1);
    assert.deepEqual(await good.sync(), [], 'the good subscriber is still open');

    // What the slow consumer did get is a well-formed prefix of the stream, then the end: it is reset (its socket
    // would not take a close frame), so the stream may stop inside a frame (docs/limits.md).
    slow.socket.resume();
    let seq = 0;
    let closeCode: number | null = null;
    for (let f = await slow.nextFrameOrEnd({ reset: true }); f; f = await slow.nextFrameOrEnd({ reset: true })) {
      assert.equal(closeCode, null, 'nothing after the close frame');
      if (f.opcode === OP.close) {
        closeCode = f.payload.readUInt16BE(0);
        slow.write(closeFrame(closeCode));
        continue;
      }
      const text = f.payload.toString();
      assert.match(text, new RegExp(`^MSG /firehose [0-9a-z]+:${seq + 1}\\n`), `message ${seq + 1} at the slow consumer`);
      seq++;
    }
    assert.ok(closeCode === null || closeCode === 1008, `close code ${closeCode}`);
    assert.ok(seq < sent, 'the slow consumer was cut off');
    await waitFor('the slow connection to be gone', () => s.stats().total.connections === 2, () => s.stats().total);
    await assertServes(s);
    await s.close();
  });

  it('keeps serving others on the same workgroup while a client sits on half a frame, then finishes that frame', async () => {
    const s = startServer({ Workgroups: 1 });
    const stalled = await Raw.open(s);
    const ping = frame(OP.text, `PING ${'p'.repeat(60)}`);
    stalled.write(ping.subarray(0, 1)); // half a head
    await assertServes(s);
    stalled.write(ping.subarray(1, 10)); // head complete, half the payload
    await assertServes(s);
    stalled.write(ping.subarray(10));
    assert.equal(await stalled.nextText(), `PONG ${'p'.repeat(60)}`);
    stalled.destroy();
    await s.close();
  });

  it('keeps serving others on the same workgroup while a client sits on half an HTTP request, then upgrades it', async () => {
    const s = startServer({ Workgroups: 1 });
    const stalled = await Raw.connect(s);
    const request = upgradeRequest();
    stalled.write(request.slice(0, 30));
    await assertServes(s);
    stalled.write(request.slice(30));
    assert.equal((await stalled.response()).status, 101);
    stalled.destroy();
    await s.close();
  });

  it('forgets a client that vanishes in the middle of a frame', async () => {
    const s = startServer({ Workgroups: 1 });
    const raw = await Raw.open(s);
    const bytesIn = s.stats().total.bytes_in;
    raw.command('SUB /vanish');
    const half = frame(OP.text, 'PUB /vanish\nhalf a message').subarray(0, 12);
    raw.write(half);
    await waitFor('the server to read the SUB and the half frame', () => s.stats().total.bytes_in >= bytesIn + 17 + half.length);
    raw.destroy();
    await waitFor('the connection to be gone', () => s.stats().total.connections === 0, () => s.stats().total);
    assert.equal(s.stats().total.subscriptions, 0);
    assert.equal(s.publish('/vanish', 'x'), false);
    await assertServes(s);
    await s.close();
  });

  it('closes connections whose last bytes and FIN arrive together', async () => {
    // Each client sends its whole life at once: upgrade, SUB, PING, then FIN (socket.end). The server
    // answers and, having read the FIN, must close the connection. Rounds of twenty clients, so that
    // the data and the FIN reach the server in one readiness event for some of them.
    const s = startServer({ Workgroups: 1 });
    for (let round = 0; round < 10; round++) {
      const clients = Array.from({ length: 20 }, (_, i) =>
        Raw.sendAndEnd(s, Buffer.concat([Buffer.from(upgradeRequest()), frame(OP.text, `SUB /fin/${i}`), frame(OP.text, `PING last-${i}`)])),
      );
      for (const [i, raw] of clients.entries()) {
        assert.equal((await raw.response()).status, 101);
        assert.equal(await raw.nextText(), `PONG last-${i}`);
      }
      await waitFor(`every connection of round ${round} to be closed`, () => s.stats().total.connections === 0, () => s.stats().total);
      for (const raw of clients) await raw.ended;
    }
    assert.equal(s.stats().total.subscriptions, 0);
    await assertServes(s);
    await s.close();
  });
});
