// The entitlement keys of the configuration (src/config/schema.ts: Entitlement, Entitlement.*,
// PublishAllowFromAddressList) turned into what the entitlement code uses: the JWT verifier's options (the public
// key file read here), the checks the config loader runs on them at load, and address-list matching.
//
// Types come from schema.ts (SchemaConfig, which config.ts's Config equals) rather than config.ts, which imports
// this module for its cross-checks: no import cycle.
import * as fs from 'node:fs';
import { createPublicKey, type KeyObject } from 'node:crypto';
import type { SchemaConfig } from '../config/schema';
import { decodeBase64, inNetwork, parseAddressEntry, parseClientAddress } from '../config/types';
import { HMAC_MIN_SECRET_BYTES, JwtOptionsError, createJwtVerifier, type JwtOptions } from './jwt';

/** The keys JWT verification is configured with (any Config has them). */
export type JwtConfig = Pick<
  SchemaConfig,
  | 'Entitlement.JWT.Secret'
  | 'Entitlement.JWT.PublicKey'
  | 'Entitlement.JWT.Algorithms'
  | 'Entitlement.JWT.Audience'
  | 'Entitlement.JWT.Issuer'
>;

/** A key file larger than this is not a key: a PEM key or certificate is a few KiB, a chain a few dozen. */
const MAX_KEY_FILE_BYTES = 1024 * 1024;

/** Entitlement.JWT.PublicKey names a file that cannot be used; the message says what to change. */
export class KeyFileError extends Error {
  override name = 'KeyFileError';
}

/**
 * The PEM text of the public key file `file` (Entitlement.JWT.PublicKey). Throws KeyFileError when it cannot be
 * read, is not PEM, or holds a private key (refused: the server only verifies, and must not hold the key that
 * signs tokens). Whether the PEM parses, and as what key, is the verifier's check (createJwtVerifier).
 */
export function readPublicKeyFile(file: string): string {
  let text: string;
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) throw new KeyFileError(`${file} is not a file: give the path of a PEM public key file`);
    if (stat.size > MAX_KEY_FILE_BYTES) {
      throw new KeyFileError(`${file} is ${stat.size} bytes, not a key file (at most ${MAX_KEY_FILE_BYTES}): give the PEM public key file`);
    }
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(`cannot read ${file}: ${fsReason(err)}; give the path of a PEM public key file the server can read`);
  }
  if (/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) {
    throw new KeyFileError(
      `${file} holds a private key: the server must not hold the private key; give the public key: ` +
        `openssl pkey -in ${file} -pubout -out public.pem`,
    );
  }
  if (!text.includes('-----BEGIN ')) {
    throw new KeyFileError(
      `${file} is not PEM (no -----BEGIN line): give a PEM public key (-----BEGIN PUBLIC KEY-----) or certificate; ` +
        'a DER key converts with: openssl pkey -pubin -inform DER -in key.der -out public.pem',
    );
  }
  return text;
}

/**
 * The options of the JWT verifier (createJwtVerifier in ./jwt.ts) for a configuration with Entitlement = JWT:
 * `secret` or `publicKey` (the PEM text of the Entitlement.JWT.PublicKey file, read now), and `algorithms`,
 * `audience`, `issuer` when they are set. Throws KeyFileError if the key file cannot be used. A loaded
 * configuration has passed checkJwtConfig, so createJwtVerifier accepts the result unless the file changed since.
 */
export function jwtOptionsFromConfig(c: JwtConfig): JwtOptions {
  const file = c['Entitlement.JWT.PublicKey'];
  return optionsFrom(c, file === '' ? undefined : readPublicKeyFile(file));
}

function optionsFrom(c: JwtConfig, pem: string | undefined): JwtOptions {
  const options: JwtOptions = {};
  if (c['Entitlement.JWT.Secret'] !== '') options.secret = c['Entitlement.JWT.Secret'];
  if (pem !== undefined) options.publicKey = pem;
  if (c['Entitlement.JWT.Algorithms'].length > 0) options.algorithms = [...c['Entitlement.JWT.Algorithms']];
  if (c['Entitlement.JWT.Audience'] !== '') options.audience = c['Entitlement.JWT.Audience'];
  if (c['Entitlement.JWT.Issuer'] !== '') options.issuer = c['Entitlement.JWT.Issuer'];
  return options;
}

/** A problem checkJwtConfig found: the key to blame (its source labels the error line) and what is wrong. */
export interface JwtConfigProblem {
  key: 'Entitlement' | 'Entitlement.JWT.Secret' | 'Entitlement.JWT.PublicKey' | 'Entitlement.JWT.Algorithms';
  /** Completes "<where>: <key>: ", saying what to change. Never quotes the secret. */
  problem: string;
}

/**
 * The load-time checks of Entitlement = JWT (config.ts runs them as a cross-check): exactly one of Secret and
 * PublicKey; the key file readable, PEM, public, and a key the verifier supports; every listed algorithm one the
 * key allows (HS with a secret long enough for it; RS/PS with an RSA key, PS with RSA-PSS, the ES of an EC key's
 * curve); and the whole as the verifier will be built. Returns [] when the server can verify tokens with it.
 */
export function checkJwtConfig(c: JwtConfig): JwtConfigProblem[] {
  const secret = c['Entitlement.JWT.Secret'];
  const file = c['Entitlement.JWT.PublicKey'];
  const requested: string[] = c['Entitlement.JWT.Algorithms'];
  if (secret === '' && file === '') {
    return [{
      key: 'Entitlement',
      problem:
        'expected Entitlement.JWT.Secret or Entitlement.JWT.PublicKey to be set when JWT, got both empty: set Secret ' +
        'for HMAC-signed tokens (HS256/384/512) or PublicKey for RSA/EC-signed ones',
    }];
  }
  if (secret !== '' && file !== '') {
    return [{
      key: 'Entitlement.JWT.PublicKey',
      problem:
        'expected only one of Entitlement.JWT.Secret and Entitlement.JWT.PublicKey to be set, got both: keep Secret ' +
        'for HMAC-signed tokens or PublicKey for RSA/EC-signed ones, and remove the other',
    }];
  }

  let pem: string | undefined;
  if (secret !== '') {
    let allowed: readonly string[];
    try {
      allowed = createJwtVerifier({ secret }).algorithms;
    } catch (err) {
      return [{ key: 'Entitlement.JWT.Secret', problem: verifierMessage(err, 'secret', 'the secret') }];
    }
    const bad = requested.filter((a) => !allowed.includes(a));
    if (bad.length > 0) {
      const bytes = decodeBase64(secret)?.length ?? 0;
      const reasons = bad.map((a) =>
        a.startsWith('HS')
          ? `${a} needs a secret of at least ${HMAC_MIN_SECRET_BYTES[a]} bytes and Entitlement.JWT.Secret has ${bytes} ` +
            `(a longer one: openssl rand -base64 ${HMAC_MIN_SECRET_BYTES[a]})`
          : `${a} needs Entitlement.JWT.PublicKey instead of a secret`,
      );
      return [{
        key: 'Entitlement.JWT.Algorithms',
        problem: `expected algorithms that Entitlement.JWT.Secret allows (${allowed.join(', ')}), got ${bad.join(', ')}: ${reasons.join('; ')}`,
      }];
    }
  } else {
    try {
      pem = readPublicKeyFile(file);
    } catch (err) {
      if (err instanceof KeyFileError) return [{ key: 'Entitlement.JWT.PublicKey', problem: err.message }];
      throw err;
    }
    let key: KeyObject;
    try {
      key = createPublicKey({ key: pem, format: 'pem' });
    } catch (err) {
      return [{
        key: 'Entitlement.JWT.PublicKey',
        problem:
          `${file} does not parse as a PEM public key or certificate (${oneLine((err as Error)?.message)}): check that ` +
          'it is complete, BEGIN and END lines included',
      }];
    }
    let allowed: readonly string[];
    try {
      allowed = createJwtVerifier({ publicKey: pem }).algorithms;
    } catch (err) {
      return [{ key: 'Entitlement.JWT.PublicKey', problem: `${file}: ${verifierMessage(err, 'publicKey', 'the key')}` }];
    }
    const bad = requested.filter((a) => !allowed.includes(a));
    if (bad.length > 0) {
      return [{
        key: 'Entitlement.JWT.Algorithms',
        problem:
          `expected algorithms that the key in ${file} allows (${describeKey(key)}: ${allowed.join(', ')}), got ${bad.join(', ')}` +
          (bad.some((a) => a.startsWith('HS')) ? '; HS algorithms need Entitlement.JWT.Secret instead of a public key' : ''),
      }];
    }
  }
  // Everything together, as the server will build it.
  try {
    createJwtVerifier(optionsFrom(c, pem));
  } catch (err) {
    return [{ key: 'Entitlement', problem: `the JWT settings are refused: ${verifierMessage(err, '', '')}` }];
  }
  return [];
}

/** A JwtOptionsError's message with the option name at its start (`publicKey is ...`) put in the config's words. */
function verifierMessage(err: unknown, option: string, words: string): string {
  if (!(err instanceof JwtOptionsError)) throw err;
  return option && err.message.startsWith(`${option} `) ? `${words}${err.message.slice(option.length)}` : err.message;
}

/** "a 2048-bit RSA key", "an EC P-256 key", for error messages. */
function describeKey(key: KeyObject): string {
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return `a ${d.modulusLength}-bit RSA key`;
    case 'rsa-pss':
      return `a ${d.modulusLength}-bit RSA-PSS key${d.hashAlgorithm ? ` restricted to ${d.hashAlgorithm}` : ''}`;
    case 'ec': {
      const curve = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' }[d.namedCurve ?? ''] ?? d.namedCurve;
      return `an EC ${curve} key`;
    }
    default:
      return `a ${key.asymmetricKeyType} key`;
  }
}

function oneLine(text: unknown): string {
  return String(text ?? '').replace(/\s+/g, ' ').trim().slice(0, 200);
}

/** "ENOENT: no such file or directory, stat 'x'" -> "no such file or directory (ENOENT)". */
function fsReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!e?.code || !e.syscall) return oneLine(e?.message ?? err);
  const start = e.message.startsWith(`${e.code}: `) ? e.code.length + 2 : 0;
  const end = e.message.lastIndexOf(`, ${e.syscall}`);
  return `${e.message.slice(start, end > start ? end : undefined)} (${e.code})`;
}

/**
 * Whether `address`, a client address as Node.js reports it (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`,
 * `fe80::1%eth0`), is inside one of the networks of `list` (PublishAllowFromAddressList's value: canonical
 * `"<address>/<bits>"` strings; any entry the key accepts works). An IPv4 client is matched by IPv4 entries also
 * in its IPv4-mapped IPv6 form; IPv4 and IPv6 entries never match each other's addresses. An empty list matches
 * nothing (see mayPublishFrom for the key's meaning), and so does something that is not an address. Throws
 * RangeError for an entry that is not an address or network. (The native side matches on its own; this is for
 * the Custom hook's logs and for tests.)
 */
export function matchesAddressList(list: readonly string[], address: string): boolean {
  const bytes = parseClientAddress(address);
  let found = false;
  for (const entry of list) {
    const parsed = parseAddressEntry(entry);
    if ('problem' in parsed) throw new RangeError(`address list entry ${parsed.problem}`);
    if (bytes && inNetwork(bytes, parsed.network)) found = true;
  }
  return found;
}

/** PublishAllowFromAddressList's rule: an empty list lets every address publish, else the address must match. */
export function mayPublishFrom(list: readonly string[], address: string): boolean {
  return list.length === 0 || matchesAddressList(list, address);
}
