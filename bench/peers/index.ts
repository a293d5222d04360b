// The peer servers the benchmarks compare Starling against, and how to run one as a child process whose pid is the
// server itself (so /proc/<pid>/stat gives its CPU and /proc/<pid>/status its RSS).
//
//   const peer = await startPeer('uws', 0);   // port 0: the peer picks one; peer.port says which
//   ...                                      // benchmark against ws://127.0.0.1:<peer.port>/
//   await peer.stop();
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { natsReady, natsServerPath, writeNatsConfig } from './nats';

export type PeerName = 'uws' | 'ws' | 'nats';

export interface PeerSpec {
  /** What a benchmark client speaks to it: `plain` (SUB/PUB lines, see ./uws) or `nats` (see the notes in ./nats). */
  dialect: 'plain' | 'nats';
  /** The executable, spawned directly: the process is the server, not a wrapper. */
  command: string;
  /** Its arguments for listening on host:port (port 0: it picks); `dir` is a private temporary directory for files. */
  args(host: string, port: number, dir: string): string[];
  /** How it says it is ready: `ready-line` — prints `ready <port>` on stdout; `nats-log` — nats-server's log line. */
  ready: 'ready-line' | 'nats-log';
  /** The signal after which it shuts down and exits 0. */
  stopSignal: NodeJS.Signals;
}

/** A Node peer in this directory (compiled: dist/bench/peers/<name>.js). */
function nodePeer(name: string): PeerSpec {
  const script = path.join(__dirname, `${name}.js`);
  return {
    dialect: 'plain',
    command: process.execPath,
    args: (host, port) => [script, '--port', String(port), '--host', host],
    ready: 'ready-line',
    stopSignal: 'SIGTERM',
  };
}

export const PEERS: Record<PeerName, PeerSpec> = {
  /** uWebSockets.js 20.30 and its native pub/sub. */
  uws: nodePeer('uws'),
  /** ws 8 with a Map of subject → Set of sockets. */
  ws: nodePeer('ws'),
  /** nats-server 2.9 (Debian) with a WebSocket listener, from a config file written into `dir`. */
  nats: {
    dialect: 'nats',
    command: natsServerPath() ?? 'nats-server',
    args: (host, port, dir) => writeNatsConfig(dir, host, port),
    ready: 'nats-log',
    // nats-server shuts down the same way on SIGTERM and SIGINT, but exits 1 after SIGTERM.
    stopSignal: 'SIGINT',
  },
};

export function isPeerName(name: string): name is PeerName {
  return Object.prototype.hasOwnProperty.call(PEERS, name);
}

export interface PeerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RunningPeer {
  name: PeerName;
  dialect: PeerSpec['dialect'];
  /** The server process (for nats: nats-server itself). */
  pid: number;
  host: string;
  port: number;
  /** Resolves once the process has exited. */
  exited: Promise<PeerExit>;
  /** Stops it with its stop signal (SIGKILL if it is still there after `graceMs`, 10 s by default), waits for the
   * exit (see `exited` for how it ended) and removes its temporary files. Safe to call more than once. */
  stop(graceMs?: number): Promise<void>;
  /** The end of what it wrote on stderr (nats-server's log goes there). */
  stderrTail(): string;
}

export interface StartOptions {
  /** Address to listen on; 127.0.0.1 by default. */
  host?: string;
  /** How long to wait for it to be ready; 15 s by default. */
  readyTimeoutMs?: number;
}

const TAIL = 16 * 1024;
const live = new Set<() => void>();
let exitHook = false;

/** Starts peer `name` (a PeerName) listening on `port` (0: it picks) and resolves once it accepts connections. */
export async function startPeer(name: string, port: number, options: StartOptions = {}): Promise<RunningPeer> {
  if (!isPeerName(name)) throw new Error(`unknown peer ${name} (known: ${Object.keys(PEERS).join(', ')})`);
  const spec = PEERS[name];
  const host = options.host ?? '127.0.0.1';
  const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
  if (name === 'nats' && !natsServerPath()) throw new Error('nats-server not found (apt-get install -y nats-server)');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `starling-peer-${name}-`));
  const removeDir = (): void => fs.rmSync(dir, { recursive: true, force: true });
  let child;
  try {
    child = spawn(spec.command, spec.args(host, port, dir), { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    removeDir();
    throw err;
  }
  const pid = child.pid;

  let tail = '';
  const keepTail = (chunk: Buffer): void => {
    tail = (tail + chunk.toString()).slice(-TAIL);
  };
  const exited = new Promise<PeerExit>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(killNow);
      removeDir();
      resolve({ code, signal });
    });
  });
  const killNow = (): void => {
    child.kill('SIGKILL');
    removeDir();
  };
  live.add(killNow);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const kill of live) kill();
    });
  }
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
  spawnError.catch(() => {}); // raced below; later errors (a failed kill) are not fatal
  if (pid === undefined) {
    live.delete(killNow);
    removeDir();
    await spawnError;
  }

  let stopping: Promise<void> | null = null;
  const stop = (graceMs = 10_000): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(spec.stopSignal);
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      await exited;
    })();
    return stopping;
  };

  try {
    let ready: Promise<number>;
    if (spec.ready === 'nats-log') {
      child.stdout.on('data', keepTail);
      ready = natsReady(child, host, keepTail, readyTimeoutMs);
    } else {
      child.stderr.on('data', keepTail);
      ready = readyLine(child.stdout, exited, readyTimeoutMs, () => tail);
    }
    const actual = await Promise.race([ready, spawnError]);
    return { name, dialect: spec.dialect, pid: pid as number, host, port: actual, exited, stop, stderrTail: () => tail };
  } catch (err) {
    await stop(1000);
    throw new Error(`peer ${name}: ${(err as Error).message}`);
  }
}

/** Waits for the single `ready <port>` line on `stdout`, then keeps draining it. */
function readyLine(
  stdout: NodeJS.ReadableStream,
  exited: Promise<PeerExit>,
  timeoutMs: number,
  stderr: () => string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${why}; stdout: ${JSON.stringify(out.slice(0, 500))}; stderr:\n${stderr().slice(-2000)}`));
    };
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    exited.then((e) => fail(`exited (${e.signal ?? e.code}) before it was ready`));
    stdout.on('data', (chunk: Buffer) => {
      if (settled) return;
      out += chunk.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const m = /^ready (\d+)$/.exec(out.slice(0, nl));
      if (!m) return fail('expected `ready <port>` as its first line');
      settled = true;
      clearTimeout(timer);
      resolve(Number(m[1]));
    });
  });
}
