// The redis-server kit of the cluster suites (test/redis-kit.ts) against the real redis-server: it starts one on
// a free loopback port, talks RESP to it, restarts it on the same port (keeping its data with the append-only
// file, through a kill -9 too), stops it, and runs it with a password, frozen, and as a replica. Without
// redis-server the suite is skipped with one line (with CI=true it fails): apt-get install redis-server.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { loadConfig } from '../src/config/config';
import { TIMEOUT_MS, within } from './helpers';
import { RedisReplyError, describeWithRedis, encodeCommand, parseResp, startRedis, type RespValue } from './redis-kit';

/** How long a frozen server is given to (wrongly) answer: it has no reason to be slower than this when running. */
const FROZEN_MS = 300;

/** The process name of `pid` (Linux). */
const comm = (pid: number) => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();

/** A raw connection to 127.0.0.1:`port` whose replies are read one at a time. */
async function connect(port: number): Promise<{ send(...args: string[]): void; reply(ms?: number): Promise<RespValue>; close(): void }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  await within(new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject)), `a connection to port ${port}`);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    wake?.();
  });
  return {
    send: (...args) => socket.write(encodeCommand(args)),
    reply: (ms = TIMEOUT_MS) =>
      within(
        (async () => {
          for (;;) {
            const r = parseResp(buf, 0);
            if (r) {
              buf = buf.subarray(r.end);
              return r.value;
            }
            await new Promise<void>((resolve) => (wake = resolve));
          }
        })(),
        'a reply',
        ms,
      ),
    close: () => socket.destroy(),
  };
}

describeWithRedis('redis-kit: a real redis-server for the cluster suites', { timeout: 120_000 }, () => {
  it('starts redis-server on 127.0.0.1 and a free port, answers PING and commands, and stops it', async () => {
    const redis = await startRedis();
    assert.equal(comm(redis.pid), 'redis-server');
    assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
    assert.equal(await redis.cli('PING'), '+PONG\r\n');
    assert.equal(await redis.cli('SET', 'k', 'v é'), '+OK\r\n');
    assert.equal(await redis.cli('GET', 'k'), '$4\r\nv é\r\n');
    assert.equal(await redis.command('GET', 'k'), 'v é');
    assert.equal(await redis.command('GET', 'missing'), null);
    assert.equal(await redis.command('INCRBY', 'n', '5'), 5);
    // As configured: loopback, no snapshots, no append-only file, DEBUG from loopback.
    assert.deepEqual(await redis.command('CONFIG', 'GET', 'bind'), ['bind', '127.0.0.1']);
    assert.deepEqual(await redis.command('CONFIG', 'GET', 'save'), ['save', '']);
    assert.deepEqual(await redis.command('CONFIG', 'GET', 'appendonly'), ['appendonly', 'no']);
    assert.deepEqual(await redis.command('CONFIG', 'GET', 'dir'), ['dir', fs.realpathSync(redis.dir)]);
    // Error replies: raw from cli(), thrown by command().
    assert.match(await redis.cli('NOSUCHCOMMAND'), /^-ERR unknown command 'NOSUCHCOMMAND'/);
    await assert.rejects(redis.command('NOSUCHCOMMAND'), (e: Error) => e instanceof RedisReplyError && /^ERR unknown command/.test(e.message));

    await redis.stop();
    assert.equal(redis.running, false);
    assert.equal(fs.existsSync(`/proc/${redis.pid}`), false, 'the process is gone (and reaped)');
    await assert.rejects(redis.cli('PING'), /ECONNREFUSED/);
    await redis.stop(); // idempotent
  });

  it('restarts on the same port; with appendonly, what was acknowledged survives a restart and a kill -9', async () => {
    const redis = await startRedis({ appendonly: true });
    assert.deepEqual(await redis.command('CONFIG', 'GET', 'appendfsync'), ['appendfsync', 'always']);
    const { port, pid } = redis;
    await redis.command('SET', 'a', '1');
    await redis.restart();
    assert.equal(redis.port, port);
    assert.notEqual(redis.pid, pid);
    assert.equal(await redis.command('GET', 'a'), '1', 'kept through a clean restart');

    await redis.command('SET', 'b', '2');
    redis.kill9();
    await redis.restart();
    assert.equal(redis.port, port);
    assert.equal(await redis.command('GET', 'b'), '2', 'kept through kill -9: fsynced before the reply');
    await redis.stop();
  });

  it('without appendonly, a restart starts empty', async () => {
    const redis = await startRedis();
    await redis.command('SET', 'gone', 'x');
    await redis.restart();
    assert.equal(await redis.command('GET', 'gone'), null);
    await redis.stop();
  });

  it('with a password: the kit authenticates, the url carries it percent-encoded, a client without it is refused', async () => {
    const password = 'p@ss wörd';
    const redis = await startRedis({ password });
    assert.equal(await redis.cli('PING'), '+PONG\r\n');
    assert.equal(redis.url, `redis://:p%40ss%20w%C3%B6rd@127.0.0.1:${redis.port}`);
    // The url is a ClusterRedis value that gives the password back.
    const [address] = loadConfig({ defines: [`-DClusterRedis=${redis.url}`] }).config.ClusterRedis;
    assert.deepEqual(address, { host: '127.0.0.1', port: redis.port, user: '', password, db: 0 });
    const anonymous = await connect(redis.port);
    anonymous.send('PING');
    const refused = await anonymous.reply();
    assert.ok(refused instanceof RedisReplyError && refused.reply.startsWith('NOAUTH'), String(refused));
    anonymous.close();
    await redis.stop();
  });

  it('freeze() holds every reply until thaw(), the connection staying open', async () => {
    const redis = await startRedis();
    const c = await connect(redis.port);
    redis.freeze();
    c.send('PING');
    await assert.rejects(c.reply(FROZEN_MS), /timed out/);
    redis.thaw();
    assert.equal(await c.reply(), 'PONG');
    c.close();
    // A frozen server still stops.
    redis.freeze();
    await redis.stop();
    assert.equal(redis.running, false);
  });

  it('runs a replica of another server', async () => {
    const primary = await startRedis();
    const replica = await startRedis({ replicaOf: primary.port });
    await primary.command('SET', 'r', 'copied');
    const deadline = Date.now() + TIMEOUT_MS;
    // Until the first synchronisation, the replica answers stale data (nothing) or LOADING.
    while ((await replica.command('GET', 'r').catch(() => null)) !== 'copied') {
      assert.ok(Date.now() < deadline, `the replica did not get the key within ${TIMEOUT_MS} ms:\n${replica.output()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(((await replica.command('ROLE')) as RespValue[])[0], 'slave');
    await assert.rejects(replica.command('SET', 'x', '1'), /^RedisReplyError: READONLY/);
    await replica.stop();
    await primary.stop();
  });
});
