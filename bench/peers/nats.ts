/**
 * Peer: Debian's `nats-server` (2.9) with a WebSocket listener. Not a Node server: this file writes a config file
 * and runs nats-server itself (startPeer in ./index spawns nats-server directly, so that the measured pid is the
 * server's own; `node dist/bench/peers/nats.js --port <p> [--host 127.0.0.1]` is a wrapper for running it by hand:
 * it prints `ready <port>` once the WebSocket port accepts connections and passes SIGTERM/SIGINT on).
 *
 * The config (see natsConfig): WebSocket on host:port without TLS or compression, the TCP client port on a random
 * port of the same host (unused), max_payload 1 MiB, max_pending 64 MiB (the default: the per-connection outbound
 * buffer before a slow consumer is cut), write_deadline 10 s (the default), max_connections 1,000,000. Everything
 * else is nats-server's default; no auth.
 *
 * NATS does not speak the plain dialect. A client speaks the NATS client protocol (https://docs.nats.io/reference/
 * reference-protocols/nats-protocol), carried as a byte stream inside WebSocket data frames. Verified against
 * nats-server 2.9.10 with a `ws` client and a raw-socket client:
 *
 * Handshake
 *   - `GET <any path> HTTP/1.1` with the usual Upgrade/Connection/Sec-WebSocket-Key/Sec-WebSocket-Version: 13.
 *     Any path works except ones starting with /leafnode or /mqtt. No subprotocol.
 *   - Send nothing until the `101` response has arrived: bytes pipelined behind the request ("client sent data before
 *     handshake is complete") make the server drop the connection.
 *   - Do NOT send a `User-Agent` starting with `Mozilla/`: that marks the client as a browser and the server then cuts
 *     its output into frames of at most 4096 bytes, splitting MSGs across frames.
 *   - Optional: header `Nats-No-Masking: true` (echoed in the 101) lets the client send UNMASKED frames; without it,
 *     an unmasked frame is a protocol error ("mask bit missing").
 *   - The server's first frame, `INFO {...}\r\n`, may arrive in the same TCP read as the 101 response.
 *
 * Frames
 *   - Server → client: always BINARY (opcode 2), FIN set, unmasked, never compressed (compression is off).
 *     One frame carries whatever the connection had pending when its writer flushed: several protocol messages per
 *     frame is normal (observed: 30 `MSG`s in one 18,570-byte frame), and a frame always ends on a message boundary
 *     for a non-browser client. Still, parse the frame payloads as one continuous stream (the NATS docs say a frame
 *     is not guaranteed to hold whole protocol messages).
 *   - Client → server: binary (what the docs require) or text (2.9 accepts both); masked unless Nats-No-Masking.
 *     The server concatenates frame payloads into one stream: a frame may hold several protocol messages, and one
 *     message may be split over several frames (both verified).
 *   - Server-side WebSocket pings/pongs: the server answers a WS ping with a pong and sends no WS pings itself.
 *   - Closing: send a Close frame WITH a status code (1000). For a close without a code, nats-server answers with
 *     status 1005, and it closes stale connections with 1006; both are illegal on the wire, and strict clients
 *     (like `ws`) report a protocol error. Simply closing the TCP connection is fine too.
 *
 * Protocol (every line ends in \r\n; subjects are case-sensitive tokens, no whitespace; '.' separates tokens, and
 * '*' and '>' are wildcards; '/' is an ordinary character, so `/p/s123` works as a one-token subject, verified)
 *   server → `INFO {json}\r\n`                    on connect (ignore it; max_payload is in it)
 *   client → `CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n`
 *            Optional without auth, but required in practice: a client that sends no CONNECT gets the defaults
 *            verbose:true and pedantic:true, i.e. a `+OK\r\n` after every command. Add `"echo":false` if one
 *            connection both publishes and subscribes to the same subject and must not receive its own messages.
 *            `"headers":false` (the default) means deliveries come as MSG, never HMSG.
 *   client → `SUB <subject> <sid>\r\n`            sid: a client-chosen token (e.g. a decimal integer) naming the
 *                                                 subscription on this connection. The same SUB again (same sid) is
 *                                                 a no-op; the same subject under another sid delivers twice (both
 *                                                 verified). No reply.
 *   client → `PUB <subject> <#bytes>\r\n<payload>\r\n`
 *   server → `MSG <subject> <sid> <#bytes>\r\n<payload>\r\n`   (with a reply subject: `MSG <subject> <sid> <reply>
 *                                                 <#bytes>`, not used here) — the payload is opaque bytes.
 *   server → `PING\r\n`  client MUST answer `PONG\r\n`: the server pings every 2 minutes (ping_interval) and closes
 *            the connection with `-ERR 'Stale Connection'` after 2 unanswered pings (verified with a 1 s interval).
 *   client → `PING\r\n`  server → `PONG\r\n`: a cheap way to learn that everything sent before it was processed
 *            (e.g. that a SUB is in place before publishing).
 *   server → `-ERR '<text>'\r\n` on errors (e.g. 'Maximum Payload Violation', 'Slow Consumer'); most close the
 *            connection. `+OK\r\n` only with verbose:true.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { announceReady, onTerminate, peerArgs } from './cli';

/** The nats-server executable: on PATH, or in /usr/sbin (where Debian puts it, off the PATH of non-root users). */
export function natsServerPath(): string | null {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/sbin', '/usr/local/sbin', '/usr/local/bin']) {
    const file = path.join(dir, 'nats-server');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

/** The nats-server config for a WebSocket listener on host:port (port 0: nats-server picks one, which it logs). */
export function natsConfig(host: string, port: number): string {
  const h = JSON.stringify(host);
  return [
    '# Generated by bench/peers/nats.ts: a benchmark peer, WebSocket without TLS.',
    `host: ${h}`,
    'port: -1 # the TCP client port: random, unused by the benchmarks',
    'max_payload: 1048576',
    'max_pending: 67108864 # 64 MiB: the default, stated',
    'write_deadline: "10s" # the default, stated',
    'max_connections: 1000000',
    'websocket {',
    `  host: ${h}`,
    `  port: ${port === 0 ? -1 : port}`,
    '  no_tls: true',
    '  compression: false',
    '}',
    '',
  ].join('\n');
}

/** Writes the config as `dir`/nats.conf and returns the nats-server arguments that use it. */
export function writeNatsConfig(dir: string, host: string, port: number): string[] {
  const file = path.join(dir, 'nats.conf');
  fs.writeFileSync(file, natsConfig(host, port));
  return ['-c', file];
}

const LISTENING = /Listening for websocket clients on wss?:\/\/\S*:(\d+)/;

/**
 * Resolves with the WebSocket port once nats-server (spawned with its stderr piped) has logged that it listens on it
 * and the port accepts a TCP connection. Passes each stderr chunk to `onLog`. Rejects if the process exits first or
 * after `timeoutMs`.
 */
export function natsReady(
  child: ChildProcess,
  host: string,
  onLog: (chunk: Buffer) => void,
  timeoutMs = 10_000,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let log = '';
    let settled = false;
    const finish = (err: Error | null, port?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(port as number);
    };
    const onExit = (code: number | null, signal: string | null): void =>
      finish(new Error(`nats-server exited (${signal ?? code}) before it was ready:\n${log.slice(-2000)}`));
    const timer = setTimeout(() => finish(new Error(`nats-server not ready after ${timeoutMs} ms:\n${log.slice(-2000)}`)), timeoutMs);
    child.once('exit', onExit);
    let probing = false;
    child.stderr!.on('data', (chunk: Buffer) => {
      onLog(chunk);
      if (probing || settled) return;
      log += chunk.toString();
      const m = LISTENING.exec(log);
      if (!m) return;
      probing = true;
      const port = Number(m[1]);
      const probe = (): void => {
        if (settled) return;
        const s = net.connect(port, host);
        s.once('connect', () => {
          s.destroy();
          finish(null, port);
        });
        s.once('error', () => {
          s.destroy();
          setTimeout(probe, 20);
        });
      };
      probe();
    });
  });
}

function main(): void {
  const { host, port } = peerArgs();
  const exe = natsServerPath();
  if (!exe) {
    process.stderr.write('nats: nats-server not found (apt-get install -y nats-server)\n');
    process.exit(1);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-nats-'));
  const args = writeNatsConfig(dir, host, port);
  const child = spawn(exe, args, { stdio: ['ignore', 2, 'pipe'] });
  const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
  child.on('exit', (code, signal) => {
    cleanup();
    process.exit(code ?? (signal ? 1 : 0));
  });
  // nats-server shuts down the same way on SIGINT and SIGTERM, but exits 1 after SIGTERM and 0 after SIGINT.
  onTerminate(() => child.kill('SIGINT'));
  natsReady(child, host, (chunk) => process.stderr.write(chunk)).then(announceReady, (err: Error) => {
    process.stderr.write(`nats: ${err.message}\n`);
    child.kill('SIGKILL');
  });
}

if (require.main === module) main();
