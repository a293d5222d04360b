// The client SDK across a server restart: a Starling server in a child process (test/hostile-kit.ts) is killed
// (SIGKILL) while a publisher keeps publishing, and started again on the same port. The subscriber's application
// sees every message once, in order, consecutive within each epoch; a `sync` for its first subscription and a
// `resync` to the new epoch after the restart (what the dead server had not delivered is gone, and it says so),
// then every message published after it resubscribed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Client } from 'starling/client';
import { ServerChild } from './hostile-kit';
import { PublishLoop, Recorder, restartablePort, until, type Seen } from './client-kit';

const SUITE = { timeout: 120_000 };
const FAST = { min: 5, max: 100, jitter: 0.5 };

function client(url: string): { client: Client; rec: Recorder } {
  const c = connect({ servers: [url], reconnect: FAST });
  return { client: c, rec: new Recorder(c) };
}

/** The messages grouped by epoch, in order of arrival; fails unless each group's seqs are consecutive. */
function byEpoch(seen: Seen[]): { epoch: string; messages: Seen[] }[] {
  const groups: { epoch: string; messages: Seen[] }[] = [];
  for (const m of seen) {
    const g = groups.at(-1);
    if (g && g.epoch === m.epoch) {
      assert.equal(m.seq, g.messages.at(-1)!.seq + 1, `epoch ${m.epoch}: ${g.messages.at(-1)!.seq} is followed by ${m.seq}`);
      g.messages.push(m);
    } else {
      assert.ok(!groups.some((x) => x.epoch === m.epoch), `epoch ${m.epoch} came back after another`);
      groups.push({ epoch: m.epoch, messages: [m] });
    }
  }
  return groups;
}

describe('a server killed and started again mid-stream', SUITE, () => {
  it('the subscriber sees each message once, in order, consecutive per epoch, and a resync to the new epoch', async (t) => {
    const port = await restartablePort();
    const config = { Listen: `127.0.0.1:${port}` };
    const url = `ws://127.0.0.1:${port}/`;
    let server = await ServerChild.start(config);
    const { client: sub, rec } = client(url);
    const { client: pub } = client(url);
    const first = await sub.subscribe('/restart/quotes', rec.handler).ready;
    const loop = new PublishLoop(pub, '/restart/quotes');
    await until('50 messages before the kill', () => rec.all.length >= 50);

    await server.kill();
    server = await ServerChild.start(config);
    await until('50 messages of the restarted server', () => rec.all.filter((m) => m.epoch !== first.epoch).length >= 50);
    await loop.stop();
    const last = loop.acked.at(-1)!;
    await until(`the last acknowledged message (${last})`, () => rec.all.at(-1)?.text === String(last));
    server.assertAlive();

    // Once, in order: the payloads (the publisher's counter) only go up.
    const counters = rec.all.map((m) => Number(m.text));
    assert.ok(counters.every((n, i) => i === 0 || n > counters[i - 1]), 'no duplicate and no reordering');
    // Two epochs, each consecutive (byEpoch checks), all live.
    const [before, after] = byEpoch(rec.all);
    assert.equal(byEpoch(rec.all).length, 2, 'one epoch per server run');
    assert.equal(before.epoch, first.epoch);
    assert.equal(before.messages[0].seq, first.seq + 1);
    assert.ok(rec.all.every((m) => m.kind === 'live'), 'a restarted server has nothing to recover and, here, no snapshot');

    const events = rec.events.pending.filter((e) => e.event !== 'reconnecting');
    assert.deepEqual(
      events.map((e) => e.event),
      ['connected', 'sync', 'disconnected', 'connected', 'resync'],
      JSON.stringify(events),
    );
    const resync = events[4].value as { subject: string; epoch: string; seq: number; previous: unknown };
    assert.equal(resync.epoch, after.epoch);
    assert.deepEqual(resync.previous, { epoch: before.epoch, seq: before.messages.at(-1)!.seq }, 'the last position delivered before the kill');
    assert.equal(after.messages[0].seq, resync.seq + 1, 'live from the position the RESYNC gave, nothing skipped');
    t.diagnostic(
      `${loop.acked.length} acknowledged, ${loop.lost.length} lost with the connection; delivered ${before.messages.length} ` +
        `in epoch ${before.epoch}, ${after.messages.length} in ${after.epoch} from counter ${after.messages[0].text}`,
    );
    // Every message acknowledged by the new server after the subscriber resubscribed arrived.
    const firstAfter = Number(after.messages[0].text);
    assert.deepEqual(
      after.messages.map((m) => Number(m.text)),
      loop.acked.filter((n) => n >= firstAfter),
    );
  });
});
