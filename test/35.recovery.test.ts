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
    assert.deepEqual(server.stats().workgroups.map((w) => w.counters.connections).slice(0, 2).every((n) => n >= 2), true);
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
