// Entitlement = JWT, the verifier alone (src/entitlement/jwt.ts). Every token here is made independently of the
// code under test: JSON, base64url and signatures with Node's crypto (createHmac, sign), keys from
// generateKeyPairSync.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import {
  DEFAULT_MAX_TOKEN_BYTES,
  JwtOptionsError,
  MAX_PERMISSION_ENTRIES,
  createJwtVerifier,
  type JwtDecision,
  type JwtOptions,
  type JwtVerifier,
} from '../src/entitlement/jwt';

// ---- token making (test side only) ----

const b64u = (data: string | Buffer): string => Buffer.from(data).toString('base64url');
/** A part: an object is JSON-encoded; a string is taken as the JSON text itself. */
const part = (value: object | string): string => b64u(typeof value === 'string' ? value : JSON.stringify(value));

type Signer = (alg: string, input: string) => Buffer;
const hmacSigner = (secret: Buffer | string): Signer => (alg, input) =>
  crypto.createHmac(`sha${alg.slice(2)}`, secret).update(input).digest();
const rsaSigner = (key: crypto.KeyObject): Signer => (alg, input) =>
  alg.startsWith('PS')
    ? crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), {
        key,
        padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
        saltLength: Number(alg.slice(2)) / 8,
      })
    : crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), key);
const ecSigner = (key: crypto.KeyObject): Signer => (alg, input) =>
  crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });

/** A signed compact JWS of `payload` with header `{alg, typ: 'JWT'}` (or `header` when given). */
function token(alg: string, signer: Signer, payload: object | string, header?: object | string): string {
  const input = `${part(header ?? { alg, typ: 'JWT' })}.${part(payload)}`;
  return `${input}.${b64u(signer(alg, input))}`;
}

const now = (): number => Math.floor(Date.now() / 1000);
const claims = (extra: object = {}): object => ({ exp: now() + 3600, ...extra });

// ---- keys ----

const secret64 = crypto.randomBytes(64);
const secret48 = crypto.randomBytes(48);
const secret32 = crypto.randomBytes(32);
const hs64 = hmacSigner(secret64);
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaOther = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const p256 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
const pem = (k: crypto.KeyObject): string => k.export({ type: 'spki', format: 'pem' }).toString();

const hsVerifier = createJwtVerifier({ secret: secret64.toString('base64') });
const rsVerifier = createJwtVerifier({ publicKey: rsaPem });
const esVerifier = createJwtVerifier({ publicKey: pem(p256.publicKey) });

// ---- asserting ----

async function accepted(verifier: JwtVerifier, jwt: string): Promise<Extract<JwtDecision, { ok: true }>> {
  const d = await verifier.verify(jwt);
  assert.ok(d.ok, `expected the token to be accepted, got ${JSON.stringify(d)}`);
  return d;
}
/** Asserts `jwt` is refused with exactly `detail` (a string) or a detail matching it (a RegExp). */
async function refused(verifier: JwtVerifier, jwt: string, detail: string | RegExp): Promise<string> {
  const d = await verifier.verify(jwt);
  assert.equal(d.ok, false, `expected a refusal (${detail}), the token was accepted`);
  const got = (d as { detail: string }).detail;
  assert.match(got, /^[\x20-\x7e]{1,120}$/, `detail must be short printable ASCII: ${JSON.stringify(got)}`);
  if (typeof detail === 'string') assert.equal(got, detail);
  else assert.match(got, detail);
  return got;
}
function optionsError(options: JwtOptions, message: RegExp): void {
  assert.throws(() => createJwtVerifier(options), (err: unknown) => {
    assert.ok(err instanceof JwtOptionsError, `expected a JwtOptionsError, got ${err}`);
    assert.match(err.message, message);
    return true;
  });
}

// ---- tests ----

describe('valid tokens', () => {
  it('HS256, HS384 and HS512 with a 64-byte secret', async () => {
    assert.deepEqual(hsVerifier.algorithms, ['HS256', 'HS384', 'HS512']);
    for (const alg of ['HS256', 'HS384', 'HS512']) {
      const exp = now() + 600;
      const d = await accepted(hsVerifier, token(alg, hs64, { exp, permissions: { sub: ['/a/b'] } }));
      assert.equal(d.expiry, exp);
      assert.deepEqual(d.permissions, { sub: ['/a/b'], pub: [], all: [] });
    }
  });

  it('RS256, RS384, RS512, PS256, PS384, PS512 with an RSA public key', async () => {
    assert.deepEqual(rsVerifier.algorithms, ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);
    for (const alg of rsVerifier.algorithms) {
      const d = await accepted(rsVerifier, token(alg, rsaSigner(rsa.privateKey), claims({ permissions: { pub: ['/x'] } })));
      assert.deepEqual(d.permissions.pub, ['/x']);
    }
  });

  it('ES256 with a P-256 key, ES384 with a P-384 key', async () => {
    assert.deepEqual(esVerifier.algorithms, ['ES256']);
    await accepted(esVerifier, token('ES256', ecSigner(p256.privateKey), claims()));
    const es384 = createJwtVerifier({ publicKey: pem(p384.publicKey) });
    assert.deepEqual(es384.algorithms, ['ES384']);
    await accepted(es384, token('ES384', ecSigner(p384.privateKey), claims()));
  });

  it('PS256 with an RSA-PSS key restricted to SHA-256, which allows only PS256', async () => {
    // (@types/node 20 types saltLength as a string; Node takes a number.)
    const pssOptions = { modulusLength: 2048, hashAlgorithm: 'sha256', mgf1HashAlgorithm: 'sha256', saltLength: 32 };
    const pss = crypto.generateKeyPairSync('rsa-pss', pssOptions as unknown as crypto.RSAPSSKeyPairKeyObjectOptions);
    const v = createJwtVerifier({ publicKey: pem(pss.publicKey) });
    assert.deepEqual(v.algorithms, ['PS256']);
    await accepted(v, token('PS256', rsaSigner(pss.privateKey), claims()));
    await refused(v, token('RS256', rsaSigner(rsa.privateKey), claims()), 'algorithm not allowed');
  });

  it('the secret length chooses the HS algorithms; a base64url secret is accepted too', async () => {
    assert.deepEqual(createJwtVerifier({ secret: secret32.toString('base64') }).algorithms, ['HS256']);
    assert.deepEqual(createJwtVerifier({ secret: secret48.toString('base64') }).algorithms, ['HS256', 'HS384']);
    const url = createJwtVerifier({ secret: secret64.toString('base64url') });
    await accepted(url, token('HS512', hs64, claims()));
    const narrowed = createJwtVerifier({ secret: secret64.toString('base64'), algorithms: ['HS512'] });
    assert.deepEqual(narrowed.algorithms, ['HS512']);
    await refused(narrowed, token('HS256', hs64, claims()), 'algorithm not allowed');
  });

  it('a header with no typ, and extra claims, are fine; fractional exp is kept', async () => {
    const exp = now() + 100.5;
    const d = await accepted(hsVerifier, token('HS256', hs64, { exp, sub: 'user-1', iat: now(), jti: 'x' }, { alg: 'HS256' }));
    assert.equal(d.expiry, exp);
    assert.deepEqual(d.permissions, { sub: [], pub: [], all: [] });
  });
});

describe('time', () => {
  it('an expired token is refused', async () => {
    await refused(hsVerifier, token('HS256', hs64, { exp: now() - 60 }), 'expired');
    await refused(rsVerifier, token('RS256', rsaSigner(rsa.privateKey), { exp: now() - 1 }), 'expired');
  });

  it('a token whose nbf is in the future is refused; a past nbf is fine', async () => {
    await refused(hsVerifier, token('HS256', hs64, claims({ nbf: now() + 600 })), 'not yet valid');
    await accepted(hsVerifier, token('HS256', hs64, claims({ nbf: now() - 600 })));
  });

  it('clockToleranceSeconds lets a token a little past exp (or before nbf) through, not more', async () => {
    const v = createJwtVerifier({ secret: secret64.toString('base64'), clockToleranceSeconds: 120 });
    await accepted(v, token('HS256', hs64, { exp: now() - 30 }));
    await accepted(v, token('HS256', hs64, claims({ nbf: now() + 30 })));
    await refused(v, token('HS256', hs64, { exp: now() - 600 }), 'expired');
  });

  it('exp is required, must be a number, and finite', async () => {
    await refused(hsVerifier, token('HS256', hs64, { permissions: { sub: ['/a'] } }), 'no exp claim');
    await refused(hsVerifier, token('HS256', hs64, { exp: String(now() + 600) }), 'exp claim: not a number');
    await refused(hsVerifier, token('HS256', hs64, '{"exp":1e400}'), 'exp claim: not finite');
    await refused(hsVerifier, token('HS256', hs64, claims({ nbf: 'soon' })), 'nbf claim: not a number');
  });
});

describe('signatures and algorithms', () => {
  it('one changed character of the signature is a bad signature', async () => {
    for (const [v, jwt] of [
      [hsVerifier, token('HS256', hs64, claims())],
      [rsVerifier, token('RS256', rsaSigner(rsa.privateKey), claims())],
      [esVerifier, token('ES256', ecSigner(p256.privateKey), claims())],
    ] as const) {
      const at = jwt.lastIndexOf('.') + 10; // well inside the signature: every bit of that character counts
      const flipped = jwt.slice(0, at) + (jwt[at] === 'A' ? 'B' : 'A') + jwt.slice(at + 1);
      await refused(v, flipped, 'bad signature');
    }
  });

  it('a changed payload (same signature) is a bad signature', async () => {
    const jwt = token('HS256', hs64, claims({ permissions: { pub: ['/a'] } }));
    const [h, , s] = jwt.split('.');
    await refused(hsVerifier, `${h}.${part(claims({ permissions: { all: ['/*'] } }))}.${s}`, 'bad signature');
  });

  it('a token signed by another key is a bad signature', async () => {
    await refused(hsVerifier, token('HS256', hmacSigner(crypto.randomBytes(64)), claims()), 'bad signature');
    await refused(rsVerifier, token('RS256', rsaSigner(rsaOther.privateKey), claims()), 'bad signature');
    const otherEc = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await refused(esVerifier, token('ES256', ecSigner(otherEc.privateKey), claims()), 'bad signature');
  });

  it('alg none (empty signature) is refused by every verifier, however it is spelt', async () => {
    for (const v of [hsVerifier, rsVerifier, esVerifier]) {
      for (const alg of ['none', 'None', 'NONE']) {
        await refused(v, `${part({ alg, typ: 'JWT' })}.${part(claims({ permissions: { all: ['/*'] } }))}.`, 'algorithm not allowed');
      }
    }
  });

  it('HS/RS confusion: HS256 with the RSA public key PEM as HMAC secret is refused', async () => {
    for (const secret of [rsaPem, rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString()]) {
      await refused(rsVerifier, token('HS256', hmacSigner(secret), claims({ permissions: { all: ['/*'] } })), 'algorithm not allowed');
    }
    const ecPem = pem(p256.publicKey);
    await refused(esVerifier, token('HS256', hmacSigner(ecPem), claims()), 'algorithm not allowed');
  });

  it('an algorithm outside the key family is refused', async () => {
    await refused(hsVerifier, token('RS256', rsaSigner(rsa.privateKey), claims()), 'algorithm not allowed');
    await refused(rsVerifier, token('ES256', ecSigner(p256.privateKey), claims()), 'algorithm not allowed');
    await refused(esVerifier, token('ES384', ecSigner(p384.privateKey), claims()), 'algorithm not allowed');
    const short = createJwtVerifier({ secret: secret32.toString('base64') });
    await refused(short, token('HS512', hmacSigner(secret32), claims()), 'algorithm not allowed');
    const rs256 = createJwtVerifier({ publicKey: rsaPem, algorithms: ['RS256'] });
    await refused(rs256, token('PS256', rsaSigner(rsa.privateKey), claims()), 'algorithm not allowed');
    await accepted(rs256, token('RS256', rsaSigner(rsa.privateKey), claims()));
  });

  it('an unknown critical header is not supported', async () => {
    await refused(hsVerifier, token('HS256', hs64, claims(), { alg: 'HS256', crit: ['x-magic'], 'x-magic': 1 }), 'not supported');
  });
});

describe('audience and issuer', () => {
  const v = createJwtVerifier({ secret: secret64.toString('base64'), audience: 'starling', issuer: 'https://auth.example' });

  it('match when configured (aud may be an array)', async () => {
    await accepted(v, token('HS256', hs64, claims({ aud: 'starling', iss: 'https://auth.example' })));
    await accepted(v, token('HS256', hs64, claims({ aud: ['other', 'starling'], iss: 'https://auth.example' })));
  });

  it('a wrong or missing aud is refused', async () => {
    await refused(v, token('HS256', hs64, claims({ aud: 'other', iss: 'https://auth.example' })), 'audience');
    await refused(v, token('HS256', hs64, claims({ aud: ['a', 'b'], iss: 'https://auth.example' })), 'audience');
    await refused(v, token('HS256', hs64, claims({ iss: 'https://auth.example' })), 'audience (no aud claim)');
  });

  it('a wrong or missing iss is refused', async () => {
    await refused(v, token('HS256', hs64, claims({ aud: 'starling', iss: 'https://evil.example' })), 'issuer');
    await refused(v, token('HS256', hs64, claims({ aud: 'starling' })), 'issuer (no iss claim)');
  });

  it('are not checked when not configured', async () => {
    await accepted(hsVerifier, token('HS256', hs64, claims({ aud: 'anything', iss: 'anyone' })));
  });
});

describe('malformed tokens', () => {
  const good = token('HS256', hs64, claims());
  const [h, p, s] = good.split('.');

  it('not three parts', async () => {
    for (const t of ['', 'abc', `${h}.${p}`, `${h}.${p}.${s}.${s}`, `${h}..${s}`, '..']) await refused(hsVerifier, t, 'malformed');
  });

  it('characters outside base64url, padding, whitespace', async () => {
    for (const t of [
      `${h}!.${p}.${s}`,
      `${h}.${p}.${s}=`,
      `${Buffer.from(JSON.stringify({ alg: 'HS256' })).toString('base64')}+/.${p}.${s}`,
      ` ${good}`,
      `${good}\n`,
      `${h}.${p}.${s.slice(0, 5)} ${s.slice(5)}`,
    ]) {
      await refused(hsVerifier, t, 'malformed');
    }
  });

  it('a header or payload that is not a JSON object', async () => {
    await refused(hsVerifier, token('HS256', hs64, claims(), 'not json'), 'malformed');
    await refused(hsVerifier, token('HS256', hs64, claims(), { typ: 'JWT' }), 'malformed'); // no alg
    await refused(hsVerifier, token('HS256', hs64, claims(), { alg: 5 }), 'malformed');
    for (const payload of ['[1,2]', 'null', '42', '"exp"', '{"exp":', 'true']) {
      await refused(hsVerifier, token('HS256', hs64, payload), 'malformed');
    }
  });

  it('a value that is not a string is refused, not thrown', async () => {
    for (const t of [undefined, null, 42, {}, Buffer.from(good)]) {
      await refused(hsVerifier, t as unknown as string, 'malformed');
    }
  });
});

describe('size bound', () => {
  it('a token over maxTokenBytes is refused with its size, before any parsing', async () => {
    assert.equal(DEFAULT_MAX_TOKEN_BYTES, 8192);
    await refused(hsVerifier, 'a'.repeat(9000), 'too large (9000 bytes, at most 8192)');
    await refused(hsVerifier, 'x'.repeat(50 * 1024 * 1024), `too large (${50 * 1024 * 1024} bytes, at most 8192)`);
    // Multi-byte characters count as their UTF-8 bytes: 5000 characters, 10000 bytes.
    await refused(hsVerifier, 'é'.repeat(5000), 'too large (10000 bytes, at most 8192)');
    // A correctly signed, otherwise valid token is refused all the same.
    const big = token('HS256', hs64, claims({ pad: 'p'.repeat(9000) }));
    await refused(hsVerifier, big, `too large (${big.length} bytes, at most 8192)`);
  });

  it('exactly at the bound is fine; the bound is configurable', async () => {
    // The padding grows the token by 4/3 of its length (base64url); grow it until one more byte would not fit.
    const padded = (n: number): string => token('HS256', hs64, claims({ pad: 'p'.repeat(n) }));
    let pad = Math.floor(((8192 - padded(0).length) * 3) / 4) - 4;
    while (padded(pad + 1).length <= 8192) pad++;
    const jwt = padded(pad);
    assert.ok(jwt.length <= 8192 && jwt.length > 8186, `length ${jwt.length}`);
    await accepted(hsVerifier, jwt);
    const small = createJwtVerifier({ secret: secret64.toString('base64'), maxTokenBytes: 200 });
    await refused(small, jwt, `too large (${jwt.length} bytes, at most 200)`);
    const large = createJwtVerifier({ secret: secret64.toString('base64'), maxTokenBytes: 65536 });
    await accepted(large, token('HS256', hs64, claims({ pad: 'p'.repeat(20000) })));
  });
});

describe('permissions claim', () => {
  const withPermissions = (permissions: unknown): string => token('HS256', hs64, claims({ permissions }));

  it('missing → empty lists; given lists are returned as they are', async () => {
    assert.deepEqual((await accepted(hsVerifier, token('HS256', hs64, claims()))).permissions, { sub: [], pub: [], all: [] });
    const permissions = {
      sub: ['/news/*', '/users/{id}', '/a/b/c'],
      pub: ['/chat/room-1', '/x{y}z/~!@#$%^&()_+'],
      all: ['/*'],
    };
    assert.deepEqual((await accepted(hsVerifier, withPermissions(permissions))).permissions, permissions);
    assert.deepEqual((await accepted(hsVerifier, withPermissions({}))).permissions, { sub: [], pub: [], all: [] });
    assert.deepEqual((await accepted(hsVerifier, withPermissions({ all: [] }))).permissions, { sub: [], pub: [], all: [] });
  });

  it('wrong types are refused with what is wrong', async () => {
    await refused(hsVerifier, withPermissions(null), 'permissions claim: not an object (null)');
    await refused(hsVerifier, withPermissions(['/a']), 'permissions claim: not an object (array)');
    await refused(hsVerifier, withPermissions('/a'), 'permissions claim: not an object (string)');
    await refused(hsVerifier, withPermissions(true), 'permissions claim: not an object (boolean)');
    await refused(hsVerifier, withPermissions({ sub: '/a' }), 'permissions claim: sub is not an array');
    await refused(hsVerifier, withPermissions({ pub: null }), 'permissions claim: pub is not an array');
    await refused(hsVerifier, withPermissions({ all: { 0: '/a' } }), 'permissions claim: all is not an array');
    await refused(hsVerifier, withPermissions({ sub: ['/a', 7] }), 'permissions claim: sub[1] is not a string');
    await refused(hsVerifier, withPermissions({ pub: [['/a']] }), 'permissions claim: pub[0] is not a string');
    await refused(hsVerifier, withPermissions({ subscribe: ['/a'] }), 'permissions claim: unknown key "subscribe" (expected sub, pub, all)');
  });

  it('a bad pattern is refused, naming the list, the index and (the start of) the pattern', async () => {
    const cases: Array<[string, string]> = [
      ['a/b', '"a/b" does not begin with /'],
      ['', '"" does not begin with /'],
      ['/', '"/" has an empty segment'],
      ['/a//b', '"/a//b" has an empty segment'],
      ['/a/', '"/a/" has an empty segment'],
      ['/a b', '"/a b" has a character outside printable ASCII 0x21-0x7E'],
      ['/a\tb', '"/a?b" has a character outside printable ASCII 0x21-0x7E'],
      ['/caf\u00e9', '"/caf?" has a character outside printable ASCII 0x21-0x7E'],
      ['/a*', '"/a*" has * inside a segment (only a whole segment * is a wildcard)'],
      ['/a/**', '"/a/**" has * inside a segment (only a whole segment * is a wildcard)'],
      ['/a/*/b', '"/a/*/b" has segments after a wildcard (it already grants them all)'],
      ['/a/{id}/b', '"/a/{id}/b" has segments after a wildcard (it already grants them all)'],
    ];
    for (const [pattern, what] of cases) {
      await refused(hsVerifier, withPermissions({ sub: ['/ok', pattern] }), `permissions claim: sub[1] ${what}`);
    }
    await refused(hsVerifier, withPermissions({ all: ['/a//b'] }), 'permissions claim: all[0] "/a//b" has an empty segment');
  });

  it('a long pattern: 255 bytes is fine, 256 is refused, and the detail quotes only its start', async () => {
    const p255 = '/' + 'a'.repeat(254);
    await accepted(hsVerifier, withPermissions({ pub: [p255] }));
    const detail = await refused(hsVerifier, withPermissions({ pub: [p255 + 'a'] }), /^permissions claim: pub\[0\] "\/a{15}\.\.\." is longer than 255 bytes$/);
    assert.ok(detail.length < 80);
  });

  it(`at most ${MAX_PERMISSION_ENTRIES} entries in all`, async () => {
    const v = createJwtVerifier({ secret: secret64.toString('base64'), maxTokenBytes: 65536 });
    const list = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `/${prefix}${i}`);
    const ok = await accepted(v, withPermissions({ sub: list(500, 's'), pub: list(300, 'p'), all: list(200, 'a') }));
    assert.equal(ok.permissions.sub.length + ok.permissions.pub.length + ok.permissions.all.length, 1000);
    await refused(v, withPermissions({ sub: list(500, 's'), pub: list(300, 'p'), all: list(201, 'a') }), 'permissions claim: 1001 entries, at most 1000');
  });

  it('permissions are only looked at after the signature', async () => {
    const jwt = token('HS256', hmacSigner(crypto.randomBytes(64)), claims({ permissions: { sub: ['bad'] } }));
    await refused(hsVerifier, jwt, 'bad signature');
  });
});

describe('option errors say what to change', () => {
  it('secret or publicKey: exactly one', () => {
    optionsError({}, /give secret .* or publicKey/);
    optionsError({ secret: secret64.toString('base64'), publicKey: rsaPem }, /either secret .* or publicKey .*, not both/);
  });

  it('a secret that is not base64, or too short', () => {
    optionsError({ secret: '' }, /non-empty base64/);
    optionsError({ secret: 'not base64!' }, /not base64/);
    optionsError({ secret: 'abcde' }, /not base64/);
    optionsError({ secret: 'ab+_' + 'A'.repeat(60) }, /not base64/); // both alphabets mixed
    optionsError({ secret: crypto.randomBytes(16).toString('base64') }, /secret is 16 bytes; HS256 needs at least 32 bytes \(256 bits\)/);
    optionsError({ secret: secret48.toString('base64'), algorithms: ['HS512'] }, /secret is 48 bytes; HS512 needs at least 64 bytes/);
    optionsError({ secret: secret32.toString('base64'), algorithms: ['HS256', 'HS384'] }, /HS384 needs at least 48 bytes/);
  });

  it('algorithms: never none, only known names, only the key family', () => {
    optionsError({ secret: secret64.toString('base64'), algorithms: ['none'] }, /"none" .* never accepted/);
    optionsError({ publicKey: rsaPem, algorithms: ['RS256', 'none'] }, /"none" .* never accepted/);
    optionsError({ secret: secret64.toString('base64'), algorithms: [] }, /non-empty list/);
    optionsError({ secret: secret64.toString('base64'), algorithms: ['XS256'] }, /unknown algorithm "XS256"/);
    optionsError({ secret: secret64.toString('base64'), algorithms: ['RS256'] }, /RS256 cannot be used with a secret/);
    optionsError({ publicKey: rsaPem, algorithms: ['HS256'] }, /HS256 cannot be used with this RSA public key: it allows RS256, .*PS512/);
    optionsError({ publicKey: pem(p256.publicKey), algorithms: ['ES384'] }, /ES384 cannot be used with this EC \(prime256v1\) public key: it allows ES256/);
  });

  it('a PEM that does not parse, a private key, an unsupported key', () => {
    optionsError({ publicKey: 'hello' }, /must be PEM text/);
    const cut = rsaPem.slice(0, rsaPem.length / 2) + '\n-----END PUBLIC KEY-----\n';
    optionsError({ publicKey: cut }, /does not parse .* check the file is complete/);
    optionsError({ publicKey: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, /is a private key: give the public key/);
    optionsError({ publicKey: rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString() }, /is a private key/);
    const small = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 });
    optionsError({ publicKey: pem(small.publicKey) }, /1024-bit RSA key; .* at least 2048 bits/);
    const ed = crypto.generateKeyPairSync('ed25519');
    optionsError({ publicKey: pem(ed.publicKey) }, /ed25519 key; use an RSA key .* or an EC key/);
    const k1 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
    optionsError({ publicKey: pem(k1.publicKey) }, /curve secp256k1; supported curves are P-256/);
  });

  it('audience, issuer, maxTokenBytes, clockToleranceSeconds', () => {
    const secret = secret64.toString('base64');
    optionsError({ secret, audience: '' }, /audience must be a non-empty string/);
    optionsError({ secret, issuer: 5 as unknown as string }, /issuer must be a non-empty string/);
    optionsError({ secret, maxTokenBytes: 0 }, /maxTokenBytes must be an integer from 1 to 1048576 \(default 8192\)/);
    optionsError({ secret, maxTokenBytes: 100.5 }, /maxTokenBytes must be an integer/);
    optionsError({ secret, maxTokenBytes: 2 ** 21 }, /maxTokenBytes/);
    optionsError({ secret, clockToleranceSeconds: -1 }, /clockToleranceSeconds must be a number from 0 to 300/);
    optionsError({ secret, clockToleranceSeconds: Number.NaN }, /clockToleranceSeconds/);
  });
});
