// Entitlement = JWT: the token verifier (PROTOCOL.md "Entitlement"). Signatures and the registered claims are
// checked by `jose` (a maintained JOSE library; no crypto is written here); this file chooses the keys and the
// algorithms they may be used with, bounds the input, and checks Starling's own `permissions` claim.
//
// The server builds one from `Entitlement.JWT.*` (./config.ts reads the PEM file; this module takes PEM text) and
// the Authorizer (./authorizer.ts) calls it once per distinct token.
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { jwtVerify } from 'jose';

/**
 * How tokens are verified. Exactly one of `secret` and `publicKey` is given.
 *
 * - `secret`: the HMAC key, base64 (the standard alphabet with optional `=` padding; the base64url alphabet is
 *   accepted too). It must be at least as long as the hash: 32 bytes for HS256, 48 for HS384, 64 for HS512
 *   (RFC 7518 §3.2). Without `algorithms`, every HS algorithm the secret is long enough for is accepted (a
 *   32-byte secret: HS256 only; a 64-byte one: HS256, HS384 and HS512).
 * - `publicKey`: a PEM public key (`BEGIN PUBLIC KEY`, `BEGIN RSA PUBLIC KEY`) or certificate. An RSA key (at
 *   least 2048 bits) allows RS256/384/512 and PS256/384/512; an RSA-PSS key only PS (the one its parameters name,
 *   if they name one); an EC key only the ES algorithm of its curve (P-256: ES256, P-384: ES384, P-521: ES512).
 *   HS algorithms are never accepted with a public key, so a token "signed" with the public key as an HMAC
 *   secret (the HS/RS confusion) is refused. A private key is refused: the server must not hold it.
 * - `algorithms`: narrows the accepted algorithms; each must be one the key allows. `none` is never accepted.
 * - `audience` / `issuer`: when set, the token's `aud` (a string, or an array containing it) / `iss` must match.
 * - `maxTokenBytes`: a longer token (UTF-8 bytes) is refused before anything is decoded. Default 8192.
 * - `clockToleranceSeconds`: slack for clocks that differ between issuer and server, applied to `exp` and `nbf`.
 *   Default 0, at most 300.
 */
export interface JwtOptions {
  secret?: string;
  publicKey?: string;
  algorithms?: string[];
  audience?: string;
  issuer?: string;
  maxTokenBytes?: number;
  clockToleranceSeconds?: number;
}

/** The subjects a token grants: patterns as in PROTOCOL.md (a `*` or `{name}` segment grants it and below). */
export interface JwtPermissions {
  /** May subscribe to. */
  sub: string[];
  /** May publish to. */
  pub: string[];
  /** May subscribe and publish to. */
  all: string[];
}

/**
 * The answer for one token. `expiry` is the `exp` claim (unix seconds, a finite number, possibly fractional);
 * `permissions` lists are empty when the token has no `permissions` claim (or leaves a list out). `detail` is
 * short printable ASCII, safe to put in an `ERR` line or a log: it never contains more than a few characters of
 * the token. One of:
 * `too large (N bytes, at most M)`, `malformed`, `algorithm not allowed`, `bad signature`, `not supported`,
 * `expired`, `not yet valid`, `no exp claim`, `<claim> claim: not a number` (exp, nbf, iat),
 * `exp claim: not finite`, `audience`, `audience (no aud claim)`, `issuer`, `issuer (no iss claim)`,
 * `permissions claim: <what is wrong>`, `refused (<reason>)` (an unexpected library error; not expected).
 */
export type JwtDecision =
  | { ok: true; expiry: number; permissions: JwtPermissions }
  | { ok: false; detail: string };

/** A configured verifier. */
export interface JwtVerifier {
  /** The `alg` values accepted, e.g. for the startup log. */
  readonly algorithms: readonly string[];
  /**
   * Verifies `token` (the compact JWS form). Never throws and never rejects: a bad token (or a value that is not
   * a string) is an `{ ok: false }` answer. Checks, in order: size, shape, `alg`, signature, then the claims.
   */
  verify(token: string): Promise<JwtDecision>;
}

/** A JwtOptions mistake; the message says what to change. */
export class JwtOptionsError extends Error {
  override name = 'JwtOptionsError';
}

/** Default bound on a token's size: ample for a header, the registered claims and a few dozen patterns. */
export const DEFAULT_MAX_TOKEN_BYTES = 8192;
/** Largest `maxTokenBytes` accepted: tokens arrive in one protocol line or URL; beyond this is a config mistake. */
export const MAX_TOKEN_BYTES_LIMIT = 1024 * 1024;
/** Largest `clockToleranceSeconds`: more would make `exp` meaningless. */
export const MAX_CLOCK_TOLERANCE_SECONDS = 300;
/**
 * Most patterns one token may carry (sub + pub + all together). Every SUB/PUB of the connection is matched
 * against them and they are kept for the connection's life, so the count bounds both per-connection memory and
 * per-command work, whatever `maxTokenBytes` is raised to.
 */
export const MAX_PERMISSION_ENTRIES = 1000;
/** A pattern is at most as long as a subject may be (PROTOCOL.md: 255 bytes). */
export const MAX_PATTERN_BYTES = 255;
/** Smallest secret for each HMAC algorithm, in bytes: the hash's output size (RFC 7518 §3.2). */
export const HMAC_MIN_SECRET_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 };

const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'];
const RSA_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const PSS_ALGORITHMS = ['PS256', 'PS384', 'PS512'];
const EC_CURVE_ALGORITHM: Readonly<Record<string, string>> = {
  prime256v1: 'ES256',
  secp384r1: 'ES384',
  secp521r1: 'ES512',
};
const MIN_RSA_BITS = 2048;
/** How many characters of a token value a detail may quote. */
const EXCERPT_CHARS = 16;

/**
 * Builds a verifier from `options`, checking them first. Throws JwtOptionsError (with what to change) for:
 * both or neither of `secret`/`publicKey`; a secret that is not base64 or too short for its algorithms; a PEM
 * that does not parse, is a private key, or is a key type/size without a supported algorithm; an algorithm
 * that is unknown, `none`, or not usable with the key; a bad audience/issuer/maxTokenBytes/clockToleranceSeconds.
 */
export function createJwtVerifier(options: JwtOptions): JwtVerifier {
  if (options === null || typeof options !== 'object') throw new JwtOptionsError('JWT options must be an object');
  const hasSecret = options.secret !== undefined;
  const hasKey = options.publicKey !== undefined;
  if (hasSecret === hasKey) {
    throw new JwtOptionsError(
      hasSecret
        ? 'give either secret (HMAC) or publicKey (RSA/EC), not both'
        : 'give secret (base64 HMAC key, for HS256/384/512) or publicKey (PEM, for RS/PS/ES algorithms)',
    );
  }
  const requested = checkAlgorithmsOption(options.algorithms);
  let key: KeyObject;
  let allowed: string[];
  if (hasSecret) ({ key, allowed } = secretKey(options.secret, requested));
  else ({ key, allowed } = publicKey(options.publicKey, requested));

  const audience = optionalText('audience', options.audience);
  const issuer = optionalText('issuer', options.issuer);
  const maxTokenBytes = boundedNumber(
    'maxTokenBytes', options.maxTokenBytes, DEFAULT_MAX_TOKEN_BYTES, 1, MAX_TOKEN_BYTES_LIMIT, true);
  const clockTolerance = boundedNumber(
    'clockToleranceSeconds', options.clockToleranceSeconds, 0, 0, MAX_CLOCK_TOLERANCE_SECONDS, false);

  const verifyOptions = {
    algorithms: allowed,
    requiredClaims: ['exp'],
    clockTolerance,
    ...(audience !== undefined ? { audience } : {}),
    ...(issuer !== undefined ? { issuer } : {}),
  };

  return {
    algorithms: Object.freeze([...allowed]),
    async verify(token: string): Promise<JwtDecision> {
      try {
        if (typeof token !== 'string') return refuse('malformed');
        // Size first, before any decoding (counting UTF-8 bytes is not parsing).
        const bytes = Buffer.byteLength(token);
        if (bytes > maxTokenBytes) return refuse(`too large (${bytes} bytes, at most ${maxTokenBytes})`);
        // Shape: three base64url parts (no padding, no other characters). Node's base64url decoding skips
        // characters outside the alphabet, so this is what keeps garbage from being half-decoded.
        if (!COMPACT_JWS.test(token)) return refuse('malformed');
        let payload: Record<string, unknown>;
        try {
          ({ payload } = await jwtVerify(token, key, verifyOptions));
        } catch (err) {
          return refuse(joseDetail(err));
        }
        const exp = payload.exp;
        if (typeof exp !== 'number') return refuse('exp claim: not a number'); // jose checked; belt and braces
        if (!Number.isFinite(exp)) return refuse('exp claim: not finite');
        const permissions = checkPermissions(payload.permissions);
        if (typeof permissions === 'string') return refuse(`permissions claim: ${permissions}`);
        return { ok: true, expiry: exp, permissions };
      } catch (err) {
        return refuse(`refused (${printable(err instanceof Error ? err.name : typeof err)})`);
      }
    },
  };
}

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function refuse(detail: string): JwtDecision {
  return { ok: false, detail };
}

/** The detail for an error thrown by jose's jwtVerify (its messages are not passed on). */
function joseDetail(err: unknown): string {
  const e = err as { code?: unknown; claim?: unknown; reason?: unknown; name?: unknown };
  switch (e?.code) {
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return 'malformed';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'algorithm not allowed';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'bad signature';
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'not supported';
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const claim = e.claim;
      const missing = e.reason === 'missing';
      if (claim === 'exp') return missing ? 'no exp claim' : 'exp claim: not a number';
      if (claim === 'nbf') return e.reason === 'check_failed' ? 'not yet valid' : 'nbf claim: not a number';
      if (claim === 'iat') return 'iat claim: not a number';
      if (claim === 'aud') return missing ? 'audience (no aud claim)' : 'audience';
      if (claim === 'iss') return missing ? 'issuer (no iss claim)' : 'issuer';
      return `${printable(String(claim))} claim`;
    }
    default:
      return `refused (${printable(typeof e?.name === 'string' ? e.name : 'error')})`;
  }
}

/** `s` cut to a few printable ASCII characters (others become `?`), for a detail. */
function printable(s: string): string {
  const cut = s.length > EXCERPT_CHARS ? s.slice(0, EXCERPT_CHARS) + '...' : s;
  return cut.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * The `permissions` claim as lists, or what is wrong with it. Absent → all lists empty. Otherwise an object
 * whose only keys are `sub`, `pub`, `all`, each (optional) an array of patterns, at most MAX_PERMISSION_ENTRIES
 * in all.
 */
function checkPermissions(claim: unknown): JwtPermissions | string {
  const out: JwtPermissions = { sub: [], pub: [], all: [] };
  if (claim === undefined) return out;
  if (claim === null || typeof claim !== 'object' || Array.isArray(claim)) {
    return `not an object (${claim === null ? 'null' : Array.isArray(claim) ? 'array' : typeof claim})`;
  }
  const record = claim as Record<string, unknown>;
  for (const name of Object.keys(record)) {
    if (name !== 'sub' && name !== 'pub' && name !== 'all') return `unknown key "${printable(name)}" (expected sub, pub, all)`;
  }
  let total = 0;
  for (const name of ['sub', 'pub', 'all'] as const) {
    const list = record[name];
    if (list === undefined) continue;
    if (!Array.isArray(list)) return `${name} is not an array`;
    total += list.length;
  }
  if (total > MAX_PERMISSION_ENTRIES) return `${total} entries, at most ${MAX_PERMISSION_ENTRIES}`;
  for (const name of ['sub', 'pub', 'all'] as const) {
    const list = record[name] as unknown[] | undefined;
    if (list === undefined) continue;
    for (let i = 0; i < list.length; i++) {
      const pattern = list[i];
      if (typeof pattern !== 'string') return `${name}[${i}] is not a string`;
      const wrong = patternProblem(pattern);
      if (wrong) return `${name}[${i}] "${printable(pattern)}" ${wrong}`;
      out[name].push(pattern);
    }
  }
  return out;
}

/**
 * What makes `p` not a pattern, or '' if it is one. A pattern is a subject (PROTOCOL.md: `/` then non-empty
 * segments of printable ASCII except space, `/` and `*`; at most 255 bytes) whose segments may also be
 * wildcards: `*` or `{name}`. A wildcard grants its segment and everything below, so it must be the last
 * segment: `/a/{id}/b` would grant `/a/x/y` too, which is not what it says, and is refused.
 */
function patternProblem(p: string): string {
  if (p.length > MAX_PATTERN_BYTES) return `is longer than ${MAX_PATTERN_BYTES} bytes`;
  if (!p.startsWith('/')) return 'does not begin with /';
  if (!/^[\x21-\x7e]*$/.test(p)) return 'has a character outside printable ASCII 0x21-0x7E';
  const segments = p.slice(1).split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === '') return 'has an empty segment';
    const wildcard = s === '*' || /^\{[^{}]+\}$/.test(s);
    if (!wildcard && s.includes('*')) return 'has * inside a segment (only a whole segment * is a wildcard)';
    if (wildcard && i !== segments.length - 1) return 'has segments after a wildcard (it already grants them all)';
  }
  return '';
}

// ---- options ----

function checkAlgorithmsOption(algorithms: unknown): string[] | undefined {
  if (algorithms === undefined) return undefined;
  if (!Array.isArray(algorithms) || algorithms.length === 0 || algorithms.some((a) => typeof a !== 'string')) {
    throw new JwtOptionsError('algorithms must be a non-empty list of names such as HS256, RS256, ES256 (or left out)');
  }
  for (const a of algorithms as string[]) {
    if (a.toLowerCase() === 'none') {
      throw new JwtOptionsError('algorithm "none" (unsigned tokens) is never accepted: remove it from algorithms');
    }
    if (!HMAC_ALGORITHMS.includes(a) && !RSA_ALGORITHMS.includes(a) && !Object.values(EC_CURVE_ALGORITHM).includes(a)) {
      throw new JwtOptionsError(
        `unknown algorithm "${printable(a)}": use HS256/384/512 (secret), RS256/384/512 or PS256/384/512 ` +
          '(RSA public key), ES256/384/512 (EC public key)',
      );
    }
  }
  return [...new Set(algorithms as string[])];
}

function secretKey(secret: unknown, requested: string[] | undefined): { key: KeyObject; allowed: string[] } {
  if (typeof secret !== 'string' || secret === '') throw new JwtOptionsError('secret must be a non-empty base64 string');
  const bytes = decodeBase64(secret);
  if (!bytes) {
    throw new JwtOptionsError(
      'secret is not base64 (letters, digits, + and /, with = padding; - and _ also accepted): ' +
        'encode the key, e.g. openssl rand -base64 64',
    );
  }
  if (requested) {
    for (const a of requested) {
      if (!HMAC_ALGORITHMS.includes(a)) {
        throw new JwtOptionsError(`algorithm ${a} cannot be used with a secret: use HS256, HS384 or HS512, or give publicKey`);
      }
      if (bytes.length < HMAC_MIN_SECRET_BYTES[a]) throw new JwtOptionsError(shortSecret(bytes.length, a));
    }
  } else if (bytes.length < HMAC_MIN_SECRET_BYTES.HS256) {
    throw new JwtOptionsError(shortSecret(bytes.length, 'HS256'));
  }
  const allowed = requested ?? HMAC_ALGORITHMS.filter((a) => bytes.length >= HMAC_MIN_SECRET_BYTES[a]);
  return { key: createSecretKey(bytes), allowed };
}

function shortSecret(length: number, alg: string): string {
  const min = HMAC_MIN_SECRET_BYTES[alg];
  return `secret is ${length} bytes; ${alg} needs at least ${min} bytes (${min * 8} bits): ` +
    `use a longer secret, e.g. openssl rand -base64 ${min}`;
}

/** The bytes of base64 (or base64url) text, or undefined if it is not that. */
function decodeBase64(text: string): Buffer | undefined {
  const standard = /^[A-Za-z0-9+/]+={0,2}$/.test(text);
  const url = /^[A-Za-z0-9_-]+={0,2}$/.test(text);
  if (!standard && !url) return undefined;
  const body = text.replace(/=+$/, '');
  if (body.length % 4 === 1) return undefined;
  if (body.length !== text.length && text.length % 4 !== 0) return undefined; // padding, but the wrong amount
  return Buffer.from(body, url && !standard ? 'base64url' : 'base64');
}

function publicKey(pem: unknown, requested: string[] | undefined): { key: KeyObject; allowed: string[] } {
  if (typeof pem !== 'string' || !pem.includes('-----BEGIN ')) {
    throw new JwtOptionsError('publicKey must be PEM text (-----BEGIN PUBLIC KEY----- ...)');
  }
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new JwtOptionsError(
      'publicKey is a private key: give the public key instead (openssl pkey -in key.pem -pubout); ' +
        'the server only verifies and must not hold the signing key',
    );
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new JwtOptionsError(
      `publicKey does not parse as a PEM public key or certificate (${printable((err as Error)?.message ?? '')}): ` +
        'check the file is complete, including the BEGIN/END lines',
    );
  }
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  let family: string[];
  if (type === 'rsa' || type === 'rsa-pss') {
    const bits = details.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) {
      throw new JwtOptionsError(
        `publicKey is a ${bits}-bit RSA key; RS/PS algorithms need at least ${MIN_RSA_BITS} bits: use a larger key`);
    }
    family = type === 'rsa' ? RSA_ALGORITHMS : PSS_ALGORITHMS;
    if (type === 'rsa-pss' && details.hashAlgorithm) family = family.filter((a) => `sha${a.slice(2)}` === details.hashAlgorithm);
  } else if (type === 'ec') {
    const alg = EC_CURVE_ALGORITHM[details.namedCurve ?? ''];
    if (!alg) {
      throw new JwtOptionsError(
        `publicKey is an EC key on curve ${details.namedCurve ?? '(unknown)'}; supported curves are ` +
          'P-256 (ES256), P-384 (ES384) and P-521 (ES512)',
      );
    }
    family = [alg];
  } else {
    throw new JwtOptionsError(
      `publicKey is a ${type ?? 'unknown'} key; use an RSA key (RS/PS algorithms) or an EC key (ES algorithms)`);
  }
  if (family.length === 0) {
    throw new JwtOptionsError(`publicKey is an RSA-PSS key restricted to ${details.hashAlgorithm}, which no PS algorithm uses`);
  }
  if (requested) {
    for (const a of requested) {
      if (!family.includes(a)) {
        throw new JwtOptionsError(
          `algorithm ${a} cannot be used with this ${type === 'ec' ? `EC (${details.namedCurve})` : type.toUpperCase()} ` +
            `public key: it allows ${family.join(', ')}`,
        );
      }
    }
  }
  return { key, allowed: requested ?? [...family] };
}

function optionalText(name: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new JwtOptionsError(`${name} must be a non-empty string (or left out)`);
  return value;
}

function boundedNumber(name: string, value: unknown, dflt: number, min: number, max: number, integer: boolean): number {
  if (value === undefined) return dflt;
  const fits = typeof value === 'number' && Number.isFinite(value) && (!integer || Number.isInteger(value)) &&
    value >= min && value <= max;
  if (!fits) {
    throw new JwtOptionsError(`${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max} (default ${dflt})`);
  }
  return value;
}
