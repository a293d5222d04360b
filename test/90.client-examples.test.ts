// The Node examples run as their headers say (`node examples/<name>.mjs …` from the repository root, importing
// `starling/client` as an installed package would): the publisher publishes its quotes and exits 0; the subscriber
// prints them, survives a server killed and started again on the same port (resync per subject, then the next
// quotes), and exits 0 on SIGTERM. The browser example is run in test/90.client-browser.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ServerChild } from './hostile-kit';
import { ExampleProcess, restartablePort } from './client-kit';

const SUITE = { timeout: 120_000 };
const SYMBOLS = ['IBM', 'AAPL'];

/** Runs examples/publisher.mjs to the end; returns the `n` of its quotes, in order. */
async function publish(url: string, count: number): Promise<number[]> {
  const pub = ExampleProcess.start('publisher.mjs', [url, '--count', String(count), '--interval', '0', '--symbols', SYMBOLS.join(',')]);
  await pub.line(new RegExp(`^done ${count}$`));
  const exit = await pub.exited;
  assert.deepEqual(exit, { code: 0, signal: null }, pub.errors);
  assert.equal(pub.errors, '');
  return pub.output.filter((l) => l.startsWith('published ')).map((l) => Number(l.split(' ')[1]));
}

/** Takes `n` `message` lines of the subscriber; returns [subject, epoch, seq, kind, quote.n] of each. */
async function quotes(sub: ExampleProcess, n: number): Promise<[string, string, number, string, number][]> {
  const out: [string, string, number, string, number][] = [];
  while (out.length < n) {
    const m = await sub.line(/^message (\S+) ([0-9a-z]+):(\d+) (\S+) (.*)$/);
    out.push([m[1], m[2], Number(m[3]), m[4], JSON.parse(m[5]).n]);
  }
  return out;
}

describe('the Node examples', SUITE, () => {
  it('the subscriber prints the publisher’s quotes, survives a server restart, and exits 0 on SIGTERM', async () => {
    const port = await restartablePort();
    const config = { Listen: `127.0.0.1:${port}` };
    const url = `ws://127.0.0.1:${port}/`;
    let server = await ServerChild.start(config);
    const sub = ExampleProcess.start('subscriber.mjs', [url, '--symbols', SYMBOLS.join(',')]);
    await sub.line(/^connected /);
    for (let i = 0; i < SYMBOLS.length; i++) await sub.line(/^sync \/ticker\/\w+ [0-9a-z]+:0$/);

    assert.deepEqual(await publish(url, 10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const before = await quotes(sub, 10);
    assert.deepEqual(before.map((q) => q[4]), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'every quote, in order');
    for (const [i, q] of before.entries()) {
      assert.equal(q[0], `/ticker/${SYMBOLS[i % 2]}`);
      assert.equal(q[2], Math.floor(i / 2) + 1, 'each subject counts from 1');
      assert.equal(q[3], 'live');
    }

    await server.kill();
    await sub.line(/^disconnected /);
    server = await ServerChild.start(config);
    await sub.line(/^connected /);
    const resyncs = [await sub.line(/^resync (\S+) ([0-9a-z]+):0 \(was (\S+)\)$/), await sub.line(/^resync (\S+) ([0-9a-z]+):0 \(was (\S+)\)$/)];
    assert.deepEqual(resyncs.map((r) => r[1]).sort(), SYMBOLS.map((s) => `/ticker/${s}`).sort());
    // Epochs are per subject: each subject's new one differs from its old one, which the resync names.
    const epochs = new Map(resyncs.map((r) => [r[1], r[2]]));
    for (const r of resyncs) {
      const old = before.find((q) => q[0] === r[1])!;
      assert.equal(r[3], `${old[1]}:5`, 'the last position printed before the kill');
      assert.notEqual(r[2], old[1], 'a new epoch');
    }

    await publish(url, 4);
    const after = await quotes(sub, 4);
    assert.deepEqual(after.map((q) => [q[4], q[2], q[3]]), [
      [1, 1, 'live'],
      [2, 1, 'live'],
      [3, 2, 'live'],
      [4, 2, 'live'],
    ]);
    assert.ok(after.every((q) => q[1] === epochs.get(q[0])), 'the epochs the resyncs gave');

    sub.proc.kill('SIGTERM');
    assert.deepEqual(await sub.exited, { code: 0, signal: null });
    assert.equal(sub.errors, '');
    server.assertAlive();
  });
});
