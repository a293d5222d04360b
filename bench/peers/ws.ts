// Peer: the `ws` package (8.x, with bufferutil's native masking) and a Map of subject → Set of sockets.
// Plain dialect: `SUB <subject>` adds the socket to the subject's set; `PUB <subject> <payload>` sends the payload (a
// view into the received Buffer, not a copy) to every socket in the set, in a frame of the PUB's type.
//
//   node dist/bench/peers/ws.js --port <p> [--host 127.0.0.1]       → prints `ready <port>`
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { announceReady, onTerminate, peerArgs } from './cli';

const SPACE = 0x20;
const SUB = Buffer.from('SUB ');
const PUB = Buffer.from('PUB ');

function main(): void {
  const { host, port } = peerArgs();
  const subjects = new Map<string, Set<WebSocket>>();
  const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: 1024 * 1024, clientTracking: true });

  wss.on('connection', (ws) => {
    const mine: string[] = [];
    ws.on('message', (data: Buffer, isBinary) => {
      if (data.length <= 4) return;
      if (SUB.equals(data.subarray(0, 4))) {
        const subject = data.toString('latin1', 4);
        let set = subjects.get(subject);
        if (!set) subjects.set(subject, (set = new Set()));
        if (set.has(ws)) return;
        set.add(ws);
        mine.push(subject);
      } else if (PUB.equals(data.subarray(0, 4))) {
        const sp = data.indexOf(SPACE, 4);
        if (sp <= 4) return;
        const set = subjects.get(data.toString('latin1', 4, sp));
        if (!set) return;
        const payload = data.subarray(sp + 1);
        const options = { binary: isBinary };
        for (const sub of set) if (sub.readyState === WebSocket.OPEN) sub.send(payload, options);
      }
    });
    ws.on('close', () => {
      for (const subject of mine) {
        const set = subjects.get(subject);
        if (set && set.delete(ws) && set.size === 0) subjects.delete(subject);
      }
    });
    ws.on('error', () => ws.terminate());
  });

  wss.on('error', (err) => {
    process.stderr.write(`ws: ${err.message}\n`);
    process.exit(1);
  });
  wss.on('listening', () => {
    announceReady((wss.address() as AddressInfo).port);
    onTerminate(() => {
      for (const client of wss.clients) client.terminate();
      wss.close(() => process.exit(0));
    });
  });
}

if (require.main === module) main();
