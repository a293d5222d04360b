// The client SDK (`starling/client`, its CommonJS build) against a real Starling server over real sockets: publishes
// answered by ACK or refused with a typed error, subscriptions with their snapshot, history and conflation, and a
// connection cut between client and server (a TCP proxy) while messages keep coming: the application sees every
// message exactly once, in order, and a `sync` per reconnect with the missed messages `recovered`.
// A server that restarts is test/90.client-restart.test.ts; the state machine case by case, test/90.client-protocol.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, StarlingError, type Client, type ConnectOptions } from 'starling/client';
import { startServer } from './helpers';
import { assertConsecutive, Proxy, PublishLoop, Recorder, until, type Seen } from './client-kit';
import type { Server } from '../src/index';

const SUITE = { timeout: 120_000 };
const FAST = { min: 5, max: 100, jitter: 0.5 };

const server = startServer({ MaxMessageSize: 1024 });
/** One workgroup: deliveries happen in command order, so "nothing arrived" is provable with a later message. */
const single = startServer({ Workgroups: 1 });

function client(s: Server | string, options: Partial<ConnectOptions> = {}): { client: Client; rec: Recorder } {
  const c = connect({ servers: [typeof s === 'string' ? s : s.url], reconnect: FAST, ...options });
  return { client: c, rec: new Recorder(c) };
}

describe('publishing', SUITE, () => {
  it('resolves a publish when the server ACKs it', async () => {
    const { client: c, rec } = client(server);
    await c.publish('/pub/ok', 'text');
    await c.publish('/pub/ok', new Uint8Array([0, 1, 2]));
    await c.publish('/pub/ok', 'kept', { retained: true });
    assert.deepEqual(await rec.event('connected'), { url: server.url });
  });

  it('rejects a refused publish with a StarlingError: the ERR code, the detail, the subject', async () => {
    const { client: c } = client(server);
    await assert.rejects(c.publish('/__starling__/stats', 'x'), (e: unknown) => {
      assert.ok(e instanceof StarlingError);
      assert.equal(e.code, 'forbidden');
      assert.equal(e.subject, '/__starling__/stats');
      assert.match(e.detail, /^\/__starling__\/stats: /);
      return true;
    });
    await assert.rejects(c.publish('/pub/big', 'x'.repeat(1025)), (e: StarlingError) => {
      assert.equal(e.code, 'too-large');
      assert.match(e.detail, /1025 bytes.*MaxMessageSize \(1024\)/);
      return true;
    });
    await c.publish('/pub/big', 'x'.repeat(1024)); // the connection goes on
  });

  it('a message far over MaxMessageSize: the server closes (1009), the publish ends in connection-lost, the client reconnects', async () => {
    const { client: c, rec } = client(server);
    await c.publish('/pub/huge', 'fits');
    // (Over MaxMessageSize + the longest PUB header, and over the longest AUTH command, which is always accepted.)
    await assert.rejects(c.publish('/pub/huge', 'x'.repeat(9000)), (e: StarlingError) => e.code === 'connection-lost');
    await rec.event('connected');
    assert.equal((await rec.event('disconnected')).code, 1009);
    await rec.event('connected');
    await c.publish('/pub/huge', 'fits again');
  });
});

describe('subscribing', SUITE, () => {
  it('delivers text as a string and binary as bytes, live, with consecutive positions, after the SYNC', async () => {
    const { client: sub, rec } = client(server);
    const { client: pub } = client(server);
    const s = sub.subscribe('/sub/live', rec.handler);
    const at = await s.ready;
    assert.deepEqual(await rec.event('connected'), { url: server.url });
    assert.deepEqual(await rec.event('sync'), { subject: '/sub/live', ...at });
    await pub.publish('/sub/live', 'one');
    await pub.publish('/sub/live', Uint8Array.from([0xff, 0x0a, 0x00]));
    const bytes = Uint8Array.from([9, 8, 7, 6]);
    await pub.publish('/sub/live', new DataView(bytes.buffer, 1, 2)); // a view: only its bytes
    await until('three messages', () => rec.all.length === 3);
    assert.deepEqual(
      rec.all.map((m) => [m.text, m.binary, m.kind, m.epoch, m.seq]),
      [
        ['one', false, 'live', at.epoch, at.seq + 1],
        ['\xff\n\x00', true, 'live', at.epoch, at.seq + 2],
        ['\x08\x07', true, 'live', at.epoch, at.seq + 3],
      ],
    );
    assert.deepEqual(s.position, { epoch: at.epoch, seq: at.seq + 3 });
  });

  it('sends a new subscriber the retained snapshot, then the history asked for, then SYNC', async () => {
    const { client: pub } = client(server);
    await pub.publish('/sub/hist', 'm1');
    await pub.publish('/sub/hist', 'm2 retained', { retained: true });
    for (const m of ['m3', 'm4', 'm5']) await pub.publish('/sub/hist', m);
    const { client: sub, rec } = client(server);
    const s = sub.subscribe('/sub/hist', rec.handler, { history: 2 });
    const at = await s.ready;
    assert.deepEqual(
      rec.all.map((m) => [m.text, m.kind]),
      [
        ['m2 retained', 'snapshot'],
        ['m4', 'history'],
        ['m5', 'history'],
      ],
    );
    assert.equal(at.seq, rec.all[2].seq, 'SYNC gives the position of the last message sent');
    assert.deepEqual(rec.all.map((m) => m.seq), [at.seq - 3, at.seq - 1, at.seq]);
    const { client: plain, rec: plainRec } = client(server);
    await plain.subscribe('/sub/hist', plainRec.handler).ready;
    assert.deepEqual(plainRec.all.map((m) => [m.text, m.kind]), [['m2 retained', 'snapshot']], 'a plain subscription gets the snapshot only');
  });

  it('conflates: at most one message per interval, the latest, in increasing order, ending with the last one', async () => {
    const { client: sub, rec } = client(server);
    const { client: pub } = client(server);
    const at = await sub.subscribe('/sub/conflated', rec.handler, { conflate: 100 }).ready;
    const sent = 300;
    await Promise.all(Array.from({ length: sent }, (_, i) => pub.publish('/sub/conflated', String(i + 1))));
    await until('the last message', () => rec.all.at(-1)?.text === String(sent));
    const seqs = rec.all.map((m) => m.seq);
    assert.ok(seqs.every((q, i) => i === 0 || q > seqs[i - 1]), `increasing: ${seqs}`);
    assert.equal(seqs.at(-1), at.seq + sent);
    assert.ok(rec.all.every((m) => m.kind === 'live' && m.epoch === at.epoch));
    assert.ok(!rec.events.pending.some((e) => e.event === 'resync' || e.event === 'error'), JSON.stringify(rec.events.pending));
  });

  it('delivers nothing to a subscription after unsubscribe()', async () => {
    const { client: sub, rec } = client(single);
    const { client: pub } = client(single);
    const gone = sub.subscribe('/sub/gone', rec.handler);
    await Promise.all([gone.ready, sub.subscribe('/sub/kept', rec.handler).ready]);
    await pub.publish('/sub/gone', 'before');
    await until('the first message', () => rec.all.length === 1);
    gone.unsubscribe();
    // Whether or not the server has taken the UNSUB yet, the client delivers nothing more to the subscription;
    // one workgroup delivers in publish order, so the sentinel comes after "after" if that comes at all.
    await pub.publish('/sub/gone', 'after');
    await pub.publish('/sub/kept', 'sentinel');
    await until('the sentinel', () => rec.all.length === 2);
    assert.deepEqual(rec.all.map((m) => m.text), ['before', 'sentinel']);
  });

  it('rejects a subscription the server refuses (limit) and reports it as an error event', async () => {
    const limited = startServer({ MaxSubscriptionsPerConnection: 1 });
    const { client: c, rec } = client(limited);
    await c.subscribe('/lim/one', () => {}).ready;
    const refused = c.subscribe('/lim/two', () => {});
    await assert.rejects(refused.ready, (e: StarlingError) => e.code === 'limit' && e.subject === '/lim/two');
    await rec.event('connected');
    await rec.event('sync');
    const e = await rec.event('error');
    assert.deepEqual([e.code, e.subject], ['limit', '/lim/two']);
  });
});

describe('a connection cut between client and server (TCP proxy)', SUITE, () => {
  it('resubscribes from its position: the messages published meanwhile arrive recovered, then SYNC, then live', async () => {
    const proxy = await Proxy.start(server.addresses[0]);
    const { client: sub, rec } = client(proxy.url);
    const { client: pub } = client(server);
    const at = await sub.subscribe('/cut/once', rec.handler).ready;
    for (let i = 1; i <= 10; i++) await pub.publish('/cut/once', `m${i}`);
    await until('ten live messages', () => rec.all.length === 10);
    proxy.hold();
    proxy.cut();
    await rec.event('connected');
    await rec.event('sync');
    assert.equal((await rec.event('disconnected')).code, 1006);
    for (let i = 11; i <= 20; i++) await pub.publish('/cut/once', `m${i}`);
    proxy.release();
    await rec.event('connected');
    assert.deepEqual(await rec.event('sync'), { subject: '/cut/once', epoch: at.epoch, seq: at.seq + 20 });
    await pub.publish('/cut/once', 'm21');
    await until('21 messages', () => rec.all.length === 21);
    assert.deepEqual(
      rec.all.map((m) => [m.text, m.kind]),
      Array.from({ length: 21 }, (_, i) => [`m${i + 1}`, i >= 10 && i < 20 ? 'recovered' : 'live']),
    );
    assertConsecutive(rec.all, 'the subscriber');
    assert.equal(rec.all[0].seq, at.seq + 1);
  });

  it('with a publisher running throughout, delivers every acknowledged message exactly once, in order, across three cuts', async (t) => {
    const proxy = await Proxy.start(server.addresses[0]);
    const { client: sub, rec } = client(proxy.url);
    const { client: pub } = client(server);
    let drops = 0;
    sub.on('disconnected', () => drops++);
    await sub.subscribe('/cut/stream', rec.handler).ready;
    const loop = new PublishLoop(pub, '/cut/stream');
    for (let cut = 1; cut <= 4; cut++) {
      const seen = rec.all.length;
      await until(`50 more messages${cut > 1 ? ` after cut ${cut - 1}` : ''}`, () => rec.all.length >= seen + 50);
      if (cut === 4) break;
      proxy.cut();
      await until(`the client to see cut ${cut}`, () => drops === cut);
    }
    await loop.stop();
    const last = loop.acked.at(-1)!;
    await until(`message ${last}`, () => rec.all.at(-1)?.text === String(last));
    t.diagnostic(`${loop.acked.length} messages, ${rec.all.filter((m) => m.kind === 'recovered').length} of them recovered after a cut`);
    assert.deepEqual(rec.all.map((m) => Number(m.text)), loop.acked, 'every acknowledged message, once, in order');
    assertConsecutive(rec.all, 'the subscriber');
    const events = rec.events.pending.map((e) => e.event).filter((e) => e !== 'reconnecting');
    assert.deepEqual(events, ['connected', 'sync', ...Array(3).fill(['disconnected', 'connected', 'sync']).flat()]);
  });
});
