// Shared command line of the peer servers: `--port <p> [--host <h>]`, the `ready <port>` line, and SIGTERM/SIGINT.
import { parseArgs } from 'node:util';

export interface PeerArgs {
  host: string;
  port: number;
}

/** Parses `--port <p> [--host <h>]` (port 0 lets the kernel choose; host defaults to 127.0.0.1). Exits 2 on bad usage. */
export function peerArgs(argv: string[] = process.argv.slice(2)): PeerArgs {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } },
      strict: true,
    });
    const port = Number(values.port);
    if (values.port === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new Error('--port <0..65535> is required');
    }
    return { host: values.host as string, port };
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\nusage: node ${process.argv[1]} --port <p> [--host 127.0.0.1]\n`);
    process.exit(2);
  }
}

/** The one line a peer prints on stdout, once it accepts connections. */
export function announceReady(port: number): void {
  process.stdout.write(`ready ${port}\n`);
}

/** Calls `stop` once on the first SIGTERM or SIGINT. */
export function onTerminate(stop: () => void): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) return;
    stopping = true;
    stop();
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
