// A benchsub worker process: runs one native client engine for a slice of the connections and sends its
// statistics to the parent once a second (benchsub forks these past ConnectionsPerProcess clients, because
// one process's fd table is limited). A { reconnect } message from the parent drops and reconnects the
// selected connections (global indices); the worker then reports every 50 ms for a while, so that the
// parent sees the storm's end promptly.
import { Client, type ClientOptions, type ReconnectSelection, snapshotToJSON } from './tools';

const FAST_REPORT_MS = 50;
const FAST_FOR_MS = 30_000;

process.once('message', (options: ClientOptions) => {
  const client = new Client(options);
  client.start();
  let fastUntil = 0;
  let timer: NodeJS.Timeout;
  const report = () => {
    process.send?.(snapshotToJSON(client.snapshot()));
    timer = setTimeout(report, Date.now() < fastUntil ? FAST_REPORT_MS : 1000);
  };
  timer = setTimeout(report, 1000);
  process.on('message', (m: { reconnect?: ReconnectSelection }) => {
    if (!m.reconnect) return;
    client.reconnect(m.reconnect);
    fastUntil = Date.now() + FAST_FOR_MS;
    clearTimeout(timer);
    timer = setTimeout(report, FAST_REPORT_MS);
  });
  process.on('disconnect', () => {
    clearTimeout(timer);
    client.stop();
    process.exit(0);
  });
});
