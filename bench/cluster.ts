// Cluster runs of the benchmark (compare --workloads W1,W2 with a `ClusterEngine=redis` Starling variant, and the
// three-node workloads W1x3, W2x3): a fresh redis-server per run, as its own process so its CPU can be read, and
// nodes started as Starling variants pointed at it. docs/cluster.md says what is measured.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { stopChild } from './servers';
import { sleep } from './tools';

export interface BenchRedis {
  port: number;
  pid: number;
  url: string;
  stop(): Promise<void>;
}

/** Port of the Redis of a cluster run (the Starling runs use 8810 and up). */
const REDIS_PORT = 8890;
/** Debian's redis-server (apt-get install redis-server). */
const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/sbin/redis-server'].find((p) => fs.existsSync(p)) ?? 'redis-server';

/** Whether a Starling variant name asks for the cluster engine. */
export function wantsCluster(name: string): boolean {
  return /[:,]ClusterEngine=redis/.test(name);
}

/** The variant with ClusterRedis pointed at `redis` (unless the name sets it). */
export function withRedis(name: string, redis: BenchRedis): string {
  return /[:,]ClusterRedis=/.test(name) ? name : `${name},ClusterRedis=${redis.url}`;
}

/**
 * A redis-server for one run: no persistence (what is measured is the engine's path, not the disk), a pub/sub
 * output limit large enough that a node behind by a second of W1 is not dropped, its data in a temporary directory.
 */
export async function startBenchRedis(): Promise<BenchRedis> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-bench-redis-'));
  const child = spawn(
    REDIS_SERVER,
    ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
     '--client-output-buffer-limit', 'pubsub 512mb 128mb 60'],
    { stdio: 'ignore' },
  );
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (e) => reject(new Error(`cannot run ${REDIS_SERVER} (apt-get install redis-server): ${e.message}`)));
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it answered`)));
  });
  await Promise.race([waitForPing(REDIS_PORT), failed]);
  return {
    port: REDIS_PORT,
    pid: child.pid!,
    url: `redis://127.0.0.1:${REDIS_PORT}`,
    stop: async () => {
      await stopChild(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPing(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('PING\r\n'));
      s.on('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`redis-server does not answer on port ${port}`);
}
