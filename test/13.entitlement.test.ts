// Entitlement end to end (PROTOCOL.md "Entitlement"; src/entitlement/*; native/pubsub/dispatch.cc): real servers,
// real sockets, `ws` clients. Every token is made here, independently of the code under test (test/entitlement-kit).
// Each refused token must get its documented `AUTH invalid <detail>`, grant nothing, and leave the connection usable.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import type { Server } from '../src/index';
import { OP, Raw, frame, perWorkgroup, startServer, upgradeRequest, waitFor } from './helpers';
import {
  EClient,
  HsIssuer,
  assertServesWith,
  ecSigner,
  entitledClient,
  hmacSigner,
  msgSubject,
  nowS,
  part,
  rsaSigner,
  signJwt,
  spkiPem,
  tempFile,
  type Perms,
} from './entitlement-kit';

const SUITE = { timeout: 60_000 };
const ANON = 'not permitted without a token; send AUTH <token> first';
const BY_TOKEN = 'not permitted by the token';
const RENEWED = 'not permitted by the renewed token';
const ADDRESS = 'publishing is not allowed from this address (PublishAllowFromAddressList)';
const TOO_MANY = 'AUTH invalid too many AUTH commands (at most 4 a second); the token in force stays';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The change of total counters while `fn` runs. */
async function deltas(server: Server, names: string[], fn: () => Promise<void>): Promise<Record<string, number>> {
  const before = server.stats().total;
  for (const n of names) assert.ok(n in before, `the addon has no counter named ${n}`);
  await fn();
  const after = server.stats().total;
  return Object.fromEntries(names.map((n) => [n, after[n] - before[n]]));
}

/** Opens clients (one at a time) until one lands on workgroup `wg`; the others are closed. */
async function openOn(server: Server, wg: number, o: { token?: string } = {}): Promise<EClient> {
  for (let i = 0; i < 8; i++) {
    const before = perWorkgroup(server, 'accepted');
    const c = await EClient.open(server, o);
    const moved = perWorkgroup(server, 'accepted').map((v, k) => v - before[k]);
    if (moved[wg] === 1) return c;
    c.terminate();
  }
  return assert.fail(`no connection landed on workgroup ${wg} in 8 tries`);
}

// ---------------------------------------------------------------------------------------------------

describe('JWT (HS256, audience and issuer configured): the token matrix through the server', SUITE, () => {
  const AUD = 'starling';
  const ISS = 'https://issuer.test/';
  const issuer = new HsIssuer();
  const server = startServer({
    Entitlement: 'JWT',
    'Entitlement.JWT.Secret': issuer.base64,
    'Entitlement.JWT.Audience': AUD,
    'Entitlement.JWT.Issuer': ISS,
  });
  const GRANT: Perms = { sub: ['/m/*'], pub: ['/m/*'] };
  const reg = { aud: AUD, iss: ISS };
  const claims = (extra: object = {}): Record<string, unknown> => ({ exp: nowS() + 3600, ...reg, permissions: GRANT, ...extra });
  const good = () => issuer.raw(claims());
  const other = new HsIssuer();
  const tamper = (jwt: string, payload: object): string => {
    const [h, , s] = jwt.split('.');
    return `${h}.${part(payload)}.${s}`;
  };
  const without = (name: string): Record<string, unknown> => {
    const c = claims();
    delete c[name];
    return c;
  };

  /**
   * Presents `bad` on a fresh connection: it must be answered exactly `AUTH invalid <detail>`, counted as denied,
   * and grant nothing; then the same connection presents a good token and subscribes and publishes.
   */
  async function refusedThenUsable(bad: string, detail: string): Promise<void> {
    const c = await EClient.open(server);
    const d = await deltas(server, ['auth_denied', 'auth_ok', 'denied_subscribes', 'denied_publishes'], async () => {
      assert.equal(await c.auth(bad), `AUTH invalid ${detail}`);
      // The refused token granted nothing: still anonymous.
      assert.deepEqual(await c.replies('SUB /m/1', 'PUB /m/1 p0\nx'), [`ERR forbidden /m/1: ${ANON}`, `ERR forbidden p0 /m/1: ${ANON}`]);
      // And the connection is usable: a good token is accepted and used.
      assert.match(await c.auth(good()), /^AUTH ok \d+$/);
      assert.deepEqual(await c.replies('SUB /m/1', 'PUB /m/2 p1\nx'), ['ACK p1']);
    });
    assert.deepEqual(d, { auth_denied: 1, auth_ok: 1, denied_subscribes: 1, denied_publishes: 1 });
    await c.close();
  }

  it('accepts a valid token: AUTH ok <exp>, and the permissions are exactly the claim\'s', async () => {
    const exp = nowS() + 1234;
    const c = await EClient.open(server);
    assert.equal(await c.auth(issuer.raw(claims({ exp }))), `AUTH ok ${exp}`);
    assert.deepEqual(await c.replies('SUB /m/a /n/a /m', 'PUB /m/b 1\nx', 'PUB /n/b 2\nx', 'PUB /m 3\nx'), [
      `ERR forbidden /n/a: ${BY_TOKEN}`,
      `ERR forbidden /m: ${BY_TOKEN}`,
      'ACK 1',
      `ERR forbidden 2 /n/b: ${BY_TOKEN}`,
      `ERR forbidden 3 /m: ${BY_TOKEN}`,
    ]);
    // An `aud` array that contains the audience is accepted too.
    assert.match(await c.auth(issuer.raw(claims({ aud: ['other', AUD] }))), /^AUTH ok \d+$/);
    await c.close();
  });

  const cases: [string, () => string, string][] = [
    ['an expired token', () => issuer.raw(claims({ exp: nowS() - 60 })), 'expired'],
    ['a token not yet valid (nbf in an hour)', () => issuer.raw(claims({ nbf: nowS() + 3600 })), 'not yet valid'],
    ['a token signed with another secret', () => other.raw(claims()), 'bad signature'],
    ['a token whose payload was changed to grant /* (signature kept)', () => tamper(good(), claims({ permissions: { all: ['/*'] } })), 'bad signature'],
    ['a token whose signature was cut off', () => good().replace(/\.[^.]*$/, '.'), 'bad signature'],
    ['alg "none", unsigned', () => `${part({ alg: 'none', typ: 'JWT' })}.${part(claims({ permissions: { all: ['/*'] } }))}.`, 'algorithm not allowed'],
    ['alg "none" with an HMAC signature', () => signJwt('HS256', hmacSigner(issuer.secret), claims(), { alg: 'none' }), 'algorithm not allowed'],
    ['alg "NONE"', () => `${part({ alg: 'NONE' })}.${part(claims())}.`, 'algorithm not allowed'],
    ['HS512 (the 32-byte secret allows HS256 only)', () => signJwt('HS512', hmacSigner(issuer.secret), claims()), 'algorithm not allowed'],
    ['RS256 header on an HMAC server', () => signJwt('HS256', hmacSigner(issuer.secret), claims(), { alg: 'RS256' }), 'algorithm not allowed'],
    ['a header with an unknown critical extension', () => issuer.raw(claims(), { alg: 'HS256', crit: ['x-starling'], 'x-starling': 1 }), 'not supported'],
    ['no exp claim', () => issuer.raw(without('exp')), 'no exp claim'],
    ['exp as a string', () => issuer.raw(claims({ exp: String(nowS() + 3600) })), 'exp claim: not a number'],
    ['a wrong audience', () => issuer.raw(claims({ aud: 'someone-else' })), 'audience'],
    ['an aud array without the audience', () => issuer.raw(claims({ aud: ['a', 'b'] })), 'audience'],
    ['no aud claim', () => issuer.raw(without('aud')), 'audience (no aud claim)'],
    ['a wrong issuer', () => issuer.raw(claims({ iss: 'https://evil.test/' })), 'issuer'],
    ['no iss claim', () => issuer.raw(without('iss')), 'issuer (no iss claim)'],
    ['garbage', () => 'garbage', 'malformed'],
    ['two parts', () => good().split('.').slice(0, 2).join('.'), 'malformed'],
    ['four parts', () => `${good()}.AAAA`, 'malformed'],
    ['a part with characters outside base64url', () => good().replace('.', '.+/='), 'malformed'],
    ['a header that is not JSON', () => `${Buffer.from('not json').toString('base64url')}.${part(claims())}.AAAA`, 'malformed'],
    ['a signed payload that is not JSON', () => issuer.raw('this is not json'), 'malformed'],
    ['a signed payload that is a JSON array', () => issuer.raw('[1,2,3]'), 'malformed'],
    ['8192 bytes of garbage (the largest size that crosses to the verifier)', () => 'x'.repeat(8192), 'malformed'],
    ['a token of 8193 bytes', () => 'x'.repeat(8193), 'too large (8193 bytes, at most 8192)'],
    ['a token of 60000 bytes', () => 'A.b.c'.repeat(12000), 'too large (60000 bytes, at most 8192)'],
  ];
  for (const [what, make, detail] of cases) {
    it(`refuses ${what}: AUTH invalid ${detail}; nothing granted, the connection stays usable`, () => refusedThenUsable(make(), detail));
  }

  const permissionCases: [string, unknown, string][] = [
    ['an array', ['/m/1'], 'not an object (array)'],
    ['a string', '/*', 'not an object (string)'],
    ['null', null, 'not an object (null)'],
    ['an unknown key', { admin: ['/*'] }, 'unknown key "admin" (expected sub, pub, all)'],
    ['sub not an array', { sub: '/m/1' }, 'sub is not an array'],
    ['pub with a number', { pub: [7] }, 'pub[0] is not a string'],
    ['a pattern without the leading /', { all: ['/m/1', 'm/2'] }, 'all[1] "m/2" does not begin with /'],
    ['a wildcard before the last segment', { sub: ['/m/*/x'] }, 'sub[0] "/m/*/x" has segments after a wildcard (it already grants them all)'],
    ['a {name} wildcard before the last segment', { sub: ['/m/{id}/x'] }, 'sub[0] "/m/{id}/x" has segments after a wildcard (it already grants them all)'],
    ['* inside a segment', { pub: ['/m/a*'] }, 'pub[0] "/m/a*" has * inside a segment (only a whole segment * is a wildcard)'],
    ['an empty segment', { sub: ['/m//a'] }, 'sub[0] "/m//a" has an empty segment'],
    ['a space', { sub: ['/m/a b'] }, 'sub[0] "/m/a b" has a character outside printable ASCII 0x21-0x7E'],
    ['a non-ASCII character', { sub: ['/m/é'] }, 'sub[0] "/m/?" has a character outside printable ASCII 0x21-0x7E'],
    ['a pattern over 255 bytes', { sub: [`/${'a'.repeat(300)}`] }, `sub[0] "/${'a'.repeat(15)}..." is longer than 255 bytes`],
    ['1001 entries', { sub: Array(600).fill('/s'), all: Array(401).fill('/a') }, '1001 entries, at most 1000'],
  ];
  for (const [what, permissions, detail] of permissionCases) {
    it(`refuses a permissions claim with ${what}: AUTH invalid permissions claim: ${detail}`, () =>
      refusedThenUsable(issuer.raw(claims({ permissions })), `permissions claim: ${detail}`));
  }

  it('a token of 8193 bytes is answered without crossing to the control plane (no decision is made)', async () => {
    const c = await EClient.open(server);
    const d = await deltas(server, ['auth_decisions', 'auth_denied'], async () => {
      assert.equal(await c.auth('y'.repeat(8193)), 'AUTH invalid too large (8193 bytes, at most 8192)');
    });
    assert.deepEqual(d, { auth_decisions: 0, auth_denied: 1 });
    await c.close();
  });

  it('a {…} segment that the JWT layer takes as a literal subject grants only that subject', async () => {
    // jwt.ts: a wildcard segment is `*` or /^\{[^{}]+\}$/; "{a{b}" is neither, so the claim passes as the exact
    // subject /w/{a{b}. The native matcher must agree (before 9c19bc4 it compiled it as a wildcard for all of /w/).
    for (const pattern of ['/w/{a{b}', '/w/{a}b}']) {
      const c = await EClient.open(server);
      const answer = await c.auth(issuer.raw(claims({ permissions: { sub: [pattern] } })));
      if (answer.startsWith('AUTH ok ')) {
        assert.deepEqual(await c.replies(`SUB ${pattern}`, 'SUB /w/other /w/x/y'), [
          `ERR forbidden /w/other: ${BY_TOKEN}`,
          `ERR forbidden /w/x/y: ${BY_TOKEN}`,
        ], `the pattern ${pattern}, accepted as a literal subject, granted other subjects`);
      } else {
        assert.match(answer, /^AUTH invalid permissions/, `a refusal of ${pattern} must name the permissions`);
      }
      await c.close();
    }
  });

  it('after the matrix: nothing waits, decisions never outnumber answers, and the server still serves', async () => {
    const t = server.stats().total;
    assert.ok(t.auth_ok > 0 && t.auth_denied > 0);
    assert.equal(t.auth_waiting, 0);
    assert.ok(t.auth_decisions <= t.auth_ok + t.auth_denied, JSON.stringify(t));
    await assertServesWith(server, good(), '/m/health');
  });
});

// ---------------------------------------------------------------------------------------------------

describe('JWT with public keys (Entitlement.JWT.PublicKey, a PEM file)', SUITE, () => {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaOther = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const p256 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const p256Other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rsaPem = spkiPem(rsa.publicKey);
  const ecPem = spkiPem(p256.publicKey);
  const rsServer = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.PublicKey': tempFile('rsa.pem', rsaPem) });
  const esServer = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.PublicKey': tempFile('ec.pem', ecPem) });
  const rs256Only = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.PublicKey': tempFile('rsa.pem', rsaPem), 'Entitlement.JWT.Algorithms': 'RS256' });
  const claims = (extra: object = {}) => ({ exp: nowS() + 600, permissions: { all: ['/k/*'] }, ...extra });

  async function answer(server: Server, jwt: string): Promise<string> {
    const c = await EClient.open(server);
    const a = await c.auth(jwt);
    if (a.startsWith('AUTH ok')) await c.command('SUB /k/1', 'PUB /k/2\nx'); // the grant is in force
    else assert.deepEqual(await c.replies('SUB /k/1'), [`ERR forbidden /k/1: ${ANON}`]);
    await c.close();
    return a;
  }

  it('RS256 and PS256 tokens signed with the private key are accepted', async () => {
    const exp = nowS() + 777;
    assert.equal(await answer(rsServer, signJwt('RS256', rsaSigner(rsa.privateKey), claims({ exp }))), `AUTH ok ${exp}`);
    const ps = signJwt('PS256', (alg, input) =>
      crypto.sign('sha256', Buffer.from(input), { key: rsa.privateKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }), claims({ exp }));
    assert.equal(await answer(rsServer, ps), `AUTH ok ${exp}`);
    assert.equal(await answer(rs256Only, ps), 'AUTH invalid algorithm not allowed', 'Entitlement.JWT.Algorithms = RS256 refuses PS256');
  });

  it('ES256 tokens are accepted by the P-256 server', async () => {
    const exp = nowS() + 555;
    assert.equal(await answer(esServer, signJwt('ES256', ecSigner(p256.privateKey), claims({ exp }))), `AUTH ok ${exp}`);
  });

  it('HS/RS confusion: HS256 "signed" with the PEM text (or its DER bytes) as the secret is refused', async () => {
    for (const server of [rsServer, esServer]) {
      const pem = server === rsServer ? rsaPem : ecPem;
      const der = crypto.createPublicKey(pem).export({ type: 'spki', format: 'der' });
      for (const secret of [pem, Buffer.from(pem), der, pem.trim()]) {
        const forged = signJwt('HS256', hmacSigner(secret), claims({ permissions: { all: ['/*'] } }));
        assert.equal(await answer(server, forged), 'AUTH invalid algorithm not allowed');
      }
    }
  });

  it('wrong keys and wrong algorithm families are refused', async () => {
    assert.equal(await answer(rsServer, signJwt('RS256', rsaSigner(rsaOther.privateKey), claims())), 'AUTH invalid bad signature');
    assert.equal(await answer(rsServer, signJwt('ES256', ecSigner(p256.privateKey), claims())), 'AUTH invalid algorithm not allowed');
    assert.equal(await answer(esServer, signJwt('ES256', ecSigner(p256Other.privateKey), claims())), 'AUTH invalid bad signature');
    assert.equal(await answer(esServer, signJwt('RS256', rsaSigner(rsa.privateKey), claims())), 'AUTH invalid algorithm not allowed');
    assert.equal(await answer(esServer, `${part({ alg: 'none' })}.${part(claims())}.`), 'AUTH invalid algorithm not allowed');
    // ES256 signature in DER form instead of the JWS raw r||s form.
    const der = signJwt('ES256', (_a, input) => crypto.sign('sha256', Buffer.from(input), p256.privateKey), claims());
    assert.equal(await answer(esServer, der), 'AUTH invalid bad signature');
  });
});

// ---------------------------------------------------------------------------------------------------

describe('a small MaxMessageSize does not shut out tokens', SUITE, () => {
  const issuer = new HsIssuer();
  const server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64, MaxMessageSize: 512 });

  it('an AUTH longer than MaxMessageSize with a valid token is accepted; one over 8192 bytes is answered, not closed', async () => {
    const patterns = Array.from({ length: 150 }, (_, i) => `/big/${i}/*`);
    const jwt = issuer.token({ sub: patterns });
    assert.ok(jwt.length > 2048 && jwt.length < 8192, `token of ${jwt.length} bytes`);
    const c = await EClient.open(server);
    assert.match(await c.auth(jwt), /^AUTH ok \d+$/);
    await c.command('SUB /big/149/x');
    assert.equal(await c.auth(`${jwt}${'A'.repeat(8193 - jwt.length)}`), 'AUTH invalid too large (8193 bytes, at most 8192)');
    await c.command('SUB /big/7/y'); // the token in force stays
    await c.close();
  });
});

// ---------------------------------------------------------------------------------------------------

describe('Basic: anyone subscribes, publishing needs the allow-token', SUITE, () => {
  const ALLOW = 'allow-0123456789abcdef-!~';
  const server = startServer({ Entitlement: 'Basic', 'Entitlement.AllowToken': ALLOW });

  it('anonymous subscribe works, anonymous publish is forbidden, a wrong allow-token is refused, the right one lets it publish', async () => {
    const sub = await EClient.open(server);
    await sub.command('SUB /b/x /b/y/z');
    const pub = await EClient.open(server);
    assert.deepEqual(await pub.replies('PUB /b/x p1\nhello'), [`ERR forbidden p1 /b/x: ${ANON}`]);
    assert.equal(await pub.auth(`${ALLOW}x`), 'AUTH invalid not the allow-token');
    assert.deepEqual(await pub.replies('PUB /b/x p2\nhello'), [`ERR forbidden p2 /b/x: ${ANON}`]);
    // (One connection each: at most 4 AUTH a second per connection.)
    for (const wrong of [ALLOW.slice(0, -1), ALLOW.toUpperCase(), `x${ALLOW.slice(1)}`, 'a', ` ${ALLOW}`.trim().padEnd(ALLOW.length + 3, '~')]) {
      const other = await EClient.open(server);
      assert.equal(await other.auth(wrong), 'AUTH invalid not the allow-token', wrong);
      assert.deepEqual(await other.replies('PUB /b/x p2\nhello'), [`ERR forbidden p2 /b/x: ${ANON}`]);
      await other.close();
    }
    assert.equal(await pub.auth(ALLOW), 'AUTH ok 0');
    assert.deepEqual(await pub.replies('PUB /b/x p3\nhello', 'PUB /b/y/z p4\nworld'), ['ACK p3', 'ACK p4']);
    assert.equal(msgSubject(await sub.next('MSG /b/x')), '/b/x');
    assert.equal(msgSubject(await sub.next('MSG /b/y/z')), '/b/y/z');
    // A wrong token afterwards does not take the permission away.
    assert.equal(await pub.auth('not-it-at-all-123456'), 'AUTH invalid not the allow-token');
    assert.deepEqual(await pub.replies('PUB /b/x p5\nagain'), ['ACK p5']);
    await Promise.all([sub.close(), pub.close()]);
  });

  it('?token= with the allow-token (percent-encoded) lets the connection publish from its first command', async () => {
    const c = await EClient.open(server, { token: encodeURIComponent(ALLOW) });
    assert.equal(await c.next('the AUTH answer'), 'AUTH ok 0');
    assert.deepEqual(await c.replies('PUB /b/q q1\nx'), ['ACK q1']);
    await c.close();
  });
});

// ---------------------------------------------------------------------------------------------------

describe('Custom: the authorize hook', SUITE, () => {
  const calls: { token: string; address: string; workgroup: number }[] = [];
  const gates: (() => void)[] = [];
  const answers: Record<string, () => unknown> = {
    good: () => ({ sub: ['/c/*'], pub: ['/c/*'] }),
    'good-async': async () => ({ all: ['/c/*'], expiry: 0 }),
    slow: () => new Promise((resolve) => gates.push(() => resolve({ all: ['/*'] }))),
    throws: () => {
      throw new Error('the directory is down');
    },
    'throws-string': () => {
      throw 'not an error'; // eslint-disable-line no-throw-literal
    },
    rejects: () => Promise.reject(new Error('no')),
    'rejects-undefined': () => Promise.reject(undefined),
    null: () => null,
    undefined: () => undefined,
    array: () => [['/c/1']],
    string: () => 'yes',
    number: () => 1,
    'sub-string': () => ({ sub: '/c/1' }),
    'sub-numbers': () => ({ sub: [1, 2] }),
    'expiry-negative': () => ({ all: ['/c/*'], expiry: -1 }),
    'expiry-nan': () => ({ all: ['/c/*'], expiry: NaN }),
    'expiry-string': () => ({ all: ['/c/*'], expiry: '99' }),
    'bad-pattern': () => ({ sub: ['c/1'] }),
    'bad-pattern-space': () => ({ pub: ['/c/a b'] }),
    'bad-pattern-inner-wildcard': () => ({ all: ['/c/*/x'] }),
    'too-many-patterns': () => ({ sub: Array.from({ length: 600 }, (_, i) => `/c/${i}`), pub: Array.from({ length: 401 }, (_, i) => `/p/${i}`) }),
    'getter-throws': () => ({
      get sub(): string[] {
        throw new Error('a lazy field failed');
      },
    }),
    'then-throws': () => ({
      then() {
        throw new Error('a broken thenable');
      },
    }),
  };
  const server = startServer({
    Entitlement: 'Custom',
    authorizeTimeout: 300,
    authorize: (token: string, client: { address: string; workgroup: number }) => {
      calls.push({ token, ...client });
      const a = answers[token];
      if (!a) return null;
      return a() as never;
    },
  });

  async function refused(token: string, detail: string | RegExp, counted: 'authorizeErrors' | 'authorizeTimeouts' | null): Promise<void> {
    const before = server.stats();
    const c = await EClient.open(server);
    const answer = await c.auth(token);
    if (typeof detail === 'string') assert.equal(answer, `AUTH invalid ${detail}`);
    else assert.match(answer, detail);
    assert.deepEqual(await c.replies('SUB /c/1', 'PUB /c/1 p\nx'), [`ERR forbidden /c/1: ${ANON}`, `ERR forbidden p /c/1: ${ANON}`]);
    const after = server.stats();
    for (const k of ['authorizeErrors', 'authorizeTimeouts'] as const)
      assert.equal(after[k] - before[k], k === counted ? 1 : 0, `${k} for the token ${token}`);
    // The same connection is served with a good token, and so is everyone else.
    assert.match(await c.auth('good'), /^AUTH ok 0$/);
    await c.command('SUB /c/1', 'PUB /c/2\nx');
    await c.close();
    await assertServesWith(server, 'good', '/c/health');
  }

  it('grants what the hook answers (sync or async); the hook sees the client address and workgroup', async () => {
    const c = await EClient.open(server);
    assert.equal(await c.auth('good'), 'AUTH ok 0');
    assert.deepEqual(await c.replies('SUB /c/1 /d/1', 'PUB /c/2 1\nx', 'PUB /d/2 2\nx'), [`ERR forbidden /d/1: ${BY_TOKEN}`, 'ACK 1', `ERR forbidden 2 /d/2: ${BY_TOKEN}`]);
    assert.equal(await c.auth('good-async'), 'AUTH ok 0');
    const call = calls.find((x) => x.token === 'good-async')!;
    assert.equal(call.address, '127.0.0.1');
    assert.ok(call.workgroup === 0 || call.workgroup === 1, `workgroup ${call.workgroup}`);
    await c.close();
  });

  it('a hook slower than authorizeTimeout: AUTH invalid authorization timed out, counted; its late answer grants nothing', async () => {
    const c = await EClient.open(server);
    const before = server.stats().authorizeTimeouts;
    assert.equal(await c.auth('slow'), 'AUTH invalid authorization timed out');
    assert.equal(server.stats().authorizeTimeouts - before, 1);
    for (const g of gates.splice(0)) g(); // the hook answers now, too late
    await sleep(50);
    assert.deepEqual(await c.replies('SUB /x/1'), [`ERR forbidden /x/1: ${ANON}`]);
    await c.close();
    await refused('slow', 'authorization timed out', 'authorizeTimeouts');
    for (const g of gates.splice(0)) g();
  });

  const failing: [string, string | RegExp, 'authorizeErrors' | null][] = [
    ['throws', 'authorization failed', 'authorizeErrors'],
    ['throws-string', 'authorization failed', 'authorizeErrors'],
    ['rejects', 'authorization failed', 'authorizeErrors'],
    ['rejects-undefined', 'authorization failed', 'authorizeErrors'],
    ['then-throws', 'authorization failed', 'authorizeErrors'],
    ['null', 'refused by the application', null],
    ['undefined', 'refused by the application', null],
    ['unknown-token', 'refused by the application', null],
    ['array', 'authorization failed', 'authorizeErrors'],
    ['string', 'authorization failed', 'authorizeErrors'],
    ['number', 'authorization failed', 'authorizeErrors'],
    ['sub-string', 'authorization failed', 'authorizeErrors'],
    ['sub-numbers', 'authorization failed', 'authorizeErrors'],
    ['expiry-negative', 'authorization failed', 'authorizeErrors'],
    ['expiry-nan', 'authorization failed', 'authorizeErrors'],
    ['expiry-string', 'authorization failed', 'authorizeErrors'],
    ['bad-pattern', /^AUTH invalid permissions: .*c\/1/, 'authorizeErrors'],
    ['bad-pattern-space', /^AUTH invalid permissions: .*\/c\/a b/, 'authorizeErrors'],
    ['bad-pattern-inner-wildcard', /^AUTH invalid permissions: .*\/c\/\*\/x/, 'authorizeErrors'],
    ['getter-throws', 'authorization failed', 'authorizeErrors'],
    ['too-many-patterns', 'authorization failed', 'authorizeErrors'], // 1,001: the JWT claim's bound applies too
  ];
  for (const [token, detail, counted] of failing) {
    it(`a hook that answers "${token}" refuses the token (${detail}${counted ? ', counted' : ''}); the server goes on`, () => refused(token, detail, counted));
  }

  it('a pending decision holds only its own connection: others are decided and served meanwhile', async () => {
    const calls2: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const s = startServer({
      Entitlement: 'Custom',
      authorizeTimeout: 60_000,
      authorize: async (token: string) => {
        calls2.push(token);
        if (token === 'wait') await held;
        return { all: ['/h/*'] };
      },
    });
    const waiting = await EClient.open(s);
    waiting.send('AUTH wait');
    waiting.send('PUB /h/1 w1\nx'); // must be decided with the token, once it is decided
    waiting.send('PING w');
    await waitFor('the hook to be asked about "wait"', () => calls2.includes('wait'));
    await assertServesWith(s, 'other', '/h/health');
    assert.equal(s.stats().total.auth_waiting, 1);
    assert.equal(waiting.pending, 0, 'nothing is answered before the decision');
    release();
    assert.match(await waiting.next('AUTH ok'), /^AUTH ok 0$/);
    await waiting.expect('ACK w1');
    await waiting.expect('PONG w');
    await waiting.close();
    await s.close();
  });

  it('a live client waiting for a slow (but timely) decision is not taken for dead by KeepAlive', async () => {
    // KeepAlive = 1: a connection silent for a pass is pinged, and cut at the next if no pong was read. The
    // client answers the ping at once; the decision comes after 4 s, well within authorizeTimeout.
    const s = startServer({
      Entitlement: 'Custom',
      KeepAlive: 1,
      authorizeTimeout: 20_000,
      authorize: () => new Promise((resolve) => setTimeout(() => resolve({ all: ['/k/*'] }), 4000)),
    });
    const c = await EClient.open(s);
    c.send('AUTH slow-directory');
    c.send('PING k');
    assert.equal(await c.next('AUTH ok (the decision takes 4 s)'), 'AUTH ok 0');
    await c.expect('PONG k');
    assert.equal(s.stats().total.keepalive_closes, 0);
    await c.close();
    await s.close();
  });

  it('a hook that answers after the server closed does no harm', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let asked = false;
    const s = startServer({
      Entitlement: 'Custom',
      authorizeTimeout: 60_000,
      authorize: async () => {
        asked = true;
        await held;
        return { all: ['/*'] };
      },
    });
    const c = await EClient.open(s);
    c.send('AUTH late');
    await waitFor('the hook to be asked', () => asked);
    await s.close();
    release();
    await sleep(100);
    await new Promise((r) => setImmediate(r));
    await assertServesWith(server, 'good', '/c/health');
  });
});

// ---------------------------------------------------------------------------------------------------

describe('PublishAllowFromAddressList', SUITE, () => {
  const issuer = new HsIssuer();
  const server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64, PublishAllowFromAddressList: '127.0.0.1/32' });
  const everything = issuer.token({ all: ['/*'] });

  it('a fully entitled client at 127.0.0.2 may subscribe but not publish; one at 127.0.0.1 publishes to it', async () => {
    const far = await EClient.open(server, { localAddress: '127.0.0.2' });
    assert.deepEqual(await far.replies('PUB /pa/x f0\nx'), [`ERR forbidden f0 /pa/x: ${ADDRESS}`], 'anonymous, from the refused address');
    assert.match(await far.auth(everything), /^AUTH ok \d+$/);
    const d = await deltas(server, ['denied_publishes', 'err_forbidden'], async () => {
      assert.deepEqual(await far.replies('SUB /pa/x', 'PUB /pa/x f1\nx', 'PUB /pa/y f2\nx'), [`ERR forbidden f1 /pa/x: ${ADDRESS}`, `ERR forbidden f2 /pa/y: ${ADDRESS}`]);
    });
    assert.deepEqual(d, { denied_publishes: 2, err_forbidden: 2 });
    const near = await entitledClient(server, everything);
    assert.deepEqual(await near.replies('PUB /pa/x n1\nfrom near'), ['ACK n1']);
    const m = await far.next('the MSG from 127.0.0.1');
    assert.equal(msgSubject(m), '/pa/x');
    assert.ok(m.endsWith('\nfrom near'));
    await Promise.all([far.close(), near.close()]);
  });

  it('also with Entitlement = None and with Custom (whose hook sees the address)', async () => {
    const none = startServer({ PublishAllowFromAddressList: '127.0.0.1' });
    const a = await EClient.open(none, { localAddress: '127.0.0.2' });
    assert.deepEqual(await a.replies('SUB /n/1', 'PUB /n/1 a\nx'), [`ERR forbidden a /n/1: ${ADDRESS}`]);
    const b = await EClient.open(none);
    assert.deepEqual(await b.replies('PUB /n/1 b\nx'), ['ACK b']);
    assert.equal(msgSubject(await a.next('MSG /n/1')), '/n/1');
    const seen: string[] = [];
    const custom = startServer({
      Entitlement: 'Custom',
      PublishAllowFromAddressList: '127.0.0.1/32',
      authorize: (_t: string, client: { address: string }) => (seen.push(client.address), { all: ['/*'] }),
    });
    const c = await entitledClient(custom, 'x', { localAddress: '127.0.0.2' });
    assert.deepEqual(seen, ['127.0.0.2']);
    assert.deepEqual(await c.replies('PUB /n/1 c\nx'), [`ERR forbidden c /n/1: ${ADDRESS}`]);
    await Promise.all([a.close(), b.close(), c.close(), none.close(), custom.close()]);
  });
});

// ---------------------------------------------------------------------------------------------------

describe('renewal, expiry and revocation', SUITE, () => {
  const issuer = new HsIssuer();
  const server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64, 'Entitlement.RenewBefore': 2 });

  it('a short token: AUTH ok <exp>, AUTH expiring <s> (s <= RenewBefore), AUTH expired, then close 1008', async () => {
    const exp = nowS() + 4;
    const c = await EClient.open(server);
    const d = await deltas(server, ['auth_expired', 'connections'], async () => {
      assert.equal(await c.auth(issuer.raw({ exp, permissions: { sub: ['/e/*'] } })), `AUTH ok ${exp}`);
      await c.command('SUB /e/1');
      const expiring = await c.next('AUTH expiring');
      const m = /^AUTH expiring (\d+)$/.exec(expiring);
      assert.ok(m, expiring);
      assert.ok(Number(m[1]) >= 1 && Number(m[1]) <= 2, expiring);
      await c.expect('AUTH expired');
      const closed = await c.closed;
      assert.equal(closed.code, 1008);
      assert.ok(nowS() >= exp, 'not closed before its expiry');
      await waitFor('the connection to be gone', () => server.stats().total.connections === 0);
    });
    assert.equal(d.auth_expired, 1);
  });

  it('a renewal before expiry keeps the connection and its subscriptions past the old expiry', async () => {
    const exp = nowS() + 3;
    const short = issuer.raw({ exp, permissions: { sub: ['/rn/*'] } });
    const renewed = await openOn(server, 0);
    const control = await openOn(server, 0); // same workgroup, so the same expiry passes
    assert.equal(await renewed.auth(short), `AUTH ok ${exp}`);
    assert.equal(await control.auth(short), `AUTH ok ${exp}`);
    await renewed.command('SUB /rn/1');
    assert.match(await renewed.next('AUTH expiring'), /^AUTH expiring [12]$/);
    assert.match(await renewed.auth(issuer.token({ sub: ['/rn/*'] }, 3600)), /^AUTH ok \d+$/);
    // The control connection, with the old token only, expires: the expiry pass ran past the old expiry.
    assert.match(await control.next('AUTH expiring'), /^AUTH expiring [12]$/);
    await control.expect('AUTH expired');
    assert.equal((await control.closed).code, 1008);
    assert.deepEqual(await renewed.replies(), []);
    server.publish('/rn/1', 'after');
    assert.equal(msgSubject(await renewed.next('MSG /rn/1')), '/rn/1');
    await renewed.close();
  });

  it('a refused renewal keeps the token in force, its permissions and its expiry', async () => {
    const exp = nowS() + 3;
    const c = await EClient.open(server);
    assert.equal(await c.auth(issuer.raw({ exp, permissions: { sub: ['/rf/*'] } })), `AUTH ok ${exp}`);
    assert.equal(await c.auth(issuer.token({ all: ['/*'] }, -10)), 'AUTH invalid expired');
    assert.equal(await c.auth('nonsense'), 'AUTH invalid malformed');
    assert.deepEqual(await c.replies('SUB /rf/1 /other'), [`ERR forbidden /other: ${BY_TOKEN}`]);
    assert.match(await c.next('AUTH expiring'), /^AUTH expiring [12]$/);
    await c.expect('AUTH expired');
    assert.equal((await c.closed).code, 1008);
  });

  it('revocation by renewal: subscriptions the new token does not grant are dropped, each with ERR forbidden', async () => {
    const sub = await openOn(server, 1);
    const observer = await openOn(server, 1);
    assert.match(await sub.auth(issuer.token({ sub: ['/rv/*'] })), /^AUTH ok/);
    assert.match(await observer.auth(issuer.token({ sub: ['/rv/*'] })), /^AUTH ok/);
    await sub.command('SUB /rv/1 /rv/2 /rv/3 /rv/4/x');
    await observer.command('SUB /rv/1 /rv/2 /rv/3 /rv/4/x');
    const d = await deltas(server, ['subscriptions', 'denied_subscribes'], async () => {
      sub.send(`AUTH ${issuer.token({ sub: ['/rv/2', '/rv/4/{id}'], pub: ['/rv/3'] })}`);
      assert.match(await sub.next('AUTH ok'), /^AUTH ok \d+$/);
      const errs = (await sub.replies()).sort();
      assert.deepEqual(errs, [`ERR forbidden /rv/1: ${RENEWED}`, `ERR forbidden /rv/3: ${RENEWED}`]);
    });
    assert.deepEqual(d, { subscriptions: -2, denied_subscribes: 2 });
    for (const s of ['/rv/1', '/rv/2', '/rv/3', '/rv/4/x']) server.publish(s, s);
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) seen.push(msgSubject(await observer.next('the observer\'s MSG')));
    assert.deepEqual(seen.sort(), ['/rv/1', '/rv/2', '/rv/3', '/rv/4/x']);
    // Same workgroup as the observer: every delivery to it was queued before this barrier's PONG.
    const got = (await sub.replies()).map(msgSubject);
    assert.deepEqual(got.sort(), ['/rv/2', '/rv/4/x'], 'only the subscriptions the new token grants deliver');
    // A renewal that grants it again does not resubscribe by itself.
    assert.match(await sub.auth(issuer.token({ sub: ['/rv/*'] })), /^AUTH ok/);
    server.publish('/rv/1', 'again');
    assert.equal(msgSubject(await observer.next('MSG /rv/1')), '/rv/1');
    assert.deepEqual(await sub.replies(), []);
    await Promise.all([sub.close(), observer.close()]);
  });

  it('revoking a conflated subscription also drops the message it was holding back', async () => {
    const one = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64, Workgroups: 1 });
    const sub = await entitledClient(one, issuer.token({ sub: ['/cf/*'] }));
    const observer = await entitledClient(one, issuer.token({ sub: ['/cf/*'] }));
    await sub.command('SUB conflate=1000 /cf/x');
    await observer.command('SUB /cf/x');
    one.publish('/cf/x', 'one');
    assert.ok((await sub.next('the first conflated MSG')).endsWith('\none'));
    one.publish('/cf/x', 'two');
    one.publish('/cf/x', 'three');
    for (const p of ['one', 'two', 'three']) assert.ok((await observer.next(`the observer's ${p}`)).endsWith(`\n${p}`));
    // (One workgroup: "three" is now held for the subscriber until its interval ends.)
    sub.send(`AUTH ${issuer.token({ sub: ['/other'] })}`);
    assert.match(await sub.next('AUTH ok'), /^AUTH ok \d+$/);
    await sub.expect(`ERR forbidden /cf/x: ${RENEWED}`);
    await sleep(1500); // past the conflation interval
    assert.deepEqual(await sub.replies(), [], 'nothing delivered after the revocation');
    await Promise.all([sub.close(), observer.close()]);
    await one.close();
  });

  it('history, recovery and snapshot forms of SUB on a forbidden subject are refused, and nothing of it is sent', async () => {
    const pub = await entitledClient(server, issuer.token({ all: ['/*'] }));
    assert.deepEqual(await pub.replies('PUB /secret/s r1 +retained\nthe snapshot', 'PUB /secret/s r2\ncached'), ['ACK r1', 'ACK r2']);
    const c = await entitledClient(server, issuer.token({ sub: ['/public/*'] }));
    // Each spec is answered with its subject (without the #n / @epoch:seq part).
    assert.deepEqual(await c.replies('SUB /secret/s#10 /secret/s@abc:0 /secret/s', 'SUB conflate=100 /secret/s /public/p'), [
      `ERR forbidden /secret/s: ${BY_TOKEN}`,
      `ERR forbidden /secret/s: ${BY_TOKEN}`,
      `ERR forbidden /secret/s: ${BY_TOKEN}`,
      `ERR forbidden /secret/s: ${BY_TOKEN}`,
    ]);
    const granted = await entitledClient(server, issuer.token({ sub: ['/secret/*'] }));
    const got = await granted.replies('SUB /secret/s');
    assert.equal(got.length, 1);
    assert.match(got[0], /^MSG \/secret\/s [0-9a-z]+:1 snapshot\nthe snapshot$/);
    await Promise.all([pub.close(), c.close(), granted.close()]);
  });
});

// ---------------------------------------------------------------------------------------------------

describe('?token= on the upgrade URL', SUITE, () => {
  const issuer = new HsIssuer();
  const server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64 });
  const MALFORMED = 'AUTH invalid malformed token parameter: percent-encoded printable ASCII without spaces expected';
  const exp = nowS() + 3600;
  const good = issuer.raw({ exp, permissions: { sub: ['/u/*'], pub: ['/u/*'] } });

  async function first(token: string, query = (t: string) => t): Promise<EClient> {
    return EClient.open(`${server.url}?${query(`token=${token}`)}`);
  }

  it('a token on the URL is the connection\'s first AUTH: its answer is the first message', async () => {
    const c = await first(good);
    assert.equal(await c.next('the AUTH answer'), `AUTH ok ${exp}`);
    assert.deepEqual(await c.replies('SUB /u/1', 'PUB /u/9 a\nx', 'SUB /v/1'), ['ACK a', `ERR forbidden /v/1: ${BY_TOKEN}`]);
    await c.close();
  });

  it('every character percent-encoded (upper and lower case hex) decodes to the token', async () => {
    const enc = [...good].map((ch, i) => `%${ch.charCodeAt(0).toString(16)[i % 2 ? 'toUpperCase' : 'toLowerCase']()}`).join('');
    const c = await first(enc);
    assert.equal(await c.next('the AUTH answer'), `AUTH ok ${exp}`);
    assert.deepEqual(await c.replies('PUB /u/2 b\nx'), ['ACK b']);
    await c.close();
  });

  it('the token parameter among others, and the first of two', async () => {
    const c = await EClient.open(`${server.url}?a=1&token=${good}&b=2&token=garbage`);
    assert.equal(await c.next('the AUTH answer'), `AUTH ok ${exp}`);
    await c.close();
    const d = await EClient.open(`${server.url}?token=garbage&token=${good}`);
    assert.equal(await d.next('the AUTH answer'), 'AUTH invalid malformed');
    await d.close();
  });

  const garbage: [string, string][] = [
    ['%zz', '%zz'],
    ['a % without digits at the end', `${good}%`],
    ['a % with one digit', `${good}%4`],
    ['%20 (a space)', `${good}%20`],
    ['%0a (a newline)', `ab%0acd`],
    ['%00', `%00${good}`],
    ['+ (a space in a query)', `${good}+`],
    ['%ff (not ASCII)', `x%ffy`],
  ];
  for (const [what, value] of garbage) {
    it(`garbage in ?token= (${what}) is answered first with AUTH invalid, and the connection stays usable`, async () => {
      const c = await first(value);
      assert.equal(await c.next('the AUTH answer'), MALFORMED);
      assert.deepEqual(await c.replies('SUB /u/1'), [`ERR forbidden /u/1: ${ANON}`]);
      assert.equal(await c.auth(good), `AUTH ok ${exp}`);
      await c.command('SUB /u/1');
      await c.close();
    });
  }

  it('a refused token on the URL is answered first with its detail', async () => {
    for (const [token, detail] of [
      ['garbage', 'malformed'],
      [issuer.token({ all: ['/*'] }, -5), 'expired'],
      [new HsIssuer().token({ all: ['/*'] }), 'bad signature'],
    ]) {
      const c = await first(token);
      assert.equal(await c.next('the AUTH answer'), `AUTH invalid ${detail}`);
      assert.deepEqual(await c.replies('PUB /u/1 z\nx'), [`ERR forbidden z /u/1: ${ANON}`]);
      await c.close();
    }
  });

  it('an empty token= or another parameter name is no AUTH at all', async () => {
    for (const q of ['token=', `tokens=${good}`, `xtoken=${good}`, `Token=${good}`]) {
      const c = await EClient.open(`${server.url}?${q}`);
      assert.deepEqual(await c.replies('SUB /u/1'), [`ERR forbidden /u/1: ${ANON}`], q);
      await c.close();
    }
  });

  it('frames in the same packet as the upgrade wait for the ?token= decision', async () => {
    for (const [token, want] of [
      [good, [`AUTH ok ${exp}`, 'ACK r1', 'PONG r']],
      [issuer.token({ all: ['/*'] }, -5), ['AUTH invalid expired', `ERR forbidden r1 /u/r: ${ANON}`, 'PONG r']],
    ] as [string, string[]][]) {
      const raw = await Raw.connect(server);
      raw.write(Buffer.concat([Buffer.from(upgradeRequest(`/?token=${token}`)), frame(OP.text, 'PUB /u/r r1\nx'), frame(OP.text, 'PING r')]));
      assert.equal((await raw.response()).status, 101);
      const got = [await raw.nextText(), await raw.nextText(), await raw.nextText()];
      assert.deepEqual(got, want);
      raw.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------------

describe('ordering and the AUTH rate limit', SUITE, () => {
  const issuer = new HsIssuer();
  const server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64 });
  const A = issuer.token({ pub: ['/o/a'], sub: ['/o/a'] });
  const B = issuer.token({ pub: ['/o/b'], sub: ['/o/b'] });

  it('AUTH then PUB in one burst: the PUB is decided with the new token', async () => {
    const c = await EClient.open(server);
    const got = await c.replies(`AUTH ${A}`, 'PUB /o/a 1\nx');
    assert.equal(got.length, 2, JSON.stringify(got));
    assert.match(got[0], /^AUTH ok \d+$/);
    assert.equal(got[1], 'ACK 1');
    await c.close();
  });

  it('PUB, AUTH, PUB, SUB in one burst: each command is decided with the token in force when it comes', async () => {
    const c = await EClient.open(server);
    const got = await c.replies('PUB /o/a 0\nx', `AUTH ${A}`, 'PUB /o/a 1\nx', `AUTH ${B}`, 'PUB /o/a 2\nx', 'PUB /o/b 3\nx', 'SUB /o/a', 'AUTH bad', 'PUB /o/b 4\nx');
    assert.deepEqual(got.map((g) => g.replace(/^AUTH ok \d+$/, 'AUTH ok')), [
      `ERR forbidden 0 /o/a: ${ANON}`,
      'AUTH ok',
      'ACK 1',
      'AUTH ok',
      `ERR forbidden 2 /o/a: ${BY_TOKEN}`,
      'ACK 3',
      `ERR forbidden /o/a: ${BY_TOKEN}`,
      'AUTH invalid malformed',
      'ACK 4',
    ]);
    await c.close();
  });

  it('more than 4 AUTH a second: the extra ones are refused without a decision, and the token in force stays', async () => {
    const c = await EClient.open(server);
    const tokens = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? A : B));
    let answers: string[] = [];
    const d = await deltas(server, ['auth_decisions', 'auth_denied', 'auth_ok'], async () => {
      answers = await c.replies(...tokens.map((t) => `AUTH ${t}`));
    });
    assert.equal(answers.length, 40, JSON.stringify(answers));
    let inForce = -1;
    let refusedCount = 0;
    answers.forEach((a, i) => {
      if (a === TOO_MANY) refusedCount++;
      else {
        assert.match(a, /^AUTH ok \d+$/, `answer ${i}`);
        inForce = i;
      }
    });
    assert.ok(refusedCount > 0, 'the burst of 40 AUTH was rate-limited');
    assert.ok(inForce >= 0);
    assert.deepEqual(d, { auth_decisions: 40 - refusedCount, auth_denied: refusedCount, auth_ok: 40 - refusedCount });
    const granted = inForce % 2 === 0 ? '/o/a' : '/o/b';
    const refusedSubject = inForce % 2 === 0 ? '/o/b' : '/o/a';
    // After the pass the limit is lifted; meanwhile the last accepted token is in force.
    assert.deepEqual(await c.replies(`SUB ${granted} ${refusedSubject}`), [`ERR forbidden ${refusedSubject}: ${BY_TOKEN}`]);
    await c.close();
  });

  it('AUTH in a server without entitlement is answered AUTH ok 0', async () => {
    const none = startServer({});
    const c = await EClient.open(none);
    assert.equal(await c.auth('anything'), 'AUTH ok 0');
    await c.close();
    await none.close();
  });
});
