// The client SDK over the event-stream transport (`transport: 'sse'`: subscriptions on GET /sse, publishes as
// POST /publish), against a real server: the same API and the same recovery as over WebSocket — every message
// once, in order, through subscription changes (which reopen the stream), a connection cut by the network and a
// server restart — plus a scripted HTTP server sending what a correct server never does.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, StarlingError, type Client, type ConnectOptions } from 'starling/client';
import { startServer } from './helpers';
import { ServerChild } from './hostile-kit';
import { assertConsecutive, atEnd, Proxy, PublishLoop, Recorder, restartablePort, until, type Seen } from './client-kit';

const SUITE = { timeout: 120_000 };
const FAST = { min: 5, max: 100, jitter: 0.5 };

const server = startServer({ MaxMessageSize: 1024 });

function client(url: string, options: Partial<ConnectOptions> = {}): { client: Client; rec: Recorder } {
  const c = connect({ servers: [url], transport: 'sse', reconnect: FAST, ...options });
  return { client: c, rec: new Recorder(c) };
}

/** The events of one kind the recorder holds (not taken yet). */
function pendingEvents(rec: Recorder, kind: string): unknown[] {
  return rec.events.pending.filter((e) => e.event === kind).map((e) => e.value);
}

describe('the event-stream transport against a real server', SUITE, () => {
  it('subscribes and publishes text (also with CR), binary and retained messages; refusals are typed', async () => {
    const { client: c, rec } = client(server.url.replace(/^ws/, 'http'));
    const sub = c.subscribe('/sse/a', rec.handler);
    assert.equal((await sub.ready).seq, 0);
    assert.deepEqual(await rec.event('connected'), { url: server.url.replace(/^ws/, 'http') });
    await c.publish('/sse/a', 'one\ntwo');
    await c.publish('/sse/a', new Uint8Array([0, 13, 10, 255]));
    await c.publish('/sse/a', 'with\r\ncr');
    await c.publish('/sse/a', 'kept', { retained: true });
    assert.deepEqual(await rec.messagesOf(4), [
      ['one\ntwo', 'live', 1],
      ['\u0000\r\n\u00ff', 'live', 2],
      ['with\r\ncr', 'live', 3],
      ['kept', 'live', 4],
    ]);
    assert.equal(rec.all[1].binary, true);
    assert.equal(rec.all[2].binary, false);
    await assert.rejects(c.publish('/__starling__/x', 'no'), (e: unknown) => {
      assert.ok(e instanceof StarlingError);
      assert.equal(e.code, 'forbidden');
      assert.equal(e.subject, '/__starling__/x');
      return true;
    });
    await assert.rejects(c.publish('/sse/big', 'x'.repeat(1025)), (e: StarlingError) => e.code === 'too-large' && /MaxMessageSize/.test(e.detail));
    // A later subscriber gets the retained snapshot first.
    const { client: late, rec: lateRec } = client(server.url);
    await late.subscribe('/sse/a', lateRec.handler).ready;
    assert.deepEqual(await lateRec.message(), ['kept', 'snapshot', 4]);
  });

  it('one subject keeps every message once, in order, while other subscriptions come and go (each change reopens the stream)', async () => {
    const url = server.url.replace(/^ws/, 'http');
    const { client: sub, rec } = client(url);
    const { client: pub } = client(url, { transport: 'websocket', servers: [server.url] });
    await sub.subscribe('/churn/main', rec.handler).ready;
    const loop = new PublishLoop(pub, '/churn/main');
    const others: ReturnType<Client['subscribe']>[] = [];
    for (let i = 0; i < 12; i++) {
      await until(`message ${20 * (i + 1)}`, () => rec.all.length >= 20 * (i + 1));
      if (i % 3 === 2) others.shift()!.unsubscribe();
      else others.push(sub.subscribe(`/churn/other${i}`, () => {}, { history: 3 }));
    }
    await Promise.all(others.map((o) => o.ready));
    await loop.stop();
    const last = loop.acked.at(-1)!;
    await until(`the last acknowledged message (${last})`, () => rec.all.at(-1)?.text === String(last));
    assertConsecutive(rec.all, '/churn/main');
    assert.equal(rec.all[0].text, '1');
    assert.ok(rec.all.every((m) => m.kind === 'live' || m.kind === 'recovered'), 'live, or recovered across a reopening');
    // One sync per subscription: a reopened stream's SYNC of a live subscription is not news.
    const syncs = pendingEvents(rec, 'sync') as { subject: string }[];
    assert.equal(syncs.filter((s) => s.subject === '/churn/main').length, 1, JSON.stringify(syncs));
    assert.equal(pendingEvents(rec, 'resync').length, 0);
    assert.equal(pendingEvents(rec, 'disconnected').length, 0, 'reopening is not a disconnection');
  });

  it('publishes to one subject without waiting stay in order', async () => {
    const url = server.url.replace(/^ws/, 'http');
    const { client: c, rec } = client(url);
    await c.subscribe('/order/a', rec.handler).ready;
    const sent = Array.from({ length: 200 }, (_, i) => c.publish('/order/a', String(i)));
    await Promise.all(sent);
    await until('200 messages', () => rec.all.length === 200);
    assert.deepEqual(
      rec.all.map((m) => m.text),
      Array.from({ length: 200 }, (_, i) => String(i)),
    );
  });

  it('a stream cut by the network: the same server again, what was missed recovered exactly, then sync and live', async () => {
    const proxy = await Proxy.start({ host: '127.0.0.1', port: Number(new URL(server.url).port) });
    const { client: sub, rec } = client(`http://127.0.0.1:${proxy.port}/`);
    const { client: pub } = client(server.url, { transport: 'websocket', servers: [server.url] });
    await sub.subscribe('/cut/a', rec.handler).ready;
    await rec.event('connected');
    await rec.event('sync');
    for (let i = 1; i <= 5; i++) await pub.publish('/cut/a', `before ${i}`);
    await until('5 messages', () => rec.all.length === 5);
    proxy.hold();
    proxy.cut();
    assert.equal((await rec.event('disconnected')).code, 1006);
    for (let i = 1; i <= 7; i++) await pub.publish('/cut/a', `missed ${i}`);
    proxy.release();
    await rec.event('connected');
    assert.deepEqual(await rec.event('sync'), { subject: '/cut/a', epoch: rec.all[0].epoch, seq: 12 });
    await pub.publish('/cut/a', 'after');
    await until('13 messages', () => rec.all.length === 13);
    assertConsecutive(rec.all, '/cut/a');
    assert.deepEqual(
      rec.all.map((m) => m.kind),
      [...Array(5).fill('live'), ...Array(7).fill('recovered'), 'live'],
    );
  });

  it('a subscription conflated differently, or too many for the URL, is refused at once with what to do', async () => {
    const { client: c } = client(server.url);
    c.subscribe('/room/a', () => {});
    assert.throws(() => c.subscribe('/room/b', () => {}, { conflate: 500 }), /one event stream, so one conflate setting.*transport 'websocket'/);
    assert.throws(
      () => {
        for (let i = 0; i < 1000; i++) c.subscribe(`/room/a-rather-long-subject-name-${i}`, () => {});
      },
      (e: unknown) => e instanceof RangeError && /8 KiB/.test(e.message),
    );
    assert.throws(() => connect({ servers: [server.url], transport: 'carrier-pigeon' as never }), /'websocket' or 'sse'/);
  });
});

describe('the event-stream transport across a server restart', SUITE, () => {
  it('the subscriber sees each message once, in order, and a resync to the new epoch', async () => {
    const port = await restartablePort();
    const config = { Listen: `127.0.0.1:${port}` };
    let child = await ServerChild.start(config);
    const { client: sub, rec } = client(`http://127.0.0.1:${port}/`);
    const { client: pub } = client(`http://127.0.0.1:${port}/`);
    const first = await sub.subscribe('/restart/sse', rec.handler).ready;
    const loop = new PublishLoop(pub, '/restart/sse');
    await until('30 messages before the kill', () => rec.all.length >= 30);
    await child.kill();
    child = await ServerChild.start(config);
    await until('30 messages of the restarted server', () => rec.all.filter((m) => m.epoch !== first.epoch).length >= 30);
    await loop.stop();
    const last = loop.acked.at(-1)!;
    await until(`the last acknowledged message (${last})`, () => rec.all.at(-1)?.text === String(last));
    const counters = rec.all.map((m) => Number(m.text));
    assert.ok(
      counters.every((n, i) => i === 0 || n > counters[i - 1]),
      `no duplicate and no reordering: ${rec.all.map((m) => `${m.text}@${m.epoch}:${m.seq}/${m.kind}`).join(' ')}`,
    );
    const resyncs = pendingEvents(rec, 'resync') as { subject: string; epoch: string }[];
    assert.equal(resyncs.length, 1, JSON.stringify(resyncs));
    assert.notEqual(resyncs[0].epoch, first.epoch);
    assertConsecutive(
      rec.all.filter((m) => m.epoch !== first.epoch),
      'the new epoch',
    );
    child.assertAlive();
  });
});

describe('a hostile event-stream server', SUITE, () => {
  /** An HTTP server whose /sse answer the test writes. */
  async function scripted(answer: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<string> {
    const s = http.createServer(answer);
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
    atEnd(() => new Promise<void>((resolve) => (s.closeAllConnections(), s.close(() => resolve()))));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}/`;
  }

  it('malformed events are reported as protocol errors and the stream goes on', async () => {
    const url = await scripted((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.write(': hello\r\n\r\n');
      res.write('event: sync\nid: /h/a@k1:0\ndata: /h/a k1:0\n\n');
      res.write('event: message-base64\nid: /h/a@k1:1\ndata: *** not base64 ***\n\n');
      res.write('event: nonsense\nid: /h/a@k1:2\ndata: x\n\n');
      res.write('id: no-position\ndata: x\n\n');
      res.write('event: sync\ndata: /h/a k1:notanumber\n\n');
      // Split across writes, with CR line ends: still one event.
      res.write('id: /h/a@k1:1\rda');
      res.write('ta: fine\r');
      res.write('\n\r\n');
    });
    const { client: c, rec } = client(url);
    c.subscribe('/h/a', rec.handler);
    assert.deepEqual(await rec.message(), ['fine', 'live', 1]);
    const errors = pendingEvents(rec, 'error') as StarlingError[];
    assert.equal(errors.length, 4, errors.map((e) => e.message).join('; '));
    assert.ok(errors.every((e) => e.code === 'protocol'));
  });

  it('an endless event is cut at a bound, and the client connects again', async () => {
    let streams = 0;
    const url = await scripted((req, res) => {
      streams++;
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      const chunk = 'data: ' + 'x'.repeat(1024 * 1024) + '\n';
      const pump = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      res.on('close', () => res.destroy());
      pump();
    });
    const before = process.memoryUsage().rss;
    const { client: c, rec } = client(url);
    c.subscribe('/h/endless', rec.handler);
    await rec.event('connected');
    const gone = await rec.event('disconnected');
    assert.equal(gone.code, 1009);
    assert.match(gone.reason, /longer than/);
    await until('a second stream', () => streams >= 2);
    await c.close();
    assert.ok(process.memoryUsage().rss - before < 512 * 1024 * 1024, 'the client held a bounded amount');
  });

  it('a refused stream (HTTP 400 with a JSON detail) is an error event that says why, and is tried again', async () => {
    let tries = 0;
    const url = await scripted((req, res) => {
      tries++;
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end('{"ok":false,"error":"bad-request","detail":"a detail that says what to change"}');
    });
    const { client: c, rec } = client(url);
    c.subscribe('/h/refused', rec.handler);
    const e = await rec.event('error');
    assert.equal(e.code, 'connect');
    assert.match(e.detail, /HTTP 400: a detail that says what to change/);
    await until('another try', () => tries >= 2);
    await c.close();
  });
});

describe('the event-stream transport with entitlement (JWT)', SUITE, () => {
  const SECRET = crypto.randomBytes(32);
  const b64u = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  function jwt(permissions: { sub?: string[]; pub?: string[]; all?: string[] }, ttl: number): string {
    const input = `${b64u({ alg: 'HS256', typ: 'JWT' })}.${b64u({ exp: Math.floor(Date.now() / 1000) + ttl, permissions })}`;
    return `${input}.${crypto.createHmac('sha256', SECRET).update(input).digest('base64url')}`;
  }
  const jwtServer = (o: Record<string, unknown> = {}) => startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': SECRET.toString('base64'), ...o });

  it('the stream carries the token, publishes a Bearer header: granted subjects work, others are refused with forbidden', async () => {
    const server = jwtServer();
    const http = server.url.replace(/^ws/, 'http');
    const { client: c, rec } = client(http, { token: jwt({ sub: ['/jwt/*'], pub: ['/jwt/a'] }, 3600) });
    const at = await c.subscribe('/jwt/a', rec.handler).ready;
    await c.publish('/jwt/a', 'granted');
    await assert.rejects(c.publish('/jwt/b', 'not granted'), (e: StarlingError) => e.code === 'forbidden' && e.subject === '/jwt/b');
    assert.deepEqual(await rec.message(), ['granted', 'live', at.seq + 1]);
    await assert.rejects(c.subscribe('/other/x', rec.handler).ready, (e: StarlingError) => e.code === 'forbidden' && e.subject === '/other/x');
    // The refused subscription is gone; the granted one goes on (its stream was reopened without it).
    // (Live, or recovered: the publish may be numbered before the reopened stream's recovery of /jwt/a is answered.)
    await c.publish('/jwt/a', 'still');
    const [text, , seq] = await rec.message();
    assert.deepEqual([text, seq], ['still', at.seq + 2]);
    const { client: anon } = client(http);
    await assert.rejects(anon.subscribe('/jwt/a', () => {}).ready, (e: StarlingError) => e.code === 'forbidden');
    await assert.rejects(anon.publish('/jwt/a', 'x'), (e: StarlingError) => e.code === 'forbidden');
  });

  it('refreshToken renews before expiry: the stream is reopened with each new token, every message once and in order, no disconnection', async () => {
    const server = jwtServer({ 'Entitlement.RenewBefore': 2 });
    const http = server.url.replace(/^ws/, 'http');
    const issued: string[] = [];
    const refreshToken = (): string => {
      issued.push(jwt({ sub: ['/renew/*'] }, 4));
      return issued.at(-1)!;
    };
    const { client: sub, rec } = client(http, { token: jwt({ sub: ['/renew/*'] }, 4), refreshToken });
    const { client: pub } = client(server.url, { transport: 'websocket', token: jwt({ pub: ['/renew/*'] }, 3600) });
    await sub.subscribe('/renew/sse', rec.handler).ready;
    const loop = new PublishLoop(pub, '/renew/sse');
    await until('two renewals', () => issued.length >= 2);
    const second = JSON.parse(Buffer.from(issued[0].split('.')[1], 'base64url').toString()).exp as number;
    await until('the first renewed token to expire', () => Date.now() > second * 1000 + 300);
    await loop.stop();
    const last = loop.acked.at(-1)!;
    await until(`message ${last}`, () => rec.all.at(-1)?.text === String(last));
    assertConsecutive(rec.all, '/renew/sse');
    assert.deepEqual(
      rec.all.map((m) => Number(m.text)),
      loop.acked,
      'every acknowledged message, once, in order',
    );
    assert.deepEqual(pendingEvents(rec, 'disconnected'), []);
    assert.deepEqual(pendingEvents(rec, 'error'), []);
    assert.deepEqual(pendingEvents(rec, 'resync'), []);
    assert.ok(sub.connected);
  });
});
