// The client SDK with entitlement (docs/client.md, "Tokens"): a token presented as the first command of every
// connection, renewed with refreshToken on `AUTH expiring` (or authenticate()) without dropping the connection,
// an expired or refused token never presented again in a loop, a subscription the renewed token no longer grants
// removed from the client, and the Basic, JWT and Custom modes end to end against a real server. Tokens are signed
// here with Node's crypto (HS256), never by the code under test. The scripted server (test/client-kit.ts) checks
// the order of the commands exactly.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { connect, StarlingError, type Client, type ClientEvent, type ClientEvents, type ConnectOptions } from 'starling/client';
import { startServer } from './helpers';
import { assertConsecutive, Proxy, Recorder, ScriptedServer, until, type Seen } from './client-kit';
import type { Server } from '../src/index';

const SUITE = { timeout: 120_000 };
const FAST = { min: 5, max: 100, jitter: 0.5 };

// ---------------------------------------------------------------------------------------------------
// Tokens

const SECRET = crypto.randomBytes(32);
const b64u = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
const nowS = (): number => Math.floor(Date.now() / 1000);

interface Perms {
  sub?: string[];
  pub?: string[];
  all?: string[];
}

/** An HS256 JWT with `permissions` and an `exp` `ttl` seconds from now. */
function jwt(permissions: Perms, ttl: number): string {
  const input = `${b64u({ alg: 'HS256', typ: 'JWT' })}.${b64u({ exp: nowS() + ttl, permissions })}`;
  return `${input}.${crypto.createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

/** The `exp` claim of a token made by jwt(). */
const expOf = (token: string): number => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;

function jwtServer(overrides: Record<string, unknown> = {}): Server {
  return startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': SECRET.toString('base64'), ...overrides });
}

// ---------------------------------------------------------------------------------------------------
// Clients and what they report

function client(s: { url: string } | string, options: Partial<ConnectOptions> = {}): { client: Client; rec: Recorder } {
  const c = connect({ servers: [typeof s === 'string' ? s : s.url], reconnect: FAST, ...options });
  return { client: c, rec: new Recorder(c) };
}

/** The events of one kind the client reported so far (the recorder's queue is never taken from here). */
function reported<K extends ClientEvent>(rec: Recorder, event: K): ClientEvents[K][] {
  return rec.events.pending.filter((e) => e.event === event).map((e) => e.value as ClientEvents[K]);
}

/** Waits for an event of that kind matching `test`; returns it. */
async function waitFor<K extends ClientEvent>(rec: Recorder, event: K, test: (v: ClientEvents[K]) => boolean = () => true): Promise<ClientEvents[K]> {
  await until(`a ${event} event${test.length ? ' like that' : ''}`, () => reported(rec, event).some(test));
  return reported(rec, event).find(test)!;
}

const handshakes = (s: Server): number => s.stats().total.handshakes;
const counter = (s: Server, name: string): number => s.stats().total[name];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const texts = (seen: Seen[]): string[] => seen.map((m) => m.text);

/** Publishes 1, 2, 3 … on `subject`, one every few ms, each after the previous one's ACK, until stopped. */
class Ticker {
  readonly acked: string[] = [];
  private stopped = false;
  private readonly done: Promise<void>;
  constructor(client: Client, subject: string) {
    this.done = (async () => {
      for (let i = 1; !this.stopped; i++) {
        await client.publish(subject, String(i));
        this.acked.push(String(i));
        await sleep(3);
      }
    })();
    this.done.catch(() => {});
  }
  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }
}

// ---------------------------------------------------------------------------------------------------

describe('JWT', SUITE, () => {
  const server = jwtServer();

  it('presents the token when connecting: subscribe, publish, receive; without one the same subscription is refused', async () => {
    const token = jwt({ all: ['/jwt/*'] }, 3600);
    const { client: c, rec } = client(server, { token });
    const at = await c.subscribe('/jwt/live', rec.handler).ready;
    await c.publish('/jwt/live', 'hello');
    await until('the message', () => rec.all.length === 1);
    assert.deepEqual(rec.all.map((m) => [m.text, m.kind, m.seq]), [['hello', 'live', at.seq + 1]]);
    assert.deepEqual(reported(rec, 'auth'), [{ state: 'ok', detail: String(expOf(token)) }]);
    assert.deepEqual(reported(rec, 'error'), []);

    const { client: anon, rec: anonRec } = client(server);
    await assert.rejects(anon.subscribe('/jwt/live', () => {}).ready, (e: StarlingError) => e.code === 'forbidden' && /without a token/.test(e.detail));
    await assert.rejects(anon.publish('/jwt/live', 'x'), (e: StarlingError) => e.code === 'forbidden');
    assert.deepEqual(reported(anonRec, 'auth'), [], 'a client without a token sends no AUTH');
  });

  it('a reconnection (the connection cut) presents the token again before it resubscribes, and recovers what was missed', async () => {
    const proxy = await Proxy.start(server.addresses[0]);
    const token = jwt({ sub: ['/kill/*'] }, 3600);
    const { client: sub, rec } = client(proxy.url, { token });
    const { client: pub } = client(server, { token: jwt({ pub: ['/kill/*'] }, 3600) });
    const at = await sub.subscribe('/kill/s', rec.handler).ready;
    for (const m of ['m1', 'm2', 'm3']) await pub.publish('/kill/s', m);
    await until('three messages', () => rec.all.length === 3);
    const before = { handshakes: handshakes(server), ok: counter(server, 'auth_ok') };
    proxy.hold();
    proxy.cut();
    await waitFor(rec, 'disconnected');
    for (const m of ['m4', 'm5', 'm6']) await pub.publish('/kill/s', m);
    proxy.release();
    await waitFor(rec, 'sync', (s) => s.seq === at.seq + 6);
    await pub.publish('/kill/s', 'm7');
    await until('seven messages', () => rec.all.length === 7);
    assert.deepEqual(
      rec.all.map((m) => [m.text, m.kind]),
      [['m1', 'live'], ['m2', 'live'], ['m3', 'live'], ['m4', 'recovered'], ['m5', 'recovered'], ['m6', 'recovered'], ['m7', 'live']],
    );
    assertConsecutive(rec.all, 'the subscriber');
    assert.equal(handshakes(server) - before.handshakes, 1, 'one new connection');
    assert.equal(counter(server, 'auth_ok') - before.ok, 1, 'its token accepted');
    assert.deepEqual(reported(rec, 'auth').map((a) => a.state), ['ok', 'ok']);
    assert.deepEqual(reported(rec, 'error'), []);
  });

  it('authenticate() renews at any time: resolves with the expiry, rejects a refused token with code auth (the token in force stays)', async () => {
    const proxy = await Proxy.start(server.addresses[0]);
    const { client: c, rec } = client(proxy.url, { token: jwt({ all: ['/api/*'] }, 3600) });
    await c.subscribe('/api/s', rec.handler).ready;
    const next = jwt({ all: ['/api/*'] }, 7200);
    assert.equal(await c.authenticate(next), expOf(next));
    await assert.rejects(c.authenticate('not.a.jwt'), (e: unknown) => {
      assert.ok(e instanceof StarlingError);
      assert.equal(e.code, 'auth');
      assert.match(e.detail, /refused/);
      return true;
    });
    // Still entitled by the token in force; a refused renewal is the promise's to report, not an error event.
    await c.publish('/api/s', 'still');
    await until('the message', () => rec.all.length === 1);
    assert.ok(c.connected);
    assert.deepEqual(reported(rec, 'error'), []);
    assert.deepEqual(reported(rec, 'auth').map((a) => a.state), ['ok', 'ok', 'invalid']);
    // The next connection presents the token in force, not the refused one.
    proxy.cut();
    await waitFor(rec, 'sync', () => reported(rec, 'connected').length === 2);
    assert.deepEqual(reported(rec, 'auth').map((a) => a.state), ['ok', 'ok', 'invalid', 'ok']);
    assert.equal(reported(rec, 'auth')[3].detail, String(expOf(next)));
    assert.deepEqual(reported(rec, 'error'), []);
    assert.throws(() => c.authenticate('with space'), TypeError);
    assert.throws(() => c.authenticate(''), TypeError);
    assert.throws(() => connect({ servers: [server.url], token: 'a b' }), TypeError);
    await c.close();
    await assert.rejects(c.authenticate(next), (e: StarlingError) => e.code === 'closed');
  });
});

describe('renewal on AUTH expiring (tokens valid 4 s, RenewBefore 2)', SUITE, () => {
  it('refreshToken renews twice before expiry: the same connection, the subscription live, every message once and in order', async () => {
    const server = jwtServer({ 'Entitlement.RenewBefore': 2 });
    const issued: string[] = [];
    const refreshToken = async (): Promise<string> => {
      const t = jwt({ sub: ['/renew/*'] }, 4);
      issued.push(t);
      return t;
    };
    const first = jwt({ sub: ['/renew/*'] }, 4);
    const { client: sub, rec } = client(server, { token: first, refreshToken });
    const { client: pub } = client(server, { token: jwt({ pub: ['/renew/*'] }, 3600) });
    await sub.subscribe('/renew/s', rec.handler).ready;
    const ticker = new Ticker(pub, '/renew/s');
    await until('two renewals', () => reported(rec, 'auth').filter((a) => a.state === 'ok').length >= 3);
    // Past the expiry of the first and of the second token: without the renewals the connection would be gone.
    const second = expOf(issued[0]);
    await until('the second token to expire', () => Date.now() > second * 1000 + 300);
    await ticker.stop();
    const last = ticker.acked.at(-1)!;
    await until(`message ${last}`, () => rec.all.at(-1)?.text === last);

    assert.deepEqual(texts(rec.all), ticker.acked, 'every acknowledged message, once, in order');
    assertConsecutive(rec.all, 'the subscriber');
    assert.ok(rec.all.every((m) => m.kind === 'live'));
    assert.equal(handshakes(server), 2, 'one connection per client, never another');
    assert.deepEqual(reported(rec, 'disconnected'), []);
    assert.deepEqual(reported(rec, 'error'), []);
    assert.ok(issued.length >= 2 && issued.length <= 3, `refreshToken called ${issued.length} times`);
    const states = reported(rec, 'auth');
    assert.deepEqual(states.slice(0, 5).map((a) => a.state), ['ok', 'expiring', 'ok', 'expiring', 'ok']);
    const expiries = states.filter((a) => a.state === 'ok').map((a) => Number(a.detail));
    assert.deepEqual(expiries.slice(0, 3), [expOf(first), expOf(issued[0]), expOf(issued[1])]);
    assert.ok(sub.connected);
  });

  it('a refreshToken that throws is reported (code auth, the cause) and asked again in time: the connection lives on', async () => {
    const server = jwtServer({ 'Entitlement.RenewBefore': 3 });
    let calls = 0;
    const refreshToken = (): string => {
      if (++calls === 1) throw new Error('issuer down');
      return jwt({ all: ['/throws/*'] }, 3600);
    };
    const first = jwt({ all: ['/throws/*'] }, 5);
    const { client: c, rec } = client(server, { token: first, refreshToken });
    await c.subscribe('/throws/s', rec.handler).ready;
    const e = await waitFor(rec, 'error');
    assert.equal(e.code, 'auth');
    assert.match(e.detail, /refreshToken failed: issuer down/);
    assert.equal((e as { cause?: Error }).cause?.message, 'issuer down');
    await waitFor(rec, 'auth', (a) => a.state === 'ok' && Number(a.detail) > expOf(first));
    await until('the first token to expire', () => Date.now() > expOf(first) * 1000 + 1200);
    await c.publish('/throws/s', 'after');
    await until('the message', () => rec.all.length === 1);
    assert.equal(calls, 2);
    assert.equal(handshakes(server), 1);
    assert.deepEqual(reported(rec, 'disconnected'), []);
    assert.equal(reported(rec, 'error').length, 1);
  });

  it('a refreshToken that keeps failing: asked a bounded number of times, no connection with the expired token; then it recovers', async () => {
    const server = jwtServer({ 'Entitlement.RenewBefore': 1 });
    let healthy = false;
    const calls: number[] = [];
    const refreshToken = async (): Promise<string> => {
      calls.push(Date.now());
      if (!healthy) throw new Error('issuer down');
      return jwt({ sub: ['/fails/*'] }, 3600);
    };
    const { client: sub, rec } = client(server, { token: jwt({ sub: ['/fails/*'] }, 2), refreshToken, reconnect: { min: 100, max: 400, jitter: 0 } });
    const { client: pub } = client(server, { token: jwt({ pub: ['/fails/*'] }, 3600) });
    await sub.subscribe('/fails/s', rec.handler).ready;
    await pub.publish('/fails/s', 'before');
    assert.equal((await waitFor(rec, 'disconnected')).code, 1008);
    const expiredAt = Date.now();
    await pub.publish('/fails/s', 'while expired');
    await sleep(1500);
    // Without the bound this would be hundreds of calls (or connections).
    assert.ok(calls.length >= 3 && calls.length <= 15, `refreshToken called ${calls.length} times`);
    const minGap = Math.min(...calls.slice(1).map((t, i) => t - calls[i]));
    assert.ok(minGap >= 90, `calls ${minGap} ms apart at the closest`);
    assert.ok(calls.filter((t) => t > expiredAt).length <= 8, 'reconnection attempts back off');
    assert.equal(handshakes(server), 2, 'no connection was opened with the expired token');
    assert.ok(reported(rec, 'error').every((e) => e.code === 'auth'));
    assert.ok(reported(rec, 'error').length >= 3);

    healthy = true;
    await waitFor(rec, 'sync', () => reported(rec, 'connected').length === 2);
    await until('the message published while expired', () => rec.all.length === 2);
    assert.deepEqual(rec.all.map((m) => [m.text, m.kind]), [['before', 'live'], ['while expired', 'recovered']]);
    assert.equal(handshakes(server), 3);
  });
});

describe('expiry without refreshToken', SUITE, () => {
  it('reports it and does not reconnect (no spinning with the expired token); authenticate() brings it back, recovering', async () => {
    const server = jwtServer({ 'Entitlement.RenewBefore': 1 });
    const { client: sub, rec } = client(server, { token: jwt({ sub: ['/exp/*'] }, 2) });
    const { client: pub } = client(server, { token: jwt({ pub: ['/exp/*'] }, 3600) });
    await sub.subscribe('/exp/s', rec.handler).ready;
    await pub.publish('/exp/s', 'before');
    const e = await waitFor(rec, 'error');
    assert.equal(e.code, 'auth');
    assert.match(e.detail, /expired.*authenticate\(\)/);
    assert.equal(reported(rec, 'disconnected')[0]?.code, 1008);
    const states = reported(rec, 'auth').map((a) => a.state);
    assert.deepEqual([states[0], states.at(-1)], ['ok', 'expired'], `${states}`); // (an expiring between them, unless a pass was late)
    const after = handshakes(server);
    await pub.publish('/exp/s', 'while expired');
    await sleep(1500); // with 5 ms backoff a spinning client would open hundreds of connections meanwhile
    assert.equal(handshakes(server), after, 'no reconnection');
    assert.equal(after, 2);
    assert.equal(sub.connected, false);
    assert.deepEqual(reported(rec, 'reconnecting'), []);
    assert.equal(reported(rec, 'error').length, 1);

    const fresh = jwt({ sub: ['/exp/*'] }, 3600);
    assert.equal(await sub.authenticate(fresh), expOf(fresh));
    await until('the message published while expired', () => rec.all.length === 2);
    assert.deepEqual(rec.all.map((m) => [m.text, m.kind]), [['before', 'live'], ['while expired', 'recovered']]);
    assert.equal(reported(rec, 'sync').length, 2);
    assert.ok(sub.connected);
  });
});

describe('a renewal with narrower permissions', SUITE, () => {
  it('removes the subscription the new token does not grant, reports it, and does not subscribe it again on reconnection', async () => {
    const server = jwtServer({ 'Entitlement.RenewBefore': 2 });
    const proxy = await Proxy.start(server.addresses[0]);
    const narrow = jwt({ sub: ['/narrow/a'] }, 3600);
    const { client: c, rec } = client(proxy.url, { token: jwt({ sub: ['/narrow/*'] }, 3), refreshToken: () => narrow });
    const { client: pub } = client(server, { token: jwt({ pub: ['/narrow/*'] }, 3600) });
    await Promise.all([c.subscribe('/narrow/a', rec.handler).ready, c.subscribe('/narrow/b', rec.handler).ready]);
    const e = await waitFor(rec, 'error');
    assert.deepEqual([e.code, e.subject], ['forbidden', '/narrow/b']);
    assert.match(e.detail, /^\/narrow\/b: not permitted by the renewed token/);
    await waitFor(rec, 'auth', (a) => a.detail === String(expOf(narrow)));
    await pub.publish('/narrow/b', 'not for us');
    await pub.publish('/narrow/a', 'a1');
    await until('a1', () => rec.all.length === 1);

    const denied = counter(server, 'denied_subscribes');
    proxy.cut();
    await waitFor(rec, 'sync', () => reported(rec, 'connected').length === 2);
    await pub.publish('/narrow/a', 'a2');
    await until('a2', () => rec.all.length === 2);
    assert.deepEqual(texts(rec.all), ['a1', 'a2']);
    assert.equal(counter(server, 'denied_subscribes'), denied, 'the reconnection sent no SUB /narrow/b');
    assert.equal(reported(rec, 'error').length, 1);
    // Gone from the client: subscribing again is allowed (and refused by the server).
    await assert.rejects(c.subscribe('/narrow/b', () => {}).ready, (x: StarlingError) => x.code === 'forbidden' && x.subject === '/narrow/b');
  });
});

describe('Basic', SUITE, () => {
  const ALLOW = 'allow-0123456789abcdef';
  const server = startServer({ Entitlement: 'Basic', 'Entitlement.AllowToken': ALLOW });

  it('anonymous clients subscribe; publishing needs the allow-token', async () => {
    const { client: anon, rec } = client(server);
    await anon.subscribe('/basic/s', rec.handler).ready;
    await assert.rejects(anon.publish('/basic/s', 'anon'), (e: StarlingError) => e.code === 'forbidden' && /AUTH/.test(e.detail));
    const { client: pub, rec: pubRec } = client(server, { token: ALLOW });
    await pub.publish('/basic/s', 'allowed');
    await until('the message', () => rec.all.length === 1);
    assert.equal(rec.all[0].text, 'allowed');
    assert.deepEqual(reported(pubRec, 'auth'), [{ state: 'ok', detail: '0' }]);
  });

  it('a refused token is reported and not presented again in a loop; authenticate() with the right one connects', async () => {
    const before = handshakes(server);
    const { client: c, rec } = client(server, { token: 'wrong-token-0123456789' });
    const queued = c.publish('/basic/q', 'held');
    const e = await waitFor(rec, 'error');
    assert.equal(e.code, 'auth');
    assert.match(e.detail, /refused the token \(not the allow-token\).*authenticate\(\)/);
    await sleep(1000);
    assert.equal(handshakes(server) - before, 1, 'one attempt, not a loop');
    assert.deepEqual(reported(rec, 'connected'), []);
    assert.equal(await c.authenticate(ALLOW), 0);
    await queued; // held while the token was refused, sent once it was accepted
    assert.equal(reported(rec, 'connected').length, 1);
    assert.equal(handshakes(server) - before, 2);
  });
});

describe('Custom', SUITE, () => {
  const seen: { token: string; address: string }[] = [];
  const expiry = nowS() + 3600;
  const server = startServer({
    Entitlement: 'Custom',
    authorize: async (token: string, { address }: { address: string }) => {
      seen.push({ token, address });
      if (token !== 'alice-token') return null;
      return { all: ['/custom/alice/*'], expiry };
    },
  });

  it("the application's hook decides: granted subjects work, others are refused, the expiry is the hook's", async () => {
    const { client: c, rec } = client(server, { token: 'alice-token' });
    await c.subscribe('/custom/alice/inbox', rec.handler).ready;
    await c.publish('/custom/alice/inbox', 'hi');
    await until('the message', () => rec.all.length === 1);
    assert.deepEqual(reported(rec, 'auth'), [{ state: 'ok', detail: String(expiry) }]);
    await assert.rejects(c.subscribe('/custom/bob/inbox', () => {}).ready, (e: StarlingError) => e.code === 'forbidden' && /by the token/.test(e.detail));
    await assert.rejects(c.publish('/custom/bob/inbox', 'x'), (e: StarlingError) => e.code === 'forbidden');
    assert.deepEqual(seen.at(-1), { token: 'alice-token', address: '127.0.0.1' });
  });

  it('a token the hook refuses when connecting: refreshToken gives another and the client connects with it', async () => {
    const { client: c, rec } = client(server, { token: 'mallory-token', refreshToken: () => 'alice-token' });
    await c.subscribe('/custom/alice/feed', rec.handler).ready;
    const e = reported(rec, 'error')[0];
    assert.equal(e?.code, 'auth');
    assert.match(e.detail, /refused the token \(refused by the application\); asking refreshToken/);
    assert.deepEqual(reported(rec, 'auth').map((a) => a.state), ['invalid', 'ok']);
    assert.deepEqual(reported(rec, 'connected').length, 1);
    assert.deepEqual(seen.slice(-2).map((s) => s.token), ['mallory-token', 'alice-token']);
  });
});

describe('the order of the commands (scripted server)', SUITE, () => {
  it('AUTH <token> is the first command (not on the URL); subscriptions and publishes wait for AUTH ok', async () => {
    const server = await ScriptedServer.start({ autoPong: false });
    const { client: c, rec } = client(server, { token: 'tok-1' });
    c.subscribe('/o/s', rec.handler);
    const published = c.publish('/o/s', 'p');
    const conn = await server.accept();
    assert.equal(conn.url, '/');
    await conn.expect('AUTH tok-1');
    const barrier = await conn.expect(/^PING \S+$/);
    await sleep(100);
    assert.deepEqual(conn.commands.pending, [], 'nothing before the answer');
    assert.equal(c.connected, false);
    conn.send('AUTH ok 0');
    conn.send(`PONG ${barrier.slice(5)}`);
    await conn.expect('SUB /o/s#0');
    await conn.pong();
    const id = (await conn.expect(/^PUB \/o\/s \S+\np$/)).split(/[ \n]/)[2];
    conn.send(`ACK ${id}`);
    await published;
    assert.deepEqual(reported(rec, 'connected').length, 1);
  });

  it('after AUTH expired and 1008, authenticate() called from the error listener reconnects with the new token', async () => {
    const server = await ScriptedServer.start();
    const { client: c, rec } = client(server, { token: 'tok-old' });
    c.on('error', (e) => {
      if (e.code === 'auth') void c.authenticate('tok-new');
    });
    const first = await server.accept();
    await first.expect('AUTH tok-old');
    first.send('AUTH ok 1900000000');
    await waitFor(rec, 'connected');
    first.send('AUTH expired');
    first.close(1008);
    const second = await server.accept();
    await second.expect('AUTH tok-new');
    second.send('AUTH ok 1900000600');
    await until('the second connection', () => reported(rec, 'connected').length === 2);
    assert.deepEqual(reported(rec, 'error').map((e) => e.code), ['auth']);
    assert.equal(reported(rec, 'disconnected')[0].code, 1008);
  });

  it('the ERR of a revoked subscription is told apart from a publish in flight', async () => {
    const server = await ScriptedServer.start({ autoPong: false });
    const { client: c, rec } = client(server);
    const conn = await server.accept();
    const sub = c.subscribe('/o/r', rec.handler);
    await conn.expect('SUB /o/r#0');
    conn.send('SYNC /o/r e1:0');
    await conn.pong();
    await sub.ready;
    const renewed = c.authenticate('tok-2');
    const published = c.publish('/o/r', 'x');
    await conn.expect('AUTH tok-2');
    const barrier = (await conn.expect(/^PING \S+$/)).slice(5);
    const id = (await conn.expect(/^PUB \/o\/r \S+\nx$/)).split(/[ \n]/)[2];
    conn.send('AUTH ok 1900000000');
    conn.send('ERR forbidden /o/r: not permitted by the renewed token');
    conn.send(`PONG ${barrier}`);
    conn.send(`ERR forbidden ${id} /o/r: not permitted by the token`);
    assert.equal(await renewed, 1900000000);
    await assert.rejects(published, (e: StarlingError) => e.code === 'forbidden' && e.subject === '/o/r');
    const e = await waitFor(rec, 'error');
    assert.deepEqual([e.code, e.subject], ['forbidden', '/o/r']);
    c.subscribe('/o/r', () => {}); // removed from the client: no "already subscribed"
    await conn.expect('SUB /o/r#0');
  });
});
