// A ticker subscriber that survives a server restart: subscribes to /ticker/<symbol> and prints every quote with
// its position, and what the client reports. After a dropped connection it resubscribes from the last position
// it saw: `sync` when the server could send everything missed (marked `recovered`), `resync` when it could not
// (the server restarted: new epoch; the quotes published while it was down are gone).
//
//   node examples/subscriber.mjs [ws://127.0.0.1:8800/ …] [--history N] [--symbols IBM,AAPL,MSFT]
//
// One line per event: `message <subject> <epoch>:<seq> <kind> <payload>`, `sync <subject> <epoch>:<seq>`,
// `resync <subject> <epoch>:<seq> (was <epoch>:<seq>)`, `connected <url>`, `disconnected <url> <code>`.
// SIGINT / SIGTERM close the client; it exits 0.
import { connect } from 'starling/client';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const history = Number(option('--history', '0'));
const symbols = option('--symbols', 'IBM,AAPL,MSFT').split(',');
const servers = args.length > 0 ? args : ['ws://127.0.0.1:8800/'];

const client = connect({ servers, reconnect: { min: 100, max: 2000, jitter: 0.5 } });
client.on('connected', ({ url }) => console.log(`connected ${url}`));
client.on('disconnected', ({ url, code }) => console.log(`disconnected ${url} ${code}`));
client.on('sync', ({ subject, epoch, seq }) => console.log(`sync ${subject} ${epoch}:${seq}`));
client.on('resync', ({ subject, epoch, seq, previous }) =>
  console.log(`resync ${subject} ${epoch}:${seq} (was ${previous ? `${previous.epoch}:${previous.seq}` : 'nothing'})`),
);
client.on('error', (e) => console.error(`error ${e.code} ${e.detail}`));

for (const symbol of symbols) {
  client.subscribe(
    `/ticker/${symbol}`,
    (m) => console.log(`message ${m.subject} ${m.epoch}:${m.seq} ${m.kind} ${typeof m.payload === 'string' ? m.payload : `(${m.payload.length} bytes)`}`),
    { history },
  );
}

const stop = async () => {
  await client.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
