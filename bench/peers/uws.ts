// Peer: uWebSockets.js 20.30 (npm @trufflesuite/uws-js-unofficial, whose build loads on glibc 2.36) with its native
// pub/sub. Plain dialect: `SUB <subject>` → ws.subscribe(subject); `PUB <subject> <payload>` → app.publish(subject,
// payload, isBinary), so every subscriber gets the payload bytes in a frame of the PUB's type. Subject and payload are
// views into the received ArrayBuffer: nothing is copied in JavaScript (uWS copies once, into its topic tree).
//
//   node dist/bench/peers/uws.js --port <p> [--host 127.0.0.1]      → prints `ready <port>`
import * as path from 'node:path';
import type * as uWS from '@trufflesuite/uws-js-unofficial';
import { announceReady, onTerminate, peerArgs } from './cli';

/**
 * The native addon itself. The package's entry point silently falls back to a `ws`-based JavaScript imitation (and
 * prints to stdout) when the binary does not load; a benchmark must never measure that, so load the binary directly
 * and fail loudly instead.
 */
export function loadUws(): typeof uWS {
  const dir = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  const file = path.join(dir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  return require(file) as typeof uWS;
}

const SPACE = 0x20;
const U = 0x55;
const B = 0x42;
const S = 0x53;
const P = 0x50;

/** Per-socket backpressure cap: far above what W2 (20 msg/s × ~530 B per subscriber) can queue, like NATS's 64 MB max_pending. */
const MAX_BACKPRESSURE = 64 * 1024 * 1024;

function main(): void {
  const { host, port } = peerArgs();
  const uws = loadUws();
  const app = uws.App();

  app.ws<Record<string, never>>('/*', {
    compression: uws.DISABLED,
    maxPayloadLength: 1024 * 1024,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    maxBackpressure: MAX_BACKPRESSURE,
    closeOnBackpressureLimit: 0,
    message: (ws, message, isBinary) => {
      const m = new Uint8Array(message);
      if (m.length <= 4 || m[1] !== U || m[2] !== B || m[3] !== SPACE) return;
      if (m[0] === S) {
        ws.subscribe(m.subarray(4));
      } else if (m[0] === P) {
        const sp = m.indexOf(SPACE, 4);
        if (sp > 4) app.publish(m.subarray(4, sp), m.subarray(sp + 1), isBinary);
      }
    },
  });

  app.listen(host, port, (listenSocket) => {
    if (!listenSocket) {
      process.stderr.write(`uws: cannot listen on ${host}:${port}\n`);
      process.exit(1);
    }
    announceReady(uws.us_socket_local_port(listenSocket as unknown as uWS.us_socket));
    onTerminate(() => {
      uws.us_listen_socket_close(listenSocket);
      process.exit(0);
    });
  });
}

if (require.main === module) main();
