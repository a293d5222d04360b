// The HTTP transport (PROTOCOL.md "HTTP transport", docs/http.md) through real sockets: event streams
// (GET /sse) receive what WebSocket publishers send, text and binary, with recovery through Last-Event-ID;
// POST /publish reaches WebSocket and SSE subscribers, kept alive, pipelined, chunked, with 100-continue;
// 413 keeps the connection; CORS preflights; curl as a user would run it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Client, Raw, describeWith, parseMsg, startServer, waitFor, within } from './helpers';
import { SseStream, chunked, json, publishRequest } from './http-kit';

const SUITE = { timeout: 120_000 };

/** Waits until the server holds `n` subscriptions in all (an event stream's SUB has no reply of its own). */
async function subscriptions(server: ReturnType<typeof startServer>, n: number): Promise<void> {
  await waitFor(`${n} subscriptions`, () => server.stats().total.subscriptions === n, () => server.stats().total.subscriptions);
}

describe('event streams (GET /sse)', SUITE, () => {
  it('answer 200 text/event-stream with a retry hint, and carry text (line by line) and binary (base64) messages', async () => {
    const server = startServer();
    const sse = await SseStream.open(server, '?subject=/t/a');
    assert.match(sse.response.headers['content-type'], /^text\/event-stream/);
    assert.equal(sse.response.headers['cache-control'], 'no-cache');
    await subscriptions(server, 1);
    const pub = await Client.open(server);
    pub.send('PUB /t/a\nfirst line\nsecond line');
    pub.send(Buffer.concat([Buffer.from('PUB /t/a\n'), Buffer.from([0, 1, 2, 0xff, 0x0a, 0x0d])]));
    pub.send('PUB /t/a\n');
    pub.send('PUB /t/a\n carriage\r\nreturn');
    const a = await sse.nextMessage();
    assert.equal(sse.parser.retry, 2000, 'the stream starts with retry: HTTP.SseRetry');
    assert.deepEqual([a.subject, a.seq, a.kind, a.binary, a.payload.toString()], ['/t/a', 1, '', false, 'first line\nsecond line']);
    const b = await sse.nextMessage();
    assert.deepEqual([b.seq, b.binary], [2, true]);
    assert.deepEqual([...b.payload], [0, 1, 2, 0xff, 0x0a, 0x0d]);
    const c = await sse.nextMessage();
    assert.deepEqual([c.seq, c.payload.toString()], [3, ''], 'an empty message is an event with empty data');
    const d = await sse.nextMessage();
    assert.deepEqual([d.seq, d.binary, d.payload.toString()], [4, false, ' carriage\r\nreturn'], 'a CR survives (utf8-base64)');
    assert.equal(server.stats().total.sse_streams, 1);
    sse.close();
  });

  it('serve several subjects, history (#n) and a snapshot', async () => {
    const server = startServer();
    const pub = await Client.open(server);
    await pub.command('PUB /h/a +retained\nsnap', 'PUB /h/b\nb1', 'PUB /h/b\nb2');
    const sse = await SseStream.open(server, `?subject=/h/a&subject=${encodeURIComponent('/h/b#2')}`);
    const events = [];
    for (let i = 0; i < 4; i++) events.push(await sse.next());
    const text = events.map((e) => `${e.type} ${e.id} ${e.data}`).join(' | ');
    assert.ok(events.some((e) => e.type === 'snapshot' && e.id.startsWith('/h/a@') && e.data === 'snap'), text);
    assert.deepEqual(events.filter((e) => e.type === 'history').map((e) => e.data), ['b1', 'b2'], text);
    assert.ok(events.some((e) => e.type === 'sync' && e.id.startsWith('/h/b@') && e.id.endsWith(':2')), text);
    pub.send('PUB /h/b\nb3');
    const live = await sse.nextMessage();
    assert.deepEqual([live.subject, live.seq, live.kind, live.payload.toString()], ['/h/b', 3, '', 'b3']);
    sse.close();
  });

  it('a stream without a subject: heartbeats only, until the client opens another with subjects', async () => {
    const server = startServer({ KeepAlive: 1 });
    const sse = await SseStream.open(server, '');
    let text = sse.response.body ?? '';
    while (!/(^|\n):\n/.test(text)) text += (await sse.raw.take('a heartbeat', 5000)).toString();
    assert.match(text, /^retry: \d+\n\n/);
    assert.doesNotMatch(text, /event:|data:/, 'nothing but the retry hint and heartbeats');
    sse.close();
  });

  it('answer 400 for a bad subject or a bad conflate=, and 405 for another method', async () => {
    const server = startServer();
    for (const query of ['?subject=bad', '?subject=/a&subject=/b//c', '?subject=/a&conflate=x', `?subject=${encodeURIComponent('/a#1234567890')}`, `?subject=${encodeURIComponent('/a@K3X:1')}`]) {
      const raw = await Raw.connect(server);
      raw.write(`GET /sse${query} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const res = await raw.response();
      assert.equal(res.status, 400, `GET /sse${query}: ${res.statusLine}`);
      assert.ok(json(res).detail, 'a detail that says what to change');
      raw.destroy();
    }
    const raw = await Raw.connect(server);
    raw.write('POST /sse?subject=/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n');
    assert.equal((await raw.response()).status, 405);
    raw.destroy();
  });

  it('recover exactly through Last-Event-ID while a publisher runs: no gap, no duplicate, then live', async () => {
    const server = startServer();
    const sse = await SseStream.open(server, '?subject=/r/a');
    await subscriptions(server, 1);
    const pub = await Client.open(server);
    let sent = 0;
    let running = true;
    const publishing = (async () => {
      while (running) {
        for (let i = 0; i < 20; i++) pub.send(`PUB /r/a\n${++sent}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const seen: number[] = [];
    let last = '';
    for (let i = 0; i < 50; i++) {
      const m = await sse.nextMessage();
      seen.push(Number(m.payload.toString()));
      last = `${m.subject}@${m.epoch}:${m.seq}`; // (the parser has read ahead: its own last id is further on)
    }
    sse.close();
    await new Promise((r) => setTimeout(r, 50)); // messages go by while it is away
    const again = await SseStream.open(server, '?subject=/r/a', { 'Last-Event-ID': last });
    let synced = false;
    let live = 0;
    while (live < 100) {
      const e = await again.next();
      if (e.type === 'sync') {
        synced = true;
        continue;
      }
      const m = (await import('./http-kit')).sseMessage(e)!;
      assert.ok(m, `a message: ${JSON.stringify(e)}`);
      if (!synced) assert.equal(m.kind, 'recovered');
      else live++;
      seen.push(Number(m.payload.toString()));
    }
    running = false;
    await publishing;
    assert.ok(synced, 'a sync event after the recovered messages');
    assert.deepEqual(seen, seen.map((_, i) => i + 1), 'every message exactly once, in order');
    again.close();
  });

  it('with Last-Event-ID, the stream\'s other subjects are told resync (their gap is never silent)', async () => {
    const server = startServer();
    const pub = await Client.open(server);
    await pub.command('PUB /m/a\na1', 'PUB /m/b\nb1');
    const sse = await SseStream.open(server, '?subject=/m/a&subject=/m/b', { 'Last-Event-ID': '/m/a@zzz:1' });
    const events = [await sse.next(), await sse.next()];
    assert.deepEqual(events.map((e) => e.type).sort(), ['resync', 'resync'], JSON.stringify(events));
    sse.close();
  });
});

describe('POST /publish', SUITE, () => {
  it('publishes text and binary by Content-Type to WebSocket and SSE subscribers, answering JSON', async () => {
    const server = startServer();
    const sub = await Client.open(server);
    await sub.command('SUB /p/a');
    const sse = await SseStream.open(server, '?subject=/p/a');
    await subscriptions(server, 2);
    const raw = await Raw.connect(server);
    raw.write(publishRequest('/p/a', 'hello', { type: 'text/plain; charset=utf-8' }));
    const res = await raw.response();
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(json(res), { ok: true });
    raw.write(publishRequest('/p/a', Buffer.from([1, 2, 3]), { type: 'application/octet-stream' }));
    assert.equal((await raw.response()).status, 200);
    const m1 = parseMsg(await sub.next());
    assert.deepEqual([m1.subject, m1.seq, m1.binary, m1.payload.toString()], ['/p/a', 1, false, 'hello']);
    const m2 = parseMsg(await sub.next());
    assert.deepEqual([m2.binary, [...m2.payload]], [true, [1, 2, 3]]);
    const s1 = await sse.nextMessage();
    const s2 = await sse.nextMessage();
    assert.deepEqual([s1.payload.toString(), s2.binary, [...s2.payload]], ['hello', true, [1, 2, 3]]);
    assert.equal(raw.closed, false, 'kept alive');
    raw.destroy();
    sse.close();
  });

  it('answers 200 requests pipelined in one write, in order, each message delivered in order', async () => {
    const server = startServer();
    const sub = await Client.open(server);
    await sub.command('SUB /p/pipe');
    const raw = await Raw.connect(server);
    const n = 200;
    raw.write(Buffer.concat(Array.from({ length: n }, (_, i) => publishRequest('/p/pipe', `m${i}`, { type: 'text/plain' }))));
    for (let i = 0; i < n; i++) assert.equal((await raw.response()).status, 200, `response ${i}`);
    for (let i = 0; i < n; i++) assert.equal(parseMsg(await sub.next()).payload.toString(), `m${i}`);
    raw.destroy();
  });

  it('takes chunked bodies (with a trailer) and Expect: 100-continue', async () => {
    const server = startServer();
    const sub = await Client.open(server);
    await sub.command('SUB /p/c');
    const raw = await Raw.connect(server);
    raw.write('POST /publish?subject=/p/c HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n');
    raw.write(chunked(['hel', 'lo ', 'chunked'], 'X-Trailer: 1\r\n'));
    assert.equal((await raw.response()).status, 200);
    raw.write('POST /publish?subject=/p/c HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    const cont = await raw.head();
    assert.equal(cont.status, 100);
    raw.write('later');
    assert.equal((await raw.response()).status, 200);
    assert.equal(parseMsg(await sub.next()).payload.toString(), 'hello chunked');
    assert.equal(parseMsg(await sub.next()).payload.toString(), 'later');
    raw.destroy();
  });

  it('answers 413 for a body over MaxMessageSize, drops it and keeps the connection (Content-Length and chunked)', async () => {
    const server = startServer({ MaxMessageSize: 1024 });
    const sub = await Client.open(server);
    await sub.command('SUB /p/big');
    const raw = await Raw.connect(server);
    raw.write(publishRequest('/p/big', Buffer.alloc(1025, 0x61), { type: 'text/plain' }));
    const r1 = await raw.response();
    assert.equal(r1.status, 413);
    assert.equal(json(r1).error, 'too-large');
    raw.write('POST /publish?subject=/p/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
    raw.write(chunked([Buffer.alloc(800, 0x62), Buffer.alloc(800, 0x63)]));
    assert.equal((await raw.response()).status, 413);
    raw.write(publishRequest('/p/big', Buffer.alloc(1024, 0x64), { type: 'text/plain' }));
    assert.equal((await raw.response()).status, 200, 'the same connection goes on');
    const m = parseMsg(await sub.next());
    assert.equal(m.seq, 1, 'the refused ones were not published');
    assert.equal(m.payload.length, 1024);
    raw.destroy();
  });

  it('answers the documented errors: bad subject 400, unknown path 404, wrong method 405, text that is not UTF-8 400', async () => {
    const server = startServer();
    const raw = await Raw.connect(server);
    raw.write(publishRequest('no-slash', 'x'));
    const bad = await raw.response();
    assert.equal(bad.status, 400);
    assert.match(json(bad).detail!, /subject/);
    raw.write('GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await raw.response()).status, 404);
    raw.write('GET /publish?subject=/a HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await raw.response()).status, 405);
    raw.write(publishRequest('/a', Buffer.from([0xc3, 0x28]), { type: 'text/plain' }));
    assert.equal((await raw.response()).status, 400);
    raw.write(publishRequest('/__starling__/stats', 'spoof', { type: 'text/plain' }));
    const reserved = await raw.response();
    assert.equal(reserved.status, 403, reserved.body);
    raw.write(publishRequest('/a', 'fine', { type: 'text/plain' }));
    assert.equal((await raw.response()).status, 200, 'still served after every error');
    raw.destroy();
  });

  it('refuses request smuggling (Content-Length with Transfer-Encoding) with 400 and closes; nothing is published', async () => {
    const server = startServer();
    const sub = await Client.open(server);
    await sub.command('SUB /p/s');
    const raw = await Raw.connect(server);
    raw.write('POST /publish?subject=/p/s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const res = await raw.response();
    assert.equal(res.status, 400);
    await within(raw.ended, 'the server to close the connection');
    const ok = await Raw.connect(server);
    ok.write(publishRequest('/p/s', 'after', { type: 'text/plain' }));
    assert.equal((await ok.response()).status, 200);
    const m = parseMsg(await sub.next());
    assert.deepEqual([m.seq, m.payload.toString()], [1, 'after']);
    ok.destroy();
  });
});

describe('GET /history', SUITE, () => {
  it('answers the last n cached messages, or what followed a position, as JSON (text and base64), kept alive', async () => {
    const server = startServer();
    const pub = await Client.open(server);
    await pub.command('PUB /hist/a\none', 'PUB /hist/a\ntwo "quoted"\nline');
    pub.send(Buffer.concat([Buffer.from('PUB /hist/a\n'), Buffer.from([0, 0xff])]));
    await pub.command('PUB /hist/a\nfour');
    const raw = await Raw.connect(server);
    raw.write('GET /history?subject=/hist/a&n=3 HTTP/1.1\r\nHost: x\r\n\r\n');
    const res = await raw.response();
    assert.equal(res.status, 200, res.body);
    const h = JSON.parse(res.body);
    assert.equal(h.ok, true);
    assert.equal(h.subject, '/hist/a');
    assert.equal(h.seq, 4);
    assert.equal(h.resync, false);
    assert.deepEqual(h.messages.map((m: { seq: number }) => m.seq), [2, 3, 4]);
    assert.deepEqual(h.messages[0], { seq: 2, kind: 'history', text: 'two "quoted"\nline' });
    assert.deepEqual(Buffer.from(h.messages[1].base64, 'base64'), Buffer.from([0, 0xff]));
    raw.write(`GET /history?subject=%2Fhist%2Fa&since=${h.epoch}:3 HTTP/1.1\r\nHost: x\r\n\r\n`);
    const since = JSON.parse((await raw.response()).body);
    assert.deepEqual(since.messages, [{ seq: 4, kind: 'recovered', text: 'four' }]);
    assert.equal(since.resync, false);
    raw.write('GET /history?subject=/hist/a&since=zzz:3 HTTP/1.1\r\nHost: x\r\n\r\n');
    const other = JSON.parse((await raw.response()).body);
    assert.equal(other.resync, true, 'another epoch cannot be recovered');
    raw.write('GET /history?subject=/hist/a HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await raw.response()).status, 400, 'n or since is required');
    raw.write('GET /history?subject=/hist/none&n=5 HTTP/1.1\r\nHost: x\r\n\r\n');
    const none = JSON.parse((await raw.response()).body);
    assert.deepEqual([none.messages, none.seq], [[], 0], 'a subject with no messages: an empty list');
    await waitFor('no subscription left', () => server.stats().total.subscriptions === 0);
    raw.destroy();
  });

  it('says history is off when CacheSize = 0 (503, limit)', async () => {
    const server = startServer({ CacheSize: 0 });
    const raw = await Raw.connect(server);
    raw.write('GET /history?subject=/a&n=1 HTTP/1.1\r\nHost: x\r\n\r\n');
    const res = await raw.response();
    assert.equal(res.status, 503);
    assert.match(json(res).detail!, /CacheSize = 0/);
    raw.destroy();
  });
});

describe('CORS (HTTP.AllowOrigins)', SUITE, () => {
  it('answers preflights for allowed origins, refuses others with 403, and lets the server\'s own origin through', async () => {
    const server = startServer({ 'HTTP.AllowOrigins': 'https://app.example' });
    const raw = await Raw.connect(server);
    raw.write('OPTIONS /publish HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n');
    const pre = await raw.response();
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'https://app.example');
    assert.match(pre.headers['access-control-allow-methods'], /POST/);
    raw.write(publishRequest('/c/a', 'x', { type: 'text/plain', headers: { Origin: 'https://app.example' } }));
    const allowed = await raw.response();
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers['access-control-allow-origin'], 'https://app.example');
    raw.write(publishRequest('/c/a', 'x', { type: 'text/plain', headers: { Origin: 'https://evil.example' } }));
    assert.equal((await raw.response()).status, 403, 'a page on another site cannot publish through a browser');
    const { port } = server.addresses[0];
    raw.write(publishRequest('/c/a', 'x', { type: 'text/plain', headers: { Host: `127.0.0.1:${port}`, Origin: `http://127.0.0.1:${port}` } }));
    assert.equal((await raw.response()).status, 200, 'same origin');
    raw.destroy();
  });
});

const CURL = ['/usr/bin/curl', '/bin/curl'].find((p) => fs.existsSync(p)) ?? null;

describeWith({ program: 'curl', path: CURL, install: 'apt-get install curl' }, 'curl', SUITE, () => {
  it('curl -N receives events and curl --data-binary publishes', async () => {
    const server = startServer();
    const base = `http://127.0.0.1:${server.addresses[0].port}`;
    const reader = spawn(CURL!, ['-sN', `${base}/sse?subject=/curl/a`]);
    let out = '';
    reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await subscriptions(server, 1);
    const answer = await new Promise<string>((resolve, reject) =>
      execFile(CURL!, ['-s', '--data-binary', 'from curl', `${base}/publish?subject=/curl/a`], (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    assert.deepEqual(JSON.parse(answer), { ok: true });
    await waitFor('the event in curl\'s output', () => out.includes('data: from curl'), () => out);
    assert.match(out, /^retry: 2000\n\n/);
    assert.match(out, /id: \/curl\/a@[0-9a-z]+:1\ndata: from curl\n\n/);
    reader.kill();
  });
});
