// A ticker publisher: publishes a price for each of a few symbols on /ticker/<symbol>, as retained messages (so a
// page that subscribes later gets the latest price at once), one every --interval ms, until --count are published.
// Each publish waits for its ACK; while the server is unreachable the client holds it and sends it on reconnection.
//
//   node examples/publisher.mjs [ws://127.0.0.1:8800/ …] [--count N] [--interval MS] [--symbols IBM,AAPL,MSFT]
//
// Prints `published <n> <subject> <json>` per ACK, `connected <url>` / `disconnected <url> <code>` as it goes,
// `done <count>` at the end, then closes and exits 0.
import { connect } from 'starling/client';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const count = Number(option('--count', 'Infinity'));
const interval = Number(option('--interval', '200'));
const symbols = option('--symbols', 'IBM,AAPL,MSFT').split(',');
const servers = args.length > 0 ? args : ['ws://127.0.0.1:8800/'];

const client = connect({ servers });
client.on('connected', ({ url }) => console.log(`connected ${url}`));
client.on('disconnected', ({ url, code }) => console.log(`disconnected ${url} ${code}`));
client.on('error', (e) => console.error(`error ${e.code} ${e.detail}`));

const prices = Object.fromEntries(symbols.map((s, i) => [s, 100 + 20 * i]));
let stopping = false;
process.on('SIGINT', () => (stopping = true));
process.on('SIGTERM', () => (stopping = true));

for (let n = 1; n <= count && !stopping; n++) {
  const symbol = symbols[(n - 1) % symbols.length];
  prices[symbol] = Math.max(1, prices[symbol] + (Math.random() - 0.5));
  const quote = JSON.stringify({ symbol, price: Number(prices[symbol].toFixed(2)), n });
  try {
    await client.publish(`/ticker/${symbol}`, quote, { retained: true });
    console.log(`published ${n} /ticker/${symbol} ${quote}`);
  } catch (e) {
    // connection-lost: the connection dropped before the ACK; the quote may or may not have gone out.
    console.error(`not published ${n}: ${e.code} ${e.detail}`);
  }
  if (interval > 0) await new Promise((r) => setTimeout(r, interval));
}
console.log(`done ${Number.isFinite(count) ? count : 'stopped'}`);
await client.close();
