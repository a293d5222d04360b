// Randomized entitlement: hundreds of tokens with random sub/pub/all lists (exact subjects and `*` / `{name}`
// wildcards as the last segment) over a small subject space, so that grants and refusals are both common; tens of
// thousands of SUB and PUB decisions, renewals that revoke, and a delivery check, all compared with a reference
// model written here from PROTOCOL.md. Runs with Entitlement = JWT (tokens signed here) and = Custom (the same
// grants from a hook, which skips jwt.ts's pattern check: the native matcher alone decides).
//
// ENTITLEMENT_SEED=<n> replays a run; every failure message names the seed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from '../src/index';
import { perWorkgroup, startServer } from './helpers';
import { EClient, HsIssuer, msgSubject, type Perms } from './entitlement-kit';

const SEED = (Number(process.env.ENTITLEMENT_SEED ?? 0x5eed1e) >>> 0) || 1;
const TOKENS = 300;
const SUITE = { timeout: 120_000 };
const BY_TOKEN = 'not permitted by the token';
const RENEWED = 'not permitted by the renewed token';

/** mulberry32: a small seeded PRNG, [0, 1). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Segments chosen so that prefixes nearly collide: /xy is not under /x/, /x is not /x/anything.
const SEGMENTS = ['x', 'y', 'xy'];
const SUBJECTS: string[] = [];
for (const a of SEGMENTS) {
  SUBJECTS.push(`/${a}`);
  for (const b of SEGMENTS) {
    SUBJECTS.push(`/${a}/${b}`);
    for (const c of SEGMENTS) SUBJECTS.push(`/${a}/${b}/${c}`);
  }
}
const WILDCARDS = ['*', '{id}', '{name}', '{x}'];

// ---- the reference model (PROTOCOL.md "Entitlement") ----

/** A pattern grants a subject equal to it, or (last segment a wildcard) every subject below its prefix. */
function grants(pattern: string, subject: string): boolean {
  if (pattern === subject) return true;
  const last = pattern.slice(pattern.lastIndexOf('/') + 1);
  if (last !== '*' && !/^\{[^{}]+\}$/.test(last)) return false;
  const prefix = pattern.slice(0, pattern.length - last.length); // up to and including the '/'
  return subject.startsWith(prefix) && subject.length > prefix.length;
}
const maySubscribe = (p: Perms, s: string) => [...(p.sub ?? []), ...(p.all ?? [])].some((x) => grants(x, s));
const mayPublish = (p: Perms, s: string) => [...(p.pub ?? []), ...(p.all ?? [])].some((x) => grants(x, s));

// ---- random grants ----

function generator(random: () => number) {
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
  const pattern = (): string => {
    const r = random();
    if (r < 0.45) return pick(SUBJECTS);
    if (r < 0.5) return pick(['/z', '/x/z', '/xy/xy/xy/x', '/y/x/y/z']); // outside the space: grants nothing here
    const depth = random() < 0.04 ? 0 : random() < 0.5 ? 1 : 2;
    let prefix = '';
    for (let i = 0; i < depth; i++) prefix += `/${pick(SEGMENTS)}`;
    return `${prefix}/${pick(WILDCARDS)}`;
  };
  const list = (max: number): string[] | undefined => (random() < 0.2 ? undefined : Array.from({ length: Math.floor(random() * (max + 1)) }, pattern));
  const perms = (): Perms => {
    const p: Perms = {};
    const sub = list(3);
    const pub = list(3);
    const all = random() < 0.5 ? list(2) : undefined;
    if (sub) p.sub = sub;
    if (pub) p.pub = pub;
    if (all) p.all = all;
    return p;
  };
  const shuffled = <T>(xs: T[]): T[] => {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  };
  return { perms, shuffled, random };
}

/** How tokens are made for a mode: a signed JWT, or a name the Custom hook looks up. */
interface Mode {
  name: 'JWT' | 'Custom';
  server: () => Server;
  token: (p: Perms) => string;
}

function jwtMode(): Mode {
  const issuer = new HsIssuer();
  return { name: 'JWT', server: () => startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64 }), token: (p) => issuer.token(p) };
}

function customMode(): Mode {
  const grants = new Map<string, Perms>();
  return {
    name: 'Custom',
    server: () =>
      startServer({
        Entitlement: 'Custom',
        authorize: async (token: string) => {
          const p = grants.get(token);
          return p ? { sub: p.sub, pub: p.pub, all: p.all } : null;
        },
      }),
    token: (p) => {
      const t = `grant-${grants.size}`;
      grants.set(t, p);
      return t;
    },
  };
}

interface Conn {
  client: EClient;
  perms: Perms;
  /** Subjects it holds a subscription to (the model's view). */
  subs: Set<string>;
}

/** Splits replies into the answers and the MSGs among them (probe PUBs of later phases deliver to subscribers). */
function split(lines: string[]): { answers: string[]; msgs: { subject: string; delivery: boolean }[] } {
  const answers: string[] = [];
  const msgs: { subject: string; delivery: boolean }[] = [];
  for (const l of lines) {
    if (l.startsWith('MSG ')) msgs.push({ subject: msgSubject(l), delivery: l.endsWith('\ndelivery') });
    else answers.push(l);
  }
  return { answers, msgs };
}

async function inBatches<T>(items: T[], size: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map((x, k) => fn(x, i + k)));
}

async function run(mode: Mode, seed: number): Promise<void> {
  const tag = `[${mode.name}, ENTITLEMENT_SEED=${seed}]`;
  const g = generator(rng(seed));
  const server = mode.server();
  const tally = { subAllowed: 0, subDenied: 0, pubAllowed: 0, pubDenied: 0, revoked: 0 };

  // 1. Connect and present a random token (every fourth on the URL, the rest with AUTH).
  const conns: Conn[] = Array.from({ length: TOKENS }, () => ({ client: null as unknown as EClient, perms: g.perms(), subs: new Set<string>() }));
  const counters0 = server.stats().total;
  await inBatches(conns, 50, async (c, i) => {
    const token = mode.token(c.perms);
    if (i % 4 === 0) {
      c.client = await EClient.open(server, { token: encodeURIComponent(token) });
      assert.match(await c.client.next('the ?token= answer'), /^AUTH ok \d+$/, `${tag} connection ${i}`);
    } else {
      c.client = await EClient.open(server);
      assert.match(await c.client.auth(token), /^AUTH ok \d+$/, `${tag} connection ${i}`);
    }
  });

  // 2. PUB on every subject (before anyone subscribes): ACK or ERR forbidden, as the model says.
  await inBatches(conns, 50, async (c, i) => {
    const order = g.shuffled(SUBJECTS);
    const got = await c.client.replies(...order.map((s, k) => `PUB ${s} p${k}\nfrom ${i}`));
    const want = order.map((s, k) => {
      const ok = mayPublish(c.perms, s);
      if (ok) tally.pubAllowed++;
      else tally.pubDenied++;
      return ok ? `ACK p${k}` : `ERR forbidden p${k} ${s}: ${BY_TOKEN}`;
    });
    assert.deepEqual(got, want, `${tag} PUB decisions of connection ${i}, permissions ${JSON.stringify(c.perms)}`);
  });

  // 3. SUB every subject, in random order, split over one to three SUB commands.
  await inBatches(conns, 50, async (c, i) => {
    const order = g.shuffled(SUBJECTS);
    const cuts = [Math.floor(g.random() * order.length), Math.floor(g.random() * order.length)].sort((a, b) => a - b);
    const commands = [order.slice(0, cuts[0]), order.slice(cuts[0], cuts[1]), order.slice(cuts[1])].filter((x) => x.length).map((x) => `SUB ${x.join(' ')}`);
    const replies = split(await c.client.replies(...commands));
    const got = replies.answers;
    const want: string[] = [];
    for (const s of order) {
      if (maySubscribe(c.perms, s)) {
        c.subs.add(s);
        tally.subAllowed++;
      } else {
        want.push(`ERR forbidden ${s}: ${BY_TOKEN}`);
        tally.subDenied++;
      }
    }
    assert.deepEqual(got, want, `${tag} SUB decisions of connection ${i}, permissions ${JSON.stringify(c.perms)}`);
    // (A PUB of step 2 may reach its home after this SUB: delivered, then, but only on a granted subject.)
    assert.deepEqual(replies.msgs.filter((m) => !c.subs.has(m.subject)), [], `${tag} deliveries to connection ${i}`);
  });

  // 4. A third renew with a new random token: what it does not grant is dropped, with an ERR each.
  await inBatches(conns, 50, async (c, i) => {
    if (i % 3 !== 1) return;
    const next = g.perms();
    const renewal = split(await c.client.replies(`AUTH ${mode.token(next)}`));
    const got = renewal.answers;
    assert.match(got[0] ?? '', /^AUTH ok \d+$/, `${tag} renewal of connection ${i}`);
    const stray = renewal.msgs.filter((m) => !c.subs.has(m.subject));
    assert.deepEqual(stray, [], `${tag} deliveries to connection ${i} outside its subscriptions`);
    const want: string[] = [];
    for (const s of [...c.subs]) {
      if (maySubscribe(next, s)) continue;
      c.subs.delete(s);
      want.push(`ERR forbidden ${s}: ${RENEWED}`);
      tally.revoked++;
    }
    assert.deepEqual(got.slice(1).sort(), want.sort(), `${tag} revocations of connection ${i}: ${JSON.stringify(c.perms)} → ${JSON.stringify(next)}`);
    c.perms = next;
    // The renewed permissions are the ones in force now.
    const probe = g.shuffled(SUBJECTS).slice(0, 8);
    const after = split(await c.client.replies(...probe.map((s, k) => `PUB ${s} r${k}\nx`)));
    assert.deepEqual(after.msgs.filter((m) => !c.subs.has(m.subject) || !maySubscribe(next, m.subject)), [], `${tag} deliveries after renewal, connection ${i}`);
    assert.deepEqual(after.answers, probe.map((s, k) => (mayPublish(next, s) ? `ACK r${k}` : `ERR forbidden r${k} ${s}: ${BY_TOKEN}`)), `${tag} PUB after renewal, connection ${i}`);
  });

  const counters1 = server.stats().total;
  const expectSubs = conns.reduce((n, c) => n + c.subs.size, 0);
  assert.equal(counters1.subscriptions - counters0.subscriptions, expectSubs, `${tag} subscriptions held`);
  assert.equal(counters1.denied_subscribes - counters0.denied_subscribes, tally.subDenied + tally.revoked, `${tag} denied_subscribes`);
  assert.ok(counters1.denied_publishes - counters0.denied_publishes >= tally.pubDenied, `${tag} denied_publishes`);
  // The space is small enough that both outcomes are common (or this test proves little).
  for (const [k, v] of Object.entries(tally)) assert.ok(v > 100, `${tag} too few ${k}: ${JSON.stringify(tally)}`);

  // 5. Delivery: a fully entitled publisher publishes once on every subject; observers on each workgroup see all.
  const publisher = await EClient.open(server);
  assert.match(await publisher.auth(mode.token({ all: ['/*'] })), /^AUTH ok/);
  const observers: EClient[] = [];
  for (let wg = 0; wg < 2; ) {
    const before = perWorkgroup(server, 'accepted');
    const o = await EClient.open(server);
    const moved = perWorkgroup(server, 'accepted').map((v, k) => v - before[k]);
    if (moved[wg] !== 1) {
      o.terminate();
      continue;
    }
    assert.match(await o.auth(mode.token({ sub: ['/*'] })), /^AUTH ok/);
    assert.deepEqual(split(await o.replies(`SUB ${SUBJECTS.join(' ')}`)).answers, []);
    observers.push(o);
    wg++;
  }
  const acks = await publisher.replies(...SUBJECTS.map((s, k) => `PUB ${s} d${k}\ndelivery`));
  assert.deepEqual(acks, SUBJECTS.map((_, k) => `ACK d${k}`));
  for (const o of observers) {
    const seen = new Set<string>();
    while (seen.size < SUBJECTS.length) {
      const m = await o.next('an observer MSG');
      if (m.endsWith('\ndelivery')) seen.add(msgSubject(m));
    }
  }
  // Every delivery to a workgroup is queued together with its observer's copy: a PING barrier now comes after it.
  let unauthorised = 0;
  let missing = 0;
  const problems: string[] = [];
  await inBatches(conns, 50, async (c, i) => {
    const { answers, msgs } = split(await c.client.replies());
    assert.deepEqual(answers, [], `${tag} connection ${i}`);
    const got = msgs.filter((m) => m.delivery).map((m) => m.subject);
    const bad = msgs.filter((m) => !maySubscribe(c.perms, m.subject) || !c.subs.has(m.subject)).map((m) => m.subject);
    const absent = [...c.subs].filter((s) => !got.includes(s));
    unauthorised += bad.length;
    missing += absent.length;
    if ((bad.length || absent.length || got.length !== new Set(got).size) && problems.length < 5)
      problems.push(`connection ${i} ${JSON.stringify(c.perms)}: got ${JSON.stringify(got)}, unauthorised ${JSON.stringify(bad)}, missing ${JSON.stringify(absent)}`);
  });
  assert.deepEqual({ unauthorised, missing, problems }, { unauthorised: 0, missing: 0, problems: [] }, tag);

  await inBatches([...conns.map((c) => c.client), publisher, ...observers], 100, (c) => c.close());
  await server.close();
}

describe('randomized permissions against a reference model', SUITE, () => {
  it(`Entitlement = JWT: ${TOKENS} random tokens, every SUB/PUB decision, renewals, deliveries`, () => run(jwtMode(), SEED));
  it(`Entitlement = Custom: ${TOKENS} random grants, every SUB/PUB decision, renewals, deliveries`, () => run(customMode(), SEED + 1));

  it('the reference model itself, on hand-checked cases', () => {
    const cases: [string, string, boolean][] = [
      ['/x', '/x', true],
      ['/x', '/x/y', false],
      ['/x/*', '/x', false],
      ['/x/*', '/x/y', true],
      ['/x/*', '/x/y/xy', true],
      ['/x/*', '/xy', false],
      ['/x/*', '/xy/y', false],
      ['/x/{id}', '/x/y', true],
      ['/*', '/x', true],
      ['/*', '/xy/y/x', true],
      ['/x/y/*', '/x/y', false],
      ['/x/y/{name}', '/x/y/x', true],
    ];
    for (const [p, s, want] of cases) assert.equal(grants(p, s), want, `${p} grants ${s}`);
  });
});
