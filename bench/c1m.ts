// W3/W4 at scale (BENCHMARKS.md): as many idle subscribed connections as this machine lets one Starling
// process hold, then the C1M message pattern on them (one message per subscriber per minute). Before it
// starts, it checks every limit that bounds the scale and says exactly which one binds and how to lift it.
//
//   node dist/bench/c1m.js [--target 1000000] [--minutes 1] [--backend io_uring|epoll] [--tune] [--set Key=Value,...]
//                          [--out bench/results]
//
// With the io_uring backend (the default where the kernel allows it) the server's connections are direct
// descriptors, so the fd limit no longer binds one server process; the subscribers are then held the same way,
// in one benchsub process (IoBackend = io_uring). With epoll, the subscribers are spread over benchsub worker
// processes of PER_PROCESS connections each. --tune applies the kernel profile (`starling tune --apply`, as
// root) for the run and puts every value back afterwards; --set adds server settings (e.g. KeepAlive=0).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addon } from '../src/native';
import { applyProfile, loadProfile, profileFile, readSysctl, sysctlPath } from '../src/tune';
import { describeMachine, type RunSummary } from './report';
import { startServer } from './servers';
import { rssBytes, sleep } from './tools';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const PORT = 8820;
// Descriptors a server process keeps for itself (listeners, epoll, eventfds, node's own) below its limit.
const FD_RESERVE = 200;
// Source addresses for the subscribers: each gives ~28,000 ephemeral ports toward one server port.
const LOCAL_ADDRESSES = 100;
// With epoll, benchsub forks a worker per this many connections (each worker has its own fd table).
const PER_PROCESS = 15000;
// With io_uring, one benchsub process of this many native threads holds every subscriber (two: the cores here).
const CLIENT_THREADS = 2;
// Connection attempts in flight per benchsub worker: with tens of workers on two cores, their default (1,000
// each) puts tens of thousands of handshakes in flight at once, more than the server's CPU share answers
// within the handshake timeout; 100 each keeps a few thousand in flight.
const MAX_CONNECTING = 100;
// The server's monitoring port: its counters (refusals, handshake timeouts) go into the result.
const MONITOR_PORT = 8921;
// Kernel memory per idle TCP socket measured on these machines (tuning issue: ~3.8 KB); both ends are local.
const KERNEL_BYTES_PER_SOCKET = 3800;

interface Limit {
  name: string;
  allows: number;
  fix: string;
}

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function hardNoFile(): number {
  const m = /Max open files\s+\d+\s+(\d+|unlimited)/.exec(read('/proc/self/limits'));
  return m ? (m[1] === 'unlimited' ? Infinity : Number(m[1])) : NaN;
}

/** Every limit on the number of connections one server process can hold here, with its fix. */
export function limits(backend: 'epoll' | 'io_uring'): Limit[] {
  const out: Limit[] = [];
  const hard = hardNoFile();
  if (backend === 'epoll') {
    out.push({
      name: `RLIMIT_NOFILE hard limit of a process (${hard})`,
      allows: hard - FD_RESERVE,
      fix: 'raise it (LimitNOFILE= in the systemd unit, or /etc/security/limits.conf) — needs CAP_SYS_RESOURCE; or --backend io_uring',
    });
    const nrOpen = Number(read('/proc/sys/fs/nr_open'));
    out.push({ name: `fs.nr_open (${nrOpen})`, allows: nrOpen - FD_RESERVE, fix: 'sysctl -w fs.nr_open=2100000' });
  } else {
    out.push({
      name: `RLIMIT_NOFILE hard limit of a process (${hard}): not a limit with io_uring (direct descriptors, one ring table of ${hard} per ${hard} connections)`,
      allows: Infinity,
      fix: '–',
    });
  }
  const fileMax = Number(read('/proc/sys/fs/file-max'));
  out.push({ name: `fs.file-max (${fileMax}), for both ends on this machine`, allows: Math.floor(fileMax / 2), fix: 'sysctl -w fs.file-max=4200000' });
  const [lo, hi] = read('/proc/sys/net/ipv4/ip_local_port_range').split(/\s+/).map(Number);
  out.push({
    name: `ephemeral ports ${lo}-${hi} × ${LOCAL_ADDRESSES} source addresses`,
    allows: (hi - lo + 1) * LOCAL_ADDRESSES,
    fix: 'sysctl -w net.ipv4.ip_local_port_range="1024 65535", or more source addresses',
  });
  const memKb = Number(/MemAvailable:\s+(\d+)/.exec(read('/proc/meminfo'))?.[1] ?? NaN);
  out.push({
    name: `available memory (${Math.round(memKb / 1024)} MiB) at ~${(2 * KERNEL_BYTES_PER_SOCKET) / 1000} KB of kernel memory per connection (both ends) plus Starling's ~0.3 KB`,
    allows: Math.floor((memKb * 1024) / (2 * KERNEL_BYTES_PER_SOCKET + 300)),
    fix: 'more memory, or smaller socket buffers (net.ipv4.tcp_rmem/tcp_wmem = 1024 4096 16384)',
  });
  return out;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  const target = Number(opt('--target', '1000000'));
  const backend = opt('--backend', addon.ioUring().unavailable ? 'epoll' : 'io_uring') as 'epoll' | 'io_uring';
  if (backend !== 'epoll' && backend !== 'io_uring') throw new Error(`--backend: epoll or io_uring, not ${backend}`);
  if (backend === 'io_uring' && addon.ioUring().unavailable) throw new Error(`--backend io_uring: ${addon.ioUring().unavailable}`);
  const minutes = Number(opt('--minutes', '1'));
  const outDir = opt('--out', path.join(ROOT, 'bench', 'results'));
  const restore = args.includes('--tune') ? tuneKernel() : [];
  try {
    await run(args, target, backend, minutes, outDir, restore.length > 0);
  } finally {
    for (const [key, value] of restore) {
      try {
        fs.writeFileSync(sysctlPath(key), value);
      } catch (e) {
        console.error(`c1m: could not put ${key} back to ${value}: ${(e as Error).message}`);
      }
    }
    if (restore.length) console.log(`c1m: ${restore.length} kernel settings put back`);
  }
}

/** Applies the server kernel profile; returns the values to put back (those it changed). */
function tuneKernel(): [string, string][] {
  const profile = loadProfile(profileFile('server'));
  const before = new Map(profile.settings.map((s) => [s.key, readSysctl(s.key)]));
  const outcomes = applyProfile(profile);
  for (const o of outcomes) console.log(`tune: ${o.key} ${o.status}${o.before !== undefined ? ` (was ${o.before})` : ''}${o.reason ? `: ${o.reason}` : ''}`);
  const failed = outcomes.filter((o) => o.status === 'failed');
  const changed = outcomes.filter((o) => o.status === 'changed').map((o): [string, string] => [o.key, before.get(o.key)!]);
  if (failed.length) {
    for (const [key, value] of changed) fs.writeFileSync(sysctlPath(key), value);
    throw new Error(`--tune: ${failed.map((o) => `${o.key}: ${o.reason}`).join('; ')}`);
  }
  return changed;
}

async function run(args: string[], target: number, backend: 'epoll' | 'io_uring', minutes: number, outDir: string, tuned: boolean): Promise<void> {

  const i = args.indexOf('--set');
  const extra = i >= 0 ? args[i + 1] : '';
  const all = limits(backend);
  const binding = all.reduce((a, b) => (b.allows < a.allows ? b : a));
  const clients = Math.max(1, Math.min(target, binding.allows));
  const lines = [`# C1M scaled (W3 + W4) ${new Date().toISOString().slice(0, 10)}`, ''];
  const m = describeMachine();
  lines.push(`- Machine: ${m.host}, ${m.cpus} × ${m.cpuModel}, ${m.memGiB} GiB; kernel ${m.kernel}; Node ${m.node}`);
  lines.push(`- Command: \`node dist/bench/c1m.js ${args.join(' ')}\``, '', '## Limits on one server process', '');
  lines.push('| limit | allows | how to lift it |', '|---|---|---|');
  for (const l of all) lines.push(`| ${l.name} | ${Number.isFinite(l.allows) ? l.allows : '∞'} | ${l.fix} |`);
  lines.push('', `Server backend: ${backend}. Target ${target}; the binding limit is **${binding.name}**, so this run holds ${clients} connections.`);
  lines.push(`Kernel profile (tuning/sysctl-server.conf): ${tuned ? 'applied for the run (--tune), put back afterwards' : 'as the machine was (no --tune)'}.`);
  const direct = backend === 'io_uring';
  lines.push(
    direct
      ? `Subscribers: one benchsub process, ${CLIENT_THREADS} threads, holding its connections as io_uring direct descriptors (IoBackend = io_uring).`
      : `Subscribers: benchsub worker processes of ${PER_PROCESS} connections (epoll).`,
  );
  console.log(lines.join('\n'));

  const server = await startServer(
    `starling:IoBackend=${backend},MaxConnections=${clients + 1000},Monitor=HTTP,MonitorHTTP.Listen=127.0.0.1:${MONITOR_PORT}${extra ? `,${extra}` : ''}`,
    PORT,
  );
  await sleep(1000); // let the fresh process settle before the RSS baseline
  const before = rssBytes(server.pid!);
  const slabBefore = slabBytes();
  const cachesBefore = slabCaches();
  const connectStart = Date.now();
  const rate = clients / 60;
  const output = path.join(fs.mkdtempSync('/tmp/starling-c1m-'), 'w4');
  const sub = spawn(
    process.execPath,
    [CLI, 'benchsub', `-DServerAddresses=127.0.0.1:${PORT}`, `-DClients=${clients}`, `-DSubjects=/p/s{1..${clients}}`, '-DOneToOne=true',
      `-DLocalAddresses=127.0.0.{2..${LOCAL_ADDRESSES + 1}}`, '-DWarmup=5', `-DDuration=${minutes * 60}`,
      ...(direct
        ? ['-DIoBackend=io_uring', `-DConnectionsPerProcess=${clients}`, `-DThreads=${CLIENT_THREADS}`]
        : [`-DConnectionsPerProcess=${PER_PROCESS}`, `-DMaxConnecting=${MAX_CONNECTING}`]),
      '-DReportInterval=5', `-DServerPid=${server.pid}`, `-DOutput=${output}`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let connectedAt = 0;
  sub.stdout!.on('data', (d: Buffer) => {
    process.stdout.write(d);
    if (!connectedAt && /^connected:/m.test(d.toString())) connectedAt = Date.now();
  });
  const subDone = new Promise((r) => sub.once('exit', r));
  while (!connectedAt) await sleep(500);
  const connectSeconds = (connectedAt - connectStart) / 1000;
  await sleep(2000);
  const after = rssBytes(server.pid!);
  const slabAfter = slabBytes();
  const cachesAfter = slabCaches();
  const clientRss = direct ? rssBytes(sub.pid!) : NaN;
  const net0 = loopbackBytes();
  const net0At = Date.now();
  const pub = spawn(process.execPath, [CLI, 'benchpub', `-DServerAddresses=127.0.0.1:${PORT}`, `-DSubjects=/p/s{1..${clients}}`, '-DPublishers=4', `-DFrequency=${rate.toFixed(1)}`], { stdio: 'ignore' });
  await subDone;
  const net1 = loopbackBytes();
  const counters = await serverCounters();
  const netSeconds = (Date.now() - net0At) / 1000;
  pub.kill('SIGTERM');
  await server.stop();
  const run = JSON.parse(fs.readFileSync(output + '.json', 'utf8')) as RunSummary;
  lines.push('', '## Result', '');
  lines.push(`- Connections held: ${run.totals.connections} of ${clients} (disconnects during the window: ${run.totals.disconnects ?? 0})`);
  lines.push(`- Connect: ${clients} subscribers in ${connectSeconds.toFixed(1)} s (${Math.round(clients / connectSeconds)}/s)`);
  lines.push(`- Server memory per idle subscribed connection: ${Math.round((after - before) / clients)} bytes (RSS delta)`);
  lines.push(`- Kernel memory per socket: ${Math.round((slabAfter - slabBefore) / (2 * clients))} bytes (/proc/meminfo Slab delta over ${2 * clients} sockets, both ends on this machine); by cache (/proc/slabinfo, objects × size, per socket): ${slabGrowth(cachesBefore, cachesAfter, 2 * clients)}`);
  if (direct) lines.push(`- Subscriber process (benchsub) RSS: ${(clientRss / 2 ** 20).toFixed(0)} MiB, ${Math.round(clientRss / clients)} bytes per connection`);
  lines.push(`- Loopback bandwidth during the window: ${(((net1 - net0) * 8) / netSeconds / 1e6).toFixed(1)} Mbit/s (/proc/net/dev, lo, bytes received)`);
  lines.push(`- W4 pattern: ${rate.toFixed(1)} msg/s offered (one per subscriber per minute), ${run.totals.ratePerSecond.toFixed(1)} delivered/s`);
  lines.push(`- Latency ms: p50 ${(run.latency.p50 ?? NaN) / 1000}, p99 ${(run.latency.p99 ?? NaN) / 1000}, max ${(run.latency.max ?? NaN) / 1000}`);
  lines.push(`- Server CPU per message: ${run.totals.serverCpuMicrosPerMessage?.toFixed(1) ?? '–'} µs`);
  lines.push(`- Server counters at the end (/stats): ${counters}`);
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `c1m-${new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-')}.md`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  console.log(`wrote ${file}`);
}

/** The server's connection counters from its monitoring port, as one line. */
async function serverCounters(): Promise<string> {
  try {
    const stats = (await (await fetch(`http://127.0.0.1:${MONITOR_PORT}/stats`)).json()) as Record<string, unknown>;
    const wanted = ['connections', 'accepted', 'accept_refused', 'http_errors', 'handshakes', 'keepalive_closes', 'slow_consumer_closes', 'memory_bytes'];
    const found: string[] = [];
    const visit = (o: unknown): void => {
      if (!o || typeof o !== 'object') return;
      for (const [k, v] of Object.entries(o)) {
        if (wanted.includes(k) && typeof v === 'number' && !found.some((f) => f.startsWith(`${k} `))) found.push(`${k} ${v}`);
        else visit(v);
      }
    };
    visit(stats);
    return found.join(', ');
  } catch (e) {
    return `unavailable (${(e as Error).message})`;
  }
}

/** Kernel slab memory (SReclaimable + SUnreclaim), bytes. */
function slabBytes(): number {
  return Number(/\nSlab:\s+(\d+)/.exec(read('/proc/meminfo'))?.[1] ?? NaN) * 1024;
}

/** Bytes per slab cache (active objects × object size) from /proc/slabinfo; empty where it is not readable. */
function slabCaches(): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of read('/proc/slabinfo').split('\n').slice(2)) {
    const f = line.split(/\s+/);
    if (f.length > 3) out.set(f[0], Number(f[1]) * Number(f[3]));
  }
  return out;
}

/** The caches that grew most, as "name N B" per socket. */
function slabGrowth(before: Map<string, number>, after: Map<string, number>, sockets: number): string {
  const grown = [...after].map(([name, bytes]) => [name, bytes - (before.get(name) ?? 0)] as const).filter(([, d]) => d > 0);
  grown.sort((a, b) => b[1] - a[1]);
  return grown.length ? grown.slice(0, 8).map(([name, d]) => `${name} ${Math.round(d / sockets)} B`).join(', ') : 'unreadable';
}

/** Bytes received on the loopback interface since boot (/proc/net/dev). */
function loopbackBytes(): number {
  const line = read('/proc/net/dev').split('\n').find((l) => l.trim().startsWith('lo:'));
  return line ? Number(line.trim().split(/\s+/)[1]) : NaN;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
