// A real redis-server for the cluster suites (ClusterEngine = redis): Debian's package (`apt-get install
// redis-server`, /usr/bin/redis-server, 7.0 on Debian 12), run as a child process on 127.0.0.1 and a free port,
// in a temporary directory, never daemonized, with no RDB snapshots (`--save ''`) and the append-only file only
// when a test asks for it. Commands go over plain sockets in RESP (no Redis client library): `cli` returns the
// raw reply, `command` the decoded one. Every server a test file started is killed, and its directory removed,
// when the file ends (node:test `after`), and killed at the latest when the process exits.
//
//   describeWithRedis('the cluster link', {}, () => {
//     it('publishes through Redis', async () => {
//       const redis = await startRedis();
//       const server = startServer({ ClusterEngine: 'redis', ClusterRedis: redis.url });
//       ...
//       await redis.restart();   // same port, same directory: with appendonly, same data
//     });
//   });
import { after } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeWith, freePort, type NeededProgram } from './helpers';

/** How long a redis-server may take to answer PING after it was started (loading an append-only file included). */
export const REDIS_START_TIMEOUT_MS = 15_000;
/** How long a stop() waits for redis-server to exit after its signal before it kills it (SIGKILL). */
const REDIS_STOP_TIMEOUT_MS = 10_000;
/** How long one command (connect, send, whole reply) may take: generous, CI machines have 2 cores. */
const REDIS_COMMAND_TIMEOUT_MS = 10_000;
/** Between two PINGs while waiting for a starting server. */
const READY_POLL_MS = 20;
/** Free ports picked for a server that another process took first: tried this many times before giving up. */
const PORT_ATTEMPTS = 5;
/** The last lines of a server's output kept for error messages. */
const OUTPUT_LINES = 30;

/** Where redis-server is: STARLING_REDIS_SERVER, else the first in PATH, /usr/bin or /usr/sbin; null if nowhere. */
export function redisServerPath(): string | null {
  const given = process.env.STARLING_REDIS_SERVER;
  if (given) return fs.existsSync(given) ? given : null;
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/bin', '/usr/sbin', '/usr/local/bin']) {
    const file = path.join(dir, 'redis-server');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

/** For describeWith: redis-server, as Debian packages it. */
export const NEEDS_REDIS: NeededProgram = { program: 'redis-server', path: redisServerPath(), install: 'apt-get install redis-server' };

/**
 * describe() for a suite that needs redis-server (the project's rule, test/helpers.ts describeWith): without it,
 * outside CI the suite is skipped with one line, "redis-server is not installed (apt-get install redis-server)";
 * with CI=true it fails with that line. HIDE_TEST_PROGRAMS=redis-server makes an installed one count as missing.
 */
export function describeWithRedis(name: string, options: { timeout?: number }, fn: () => void): void {
  describeWith(NEEDS_REDIS, name, options, fn);
}

export interface RedisOptions {
  /** Write every command to an append-only file, fsynced before each reply (`--appendonly yes --appendfsync
   * always`): what was acknowledged survives kill9(). Default false: nothing survives a stop. */
  appendonly?: boolean;
  /** The port; default a free one, picked once (restart() keeps it). */
  port?: number;
  /** The working directory (append-only files); default a new temporary directory, removed when the file ends.
   * A given directory is kept. */
  dir?: string;
  /** `--requirepass`: the default user's password. The kit authenticates its own commands with it, and `url`
   * carries it. */
  password?: string;
  /** `--replicaof 127.0.0.1 <port>`: a replica of the server on that port. */
  replicaOf?: number;
  /** More redis-server options, as arguments: `['--maxmemory', '10mb']`. */
  args?: string[];
}

/** A decoded RESP2 reply: simple and bulk strings, integers, nil (null), arrays; an error reply is a RedisReplyError. */
export type RespValue = string | number | null | RespValue[] | RedisReplyError;

/** An error reply (`-ERR ...`, `-NOAUTH ...`): its text without the leading '-'. */
export class RedisReplyError extends Error {
  constructor(readonly reply: string) {
    super(reply);
    this.name = 'RedisReplyError';
  }
}

export interface RedisInstance {
  /** The TCP port, the same across restart(). */
  readonly port: number;
  /** `redis://127.0.0.1:<port>` (`redis://:<password>@...` with a password): a ClusterRedis value. */
  readonly url: string;
  /** The working directory. */
  readonly dir: string;
  /** The process id of the running redis-server (of the latest start). */
  readonly pid: number;
  /** Whether the process runs (started, not yet exited; a frozen one runs). */
  readonly running: boolean;
  /** The last lines redis-server wrote (its log), for a failing test's message. */
  output(): string;
  /** Sends `signal` (SIGTERM: a clean shutdown) and resolves once the process exited; SIGKILL after 10 s. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL, at once: a crash. restart() waits for the exit. */
  kill9(): void;
  /** SIGSTOP: the process stays, its sockets stay open, nothing is answered (a hung server); thaw() resumes it. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  /** Stops it (SIGTERM) if it runs, then starts it again on the same port and directory, and waits for PING. */
  restart(): Promise<void>;
  /** One command over a fresh connection (authenticated with the password, if any): the raw RESP reply, error
   * replies included, e.g. "+PONG\r\n". */
  cli(...args: string[]): Promise<string>;
  /** One command over a fresh connection: the decoded reply; rejects with RedisReplyError on an error reply. */
  command(...args: string[]): Promise<RespValue>;
}

/** Every server started by this test file, killed (and its own directory removed) when the file ends. */
const started = new Set<{ kill(): void; cleanup(): void }>();
after(() => {
  for (const s of started) {
    s.kill();
    s.cleanup();
  }
  started.clear();
});
// The last resort: a test process that ends without `after` (an uncaught error) leaves no redis-server behind.
process.once('exit', () => {
  for (const s of started) s.kill();
});

/**
 * Starts redis-server and resolves once it answers PING. Rejects with its output when it exits first or does
 * not answer within REDIS_START_TIMEOUT_MS; with a port of its own choosing it tries another free port when the
 * one picked was taken meanwhile.
 */
export async function startRedis(opts: RedisOptions = {}): Promise<RedisInstance> {
  const exe = redisServerPath();
  if (!exe) throw new Error(`${NEEDS_REDIS.program} is not installed (${NEEDS_REDIS.install})`);
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'starling-redis-'));
  let port = opts.port ?? 0;
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let lines: string[] = [];

  const args = (): string[] => [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', opts.appendonly ? 'yes' : 'no',
    ...(opts.appendonly ? ['--appendfsync', 'always'] : []),
    '--dir', dir,
    '--daemonize', 'no',
    '--logfile', '',
    // DEBUG SLEEP, DEBUG RELOAD and friends, from loopback only (Redis 7 turns DEBUG off by default).
    '--enable-debug-command', 'local',
    // A replica's first synchronisation at once, not after the default 5 s wait for more replicas to join it.
    '--repl-diskless-sync-delay', '0',
    ...(opts.password !== undefined ? ['--requirepass', opts.password] : []),
    ...(opts.replicaOf !== undefined ? ['--replicaof', '127.0.0.1', String(opts.replicaOf)] : []),
    ...(opts.args ?? []),
  ];

  /** Spawns redis-server on `port` and waits for PING; rejects (the process killed) when it does not come up. */
  const launch = async (): Promise<void> => {
    lines = [];
    const c = spawn(exe, args(), { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    let exitedWith: string | null = null;
    exited = new Promise((resolve) => {
      c.once('exit', (code, signal) => {
        exitedWith = signal ? `signal ${signal}` : `code ${code}`;
        resolve();
      });
      c.once('error', (e) => {
        exitedWith = e.message;
        resolve();
      });
    });
    const keep = (chunk: Buffer) => {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.trim() !== ''));
      if (lines.length > OUTPUT_LINES) lines = lines.slice(-OUTPUT_LINES);
    };
    c.stdout!.on('data', keep);
    c.stderr!.on('data', keep);
    const deadline = Date.now() + REDIS_START_TIMEOUT_MS;
    for (;;) {
      if (exitedWith !== null) throw new Error(`redis-server on port ${port} exited (${exitedWith}) before answering PING:\n${lines.join('\n')}`);
      const reply = await exchange(port, ['PING'], opts.password, READY_POLL_MS * 25).then((b) => b.toString('utf8'), () => null);
      if (reply === '+PONG\r\n') return;
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        await exited;
        throw new Error(`redis-server on port ${port} did not answer PING within ${REDIS_START_TIMEOUT_MS} ms (last: ${JSON.stringify(reply)}):\n${lines.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, READY_POLL_MS));
    }
  };

  const entry = {
    kill: () => {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    cleanup: () => {
      if (ownDir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  started.add(entry);

  for (let attempt = 1; ; attempt++) {
    if (opts.port === undefined) port = await freePort();
    try {
      await launch();
      break;
    } catch (e) {
      const taken = /Address already in use/.test((e as Error).message);
      if (opts.port !== undefined || !taken || attempt >= PORT_ATTEMPTS) {
        entry.cleanup();
        started.delete(entry);
        throw e;
      }
    }
  }

  const running = () => child !== null && child.exitCode === null && child.signalCode === null;
  const signal = (s: NodeJS.Signals) => {
    if (running()) child!.kill(s);
  };
  const stop = async (s: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (!running()) return exited;
    const c = child!;
    c.kill(s);
    // A frozen process takes no SIGTERM until it runs again.
    if (s !== 'SIGKILL') c.kill('SIGCONT');
    const timer = setTimeout(() => c.kill('SIGKILL'), REDIS_STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  };
  const auth = opts.password !== undefined ? `:${encodeURIComponent(opts.password)}@` : '';

  return {
    get port() {
      return port;
    },
    url: `redis://${auth}127.0.0.1:${port}`,
    dir,
    get pid() {
      return child?.pid ?? -1;
    },
    get running() {
      return running();
    },
    output: () => lines.join('\n'),
    stop,
    kill9: () => signal('SIGKILL'),
    freeze: () => signal('SIGSTOP'),
    thaw: () => signal('SIGCONT'),
    async restart() {
      await stop('SIGTERM');
      await launch();
    },
    cli: async (...command: string[]) => (await exchange(port, command, opts.password)).toString('utf8'),
    async command(...command: string[]) {
      const value = parseResp(await exchange(port, command, opts.password), 0)!.value;
      if (value instanceof RedisReplyError) throw value;
      return value;
    },
  };
}

/** `args` as a RESP array of bulk strings (what redis-cli sends). */
export function encodeCommand(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(a, 'utf8')}\r\n${a}\r\n`);
  return Buffer.from(parts.join(''), 'utf8');
}

/**
 * One RESP2 value at `offset` of `buf`: the value and the offset after it, or undefined while it is incomplete.
 * Throws on bytes that are not RESP2.
 */
export function parseResp(buf: Buffer, offset: number): { value: RespValue; end: number } | undefined {
  const eol = buf.indexOf('\r\n', offset);
  if (eol < 0) return undefined;
  const line = buf.toString('utf8', offset + 1, eol);
  switch (buf[offset]) {
    case 0x2b: // +
      return { value: line, end: eol + 2 };
    case 0x2d: // -
      return { value: new RedisReplyError(line), end: eol + 2 };
    case 0x3a: // :
      return { value: Number(line), end: eol + 2 };
    case 0x24: { // $
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return undefined;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case 0x2a: { // *
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      const items: RespValue[] = [];
      let at = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parseResp(buf, at);
        if (!item) return undefined;
        items.push(item.value);
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new Error(`not a RESP2 reply: ${JSON.stringify(buf.toString('latin1', offset, Math.min(buf.length, offset + 80)))}`);
  }
}

/**
 * Connects to 127.0.0.1:`port`, sends `command` (after AUTH with `password`, pipelined) and resolves with the bytes
 * of the reply to `command`; rejects when the connection fails, closes first or takes longer than `ms`.
 */
function exchange(port: number, command: readonly string[], password?: string, ms = REDIS_COMMAND_TIMEOUT_MS): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const authenticate = password !== undefined;
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | null, reply?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new Error(`redis 127.0.0.1:${port}: no reply to ${command[0]} within ${ms} ms`)), ms);
    socket.once('connect', () => {
      socket.write(Buffer.concat([...(authenticate ? [encodeCommand(['AUTH', password!])] : []), encodeCommand(command)]));
    });
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        let at = 0;
        if (authenticate) {
          const auth = parseResp(buf, 0);
          if (!auth) return;
          if (auth.value instanceof RedisReplyError) return finish(new Error(`redis 127.0.0.1:${port}: AUTH refused: ${auth.value.reply}`));
          at = auth.end;
        }
        const reply = parseResp(buf, at);
        if (reply) finish(null, buf.subarray(at, reply.end));
      } catch (e) {
        finish(e as Error);
      }
    });
    socket.once('error', (e) => finish(new Error(`redis 127.0.0.1:${port}: ${e.message}`)));
    socket.once('close', () => finish(new Error(`redis 127.0.0.1:${port}: the connection closed before the reply to ${command[0]}`)));
  });
}
