// Entitlement under attack: AUTH floods (thousands of AUTH, varied and huge tokens), a connection storm with
// tokens on the URL, clients that AUTH and never read — while a well-behaved entitled subscriber receives every
// message of a steady publisher, in order, throughout; the server's memory measured before, during and after.
// Then a Custom hook that never answers, for well over a thousand connections: memory bounded, and connections
// that close give their waits back. And the process around a server: no lingering, no abort, with decisions
// pending. Each test stays under 30 s and 2,000 connections.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import WebSocket from 'ws';
import { OP, startServer, upgradeRequest, waitFor, within } from './helpers';
import {
  FrameBatch,
  MB,
  Publisher,
  RawWs,
  RssSampler,
  ServerChild,
  Ticker,
  cleanup,
  poll,
  zeroMaskFrame,
} from './hostile-kit';
import { HsIssuer, assertServesWith } from './entitlement-kit';

const SUITE = { timeout: 120_000 };
const TOO_MANY = 'AUTH invalid too many AUTH commands (at most 4 a second); the token in force stays';
/** RSS above the baseline the server may reach during an attack (its queues and sessions are bounded by config). */
const RSS_PEAK_SLACK = 256 * MB;
/** memory_bytes (the native account) may stay this much above its baseline once the attackers are gone. */
const ACCOUNT_SLACK = 4 * MB;

/** A `ws` subscriber that connects with `?token=`, expects `AUTH ok` first, then checks every seq on one subject. */
class SteadySubscriber {
  readonly problems: string[] = [];
  count = 0;
  closedWith: number | null = null;
  private last = 0;
  private epoch = '';
  private first: string | null = null;
  private pong: (() => void) | null = null;
  private progress: (() => void) | null = null;

  private constructor(readonly ws: WebSocket, readonly subject: string) {
    ws.on('message', (data: Buffer) => this.onMessage(data.toString('latin1')));
    ws.on('close', (code) => {
      this.closedWith = code;
      this.progress?.();
    });
    ws.on('error', () => {});
  }

  static async open(url: string, token: string, subject: string): Promise<SteadySubscriber> {
    const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`, { perMessageDeflate: false });
    const s = new SteadySubscriber(ws, subject); // listening before the 101: the AUTH answer may come with it
    await within(new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject)), 'the subscriber handshake');
    const pong = new Promise<void>((r) => (s.pong = r));
    ws.send(`SUB ${subject}`);
    ws.send('PING ready');
    await within(pong, 'the subscriber PONG');
    assert.match(s.first ?? '', /^AUTH ok \d+$/, 'the ?token= answer comes first');
    return s;
  }

  private onMessage(text: string): void {
    if (this.first === null) {
      this.first = text;
      return;
    }
    if (text === 'PONG ready') {
      this.pong?.();
      return;
    }
    const m = /^MSG (\S+) ([0-9a-z]+):(\d+)\n/.exec(text);
    if (!m || m[1] !== this.subject) {
      if (this.problems.length < 20) this.problems.push(`unexpected ${JSON.stringify(text.slice(0, 100))}`);
      return;
    }
    const seq = Number(m[3]);
    if (this.count > 0 && (m[2] !== this.epoch || seq !== this.last + 1) && this.problems.length < 20)
      this.problems.push(`${this.epoch}:${this.last} followed by ${m[2]}:${seq}`);
    this.epoch = m[2];
    this.last = seq;
    this.count++;
    this.progress?.();
  }

  /** Waits for `n` messages; with `exactly`, fails if more came. */
  async waitCount(n: number, exactly = true, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.count < n && this.closedWith === null && Date.now() < deadline)
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.progress = () => {
          clearTimeout(t);
          r();
        };
      });
    assert.equal(this.closedWith, null, `the subscriber was closed (${this.closedWith}) after ${this.count} of ${n}`);
    if (exactly) assert.equal(this.count, n, `the subscriber received ${this.count} of ${n} messages; problems: ${this.problems.join('; ')}`);
    else assert.ok(this.count >= n, `the subscriber received ${this.count} of at least ${n} messages`);
  }
}

/** Opens a raw WebSocket to `child` with `path` (e.g. `/?token=…`); resolves once the TCP connection is up. */
async function rawWith(child: ServerChild, urlPath: string): Promise<RawWs> {
  const raw = await RawWs.connect(child);
  raw.write(upgradeRequest(urlPath));
  return raw;
}

const textOf = (raw: RawWs): string[] => raw.frames.filter((f) => f.opcode === OP.text).map((f) => f.payload.toString('latin1'));

describe('AUTH floods, a token storm and non-readers beside a steady entitled stream', SUITE, () => {
  it('the entitled subscriber gets every message in order; every AUTH is answered; memory is bounded and given back', async (t) => {
    const issuer = new HsIssuer();
    const child = await ServerChild.start({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64, 'BufferLimit.Send': '64K', MaxBacklog: '1M', MaxBacklogTime: 2 });
    const everything = issuer.token({ all: ['/*'] });
    const subscriberToken = issuer.token({ sub: ['/steady'] });

    const sub = await SteadySubscriber.open(child.url, subscriberToken, '/steady');
    const pub = await Publisher.open(child);
    pub.raw.command(`AUTH ${everything}`);
    assert.ok(await poll(() => (pub.others.some((o) => /^AUTH ok \d+$/.test(o)) ? true : undefined), 15_000), `publisher AUTH: ${pub.others}`);
    const ticker = new Ticker(pub, '/steady', 200, Buffer.alloc(64, 0x61), 's');
    await sub.waitCount(20, false); // the stream flows
    const base = await child.stats();
    const baseRss = child.rss();
    const peak = new RssSampler(child);
    const attackStart = Date.now();
    const sentBefore = ticker.sent;

    // --- 1. AUTH floods: 20 connections × 1,000 AUTH each, small, distinct valid, 8 KiB and 60 KB tokens.
    const FLOODERS = 20;
    const PER = 1000;
    const flooders = await Promise.all(Array.from({ length: FLOODERS }, () => RawWs.open(child)));
    const batches = flooders.map((_, f) => {
      const b = new FrameBatch();
      for (let i = 0; i < PER; i++) {
        const k = i % 50;
        const token =
          k === 0 ? 'Z'.repeat(60_000) :
          k === 1 ? `x${'y'.repeat(8191)}` :
          k === 2 ? 'q'.repeat(8193) :
          k < 10 ? issuer.token({ sub: [`/f/${f}/${i}`] }) :
          k < 30 ? `garbage.${f}.${i}` :
          everything;
        b.text(`AUTH ${token}`);
      }
      return b.bytes;
    });
    const ROUNDS = 3; // each over several passes (the AUTH rate limit is per second)
    const flooding = flooders.map(async (raw, f) => {
      for (let round = 1; round <= ROUNDS; round++) {
        raw.write(batches[f]);
        await raw.until(`flooder ${f}'s ${PER * round} answers`, () => (textOf(raw).length >= PER * round ? true : undefined), 25_000);
      }
    });

    // --- 2. A storm: 1,200 connections in waves of 200 with ?token= (shared valid, distinct valid, forged, %zz);
    // a fifth of them hang up before the answer.
    const forger = new HsIssuer();
    const storm = (async () => {
      const seen = { ok: 0, invalid: 0, hungUp: 0 };
      for (let wave = 0; wave < 6; wave++) {
        await Promise.all(
          Array.from({ length: 200 }, async (_, k) => {
            const i = wave * 200 + k;
            const token = i % 4 === 0 ? everything : i % 4 === 1 ? issuer.token({ sub: [`/storm/${i}`] }) : i % 4 === 2 ? forger.token({ all: ['/*'] }) : '%zz';
            const raw = await rawWith(child, `/?token=${token}`);
            if (i % 5 === 0) {
              raw.destroy();
              seen.hungUp++;
              return;
            }
            const first = await raw.until('the ?token= answer', () => textOf(raw)[0]);
            if (i % 4 < 2) assert.match(first, /^AUTH ok \d+$/);
            else assert.ok(first === 'AUTH invalid bad signature' || first.startsWith('AUTH invalid malformed token parameter'), first);
            if (first.startsWith('AUTH ok')) seen.ok++;
            else seen.invalid++;
            if (i % 2) raw.write(zeroMaskFrame(OP.close, Buffer.from([0x03, 0xe8])));
            raw.destroy();
          }),
        );
      }
      return seen;
    })();

    // --- 3. Non-readers: 100 entitled subscribers of the stream that stop reading, and 100 that send AUTH and
    // 2,000 PINGs and never read a reply.
    const nonReaders: RawWs[] = [];
    for (let i = 0; i < 200; i++) {
      const raw = await RawWs.open(child);
      raw.keep = false;
      raw.pause();
      const b = new FrameBatch().text(`AUTH ${i % 2 ? everything : issuer.token({ sub: ['/steady'] })}`);
      if (i % 2) for (let k = 0; k < 2000; k++) b.text(`PING ${'p'.repeat(100)}${k}`);
      else b.text('SUB /steady');
      raw.write(b.bytes);
      nonReaders.push(raw);
    }

    await Promise.all(flooding);
    const stormSeen = await storm;
    assert.ok(stormSeen.ok > 400 && stormSeen.invalid > 400, JSON.stringify(stormSeen));

    // Every AUTH of every flooder was answered once, in order, with one of the documented answers.
    for (const [f, raw] of flooders.entries()) {
      const answers = textOf(raw);
      assert.equal(answers.length, PER * ROUNDS, `flooder ${f}`);
      answers.forEach((a, i) => {
        const k = (i % PER) % 50;
        const ok =
          a === TOO_MANY ||
          (k === 0 && a === 'AUTH invalid too large (60000 bytes, at most 8192)') ||
          (k === 1 && a === 'AUTH invalid malformed') ||
          (k === 2 && a === 'AUTH invalid too large (8193 bytes, at most 8192)') ||
          (k >= 3 && k < 10 && /^AUTH ok \d+$/.test(a)) ||
          (k >= 10 && k < 30 && a === 'AUTH invalid malformed') ||
          (k >= 30 && /^AUTH ok \d+$/.test(a));
        assert.ok(ok, `flooder ${f}, AUTH ${i} (kind ${k}) answered ${JSON.stringify(a.slice(0, 120))}`);
      });
      assert.ok(answers.filter((a) => a === TOO_MANY).length > (PER * ROUNDS) / 2, `flooder ${f} was rate-limited`);
      raw.destroy();
    }
    for (const raw of nonReaders) raw.destroy();

    // The stream went on throughout: every message, in order, to the entitled subscriber.
    const sentDuring = ticker.sent - sentBefore;
    await ticker.stop();
    const attackMs = Date.now() - attackStart;
    assert.deepEqual(await pub.waitAcks(ticker.ids, 20_000), [], 'every steady publish was acknowledged');
    await sub.waitCount(ticker.sent);
    assert.deepEqual(sub.problems, [], 'the steady subscriber saw no gap, duplicate or stray message');
    assert.ok(sentDuring > 0, 'the steady publisher published during the attack');

    // Memory: bounded during, given back after.
    const peakRss = peak.stop();
    assert.ok(peakRss <= baseRss + RSS_PEAK_SLACK, `RSS peaked at ${(peakRss / MB).toFixed(0)} MB from ${(baseRss / MB).toFixed(0)} MB`);
    await child.assertRssBack(baseRss, 'after the AUTH flood and storm');
    const settled = await poll(async () => {
      const s = await child.stats();
      return s.total.connections === 2 && s.total.auth_waiting === 0 && s.total.memory_bytes <= base.total.memory_bytes + ACCOUNT_SLACK ? s : undefined;
    }, 15_000, 250);
    const last = await child.stats();
    assert.ok(settled, `after the attack: connections ${last.total.connections} (2 expected), auth_waiting ${last.total.auth_waiting}, memory_bytes ${last.total.memory_bytes} (baseline ${base.total.memory_bytes})`);
    child.assertAlive();
    const totals = last.total;
    assert.ok(totals.auth_ok > FLOODERS * 4 && totals.auth_denied > (FLOODERS * PER * ROUNDS) / 2, `auth_ok ${totals.auth_ok}, auth_denied ${totals.auth_denied}`);
    t.diagnostic(
      `attack ${attackMs} ms; steady messages ${ticker.sent}; storm ${JSON.stringify(stormSeen)}; auth_ok ${totals.auth_ok}, auth_denied ${totals.auth_denied}, ` +
        `decisions ${totals.auth_decisions}; RSS ${(baseRss / MB).toFixed(0)} → peak ${(peakRss / MB).toFixed(0)} MB; ` +
        `memory_bytes ${base.total.memory_bytes} → ${last.total.memory_bytes}`,
    );
    sub.ws.terminate();
    await cleanup();
  });
});

// ---------------------------------------------------------------------------------------------------

describe('a Custom hook that never answers', SUITE, () => {
  it('1,500 connections wait: memory bounded, others served; when they close, their waits are given back', async () => {
    const N = 1500;
    const asked = { n: 0 };
    const server = startServer({
      Entitlement: 'Custom',
      authorizeTimeout: 60_000, // longer than this test: only the connections' closing can end their waits
      authorize: (token: string) => {
        if (token.startsWith('good')) return { all: ['/*'] };
        asked.n++;
        return new Promise<never>(() => {});
      },
    });
    const { port } = server.addresses[0];
    const base = server.stats().total;
    const baseRss = process.memoryUsage().rss;
    const sockets: net.Socket[] = [];
    const pad = 'w'.repeat(1000);
    for (let i = 0; i < N; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, N - i) }, (_, k) =>
          new Promise<void>((resolve, reject) => {
            const s = net.connect({ host: '127.0.0.1', port });
            sockets.push(s);
            s.on('error', () => {});
            s.once('connect', () => {
              s.write(upgradeRequest('/'));
              // AUTH, then commands that must wait behind it.
              s.write(Buffer.concat([zeroMaskFrame(OP.text, `AUTH never-${i + k}-${pad}`), zeroMaskFrame(OP.text, 'SUB /a'), zeroMaskFrame(OP.text, 'PING x')]));
              resolve();
            });
            s.once('error', reject);
          }),
        ),
      );
    }
    // (A connection counts as waiting from its AUTH on; the hook is asked once the batch has crossed.)
    await waitFor(
      `${N} connections waiting for a decision, the hook asked about each`,
      () => server.stats().total.auth_waiting === N && asked.n === N,
      () => ({ auth_waiting: server.stats().total.auth_waiting, asked: asked.n }),
    );
    const during = server.stats().total;
    const grew = during.memory_bytes - base.memory_bytes;
    assert.ok(grew < N * 64 * 1024, `the native account grew ${(grew / MB).toFixed(1)} MB for ${N} waiting connections`);
    assert.ok(process.memoryUsage().rss - baseRss < 512 * MB, 'process RSS bounded');
    // Others are decided and served meanwhile.
    await assertServesWith(server, 'good', '/served/meanwhile');

    // Half hang up with FIN, half with RST: every wait must be given back, and every connection.
    sockets.forEach((s, i) => (i % 2 ? s.destroy() : s.resetAndDestroy()));
    await waitFor(
      'auth_waiting and connections to return to 0 once the waiting clients are gone',
      () => {
        const t = server.stats().total;
        return t.auth_waiting === 0 && t.connections === 0;
      },
      () => {
        const t = server.stats().total;
        return { auth_waiting: t.auth_waiting, connections: t.connections };
      },
    );
    assert.ok(server.stats().total.memory_bytes - base.memory_bytes < ACCOUNT_SLACK, 'the native account came back');
    await assertServesWith(server, 'good', '/served/after');
    await server.close();
  });
});

// ---------------------------------------------------------------------------------------------------

describe('the process around a server with decisions pending', SUITE, () => {
  const INDEX = path.join(__dirname, '..', 'src', 'index.js');
  const WS = require.resolve('ws');

  /** Runs `script` in a fresh node; resolves with its exit code (or signal) and output. */
  function runNode(script: string, ms = 20_000): Promise<{ code: number | null; signal: string | null; output: string; ms: number }> {
    const started = Date.now();
    const p = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    return new Promise((resolve) =>
      p.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, output, ms: Date.now() - started });
      }),
    );
  }

  it('after close(), a hook that never answers does not keep the process alive for authorizeTimeout', async () => {
    const script = `
      const { createServer } = require(${JSON.stringify(INDEX)});
      const WebSocket = require(${JSON.stringify(WS)});
      const s = createServer({ Listen: '127.0.0.1:0', Monitor: '', LogLevel: 'error', Entitlement: 'Custom',
        authorizeTimeout: 600000, authorize: () => new Promise(() => {}) });
      const ws = new WebSocket(s.url);
      ws.on('error', () => {});
      ws.on('open', () => ws.send('AUTH stuck'));
      const poll = setInterval(async () => {
        if (s.stats().total.auth_waiting !== 1) return;
        clearInterval(poll);
        ws.terminate();
        await s.close();
        console.log('CLOSED');
      }, 20);`;
    const r = await runNode(script);
    assert.match(r.output, /CLOSED/, r.output);
    assert.equal(r.signal, null, `the process was killed after 20 s: it lingered after close() (${r.output.slice(-500)})`);
    assert.equal(r.code, 0, r.output);
  });

  it('a process whose event loop ends while an AUTH is being decided exits cleanly (no abort)', async () => {
    // Nothing keeps the loop alive but the client's connect and write; the server is never closed. The process
    // ends right as the AUTH reaches the control plane.
    const script = `
      const { createServer } = require(${JSON.stringify(INDEX)});
      const net = require('net');
      const s = createServer({ Listen: '127.0.0.1:0', Monitor: '', LogLevel: 'error', Entitlement: 'Custom', authorize: () => ({ all: ['/*'] }) });
      const c = net.connect(s.addresses[0].port, '127.0.0.1');
      c.unref();
      c.on('error', () => {});
      c.on('connect', () => {
        c.write(${JSON.stringify(upgradeRequest('/'))});
        c.write(Buffer.from(${JSON.stringify([...zeroMaskFrame(OP.text, 'AUTH now')])}));
      });`;
    for (let run = 0; run < 3; run++) {
      const r = await runNode(script);
      assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, `run ${run}: ${r.output.slice(-500)}`);
    }
  });
});
