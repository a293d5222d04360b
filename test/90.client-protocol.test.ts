// The client SDK's protocol state machine against a scripted server (test/client-kit.ts): the test reads every
// command the client sends and writes every answer, so the cases a correct Starling server never produces — a gap in
// a live stream, an epoch that changes under a subscription, duplicates, malformed lines — are exercised exactly.
// What a real server does with the same client is in test/90.client.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, StarlingError, type Client, type ConnectOptions } from 'starling/client';
import * as net from 'node:net';
import { Recorder, ScriptedServer, atEnd, until } from './client-kit';

const SUITE = { timeout: 60_000 };
/** Reconnect at once (5 ms, no jitter): the cases are about what is sent, not when. */
const FAST = { min: 5, max: 50, jitter: 0 };

function client(server: ScriptedServer | string[], options: Partial<ConnectOptions> = {}): { client: Client; rec: Recorder } {
  const servers = Array.isArray(server) ? server : [server.url];
  const c = connect({ servers, reconnect: FAST, ...options });
  return { client: c, rec: new Recorder(c) };
}

/** A scripted server and a client connected to it (its `connected` event taken). */
async function opened(o: { autoPong?: boolean } & Partial<ConnectOptions> = {}) {
  const { autoPong, ...options } = o;
  const server = await ScriptedServer.start({ autoPong });
  const { client: c, rec } = client(server, options);
  const conn = await server.accept();
  await rec.event('connected');
  return { server, client: c, rec, conn };
}

/** A client subscribed to `subject` on a scripted connection, its SUB answered with SYNC <epoch>:<seq>. */
async function subscribed(subject: string, epoch = 'e1', seq = 0) {
  const { server, client: c, rec, conn } = await opened();
  const sub = c.subscribe(subject, rec.handler);
  await conn.expect(`SUB ${subject}#0`);
  conn.send(`SYNC ${subject} ${epoch}:${seq}`);
  assert.deepEqual(await sub.ready, { epoch, seq });
  assert.deepEqual(await rec.event('sync'), { subject, epoch, seq });
  return { server, client: c, rec, conn, sub };
}

describe('subscribing', SUITE, () => {
  it('sends SUB <subject>#<history> (conflate= first when asked), each followed by a PING', async () => {
    const server = await ScriptedServer.start({ autoPong: false });
    const { client: c } = client(server);
    const conn = await server.accept();
    c.subscribe('/a/plain', () => {});
    c.subscribe('/a/history', () => {}, { history: 25 });
    c.subscribe('/a/conflated', () => {}, { conflate: 300 });
    for (const sub of ['SUB /a/plain#0', 'SUB /a/history#25', 'SUB conflate=300 /a/conflated#0']) {
      await conn.expect(sub);
      await conn.pong();
    }
  });

  it('delivers the snapshot, the history and then live messages, typed: text as a string, binary as bytes', async () => {
    const server = await ScriptedServer.start();
    const { client: c, rec } = client(server);
    const conn = await server.accept();
    const sub = c.subscribe('/q/ibm', rec.handler, { history: 2 });
    assert.equal(sub.position, null, 'no position before the first message');
    await conn.expect('SUB /q/ibm#2');
    conn.send('MSG /q/ibm k2:3 snapshot\n{"p":1}');
    conn.send(Buffer.concat([Buffer.from('MSG /q/ibm k2:7 history\n'), Buffer.from([0, 255, 10, 13])]));
    conn.send('MSG /q/ibm k2:8 history\nline one\nline two');
    conn.send('SYNC /q/ibm k2:8');
    conn.send('MSG /q/ibm k2:9\n');
    assert.deepEqual(await sub.ready, { epoch: 'k2', seq: 8 });
    await until('four messages', () => rec.all.length === 4);
    assert.deepEqual(
      rec.all.map((m) => [m.kind, m.seq, m.binary, m.text]),
      [
        ['snapshot', 3, false, '{"p":1}'],
        ['history', 7, true, '\x00\xff\n\r'],
        ['history', 8, false, 'line one\nline two'],
        ['live', 9, false, ''],
      ],
    );
    assert.deepEqual(sub.position, { epoch: 'k2', seq: 9 });
  });

  it('hands the handler the payload as a Uint8Array for a binary frame, a string for a text frame', async () => {
    const { conn, client: c } = await subscribed('/b/types');
    const payloads: unknown[] = [];
    c.unsubscribe('/b/types');
    await conn.expect('UNSUB /b/types');
    c.subscribe('/b/types', (m) => payloads.push(m.payload));
    await conn.expect('SUB /b/types#0');
    conn.send('SYNC /b/types e1:0');
    conn.send(Buffer.from('MSG /b/types e1:1\n\x01\x02', 'latin1'));
    conn.send('MSG /b/types e1:2\ntext');
    await until('two payloads', () => payloads.length === 2);
    assert.ok(payloads[0] instanceof Uint8Array);
    assert.deepEqual([...(payloads[0] as Uint8Array)], [1, 2]);
    assert.equal(payloads[1], 'text');
  });

  it('drops duplicates: a message at or before the last position of the same epoch', async () => {
    const { conn, rec } = await subscribed('/d/dup', 'e1', 5);
    conn.send('MSG /d/dup e1:6\nsix');
    conn.send('MSG /d/dup e1:6\nsix again');
    conn.send('MSG /d/dup e1:4\nold');
    conn.send('MSG /d/dup e1:7\nseven');
    assert.deepEqual(await rec.messagesOf(2), [
      ['six', 'live', 6],
      ['seven', 'live', 7],
    ]);
  });

  it('refuses a second subscription to a subject, bad subjects and bad options, at once', async () => {
    const server = await ScriptedServer.start();
    const { client: c } = client(server);
    c.subscribe('/x/once', () => {});
    assert.throws(() => c.subscribe('/x/once', () => {}), /already subscribed to \/x\/once/);
    assert.throws(() => c.subscribe('x', () => {}), TypeError);
    assert.throws(() => c.subscribe('/a//b', () => {}), TypeError);
    assert.throws(() => c.subscribe('/a b', () => {}), TypeError);
    assert.throws(() => c.subscribe('/a/*', () => {}), TypeError);
    assert.throws(() => c.subscribe('/a#5', () => {}), /read by SUB as a position or a history request/);
    assert.throws(() => c.subscribe('/a/e@k2:5', () => {}), TypeError);
    assert.throws(() => c.subscribe('/ok', () => {}, { conflate: 150 }), RangeError);
    assert.throws(() => c.subscribe('/ok', () => {}, { conflate: 0 }), RangeError);
    assert.throws(() => c.subscribe('/ok', () => {}, { conflate: 60_100 }), /from 100 to 60000/);
    assert.throws(() => c.subscribe('/ok', () => {}, { history: -1 }), RangeError);
    assert.throws(() => c.subscribe('/ok', 'not a function' as never), TypeError);
    assert.throws(() => c.publish('/a/', 'x'), TypeError);
    assert.throws(() => c.publish('/ok', 42 as never), TypeError);
    assert.throws(() => connect({ servers: [] }), TypeError);
    assert.throws(() => connect({ servers: ['localhost:8800'] }), TypeError);
    assert.throws(() => connect({ servers: [server.url], reconnect: { min: 0 } }), RangeError);
  });
});

describe('a live stream that breaks', SUITE, () => {
  it('recovers a gap: UNSUB, then SUB <subject>@<epoch>:<last>; drops what the old subscription still sends', async () => {
    const { conn, rec } = await subscribed('/g/gap', 'e1', 0);
    conn.send('MSG /g/gap e1:1\n1');
    conn.send('MSG /g/gap e1:2\n2');
    conn.send('MSG /g/gap e1:4\n4'); // 3 is missing
    conn.send('MSG /g/gap e1:5\n5'); // still the old subscription: dropped, the recovery brings it
    await conn.expect('UNSUB /g/gap');
    await conn.expect('SUB /g/gap@e1:2');
    conn.send('MSG /g/gap e1:3 recovered\n3');
    conn.send('MSG /g/gap e1:4 recovered\n4');
    conn.send('MSG /g/gap e1:5 recovered\n5');
    conn.send('SYNC /g/gap e1:5');
    conn.send('MSG /g/gap e1:6\n6');
    assert.deepEqual(await rec.messagesOf(6), [
      ['1', 'live', 1],
      ['2', 'live', 2],
      ['3', 'recovered', 3],
      ['4', 'recovered', 4],
      ['5', 'recovered', 5],
      ['6', 'live', 6],
    ]);
    assert.deepEqual(await rec.event('sync'), { subject: '/g/gap', epoch: 'e1', seq: 5 });
  });

  it('resynchronises when the epoch changes in a live stream, and reports the messages missed (resync)', async () => {
    const { conn, rec } = await subscribed('/g/epoch', 'e1', 10);
    conn.send('MSG /g/epoch e1:11\na');
    conn.send('MSG /g/epoch e2:1\nnew epoch'); // the subject restarted
    await conn.expect('UNSUB /g/epoch');
    await conn.expect('SUB /g/epoch@e1:11');
    conn.send('RESYNC /g/epoch e2:4');
    conn.send('MSG /g/epoch e2:3 snapshot\nretained'); // older than the RESYNC position, and new to the client
    conn.send('MSG /g/epoch e2:5\nb');
    assert.deepEqual(await rec.messagesOf(3), [
      ['a', 'live', 11],
      ['retained', 'snapshot', 3],
      ['b', 'live', 5],
    ]);
    assert.deepEqual(await rec.event('resync'), { subject: '/g/epoch', epoch: 'e2', seq: 4, previous: { epoch: 'e1', seq: 11 } });
  });

  it('does not take the gaps of a conflated subscription for losses', async () => {
    const server = await ScriptedServer.start();
    const { client: c, rec } = client(server);
    const conn = await server.accept();
    c.subscribe('/c/fast', rec.handler, { conflate: 100 });
    await conn.expect('SUB conflate=100 /c/fast#0');
    conn.send('SYNC /c/fast e1:10');
    conn.send('MSG /c/fast e1:15\n15');
    conn.send('MSG /c/fast e1:31\n31');
    conn.send('MSG /c/fast e1:30\nold'); // out of order: dropped
    conn.send('MSG /c/fast e1:40\n40');
    assert.deepEqual(await rec.messagesOf(3), [
      ['15', 'live', 15],
      ['31', 'live', 31],
      ['40', 'live', 40],
    ]);
    // No UNSUB was sent: the next command is the PING of this barrier.
    c.unsubscribe('/c/fast');
    await conn.expect('UNSUB /c/fast');
  });

  it('delivers nothing of an old subscription to a new one on the same subject', async () => {
    const { client: c, rec, conn } = await opened({ autoPong: false });
    const first = c.subscribe('/r/again', () => assert.fail('the first subscription is stopped before any message'));
    await conn.expect('SUB /r/again#0');
    await conn.pong();
    first.unsubscribe();
    await assert.rejects(first.ready, (e: StarlingError) => e.code === 'unsubscribed');
    c.subscribe('/r/again', rec.handler);
    await conn.expect('UNSUB /r/again');
    const unsubPing = await conn.expect(/^PING /);
    await conn.expect('SUB /r/again#0');
    // Sent by the old subscription before the server took the UNSUB:
    conn.send('SYNC /r/again e1:7');
    conn.send('MSG /r/again e1:8\nold');
    conn.send(`PONG ${unsubPing.slice(5)}`);
    await conn.pong();
    conn.send('SYNC /r/again e1:8');
    conn.send('MSG /r/again e1:9\nnew');
    assert.deepEqual(await rec.message(), ['new', 'live', 9]);
    assert.deepEqual(await rec.event('sync'), { subject: '/r/again', epoch: 'e1', seq: 8 });
  });
});

describe('reconnecting', SUITE, () => {
  it('resubscribes from the last position after a dropped connection, and reports sync with the recovered messages', async () => {
    const { server, conn, rec } = await subscribed('/n/drop', 'e1', 0);
    conn.send('MSG /n/drop e1:1\n1');
    assert.deepEqual(await rec.message(), ['1', 'live', 1]);
    conn.terminate();
    assert.equal((await rec.event('disconnected')).code, 1006);
    const again = await server.accept();
    await rec.event('connected');
    await again.expect('SUB /n/drop@e1:1');
    again.send('MSG /n/drop e1:1 recovered\n1'); // a duplicate: dropped
    again.send('MSG /n/drop e1:2 recovered\n2');
    again.send('SYNC /n/drop e1:2');
    again.send('MSG /n/drop e1:3\n3');
    assert.deepEqual(await rec.messagesOf(2), [
      ['2', 'recovered', 2],
      ['3', 'live', 3],
    ]);
    assert.deepEqual(await rec.event('sync'), { subject: '/n/drop', epoch: 'e1', seq: 2 });
  });

  it('rejects a publish whose answer the drop lost (connection-lost); queues those made while disconnected', async () => {
    const { server, client: c, rec, conn } = await opened();
    const unanswered = c.publish('/p/x', 'in flight');
    const sent = await conn.expect(/^PUB \/p\/x \S+\nin flight$/);
    conn.terminate();
    await assert.rejects(unanswered, (e: StarlingError) => e instanceof StarlingError && e.code === 'connection-lost' && e.subject === '/p/x');
    await rec.event('disconnected');
    const queued = [c.publish('/p/x', 'queued 1'), c.publish('/p/x', new Uint8Array([1, 2]), { retained: true })];
    const again = await server.accept();
    const first = await again.expect(/^PUB \/p\/x \S+\nqueued 1$/);
    const second = await again.expect(/^\(binary\) PUB \/p\/x \S+ \+retained\n\x01\x02$/);
    const ids = [first, second].map((l) => l.replace(/^\(binary\) /, '').split(/[ \n]/)[2]);
    assert.notEqual(ids[0], sent.split(/[ \n]/)[2], 'a new id: the lost publish is not sent again');
    again.send(`ACK ${ids[1]}`);
    again.send(`ERR too-large ${ids[0]} payload of 8 bytes is over MaxMessageSize (4)`);
    await assert.rejects(queued[0], (e: StarlingError) => e.code === 'too-large' && e.detail === 'payload of 8 bytes is over MaxMessageSize (4)');
    await queued[1];
  });

  it('rejects publishes past maxQueuedPublishes while disconnected (queue-full)', async () => {
    const { client: c } = client(['ws://127.0.0.1:9/'], { maxQueuedPublishes: 2, reconnect: { min: 60_000, max: 60_000, jitter: 0 } });
    const kept = [c.publish('/q/a', '1'), c.publish('/q/a', '2')];
    await assert.rejects(c.publish('/q/a', '3'), (e: StarlingError) => e.code === 'queue-full');
    await c.close();
    for (const p of kept) await assert.rejects(p, (e: StarlingError) => e.code === 'closed');
    await assert.rejects(c.publish('/q/a', '4'), (e: StarlingError) => e.code === 'closed');
  });

  it('goes to the next server in the list when its server shuts down (1001)', async () => {
    const a = await ScriptedServer.start();
    const b = await ScriptedServer.start();
    const { rec } = client([a.url, b.url]);
    const onA = await a.accept();
    assert.equal((await rec.event('connected')).url, a.url);
    onA.close(1001);
    assert.equal((await rec.event('disconnected')).code, 1001);
    await b.accept();
    assert.equal((await rec.event('connected')).url, b.url);
  });

  it('tries the next server after a failed attempt, and waits longer after each', async () => {
    const b = await ScriptedServer.start();
    const { rec } = client(['ws://127.0.0.1:9/', b.url], { reconnect: { min: 5, max: 40, jitter: 0 } });
    const first = await rec.event('reconnecting');
    assert.deepEqual(first, { url: b.url, attempt: 1, delay: 5 });
    await b.accept();
    await rec.event('connected');
  });

  it('drops a connection whose server stops answering (keepAlive: PING, then nothing) and reconnects', async () => {
    const server = await ScriptedServer.start({ autoPong: false });
    const { rec } = client(server, { keepAlive: 50 });
    const silent = await server.accept();
    await rec.event('connected');
    await silent.expect(/^PING \S+$/); // never answered
    const gone = await rec.event('disconnected');
    assert.deepEqual([gone.code, gone.reason], [1006, 'no answer from the server for 100 ms']);
    await server.accept();
    await rec.event('connected');
  });

  it('gives up an attempt that does not complete within connectTimeout and tries again', async () => {
    // A TCP listener that reads the upgrade request and never answers it (reading, it sees the client give up).
    const mute = net.createServer((socket) => socket.resume());
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', () => resolve()));
    atEnd(() => new Promise<void>((resolve) => mute.close(() => resolve())));
    const url = `ws://127.0.0.1:${(mute.address() as net.AddressInfo).port}/`;
    const { client: c, rec } = client([url], { connectTimeout: 50 });
    assert.deepEqual(await rec.event('reconnecting'), { url, attempt: 1, delay: 5 });
    assert.deepEqual(await rec.event('reconnecting'), { url, attempt: 2, delay: 10 });
    assert.equal(c.connected, false);
    await c.close();
  });

  it('closes for good on the first drop with reconnect: false, rejecting what waits', async () => {
    const { client: c, rec, conn } = await opened({ reconnect: false });
    const sub = c.subscribe('/z/z', () => {});
    await conn.expect('SUB /z/z#0');
    conn.terminate();
    await rec.event('disconnected');
    await assert.rejects(sub.ready, (e: StarlingError) => e.code === 'closed');
    await assert.rejects(c.publish('/z/z', 'late'), (e: StarlingError) => e.code === 'closed');
    assert.equal(c.connected, false);
  });
});

describe('refusals and errors', SUITE, () => {
  it('gives a refused SUB to its subscription (the ERR before the PING barrier): ready rejects, an error event', async () => {
    const { client: c, rec, conn } = await opened({ autoPong: false });
    const ok = c.subscribe('/l/one', () => {});
    const refused = c.subscribe('/l/two', () => {});
    await conn.expect('SUB /l/one#0');
    await conn.pong();
    await conn.expect('SUB /l/two#0');
    conn.send('ERR limit MaxSubscriptionsPerConnection (1) reached: the connection holds 1 and asked for 1 more; UNSUB some first');
    await conn.pong();
    await assert.rejects(refused.ready, (e: StarlingError) => e.code === 'limit' && e.subject === '/l/two' && /^MaxSubscriptionsPerConnection \(1\)/.test(e.detail));
    const err = await rec.event('error');
    assert.deepEqual([err.code, err.subject], ['limit', '/l/two']);
    conn.send('SYNC /l/one e1:0');
    assert.deepEqual(await ok.ready, { epoch: 'e1', seq: 0 });
    // The refused subscription is gone: the subject can be subscribed again.
    c.subscribe('/l/two', () => {});
    await conn.expect('SUB /l/two#0');
  });

  it('rejects a refused publish with a StarlingError carrying the ERR code and detail', async () => {
    const { client: c, rec, conn } = await opened();
    const p = c.publish('/__starling__/stats', 'x');
    const line = await conn.expect(/^PUB \/__starling__\/stats \S+\nx$/);
    conn.send(`ERR forbidden ${line.split(/[ \n]/)[2]} /__starling__/stats: subjects under /__starling__/ are published by the server only`);
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof StarlingError);
      assert.equal(e.code, 'forbidden');
      assert.equal(e.subject, '/__starling__/stats');
      assert.equal(e.detail, '/__starling__/stats: subjects under /__starling__/ are published by the server only');
      return true;
    });
  });

  it('gives an ERR without an id to the oldest unanswered command: a PUB the server could not read (answers come in order)', async () => {
    const { client: c, rec, conn } = await opened();
    const first = c.publish('/o/a', '1', { retained: true });
    const second = c.publish('/o/a', '2');
    const [l1, l2] = [await conn.expect(/^PUB \/o\/a \S+ \+retained\n1$/), await conn.expect(/^PUB \/o\/a \S+\n2$/)];
    conn.send('ERR bad-command PUB takes a subject and an optional id, got 3 arguments; the payload goes after the first newline');
    conn.send(`ACK ${l2.split(/[ \n]/)[2]}`);
    await assert.rejects(first, (e: StarlingError) => e.code === 'bad-command' && e.subject === '/o/a' && /^PUB takes a subject/.test(e.detail));
    await second;
    assert.ok(l1);
  });

  it('reports every malformed server message as an error event and goes on', async () => {
    const { conn, rec, client: c } = await subscribed('/h/ok', 'e1', 0);
    const hostile: (string | Buffer)[] = [
      '',
      'NOPE',
      'MSG /h/ok e1:1', // no newline
      'MSG /h/ok e1-1\nx',
      'MSG /h/ok E1:1\nx',
      'MSG /h/ok e1:99999999999999999\nx',
      'MSG /h/ok e1:1 weird\nx',
      'MSG /h/ok e1:1 live\nx',
      'MSG  /h/ok e1:1\nx',
      'MSG /h/ok e1:1 recovered extra\nx',
      'SYNC /h/ok',
      'RESYNC /h/ok e1:x',
      'ACK',
      'ACK p-unknown',
      'PONG never-sent',
      'ERR',
      'MSG /h/ok \u00e91:1\nx',
      'x'.repeat(600) + '\n',
      Buffer.from([0x4d, 0x53, 0x47, 0x20, 0xff, 0x0a]),
      Buffer.alloc(100_000, 0x41),
    ];
    for (const h of hostile) conn.send(h);
    conn.send('MSG /h/ok e1:1\nstill fine');
    assert.deepEqual(await rec.message(), ['still fine', 'live', 1]);
    for (const h of hostile) {
      const e = await rec.event('error');
      assert.equal(e.code, 'protocol', `for ${JSON.stringify(h.slice(0, 40).toString())}`);
      assert.match(e.detail, /^malformed server message /);
    }
    assert.ok(c.connected);
  });

  it('reports a throwing handler as an error event (code handler, the error as cause) and delivers the next message', async () => {
    const server = await ScriptedServer.start();
    const { client: c, rec } = client(server);
    const conn = await server.accept();
    const seen: number[] = [];
    c.subscribe('/t/throw', (m) => {
      seen.push(m.seq);
      if (m.seq === 1) throw new Error('boom');
    });
    await conn.expect('SUB /t/throw#0');
    conn.send('SYNC /t/throw e1:0');
    conn.send('MSG /t/throw e1:1\n1');
    conn.send('MSG /t/throw e1:2\n2');
    await rec.event('connected');
    await rec.event('sync');
    const e = await rec.event('error');
    assert.deepEqual([e.code, e.subject, (e as { cause?: Error }).cause?.message], ['handler', '/t/throw', 'boom']);
    await until('the second message', () => seen.length === 2);
  });

  it('presents the token as its first command, AUTH <token> (not on the URL), and reports AUTH lines as auth events', async () => {
    const server = await ScriptedServer.start();
    const { rec } = client(server, { token: 'a/b+c' });
    const conn = await server.accept();
    assert.equal(conn.url, '/');
    await conn.expect('AUTH a/b+c');
    conn.send('AUTH ok 1900000000');
    conn.send('AUTH expiring 30');
    assert.deepEqual(await rec.event('auth'), { state: 'ok', detail: '1900000000' });
    await rec.event('connected');
    assert.deepEqual(await rec.event('auth'), { state: 'expiring', detail: '30' });
  });
});

describe('closing', SUITE, () => {
  it('close() closes with 1000, emits disconnected, lets the answers already on their way arrive, never reconnects', async () => {
    const { client: c, rec, conn } = await opened();
    const sub = c.subscribe('/k/k', () => assert.fail('no handler is called after close()'));
    await conn.expect('SUB /k/k#0');
    const answered = c.publish('/k/k', 'answered');
    const unanswered = c.publish('/k/k', 'unanswered');
    const id = (await conn.expect(/^PUB \/k\/k \S+\nanswered$/)).split(/[ \n]/)[2];
    await conn.expect(/^PUB \/k\/k \S+\nunanswered$/);
    const closing = c.close();
    await assert.rejects(c.publish('/k/k', 'after close'), (e: StarlingError) => e.code === 'closed');
    await assert.rejects(sub.ready, (e: StarlingError) => e.code === 'closed');
    // Written before the server reads the close frame, as a server answers the commands it read before it.
    conn.send('SYNC /k/k e1:0');
    conn.send('MSG /k/k e1:1\nanswered');
    conn.send(`ACK ${id}`);
    await answered;
    await assert.rejects(unanswered, (e: StarlingError) => e.code === 'closed' && /may or may not have been published/.test(e.detail));
    await closing;
    assert.equal((await rec.event('disconnected')).code, 1000);
    await conn.closed;
    assert.equal(c.connected, false);
    assert.equal(c.url, null);
    await c.close(); // idempotent
    assert.deepEqual(rec.events.pending, [], 'no event after the close: no reconnect');
  });
});
