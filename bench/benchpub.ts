// benchpub: Publishers connections publishing Frequency messages per second in total, each to a random
// subject of Subjects, with the creation time (µs) in the first 16 bytes of every payload. Transport = http:
// each message is a POST /publish on kept-alive, pipelined connections; the answers are counted.
import { BENCHPUB_KEYS, Client, clientOptions, interruption, loadTool, sleep } from './tools';

export async function benchpub(argv: string[], env: NodeJS.ProcessEnv, out = (l: string) => console.log(l)): Promise<{ sent: number; seconds: number; acknowledged: number; errors: number; stalls: number }> {
  const cfg = loadTool(BENCHPUB_KEYS, argv, env);
  const publishers = cfg.Publishers as number;
  const client = new Client(clientOptions(cfg, true, publishers));
  client.start();
  const http = cfg.Transport === 'http';
  out(`benchpub: ${publishers} publishers, ${cfg.Frequency} msg/s of ${cfg.MessageSize} bytes over ${(cfg.Subjects as string[]).length} subjects (${cfg.Dialect}${http ? ', POST /publish' : ''})`);
  const run = interruption();
  const t0 = Date.now();
  const duration = (cfg.Duration as number) * 1000;
  let last = client.snapshot().counters;
  let lastAt = t0;
  while (!run.interrupted && (duration === 0 || Date.now() - t0 < duration)) {
    await sleep(Math.min(5000, duration > 0 ? Math.max(1, t0 + duration - Date.now()) : 5000));
    const c = client.snapshot().counters;
    const secs = (Date.now() - lastAt) / 1000;
    out(`[${((Date.now() - t0) / 1000).toFixed(0)} s] publishers ${c.connected}/${publishers} | sent ${c.messages_sent} (${((c.messages_sent - last.messages_sent) / secs).toFixed(1)}/s) | stalls ${c.send_stalls} | failures ${c.connect_failures}${http ? ` | answered 200 ${c.acknowledged} | errors ${c.errors}` : ''}`);
    last = c;
    lastAt = Date.now();
  }
  const end = client.snapshot().counters;
  client.stop();
  run.dispose();
  return { sent: end.messages_sent, seconds: (Date.now() - t0) / 1000, acknowledged: end.acknowledged, errors: end.errors, stalls: end.send_stalls };
}
