// Protocol v2 end to end (/work/shared/PROTOCOL.md, "Cache, snapshot, epochs"): recovery (`SUB s@e:n`), history
// (`SUB s#n`), retained snapshots, conflation and `CacheSize = 0`, against real servers with two workgroups
// assigned round-robin (BenchmarkMode), so that subscriber, publisher and the subject's home sit on different
// workgroups in some cases and on the same one in others. Every answer is compared message by message.
//
// Publishes whose home is another workgroup are acknowledged when handed on, not when sequenced: where a test then
// asks the home something, a watcher subscribed live has first received the last message (so it was sequenced).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client, startServer, waitFor } from './helpers';
import { FastPublisher, Recoverer, ask, nextShown, openOn, placeNext, position, publish, replies, take } from './recovery-kit';
import type { Server } from '../src/index';

const SUITE = { timeout: 120_000 };

/** Server-wide counter deltas since `before` (a stats().total). */
function delta(server: Server, before: Record<string, number>, names: string[]): Record<string, number> {
  const now = server.stats().total;
  return Object.fromEntries(names.map((n) => [n, now[n] - before[n]]));
}

const V2_COUNTERS = ['recoveries', 'resyncs', 'history_requests', 'messages_replayed', 'snapshots_sent', 'cache_evictions', 'messages_conflated'];

describe('recovery is exact under full-speed publishing', SUITE, () => {
  it('gives each reconnecting subscriber every seq once, in order, recovered then SYNC then live, on three subjects with different homes', async () => {
    // No RESYNC may happen: every position stays cached (MaxCachedMessagesPerSubject far above what is published).
    // A subscriber the server cut as slow would simply recover too, so MaxBacklog is large: this test is about
    // exactness, not back-pressure.
    const server = startServer({ MaxCachedMessagesPerSubject: 100_000, MaxBacklog: '64M' });
    // /rx/a: home wg0 (first subscriber there), published from wg1. /rx/b: home wg1, published from wg0.
    // /rx/c: created by a publish from wg1 (home wg1), published from wg1.
    const subjects = ['/rx/a', '/rx/b', '/rx/c'];
    const url = server.url;
    await placeNext(server, 0);
    const steady0 = new Recoverer(url, ['/rx/a'], 'steady subscriber on wg0');
    await steady0.start();
    await waitFor('the steady subscriber on wg0 to hold /rx/a', () => steady0.syncs === 1);
    await placeNext(server, 1);
    const steady1 = new Recoverer(url, ['/rx/b'], 'steady subscriber on wg1');
    await steady1.start();
    await waitFor('the steady subscriber on wg1 to hold /rx/b', () => steady1.syncs === 1);
    await placeNext(server, 1);
    const pub1 = await FastPublisher.open(url, ['/rx/a', '/rx/c']);
    await placeNext(server, 0);
    const pub0 = await FastPublisher.open(url, ['/rx/b']);
    // The first publish to /rx/c creates it at wg1.
    await pub1.run(() => pub1.total < 2, 2, 2);
    assert.equal(server.stats().total.subjects, 3);

    const before = server.stats().total;
    const recoverers = Array.from({ length: 4 }, (_, i) => new Recoverer(url, subjects, `recoverer ${i}`, 600, 1000 + i));
    for (const r of recoverers) await r.start();
    const steadyC = new Recoverer(url, subjects, 'steady subscriber of all three');
    await steadyC.start();
    await waitFor('every subscriber to hold its subjects', () => [...recoverers, steadyC].every((r) => r.syncs >= 3));

    // Publish as fast as the server acknowledges (pipelined, up to 1,000 unacknowledged), but never more than
    // LEAD messages ahead of the slowest subscriber: the subscribers share this thread, and one that falls ever
    // further behind would only ever replay, never reach live messages — the case under test is a recovery that
    // completes while the subject is being published to. Until every recoverer has come back at least 10 times
    // with live messages after its recovery (and at least 6,000 messages a subject), at most 40,000 a subject.
    const LEAD = 1500;
    const all = [...recoverers, steadyC];
    const behind = (p: FastPublisher) => p.subjects.some((s) => all.some((r) => p.lastSeq(s) - r.last(s) > LEAD));
    const enough = () => recoverers.every((r) => r.overlapped >= 10 && r.midRecovery >= 2) && pub1.sent['/rx/a'] >= 6000;
    const cap = (p: FastPublisher) => Object.values(p.sent).every((n) => n < 40_000);
    const t0 = Date.now();
    await Promise.all([pub0.run(() => !enough() && cap(pub0), 1000, 100, () => behind(pub0)), pub1.run(() => !enough() && cap(pub1), 1000, 100, () => behind(pub1))]);
    if (process.env.RECOVERY_DEBUG) console.log(`published in ${Date.now() - t0} ms`);
    const want = { '/rx/a': pub1.lastSeq('/rx/a'), '/rx/b': pub0.lastSeq('/rx/b'), '/rx/c': pub1.lastSeq('/rx/c') };
    const problems = () => [...recoverers, steadyC, steady0, steady1].flatMap((r) => r.problems);
    // The homes are where the test placed them: /rx/a's messages cached at wg0, /rx/b's and /rx/c's at wg1.
    assert.deepEqual(server.stats().workgroups.map((w) => w.counters.cached_messages), [want['/rx/a'], want['/rx/b'] + want['/rx/c']], 'homes');
    for (const r of [...recoverers, steadyC]) await r.waitCaughtUp(want, 30_000);
    await steady0.waitCaughtUp(want, 30_000);
    await steady1.waitCaughtUp(want, 30_000);
    assert.deepEqual(problems(), [], 'every subscriber got exactly seq 1..N of each subject, in order');

    // One last reconnection of each recoverer from where it is: nothing was missed, so just a SYNC per subject.
    for (const r of recoverers) {
      const syncs = r.syncs;
      const received = r.received;
      await r.reconnectOnce();
      await waitFor(`${r.name}'s SYNCs after its last reconnection`, () => r.syncs === syncs + 3 || r.problems.length > 0);
      assert.equal(r.received, received + 3, `${r.name}: only the three SYNCs after a reconnection that missed nothing`);
    }
    assert.deepEqual(problems(), [], 'every subscriber got exactly seq 1..N of each subject, in order');

    const d = delta(server, before, V2_COUNTERS);
    const reconnects = recoverers.reduce((n, r) => n + r.reconnects, 0);
    const summary = `${reconnects} reconnections (${recoverers.map((r) => `${r.reconnects}/${r.overlapped}/${r.midRecovery}`).join(', ')} in all/with live after the recovery/in the middle of one), N = ${JSON.stringify(want)}, counters ${JSON.stringify(d)}`;
    if (process.env.RECOVERY_DEBUG) console.log(summary);
    assert.ok(recoverers.every((r) => r.overlapped >= 10 && r.midRecovery >= 2), `recoveries overlapped publishing: ${summary}`);
    assert.equal(d.resyncs, 0, `no RESYNC: ${summary}`);
    assert.ok(d.recoveries >= 3 * 4, `recoveries counted: ${summary}`);
    assert.ok(d.messages_replayed >= recoverers.reduce((n, r) => n + r.recovered, 0), `messages_replayed counts at least what was received recovered: ${summary}`);
    assert.deepEqual(recoverers.flatMap((r) => r.serverCloses), [], 'the server closed no subscriber');
    for (const r of [...recoverers, steadyC, steady0, steady1]) await r.stop();
    pub0.close();
    pub1.close();
  });
});

/** `from..to` inclusive. */
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** The epoch of a `SYNC`/`RESYNC`/`MSG` line as shown. */
function epochOf(line: string): string {
  const m = /^(?:MSG|SYNC|RESYNC) \S+ ([0-9a-z]+):[0-9]+/.exec(line);
  assert.ok(m, `a line with a position, got ${JSON.stringify(line)}`);
  return m[1];
}

/** Another valid epoch token than `e` (the next value). */
const otherEpoch = (e: string) => ([...e].reduce((n, ch) => n * 36n + BigInt(parseInt(ch, 36)), 0n) + 1n).toString(36);

describe('positions outside the cache are answered RESYNC', SUITE, () => {
  it('count eviction (MaxCachedMessagesPerSubject = 5): recovers from the oldest cached message, RESYNC before it, asked at the home and from the other workgroup', async () => {
    const server = startServer({ MaxCachedMessagesPerSubject: 5 });
    const watcher = await openOn(server, 0);
    const { epoch: e } = await position(watcher, '/ev/count'); // home: wg0
    const pub = await openOn(server, 1);
    const before = server.stats().total;
    await publish(pub, '/ev/count', range(1, 20).map((i) => `m${i}`));
    assert.deepEqual(await take(watcher, 20, 'the live messages'), range(1, 20).map((i) => `MSG /ev/count ${e}:${i} m${i}`));
    assert.deepEqual(server.stats().workgroups.map((w) => w.counters.cached_messages), [5, 0], 'the home keeps the last 5');
    assert.equal(delta(server, before, ['cache_evictions']).cache_evictions, 15);

    const askers: Client[] = [];
    for (const wg of [0, 1]) {
      const c = await openOn(server, wg);
      askers.push(c);
      assert.deepEqual(await ask(c, `SUB /ev/count@${e}:3`), [`RESYNC /ev/count ${e}:20`], `from workgroup ${wg}: far before the cache`);
      await c.command('UNSUB /ev/count');
      assert.deepEqual(await ask(c, `SUB /ev/count@${e}:14`), [`RESYNC /ev/count ${e}:20`], `from workgroup ${wg}: seq 15 is not cached any more`);
      await c.command('UNSUB /ev/count');
      assert.deepEqual(
        await ask(c, `SUB /ev/count@${e}:15`),
        [...range(16, 20).map((i) => `MSG /ev/count ${e}:${i} recovered m${i}`), `SYNC /ev/count ${e}:20`],
        `from workgroup ${wg}: 16..20 are cached`,
      );
    }
    const d = delta(server, before, V2_COUNTERS);
    assert.deepEqual([d.resyncs, d.recoveries, d.messages_replayed], [4, 2, 10], `counters ${JSON.stringify(d)}`);
    // Live messages follow the recovery.
    await publish(pub, '/ev/count', ['m21'], 'q');
    for (const c of [watcher, ...askers]) assert.equal(await nextShown(c), `MSG /ev/count ${e}:21 m21`);
  });

  it('age eviction (CacheExpireTime = 1 s): RESYNC once the messages expired; the epoch stays while someone subscribes; a subject nothing holds any more is forgotten (a new epoch)', async () => {
    const server = startServer({ CacheExpireTime: 1 });
    const watcher = await openOn(server, 0);
    const { epoch: e } = await position(watcher, '/ev/age'); // home: wg0
    const probe = await openOn(server, 1);
    const { epoch: el } = await position(probe, '/ev/lonely'); // home: wg1
    const pub = await openOn(server, 0);
    const before = server.stats().total;
    await publish(pub, '/ev/age', range(1, 5).map((i) => `a${i}`));
    await publish(pub, '/ev/lonely', ['l1', 'l2'], 'l');
    assert.deepEqual(await take(watcher, 5, '/ev/age live'), range(1, 5).map((i) => `MSG /ev/age ${e}:${i} a${i}`));
    assert.deepEqual(await take(probe, 2, '/ev/lonely live'), [`MSG /ev/lonely ${el}:1 l1`, `MSG /ev/lonely ${el}:2 l2`]);
    await probe.command('UNSUB /ev/lonely'); // now only its cache holds /ev/lonely (until it expires)
    await waitFor('the cached messages to expire', () => server.stats().total.cached_messages === 0, () => server.stats().total);
    await waitFor('/ev/lonely to be forgotten', () => server.stats().total.subjects === 1, () => server.stats().total);
    assert.deepEqual(await ask(probe, `SUB /ev/age@${e}:2`), [`RESYNC /ev/age ${e}:5`], 'the same epoch: the subject has a subscriber');
    const lonely = await ask(probe, `SUB /ev/lonely@${el}:1`);
    assert.equal(lonely.length, 1);
    assert.match(lonely[0], /^RESYNC \/ev\/lonely [0-9a-z]+:0$/, 'a new subject: seq 0');
    assert.notEqual(epochOf(lonely[0]), el, 'a new subject: a new epoch');
    const d = delta(server, before, V2_COUNTERS);
    assert.deepEqual([d.resyncs, d.recoveries, d.cache_evictions], [2, 0, 7], `counters ${JSON.stringify(d)}`);
    await publish(pub, '/ev/age', ['a6'], 'q');
    assert.equal(await nextShown(probe), `MSG /ev/age ${e}:6 a6`, 'live messages follow the RESYNC');
  });

  it('CacheSize: the least recently published subject loses its oldest messages first; what is gone gets RESYNC, what is kept is recovered', async () => {
    const server = startServer({ CacheSize: '64K' }); // 32 KiB a workgroup
    const share = 32 * 1024;
    const watcher = await openOn(server, 1);
    const { epoch: ex } = await position(watcher, '/ev/size/x'); // homes: wg1
    const { epoch: ey } = await position(watcher, '/ev/size/y');
    const pub = await openOn(server, 0);
    const big = (tag: string, i: number) => `${tag}${i}:${'.'.repeat(4000)}`;
    const before = server.stats().total;
    await publish(pub, '/ev/size/x', range(1, 6).map((i) => big('x', i)), 'x');
    await take(watcher, 6, '/ev/size/x live');
    await publish(pub, '/ev/size/y', range(1, 6).map((i) => big('y', i)), 'y');
    await take(watcher, 6, '/ev/size/y live');
    const home = server.stats().workgroups[1].counters;
    assert.ok(home.cached_bytes <= share, `the home keeps at most its share: ${home.cached_bytes} bytes`);
    const cachedX = home.cached_messages - 6; // /ev/size/y, published last, must have kept all 6 (~25 KB)
    assert.ok(cachedX >= 0 && cachedX < 6, `/ev/size/x lost messages first (cached: ${home.cached_messages} in all)`);
    assert.ok(delta(server, before, ['cache_evictions']).cache_evictions >= 6 - cachedX);

    const c = await openOn(server, 0);
    assert.deepEqual(
      await ask(c, `SUB /ev/size/y@${ey}:0`),
      [...range(1, 6).map((i) => `MSG /ev/size/y ${ey}:${i} recovered ${big('y', i)}`), `SYNC /ev/size/y ${ey}:6`],
    );
    assert.deepEqual(await ask(c, `SUB /ev/size/x@${ex}:${5 - cachedX}`), [`RESYNC /ev/size/x ${ex}:6`], 'just before what is cached');
    await c.command('UNSUB /ev/size/x');
    assert.deepEqual(
      await ask(c, `SUB /ev/size/x@${ex}:${6 - cachedX}`),
      [...range(7 - cachedX, 6).map((i) => `MSG /ev/size/x ${ex}:${i} recovered ${big('x', i)}`), `SYNC /ev/size/x ${ex}:6`],
      'from the oldest message cached',
    );
  });

  it('a position of another epoch, or ahead of the subject, gets RESYNC with the current position; the current position gets SYNC alone', async () => {
    const server = startServer();
    const watcher = await openOn(server, 0);
    const { epoch: e } = await position(watcher, '/ev/pos');
    const pub = await openOn(server, 1);
    await publish(pub, '/ev/pos', ['p1', 'p2', 'p3', 'p4']);
    await take(watcher, 4, 'the live messages');
    const c = await openOn(server, 1);
    const before = server.stats().total;
    assert.deepEqual(await ask(c, `SUB /ev/pos@${otherEpoch(e)}:2`), [`RESYNC /ev/pos ${e}:4`], 'another epoch');
    await c.command('UNSUB /ev/pos');
    assert.deepEqual(await ask(c, `SUB /ev/pos@${e}:9`), [`RESYNC /ev/pos ${e}:4`], 'ahead of the subject');
    await c.command('UNSUB /ev/pos');
    assert.deepEqual(await ask(c, `SUB /ev/pos@${e}:4`), [`SYNC /ev/pos ${e}:4`], 'nothing missed');
    await c.command('UNSUB /ev/pos');
    assert.deepEqual(await ask(c, `SUB /ev/pos@${e}:0`), [...range(1, 4).map((i) => `MSG /ev/pos ${e}:${i} recovered p${i}`), `SYNC /ev/pos ${e}:4`], 'from the start');
    // A subject that does not exist (any more): created by the SUB, with a new epoch and seq 0.
    const none = await ask(c, `SUB /ev/none@${e}:3`);
    assert.equal(none.length, 1);
    assert.match(none[0], /^RESYNC \/ev\/none [0-9a-z]+:0$/);
    assert.notEqual(epochOf(none[0]), e);
    const d = delta(server, before, V2_COUNTERS);
    assert.deepEqual([d.resyncs, d.recoveries, d.messages_replayed], [3, 2, 4], `counters ${JSON.stringify(d)}`);
  });
});

describe('history: SUB s#n', SUITE, () => {
  it('sends the last n cached messages as history, then SYNC, then live; all cached ones when n is larger; only SYNC for n = 0', async () => {
    const server = startServer({ MaxCachedMessagesPerSubject: 8 });
    const watcher = await openOn(server, 0);
    const { epoch: e } = await position(watcher, '/hi/a'); // home: wg0
    const pub = await openOn(server, 1);
    await publish(pub, '/hi/a', range(1, 10).map((i) => `h${i}`));
    await take(watcher, 10, 'the live messages');
    const before = server.stats().total;
    const c3 = await openOn(server, 1);
    assert.deepEqual(await ask(c3, 'SUB /hi/a#3'), [...range(8, 10).map((i) => `MSG /hi/a ${e}:${i} history h${i}`), `SYNC /hi/a ${e}:10`]);
    const cAll = await openOn(server, 0);
    assert.deepEqual(await ask(cAll, 'SUB /hi/a#100'), [...range(3, 10).map((i) => `MSG /hi/a ${e}:${i} history h${i}`), `SYNC /hi/a ${e}:10`], 'n larger than the 8 cached');
    const c0 = await openOn(server, 1);
    assert.deepEqual(await ask(c0, 'SUB /hi/a#0'), [`SYNC /hi/a ${e}:10`]);
    const d = delta(server, before, V2_COUNTERS);
    assert.deepEqual([d.history_requests, d.messages_replayed], [3, 11], `counters ${JSON.stringify(d)}`);
    await publish(pub, '/hi/a', ['h11'], 'q');
    for (const c of [watcher, c3, cAll, c0]) assert.equal(await nextShown(c), `MSG /hi/a ${e}:11 h11`);
  });

  it('serves the history of a subject nobody subscribed to (it exists from its first publish), and SYNC at 0 for one nobody published to', async () => {
    const server = startServer();
    const pub = await openOn(server, 1);
    await publish(pub, '/hi/fresh', ['f1', 'f2', 'f3']); // created at wg1, sequenced there before the ACKs
    assert.equal(server.stats().total.subjects, 1);
    assert.equal(server.stats().total.cached_messages, 3);
    const c = await openOn(server, 0);
    const got = await ask(c, 'SUB /hi/fresh#10');
    const e = epochOf(got[0] ?? '');
    assert.deepEqual(got, [...range(1, 3).map((i) => `MSG /hi/fresh ${e}:${i} history f${i}`), `SYNC /hi/fresh ${e}:3`]);
    const c2 = await openOn(server, 1);
    assert.deepEqual(await ask(c2, 'SUB /hi/fresh#2'), [`MSG /hi/fresh ${e}:2 history f2`, `MSG /hi/fresh ${e}:3 history f3`, `SYNC /hi/fresh ${e}:3`]);
    const none = await ask(c2, 'SUB /hi/none#5');
    assert.equal(none.length, 1);
    assert.match(none[0], /^SYNC \/hi\/none [0-9a-z]+:0$/);
    await publish(pub, '/hi/none', ['n1'], 'n');
    assert.equal(await nextShown(c2), `MSG /hi/none ${epochOf(none[0])}:1 n1`);
    await publish(pub, '/hi/fresh', ['f4'], 'q');
    for (const x of [c, c2]) assert.equal(await nextShown(x), `MSG /hi/fresh ${e}:4 f4`);
  });
});

describe('SUB specs for a subject already held', SUITE, () => {
  it('ignores a spec for a subject the connection subscribes to; of two specs for one subject in a SUB, the first counts', async () => {
    const server = startServer();
    const pub = await openOn(server, 1);
    await publish(pub, '/dup/a', ['d1', 'd2', 'd3']);
    const c = await openOn(server, 0);
    const got = await ask(c, 'SUB /dup/a#1 /dup/a#3');
    const e = epochOf(got[0] ?? '');
    assert.deepEqual(got, [`MSG /dup/a ${e}:3 history d3`, `SYNC /dup/a ${e}:3`], 'the first of the two specs');
    assert.deepEqual(await ask(c, `SUB /dup/a@${e}:0 /dup/a#2 /dup/a`), [], 'already subscribed: nothing to answer');
    const before = server.stats().total;
    await publish(pub, '/dup/a', ['d4'], 'q');
    assert.deepEqual(await take(c, 1, 'the live message'), [`MSG /dup/a ${e}:4 d4`]);
    assert.deepEqual(await replies(c), [], 'once: one subscription');
    assert.equal(server.stats().total.subscriptions, 1);
    assert.equal(delta(server, before, ['messages_out']).messages_out, 1);
  });
});

describe('retained snapshots', SUITE, () => {
  it('sends the snapshot first to later subscribers, then live; it survives count eviction; RESYNC is followed by it; #n puts it first when older than the history', async () => {
    const server = startServer({ MaxCachedMessagesPerSubject: 3 });
    const watcher = await openOn(server, 0);
    const { epoch: e } = await position(watcher, '/sn/a'); // home: wg0
    const pub = await openOn(server, 1);
    await publish(pub, '/sn/a', ['one'], 'a');
    await publish(pub, '/sn/a', ['two'], 'b', true);
    await publish(pub, '/sn/a', ['three', 'four', 'five', 'six', 'seven', 'eight'], 'c');
    const words = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight'];
    assert.deepEqual(await take(watcher, 8, 'the live messages'), words.map((w, i) => `MSG /sn/a ${e}:${i + 1} ${w}`), 'a retained message is delivered live like any other');
    const before = server.stats().total;
    const snapshot = `MSG /sn/a ${e}:2 snapshot two`;
    const late1 = await openOn(server, 1);
    assert.deepEqual(await ask(late1, 'SUB /sn/a'), [snapshot], 'from the other workgroup (the cache holds only 6..8)');
    const late0 = await openOn(server, 0);
    assert.deepEqual(await ask(late0, 'SUB /sn/a'), [snapshot], 'at the home');
    const hist = await openOn(server, 1);
    assert.deepEqual(await ask(hist, 'SUB /sn/a#2'), [snapshot, `MSG /sn/a ${e}:7 history seven`, `MSG /sn/a ${e}:8 history eight`, `SYNC /sn/a ${e}:8`]);
    const resync = await openOn(server, 0);
    assert.deepEqual(await ask(resync, `SUB /sn/a@${e}:1`), [`RESYNC /sn/a ${e}:8`, snapshot], 'seq 2 is not cached any more');
    const recover = await openOn(server, 1);
    assert.deepEqual(await ask(recover, `SUB /sn/a@${e}:6`), [`MSG /sn/a ${e}:7 recovered seven`, `MSG /sn/a ${e}:8 recovered eight`, `SYNC /sn/a ${e}:8`], 'a recovery that succeeds sends no snapshot');
    const d = delta(server, before, V2_COUNTERS);
    assert.deepEqual([d.snapshots_sent, d.resyncs, d.recoveries, d.history_requests], [4, 1, 1, 1], `counters ${JSON.stringify(d)}`);
    await publish(pub, '/sn/a', ['nine'], 'd');
    for (const c of [watcher, late1, late0, hist, resync, recover]) assert.equal(await nextShown(c), `MSG /sn/a ${e}:9 nine`, 'then live');
  });

  it('does not repeat the snapshot when the history holds it, and a later retained message replaces it', async () => {
    const server = startServer();
    const pub = await openOn(server, 0);
    await publish(pub, '/sn/b', ['b1', 'b2'], 'a');
    await publish(pub, '/sn/b', ['b3'], 'b', true);
    await publish(pub, '/sn/b', ['b4'], 'c'); // created at wg0 by the publish; sequenced before the ACKs
    const c = await openOn(server, 1);
    const got = await ask(c, 'SUB /sn/b#3');
    const e = epochOf(got[0] ?? '');
    assert.deepEqual(got, [`MSG /sn/b ${e}:2 history b2`, `MSG /sn/b ${e}:3 history b3`, `MSG /sn/b ${e}:4 history b4`, `SYNC /sn/b ${e}:4`]);
    const c1 = await openOn(server, 1);
    assert.deepEqual(await ask(c1, 'SUB /sn/b#1'), [`MSG /sn/b ${e}:3 snapshot b3`, `MSG /sn/b ${e}:4 history b4`, `SYNC /sn/b ${e}:4`]);
    await publish(pub, '/sn/b', ['b5'], 'd', true);
    assert.equal(await nextShown(c), `MSG /sn/b ${e}:5 b5`);
    const c2 = await openOn(server, 1);
    assert.deepEqual(await ask(c2, 'SUB /sn/b'), [`MSG /sn/b ${e}:5 snapshot b5`]);
  });

  it('keeps binary messages binary in snapshots, history and recovery', async () => {
    const server = startServer();
    const pub = await openOn(server, 1);
    pub.send(Buffer.concat([Buffer.from('PUB /sn/bin k0 +retained\n'), Buffer.from([0, 1, 2, 0xff])]));
    pub.send(Buffer.concat([Buffer.from('PUB /sn/bin k1\n'), Buffer.from([0xfe, 0])]));
    pub.send('PUB /sn/bin k2\ntext');
    assert.deepEqual(await replies(pub), ['ACK k0', 'ACK k1', 'ACK k2']);
    const c = await openOn(server, 0);
    const got = await ask(c, 'SUB /sn/bin');
    assert.equal(got.length, 1);
    assert.match(got[0], /^MSG \/sn\/bin [0-9a-z]+:1 snapshot bin:000102ff$/);
    const e = epochOf(got[0]);
    const h = await openOn(server, 1);
    assert.deepEqual(await ask(h, 'SUB /sn/bin#2'), [`MSG /sn/bin ${e}:1 snapshot bin:000102ff`, `MSG /sn/bin ${e}:2 history bin:fe00`, `MSG /sn/bin ${e}:3 history text`, `SYNC /sn/bin ${e}:3`]);
    const r = await openOn(server, 0);
    assert.deepEqual(await ask(r, `SUB /sn/bin@${e}:0`), [`MSG /sn/bin ${e}:1 recovered bin:000102ff`, `MSG /sn/bin ${e}:2 recovered bin:fe00`, `MSG /sn/bin ${e}:3 recovered text`, `SYNC /sn/bin ${e}:3`]);
  });

  it('keeps the snapshot, and the epoch, of a subject nobody subscribes to once its messages expired', async () => {
    const server = startServer({ CacheExpireTime: 1 });
    const pub = await openOn(server, 1);
    await publish(pub, '/sn/keep', ['k1'], 'a');
    await publish(pub, '/sn/keep', ['k2'], 'b', true);
    await publish(pub, '/sn/keep', ['k3'], 'c');
    await waitFor('the cached messages to expire', () => server.stats().total.cached_messages === 0, () => server.stats().total);
    assert.equal(server.stats().total.subjects, 1, 'the snapshot holds the subject');
    const c = await openOn(server, 0);
    const got = await ask(c, 'SUB /sn/keep@zz:1');
    const e = epochOf(got[0] ?? '');
    assert.deepEqual(got, [`RESYNC /sn/keep ${e}:3`, `MSG /sn/keep ${e}:2 snapshot k2`]);
    const c2 = await openOn(server, 1);
    assert.deepEqual(await ask(c2, `SUB /sn/keep@${e}:2`), [`RESYNC /sn/keep ${e}:3`, `MSG /sn/keep ${e}:2 snapshot k2`], 'seq 3 expired: RESYNC, same epoch');
    const c3 = await openOn(server, 0);
    assert.deepEqual(await ask(c3, 'SUB /sn/keep'), [`MSG /sn/keep ${e}:2 snapshot k2`]);
  });
});

describe('conflation', SUITE, () => {
  it('sends a conflate=200 subscriber strictly increasing seqs, about one per interval at most, ending with the last message published', async () => {
    const server = startServer();
    await placeNext(server, 0);
    const conflated = await Client.open(server);
    await conflated.command('SUB conflate=200 /cf/a'); // home: wg0
    await placeNext(server, 1);
    const full = new Recoverer(server.url, ['/cf/a'], 'a subscriber without conflation');
    await full.start();
    await waitFor('the subscriber without conflation to hold /cf/a', () => full.syncs === 1);
    await placeNext(server, 1);
    const pub = await FastPublisher.open(server.url, ['/cf/a']);
    const before = server.stats().total;
    const t0 = Date.now();
    const N = 20_000;
    await pub.run(() => pub.total < N);
    const seqs: number[] = [];
    let e = '';
    while (seqs[seqs.length - 1] !== N) {
      const line = await nextShown(conflated, `the conflated subscriber's message after ${seqs.length} (seq ${seqs[seqs.length - 1]})`);
      const m = /^MSG \/cf\/a ([0-9a-z]+):([0-9]+) (\S+)$/.exec(line);
      assert.ok(m, `a live MSG on /cf/a, got ${JSON.stringify(line.slice(0, 100))}`);
      e ||= m[1];
      assert.equal(m[1], e, 'one epoch');
      const seq = Number(m[2]);
      assert.equal(m[3], `/cf/a:${seq}`, 'the payload of that seq');
      assert.ok(seqs.length === 0 || seq > seqs[seqs.length - 1], `strictly increasing: ${seqs.slice(-3)} then ${seq}`);
      seqs.push(seq);
    }
    const elapsed = Date.now() - t0;
    await full.waitCaughtUp({ '/cf/a': N }, 30_000);
    assert.deepEqual(full.problems, []);
    assert.equal(seqs[0], 1, 'the first message goes at once');
    // At most one message per 200 ms of the server's clock, which ran for less than `elapsed`: 1 + elapsed / 200.
    // (190: slack for the millisecond clock; + 2 for the first and the last.)
    const bound = 2 + Math.floor(elapsed / 190);
    assert.ok(seqs.length <= bound, `${seqs.length} messages in ${elapsed} ms with conflate=200 (bound ${bound}): ${seqs.join(',')}`);
    const d = delta(server, before, V2_COUNTERS);
    assert.equal(d.messages_conflated, N - seqs.length, 'every message not sent was counted as conflated');
    assert.equal(conflated.pending, 0, 'nothing after the last message');
    await full.stop();
  });
});

describe('CacheSize = 0: protocol v1 behaviour', SUITE, () => {
  it('answers 40 recovery SUBs sent at once to a reader, in order and complete, though together they are 20 × MaxBacklog', async () => {
    // Each answer fits MaxBacklog (64 KB), all of them do not: once the backlog is over it, the next SUB waits until
    // the reader has taken the answers before (docs/limits.md) — it is delayed, never dropped or reordered.
    const server = startServer({ MaxBacklog: '64K' });
    const pub = await openOn(server, 0);
    const asker = await openOn(server, 1);
    const subjects = range(0, 39).map((i) => `/pipe/${i}`);
    const epochs: Record<string, string> = {};
    for (const s of subjects) epochs[s] = (await position(asker, s)).epoch;
    const payload = (s: string, i: number) => `${s}:${i}:`.padEnd(1000, 'x');
    for (const s of subjects) await publish(pub, s, range(1, 30).map((i) => payload(s, i)));
    await take(asker, 40 * 30, 'the live messages');
    await ask(asker, `UNSUB ${subjects.join(' ')}`);
    const before = server.stats().total;
    for (const s of subjects) asker.send(`SUB ${s}@${epochs[s]}:0`);
    const want = subjects.flatMap((s) => [
      ...range(1, 30).map((i) => `MSG ${s} ${epochs[s]}:${i} recovered ${payload(s, i)}`),
      `SYNC ${s} ${epochs[s]}:30`,
    ]);
    const got = await replies(asker);
    assert.equal(got.length, want.length, 'every answer arrived');
    assert.deepEqual(got, want, 'in the order of the SUBs, each complete');
    assert.deepEqual(delta(server, before, ['recoveries', 'resyncs']), { recoveries: 40, resyncs: 0 });
  });

  it('drops a publish to a subject nobody subscribes to, keeps no snapshot, and answers SUB s@e:n SYNC only when nothing was missed', async () => {
    const server = startServer({ CacheSize: 0 });
    const pub = await openOn(server, 1);
    const before = server.stats().total;
    await publish(pub, '/v1/none', ['x1', 'x2', 'x3'], 'x');
    assert.equal(server.stats().total.subjects, 0, 'a publish to a subject nobody subscribes to creates nothing');
    const c = await openOn(server, 0);
    const none = await ask(c, 'SUB /v1/none#5');
    assert.equal(none.length, 1);
    assert.match(none[0], /^SYNC \/v1\/none [0-9a-z]+:0$/, 'the three publishes advanced no count');
    await publish(pub, '/v1/none', ['x4'], 'y');
    assert.equal(await nextShown(c), `MSG /v1/none ${epochOf(none[0])}:1 x4`);

    const keeper = await openOn(server, 1);
    await keeper.command('SUB /v1/s');
    const a = await openOn(server, 0);
    await a.command('SUB /v1/s');
    await publish(pub, '/v1/s', ['s1', 's2', 's3'], 's');
    await publish(pub, '/v1/s', ['s4'], 'r', true);
    const got = await take(a, 4, 'the live messages');
    const e = epochOf(got[0]);
    assert.deepEqual(got, range(1, 4).map((i) => `MSG /v1/s ${e}:${i} s${i}`));
    await take(keeper, 4, 'the live messages');
    a.ws.terminate();
    const a2 = await openOn(server, 0);
    assert.deepEqual(await ask(a2, `SUB /v1/s@${e}:4`), [`SYNC /v1/s ${e}:4`], 'nothing was missed');
    const late = await openOn(server, 1);
    assert.deepEqual(await ask(late, 'SUB /v1/s'), [], 'no snapshot: +retained is ignored without a cache');
    a2.ws.terminate();
    await publish(pub, '/v1/s', ['s5', 's6'], 't');
    await take(keeper, 2, 'the live messages');
    const a3 = await openOn(server, 1);
    assert.deepEqual(await ask(a3, `SUB /v1/s@${e}:4`), [`RESYNC /v1/s ${e}:6`], 'two were missed: no cache to recover them from');
    const h = await ask(a3, 'SUB /v1/h#3');
    assert.match(h[0] ?? '', /^SYNC \/v1\/h [0-9a-z]+:0$/);
    await publish(pub, '/v1/s', ['s7'], 'u');
    assert.equal(await nextShown(a3), `MSG /v1/s ${e}:7 s7`);
    const d = delta(server, before, [...V2_COUNTERS, 'cached_messages', 'cached_bytes']);
    assert.deepEqual(
      [d.recoveries, d.resyncs, d.snapshots_sent, d.messages_replayed, d.cached_messages, d.cached_bytes],
      [1, 1, 0, 0, 0, 0],
      `counters ${JSON.stringify(d)}`,
    );
  });
});
