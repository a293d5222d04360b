// A benchsub worker process: runs one native client engine for a slice of the connections and sends its
// statistics to the parent once a second (benchsub forks these past ConnectionsPerProcess clients, because
// one process's fd table is limited).
import { Client, type ClientOptions } from './tools';

process.once('message', (options: ClientOptions) => {
  const client = new Client(options);
  client.start();
  const report = () => {
    const s = client.snapshot();
    process.send?.({ counters: s.counters, welford: s.welford.toJSON(), histogram: s.histogram.toJSON() });
  };
  const timer = setInterval(report, 1000);
  process.on('disconnect', () => {
    clearInterval(timer);
    client.stop();
    process.exit(0);
  });
});
