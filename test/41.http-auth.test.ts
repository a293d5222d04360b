// Tokens on HTTP requests (PROTOCOL.md "HTTP transport", docs/http.md "Tokens"): POST /publish and GET /history
// run under the token they carry — `Authorization: Bearer <t>` or `token=` — and never under an earlier request's
// on the same kept-alive connection (a proxy may carry several users over one upstream connection). Real servers
// (Entitlement = JWT, Basic, None), raw sockets, pipelined requests; tokens signed here (test/entitlement-kit),
// independently of the code under test. A WebSocket and an event-stream canary, subscribed throughout, must
// receive exactly the publishes that were answered 200, in order.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from '../src/index';
import type { HttpResponse } from './helpers';
import { Raw, startServer, upgradeRequest, waitFor } from './helpers';
import { EClient, HsIssuer } from './entitlement-kit';
import { SseStream, json, publishRequest } from './http-kit';

const SUITE = { timeout: 90_000 };
const ANON = 'not permitted without a token; send AUTH <token> first';
const BY_TOKEN = 'not permitted by the token';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A publish with a Bearer token (scheme as given), or none. */
function pub(subject: string, body: string, o: { bearer?: string; scheme?: string; query?: string; headers?: Record<string, string> } = {}): Buffer {
  const headers: Record<string, string> = { ...(o.bearer ? { Authorization: `${o.scheme ?? 'Bearer'} ${o.bearer}` } : {}), ...o.headers };
  const req = publishRequest(subject, body, { type: 'text/plain', headers });
  if (!o.query) return req;
  const text = req.toString('latin1');
  return Buffer.from(text.replace(' HTTP/1.1\r\n', `&${o.query} HTTP/1.1\r\n`), 'latin1');
}

/** A GET /history request. */
function history(subject: string, n: number, o: { bearer?: string; query?: string } = {}): string {
  const auth = o.bearer ? `Authorization: Bearer ${o.bearer}\r\n` : '';
  return `GET /history?subject=${encodeURIComponent(subject)}&n=${n}${o.query ? `&${o.query}` : ''} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`;
}

/** The change of total counters while `fn` runs. */
async function deltas(server: Server, names: string[], fn: () => Promise<void>): Promise<Record<string, number>> {
  const before0 = server.stats().total;
  for (const n of names) assert.ok(n in before0, `the addon has no counter named ${n}`);
  await fn();
  const after0 = server.stats().total;
  return Object.fromEntries(names.map((n) => [n, after0[n] - before0[n]]));
}

function assertRefused(res: HttpResponse, status: number, error: string, detail: RegExp | string): void {
  assert.equal(res.status, status, `${res.statusLine} ${res.body}`);
  const body = json(res);
  assert.equal(body.ok, false);
  assert.equal(body.error, error, res.body);
  if (typeof detail === 'string') assert.equal(body.detail, detail, res.body);
  else assert.match(body.detail ?? '', detail, res.body);
  if (status === 401) assert.equal(res.headers['www-authenticate'], 'Bearer', 'a 401 names the Bearer scheme');
}

/**
 * A WebSocket subscriber and an event stream, both entitled to subscribe to everything under `prefixes`, that
 * record every message payload they receive; `check` asserts both received exactly `expected`, in order.
 */
class Canaries {
  readonly ws: EClient;
  readonly sse: SseStream;
  readonly wsSeen: string[] = [];
  readonly sseSeen: string[] = [];
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  private constructor(ws: EClient, sse: SseStream) {
    this.ws = ws;
    this.sse = sse;
  }

  static async open(server: Server, token: string, subjects: string[]): Promise<Canaries> {
    const ws = await EClient.open(server);
    assert.match(await ws.auth(token), /^AUTH ok \d+$/);
    await ws.command(`SUB ${subjects.join(' ')}`);
    const before0 = server.stats().total.subscriptions;
    const sse = await SseStream.open(server, `?${subjects.map((s) => `subject=${encodeURIComponent(s)}`).join('&')}&token=${token}`);
    const auth = await sse.next('the auth event');
    assert.equal(auth.type, 'auth');
    assert.match(auth.data, /^ok \d+$/);
    await waitFor('the stream\'s subscriptions', () => server.stats().total.subscriptions === before0 + subjects.length);
    const c = new Canaries(ws, sse);
    c.loops.push(c.readWs(), c.readSse());
    return c;
  }

  private async readWs(): Promise<void> {
    while (!this.stopped) {
      let m: string;
      try {
        m = await this.ws.next('a canary message', 500);
      } catch {
        continue;
      }
      // (Anything but a message is recorded as such, and fails the comparison in check().)
      this.wsSeen.push(/^MSG /.test(m) ? m.slice(m.indexOf('\n') + 1) : `not a message: ${m}`);
    }
  }

  private async readSse(): Promise<void> {
    while (!this.stopped) {
      let e;
      try {
        e = await this.sse.next('a canary event');
      } catch {
        if (this.stopped) return;
        continue;
      }
      this.sseSeen.push(e.type === 'message' ? e.data : `not a message: ${JSON.stringify(e)}`);
    }
  }

  /** Waits until both received `expected.length` messages, then checks them. */
  async check(expected: string[]): Promise<void> {
    await waitFor(`${expected.length} messages at both canaries`, () => this.wsSeen.length >= expected.length && this.sseSeen.length >= expected.length,
      () => ({ ws: this.wsSeen, sse: this.sseSeen }));
    await sleep(50); // (anything more would be a publish that should have been refused)
    assert.deepEqual(this.wsSeen, expected, 'the WebSocket canary: every accepted publish once, in order, nothing else');
    assert.deepEqual(this.sseSeen, expected, 'the event-stream canary: every accepted publish once, in order, nothing else');
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.sse.close();
    await Promise.allSettled(this.loops);
    await this.ws.close();
  }
}

describe('tokens on POST /publish and GET /history (Entitlement = JWT)', SUITE, () => {
  const issuer = new HsIssuer();
  let server: Server;
  let canaries: Canaries;
  const accepted: string[] = []; // every publish to /ha/* or /hb/* answered 200, in order
  const A = issuer.token({ pub: ['/ha/*'], sub: ['/ha/*'] });
  const B = issuer.token({ pub: ['/hb/*'] });
  const SUB_ONLY = issuer.token({ sub: ['/ha/*', '/hb/*'] });
  const CANARY = issuer.token({ sub: ['/ha/*', '/hb/*'] }, 3600, { jti: 'canary' });

  before(async () => {
    server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64, 'HTTP.AllowOrigins': 'https://app.example' });
    canaries = await Canaries.open(server, CANARY, ['/ha/c', '/hb/c']);
  });
  after(async () => {
    await canaries.close();
  });

  // (Each test keeps to 4 token decisions per connection: more in a second are 429, tested on their own below.)
  it('a granted Bearer token publishes (200); no token 403; a bad signature or an expired token 401; the connection is kept', async () => {
    const raw = await Raw.connect(server);
    raw.write(pub('/ha/c', 'a1', { bearer: A }));
    assert.deepEqual(json(await raw.response()), { ok: true }, 'the token grants it');
    accepted.push('a1');
    raw.write(pub('/ha/c', 'anonymous'));
    assertRefused(await raw.response(), 403, 'forbidden', `/ha/c: ${ANON}`);
    const [h, p] = A.split('.');
    raw.write(pub('/ha/c', 'forged', { bearer: `${h}.${p}.${Buffer.alloc(32).toString('base64url')}` }));
    assertRefused(await raw.response(), 401, 'unauthorized', 'bad signature');
    raw.write(pub('/ha/c', 'expired', { bearer: issuer.token({ all: ['/*'] }, -60) }));
    assertRefused(await raw.response(), 401, 'unauthorized', 'expired');
    raw.write(pub('/ha/c', 'a2', { bearer: A, scheme: 'bEaReR' }));
    assert.equal((await raw.response()).status, 200, 'the scheme is case-insensitive; still the same connection');
    accepted.push('a2');
    raw.write(pub('/hb/c', 'not-granted', { bearer: A }));
    assertRefused(await raw.response(), 403, 'forbidden', `/hb/c: ${BY_TOKEN}`);
    assert.equal(raw.closed, false, 'kept alive throughout');
    raw.destroy();
    const other = await Raw.connect(server);
    other.write(pub('/ha/c', 'other-issuer', { bearer: new HsIssuer().token({ all: ['/*'] }) }));
    assertRefused(await other.response(), 401, 'unauthorized', 'bad signature');
    other.destroy();
    await canaries.check(accepted);
  });

  it('each pipelined request on one connection runs under its own token: A, none, A, B, a refused one, B, none', async () => {
    const raw = await Raw.connect(server);
    const requests: [Buffer, number, string?][] = [
      [pub('/ha/c', 'p1', { bearer: A }), 200, 'p1'],
      [pub('/ha/c', 'p2-none'), 403], // no token: anonymous, although A was in force
      [pub('/ha/c', 'p3', { query: `token=${encodeURIComponent(A)}` }), 200, 'p3'],
      [pub('/ha/c', 'p4-B', { bearer: B }), 403], // B grants /hb/* only
      [pub('/hb/c', 'p5', { bearer: B }), 200, 'p5'],
      [pub('/hb/c', 'p6-bad', { bearer: `${B}x` }), 401], // refused: not run at all
      [pub('/hb/c', 'p7', { bearer: B }), 200, 'p7'], // (B stayed in force: no decision)
      [pub('/hb/c', 'p8-none'), 403],
      [pub('/ha/c', 'p9-none'), 403],
    ];
    raw.write(Buffer.concat(requests.map(([r]) => r)));
    for (const [i, [, status, payload]] of requests.entries()) {
      const res = await raw.response();
      assert.equal(res.status, status, `request ${i + 1}: ${res.statusLine} ${res.body}`);
      if (payload) accepted.push(payload);
    }
    raw.destroy();
    await canaries.check(accepted);
  });

  it('a token kept on a connection crosses to the control plane once, however many requests carry it', async () => {
    const raw = await Raw.connect(server);
    const n = 30;
    const d = await deltas(server, ['auth_decisions', 'auth_ok'], async () => {
      raw.write(Buffer.concat(Array.from({ length: n }, (_, i) => pub('/ha/c', `same${i}`, { bearer: A }))));
      for (let i = 0; i < n; i++) assert.equal((await raw.response()).status, 200, `request ${i}`);
    });
    for (let i = 0; i < n; i++) accepted.push(`same${i}`);
    assert.deepEqual(d, { auth_decisions: 1, auth_ok: 1 });
    raw.destroy();
    await canaries.check(accepted);
  });

  it('GET /history needs a token granting sub (403 without, 403 with a publish-only one, 200 with; token= too)', async () => {
    const raw = await Raw.connect(server);
    raw.write(pub('/ha/h', 'h1', { bearer: A }));
    assert.equal((await raw.response()).status, 200);
    raw.write(history('/ha/h', 5));
    assertRefused(await raw.response(), 403, 'forbidden', `/ha/h: ${ANON}`);
    raw.write(history('/ha/h', 5, { bearer: B }));
    assertRefused(await raw.response(), 403, 'forbidden', `/ha/h: ${BY_TOKEN}`);
    raw.write(history('/ha/h', 5, { bearer: SUB_ONLY }) + history('/ha/h', 5, { query: `token=${encodeURIComponent(A)}` }) + history('/ha/h', 5));
    for (const what of ['Bearer', 'token=']) {
      const res = await raw.response();
      assert.equal(res.status, 200, `${what}: ${res.body}`);
      const h = JSON.parse(res.body);
      assert.deepEqual(h.messages.map((m: { text: string }) => m.text), ['h1']);
    }
    assertRefused(await raw.response(), 403, 'forbidden', `/ha/h: ${ANON}`);
    raw.destroy();
    const other = await Raw.connect(server);
    other.write(history('/ha/h', 5, { bearer: 'not.a.jwt' }));
    assertRefused(await other.response(), 401, 'unauthorized', /./);
    other.destroy();
  });

  it('Bearer and token= must agree (400 otherwise); a malformed Authorization is 400; nothing is published', async () => {
    const raw = await Raw.connect(server);
    raw.write(pub('/ha/c', 'disagree', { bearer: A, query: `token=${encodeURIComponent(B)}` }));
    assertRefused(await raw.response(), 400, 'bad-request', /different tokens/);
    raw.write(pub('/ha/c', 'agree', { bearer: A, query: `token=${encodeURIComponent(A)}` }));
    assert.equal((await raw.response()).status, 200);
    accepted.push('agree');
    raw.write(pub('/ha/c', 'basic', { bearer: Buffer.from('u:p').toString('base64'), scheme: 'Basic' }));
    assertRefused(await raw.response(), 400, 'bad-request', /Bearer/);
    raw.write(pub('/ha/c', 'twice', { query: `token=${encodeURIComponent(A)}&token=${encodeURIComponent(A)}` }));
    assertRefused(await raw.response(), 400, 'bad-request', /one token/);
    raw.write(pub('/ha/c', 'empty', { headers: { Authorization: 'Bearer' } }));
    assertRefused(await raw.response(), 400, 'bad-request', /needs a token/);
    raw.write(history('/ha/c', 1, { bearer: A, query: `token=${encodeURIComponent(B)}` }));
    assertRefused(await raw.response(), 400, 'bad-request', /different tokens/);
    raw.write(pub('/ha/c', 'after', { bearer: A }));
    assert.equal((await raw.response()).status, 200, 'still served');
    accepted.push('after');
    raw.destroy();
    await canaries.check(accepted);
  });

  it('a connection changing tokens faster than 4 a second is answered 429 (Retry-After: 1), never a wrong decision', async () => {
    const raw = await Raw.connect(server);
    const n = 12;
    const tokens = Array.from({ length: n }, (_, i) => issuer.token({ pub: ['/ha/*'] }, 3600, { jti: `t${i}` }));
    raw.write(Buffer.concat(tokens.map((t, i) => pub('/ha/c', `r${i}`, { bearer: t }))));
    let refused = 0;
    for (let i = 0; i < n; i++) {
      const res = await raw.response();
      if (res.status === 429) {
        refused++;
        assert.equal(res.headers['retry-after'], '1');
        assertRefused(res, 429, 'too-many-tokens', /one connection per identity/);
      } else {
        assert.equal(res.status, 200, `request ${i}: ${res.statusLine} ${res.body}`);
        accepted.push(`r${i}`);
      }
    }
    assert.ok(refused >= n - 8, `at most 4 decisions a second: ${refused} of ${n} refused`);
    // The token in force still serves at once, and the count restarts within a second or so.
    await sleep(2100);
    raw.write(pub('/ha/c', 'later', { bearer: A }));
    assert.equal((await raw.response()).status, 200, 'a new token is decided again after a pass');
    accepted.push('later');
    raw.destroy();
    await canaries.check(accepted);
  });

  it('the token in force, once expired, does not authorize the next request: it is decided again (401 expired)', async () => {
    const raw = await Raw.connect(server);
    const short = issuer.token({ pub: ['/ha/*'] }, 2, { jti: 'short' });
    raw.write(pub('/ha/c', 'before-expiry', { bearer: short }));
    assert.equal((await raw.response()).status, 200);
    accepted.push('before-expiry');
    await sleep(3200);
    raw.write(pub('/ha/c', 'after-expiry', { bearer: short }));
    assertRefused(await raw.response(), 401, 'unauthorized', 'expired');
    raw.write(pub('/ha/c', 'fresh', { bearer: A }));
    assert.equal((await raw.response()).status, 200, 'the connection goes on with a valid token');
    accepted.push('fresh');
    raw.destroy();
    await canaries.check(accepted);
  });

  it('a WebSocket upgraded on a connection whose last request had a token starts anonymous', async () => {
    const raw = await Raw.connect(server);
    raw.write(pub('/ha/c', 'pre-upgrade', { bearer: A }));
    assert.equal((await raw.response()).status, 200);
    accepted.push('pre-upgrade');
    raw.write(upgradeRequest());
    assert.equal((await raw.response()).status, 101);
    raw.command('PUB /ha/c w1\nas-websocket');
    assert.equal(await raw.nextText(), `ERR forbidden w1 /ha/c: ${ANON}`);
    raw.destroy();
    await canaries.check(accepted);
  });

  it('an event stream opened after a request with a token runs under its own token= only', async () => {
    const raw = await Raw.connect(server);
    raw.write(history('/ha/c', 0, { bearer: A }));
    assert.equal((await raw.response()).status, 200);
    raw.write('GET /sse?subject=/ha/c HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await raw.head()).status, 200);
    const want = `event: err\ndata: forbidden /ha/c: ${ANON}\n`;
    let text = '';
    while (!text.includes('event: err')) text += (await raw.take('the refusal event')).toString();
    assert.ok(text.includes(want), `the stream is anonymous: ${JSON.stringify(text)}`);
    raw.destroy();
  });

  it('CORS: a preflight asking for Authorization is answered 204, and the cross-origin publish with a token is served', async () => {
    const raw = await Raw.connect(server);
    raw.write('OPTIONS /publish HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n');
    const pre = await raw.response();
    assert.equal(pre.status, 204);
    assert.match(pre.headers['access-control-allow-headers'], /Authorization/);
    raw.write(pub('/ha/c', 'cors', { bearer: A, headers: { Origin: 'https://app.example' } }));
    const res = await raw.response();
    assert.equal(res.status, 200, res.body);
    assert.equal(res.headers['access-control-allow-origin'], 'https://app.example');
    accepted.push('cors');
    raw.destroy();
    await canaries.check(accepted);
  });
});

describe('tokens on HTTP requests in the other modes', SUITE, () => {
  it('Basic: the allow-token as a Bearer token publishes; without it 403; another 401', async () => {
    const server = startServer({ Entitlement: 'Basic', 'Entitlement.AllowToken': 'open-sesame-0123456789' });
    const raw = await Raw.connect(server);
    raw.write(Buffer.concat([pub('/b/a', 'x', { bearer: 'open-sesame-0123456789' }), pub('/b/a', 'y'), pub('/b/a', 'z', { bearer: 'wrong' })]));
    assert.equal((await raw.response()).status, 200);
    assertRefused(await raw.response(), 403, 'forbidden', /b\/a/);
    assertRefused(await raw.response(), 401, 'unauthorized', 'not the allow-token');
    raw.destroy();
  });

  it('None: tokens are not looked at (no decision, even a malformed or disagreeing one is served)', async () => {
    const server = startServer();
    const raw = await Raw.connect(server);
    const d = await deltas(server, ['auth_decisions', 'http_errors'], async () => {
      raw.write(Buffer.concat([pub('/n/a', 'x', { bearer: 'anything' }), pub('/n/a', 'y', { bearer: 'a', query: 'token=b' }), pub('/n/a', 'z', { scheme: 'Basic', bearer: 'dTpw' })]));
      for (let i = 0; i < 3; i++) assert.equal((await raw.response()).status, 200, `request ${i}`);
    });
    assert.deepEqual(d, { auth_decisions: 0, http_errors: 0 });
    raw.destroy();
  });
});
