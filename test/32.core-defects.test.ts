// Core defects, part 1: DESIGN.md rules 2 and 3 under attack — nothing lost between workgroups, memory bounded
// by configuration, healthy readers never cut for the server's own stalls. The server runs in a child process
// (test/hostile-kit.ts) so that its RSS can be read and an abort shows as its exit. Every scenario runs a
// well-behaved subscriber (on another workgroup than the attackers where that matters) that must get every
// message in order, and ends by checking that the child is alive and its RSS is back within 64 MB of the
// baseline taken just before the attack.
//
// Observed on today's code (87f1ce7). As committed there, the TypeScript layer does not start a server at all
// (the binding's counters became {name, kind, doc} and it reads options server.ts does not pass), so these runs
// used a local patch, never committed, that starts it and accepts — and ignores — MaxBacklogTime, Memory,
// KeepAlive and MaxConnections (as if the keys were left out):
// - silent loss: ~47,000-64,000 ring overflows while wg0 was starved; the publisher got as many `ERR limit`, the
//   healthy subscriber a gap of ~250-650 messages (e.g. "/h: seq 1029 followed by 1501").
// - 40 ping flooders, MaxBacklog 256K: the RSS grew by ~195 MB (bound 64 MB) and stayed ~85 MB up after they left.
// - 100 ping flooders under RLIMIT_DATA 384 MB: the child aborted within ~5 s ("terminate called after throwing an
//   instance of 'std::bad_alloc'", SIGABRT).
// - Memory=200M: ignored; the RSS grew by 1.1-1.4 GB before the test stopped the attack.
// - the reader on the busy workgroup: closed with 1008 after ~4,300 of its messages, when wg0 came back from its
//   2 s stall; with the UNSUB storm, closed with 1008 after ~2,200 messages during the stall (~2.5 s).
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { OP } from './helpers';
import {
  FrameBatch,
  MB,
  Publisher,
  RawWs,
  RssSampler,
  SeqSubscriber,
  ServerChild,
  Ticker,
  assertPlacement,
  cleanup,
  flood,
  openNonReader,
  placeNextOn,
  poll,
  pubFrames,
  sleep,
  starveWorkgroup,
  zeroMaskFrame,
} from './hostile-kit';

/** Per describe block; each file ends in well under 3 minutes when the server behaves. */
const SUITE = { timeout: 150_000 };
const K = 1024;

afterEach(cleanup);

/**
 * Resumes every non-reader (client i subscribed to subjects[i]) and waits until each has either been cut by the
 * server or received `expected` messages on its subject. Returns per client 'cut', 'complete', or what went wrong.
 */
async function cutOrComplete(clients: RawWs[], subjects: string[], expected: number, ms: number): Promise<string[]> {
  const state = clients.map(() => ({ count: 0, last: 0, problem: '' }));
  clients.forEach((c, i) => {
    for (const f of c.frames) take(i, f.payload);
    c.keep = false;
    c.onFrame = (f) => take(i, f.payload);
    c.resume();
  });
  function take(i: number, payload: Buffer): void {
    const head = payload.subarray(0, Math.min(payload.length, 400)).toString('latin1').split('\n')[0];
    const m = /^MSG (\S+) \S+:(\d+)$/.exec(head);
    if (!m || m[1] !== subjects[i]) return;
    const st = state[i];
    const seq = Number(m[2]);
    if (st.last && seq !== st.last + 1 && !st.problem) st.problem = `seq ${st.last} followed by ${seq}`;
    st.last = seq;
    st.count++;
  }
  const done = () => clients.every((c, i) => c.isEnded || state[i].count >= expected || state[i].problem);
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await sleep(100);
  return clients.map((c, i) =>
    state[i].problem ? `${subjects[i]}: ${state[i].problem}` : state[i].count >= expected ? 'complete' : c.isEnded ? 'cut' : `${subjects[i]}: ${state[i].count} of ${expected}, still open`,
  );
}

/** 64 KiB of empty WebSocket pings (6 bytes each on the wire, a 2-byte pong each in the server's output). */
const EMPTY_PINGS = Buffer.concat(Array(Math.ceil((64 * K) / 6)).fill(zeroMaskFrame(OP.ping, Buffer.alloc(0))));

describe('rule 2: nothing is lost between workgroups', SUITE, () => {
  it('delivers every message in order and acknowledges every PUB while 100 non-readers are flooded and the subscriber’s workgroup falls behind', async () => {
    // wg0: the healthy subscriber; wg1: 100 non-readers and the publisher. The non-readers' subjects are homed on
    // wg0 (a client there subscribed first, then left), the healthy subscriber's subject /h on wg1: every PUB
    // crosses from wg1 to wg0 (to be sequenced there, or delivered there). wg0's CPU is taken away for 4 s while
    // the flood arrives — the server cannot keep up, so it must push back on the publisher, not drop.
    const child = await ServerChild.start({ WorkgroupCpus: '0,1', MaxBacklog: '256K', 'BufferLimit.Send': '64K' });
    const N = 100;
    const subjects = Array.from({ length: N }, (_, i) => `/n/${i}`);
    await placeNextOn(child, 0);
    const homer = await SeqSubscriber.open(child, subjects, 'the client that homes /n/* on wg0');
    const nonReaders: RawWs[] = [];
    for (let i = 0; i < N; i++) {
      await placeNextOn(child, 1);
      nonReaders.push(await openNonReader(child, i === 0 ? ['/h', subjects[i]] : [subjects[i]]));
    }
    homer.ws.send(`UNSUB ${subjects.join(' ')}`);
    await homer.ping();
    await placeNextOn(child, 0);
    const healthy = await SeqSubscriber.open(child, ['/h']);
    await placeNextOn(child, 1);
    const pub = await Publisher.open(child);
    await assertPlacement(child, [2, N + 1]);

    // 150,000 PUBs of 700 bytes round-robin over /n/*, one PUB /h in a hundred: more than the 64 Ki envelopes a
    // ring between two workgroups holds, and ~1 MB for each non-reader — twice its kernel buffers plus MaxBacklog.
    const big = Buffer.alloc(700, 0x62);
    const small = Buffer.alloc(100, 0x61);
    const batch = new FrameBatch();
    const ids: string[] = [];
    let toHealthy = 0;
    for (let r = 0; r < 150_000; r++) {
      batch.pub(subjects[r % N], `n${r}`, big);
      ids.push(`n${r}`);
      if (r % 100 === 0) {
        batch.pub('/h', `h${r}`, small);
        ids.push(`h${r}`);
        toHealthy++;
      }
    }
    const bytes = batch.bytes;

    const baseline = child.rss();
    const sampler = new RssSampler(child);
    const starving = await starveWorkgroup(child, 0, 0, 4000);
    await pub.send(bytes);
    await starving.done;
    // A last message on /h after the flood: had any /h message been dropped at the end, its gap shows here.
    await pub.send(pubFrames('/h', 1, small, 'sentinel', 0));
    ids.push('sentinel0');
    toHealthy++;

    const unacked = await pub.waitAcks(ids, 20_000);
    child.assertAlive();
    const errs = [...pub.errs];
    const peak = sampler.stop();
    await healthy.waitCount('/h', toHealthy, 10_000).catch(() => {});
    const observed = `ERRs ${JSON.stringify(errs)}, ${unacked.length} of ${ids.length} PUBs without ACK, healthy got ${healthy.count('/h')} of ${toHealthy}, peak RSS +${((peak - baseline) / MB).toFixed(0)} MB`;
    assert.deepEqual(healthy.problems, [], `gaps at the healthy subscriber (${observed})`);
    assert.deepEqual(errs, [], `the publisher was refused (${observed})`);
    assert.equal(unacked.length, 0, `every PUB with an id is acknowledged (${observed}); first missing: ${unacked.slice(0, 5)}`);
    healthy.assertHealthy({ '/h': toHealthy });
    // A non-reader is either cut as a slow consumer (its socket refused more than MaxBacklog for MaxBacklogTime),
    // or — when the kernel buffers took its share, so it never was slow — it gets every message of its subject,
    // in order, once it reads. Nothing in between: no message is lost to a connection that stays connected.
    const verdicts = await cutOrComplete(nonReaders, subjects, 150_000 / N, 15_000);
    assert.deepEqual(verdicts.filter((v) => v !== 'cut' && v !== 'complete'), [], `every non-reader was cut or got all (${verdicts.filter((v) => v === 'cut').length} cut)`);
    await child.assertRssBack(baseline, 'after the flood');
    child.assertAlive();
  });
});

describe('rule 3: memory is bounded by configuration', SUITE, () => {
  /** The healthy side of the memory scenarios: a subscriber and a steady publisher on workgroup 0. */
  async function healthySide(child: ServerChild): Promise<{ healthy: SeqSubscriber; ticker: Ticker; pub: Publisher }> {
    await placeNextOn(child, 0);
    const healthy = await SeqSubscriber.open(child, ['/h']);
    await placeNextOn(child, 0);
    const pub = await Publisher.open(child);
    return { healthy, pub, ticker: new Ticker(pub, '/h', 200, Buffer.alloc(100, 0x61)) };
  }

  /**
   * Stops the ticker and checks that the healthy subscriber got every message in order and every PUB was
   * acknowledged. With `refusals`, a PUB may instead be refused with `ERR limit` (out of memory is not silent):
   * then the subscriber must have got exactly the acknowledged ones.
   */
  async function assertHealthySide(side: { healthy: SeqSubscriber; ticker: Ticker; pub: Publisher }, refusals = false): Promise<void> {
    await side.ticker.stop();
    const unacked = await side.pub.waitAcks(side.ticker.ids, 10_000);
    const refused = refusals ? unacked.filter((id) => side.pub.errIds.get(id) === 'limit').length : 0;
    const delivered = side.ticker.sent - refused;
    await side.healthy.waitCount('/h', delivered, 10_000);
    side.healthy.assertHealthy({ '/h': delivered });
    assert.equal(unacked.length - refused, 0, `every PUB of the healthy publisher is acknowledged; ERRs: ${JSON.stringify([...side.pub.errs])}`);
  }

  /** Opens `n` ping flooders (non-readers without subscriptions) on workgroup 1. */
  async function flooders(child: ServerChild, n: number): Promise<RawWs[]> {
    const out: RawWs[] = [];
    for (let i = 0; i < n; i++) {
      await placeNextOn(child, 1);
      out.push(await openNonReader(child, []));
    }
    return out;
  }

  it('holds 40 ping flooders that never read to a few MaxBacklog each and gives the memory back', async () => {
    // Each empty ping costs the flooder 6 bytes and the server a 2-byte pong in its output queue; counted as 2
    // bytes against MaxBacklog, such a pong holds a ~40-byte allocation today.
    const clients = 40;
    const maxBacklog = 256 * K;
    const child = await ServerChild.start({ MaxBacklog: '256K', 'BufferLimit.Send': '4K' });
    const side = await healthySide(child);
    const attackers = await flooders(child, clients);
    const baseline = child.rss();
    const sampler = new RssSampler(child, 50);
    const end = Date.now() + 5000;
    // Safety: never let a broken server take more than 1.5 GB of the machine.
    await flood(attackers, EMPTY_PINGS, () => Date.now() > end || sampler.max > baseline + 1536 * MB || !child.alive);
    const peak = sampler.stop();
    child.assertAlive();
    const bound = clients * 4 * maxBacklog + 24 * MB;
    assert.ok(
      peak - baseline <= bound,
      `the server grew by ${((peak - baseline) / MB).toFixed(0)} MB under ${clients} ping flooders; bound ${clients} × 4 × MaxBacklog + 24 MB = ${(bound / MB).toFixed(0)} MB`,
    );
    for (const a of attackers) a.destroy();
    await assertHealthySide(side);
    await child.assertRssBack(baseline, 'after the ping flooders left');
  });

  it('does not abort under RLIMIT_DATA when 100 ping flooders push it to the limit', async () => {
    // 384 MB of data segment (the idle child uses ~90-120 MB), and MaxBacklog far above it (64M a client): the
    // allocations fail before any per-client limit is reached. A server that runs out of memory must shed
    // clients, never abort (DESIGN.md rule 3).
    const child = await ServerChild.start({ MaxBacklog: '64M', 'BufferLimit.Send': '4K' }, { limits: ['--data=402653184'] });
    const side = await healthySide(child);
    const attackers = await flooders(child, 100);
    const baseline = child.rss();
    const end = Date.now() + 12_000;
    await flood(attackers, EMPTY_PINGS, () => Date.now() > end || !child.alive);
    child.assertAlive('the server under RLIMIT_DATA');
    for (const a of attackers) a.destroy();
    await assertHealthySide(side, true);
    await child.assertRssBack(baseline, 'after the ping flooders left');
    child.assertAlive('the server under RLIMIT_DATA');
  });

  it('says which limit keeps it from starting its threads, instead of aborting (RLIMIT_DATA with whole heaps)', async () => {
    // docs/tuning.md: with glibc's top pad at 64 MiB every thread's heap is writable whole and counts against
    // RLIMIT_DATA, so at 384 MB the server's own threads cannot get their stacks. An uncaught std::system_error
    // ended the process with SIGABRT; now start() stops the threads it made and fails with the limit to raise.
    await assert.rejects(
      ServerChild.start({}, { limits: ['--data=402653184'], env: { GLIBC_TUNABLES: 'glibc.malloc.top_pad=67108864' } }),
      (e: Error) => {
        assert.match(e.message, /"code":1,"signal":null/);
        assert.match(e.message, /cannot start the server's threads \(\d+ of 3 started\).*ulimit -d.*glibc\.malloc\.top_pad/s);
        return true;
      },
    );
  });

  it('keeps the whole server within Memory=200M by cutting the largest backlogs', async () => {
    // MaxBacklog is set far above the budget (64M per client), so only the server-wide budget can hold 40
    // flooders: past it the largest backlogs are cut, and the healthy subscriber keeps getting every message.
    const budget = 200 * MB;
    const child = await ServerChild.start({ Memory: '200M', MaxBacklog: '64M', 'BufferLimit.Send': '4K' });
    const side = await healthySide(child);
    const attackers = await flooders(child, 40);
    const baseline = child.rss();
    const sampler = new RssSampler(child, 50);
    const end = Date.now() + 8000;
    await flood(attackers, EMPTY_PINGS, () => Date.now() > end || sampler.max > baseline + 1536 * MB || !child.alive);
    const peak = sampler.stop();
    child.assertAlive();
    const cut = attackers.filter((a) => a.isEnded).length;
    assert.ok(peak - baseline <= budget + 64 * MB, `the server grew by ${((peak - baseline) / MB).toFixed(0)} MB with Memory=200M (allowed: 200 MB + 64 MB)`);
    assert.ok(cut > 0, 'past the budget the largest backlogs are cut');
    for (const a of attackers) a.destroy();
    await assertHealthySide(side);
    await child.assertRssBack(baseline, 'after the flooders left');
  });

  it('gives back the memory of 200,000 subjects made on both workgroups and dropped, five times over', async (t) => {
    // Subjects and their subscriber lists are blocks of the arena (io/arena.h), in the heap of the workgroup that
    // made them; one dropped on the other workgroup goes back by a remote free. Each round, 10 clients on each
    // workgroup subscribe to the same 200,000 names (~26 MB of subjects and lists), then those of workgroup 0
    // leave, then those of workgroup 1.
    const names = 200_000;
    const perClient = names / 10;
    const perSub = 5000; // a SUB of 5,000 names of 9 bytes stays under MaxMessageSize (64 KiB)
    const child = await ServerChild.start({ MaxSubscriptionsPerConnection: perClient });
    const side = await healthySide(child);
    const subjects = async () => (await child.stats()).total.subjects as number;
    const before = await subjects();
    const baseline = child.rss();
    const name = (i: number) => `/c/${i.toString(36).padStart(6, '0')}`;
    const afterRound: number[] = [];
    let peak = 0;
    for (let round = 0; round < 5; round++) {
      const byWorkgroup: RawWs[][] = [[], []];
      for (const wg of [0, 1]) {
        for (let c = 0; c < 10; c++) {
          await placeNextOn(child, wg);
          const raw = await RawWs.open(child);
          raw.keep = false;
          for (let from = c * perClient; from < (c + 1) * perClient; from += perSub)
            raw.command(`SUB ${Array.from({ length: perSub }, (_, i) => name(from + i)).join(' ')}`);
          byWorkgroup[wg].push(raw);
        }
      }
      await Promise.all(byWorkgroup.flat().map((raw) => raw.ping(undefined, 30_000)));
      assert.equal(await subjects(), before + names, `round ${round}: every name is one subject`);
      peak = Math.max(peak, child.rss());
      for (const group of byWorkgroup) {
        const open = async () => (await child.stats()).total.connections as number;
        const was = await open();
        for (const raw of group) raw.destroy();
        const left = await poll(async () => ((await open()) <= was - group.length ? true : undefined), 10_000);
        assert.ok(left, `round ${round}: the clients' connections closed`);
      }
      const gone = await poll(async () => ((await subjects()) === before ? true : undefined), 10_000);
      assert.ok(gone, `round ${round}: the subjects were dropped (${await subjects()} registered, ${before} before)`);
      await sleep(1500); // the workgroups' once-a-second pass takes the remote frees back
      afterRound.push(child.rss());
    }
    // What may stay: the free spans the arena keeps for reuse (up to 8 MiB a heap) and a spare chunk each (2 MiB),
    // the index's grown tables (4 MB), and 12 MB of the rest. Measured: +16-26 MB; without the trim after a SUB
    // storm, malloc kept ~25 MB more (max +43-55 MB); had each round kept its subjects, +19 MB more a round.
    const bound = 2 * (8 + 2) * MB + 4 * MB + 12 * MB;
    const readings = `RSS above the baseline after each round (MB): ${afterRound.map((r) => ((r - baseline) / MB).toFixed(1)).join(', ')}; peak +${((peak - baseline) / MB).toFixed(1)}`;
    t.diagnostic(readings);
    assert.ok(Math.max(...afterRound) - baseline <= bound, `the rounds kept more than ${bound / MB} MB: ${readings}`);
    await assertHealthySide(side);
    await child.assertRssBack(baseline, `after the rounds (${readings})`);
  });
});

describe('rule 2: a reader that keeps up is never cut', SUITE, () => {
  it('keeps a reader that keeps up open while 200 non-readers load its workgroup and the workgroup stalls', async () => {
    // wg0: the reader and 200 non-readers, all on /b (homed on wg0); the publisher on wg1 sends 2,000 messages of
    // 1 KB a second for 8 s — 2 MB/s, which the reader takes easily. After 2 s wg0's CPU is taken away for 2 s
    // (as on a busy machine): what piled up meanwhile reaches the reader in one burst, which it reads at once.
    // The non-readers fill their sockets and must be cut; the reader must not be. The burst (4 MB) is twice
    // MaxBacklog, and pours out faster than any reader takes it. MaxBacklog and MaxBacklogTime are not smaller so
    // that this test process, which shares two cores with the server and, in CI, with whatever else runs there,
    // may miss its turn to read for a few seconds without being slow by the rule (it was, twice, with 256K and 1M
    // and the default 2 s, on a loaded machine).
    const child = await ServerChild.start({ WorkgroupCpus: '0,1', MaxBacklog: '2M', MaxBacklogTime: 4000, 'BufferLimit.Send': '64K' });
    await placeNextOn(child, 0);
    const reader = await SeqSubscriber.open(child, ['/b'], 'the reader');
    const nonReaders: RawWs[] = [];
    for (let i = 0; i < 200; i++) {
      await placeNextOn(child, 0);
      nonReaders.push(await openNonReader(child, ['/b']));
    }
    await placeNextOn(child, 1);
    const pub = await Publisher.open(child);
    await assertPlacement(child, [201, 1]);
    const baseline = child.rss();
    const ticker = new Ticker(pub, '/b', 2000, Buffer.alloc(1000, 0x62), 'b');
    const end = Date.now() + 8000;
    await sleep(2000);
    await (await starveWorkgroup(child, 0, 0, 2000)).done;
    while (Date.now() < end && !reader.closedWith) await sleep(100);
    await ticker.stop();
    await reader.waitCount('/b', ticker.sent, 10_000).catch(() => {});
    if (reader.closedWith) {
      const t = (await child.stats()).total;
      const why = `slow_consumer_closes ${t.slow_consumer_closes}, memory_cuts ${t.memory_cuts}`;
      assert.fail(`the reader was closed after ${reader.count('/b')} of ${ticker.sent} messages: ${JSON.stringify(reader.closedWith)} (${why})`);
    }
    reader.assertHealthy({ '/b': ticker.sent });
    const unacked = await pub.waitAcks(ticker.ids, 10_000);
    assert.equal(unacked.length, 0, 'every PUB is acknowledged');
    // A non-reader is either cut as a slow consumer (its socket refused more than MaxBacklog for MaxBacklogTime),
    // or — when the kernel buffers took its share, so it never was slow — it gets every message of its subject,
    // in order, once it reads. Nothing in between: no message is lost to a connection that stays connected.
    const verdicts = await cutOrComplete(nonReaders, nonReaders.map(() => '/b'), ticker.sent, 15_000);
    assert.deepEqual(verdicts.filter((v) => v !== 'cut' && v !== 'complete'), [], `every non-reader was cut or got all (${verdicts.filter((v) => v === 'cut').length} cut)`);
    await child.assertRssBack(baseline, 'after the non-readers were cut');
    child.assertAlive();
  });

  it('keeps a reader that keeps up open while 40 huge UNSUB lists keep its workgroup busy', async () => {
    // wg0: the reader and 40 clients holding 2,000 subscriptions each, which then send UNSUB lists of ~64 KiB
    // (names they do not hold, as long as theirs). The publisher on wg1 sends 2,000 messages of 1 KB a second.
    const child = await ServerChild.start({ MaxSubscriptionsPerConnection: 50_000 });
    await placeNextOn(child, 0);
    const reader = await SeqSubscriber.open(child, ['/b'], 'the reader');
    const name = (prefix: string, i: number) => `/${prefix}/${i.toString(36).padStart(6, '0')}`;
    const attackers: RawWs[] = [];
    for (let a = 0; a < 40; a++) {
      await placeNextOn(child, 0);
      const raw = await RawWs.open(child);
      raw.command(`SUB ${Array.from({ length: 2000 }, (_, i) => name('s', a * 2000 + i)).join(' ')}`);
      await raw.ping(undefined, 30_000);
      raw.keep = false;
      attackers.push(raw);
    }
    const unsub = `UNSUB ${Array.from({ length: Math.floor((64 * K - 6) / 10) }, (_, i) => name('u', i)).join(' ')}`;
    assert.ok(unsub.length <= 64 * K);
    await placeNextOn(child, 1);
    const pub = await Publisher.open(child);
    await assertPlacement(child, [41, 1]);
    const baseline = child.rss();
    const ticker = new Ticker(pub, '/b', 2000, Buffer.alloc(1000, 0x62), 'b');
    await sleep(1000);
    for (const a of attackers) a.command(unsub);
    await Promise.all(attackers.map((a) => a.ping(undefined, 30_000).catch(() => {})));
    await sleep(2000);
    await ticker.stop();
    await reader.waitCount('/b', ticker.sent, 10_000).catch(() => {});
    if (reader.closedWith) {
      const t = (await child.stats()).total;
      const why = `slow_consumer_closes ${t.slow_consumer_closes}, memory_cuts ${t.memory_cuts}`;
      assert.fail(`the reader was closed after ${reader.count('/b')} of ${ticker.sent} messages: ${JSON.stringify(reader.closedWith)} (${why})`);
    }
    reader.assertHealthy({ '/b': ticker.sent });
    await child.assertRssBack(baseline, 'after the UNSUB storm');
    child.assertAlive();
  });
});
