// An active/active cluster (ClusterEngine = redis) against the real redis-server (test/redis-kit.ts): nodes are
// real servers (in this process, or child processes where one must be killed), clients are raw `ws` connections
// (test/cluster-kit.ts Tap and Pub) or the client SDK. What a client may rely on whatever node it is connected to:
// every message of a subject once, in one order (the same on every node), numbered consecutively in one epoch;
// recovery by position on any node; snapshots; failover of the SDK between nodes without loss; a Redis restart
// that loses nothing acknowledged; the monitor's cluster counters; and a node that follows only the subjects its
// clients subscribe to. Without redis-server the suite is skipped with one line (with CI=true it fails).
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Client as SdkClient, type StarlingError } from 'starling/client';
import type { Server } from '../src/index';
import { describeWithRedis, startRedis } from './redis-kit';
import { ServerChild } from './hostile-kit';
import { Recorder, assertConsecutive as assertConsecutiveSeen, until } from './client-kit';
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
/** Every test: at most a minute. */
const TEST = { timeout: 60_000 };
const FAST = { min: 5, max: 100, jitter: 0.5 };

/** The ids of `pub` acknowledged, as a set. */
const ackedSet = (...pubs: Pub[]) => new Set(pubs.flatMap((p) => p.acked));

/** /stats of a node's monitor: its cluster block and server indicators. */
interface MonitorStats {
  cluster: { node: string; state: string; redis: string; detail: string };
  server: Record<string, number>;
}
async function monitorStats(node: Server): Promise<MonitorStats> {
  const res = await fetch(new URL('/stats', node.monitor!.url!));
  assert.equal(res.status, 200);
  return (await res.json()) as MonitorStats;
}

describeWithRedis('a cluster of nodes on one Redis', SUITE, () => {
  it('three nodes, two workgroups each, publishers on every node at full speed: every subscriber gets every message once, in the same order', TEST, async (t) => {
    const redis = await startRedis();
    const nodes = await startNodes(redis, 3, { Workgroups: 2, ClusterDeliveryMode: 'Guaranteed' });
    const subjects = ['/t1/s0', '/t1/s1', '/t1/s2', '/t1/s3'];
    const N = 1000; // per publisher and subject
    // Three subscribers per node (BenchmarkMode places connections round-robin: both workgroups): one on every
    // subject, one on the even ones, one on the odd ones.
    const taps: { tap: Tap; subjects: string[]; node: number }[] = [];
    for (const [n, node] of nodes.entries()) {
      for (const [i, subs] of [subjects, [subjects[0], subjects[2]], [subjects[1], subjects[3]]].entries()) {
        const tap = await Tap.open(node, `subscriber ${i} on node ${n}`);
        await tap.sub(...subs);
        taps.push({ tap, subjects: subs, node: n });
      }
    }
    const pubs = await Promise.all(nodes.map((node, n) => Pub.open(node, `${'abc'[n]}-`)));
    const subjectOf = new Map<string, string>();
    const start = Date.now();
    for (let i = 0; i < N; i++) for (const s of subjects) for (const p of pubs) subjectOf.set(p.publish(s), s);
    await Promise.all(pubs.map((p) => p.all(45_000)));
    t.diagnostic(`${N * 12} publishes (Guaranteed) acknowledged in ${Date.now() - start} ms`);
    for (const p of pubs) assert.deepEqual([...p.answers].filter(([, a]) => !a.ok).slice(0, 5), [], 'every publish acknowledged');

    // Acknowledgements per subject: as many as were published to it.
    const acks = new Map<string, number>();
    for (const id of ackedSet(...pubs)) acks.set(subjectOf.get(id)!, (acks.get(subjectOf.get(id)!) ?? 0) + 1);
    for (const s of subjects) assert.equal(acks.get(s), 3 * N, `acknowledgements on ${s}`);

    for (const { tap, subjects: subs } of taps) for (const s of subs) await tap.count(s, 3 * N, 30_000);
    await Promise.all(taps.map(({ tap }) => tap.ping()));
    t.diagnostic(`delivered everywhere in ${Date.now() - start} ms`);

    for (const s of subjects) {
      const holders = taps.filter((x) => x.subjects.includes(s));
      const reference = holders[0].tap.texts(s);
      const epoch = assertConsecutive(holders[0].tap.of(s), `${holders[0].tap.name} on ${s}`, 1);
      assert.equal(reference.length, 3 * N, `${holders[0].tap.name}: messages on ${s}`);
      assert.deepEqual(duplicates(reference), [], `${s}: a message delivered twice`);
      assert.deepEqual(new Set(reference), new Set([...subjectOf].filter(([, x]) => x === s).map(([id]) => id)), `${s}: exactly the messages published to it`);
      // Each publisher's messages in the order it sent them.
      for (const p of ['a-', 'b-', 'c-']) {
        const mine = reference.filter((id) => id.startsWith(p)).map((id) => Number(id.slice(2)));
        assert.ok(mine.every((n, i) => i === 0 || n > mine[i - 1]), `${s}: the messages of publisher ${p} in the order it sent them`);
      }
      for (const { tap, node } of holders) {
        assert.deepEqual(tap.problems, [], `${tap.name}: problems`);
        assert.equal(tap.of(s).length, 3 * N, `${tap.name}: messages on ${s}`);
        assert.equal(assertConsecutive(tap.of(s), `${tap.name} (node ${node}) on ${s}`, 1), epoch, `${tap.name}: one epoch for ${s} on every node`);
        assert.ok(tap.of(s).every((r) => r.kind === 'live'), `${tap.name}: all live`);
        assert.deepEqual(tap.texts(s), reference, `${tap.name} (node ${node}): the same order on ${s} as ${holders[0].tap.name}`);
      }
    }
    for (const { tap } of taps) assert.deepEqual(tap.lines, [], `${tap.name}: nothing but MSG and PONG`);
  });

  it('recovers by position on another node: recovered then SYNC then live; RESYNC past MaxCachedMessagesPerSubject; snapshots published on one node', TEST, async () => {
    const redis = await startRedis();
    const MAX = 50;
    const [a, b] = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed', MaxCachedMessagesPerSubject: MAX });
    const pub = await Pub.open(a, 'p');
    const publish = async (subject: string, n: number, payload?: (i: number) => string) => {
      for (let i = 0; i < n; i++) pub.publish(subject, payload?.(i));
      await pub.all();
      assert.deepEqual([...pub.answers].filter(([, x]) => !x.ok), [], 'every publish acknowledged');
    };

    // A client on node A takes 10 messages, then goes away; 20 more are published.
    const s = '/r/x';
    const first = await Tap.open(a, 'the client on A');
    await first.sub(`${s}#0`);
    const [, epoch, zero] = /^SYNC \/r\/x ([0-9a-z]+):(\d+)$/.exec(first.syncs[0] ?? '') ?? [];
    assert.ok(epoch, `SUB ${s}#0 answered with a SYNC: ${JSON.stringify(first.syncs)}`);
    assert.equal(zero, '0');
    await publish(s, 10, (i) => `m${i + 1}`);
    await first.count(s, 10);
    assertConsecutive(first.of(s), 'the client on A', 1);
    first.terminate();
    await publish(s, 20, (i) => `m${i + 11}`);

    // It comes back on node B (which follows nothing yet) from its position: 11..30 recovered, SYNC, then live.
    const back = await Tap.open(b, 'the client back on B');
    await back.sub(`${s}@${epoch}:10`);
    assert.deepEqual(back.syncs, [`SYNC ${s} ${epoch}:30`]);
    assert.deepEqual(back.of(s).map((r) => [r.epoch, r.seq, r.kind, r.payload.toString()]), Array.from({ length: 20 }, (_, i) => [epoch, i + 11, 'recovered', `m${i + 11}`]));
    await publish(s, 5, (i) => `m${i + 31}`);
    await back.count(s, 25);
    assert.deepEqual(back.of(s).slice(20).map((r) => [r.seq, r.kind, r.payload.toString()]), Array.from({ length: 5 }, (_, i) => [i + 31, 'live', `m${i + 31}`]));
    assertConsecutive(back.of(s), 'the client back on B', 11);

    // A second one on B (B follows the subject now) and one on A, each from its own position.
    for (const [node, from] of [[b, 20], [a, 33], [b, 35]] as const) {
      const c = await Tap.open(node, `a client from ${from}`);
      await c.sub(`${s}@${epoch}:${from}`);
      assert.deepEqual(c.syncs, [`SYNC ${s} ${epoch}:35`], `recovery from ${from}`);
      assert.deepEqual(c.of(s).map((r) => [r.seq, r.kind]), Array.from({ length: 35 - from }, (_, i) => [from + i + 1, 'recovered']));
      c.terminate();
    }
    // A position it cannot recover: another epoch, or ahead of the subject.
    const otherEpoch = epoch === 'abc' ? 'abd' : 'abc';
    for (const spec of [`${s}@${otherEpoch}:5`, `${s}@${epoch}:36`]) {
      const c = await Tap.open(b, `a client asking ${spec}`);
      await c.sub(spec);
      assert.deepEqual(c.syncs, [`RESYNC ${s} ${epoch}:35`], spec);
      assert.equal(c.of(s).length, 0);
      c.terminate();
    }

    // Older than MaxCachedMessagesPerSubject: RESYNC; exactly that many back: recovered.
    const old = '/r/old';
    const watcher = await Tap.open(a, 'a subscriber on A');
    await watcher.sub(`${old}#0`);
    const oldEpoch = /^SYNC \S+ ([0-9a-z]+):0$/.exec(watcher.syncs[0])![1];
    await publish(old, 3 * MAX);
    await watcher.count(old, 3 * MAX);
    let last = 3 * MAX;
    for (const [back, answer] of [[3 * MAX - 5, 'RESYNC'], [MAX + 1, 'RESYNC'], [MAX, 'SYNC']] as const) {
      const from = last - back;
      const c = await Tap.open(b, `a client on B from ${from}`);
      await c.sub(`${old}@${oldEpoch}:${from}`);
      assert.deepEqual(c.syncs, [`${answer} ${old} ${oldEpoch}:${last}`], `recovery of ${back} messages with ${MAX} cached`);
      assert.deepEqual(c.of(old).map((r) => r.seq), answer === 'SYNC' ? Array.from({ length: MAX }, (_, i) => from + 1 + i) : []);
      // After a RESYNC: live from the position it gave.
      pub.publish(old, 'after');
      await c.until('the next live message', () => c.of(old).some((r) => r.kind === 'live'));
      await pub.all();
      last++;
      c.terminate();
    }

    // Snapshots published on A reach new subscribers on B (B following the subject or not).
    const snap = '/r/snap';
    pub.publish(snap, 'S1', { retained: true });
    pub.publish(snap, 'plain2');
    await pub.all();
    const s1 = await Tap.open(b, 'a snapshot subscriber on B');
    await s1.sub(snap);
    await s1.until('the snapshot', () => s1.of(snap).length >= 1);
    assert.deepEqual(s1.of(snap).map((r) => [r.seq, r.kind, r.payload.toString()]), [[1, 'snapshot', 'S1']]);
    pub.publish(snap, 'plain3');
    pub.publish(snap, 'S4', { retained: true });
    await pub.all();
    await s1.count(snap, 3);
    assert.deepEqual(s1.of(snap).map((r) => [r.seq, r.kind, r.payload.toString()]), [[1, 'snapshot', 'S1'], [3, 'live', 'plain3'], [4, 'live', 'S4']]);
    for (const node of [b, a]) {
      const s2 = await Tap.open(node, 'a later snapshot subscriber');
      await s2.sub(snap);
      await s2.until('the snapshot', () => s2.of(snap).length >= 1);
      assert.deepEqual(s2.of(snap).map((r) => [r.seq, r.kind, r.payload.toString()]), [[4, 'snapshot', 'S4']], `the newest snapshot on node ${node.config.ClusterNodeName}`);
      s2.terminate();
    }
  });

  it('the SDK with three nodes fails over when its node is killed (-9) while others publish: every acknowledged message once to every subscriber, no resync', TEST, async (t) => {
    const redis = await startRedis();
    const cfg = (name: string) => clusterConfig(redis, name, { ClusterDeliveryMode: 'Guaranteed', CacheSize: '32M', MaxCachedMessagesPerSubject: 10_000 });
    const [a, b, c] = await Promise.all(['node-a', 'node-b', 'node-c'].map((n) => ServerChild.start(cfg(n))));
    const subject = '/fo/quotes';
    const sdk = (servers: ServerChild[]) => connect({ servers: servers.map((s) => s.url), reconnect: FAST });

    // Two subscribers on A (each fails over to another node), one on B, one on C.
    const subscribers: { name: string; rec: Recorder }[] = [];
    for (const [name, servers] of [['x1 (A, B, C)', [a, b, c]], ['x2 (A, C, B)', [a, c, b]], ['y (B)', [b]], ['z (C)', [c]]] as const) {
      const client = sdk([...servers]);
      const rec = new Recorder(client);
      await client.subscribe(subject, rec.handler).ready;
      assert.equal(client.url, servers[0].url, `${name} is on its first server`);
      subscribers.push({ name, rec });
    }
    // Publishers on B and C, each awaiting its publish.
    const acked: string[] = [];
    const lost: string[] = [];
    const refused: string[] = [];
    let stopping = false;
    const publishers = [b, c].map(async (node, n) => {
      const client: SdkClient = sdk([node]);
      for (let i = 1; !stopping; i++) {
        const text = `${'bc'[n]}${i}`;
        try {
          await client.publish(subject, text);
          acked.push(text);
        } catch (e) {
          if ((e as StarlingError).code === 'connection-lost') lost.push(text);
          else refused.push(`${text}: ${(e as StarlingError).code} ${(e as StarlingError).detail}`);
        }
      }
      await client.close();
    });
    const [x1, x2] = subscribers.map((s) => s.rec);
    await until('200 messages at x1 before the kill', () => x1.all.length >= 200);
    await a.kill();
    const atKill = acked.length;
    await until('x1 and x2 connected to another node', () => x1.client.connected && x2.client.connected && x1.client.url !== a.url && x2.client.url !== a.url);
    assert.equal(x1.client.url, b.url, 'x1 failed over to the next node in its list');
    assert.equal(x2.client.url, c.url, 'x2 failed over to the next node in its list');
    await until('400 more acknowledged after the kill', () => acked.length >= atKill + 400);
    stopping = true;
    await Promise.all(publishers);
    const ackedTexts = new Set(acked);
    for (const { name, rec } of subscribers)
      await until(`${name}: every acknowledged message (${acked.length})`, () => rec.all.filter((m) => ackedTexts.has(m.text)).length >= acked.length);
    await sleep(200); // nothing more arrives
    t.diagnostic(`${acked.length} acknowledged (${atKill} before the kill), ${lost.length} lost with a connection; delivered ${subscribers.map((s) => `${s.name} ${s.rec.all.length}`).join(', ')}`);
    assert.deepEqual(refused, [], 'no publish refused');

    const reference = subscribers[2].rec.all.map((m) => m.text);
    for (const { name, rec } of subscribers) {
      const texts = rec.all.map((m) => m.text);
      assert.deepEqual(duplicates(texts), [], `${name}: delivered twice`);
      assert.deepEqual(acked.filter((x) => !texts.includes(x)), [], `${name}: acknowledged and not delivered`);
      assert.deepEqual(texts.filter((x) => !ackedTexts.has(x) && !lost.includes(x)), [], `${name}: delivered and never published`);
      assertConsecutiveSeen(rec.all, name);
      assert.deepEqual(texts, reference.slice(reference.indexOf(texts[0]), reference.indexOf(texts[0]) + texts.length), `${name}: the order of y`);
      const events = rec.events.pending.filter((e) => e.event !== 'reconnecting').map((e) => e.event);
      assert.ok(!events.includes('resync'), `${name}: no resync (${events.join(', ')})`);
      assert.ok(!events.includes('error'), `${name}: no error (${JSON.stringify(rec.events.pending.filter((e) => e.event === 'error'))})`);
    }
    const events = (r: Recorder) => r.events.pending.filter((e) => e.event !== 'reconnecting').map((e) => e.event);
    assert.deepEqual(events(x1), ['connected', 'sync', 'disconnected', 'connected', 'sync'], 'x1 recovered by position on B');
    assert.deepEqual(events(x2), ['connected', 'sync', 'disconnected', 'connected', 'sync'], 'x2 recovered by position on C');
    assert.deepEqual(events(subscribers[2].rec), ['connected', 'sync']);
    assert.deepEqual(events(subscribers[3].rec), ['connected', 'sync']);
    t.diagnostic(`x1 recovered ${x1.all.filter((m) => m.kind === 'recovered').length}, x2 ${x2.all.filter((m) => m.kind === 'recovered').length} on the new node`);
    b.assertAlive();
    c.assertAlive();
  });

  it('Redis restarted, then killed -9 and restarted, under load (appendonly, fsync always): nodes reconnect by themselves, ERR unavailable meanwhile, nothing acknowledged lost, the epoch unchanged', TEST, async (t) => {
    const redis = await startRedis({ appendonly: true });
    const nodes = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed' });
    const [a, b] = nodes;
    const subjects = ['/rr/a', '/rr/b'];
    // Subscribers that repair a gap from their last position (raw), on both nodes, and an SDK client on B.
    const taps = [await Tap.open(a, 'the subscriber on A', { repair: true }), await Tap.open(b, 'the subscriber on B', { repair: true })];
    for (const tap of taps) await tap.sub(...subjects);
    const sdk = connect({ servers: [b.url], reconnect: FAST });
    const rec = new Recorder(sdk);
    for (const s of subjects) await sdk.subscribe(s, rec.handler).ready;

    // The link's states, as the monitor would see them.
    const states = nodes.map(() => [] as string[]);
    const watch = setInterval(() => nodes.forEach((n, i) => states[i].at(-1) !== n.cluster.state && states[i].push(n.cluster.state)), 2);
    const reconnects = nodes.map((n) => total(n, 'cluster_reconnects'));
    const pubs = [await Pub.open(a, 'a'), await Pub.open(b, 'b')];
    const loops = [new PubLoop(pubs[0], subjects[0], 16, 10), new PubLoop(pubs[1], subjects[1], 16, 10), new PubLoop(await Pub.open(a, 'x'), subjects[1], 16, 10)];
    await eventually('300 acknowledged', () => pubs[0].acked.length >= 300 && pubs[1].acked.length >= 300);
    const epochs = subjects.map((s) => taps[0].position.get(s)!.epoch);

    // A clean restart (SIGTERM), then a crash (SIGKILL): with appendfsync always, what Redis answered survives both.
    for (const crash of [false, true]) {
      if (crash) redis.kill9();
      await redis.restart();
      const restartedAt = pubs.map((p) => p.acked.length);
      for (const n of nodes) await waitState(n, 'up');
      await eventually(`300 more acknowledged after the ${crash ? 'crash' : 'restart'}`, () => pubs.every((p, i) => p.acked.length >= restartedAt[i] + 300));
    }
    for (const l of loops) await l.stop();
    clearInterval(watch);
    const all = loops.map((l) => l.pub);
    const acked = ackedSet(...all);
    const unknown = new Set(all.flatMap((p) => p.refused('unavailable', /may or may not/)));
    const notSent = new Set(all.flatMap((p) => p.refused('unavailable')).filter((id) => !unknown.has(id)));
    const other = all.flatMap((p) => [...p.answers].filter(([, x]) => !x.ok && x.code !== 'unavailable'));
    t.diagnostic(`states A ${states[0].join(' > ')}, B ${states[1].join(' > ')}; ${acked.size} acknowledged, ${notSent.size} refused (unavailable), ${unknown.size} unknown (may or may not)`);
    assert.deepEqual(other, [], 'no other refusal');
    for (const [i, n] of nodes.entries()) {
      assert.deepEqual(states[i].slice(0, 1), ['up']);
      assert.ok(states[i].filter((x) => x === 'down').length >= 2, `node ${i}: its link went down twice (${states[i].join(' > ')})`);
      assert.equal(states[i].at(-1), 'up');
      assert.ok(total(n, 'cluster_reconnects') >= reconnects[i] + 2, `node ${i}: cluster_reconnects moved`);
    }
    assert.ok(notSent.size + unknown.size > 0, 'publishes during the restart were answered ERR unavailable');

    const subjectOf = new Map(loops.flatMap((l) => l.pub.sent.map((id) => [id, l.subject] as const)));
    for (const [k, s] of subjects.entries()) {
      const want = [...acked].filter((id) => subjectOf.get(id) === s);
      for (const tap of taps) {
        await tap.until(`every acknowledged message of ${s}`, () => want.every((id) => tap.texts(s).includes(id)), () => ({ got: tap.of(s).length, want: want.length, missing: want.filter((id) => !tap.texts(s).includes(id)).slice(0, 5), gaps: tap.gaps.slice(-3) }));
      }
      await until(`the SDK client: every acknowledged message of ${s}`, () => {
        const got = new Set(rec.all.filter((m) => m.subject === s).map((m) => m.text));
        return want.every((id) => got.has(id));
      });
      await Promise.all(taps.map((x) => x.ping()));
      type View = [name: string, texts: string[], positions: { epoch: string; seq: number }[]];
      const views: View[] = [
        ...taps.map((x): View => [x.name, x.texts(s), x.of(s)]),
        ['the SDK client', rec.all.filter((m) => m.subject === s).map((m) => m.text), rec.all.filter((m) => m.subject === s)],
      ];
      for (const [name, texts, recs] of views) {
        assert.deepEqual(duplicates(texts), [], `${name} on ${s}: delivered twice`);
        assert.deepEqual(texts.filter((id) => notSent.has(id)), [], `${name} on ${s}: delivered though refused as not published`);
        assert.deepEqual(texts.filter((id) => !acked.has(id) && !unknown.has(id)), [], `${name} on ${s}: delivered and never published`);
        assert.equal(assertConsecutive(recs, `${name} on ${s}`), epochs[k], `${name} on ${s}: the epoch is unchanged`);
      }
    }
    for (const tap of taps) {
      assert.equal(tap.resyncs, 0, `${tap.name}: no RESYNC (${tap.syncs.filter((x) => x.startsWith('RESYNC')).join('; ')})`);
      assert.deepEqual(tap.problems, [], `${tap.name}: problems`);
      t.diagnostic(`${tap.name}: ${tap.gaps.length} gaps repaired by position${tap.gaps.length ? `: ${tap.gaps.slice(0, 3).join('; ')}` : ''}`);
    }
    assert.ok(!rec.events.pending.some((e) => e.event === 'resync'), 'the SDK client: no resync');
    await sdk.close();
  });

  it('the monitor: cluster_published, cluster_received, cluster_refused, cluster_reconnects, cluster_state and cluster_rtt_us move as they should', TEST, async () => {
    const redis = await startRedis();
    const MONITORED = { Monitor: 'HTTP', 'MonitorHTTP.Listen': '127.0.0.1:0' };
    const [a, b] = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed', ...MONITORED });
    await a.monitor!.ready;
    const c = (node: Server, name: string) => total(node, `cluster_${name}`);
    for (const n of [a, b]) assert.equal(c(n, 'state'), 2, 'cluster_state 2: up');
    await eventually('a probe measured the round trip on both nodes', () => c(a, 'rtt_us') > 0 && c(b, 'rtt_us') > 0, () => [c(a, 'rtt_us'), c(b, 'rtt_us')], 5_000);
    for (const n of [a, b]) assert.ok(c(n, 'rtt_us') < 1_000_000, `cluster_rtt_us on loopback: ${c(n, 'rtt_us')}`);
    const zero = { a: { published: c(a, 'published'), received: c(a, 'received') }, b: { published: c(b, 'published'), received: c(b, 'received') } };
    for (const n of [a, b]) assert.deepEqual([c(n, 'refused'), c(n, 'reconnects')], [0, 0]);

    // 25 published on A to a subject only B subscribes to: A published 25 and received none, B the reverse.
    const sub = await Tap.open(b, 'a subscriber on B');
    await sub.sub('/mon/x');
    const pub = await Pub.open(a, 'm');
    for (let i = 0; i < 25; i++) pub.publish('/mon/x');
    await pub.all();
    await sub.count('/mon/x', 25);
    assert.equal(c(a, 'published') - zero.a.published, 25, 'cluster_published on A');
    assert.equal(c(b, 'published') - zero.b.published, 0, 'cluster_published on B');
    assert.equal(c(b, 'received') - zero.b.received, 25, 'cluster_received on B');
    assert.equal(c(a, 'received') - zero.a.received, 0, 'cluster_received on A (it follows nothing)');

    // Redis gone: state 3 (down) with a reason; every publish refused is counted; back: state 2, one reconnect.
    await redis.stop();
    for (const n of [a, b]) await waitState(n, 'down');
    for (const n of [a, b]) assert.equal(c(n, 'state'), 3, 'cluster_state 3: down');
    assert.notEqual(a.cluster.detail, '', 'the detail says why');
    const errBefore = total(a, 'err_unavailable');
    for (let i = 0; i < 7; i++) pub.publish('/mon/x');
    await pub.all();
    const refused = pub.refused('unavailable').length;
    assert.equal(refused, 7, 'ERR unavailable while Redis is down');
    assert.equal(total(a, 'err_unavailable') - errBefore, 7, 'err_unavailable');
    // (asserted last, so that the rest is checked whatever it says)
    const refusedCounted = c(a, 'refused');
    // /stats: its sample (once a second) shows the link down, the Redis server and why.
    let seen: MonitorStats | null = null;
    await eventually('/stats shows the link down', async () => (seen = await monitorStats(a)).cluster.state === 'down', () => seen?.cluster);
    assert.equal(seen!.cluster.node, 'node-a');
    assert.equal(seen!.cluster.redis, `127.0.0.1:${redis.port}`);
    assert.notEqual(seen!.cluster.detail, '');
    assert.equal(seen!.server.cluster_state, 3);

    await redis.restart();
    for (const n of [a, b]) await waitState(n, 'up');
    for (const n of [a, b]) assert.equal(c(n, 'state'), 2);
    for (const n of [a, b]) assert.equal(c(n, 'reconnects'), 1, `cluster_reconnects on ${n.config.ClusterNodeName}`);
    await eventually('/stats shows the link up again', async () => {
      const s = (seen = await monitorStats(a));
      return s.cluster.state === 'up' && s.cluster.detail === '' && s.server.cluster_state === 2 && s.server.cluster_reconnects === 1;
    }, () => seen);
    // Live again: published on A, received on B.
    const before = { pa: c(a, 'published'), rb: c(b, 'received') };
    for (let i = 0; i < 5; i++) pub.publish('/mon/x');
    await pub.all();
    assert.equal(pub.acked.length, 30);
    await eventually('B received the 5', () => c(b, 'received') - before.rb === 5, () => c(b, 'received') - before.rb);
    assert.equal(c(a, 'published') - before.pa, 5);
    assert.equal(c(b, 'refused'), 0, 'cluster_refused on B (nothing published there)');
    // docs/monitoring.md: cluster_refused is "Publishes refused with ERR unavailable: the engine could not take them".
    assert.equal(refusedCounted, 7, 'cluster_refused counts the publishes refused with ERR unavailable while the link was down');
  });

  it('interest: a node follows (SUBSCRIBE) only the subjects its clients subscribe to; a client away catches up only by position', TEST, async () => {
    const redis = await startRedis();
    const [a, b] = await startNodes(redis, 2, { ClusterDeliveryMode: 'Guaranteed' });
    const s = '/int/x';
    const count = async () => (await numsub(redis, [s])).get(s);
    const pub = await Pub.open(a, 'i');
    pub.publish(s, 'nobody');
    await pub.all();
    assert.equal(await count(), 0, 'published, and no node subscribes');
    const received = total(b, 'cluster_received');

    const onA = await Tap.open(a, 'a subscriber on A');
    await onA.sub(s);
    assert.equal(await count(), 1, 'node A follows it');
    pub.publish(s, 'one');
    await pub.all();
    await onA.count(s, 1);
    assert.equal(total(b, 'cluster_received'), received, 'B (no subscriber) received nothing');

    const onB = await Tap.open(b, 'a subscriber on B');
    await onB.sub(`${s}#0`);
    assert.equal(await count(), 2, 'node B follows it too');
    const [, epoch] = /^SYNC \S+ ([0-9a-z]+):2$/.exec(onB.syncs[0]) ?? [];
    assert.ok(epoch, onB.syncs[0]);
    const second = await Tap.open(b, 'a second subscriber on B');
    await second.sub(s);
    assert.equal(await count(), 2, 'one subscription per node, however many clients');
    pub.publish(s, 'two');
    await pub.all();
    await onB.count(s, 1);

    // The last UNSUB on B: B unsubscribes from Redis and receives nothing more.
    onB.send(`UNSUB ${s}`);
    await onB.ping();
    assert.equal(await count(), 2, 'a client is left on B');
    second.send(`UNSUB ${s}`);
    await second.ping();
    await eventually('B unsubscribed in Redis', async () => (await count()) === 1, () => 'NUMSUB');
    const away = total(b, 'cluster_received');
    for (let i = 0; i < 10; i++) pub.publish(s, `away${i}`);
    await pub.all();
    await onA.count(s, 12);
    assert.equal(total(b, 'cluster_received'), away, 'B received nothing while nobody there subscribed');
    assert.equal(onB.of(s).length, 1);

    // Back on B: a plain SUB gets what is published from now on; a SUB with its position also gets what it missed.
    const plain = await Tap.open(b, 'a plain subscriber on B');
    await plain.sub(s);
    assert.equal(await count(), 2, 'B follows it again');
    onB.send(`SUB ${s}@${epoch}:3`);
    await onB.ping();
    pub.publish(s, 'back');
    await pub.all();
    await plain.count(s, 1);
    await onB.count(s, 12);
    assert.deepEqual(plain.of(s).map((r) => [r.seq, r.kind, r.payload.toString()]), [[14, 'live', 'back']]);
    assert.deepEqual(
      onB.of(s).map((r) => [r.seq, r.kind, r.payload.toString()]),
      [[3, 'live', 'two'], ...Array.from({ length: 10 }, (_, i) => [4 + i, 'recovered', `away${i}`]), [14, 'live', 'back']],
    );
    assert.deepEqual(onB.syncs, [`SYNC ${s} ${epoch}:2`, `SYNC ${s} ${epoch}:13`]);
    // Everyone leaves: no node follows it.
    for (const c of [onA, onB, plain]) {
      c.send(`UNSUB ${s}`);
      await c.ping();
    }
    await eventually('no node subscribed in Redis', async () => (await count()) === 0, () => 'NUMSUB');
    await eventually('no subscriber left on either node', () => total(a, 'subscriptions') === 0 && total(b, 'subscriptions') === 0);
  });
});
