// A cluster (ClusterEngine = redis, real redis-server) under the tests an attacker or an unlucky operator would
// write: a subscriber on one node that never reads a flood published on another, Redis frozen past the link's dead
// timeout, thousands of subjects followed and dropped, subject names and payloads full of bytes that mean something
// to Redis, and a replica listed before the primary. Throughout each one a well-behaved subscriber must receive
// every message in order, and the nodes' accounted memory (memory_bytes) must come back near where it started.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from '../src/index';
import { startServer } from './helpers';
import { describeWithRedis, startRedis } from './redis-kit';
import { ServerChild } from './hostile-kit';
import {
  Pub,
  PubLoop,
  Tap,
  assertConsecutive,
  clusterConfig,
  duplicates,
  eventually,
  numsub,
  sleep,
  startNodes,
  total,
  waitState,
} from './cluster-kit';

const SUITE = { timeout: 600_000 };
const TEST = { timeout: 60_000 };
const MB = 1024 * 1024;
/** How far the accounted memory may stay above its baseline once an attack is over. */
const ACCOUNT_SLACK = 512 * 1024;

/**
 * What clients make the nodes hold beyond their history caches: memory_bytes (one account per process, so every
 * node of this file's process together) less the cached_bytes of `nodes` (the caches keep what the subjects
 * followed were sent, within CacheSize: bounded by configuration, not by clients).
 */
const held = (nodes: Server[]) => total(nodes[0], 'memory_bytes') - nodes.reduce((sum, n) => sum + total(n, 'cached_bytes'), 0);

/** Waits (up to 10 s) until held(nodes) is within ACCOUNT_SLACK of `baseline`; fails with the readings. */
async function memoryBack(nodes: Server[], baseline: number, what: string): Promise<void> {
  const readings: number[] = [];
  await eventually(
    `${what}: memory_bytes (less the caches) back within ${ACCOUNT_SLACK / 1024} KB of its baseline ${(baseline / MB).toFixed(2)} MB`,
    () => {
      readings.push(held(nodes));
      return readings.at(-1)! <= baseline + ACCOUNT_SLACK;
    },
    () => readings.slice(-5).map((r) => (r / MB).toFixed(2) + ' MB'),
    10_000,
    100,
  );
}

/**
 * A well-behaved pair: a subscriber on `on` (no repair: any gap is a failure) of `subject`, and a publisher on
 * `from` publishing to it every 20 ms, until check() verifies that every message arrived once, in order.
 */
async function healthy(from: Server, on: Server, subject: string, interval = 20): Promise<{ tap: Tap; check(): Promise<void> }> {
  const tap = await Tap.open(on, `the healthy subscriber on ${on.config.ClusterNodeName}`);
  await tap.sub(subject);
  const pub = await Pub.open(from, 'h');
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      pub.publish(subject);
      await sleep(interval);
    }
  })();
  return {
    tap,
    async check() {
      stop = true;
      await loop;
      await pub.all();
      const acked = pub.acked;
      assert.ok(acked.length > 0, 'the healthy publisher published');
      await tap.count(subject, pub.sent.length);
      assert.deepEqual(tap.problems, [], `${tap.name}: problems`);
      assert.deepEqual(tap.lines, [], `${tap.name}: unexpected lines`);
      assert.equal(tap.closedWith, null, `${tap.name} was closed`);
      assert.deepEqual(tap.texts(subject), pub.sent, `${tap.name}: every message of ${subject}, once, in order`);
      assertConsecutive(tap.of(subject), `${tap.name} on ${subject}`, 1);
      pub.terminate();
    },
  };
}

describeWithRedis('a cluster under attack', SUITE, () => {
  it('a subscriber on node B that never reads a flood published on node A is cut as a slow consumer; B gives its memory back', TEST, async (t) => {
    const redis = await startRedis();
    const [a, b] = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed', MaxBacklog: '256K', 'BufferLimit.Send': '64K' });
    const flood = '/hostile/flood';
    const h = await healthy(a, b, '/hostile/ticker');
    const reader = await Tap.open(b, 'a reader of the flood on B');
    await reader.sub(flood);
    const nonReader = await Tap.open(b, 'the non-reader on B');
    await nonReader.sub(flood);
    const baseline = held([a, b]);
    const cuts = total(b, 'slow_consumer_closes');
    const connections = total(b, 'connections');
    nonReader.pause();

    // 20,000 messages of 1 KB (20 MB) published on A, acknowledged once Redis stored them.
    const N = 20_000;
    const pub = await Pub.open(a, 'f');
    const payload = (i: number) => `${i}:`.padEnd(1000, 'x');
    const start = Date.now();
    for (let i = 1; i <= N; i++) {
      pub.publish(flood, payload(i));
      if (i % 1000 === 0) await pub.below(2000, 30_000);
    }
    await pub.all(30_000);
    assert.equal(pub.acked.length, N, 'every flood message acknowledged');
    await reader.count(flood, N, 30_000);
    t.diagnostic(`${N} messages of 1 KB published on A and read on B in ${Date.now() - start} ms`);
    await eventually('B cut the non-reader as a slow consumer', () => total(b, 'slow_consumer_closes') > cuts, () => total(b, 'slow_consumer_closes'));
    // (A paused socket does not see the reset: the connection count says it is gone.)
    await eventually('the non-reader gone from B', () => total(b, 'connections') === connections - 1, () => total(b, 'connections'));
    nonReader.terminate();
    assert.deepEqual(reader.problems, []);
    assertConsecutive(reader.of(flood), 'the reader of the flood', 1);
    assert.ok(reader.of(flood).every((r, i) => r.payload.toString() === payload(i + 1)), 'the flood in the order published');
    await h.check();
    await memoryBack([a, b], baseline, 'the nodes after the slow consumer was cut');
    assert.equal(b.cluster.state, 'up');
    await Promise.all([a.close(), b.close()]);
  });

  it('Redis frozen (SIGSTOP) past the 5 s dead timeout while publishing: the link goes down, publishes are refused, nodes recover after the thaw without losing anything acknowledged', TEST, async (t) => {
    const redis = await startRedis();
    const nodes = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed' });
    const [a, b] = nodes;
    const subject = '/hostile/frozen';
    const taps = [await Tap.open(a, 'the subscriber on A', { repair: true }), await Tap.open(b, 'the subscriber on B', { repair: true })];
    for (const tap of taps) await tap.sub(subject);
    const baseline = held(nodes);
    const loops = [new PubLoop(await Pub.open(a, 'a'), subject, 16, 20), new PubLoop(await Pub.open(b, 'b'), subject, 16, 20)];
    await eventually('200 acknowledged', () => loops.every((l) => l.pub.acked.length >= 200));

    const details = nodes.map(() => [] as string[]);
    const watch = setInterval(() => nodes.forEach((n, i) => {
      const d = `${n.cluster.state}: ${n.cluster.detail}`;
      if (details[i].at(-1) !== d) details[i].push(d);
    }), 5);
    const frozenAt = Date.now();
    redis.freeze();
    for (const n of nodes) await waitState(n, 'down', 15_000);
    const downAfter = Date.now() - frozenAt;
    await sleep(1500);
    const acksWhileFrozen = loops.map((l) => l.pub.acked.length);
    await sleep(500);
    assert.deepEqual(loops.map((l) => l.pub.acked.length), acksWhileFrozen, 'nothing acknowledged while Redis is frozen');
    redis.thaw();
    for (const n of nodes) await waitState(n, 'up', 20_000);
    const upAfter = Date.now() - frozenAt;
    const thawedAt = loops.map((l) => l.pub.acked.length);
    await eventually('200 more acknowledged after the thaw', () => loops.every((l, i) => l.pub.acked.length >= thawedAt[i] + 200));
    for (const l of loops) await l.stop();
    clearInterval(watch);
    t.diagnostic(`down ${downAfter} ms after the freeze, up ${upAfter} ms after it; A: ${details[0].join(' > ')}`);

    assert.ok(downAfter >= 4500, `the link waited for its 5 s dead timeout (down after ${downAfter} ms)`);
    for (const d of details) assert.ok(d.some((x) => /^down: .*answer/.test(x)), `the detail says Redis did not answer: ${d.join(' > ')}`);
    const pubs = loops.map((l) => l.pub);
    const acked = new Set(pubs.flatMap((p) => p.acked));
    const unknown = new Set(pubs.flatMap((p) => p.refused('unavailable', /may or may not have been stored/)));
    const notSent = new Set(pubs.flatMap((p) => p.refused('unavailable')).filter((id) => !unknown.has(id)));
    const other = pubs.flatMap((p) => [...p.answers].filter(([, x]) => !x.ok && x.code !== 'unavailable'));
    t.diagnostic(`${acked.size} acknowledged, ${unknown.size} in flight when the link went down (may or may not), ${notSent.size} refused while down`);
    assert.deepEqual(other, []);
    assert.ok(unknown.size > 0, 'the publishes in flight when the link went down were answered ERR unavailable (may or may not have been stored)');
    assert.ok(notSent.size > 0, 'publishes while down were answered ERR unavailable');

    const want = [...acked];
    for (const tap of taps) {
      await tap.until('every acknowledged message', () => {
        const got = new Set(tap.texts(subject));
        return want.every((id) => got.has(id));
      }, () => ({ got: tap.of(subject).length, want: want.length, gaps: tap.gaps.slice(-3) }));
      await tap.ping();
      const texts = tap.texts(subject);
      assert.deepEqual(duplicates(texts), [], `${tap.name}: delivered twice`);
      assert.deepEqual(texts.filter((id) => notSent.has(id)), [], `${tap.name}: delivered though refused as not published`);
      assert.deepEqual(texts.filter((id) => !acked.has(id) && !unknown.has(id)), [], `${tap.name}: delivered and never published`);
      assertConsecutive(tap.of(subject), tap.name, 1);
      assert.equal(tap.resyncs, 0, `${tap.name}: no RESYNC`);
      assert.deepEqual(tap.problems, []);
      t.diagnostic(`${tap.name}: ${tap.gaps.length} gaps repaired by position; ${texts.filter((id) => unknown.has(id)).length} of the "may or may not" ones were stored`);
    }
    for (const tap of taps) tap.terminate();
    await memoryBack(nodes, baseline, 'the nodes after the freeze');
    await Promise.all(nodes.map((n) => n.close()));
  });

  it('2,000 subjects subscribed on node B and published on node A: all delivered; all unsubscribed: Redis drops them and B gives its memory back', TEST, async () => {
    const redis = await startRedis();
    const [a, b] = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed' });
    const h = await healthy(a, b, '/many/ticker');
    const baseline = { memory: held([a, b]), subjects: total(b, 'subjects'), cached: total(b, 'cached_bytes') };
    const N = 2000;
    const subjects = Array.from({ length: N }, (_, i) => `/many/s${i}`);
    // Four connections of 500 subjects each (MaxSubscriptionsPerConnection is 1000), SUBs of 100 subjects.
    const taps: Tap[] = [];
    for (let k = 0; k < 4; k++) {
      const tap = await Tap.open(b, `subscriber ${k} on B`);
      for (let i = k * 500; i < (k + 1) * 500; i += 100) tap.send(`SUB ${subjects.slice(i, i + 100).join(' ')}`);
      await tap.ping(30_000);
      taps.push(tap);
    }
    const counts = await numsub(redis, subjects);
    assert.deepEqual([...new Set(counts.values())], [1], 'each subject followed by one node (B) in Redis');
    const pub = await Pub.open(a, 'm');
    for (const s of subjects) pub.publish(s, `to ${s}`);
    await pub.all(30_000);
    assert.equal(pub.acked.length, N);
    for (const [k, tap] of taps.entries())
      await tap.until('one message on each of its subjects', () => subjects.slice(k * 500, (k + 1) * 500).every((s) => tap.of(s).length === 1), () => tap.received);
    for (const [k, tap] of taps.entries())
      for (const s of subjects.slice(k * 500, (k + 1) * 500)) assert.deepEqual(tap.of(s).map((r) => [r.seq, r.payload.toString()]), [[1, `to ${s}`]]);

    for (const [k, tap] of taps.entries()) {
      for (let i = k * 500; i < (k + 1) * 500; i += 100) tap.send(`UNSUB ${subjects.slice(i, i + 100).join(' ')}`);
      await tap.ping(30_000);
    }
    await eventually('Redis: no node follows any of them', async () => [...(await numsub(redis, subjects)).values()].every((n) => n === 0), () => 'NUMSUB', 20_000, 100);
    await eventually(`B forgets them (subjects back to ${baseline.subjects})`, () => total(b, 'subjects') <= baseline.subjects, () => total(b, 'subjects'));
    for (const tap of taps) tap.terminate();
    await h.check();
    // Subjects no longer followed lose their cache too (the ticker's grows meanwhile, by a few KB).
    assert.ok(total(b, 'cached_bytes') <= baseline.cached + 256 * 1024, `B's caches: ${total(b, 'cached_bytes')} bytes, ${baseline.cached} before`);
    await memoryBack([a, b], baseline.memory, 'the nodes after 2,000 subjects');
    await Promise.all([a.close(), b.close()]);
  });

  it('subject names with Redis-special bytes and binary payloads with CR LF and NUL arrive intact across nodes (live, recovered, history, snapshot)', TEST, async () => {
    const redis = await startRedis();
    const [a, b, c] = await startNodes(redis, 3, { ClusterDeliveryMode: 'Guaranteed' });
    const subjects = ['/x{y}/a:b', '/{}', '/}:m', '/a/{b}:l', '/starling:{x}:m', '/$5/:0:/#1/@2', '/~!"\'%&()+,;<=>?[\\]^`|'];
    const payloads: (string | Buffer)[] = [
      Buffer.from([0, 13, 10, 0, 255, 0x2a, 0x33, 13, 10, 0x24, 0x35, 13, 10]), // NUL, CR LF, 0xFF, "*3\r\n$5\r\n"
      Buffer.alloc(0),
      '',
      'line one\r\nline two\n\nMSG /x 1:1\n',
      'abc 7 tr\nnot a header',
      Buffer.from('-ERR not an error\r\n+OK\r\n:1\r\n', 'latin1'),
      Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => (i * 7) & 0xff)), // MaxMessageSize, every byte value
    ];
    const same = (got: { payload: Buffer; binary: boolean }, want: string | Buffer, what: string) => {
      assert.equal(got.binary, typeof want !== 'string', `${what}: the frame type`);
      assert.ok(got.payload.equals(typeof want === 'string' ? Buffer.from(want) : want), `${what}: the payload (${got.payload.length} bytes, ${JSON.stringify(got.payload.subarray(0, 40).toString('latin1'))})`);
    };
    const live = await Tap.open(b, 'a subscriber on B');
    await live.sub(...subjects.map((s) => `${s}#0`));
    const epochs = new Map(live.syncs.map((l) => l.split(' ')).map(([, s, pos]) => [s, pos.split(':')[0]]));
    assert.equal(epochs.size, subjects.length, `a SYNC per subject: ${live.syncs.join(' | ')}`);
    const pub = await Pub.open(a, 'p');
    for (const s of subjects) for (const p of payloads) pub.publish(s, p);
    for (const s of subjects) pub.publish(s, payloads[0], { retained: true });
    await pub.all();
    assert.deepEqual([...pub.answers].filter(([, x]) => !x.ok), [], 'every publish acknowledged');
    const n = payloads.length + 1;
    for (const s of subjects) await live.count(s, n);
    for (const s of subjects) {
      for (const [i, p] of payloads.entries()) same(live.of(s)[i], p, `${s} message ${i + 1} live on B`);
      assertConsecutive(live.of(s), `${s} on B`, 1);
    }
    // Read back from Redis: recovered on C, history on A, the snapshot on C.
    const rec = await Tap.open(c, 'a recovering subscriber on C');
    await rec.sub(...subjects.map((s) => `${s}@${epochs.get(s)}:0`));
    const hist = await Tap.open(a, 'a history subscriber on A');
    await hist.sub(...subjects.map((s) => `${s}#${n}`));
    const snap = await Tap.open(c, 'a snapshot subscriber on C');
    await snap.sub(...subjects);
    for (const s of subjects) {
      assert.deepEqual(rec.of(s).map((r) => r.kind), Array(n).fill('recovered'), `${s} recovered on C`);
      assert.deepEqual(hist.of(s).map((r) => r.kind), Array(n).fill('history'), `${s} history on A`);
      for (const [i, p] of payloads.entries()) {
        same(rec.of(s)[i], p, `${s} message ${i + 1} recovered on C`);
        same(hist.of(s)[i], p, `${s} message ${i + 1} as history on A`);
      }
      await snap.until(`the snapshot of ${s}`, () => snap.of(s).length >= 1);
      assert.deepEqual(snap.of(s).map((r) => [r.seq, r.kind]), [[n, 'snapshot']]);
      same(snap.of(s)[0], payloads[0], `${s} snapshot on C`);
    }
    assert.deepEqual([...rec.syncs, ...hist.syncs].filter((l) => !l.startsWith('SYNC ')), [], 'no RESYNC');
    // '*' is not a subject byte: refused before it reaches Redis.
    const bad = await Tap.open(b, 'a client with a wildcard');
    bad.send('SUB /a*');
    bad.send('PUB /a* w1\nx');
    await bad.ping();
    assert.deepEqual(bad.lines.map((l) => l.split(' ').slice(0, 3).join(' ')), ['ERR bad-subject /a*:', 'ERR bad-subject w1']);
  });

  it('a replica listed before the primary: the node ends up on the primary; after a failover, on the promoted replica', TEST, async () => {
    const primary = await startRedis();
    const replica = await startRedis({ replicaOf: primary.port });
    await eventually('the replica in sync', async () => /master_link_status:up/.test(String(await replica.command('INFO', 'replication'))));
    const node = startServer(clusterConfig(`redis://127.0.0.1:${replica.port}, redis://127.0.0.1:${primary.port}`, 'node-r', { ClusterDeliveryMode: 'Guaranteed' }));
    await waitState(node, 'up');
    assert.deepEqual(node.cluster, { state: 'up', redis: `127.0.0.1:${primary.port}`, detail: '', error: '' });
    const other = startServer(clusterConfig(primary, 'node-p', { ClusterDeliveryMode: 'Guaranteed' }));
    await waitState(other, 'up');
    const sub = await Tap.open(other, 'a subscriber on the other node', { repair: true });
    await sub.sub('/rep/x');
    const pub = await Pub.open(node, 'r');
    for (let i = 0; i < 10; i++) pub.publish('/rep/x');
    await pub.all();
    assert.equal(pub.acked.length, 10);
    await sub.count('/rep/x', 10);
    await eventually('the replica has the stream', async () => (await replica.command('XLEN', 'starling:{/rep/x}:l')) === 10);

    // Failover: the primary dies, the replica is promoted. The node moves to it (the next listed) by itself.
    await primary.stop('SIGKILL');
    await replica.command('REPLICAOF', 'NO', 'ONE');
    await waitState(node, 'down');
    await eventually('the node on the promoted replica', () => node.cluster.state === 'up' && node.cluster.redis === `127.0.0.1:${replica.port}`, () => node.cluster, 20_000);
    for (let i = 0; i < 10; i++) pub.publish('/rep/x');
    await pub.all();
    assert.equal(pub.acked.length, 20, 'publishes taken by the promoted replica');
    const tap = await Tap.open(node, 'a subscriber on the failed-over node');
    await tap.sub('/rep/x#20');
    assert.deepEqual(tap.of('/rep/x').map((r) => r.seq), Array.from({ length: 20 }, (_, i) => i + 1), 'the history, continued on the promoted replica');
    assert.deepEqual(tap.texts('/rep/x'), pub.acked);
  });

  it('the primary demoted by FAILOVER (it keeps running, as a replica): the node moves to the promoted replica and publishes are taken again', TEST, async (t) => {
    const primary = await startRedis();
    const replica = await startRedis({ replicaOf: primary.port });
    await eventually('the replica in sync', async () => /master_link_status:up/.test(String(await replica.command('INFO', 'replication'))));
    const node = startServer(clusterConfig(`redis://127.0.0.1:${primary.port}, redis://127.0.0.1:${replica.port}`, 'node-f', { ClusterDeliveryMode: 'Guaranteed' }));
    await waitState(node, 'up');
    const sub = await Tap.open(node, 'a subscriber', { repair: true });
    await sub.sub('/fail/x');
    const pub = await Pub.open(node, 'f');
    for (let i = 0; i < 5; i++) pub.publish('/fail/x');
    await pub.all();
    assert.equal(pub.acked.length, 5);

    // A planned failover (what Sentinel or an operator does): the replica becomes the primary, the primary a replica.
    assert.equal(await primary.cli('FAILOVER'), '+OK\r\n');
    await eventually('the roles swapped', async () => (await replica.command('ROLE')) instanceof Array && ((await replica.command('ROLE')) as string[])[0] === 'master' && ((await primary.command('ROLE')) as string[])[0] === 'slave', () => 'ROLE', 10_000);
    // Publishes may be refused while the node finds the new primary, but within 10 s it must be there and take them.
    const deadline = Date.now() + 10_000;
    let taken = false;
    while (!taken && Date.now() < deadline) {
      const id = pub.publish('/fail/x');
      await pub.all();
      taken = pub.answers.get(id)!.ok;
      if (!taken) await sleep(200);
    }
    t.diagnostic(`link ${JSON.stringify(node.cluster)}; last answer ${JSON.stringify([...pub.answers].at(-1))}; cluster_reconnects ${total(node, 'cluster_reconnects')}`);
    assert.ok(taken, `a publish is taken within 10 s of the failover; the link says ${JSON.stringify(node.cluster)}`);
    assert.equal(node.cluster.redis, `127.0.0.1:${replica.port}`, 'the node uses the promoted replica');
    assert.deepEqual(node.cluster, { state: 'up', redis: `127.0.0.1:${replica.port}`, detail: '', error: '' });
    // Every publish taken reached the subscriber, once, in order.
    await sub.until('every acknowledged message', () => pub.acked.every((id) => sub.texts('/fail/x').includes(id)));
    assert.deepEqual(sub.texts('/fail/x').filter((id) => pub.acked.includes(id)), pub.acked);
    assert.equal(sub.resyncs, 0);
  });

  it('a node stopped (SIGSTOP) while a flood passes: Redis drops its pub/sub connection (client-output-buffer-limit); after SIGCONT it reconnects and its subscribers get every message, in order', TEST, async (t) => {
    const redis = await startRedis();
    // A small pub/sub output limit, so that a flood to a node that does not read passes it quickly.
    await redis.command('CONFIG', 'SET', 'client-output-buffer-limit', 'pubsub 256kb 128kb 1');
    const config = { ClusterDeliveryMode: 'Guaranteed', MaxCachedMessagesPerSubject: 2000, CacheSize: '128M' };
    const [a] = await startNodes(redis, 1, config);
    const stopped = await ServerChild.start(clusterConfig(redis, 'node-s', config));
    await eventually('the link of the child node up', async () => (await stopped.stats()).total.cluster_state === 2);
    const flood = '/hostile/paused';
    const onS = await Tap.open(stopped.url, 'the subscriber on the stopped node');
    await onS.sub(flood);
    const onA = await Tap.open(a, 'the subscriber on A');
    await onA.sub(flood);
    const baseline = await stopped.stats();
    const pub = await Pub.open(a, 'p');
    const N = 1500; // within the stream's length (MaxCachedMessagesPerSubject): Redis keeps them all
    const payload = (i: number) => `${i}:`.padEnd(16 * 1024, 'z');
    for (let i = 1; i <= 100; i++) pub.publish(flood, payload(i));
    await pub.all();
    await onS.count(flood, 100);

    stopped.proc.kill('SIGSTOP');
    for (let i = 101; i <= N; i++) {
      pub.publish(flood, payload(i));
      if (i % 200 === 0) await pub.below(400, 30_000);
    }
    await pub.all(30_000);
    assert.equal(pub.acked.length, N);
    await eventually('Redis dropped the stopped node\'s pub/sub connection', async () => !(await redis.cli('CLIENT', 'LIST')).includes('name=starling:node-s:messages'), () => 'CLIENT LIST', 10_000, 100);
    stopped.proc.kill('SIGCONT');
    await onS.count(flood, N, 30_000);
    await onA.count(flood, N, 30_000);
    const after = await stopped.stats();
    t.diagnostic(`the stopped node: cluster_reconnects ${after.total.cluster_reconnects}, cluster_refilled ${after.total.cluster_refilled - baseline.total.cluster_refilled}`);
    for (const tap of [onS, onA]) {
      assert.deepEqual(tap.problems, [], `${tap.name}: problems`);
      assertConsecutive(tap.of(flood), tap.name, 1);
      assert.ok(tap.of(flood).every((r, i) => r.payload.toString() === payload(i + 1)), `${tap.name}: the flood in the order published`);
    }
    assert.ok(after.total.cluster_reconnects >= 1, 'the stopped node reconnected');
    assert.equal(after.total.cluster_state, 2);
    // Its memory (its own process): back near the start once the subscriber has read everything (caches aside).
    await eventually('the stopped node\'s memory back', async () => {
      const s = await stopped.stats();
      return s.total.memory_bytes - s.total.cached_bytes <= baseline.total.memory_bytes - baseline.total.cached_bytes + ACCOUNT_SLACK;
    }, () => 'memory_bytes', 10_000, 200);
    stopped.assertAlive();
  });
});
