// The monitoring port is bounded: it shares the process' descriptor table with the WebSocket clients, so
// unauthenticated clients that open connections and never finish a request must not pile up. At most
// MonitorHTTP.MaxConnections are held (the rest are closed on arrival), a request must send its headers within
// the 10-second header timeout (enforced within about a second, not at Node's default 30-second sweep), and an
// idle keep-alive connection is closed after 5 seconds. Timing bounds are loose (seconds) for a busy machine.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { Logger, type Server } from '../src/index';
import { LIMITS } from '../src/monitor/http';
import { TIMEOUT_MS, assertServes, startServer, within } from './helpers';

const SUITE = { timeout: 120_000 };
const CAP = 64;
const USER = 'ops';
const PASSWORD = 'limits-secret';
const AUTH = 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
/** What a late deadline check may add to a timeout: the check interval and scheduling noise on a busy machine. */
const SLACK_MS = LIMITS.checkInterval + 2_500;

/** One client connection to the monitoring port, and what happened to it. */
interface Probe {
  socket: net.Socket;
  connectedAt?: number;
  closedAt?: number;
  received: string;
  closed: Promise<void>;
}

const probes: Probe[] = [];
after(() => probes.forEach((p) => p.socket.destroy()));

/** Connects to `port` and, once connected, writes `send` (nothing when null) and never writes again. */
function probe(port: number, send: string | null): Probe {
  const socket = net.connect(port, '127.0.0.1');
  const p: Probe = {
    socket,
    received: '',
    closed: new Promise((resolve) =>
      socket.once('close', () => {
        p.closedAt = Date.now();
        resolve();
      }),
    ),
  };
  socket.on('connect', () => {
    p.connectedAt = Date.now();
    if (send !== null) socket.write(send);
  });
  socket.on('data', (d) => (p.received += d.toString('latin1')));
  socket.on('error', () => {}); // a connection closed on arrival may be reset; 'close' follows
  probes.push(p);
  return p;
}

/** Polls `probe` every 20 ms until true; fails after `ms` with `what` and the last `describe()`. */
async function until(what: string, ok: () => boolean | Promise<boolean>, ms: number, describe: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(await describe())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function monitorPort(server: Server): number {
  const url = server.monitor?.url;
  assert.ok(url, 'the monitor is not listening');
  return Number(new URL(url).port);
}

describe('monitoring port limits', SUITE, () => {
  const lines: string[] = [];
  const server = startServer(
    {
      Monitor: 'HTTP, PROMETHEUS',
      'MonitorHTTP.Listen': '127.0.0.1:0',
      'MonitorHTTP.MaxConnections': CAP,
      'MonitorHTTP.Authentication': true,
      MonitorUsername: USER,
      MonitorPassword: PASSWORD,
    },
    new Logger('warn', (l) => lines.push(l)),
  );
  const N = 300;
  let held: Probe[] = [];

  it(`holds at most MonitorHTTP.MaxConnections (${CAP}) of ${N} half-sent requests, closes the rest on arrival, and keeps serving WebSocket clients`, async () => {
    await server.monitor!.ready;
    const port = monitorPort(server);
    // Unauthenticated and unfinished: request lines and headers without the blank line that ends them, and
    // every third connection silent.
    const started = Date.now();
    const all = Array.from({ length: N }, (_, i) => probe(port, i % 3 === 2 ? null : `GET /stats HTTP/1.1\r\nHost: monitor\r\nX-Slow: ${i}\r\n`));
    // Those over the cap are closed at once: well before any timeout could have closed them.
    const dropped = () => all.filter((p) => p.closedAt !== undefined);
    await until(`${N - CAP} connections to be closed on arrival`, () => dropped().length >= N - CAP, LIMITS.headersTimeout / 2, () => dropped().length);
    assert.ok(Date.now() - started < LIMITS.headersTimeout, 'closed by the cap, not by the header timeout');
    assert.equal(dropped().length, N - CAP);
    held = all.filter((p) => p.closedAt === undefined);
    assert.equal(held.length, CAP);
    assert.equal(await server.monitor!.connections(), CAP, 'the server holds exactly the cap');
    // The descriptors the monitor does not take are there for clients: a WebSocket client connects, subscribes,
    // publishes and gets its message.
    await assertServes(server);
    // Refusals are logged, once however many there were.
    const warnings = lines.filter((l) => / WARN  monitor: 64 connections open on the monitoring port \(MonitorHTTP\.MaxConnections\)/.test(l));
    assert.equal(warnings.length, 1, lines.join('\n'));
  });

  it(`closes half-sent requests once the ${LIMITS.headersTimeout / 1000}-second header timeout passes, within seconds, and serves again`, async () => {
    assert.equal(held.length, CAP, 'the held connections of the previous test');
    await within(Promise.all(held.map((p) => p.closed)), 'the half-sent requests to be closed', LIMITS.headersTimeout + SLACK_MS + TIMEOUT_MS);
    for (const p of held) {
      const lived = p.closedAt! - p.connectedAt!;
      assert.ok(lived <= LIMITS.headersTimeout + SLACK_MS, `a half-sent request lived ${lived} ms (header timeout ${LIMITS.headersTimeout} ms)`);
      assert.match(p.received, /^HTTP\/1\.1 408 /, 'answered 408 Request Timeout');
      assert.doesNotMatch(p.received, /starling_|"server"/, 'and nothing else');
    }
    await until('the monitor to hold no connection', async () => (await server.monitor!.connections()) === 0, TIMEOUT_MS);
    const res = await within(fetch(server.monitor!.url + 'stats', { headers: { authorization: AUTH } }), 'GET /stats');
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { workgroups: unknown[] }).workgroups.length, 2);
  });

  it(`closes an idle keep-alive connection after ${LIMITS.keepAliveTimeout / 1000} seconds`, async () => {
    const p = probe(monitorPort(server), `GET /stats HTTP/1.1\r\nHost: monitor\r\nAuthorization: ${AUTH}\r\n\r\n`);
    await until('the answer', () => /\r\n\r\n/.test(p.received), TIMEOUT_MS, () => p.received);
    assert.match(p.received, /^HTTP\/1\.1 200 /);
    const answered = Date.now();
    await within(p.closed, 'the idle keep-alive connection to be closed', LIMITS.keepAliveTimeout + SLACK_MS + TIMEOUT_MS);
    const idle = p.closedAt! - answered;
    assert.ok(idle <= LIMITS.keepAliveTimeout + SLACK_MS, `an idle keep-alive connection lived ${idle} ms after its answer`);
  });
});
