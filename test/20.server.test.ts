// End to end with a real WebSocket client (`ws`): subscribe, publish and unsubscribe, fan-out across
// workgroups, sequence numbers, server.publish, message size limits, many connections, subscription
// limits, the subprotocol, shutdown and counters. Protocol: /work/shared/PROTOCOL.md.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import {
  Client,
  openMany,
  openPlaced,
  parseErr,
  parseMsg,
  perWorkgroup,
  startServer,
  waitFor,
  type Msg,
} from './helpers';

const SUITE = { timeout: 60_000 };
const MAX_MESSAGE = 1024;
/** Longest PUB header line: "PUB " + 255-byte subject + " " + 64-character id + "\r\n". */
const MAX_PUB_HEADER = 326;

/** Two workgroups, round-robin placement, small messages. */
const shared = startServer({ MaxMessageSize: MAX_MESSAGE });
/** One workgroup: every command and delivery happens on one thread in order, so "nothing arrived" is provable. */
const single = startServer({ Workgroups: 1 });

/** Takes `n` MSGs from `c`. */
async function takeMsgs(c: Client, n: number, what: string): Promise<Msg[]> {
  const out: Msg[] = [];
  for (let i = 0; i < n; i++) out.push(await c.nextMsg(`${what} (${i + 1} of ${n})`));
  return out;
}

describe('subscribe, publish, unsubscribe', SUITE, () => {
  it('delivers a published message to a subscriber as MSG <subject> <epoch>:<seq>', async () => {
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command('SUB /news/sport');
    pub.send('PUB /news/sport\nGoal!');
    const m = await sub.nextMsg();
    assert.equal(m.subject, '/news/sport');
    assert.equal(m.seq, 1);
    assert.match(m.epoch, /^[0-9a-z]{1,16}$/);
    assert.equal(m.payload.toString(), 'Goal!');
  });

  it('stops delivering a subject after UNSUB', async () => {
    const sub = await Client.open(single);
    const pub = await Client.open(single);
    await sub.command('SUB /u/gone /u/kept');
    pub.send('PUB /u/gone\nbefore');
    assert.equal((await sub.nextMsg()).payload.toString(), 'before');
    await sub.command('UNSUB /u/gone');
    pub.send('PUB /u/gone\nafter');
    pub.send('PUB /u/kept\nsentinel');
    // One workgroup: had "after" been delivered, it would have been queued before the sentinel.
    const m = await sub.nextMsg();
    assert.deepEqual([m.subject, m.payload.toString()], ['/u/kept', 'sentinel']);
  });

  it('delivers a message to a client that subscribed to the subject it publishes on', async () => {
    const c = await Client.open(shared);
    await c.command('SUB /self/echo');
    c.send('PUB /self/echo e1\nto myself');
    const replies = [await c.next(), await c.next()].map((m) => m.text).sort();
    assert.equal(replies[0], 'ACK e1');
    assert.match(replies[1], /^MSG \/self\/echo [0-9a-z]+:1\nto myself$/);
  });

  it('delivers each of 200 subjects’ messages to that subject’s subscribers only', async () => {
    const even = await Client.open(shared);
    const odd = await Client.open(shared);
    const pub = await Client.open(shared);
    const subjects = Array.from({ length: 200 }, (_, i) => `/many/${i}`);
    await even.command(`SUB ${subjects.filter((_, i) => i % 2 === 0).join(' ')}`);
    await odd.command(`SUB ${subjects.filter((_, i) => i % 2 === 1).join(' ')}`);
    const outBefore = shared.stats().total.messages_out;
    subjects.forEach((s, i) => pub.send(`PUB ${s}\npayload-${i}`));
    for (const [client, parity] of [[even, 0], [odd, 1]] as const) {
      const got = await takeMsgs(client, 100, `the messages of the ${parity ? 'odd' : 'even'} subjects`);
      for (const m of got) {
        const i = Number(m.subject.slice('/many/'.length));
        assert.equal(i % 2, parity, `${m.subject} delivered to the wrong subscriber`);
        assert.equal(m.payload.toString(), `payload-${i}`, `payload of ${m.subject}`);
        assert.equal(m.seq, 1);
      }
      assert.equal(new Set(got.map((m) => m.subject)).size, 100, 'each subject exactly once');
    }
    assert.equal(shared.stats().total.messages_out - outBefore, 200, 'one delivery per message');
  });

  it('keeps the publisher’s frame type: text stays text, binary stays binary, bytes intact', async () => {
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command('SUB /frames');
    pub.send('PUB /frames\nhéllo wörld ✓');
    const text = await sub.nextMsg();
    assert.equal(text.binary, false);
    assert.equal(text.payload.toString('utf8'), 'héllo wörld ✓');

    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i)); // includes \n, \r, NUL, 0xFF
    pub.send(Buffer.concat([Buffer.from('PUB /frames\n'), bytes]));
    const binary = await sub.nextMsg();
    assert.equal(binary.binary, true);
    assert.deepEqual(binary.payload, bytes);

    pub.send(Buffer.from('PUB /frames\n')); // empty binary payload
    const empty = await sub.nextMsg();
    assert.equal(empty.binary, true);
    assert.equal(empty.payload.length, 0);
    assert.deepEqual([text.seq, binary.seq, empty.seq], [1, 2, 3]);
  });

  it('treats a second SUB of the same subject as a no-op: one message per publish', async () => {
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command('SUB /dup', 'SUB /dup', 'SUB /dup /dup');
    pub.send('PUB /dup\none');
    pub.send('PUB /dup\ntwo');
    // Same subject, so delivery is in order: a duplicate of "one" would come before "two".
    const got = await takeMsgs(sub, 2, 'the two messages');
    assert.deepEqual(got.map((m) => [m.payload.toString(), m.seq]), [['one', 1], ['two', 2]]);
    await sub.command('UNSUB /dup');
    assert.equal(shared.publish('/dup', 'x'), false, 'one UNSUB removes the only subscription');
  });

  it('ignores UNSUB of a subject the client is not subscribed to', async () => {
    const sub = await Client.open(shared);
    await sub.command('SUB /known');
    await sub.command('UNSUB /never/subscribed', 'UNSUB /other /known/not');
    assert.equal(shared.publish('/known', 'still here'), true);
    assert.equal((await sub.nextMsg()).payload.toString(), 'still here');
  });

  it('keeps a subject whose last subscriber left while its cache holds messages: same epoch, the count goes on', async () => {
    const sub = await Client.open(single);
    await sub.command('SUB /kept');
    single.publish('/kept', 'a');
    const first = await sub.nextMsg();
    await sub.command('UNSUB /kept');
    assert.equal(single.publish('/kept', 'nobody'), false, 'nobody subscribes (the message is cached all the same)');
    // ("nobody" may still reach the new subscription, before the SUB's barrier or after it: server.publish hands it
    // to the home asynchronously.)
    sub.send('SUB /kept');
    const early = (await sub.sync()).map((m) => parseMsg(m).payload.toString());
    assert.ok(early.length === 0 || (early.length === 1 && early[0] === 'nobody'), `before the barrier: ${JSON.stringify(early)}`);
    single.publish('/kept', 'c');
    let again = await sub.nextMsg();
    if (again.payload.toString() === 'nobody') again = await sub.nextMsg();
    assert.deepEqual([again.payload.toString(), again.epoch, again.seq], ['c', first.epoch, 3]);
  });

  it('starts a subject created again after its last subscriber left at seq 1 with a new epoch (CacheSize = 0)', async () => {
    const single = startServer({ Workgroups: 1, CacheSize: 0 });
    const sub = await Client.open(single);
    await sub.command('SUB /again');
    single.publish('/again', 'a');
    single.publish('/again', 'b');
    const first = await takeMsgs(sub, 2, 'the first life of /again');
    assert.deepEqual(first.map((m) => m.seq), [1, 2]);
    assert.equal(first[0].epoch, first[1].epoch);
    await sub.command('UNSUB /again');
    assert.equal(single.publish('/again', 'nobody'), false);
    await sub.command('SUB /again');
    single.publish('/again', 'c');
    const second = await sub.nextMsg();
    assert.equal(second.seq, 1);
    assert.notEqual(second.epoch, first[0].epoch);
    await single.close();
  });
});

describe('replies', SUITE, () => {
  it('answers PUB <subject> <id> with ACK <id>, with or without subscribers', async () => {
    const pub = await Client.open(shared);
    pub.send('PUB /ack/nobody a-1\nx');
    await pub.expect('ACK a-1');
    const id = Array.from({ length: 64 }, (_, i) => String.fromCharCode(0x21 + i)).join(''); // 64 printable chars
    pub.send(`PUB /ack/nobody ${id}\nx`);
    await pub.expect(`ACK ${id}`);
    pub.send(Buffer.from('PUB /ack/nobody bin-7\n\x00\x01'));
    await pub.expect('ACK bin-7');
  });

  it('sends nothing back for a PUB without an id', async () => {
    const pub = await Client.open(shared);
    await pub.command('PUB /ack/none\nquiet', 'PUB /ack/none');
  });

  it('answers PING with PONG, echoing the token when there is one', async () => {
    const c = await Client.open(shared);
    c.send('PING');
    await c.expect('PONG');
    c.send('PING t-42');
    await c.expect('PONG t-42');
    const token = 'x'.repeat(64);
    c.send(`PING ${token}`);
    await c.expect(`PONG ${token}`);
    c.send('PING crlf\r\n');
    await c.expect('PONG crlf');
  });
});

describe('workgroups', SUITE, () => {
  it('delivers a publish on one workgroup to subscribers on both, whichever workgroup is the subject’s home', async () => {
    const server = startServer({ Workgroups: 2, BenchmarkMode: true });
    const a = await openPlaced(server);
    const b = await openPlaced(server);
    assert.notEqual(a.workgroup, b.workgroup, 'BenchmarkMode alternates workgroups');
    assert.deepEqual(perWorkgroup(server, 'connections'), [1, 1]);
    // Eight subjects: their homes (by hash) fall on both workgroups.
    const subjects = Array.from({ length: 8 }, (_, i) => `/cross/${i}`);
    await a.client.command(`SUB ${subjects.join(' ')}`);
    await b.client.command(`SUB ${subjects.join(' ')}`);
    for (const s of subjects) {
      a.client.send(`PUB ${s}\nfrom-${a.workgroup}`);
      b.client.send(`PUB ${s}\nfrom-${b.workgroup}`);
    }
    for (const c of [a.client, b.client]) {
      const got = (await takeMsgs(c, 16, 'both workgroups’ messages')).map((m) => `${m.subject} ${m.payload}`).sort();
      const want = subjects.flatMap((s) => [`${s} from-0`, `${s} from-1`]).sort();
      assert.deepEqual(got, want);
    }
    const s = server.stats();
    assert.deepEqual(s.workgroups.map((w) => w.counters.messages_in), [8, 8], 'each workgroup took in its client’s publishes');
    assert.deepEqual(s.workgroups.map((w) => w.counters.messages_out), [16, 16], 'each workgroup delivered to its own subscriber');
    await server.close();
  });

  it('numbers a subject’s messages 1, 2, 3, … under one epoch across publishers on both workgroups', async () => {
    const server = startServer({ Workgroups: 2, BenchmarkMode: true });
    const subs = [await openPlaced(server), await openPlaced(server)];
    const pubs = [await openPlaced(server), await openPlaced(server)];
    assert.notEqual(subs[0].workgroup, subs[1].workgroup);
    assert.notEqual(pubs[0].workgroup, pubs[1].workgroup);
    for (const s of subs) await s.client.command('SUB /seq/one');
    const perPublisher = 500;
    for (let i = 0; i < perPublisher; i++) {
      pubs[0].client.send(`PUB /seq/one\np0-${i}`);
      pubs[1].client.send(`PUB /seq/one\np1-${i}`);
    }
    const seen: string[][] = [];
    for (const s of subs) {
      const got = await takeMsgs(s.client, 2 * perPublisher, `the messages at the subscriber on workgroup ${s.workgroup}`);
      assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 2 * perPublisher }, (_, i) => i + 1), 'seq +1 from 1');
      assert.equal(new Set(got.map((m) => m.epoch)).size, 1, 'one epoch');
      const payloads = got.map((m) => m.payload.toString());
      for (const p of ['p0', 'p1']) {
        const mine = payloads.filter((x) => x.startsWith(`${p}-`));
        assert.deepEqual(mine, Array.from({ length: perPublisher }, (_, i) => `${p}-${i}`), `${p}'s messages in its order`);
      }
      seen.push(payloads);
    }
    assert.deepEqual(seen[0], seen[1], 'both subscribers see the same sequence');
    await server.close();
  });

  it('keeps the connections of one client IP address on one workgroup without BenchmarkMode', async () => {
    const server = startServer({ Workgroups: 2, BenchmarkMode: false });
    for (let i = 0; i < 4; i++) await Client.open(server, { localAddress: '127.0.0.2' });
    assert.deepEqual(perWorkgroup(server, 'connections').sort(), [0, 4]);
    await server.close();
  });
});

describe('server.publish', SUITE, () => {
  it('returns false when nobody subscribes to the subject', () => {
    assert.equal(shared.publish('/app/nobody', 'lost'), false);
    assert.equal(shared.publish('/app/nobody', Buffer.from([1, 2, 3])), false);
  });

  it('refuses a subject that breaks the protocol rule with the same verdict as a client PUB', () => {
    for (const bad of ['nobody', '/a//b', '/a/', '/a*', '/a b', '/é', '/' + 'x'.repeat(255)])
      assert.throws(() => shared.publish(bad, 'x'), TypeError, bad);
    assert.equal(shared.publish('/' + 'x'.repeat(254), 'x'), false, 'a 255-byte subject is valid');
  });

  it('delivers a string as a text frame and bytes as a binary frame, numbered like client publishes', async () => {
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command('SUB /app/t');
    assert.equal(shared.publish('/app/t', 'héllo'), true);
    assert.equal(shared.publish('/app/t', Buffer.from([0, 10, 255])), true);
    assert.equal(shared.publish('/app/t', new Uint8Array([7, 8])), true);
    pub.send('PUB /app/t\nfrom a client');
    const got = await takeMsgs(sub, 4, 'the application’s messages');
    // One sequence for the subject, whoever publishes; the application's own messages keep their order.
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4]);
    const fromApp = got.filter((m) => m.payload.toString() !== 'from a client');
    assert.deepEqual(fromApp.map((m) => m.binary), [false, true, true]);
    assert.equal(fromApp[0].payload.toString(), 'héllo');
    assert.deepEqual(fromApp[1].payload, Buffer.from([0, 10, 255]));
    assert.deepEqual(fromApp[2].payload, Buffer.from([7, 8]));
    assert.equal(got.find((m) => m.payload.toString() === 'from a client')?.binary, false);
    await sub.command('UNSUB /app/t');
    assert.equal(shared.publish('/app/t', 'gone'), false, 'false again after the last UNSUB');
  });

  it('reaches subscribers on every workgroup', async () => {
    const clients = [await Client.open(shared), await Client.open(shared)];
    for (const c of clients) await c.command('SUB /app/all');
    assert.equal(shared.publish('/app/all', 'everyone'), true);
    for (const c of clients) assert.equal((await c.nextMsg()).payload.toString(), 'everyone');
  });
});

describe('message size', SUITE, () => {
  it(`delivers a payload of exactly MaxMessageSize (${MAX_MESSAGE}) bytes intact`, async () => {
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command('SUB /size/max');
    const payload = crypto.randomBytes(MAX_MESSAGE);
    pub.send(Buffer.concat([Buffer.from('PUB /size/max max-1\n'), payload]));
    await pub.expect('ACK max-1');
    const m = await sub.nextMsg();
    assert.equal(m.binary, true);
    assert.deepEqual(m.payload, payload);
  });

  it('answers a payload one byte over MaxMessageSize with ERR too-large <id> and keeps the connection', async () => {
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command('SUB /size/over');
    pub.send(Buffer.concat([Buffer.from('PUB /size/over big-2\n'), Buffer.alloc(MAX_MESSAGE + 1, 0x61)]));
    const err = parseErr(await pub.next());
    assert.equal(err.code, 'too-large');
    assert.equal(err.rest[0], 'big-2');
    assert.equal(
      err.rest.slice(1).join(' '),
      `payload of ${MAX_MESSAGE + 1} bytes is over MaxMessageSize (${MAX_MESSAGE}); send at most ${MAX_MESSAGE} bytes`,
    );
    pub.send('PUB /size/over small-3\nsmall');
    await pub.expect('ACK small-3');
    // Same publisher and subject: had the big one gone out, it would arrive first.
    const m = await sub.nextMsg();
    assert.deepEqual([m.payload.toString(), m.seq], ['small', 1]);
    assert.equal(shared.stats().total.err_too_large >= 1, true);
  });

  it(`accepts the longest PUB header with a MaxMessageSize payload (a message of MaxMessageSize + ${MAX_PUB_HEADER} bytes)`, async () => {
    const subject = '/' + 's'.repeat(254);
    const id = 'i'.repeat(64);
    const sub = await Client.open(shared);
    const pub = await Client.open(shared);
    await sub.command(`SUB ${subject}`);
    const message = Buffer.concat([Buffer.from(`PUB ${subject} ${id}\r\n`), Buffer.alloc(MAX_MESSAGE, 0x7a)]);
    assert.equal(message.length, MAX_MESSAGE + MAX_PUB_HEADER);
    pub.send(message);
    await pub.expect(`ACK ${id}`);
    const m = await sub.nextMsg();
    assert.equal(m.subject, subject);
    assert.equal(m.payload.length, MAX_MESSAGE);
  });
});

describe('many connections', SUITE, () => {
  it('serves 1,000 connections, each subscribed to its own subject, and counts them down to 0', async () => {
    const server = startServer({ Workgroups: 2, BenchmarkMode: true });
    const n = 1000;
    const clients = await openMany(server, n);
    await Promise.all(clients.map((c, i) => c.command(`SUB /conn/${i}`)));
    const s = server.stats();
    assert.equal(s.total.connections, n);
    assert.deepEqual(s.workgroups.map((w) => w.counters.connections), [n / 2, n / 2], 'round-robin placement');
    assert.equal(s.total.subscriptions, n);
    assert.equal(s.total.subjects, n);
    for (let i = 0; i < n; i++) assert.equal(server.publish(`/conn/${i}`, `to-${i}`), true);
    const got = await Promise.all(clients.map((c) => c.nextMsg()));
    got.forEach((m, i) => assert.deepEqual([m.subject, m.payload.toString(), m.seq], [`/conn/${i}`, `to-${i}`, 1]));
    await Promise.all(clients.map((c) => c.close()));
    await waitFor('connections to return to 0', () => server.stats().total.connections === 0, () => server.stats().total);
    const end = server.stats();
    assert.equal(end.total.closed, n);
    assert.equal(end.total.subscriptions, 0);
    assert.equal(end.total.subjects, n, 'each subject stays while the history cache holds its message');
    await server.close();
  });
});

describe('subscription limit', SUITE, () => {
  it('refuses a SUB past MaxSubscriptionsPerConnection with ERR limit and subscribes to none of its subjects', async () => {
    const server = startServer({ Workgroups: 1, MaxSubscriptionsPerConnection: 3 });
    const c = await Client.open(server);
    await c.command('SUB /l/1 /l/2');
    c.send('SUB /l/3 /l/4');
    assert.equal(
      (await c.next()).text,
      'ERR limit MaxSubscriptionsPerConnection (3) reached: the connection holds 2 and asked for 2 more; UNSUB some first',
    );
    assert.equal(server.stats().total.subscriptions, 2, 'all or nothing: /l/3 was not subscribed');
    await c.command('SUB /l/3');
    c.send('SUB /l/4');
    assert.equal(parseErr(await c.next()).code, 'limit');
    assert.equal(server.stats().total.subscriptions, 3);
    assert.equal(server.stats().total.err_limit, 2);
    await c.command('UNSUB /l/1', 'SUB /l/4');
    assert.equal(server.publish('/l/4', 'now'), true);
    assert.equal((await c.nextMsg()).subject, '/l/4');
    await server.close();
  });

  it('counts a subject repeated in one SUB once against MaxSubscriptionsPerConnection', async () => {
    const server = startServer({ Workgroups: 1, MaxSubscriptionsPerConnection: 2 });
    const c = await Client.open(server);
    await c.command('SUB /r/a /r/b /r/b');
    assert.equal(server.stats().total.subscriptions, 2);
    assert.equal(server.publish('/r/b', 'x'), true);
    await server.close();
  });
});

describe('handshake and shutdown', SUITE, () => {
  it('echoes the subprotocol starling.v1 when the client offers it, and none when it does not', async () => {
    assert.equal((await Client.open(shared, { protocols: ['starling.v1'] })).ws.protocol, 'starling.v1');
    assert.equal((await Client.open(shared, { protocols: ['chat', 'starling.v1'] })).ws.protocol, 'starling.v1');
    assert.equal((await Client.open(shared)).ws.protocol, '');
  });

  it('closes every client with 1001 on server.close() and stops accepting', async () => {
    const server = startServer({ Workgroups: 2, BenchmarkMode: true });
    const clients = [await Client.open(server), await Client.open(server), await Client.open(server)];
    await clients[0].command('SUB /bye');
    const { port } = server.addresses[0];
    await server.close();
    for (const c of clients) assert.equal((await c.closed).code, 1001);
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), resolve('connected')));
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? String(e)));
    });
    assert.equal(refused, 'ECONNREFUSED');
    assert.throws(() => server.publish('/bye', 'late'), /closed/);
  });

  it('counts connections, handshakes, subscriptions, messages and bytes in stats()', async () => {
    const server = startServer({ Workgroups: 2, BenchmarkMode: true });
    const subs = [await Client.open(server), await Client.open(server)];
    const pub = await Client.open(server);
    for (const s of subs) await s.command('SUB /stats/a');
    const before = server.stats();
    for (let i = 0; i < 10; i++) pub.send(`PUB /stats/a s${i}\npayload ${i}`);
    for (let i = 0; i < 10; i++) await pub.expect(`ACK s${i}`);
    for (const s of subs) await takeMsgs(s, 10, 'the counted messages');
    const after = server.stats();
    assert.equal(after.total.connections, 3);
    assert.equal(after.total.handshakes, 3);
    assert.equal(after.total.subscriptions, 2);
    assert.equal(after.total.subjects, 1);
    assert.equal(after.total.messages_in - before.total.messages_in, 10);
    assert.equal(after.total.messages_out - before.total.messages_out, 20);
    assert.ok(after.total.bytes_in - before.total.bytes_in >= 10 * 'PUB /stats/a s0\npayload 0'.length, 'bytesIn grew by the publishes');
    assert.ok(after.total.bytes_out - before.total.bytes_out >= 20 * 'MSG /stats/a x:1\npayload 0'.length, 'bytesOut grew by the deliveries');
    for (const key of ['connections', 'messages_in', 'messages_out', 'bytes_in', 'bytes_out'] as const)
      assert.equal(after.workgroups.reduce((sum, w) => sum + w.counters[key], 0), after.total[key], `total.${key} is the sum of the workgroups`);
    await server.close();
  });
});
