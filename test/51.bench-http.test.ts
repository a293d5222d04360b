// The load tools over Starling's HTTP transport (benchsub Transport = sse, benchpub Transport = http) on a small
// scale: every message published is received once (0 lost, 0 duplicated) and timed, with SSE subscribers and
// with WebSocket ones; and the client engine's event-stream reading against a scripted server (events split
// anywhere, base64 payloads, heartbeats, gaps and repeats, sync / resync / err, a refused stream). No timing
// assertions.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { benchpub } from '../bench/benchpub';
import { benchsub } from '../bench/benchsub';
import { BENCHPUB_KEYS, BENCHSUB_KEYS, Client, clientOptions, loadTool, sleep } from '../bench/tools';
import { ConfigError } from '../src/config/config';
import { createServer } from '../src/index';

/** Polls `ok` every 10 ms for up to 5 s; fails with `what` and the counters of `client`. */
async function until(client: Client, what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !ok(); i++) await sleep(10);
  assert.ok(ok(), `timed out waiting for ${what}: ${JSON.stringify(client.counters())}`);
}

describe('benchmark tools over the HTTP transport', () => {
  const server = createServer({ Listen: '127.0.0.1:0', Workgroups: 2, BenchmarkMode: true, LogLevel: 'warn', Monitor: '' });
  after(() => server.close());
  const port = server.addresses[0].port;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-bench-http-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('benchsub Transport = sse measures what benchpub Transport = http publishes', async () => {
    const lines: string[] = [];
    const common = [`-DServerAddresses=127.0.0.1:${port}`, '-DSubjects=/h/s{1..300}'];
    const sub = benchsub(
      [...common, '-DTransport=sse', '-DClients=300', '-DOneToOne=true', '-DDuration=3', '-DReportInterval=1', `-DServerPid=${process.pid}`, `-DOutput=${dir}/sse`],
      {},
      (l) => lines.push(l),
    );
    const pubLines: string[] = [];
    const pub = benchpub([...common, '-DTransport=http', '-DPublishers=2', '-DFrequency=600', '-DDuration=5'], {}, (l) => pubLines.push(l));
    const summary = await sub;
    const sent = await pub;
    const text = lines.join('\n');
    assert.match(text, /connected: 300\/300/);
    assert.match(text, /server-sent events/);
    assert.ok(summary.totals.messages > 0, `no message measured:\n${text}`);
    assert.equal(summary.latency.count, summary.totals.messages);
    assert.ok(summary.latency.p50 !== null);
    assert.equal(summary.totals.lost, 0, text);
    assert.equal(summary.totals.duplicated, 0, text);
    assert.equal(summary.totals.disconnects, 0, text);
    assert.ok(sent.sent > 0);
    assert.equal(sent.errors, 0, pubLines.join('\n'));
    assert.equal(sent.stalls, 0, pubLines.join('\n'));
    assert.equal(sent.acknowledged, sent.sent, pubLines.join('\n'));
    assert.ok(pubLines.some((l) => /answered 200 \d+ \| errors 0/.test(l)), pubLines.join('\n'));
  });

  // Exact counts through the engine: one subject per subscriber, so every publish reaches exactly one of them. The
// publishers stop with requests in flight (the server may or may not have taken them): every acknowledged
// message is received, and nothing beyond what was sent.
  for (const transport of ['sse', 'websocket'] as const) {
    it(`every message POSTed is received once by ${transport} subscribers`, async () => {
      const subjects = `-DSubjects=/x${transport}/s{1..200}`;
      const subCfg = loadTool(BENCHSUB_KEYS, [`-DServerAddresses=127.0.0.1:${port}`, subjects, '-DOneToOne=true', `-DTransport=${transport}`], {});
      const subscribers = new Client(clientOptions(subCfg, false, 200));
      const pubCfg = loadTool(BENCHPUB_KEYS, [`-DServerAddresses=127.0.0.1:${port}`, subjects, '-DTransport=http', '-DFrequency=1000', '-DMessageSize=100'], {});
      const publishers = new Client(clientOptions(pubCfg, true, 3));
      subscribers.start();
      try {
        await until(subscribers, 'the subscribers', () => subscribers.counters().connected === 200);
        await sleep(200); // (the server takes a subscription after it answers the request)
        publishers.start();
        await sleep(2000);
        publishers.stop();
        const p = publishers.counters();
        assert.ok(p.messages_sent > 1000, JSON.stringify(p));
        assert.ok(p.acknowledged >= p.messages_sent - 3 * 64 && p.acknowledged <= p.messages_sent, JSON.stringify(p));
        assert.equal(p.errors, 0);
        assert.equal(p.send_stalls, 0);
        await until(subscribers, 'every acknowledged message', () => subscribers.counters().messages_received >= p.acknowledged);
        await sleep(200);
        const s = subscribers.snapshot();
        assert.ok(s.counters.messages_received >= p.acknowledged && s.counters.messages_received <= p.messages_sent, JSON.stringify(s.counters));
        assert.equal(s.histogram.count, s.counters.messages_received, 'each one timed');
        assert.equal(s.counters.lost, 0);
        assert.equal(s.counters.duplicated, 0);
        assert.equal(s.counters.disconnects, 0);
        assert.equal(s.counters.errors, 0);
      } finally {
        publishers.stop();
        subscribers.stop();
      }
    });
  }

  it('Transport other than websocket needs Dialect = starling', () => {
    const sub = loadTool(BENCHSUB_KEYS, ['-DTransport=sse', '-DDialect=plain'], {});
    assert.throws(() => clientOptions(sub, false, 1), (e: Error) => e instanceof ConfigError && /Transport = sse .* needs Dialect = starling/.test(e.message));
    const pub = loadTool(BENCHPUB_KEYS, ['-DTransport=http', '-DDialect=nats'], {});
    assert.throws(() => clientOptions(pub, true, 1), (e: Error) => e instanceof ConfigError && /Transport = http .* needs Dialect = starling/.test(e.message));
    assert.throws(() => loadTool(BENCHSUB_KEYS, ['-DTransport=http'], {}), /Transport: expected one of websocket, sse/);
  });
});

// The engine's event-stream reading against a scripted HTTP server: the first stream's bytes arrive in pieces
// cut at every awkward place; a second connection is refused (404) and counted as a failed connection.
describe('client engine event streams (scripted server)', () => {
  const requests: string[] = [];
  let streams = 0;
  const stamp = () => String(Date.now() * 1000).padStart(16, '0');
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    let head = '';
    sock.on('data', async (d) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      requests.push(head.slice(0, head.indexOf('\r\n')));
      if (streams++ > 0) {
        sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const live = (pos: string, data: string) => `id: /t/a&b%c@${pos}\ndata: ${data}\n\n`;
      const binary = Buffer.from(stamp() + '\x00\xffbinary', 'latin1').toString('base64');
      const body = [
        'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n',
        'retry: 2000\n\n',
        live('k1:1', `${stamp()}first`),
        ':\n', // a heartbeat
        live('k1:2', `${stamp()}two\ndata: lines`),
        `event: message-base64\nid: /t/a&b%c@k1:3\ndata: ${binary}\n\n`,
        live('k1:5', `${stamp()}after a gap`), // 4 lost
        live('k1:5', `${stamp()}again`), // duplicate
        `event: snapshot\nid: /t/a&b%c@k1:5\ndata: ${stamp()}snap\n\n`, // counted, not checked
        `event: recovered-utf8-base64\nid: /t/a&b%c@k1:6\ndata: ${Buffer.from(stamp() + 'cr\r').toString('base64')}\n\n`,
        'event: sync\nid: /t/a&b%c@k1:8\ndata: /t/a&b%c k1:8\n\n', // 7 and 8 said to be sent: 2 lost
        'event: err\ndata: forbidden /t/z: no\n\n',
        'event: resync\nid: /t/a&b%c@k2:3\ndata: /t/a&b%c k2:3\n\n',
        live('k2:4', `${stamp()}last`),
      ].join('');
      // In pieces of 1 to 7 bytes: heads, lines, CR/LF pairs and events are all cut somewhere.
      for (let i = 0, n = 1; i < body.length; i += n, n = (n % 7) + 1) {
        sock.write(body.slice(i, i + n), 'latin1');
        await sleep(1);
      }
    });
  });
  after(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });

  it('times message events (text and base64), checks their sequence from the ids, counts sync, resync, err and refusals', async () => {
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const port = (srv.address() as net.AddressInfo).port;
    // A subject whose '&' and '%' must reach the server percent-encoded.
    const cfg = loadTool(BENCHSUB_KEYS, [`-DServerAddresses=127.0.0.1:${port}`, '-DSubjects=/t/a&b%c', '-DTransport=sse'], {});
    const client = new Client(clientOptions(cfg, false, 2));
    client.start();
    try {
      await until(client, 'the scripted events', () => client.counters().resyncs === 1 && client.counters().messages_received === 6);
      await sleep(50);
      const s = client.snapshot();
      const c = s.counters;
      assert.equal(requests[0], 'GET /sse?subject=/t/a%26b%25c HTTP/1.1');
      assert.equal(c.messages_received, 6, JSON.stringify(c));
      assert.equal(s.histogram.count, 6, 'the base64 one timed too');
      assert.equal(c.lost, 1 + 2, JSON.stringify(c));
      assert.equal(c.duplicated, 1, JSON.stringify(c));
      assert.equal(c.snapshots, 1);
      assert.equal(c.recovered, 1);
      assert.equal(c.syncs, 1);
      assert.equal(c.resyncs, 1);
      assert.equal(c.errors, 1);
      assert.equal(c.epoch_changes, 0, 'the epoch changed with a RESYNC');
      assert.equal(c.connected, 1);
      assert.equal(c.connect_failures, 1, 'the 404');
    } finally {
      client.stop();
    }
  });
});
