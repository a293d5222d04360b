// A Starling server in a process of its own, for test/11.io-backend.test.ts, which runs it under test/tools/no-uring
// (io_uring_setup refused by seccomp) to see what each IoBackend does where the kernel refuses io_uring:
//
//   node dist/test/tools/io-child.js '<JSON config>'
//
// Prints one line, then:
//   READY {"pid":…,"port":…,"url":…,"io":<server.io>,"probe":<addon.ioUring()>,"logs":[<lines logged so far>]}
//     the server runs until stdin ends (so it never outlives the test process), then closes and exits 0;
//   FAILED {"message":…,"probe":<addon.ioUring()>}
//     createServer threw; exits 1.
import { createServer, Logger } from '../../src/index';
import { addon } from '../../src/native';

const config = JSON.parse(process.argv[2] ?? '{}') as Record<string, unknown>;
const logs: string[] = [];
const log = new Logger('info', (line) => {
  logs.push(line);
  process.stderr.write(line + '\n');
});
const print = (kind: string, what: unknown) => process.stdout.write(`${kind} ${JSON.stringify(what)}\n`);

function start(): ReturnType<typeof createServer> | undefined {
  try {
    return createServer({ Listen: '127.0.0.1:0', Monitor: '', ...config }, log);
  } catch (e) {
    print('FAILED', { message: (e as Error).message, probe: addon.ioUring() });
    return undefined;
  }
}

const server = start();
if (!server) {
  process.exitCode = 1;
} else {
  print('READY', { pid: process.pid, port: server.addresses[0].port, url: server.url, io: server.io, probe: addon.ioUring(), logs });
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => {
    server.close().then(
      () => process.exit(0),
      (e: Error) => {
        process.stderr.write(`close failed: ${e.message}\n`);
        process.exit(1);
      },
    );
  });
}
