// The kit of the entitlement suites (test/13.entitlement, 14.entitlement-*, 93.entitlement-browser): tokens
// made independently of the code under test (JSON, base64url and signatures with Node's crypto, as in
// test/12.jwt.test.ts), PEM key files in a temporary directory, and a `ws` client that queues every message from
// the moment it is created (a `?token=` answer can arrive in the same packet as the 101: nothing may be lost).
import { after } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import type { Server } from '../src/index';
import { TIMEOUT_MS, within } from './helpers';

// ---------------------------------------------------------------------------------------------------
// Tokens

export const b64u = (data: string | Buffer): string => Buffer.from(data).toString('base64url');
/** A JWT part: an object is JSON-encoded; a string is taken as the JSON text itself. */
export const part = (value: object | string): string => b64u(typeof value === 'string' ? value : JSON.stringify(value));

export type Signer = (alg: string, input: string) => Buffer;
export const hmacSigner = (secret: Buffer | string): Signer => (alg, input) =>
  crypto.createHmac(`sha${alg.slice(2)}`, secret).update(input).digest();
export const rsaSigner = (key: crypto.KeyObject): Signer => (alg, input) => crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), key);
export const ecSigner = (key: crypto.KeyObject): Signer => (alg, input) =>
  crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });

/** A signed compact JWS of `payload` with header `{alg, typ: 'JWT'}` (or `header` when given). */
export function signJwt(alg: string, signer: Signer, payload: object | string, header?: object | string): string {
  const input = `${part(header ?? { alg, typ: 'JWT' })}.${part(payload)}`;
  return `${input}.${b64u(signer(alg, input))}`;
}

export const nowS = (): number => Math.floor(Date.now() / 1000);

/** The `permissions` claim / a Custom grant's lists. */
export interface Perms {
  sub?: string[];
  pub?: string[];
  all?: string[];
}

/** An HMAC issuer: a random secret (base64 for the server's Entitlement.JWT.Secret) and HS256 tokens. */
export class HsIssuer {
  readonly secret = crypto.randomBytes(32);
  readonly base64 = this.secret.toString('base64');
  /** HS256 token with `permissions` and an `exp` `ttl` seconds from now, plus `extra` claims. */
  token(permissions: Perms | undefined, ttl = 3600, extra: object = {}): string {
    const claims: Record<string, unknown> = { exp: nowS() + ttl, ...extra };
    if (permissions !== undefined) claims.permissions = permissions;
    return signJwt('HS256', hmacSigner(this.secret), claims);
  }
  /** HS256 token of exactly these claims. */
  raw(claims: object | string, header?: object | string): string {
    return signJwt('HS256', hmacSigner(this.secret), claims, header);
  }
}

// ---------------------------------------------------------------------------------------------------
// Files

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Writes `text` into a new temporary directory (removed when the file's tests end); returns the path. */
export function tempFile(name: string, text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-entitlement-'));
  dirs.push(dir);
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

export const spkiPem = (k: crypto.KeyObject): string => k.export({ type: 'spki', format: 'pem' }).toString();

// ---------------------------------------------------------------------------------------------------
// A client that loses nothing

const open = new Set<WebSocket>();
after(() => {
  for (const ws of open) ws.terminate();
});

export interface Closed {
  code: number;
  reason: string;
}

let pings = 0;

/** A `ws` client whose messages queue from the moment it is created (texts only are expected here). */
export class EClient {
  readonly ws: WebSocket;
  readonly closed: Promise<Closed>;
  closedWith: Closed | null = null;
  private readonly queue: string[] = [];
  private waiter: (() => void) | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, binary: boolean) => {
      this.queue.push(binary ? `<binary ${data.length}>` : data.toString('utf8'));
      this.wake();
    });
    ws.on('error', () => {});
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closedWith = { code, reason: reason.toString() };
        open.delete(ws);
        this.wake();
        resolve(this.closedWith);
      }),
    );
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /**
   * Opens a connection to `server` (or a URL); `token` goes on the URL as `?token=` exactly as given (encode it
   * first if it needs encoding). Waits for the handshake.
   */
  static async open(target: Server | string, o: { token?: string; localAddress?: string } = {}): Promise<EClient> {
    let url = typeof target === 'string' ? target : target.url;
    if (o.token !== undefined) url += `${url.includes('?') ? '&' : '?'}token=${o.token}`;
    const ws = new WebSocket(url, { perMessageDeflate: false, ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
    open.add(ws);
    const c = new EClient(ws); // listening before the 101 arrives
    await within(
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected HTTP ${res.statusCode}`)));
      }),
      `the WebSocket handshake with ${url.slice(0, 120)}`,
    );
    return c;
  }

  send(text: string): void {
    this.ws.send(text);
  }

  /** The next message. Fails if none arrives in time or the connection closes first. */
  async next(what = 'a message', ms = TIMEOUT_MS): Promise<string> {
    const wait = async (): Promise<string> => {
      for (;;) {
        const m = this.queue.shift();
        if (m !== undefined) return m;
        if (this.closedWith) throw new Error(`connection closed (${JSON.stringify(this.closedWith)}) while waiting for ${what}`);
        await new Promise<void>((r) => (this.waiter = r));
      }
    };
    return within(wait(), what, ms);
  }

  /** The next message, which must equal `text`. */
  async expect(text: string): Promise<void> {
    assert.equal(await this.next(JSON.stringify(text)), text);
  }

  /** Sends `AUTH <token>` and returns the answer (which must be an AUTH line). */
  async auth(token: string): Promise<string> {
    this.send(`AUTH ${token}`);
    const answer = await this.next('the AUTH answer');
    assert.match(answer, /^AUTH /, `expected an AUTH answer, got ${JSON.stringify(answer.slice(0, 200))}`);
    return answer;
  }

  /** Sends the commands and a PING barrier; returns every message that came before the PONG. */
  async replies(...commands: string[]): Promise<string[]> {
    for (const c of commands) this.send(c);
    const token = `e${++pings}`;
    this.send(`PING ${token}`);
    const before: string[] = [];
    for (;;) {
      const m = await this.next(`PONG ${token}`);
      if (m === `PONG ${token}`) return before;
      before.push(m);
    }
  }

  /** Sends the commands; fails if anything comes back before the PING barrier's PONG. */
  async command(...commands: string[]): Promise<void> {
    assert.deepEqual(await this.replies(...commands), [], `unexpected replies to ${JSON.stringify(commands.map((c) => c.slice(0, 80)))}`);
  }

  /** Messages received and not yet taken. */
  taken(): string[] {
    return this.queue.splice(0);
  }

  get pending(): number {
    return this.queue.length;
  }

  async close(): Promise<void> {
    if (!this.closedWith) this.ws.close(1000);
    await within(this.closed, 'the close handshake');
  }

  terminate(): void {
    this.ws.terminate();
  }
}

/** Opens a client and presents `token`; fails unless it is accepted. */
export async function entitledClient(server: Server, token: string, o: { localAddress?: string } = {}): Promise<EClient> {
  const c = await EClient.open(server, o);
  assert.match(await c.auth(token), /^AUTH ok \d+$/);
  return c;
}

/** MSG header → subject (fails if `m` is not a MSG). */
export function msgSubject(m: string): string {
  const match = /^MSG (\S+) [0-9a-z]+:[0-9]+(?: \S+)?\n/.exec(m);
  assert.ok(match, `expected a MSG, got ${JSON.stringify(m.slice(0, 120))}`);
  return match[1];
}

/**
 * Proves `server` still serves entitled clients: a fresh subscriber and publisher presenting `token` (which must
 * grant subscribing and publishing on `subject`) complete a SUB / PUB / MSG round trip.
 */
export async function assertServesWith(server: Server, token: string, subject: string): Promise<void> {
  const sub = await entitledClient(server, token);
  const pub = await entitledClient(server, token);
  await sub.command(`SUB ${subject}`);
  pub.send(`PUB ${subject} h1\nstill serving`);
  await pub.expect('ACK h1');
  const m = await sub.next(`the health-check message on ${subject}`);
  assert.equal(msgSubject(m), subject);
  assert.ok(m.endsWith('\nstill serving'));
  await Promise.all([sub.close(), pub.close()]);
}
