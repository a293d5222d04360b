// The client library's publish rate over each transport, side by side (docs/client.md): 3,000 publishes made at
// once on one client, each resolved by the server's answer. Run after `npm run build`: node bench/sdk-publish-rate.mjs
import { connect } from '../dist/client/esm/index.js';
import { spawn } from 'node:child_process';
const srv = spawn(process.execPath, [new URL('../dist/src/cli.js', import.meta.url).pathname, 'serve', '-DListen=127.0.0.1:8873', '-DMonitor='], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 1200));
for (const [transport, url] of [['sse', 'http://127.0.0.1:8873/'], ['websocket', 'ws://127.0.0.1:8873/'], ['sse', 'http://127.0.0.1:8873/'], ['websocket', 'ws://127.0.0.1:8873/']]) {
  const c = connect({ servers: [url], transport });
  await c.publish('/rate/warm', 'x');
  const n = 3000, t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, (_, i) => c.publish('/rate/a', String(i))));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`${transport}: ${n} publishes (made at once, answered in order) in ${s.toFixed(2)} s = ${Math.round(n / s)}/s`);
  await c.close();
}
srv.kill();
