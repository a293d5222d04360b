// Benchmark peers (bench/peers): each starts as a child process that is the server itself, delivers a publication
// to a subscriber on another connection with the publication's frame type, and exits cleanly when stopped.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import WebSocket from 'ws';
import { startPeer, type RunningPeer } from '../bench/peers/index';
import { natsServerPath } from '../bench/peers/nats';
import { describeWith } from './helpers';

interface Frame {
  data: Buffer;
  binary: boolean;
}

/** A `ws` client that queues what it receives. */
class Client {
  readonly ws: WebSocket;
  private readonly frames: Frame[] = [];
  private waiter: (() => void) | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, binary) => {
      this.frames.push({ data, binary });
      this.waiter?.();
    });
    ws.on('error', () => {}); // nats-server answers a close with codes that ws rejects; irrelevant here
  }

  static async open(port: number): Promise<Client> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    // Listen before 'open': a server's first frame may come in the same read as the 101 response.
    const client = new Client(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return client;
  }

  send(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary });
  }

  /** The next frame received (within `ms`). */
  async next(ms = 5000): Promise<Frame> {
    const deadline = Date.now() + ms;
    while (this.frames.length === 0) {
      const left = deadline - Date.now();
      assert.ok(left > 0, 'no frame arrived in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.frames.shift()!;
  }

  /** Nothing arrives within `ms`. */
  async quiet(ms = 200): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    assert.deepEqual(this.frames.map((f) => f.data.toString()), []);
  }

  close(): void {
    this.ws.close(1000);
  }
}

/** Whether the process is gone (already reaped: startPeer waits for its exit). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function comm(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
}

const started: RunningPeer[] = [];
after(async () => {
  await Promise.all(started.map((p) => p.stop()));
});

async function start(name: string): Promise<RunningPeer> {
  const peer = await startPeer(name, 0);
  started.push(peer);
  assert.ok(peer.port > 0);
  // The pid is the server itself: its CPU time is in /proc/<pid>/stat.
  assert.match(fs.readFileSync(`/proc/${peer.pid}/stat`, 'utf8'), new RegExp(`^${peer.pid} \\(`));
  return peer;
}

async function stopAndCheck(peer: RunningPeer): Promise<void> {
  await peer.stop();
  assert.deepEqual(await peer.exited, { code: 0, signal: null }, peer.stderrTail());
  assert.ok(gone(peer.pid), `process ${peer.pid} still exists`);
}

for (const name of ['uws', 'ws']) {
  describe(`peer ${name} (plain dialect)`, () => {
    it('delivers a PUB to the subscriber of its subject, in a frame of the PUB type, and stops cleanly', async () => {
      const peer = await start(name);
      assert.equal(peer.dialect, 'plain');
      assert.match(fs.readFileSync(`/proc/${peer.pid}/cmdline`, 'utf8'), new RegExp(`peers/${name}\\.js`));
      const sub = await Client.open(peer.port);
      const pub = await Client.open(peer.port);

      // Subscribing twice is a no-op. The subscriber's own PUB comes back once its SUBs are in place (one
      // connection's messages are handled in order), so the publisher's PUBs below cannot overtake them.
      sub.send('SUB /p/s1');
      sub.send('SUB /p/s1');
      sub.send('PUB /p/s1 sync');
      assert.deepEqual(await sub.next(), { data: Buffer.from('sync'), binary: false });
      await sub.quiet(50);

      pub.send('PUB /p/s2 elsewhere'); // no subscriber
      pub.send('PUB /p/s1 hello, with  spaces ');
      let f = await sub.next();
      assert.equal(f.data.toString(), 'hello, with  spaces ');
      assert.equal(f.binary, false);

      const bytes = Buffer.from([0x00, 0xff, 0x20, 0x0a, 0x80]);
      pub.send(Buffer.concat([Buffer.from('PUB /p/s1 '), bytes]), true);
      f = await sub.next();
      assert.deepEqual(f.data, bytes);
      assert.equal(f.binary, true);

      pub.send('PUB /p/s1 '); // empty payload
      f = await sub.next();
      assert.equal(f.data.length, 0);
      await sub.quiet();
      await pub.quiet(0);

      // A closed subscriber is forgotten; the peer goes on serving.
      sub.close();
      await new Promise((resolve) => sub.ws.once('close', resolve));
      const again = await Client.open(peer.port);
      again.send('SUB /p/s1');
      again.send('PUB /p/s1 sync');
      assert.equal((await again.next()).data.toString(), 'sync');
      pub.send('PUB /p/s1 after');
      assert.equal((await again.next()).data.toString(), 'after');
      again.close();
      pub.close();

      await stopAndCheck(peer);
    });
  });
}

const NATS = { program: 'nats-server', path: natsServerPath(), install: 'apt-get install nats-server' };
describeWith(NATS, 'peer nats (nats-server over WebSocket)', {}, () => {
  it(
    'delivers a PUB to a subscriber on another connection as MSG, in binary frames, and stops cleanly',
    async () => {
      const peer = await start('nats');
      assert.equal(peer.dialect, 'nats');
      assert.equal(comm(peer.pid), 'nats-server');
      const sub = await Client.open(peer.port);
      const pub = await Client.open(peer.port);
      for (const c of [sub, pub]) {
        const info = await c.next();
        assert.equal(info.binary, true);
        assert.match(info.data.toString(), /^INFO \{.*\}\s*\r\n$/);
      }

      // Read the subscriber's frames as one byte stream, as a NATS client must.
      let stream = '';
      const until = async (text: string): Promise<void> => {
        while (!stream.includes(text)) {
          const f = await sub.next();
          assert.equal(f.binary, true, 'nats-server sends binary frames');
          stream += f.data.toString('latin1');
        }
      };
      const CONNECT = 'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n';
      sub.send(Buffer.from(`${CONNECT}SUB /p/s1 1\r\nPING\r\n`), true);
      await until('PONG\r\n');
      assert.equal(stream, 'PONG\r\n'); // no +OK: verbose is off

      pub.send(Buffer.from(`${CONNECT}PUB /p/s2 9\r\nelsewhere\r\nPUB /p/s1 5\r\nhello\r\n`), true);
      await until('hello\r\n');
      assert.equal(stream, 'PONG\r\nMSG /p/s1 1 5\r\nhello\r\n');

      sub.close();
      pub.close();
      await stopAndCheck(peer);
    },
  );
});
