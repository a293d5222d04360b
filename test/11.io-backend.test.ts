// The I/O backends for real. Where the kernel refuses io_uring (test/tools/no-uring.c: a seccomp filter that makes
// io_uring_setup fail with EPERM, as a container's profile does), IoBackend = auto runs epoll and says why, and
// IoBackend = io_uring refuses to start with the reason: in the API, in the CLI and in `starling doctor` (skipped,
// saying so, while doctor does not report what its own process can do). Where io_uring works, one server process
// holds 30,000 receiving WebSocket connections, opened by two client processes under the 20,000 fd limit, with a
// few dozen descriptors of its own, and gives the memory back when they close. No timing assertions: waits fail
// only when nothing moves for TIMEOUT_MS.
import assert from 'node:assert/strict';
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BENCHSUB_KEYS, clientOptions, loadTool, type SnapshotJSON } from '../bench/tools';
import type { Server } from '../src/index';
import { addon } from '../src/native';
import { Client, describeWith, IN_CI, startServer, TIMEOUT_MS, waitFor, within } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const LAUNCHER_SOURCE = path.join(ROOT, 'test', 'tools', 'no-uring.c');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
/** A server in a child process that prints server.io and its log lines (test/tools/io-child.ts). */
const IO_CHILD = path.join(__dirname, 'tools', 'io-child.js');
/** benchsub's worker process: one native client engine for a slice of the connections (bench/worker.ts). */
const BENCH_WORKER = path.join(ROOT, 'dist', 'bench', 'worker.js');
const MB = 2 ** 20;

/** The first of `programs` on PATH, or null. */
function which(...programs: string[]): string | null {
  for (const program of programs)
    for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
      const candidate = path.join(dir, program);
      try {
        fs.accessSync(candidate, fs.constants.X_OK);
        return candidate;
      } catch {
        // not here
      }
    }
  return null;
}

/** Every child process this file starts, killed (SIGKILL) when it ends, whatever happened. */
const children = new Set<ChildProcess>();
const track = (child: ChildProcess): ChildProcess => {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
};
after(() => {
  for (const child of children) child.kill('SIGKILL');
});

/** A child process whose output is collected, for waiting on lines and on its end. */
class Proc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  /** Resolves when it has exited and its output is closed. */
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private wake: (() => void)[] = [];
  private ended = false;

  constructor(command: string, args: string[]) {
    this.child = track(spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => ((this.stdout += d), this.notify()));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => ((this.stderr += d), this.notify()));
    this.closed = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.ended = true;
        this.notify();
        resolve({ code, signal });
      }),
    );
  }

  private notify(): void {
    for (const w of this.wake.splice(0)) w();
  }

  /** The first match of `re` in the stream; fails if the process ends first. */
  match(stream: 'stdout' | 'stderr', re: RegExp): Promise<RegExpExecArray> {
    const wait = async () => {
      for (;;) {
        const m = re.exec(this[stream]);
        if (m) return m;
        if (this.ended) assert.fail(`the process ended (${JSON.stringify(await this.closed)}) before its ${stream} matched ${re}; stdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
        await new Promise<void>((resolve) => this.wake.push(resolve));
      }
    };
    return within(wait(), `${re} in the ${stream} of ${this.child.spawnargs.join(' ')}`);
  }

  /** Waits for the end; returns the exit code. */
  async exit(): Promise<number | null> {
    const { code, signal } = await within(this.closed, `${this.child.spawnargs.join(' ')} to exit`);
    assert.equal(signal, null, `killed by ${signal}; stderr:\n${this.stderr}`);
    return code;
  }
}

/** A SUB / PUB / MSG round trip through the server at `url`. */
async function roundTrip(url: string): Promise<void> {
  const sub = await Client.open(url);
  const pub = await Client.open(url);
  await sub.command('SUB /io/fallback');
  pub.send('PUB /io/fallback f1\nthrough epoll');
  await pub.expect('ACK f1');
  const m = await sub.nextMsg('the message published through the fallback server');
  assert.equal(m.subject, '/io/fallback');
  assert.equal(m.payload.toString(), 'through epoll');
  await Promise.all([sub.close(), pub.close()]);
}

// ---------------------------------------------------------------------------------------------------
// 1. io_uring refused by the kernel

const REFUSED = /^io_uring_setup: Operation not permitted \(.*seccomp/;

interface Ready {
  pid: number;
  port: number;
  url: string;
  io: { backend: string; note: string; ringFiles: number; maxConnections: number };
  probe: { unavailable: string; classicBuffers: boolean };
  logs: string[];
}

describeWith(
  { program: 'cc', path: which('cc', 'gcc', 'clang'), install: 'apt-get install gcc' },
  'IoBackend where the kernel refuses io_uring (seccomp: io_uring_setup fails with EPERM)',
  { timeout: 60_000 },
  () => {
    let dir = '';
    let launcher = '';
    before(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-no-uring-'));
      launcher = path.join(dir, 'no-uring');
      const cc = which('cc', 'gcc', 'clang')!;
      const r = spawnSync(cc, ['-O2', '-Wall', '-o', launcher, LAUNCHER_SOURCE], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${cc} could not compile ${LAUNCHER_SOURCE}:\n${r.stderr}`);
    });
    after(() => dir && fs.rmSync(dir, { recursive: true, force: true }));

    /** Runs `node args...` under the launcher. */
    const underLauncher = (...args: string[]) => new Proc(launcher, [process.execPath, ...args]);

    /** Starts test/tools/io-child.js with `config` under the launcher; resolves with its first line. */
    async function ioChild(config: Record<string, unknown>): Promise<{ proc: Proc; kind: string; line: Record<string, unknown> }> {
      const proc = underLauncher(IO_CHILD, JSON.stringify({ Workgroups: 2, LogLevel: 'warn', ...config }));
      const m = await proc.match('stdout', /^(READY|FAILED) (.*)$/m);
      return { proc, kind: m[1], line: JSON.parse(m[2]) };
    }

    it('IoBackend = auto runs epoll, says why in server.io.note and in a warning, and serves', async () => {
      const { proc, kind, line } = await ioChild({ IoBackend: 'auto' });
      assert.equal(kind, 'READY', `the server did not start: ${JSON.stringify(line)}\n${proc.stderr}`);
      const ready = line as unknown as Ready;
      // The launcher works: the probe of this process saw io_uring_setup refused.
      assert.match(ready.probe.unavailable, REFUSED, 'addon.ioUring() under the seccomp filter');
      assert.equal(ready.io.backend, 'epoll');
      assert.equal(ready.io.note, `io_uring unavailable: ${ready.probe.unavailable}`);
      assert.match(ready.io.note, /io_uring_setup: Operation not permitted/);
      assert.equal(ready.io.ringFiles, 0);
      const warning = `IoBackend = auto: io_uring unavailable: ${ready.probe.unavailable}; running epoll`;
      assert.deepEqual(
        ready.logs.filter((l) => l.includes('IoBackend')).map((l) => l.replace(/^\S+ /, '')),
        [`WARN  ${warning}`],
        'one warning with the reason',
      );
      await roundTrip(ready.url);
      proc.child.stdin!.end();
      assert.equal(await proc.exit(), 0, proc.stderr);
    });

    it('IoBackend = io_uring refuses to start, with the reason', async () => {
      const { proc, kind, line } = await ioChild({ IoBackend: 'io_uring' });
      assert.equal(kind, 'FAILED', `the server started on ${JSON.stringify(line)}`);
      const { message, probe } = line as { message: string; probe: Ready['probe'] };
      assert.match(probe.unavailable, REFUSED);
      assert.equal(message, `IoBackend = io_uring: ${probe.unavailable}`);
      assert.match(message, /^IoBackend = io_uring: io_uring_setup: Operation not permitted \(io_uring is disabled for this process: kernel\.io_uring_disabled, or a seccomp filter\)$/);
      assert.equal(await proc.exit(), 1);
    });

    it('starling serve: auto logs the reason and listens on epoll; io_uring exits 1 with the reason', async () => {
      const conf = (backend: string) => {
        const file = path.join(dir, `${backend}.conf`);
        fs.writeFileSync(file, `Listen = 127.0.0.1:0\nWorkgroups = 2\nMonitor =\nIoBackend = ${backend}\n`);
        return file;
      };
      const auto = underLauncher(CLI, 'serve', '--config', conf('auto'));
      const listening = await auto.match('stderr', /INFO {2}starling listening on 127\.0\.0\.1:(\d+) .*with 2 workgroups on (\S+), at most (\d+) connections$/m);
      assert.equal(listening[2], 'epoll', auto.stderr);
      assert.match(auto.stderr, /WARN {2}IoBackend = auto: io_uring unavailable: io_uring_setup: Operation not permitted \(.*\); running epoll\n/);
      await roundTrip(`ws://127.0.0.1:${listening[1]}/`);
      auto.child.kill('SIGTERM');
      assert.equal(await auto.exit(), 0, auto.stderr);

      const forced = underLauncher(CLI, 'serve', '--config', conf('io_uring'));
      assert.equal(await forced.exit(), 1, forced.stderr);
      assert.match(forced.stderr, /^starling: IoBackend = io_uring: io_uring_setup: Operation not permitted \(.*seccomp filter\)$/m);
      assert.doesNotMatch(forced.stderr, /listening/);
    });

    it('starling benchsub: IoBackend = io_uring exits 2 (a setting this machine cannot run) with the reason', async () => {
      const proc = underLauncher(CLI, 'benchsub', '-DServerAddresses=127.0.0.1:9', '-DClients=1', '-DSubjects=/a', '-DIoBackend=io_uring');
      assert.equal(await proc.exit(), 2, proc.stderr);
      assert.match(proc.stderr, /io_uring cannot hold the connections: io_uring_setup: Operation not permitted \(.*seccomp filter\)/);
      assert.doesNotMatch(proc.stdout, /connecting:/);
    });

    it('starling doctor says io_uring is unavailable in this process', async (t) => {
      const proc = underLauncher(CLI, 'doctor', '--json', '--connections', '1000');
      assert.ok([0, 1].includes((await proc.exit()) ?? -1), proc.stderr);
      const report = JSON.parse(proc.stdout) as { items: { name: string; status: string; detail: string }[] };
      const item = report.items.find((i) => i.name === 'io_uring');
      assert.ok(item, `doctor has no io_uring item: ${proc.stdout}`);
      // A doctor that reads only kernel.io_uring_disabled and the kernel version cannot see the filter.
      if (!item.detail.includes('io_uring_setup'))
        return t.skip(`doctor does not report yet whether io_uring works in its process: ${JSON.stringify(item.detail.slice(0, 100))}…`);
      assert.match(item.detail, /io_uring_setup: Operation not permitted/, item.detail);
      assert.match(item.detail, /epoll/, item.detail);
    });
  },
);

// ---------------------------------------------------------------------------------------------------
// 2. Where io_uring works: required with CI=true (this machine's kernel has it), else skipped saying why

const URING_UNAVAILABLE = addon.ioUring().unavailable;

function describeUring(name: string, options: { timeout?: number }, fn: () => void): void {
  if (!URING_UNAVAILABLE) {
    describe(name, options, fn);
    return;
  }
  const line = `io_uring is unavailable here: ${URING_UNAVAILABLE}`;
  if (!IN_CI) describe(name, { ...options, skip: line }, fn);
  else describe(name, options, () => it('needs io_uring', () => assert.fail(`${line}; it is required when CI=true (Linux 6.7 or later, kernel.io_uring_disabled = 0, no seccomp filter on it)`)));
}

/** The soft RLIMIT_NOFILE of process `pid` (the one that counts for opening descriptors). */
function fdLimit(pid: number | 'self'): number {
  const m = /Max open files\s+(\d+|unlimited)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
}
const openFds = (pid: number | 'self') => fs.readdirSync(`/proc/${pid}/fd`).length;
const rss = () => process.memoryUsage().rss;
/** How far the RSS may stay above its baseline once the connections are gone (as test/hostile-kit.ts RSS_SLACK). */
const RSS_SLACK = 64 * MB;
/** Spare output queues each workgroup keeps for reuse (native/io/stream_loop.cc kQueuePoolMax)... */
const QUEUE_POOL = 4096;
/** ...and what one is charged, with room: 168 B now (OutQueue, 72 B, and its first 8 slots, 64 B, each plus 16 B
 * of malloc overhead). */
const QUEUE_BYTES = 210;

describeUring('IoBackend = io_uring', { timeout: 120_000 }, () => {
  it('IoBackend = auto runs io_uring where the kernel allows it, with no note', () => {
    const server = startServer({ IoBackend: 'auto' });
    assert.equal(server.io.backend, 'io_uring', JSON.stringify(server.io));
    assert.equal(server.io.note, '');
    assert.ok(server.io.ringFiles > 0, JSON.stringify(server.io));
    return server.close();
  });

  // 30,000 subscribers in ONE benchsub worker process whose engine holds them as io_uring direct descriptors
  // (benchsub IoBackend = io_uring), so both ends go past the 20,000 fd limit; over four source addresses (one has
  // ~28,000 ephemeral ports), spread over SUBJECTS subjects; ROUNDS messages on every subject, one round published by
  // a WebSocket client and the others by server.publish.
  const CONNECTIONS = 30_000;
  const PROCESSES = 1;
  const WORKGROUPS = 2;
  const SUBJECTS = 100;
  const ROUNDS = 3;
  const workers: { proc: ChildProcess; counters: Record<string, number> | null }[] = [];
  let server: Server;
  let baseline: { rss: number; memory: number; fds: number } | undefined;
  let held = false;

  const sum = (counter: string) => workers.reduce((n, w) => n + (w.counters?.[counter] ?? 0), 0);
  const clientCounters = () => Object.fromEntries(['connected', 'connecting', 'connect_failures', 'disconnects', 'messages_received', 'unpositioned', 'lost', 'duplicated', 'errors'].map((c) => [c, sum(c)]));
  const total = (counter: string) => server.stats().total[counter];

  /**
   * Waits until value() reaches `target`; fails when it has not moved for TIMEOUT_MS (a stall, not slowness: the
   * machine may be loaded), or as soon as `broken` names a problem.
   */
  async function reach(what: string, value: () => number, target: number, broken: () => string | undefined = () => undefined): Promise<void> {
    let last = value();
    let movedAt = Date.now();
    for (;;) {
      const v = value();
      if (v >= target) return;
      const problem = broken();
      if (problem) assert.fail(`${what}: ${problem}; at ${v} of ${target}; clients ${JSON.stringify(clientCounters())}; server ${JSON.stringify(server.stats().total)}`);
      if (v !== last) [last, movedAt] = [v, Date.now()];
      if (Date.now() - movedAt > TIMEOUT_MS)
        assert.fail(`${what}: stuck at ${v} of ${target} for ${TIMEOUT_MS} ms; clients ${JSON.stringify(clientCounters())}; server ${JSON.stringify(server.stats().total)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** What went wrong on the client side, if anything did. */
  const clientTrouble = () => {
    const c = clientCounters();
    if (c.connect_failures > 0) return `${c.connect_failures} connections failed`;
    if (c.disconnects > 0) return `${c.disconnects} connections were closed by the server`;
    if (c.errors > 0) return `${c.errors} ERR replies`;
    const gone = workers.find((w) => w.proc.exitCode !== null || w.proc.signalCode !== null);
    if (gone) return `a client process exited (${gone.proc.exitCode ?? gone.proc.signalCode})`;
    return undefined;
  };

  after(async () => {
    for (const w of workers) w.proc.kill('SIGKILL');
    await server?.close();
  });

  it(`holds ${CONNECTIONS.toLocaleString('en-US')} receiving connections in one process, far under its fd limit`, async (t) => {
    server = startServer({ IoBackend: 'io_uring', Workgroups: WORKGROUPS, MaxConnections: 40_000 });
    assert.equal(server.io.backend, 'io_uring');
    assert.equal(server.io.note, '');
    assert.equal(server.io.maxConnections, 40_000);
    assert.ok(server.io.ringFiles > 0, JSON.stringify(server.io));
    const port = server.addresses[0].port;
    // A first connection and a round trip, so that the baseline includes what the first connection allocates once.
    const publisher = await Client.open(server);
    await publisher.command('SUB /io/warm');
    baseline = { rss: rss(), memory: total('memory_bytes'), fds: openFds('self') };

    const cfg = loadTool(
      BENCHSUB_KEYS,
      [`-DServerAddresses=127.0.0.1:${port}`, `-DSubjects=/io/s{1..${SUBJECTS}}`, `-DClients=${CONNECTIONS}`, '-DLocalAddresses=127.0.0.{2..5}', '-DMaxConnecting=500', '-DIoBackend=io_uring'],
      {},
    );
    const perProcess = CONNECTIONS / PROCESSES;
    for (let p = 0; p < PROCESSES; p++) {
      const proc = track(fork(BENCH_WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
      const worker = { proc, counters: null as Record<string, number> | null };
      proc.on('message', (m: SnapshotJSON) => (worker.counters = m.counters));
      proc.send(clientOptions(cfg, false, perProcess, p * perProcess));
      workers.push(worker);
    }

    await reach('connecting', () => sum('connected'), CONNECTIONS, clientTrouble);
    // Every connection sends its SUB as its 101 arrives: wait until the server holds them all.
    await reach('the subscriptions', () => total('subscriptions'), CONNECTIONS + 1, clientTrouble);

    const stats = server.stats().total;
    assert.ok(stats.connections >= CONNECTIONS, `server.stats().total.connections = ${stats.connections}`);
    assert.equal(stats.accept_refused, 0, 'connections refused');
    const fds = openFds('self');
    const limit = fdLimit('self');
    t.diagnostic(`server: ${stats.connections} connections, ${fds} open fds (${baseline.fds} before them), fd limit ${limit}; io ${JSON.stringify(server.io)}`);
    assert.ok(fds < 1000 && fds - baseline.fds < 100, `the server process has ${fds} fds open (${baseline.fds} before the connections)`);
    for (const w of workers) {
      const pid = w.proc.pid!;
      t.diagnostic(`client process ${pid}: ${openFds(pid)} open fds, limit ${fdLimit(pid)}, ${w.counters?.direct} direct descriptors`);
      assert.equal(w.counters?.direct, CONNECTIONS / PROCESSES, 'the client process holds its connections as direct descriptors');
      assert.ok(openFds(pid) < 1000, `the client process has ${openFds(pid)} fds open`);
    }

    // Round 1 from a client through the data plane (PUB, ACK), the others from the control plane.
    const stamp = () => String(Date.now() * 1000).padStart(16, '0');
    for (let round = 1; round <= ROUNDS; round++) {
      for (let s = 1; s <= SUBJECTS; s++) {
        if (round === 1) publisher.send(`PUB /io/s${s} r${round}s${s}\n${stamp()} round ${round}`);
        else assert.equal(server.publish(`/io/s${s}`, `${stamp()} round ${round}`), true, `no subscriber on /io/s${s}`);
      }
      if (round === 1) for (let s = 1; s <= SUBJECTS; s++) await publisher.expect(`ACK r1s${s}`);
      await reach(`the deliveries of round ${round}`, () => sum('messages_received'), CONNECTIONS * round, clientTrouble);
    }
    const c = clientCounters();
    t.diagnostic(`clients: ${JSON.stringify(c)}`);
    assert.equal(c.messages_received, CONNECTIONS * ROUNDS, 'every connection got every message, once');
    assert.equal(c.unpositioned, 0, 'a subscription got no message');
    assert.equal(c.lost, 0);
    assert.equal(c.duplicated, 0);
    assert.equal(c.connected, CONNECTIONS);
    assert.equal(clientTrouble(), undefined);
    assert.ok(total('messages_out') >= CONNECTIONS * ROUNDS, `messages_out ${total('messages_out')}`);
    assert.ok(openFds('self') < 1000, `the server process has ${openFds('self')} fds open`);
    await publisher.close();
    held = true;
  });

  it(`gives the memory back when the ${CONNECTIONS.toLocaleString('en-US')} close`, async (t) => {
    if (!held || !baseline) return t.skip('the connections were not held (see the previous test)');
    const before = baseline;
    const peak = { rss: rss(), memory: total('memory_bytes') };
    // The workers stop their engines (closing every socket) and exit when their IPC channel closes.
    for (const w of workers) if (w.proc.connected) w.proc.disconnect();
    await Promise.all(
      workers.map((w) => within(new Promise((r) => (w.proc.exitCode !== null || w.proc.signalCode !== null ? r(null) : w.proc.once('exit', r))), 'a client process to exit')),
    );
    await reach('the connections to close', () => -total('connections'), 0);
    assert.equal(total('subscriptions'), 0);
    const mb = (b: number) => `${(b / MB).toFixed(2)} MB`;
    const observed = () =>
      `memory_bytes ${mb(before.memory)} before, ${mb(peak.memory)} holding them, ${mb(total('memory_bytes'))} now; ` +
      `RSS ${mb(before.rss)} before, ${mb(peak.rss)} holding them, ${mb(rss())} now`;
    // The accounted memory: back to the baseline but for the pools of spare output queues, whose size is fixed
    // (each workgroup keeps up to QUEUE_POOL of them for reuse). Anything kept per connection, 12 bytes or more,
    // would exceed this.
    await waitFor('memory_bytes to come back', () => total('memory_bytes') - before.memory <= WORKGROUPS * QUEUE_POOL * QUEUE_BYTES, observed);
    // The RSS: back within the slack the hostile suites allow (the allocator and V8 keep some).
    await waitFor('the RSS to come back', () => rss() <= before.rss + RSS_SLACK, observed);
    t.diagnostic(observed());
  });
});
