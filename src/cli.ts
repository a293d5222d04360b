#!/usr/bin/env node
// The `starling` command: `serve` runs a server; `config --print` shows the effective configuration;
// `doctor` and `tune` check and tune the kernel for a number of connections (src/doctor.ts, src/tune.ts).
import { ConfigError, formatEffectiveConfig, loadConfig, type Loaded } from './config/config';
import { doctor, DoctorUsageError } from './doctor';
import { Logger } from './log';
import { createServer } from './server';
import { ProfileError, tune, TuneUsageError } from './tune';

const USAGE = `Usage:
  starling serve [--config FILE] [-DKey=value ...]    run the server
  starling benchsub [--config FILE] [-DKey=value ...]  benchmark subscribers (statistics every 5 s, JSON/CSV at the end)
  starling benchpub [--config FILE] [-DKey=value ...]  benchmark publishers
  starling config --print [--config FILE] [-DKey=value ...]
                                                      print the effective configuration and where each value came from
  starling doctor --connections N [--role server|client] [--server HOST] [--json]
                                                      check whether this machine holds N connections, item by item,
                                                      with the command that fixes each shortfall (exit 1 if not)
  starling tune --print | --apply [--role server|client] [--profile FILE]
                                                      print or apply (as root) the kernel profile tuning/sysctl-<role>.conf
  starling --help | --version

The config file may also be named by STARLING_CONFIG. STARLING_<KEY> environment variables override the
file, and -DKey=value arguments override both. Keys: docs/configuration.md. Kernel tuning: docs/tuning.md;
deployment (systemd, package): docs/deploy.md.`;

interface Args {
  command: string;
  file?: string;
  defines: string[];
  print: boolean;
}

class UsageError extends Error {}

function parseArgs(argv: string[]): Args {
  const args: Args = { command: argv[0] ?? '', defines: [], print: false };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a file name`);
      args.file = argv[++i];
    } else if (a.startsWith('--config=')) args.file = a.slice('--config='.length);
    else if (a.startsWith('-D') && a.length > 2) args.defines.push(a);
    else if (a === '--print') args.print = true;
    else throw new UsageError(`unknown argument ${JSON.stringify(a)}`);
  }
  return args;
}

function load(args: Args): Loaded {
  return loadConfig({ file: args.file, defines: args.defines, env: process.env });
}

function serve(args: Args): void {
  const loaded = load(args);
  const log = new Logger(loaded.config.LogLevel);
  const server = createServer(loaded, log);
  const where = server.addresses.map((a) => `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`).join(', ');
  const n = loaded.config.Workgroups;
  log.info(`starling listening on ${where} (path ${loaded.config.Path}) with ${n} workgroup${n === 1 ? '' : 's'}`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: closing connections with 1001 and stopping`);
    server.close().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (e: Error) => {
        log.error(`stop failed: ${e.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Keep the process alive: the native threads do not hold the event loop open.
  setInterval(() => {}, 1 << 30);
}

function main(argv: string[]): number {
  try {
    if (argv[0] === 'doctor') return doctor(argv.slice(1));
    if (argv[0] === 'tune') return tune(argv.slice(1));
    const args = argv[0] === 'benchsub' || argv[0] === 'benchpub' ? { command: argv[0], defines: [], print: false } : parseArgs(argv);
    switch (args.command) {
      case 'serve':
        serve(args);
        return -1;
      case 'benchsub':
      case 'benchpub': {
        const tool = require(`../bench/${args.command}`);
        tool[args.command](argv.slice(1), process.env).then(
          () => process.exit(0),
          (e: Error) => {
            if (e instanceof ConfigError) process.stderr.write(`starling ${args.command}: configuration errors:\n${e.errors.map((l) => '  ' + l).join('\n')}\n`);
            else process.stderr.write(`starling ${args.command}: ${e.message}\n`);
            process.exit(2);
          },
        );
        return -1;
      }
      case 'config':
        if (!args.print) throw new UsageError('config: use `starling config --print`');
        process.stdout.write(formatEffectiveConfig(load(args)));
        return 0;
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(USAGE + '\n');
        return 0;
      case '--version':
        process.stdout.write(require('../../package.json').version + '\n');
        return 0;
      default:
        throw new UsageError(args.command ? `unknown command ${JSON.stringify(args.command)}` : 'no command given');
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`starling: configuration error${e.errors.length > 1 ? 's' : ''}:\n${e.errors.map((l) => '  ' + l).join('\n')}\n`);
      return 2;
    }
    if (e instanceof UsageError || e instanceof DoctorUsageError || e instanceof TuneUsageError) {
      process.stderr.write(`starling: ${e.message}\n\n${USAGE}\n`);
      return 2;
    }
    if (e instanceof ProfileError) {
      process.stderr.write(`starling tune: bad profile: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`starling: ${(e as Error).message}\n`);
    return 1;
  }
}

const code = main(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
