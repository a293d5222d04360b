// Server lifecycle for the benchmark runners (compare, c1m): start Starling or a peer as its own process
// (so its CPU and memory can be read from /proc/<pid>), wait until it listens, stop it.
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { sleep, type Dialect } from './tools';

const CLI = path.join(path.resolve(__dirname, '..', '..'), 'dist', 'src', 'cli.js');

export interface ServerHandle {
  name: string;
  dialect: Dialect;
  pid: number;
  port: number;
  stop(): Promise<void>;
}

export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/**
 * `starling` or a variant: `starling:Workgroups=1` (config overrides after the colon, comma-separated), or
 * `starling@/path/to/other/checkout` (another build of Starling, e.g. the previous commit, so that a change is
 * measured before and after in the same run; overrides may follow: `starling@/path:Workgroups=1`).
 */
async function startStarling(name: string, port: number): Promise<ServerHandle> {
  const colon = name.indexOf(':');
  const overrides = colon >= 0 ? name.slice(colon + 1).split(',').map((kv) => `-D${kv}`) : [];
  const head = colon >= 0 ? name.slice(0, colon) : name;
  const cli = head.startsWith('starling@') ? path.join(head.slice('starling@'.length), 'dist', 'src', 'cli.js') : CLI;
  const args = [cli, 'serve', `-DListen=127.0.0.1:${port}`, '-DBenchmarkMode=true', '-DLogLevel=warn', '-DMonitor=', ...overrides];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // At warn level the server prints nothing on start: wait until the port answers.
  await waitForPort(port);
  return { name, dialect: 'starling', pid: child.pid!, port, stop: () => stopChild(child) };
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on port ${port}`);
}

/** Starts `starling` (or a variant `starling:Key=value,...`) or a peer of bench/peers on `port`. */
export async function startServer(name: string, port: number): Promise<ServerHandle> {
  if (name === 'starling' || name.startsWith('starling:') || name.startsWith('starling@')) return startStarling(name, port);
  const { startPeer } = await import('./peers/index');
  const peer = await startPeer(name, port);
  return { name, dialect: name === 'nats' ? 'nats' : 'plain', pid: peer.pid, port: peer.port, stop: () => peer.stop() };
}

