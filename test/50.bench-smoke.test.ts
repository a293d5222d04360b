// The benchmark tools end to end on a small scale: benchsub and benchpub against a real Starling server,
// printing every statistic and writing the summary, timeline and report. No timing assertions.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { benchpub } from '../bench/benchpub';
import { benchsub } from '../bench/benchsub';
import { BENCHPUB_KEYS, BENCHSUB_KEYS, loadTool } from '../bench/tools';
import { createServer } from '../src/index';

describe('benchmark tools (smoke)', () => {
  const server = createServer({ Listen: '127.0.0.1:0', Workgroups: 2, BenchmarkMode: true, LogLevel: 'warn', Monitor: '' });
  after(() => server.close());
  const port = server.addresses[0].port;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-smoke-'));

  it('benchsub measures what benchpub publishes and reports every statistic', async () => {
    const lines: string[] = [];
    const common = [`-DServerAddresses=127.0.0.1:${port}`, '-DSubjects=/p/s{1..300}'];
    const sub = benchsub(
      [...common, '-DClients=300', '-DOneToOne=true', '-DLocalAddresses=127.0.0.{2..4}', '-DDuration=3', '-DReportInterval=1', `-DServerPid=${process.pid}`, `-DOutput=${dir}/run`],
      {},
      (l) => lines.push(l),
    );
    // Publish while benchsub measures (it connects first; messages before its window are simply not counted).
    const pubLines: string[] = [];
    const pub = benchpub([...common, '-DPublishers=2', '-DFrequency=600', '-DDuration=5'], {}, (l) => pubLines.push(l));
    const summary = await sub;
    const sent = await pub;

    const text = lines.join('\n');
    for (const needle of ['connecting: 300/300', 'connected: 300/300', 'latency ms: min', 'max', 'mean', ' sd ', '90% CI', '95% CI', 'p50', 'p90', 'p99 ', 'p99.9', 'bandwidth rx', 'server CPU']) {
      assert.ok(text.includes(needle), `benchsub output lacks "${needle}":\n${text}`);
    }
    assert.ok(summary.totals.messages > 0, 'no message measured');
    assert.equal(summary.totals.connections, 300);
    assert.equal(summary.latency.count, summary.totals.messages);
    assert.ok(summary.latency.p50 !== null && summary.latency.p999 !== null);
    assert.ok(sent.sent > 0);
    assert.ok(pubLines.some((l) => l.includes('publishers 2/2')), pubLines.join('\n'));

    for (const ext of ['json', 'csv', 'md', 'svg']) assert.ok(fs.existsSync(`${dir}/run.${ext}`), `run.${ext} missing`);
    const csv = fs.readFileSync(`${dir}/run.csv`, 'utf8').trim().split('\n');
    assert.match(csv[0], /^t_seconds,connections,messages,rate_per_second,p50_us/);
    assert.ok(csv.length >= 3, 'timeline has fewer than two rows');
    assert.match(fs.readFileSync(`${dir}/run.svg`, 'utf8'), /<svg[\s\S]*<\/svg>/);
  });

  it('benchsub rejects a bad configuration with the key and the expected value', async () => {
    await assert.rejects(benchsub(['-DClients=many'], {}, () => {}), /Clients: expected an integer/);
    await assert.rejects(benchsub(['-DClient=5'], {}, () => {}), /unknown key "Client" \(did you mean "Clients"\?\)/);
    await assert.rejects(benchsub(['-DClients=10', '-DSubjects=/a{1..3}', '-DOneToOne=true'], {}, () => {}), /OneToOne needs at least as many subjects/);
  });

  it('expands the range syntax of Subjects and LocalAddresses', () => {
    const cfg = loadTool(BENCHSUB_KEYS, ['-DSubjects=/p/s{1..3}/-, /q/{1..2}/{7..8}', '-DLocalAddresses=127.0.0.{2..4}'], {});
    assert.deepEqual(cfg.Subjects, ['/p/s1/-', '/p/s2/-', '/p/s3/-', '/q/1/7', '/q/1/8', '/q/2/7', '/q/2/8']);
    assert.deepEqual(cfg.LocalAddresses, ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
  });

  it('rejects malformed ranges, subjects, addresses and numbers, naming the key and where it came from', () => {
    const bad: [string[], RegExp][] = [
      [['-DSubjects=/p/s{3..1}'], /-DSubjects=\/p\/s\{3\.\.1\}: Subjects: expected subjects/],
      [['-DSubjects=/p/s{1..x}'], /Subjects: expected subjects/],
      [['-DSubjects=/p//s{1..2}'], /Subjects: expected subjects/],
      [['-DLocalAddresses=127.0.0.{2..4'], /LocalAddresses: expected host names or addresses/],
      [['-DLocalAddresses=not a host!'], /LocalAddresses: expected host names or addresses/],
    ];
    for (const [argv, message] of bad) assert.throws(() => loadTool(BENCHSUB_KEYS, argv, {}), message, argv.join(' '));
    assert.throws(() => loadTool(BENCHPUB_KEYS, ['-DFrequency=-5'], {}), /Frequency: expected a number between 0 and/);
    assert.throws(() => loadTool(BENCHPUB_KEYS, ['-DFrequency=1e3'], {}), /Frequency: expected a number/);
    assert.throws(() => loadTool(BENCHPUB_KEYS, [], { BENCHPUB_FREQUENCYY: '5' }), /unknown variable "BENCHPUB_FREQUENCYY" \(did you mean "BENCHPUB_FREQUENCY"\?\)/);
    assert.throws(() => loadTool(BENCHSUB_KEYS, ['--bogus'], {}), /unknown argument "--bogus"/);
  });
});
