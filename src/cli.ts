#!/usr/bin/env node
// The `starling` command: `serve` runs a server; `config --print` shows the effective configuration;
// `doctor` and `tune` check and tune the kernel for a number of connections (src/doctor.ts, src/tune.ts).
import { ConfigError, formatEffectiveConfig, loadConfig, repeatedDefines, SCHEMA, showDefine, strayArgument, type Loaded } from './config/config';
import { clusterNodeName } from './config/schema';
import { formatRedisAddress } from './config/types';
import { doctor, DoctorUsageError } from './doctor';
import { Logger } from './log';
import { AddonError } from './native';
import { ProfileError, tune, TuneUsageError } from './tune';
// Only `serve` and the benchmark tools need the native addon: they load it (lazily, through src/native.ts) when
// they run, so `--help`, `config`, `doctor` and `tune` work on a machine where it is not built.
type ServerModule = typeof import('./server');

const USAGE = `Usage:
  starling serve [--config FILE] [-DKey=value ...]    run the server
  starling benchsub [--config FILE] [-DKey=value ...]  benchmark subscribers (statistics every 5 s, JSON/CSV at the end)
  starling benchpub [--config FILE] [-DKey=value ...]  benchmark publishers
  starling config --print [--config FILE] [-DKey=value ...]
                                                      print the effective configuration and where each value came from
  starling doctor --connections N [--role server|client] [--server HOST] [--backend epoll|io_uring] [--json]
                                                      check whether this machine holds N connections, item by item,
                                                      with the command that fixes each shortfall (exit 1 if not)
  starling tune --print | --apply [--role server|client] [--profile FILE]
                                                      print or apply (as root) the kernel profile tuning/sysctl-<role>.conf
  starling <command> --help                           the options of one command, with an example
  starling --help | --version

The config file may also be named by STARLING_CONFIG. STARLING_<KEY> environment variables override the
file, and -DKey=value arguments override both. Keys: docs/configuration.md. Kernel tuning: docs/tuning.md;
deployment (systemd, package): docs/deploy.md.`;

const CONFIG_OPTIONS = `Options:
  --config FILE, -c FILE   the config file (Key = Value lines); default: the file named by STARLING_CONFIG, else none
  -DKey=value              set a key, overriding the file and STARLING_<KEY> environment variables; quote values
                           with spaces: '-DListen=*:8800, [::1]:8800'
  --help, -h               this help

Keys, their defaults and environment variables: docs/configuration.md.`;

/** The keys `config --print` shows only as a comment with their length (formatEffectiveConfig). */
const SECRET_KEYS = SCHEMA.filter((d) => 'secret' in d && d.secret).map((d) => d.name).join(', ');

const HELP: Record<string, string | (() => string)> = {
  serve: `Usage: starling serve [--config FILE] [-DKey=value ...]

Runs the server until SIGINT or SIGTERM (then closes every connection with 1001 and exits 0).

${CONFIG_OPTIONS}
For a benchmark with all clients on this machine, add -DBenchmarkMode=true: clients are then spread over the
workgroups round-robin instead of by a hash of their IP address, which puts every local client on one workgroup.

Examples:
  starling serve --config starling.conf
  starling serve -DListen=127.0.0.1:8800 -DWorkgroups=2 -DBenchmarkMode=true`,
  config: `Usage: starling config --print [--config FILE] [-DKey=value ...]

Prints every key with its effective value and, above it, where the value came from (default, file:line,
environment variable or -D argument). The output is itself a valid config file, except for the secrets
(${SECRET_KEYS}):
a set one is printed as a comment with its length, never its value. Nor are passwords in ClusterRedis URLs:
a value with one is printed as a comment in which each password is an ellipsis (…). Put the values back
before using the output as a config file.

  --print                  print the effective configuration (required)
${CONFIG_OPTIONS.slice('Options:\n'.length)}
Example:
  starling config --print --config starling.conf -DWorkgroups=4`,
  doctor: `Usage: starling doctor --connections N [--role server|client] [--server HOST] [--backend epoll|io_uring] [--json]

Checks whether this machine holds N connections (file descriptors, ports, kernel memory, TCP settings), item
by item, with the command that fixes each shortfall. Exit code 0: they fit; 1: they do not; 2: bad arguments.

Options:
  --connections N, -n N    connections to check for: 15000, 50k, 1M (required)
  --role server|client     the server, or the machine running benchsub/benchpub (default: server)
  --server HOST            client role: the server the clients connect to (decides which source addresses count)
  --backend epoll|io_uring the server's IoBackend (default: io_uring where this kernel allows it, else epoll)
  --json                   the report as JSON
  --help, -h               this help

Examples:
  starling doctor --connections 50k
  starling doctor -n 1M --role client --server 10.0.0.2`,
  tune: `Usage: starling tune --print | --apply [--role server|client] [--profile FILE]

Prints, or applies to the live system (as root), the kernel profile tuning/sysctl-<role>.conf. The printed
profile is a sysctl.d file: put it in /etc/sysctl.d/ to keep it after a reboot. What each knob does: docs/tuning.md.

Options:
  --print                  print the profile with the live value of each setting
  --apply                  write the profile's values to /proc/sys (as root; until reboot)
  --role server|client     which profile (default: server)
  --profile FILE           a profile other than tuning/sysctl-<role>.conf
  --help, -h               this help

Examples:
  starling tune --print --role client
  sudo starling tune --apply --role server`,
  benchsub: () => toolHelp('benchsub'),
  benchpub: () => toolHelp('benchpub'),
};

/** A benchmark tool's help: usage, options and every key with its default, from the tool's own key set. */
function toolHelp(tool: 'benchsub' | 'benchpub'): string {
  const { BENCHSUB_KEYS, BENCHPUB_KEYS } = require('../bench/tools') as typeof import('../bench/tools');
  const keys = tool === 'benchsub' ? BENCHSUB_KEYS : BENCHPUB_KEYS;
  const width = Math.max(...keys.defs.map((d) => d.name.length));
  const lines = keys.defs.map((d) => `  ${d.name.padEnd(width)}  ${`(${typeof d.default === 'string' && d.default !== '' ? d.default : 'none'})`.padEnd(16)} ${d.doc}`);
  const what =
    tool === 'benchsub'
      ? 'Opens Clients subscriber connections, records the latency of every message, prints statistics every\nReportInterval seconds and writes <Output>.json, .csv, .md and .svg at the end.'
      : 'Opens Publishers connections that publish Frequency messages per second in total, each to a random subject\nof Subjects, with the creation time in the first 16 bytes of every payload.';
  const example =
    tool === 'benchsub'
      ? `starling benchsub --config bench/benchsub.conf -DClients=500 '-DSubjects=/p/s{1..500}' -DDuration=30`
      : `starling benchpub --config bench/benchpub.conf '-DSubjects=/p/s{1..500}' -DFrequency=2000`;
  return `Usage: starling ${tool} [--config FILE] [-DKey=value ...]

${what}

Options:
  --config FILE, -c FILE   a file of Key = Value lines (bench/${tool}.conf is a commented example)
  -DKey=value              set a key, overriding the file and ${keys.envPrefix}<KEY> environment variables. Quote
                           ranges and values with spaces: '-DSubjects=/p/s{1..500}' (unquoted, the shell expands
                           the range into 500 arguments, which is refused)
  --help, -h               this help

Keys (default in parentheses; lists take the range syntax /p/s{1..15000}):
${lines.join('\n')}

Start the server for a local benchmark with -DBenchmarkMode=true (see docs/benchmarks.md).

Example:
  ${example}`;
}

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
    else throw new UsageError(strayArgument(a, a.startsWith('-') ? undefined : args.defines[args.defines.length - 1]));
  }
  return args;
}

function load(args: Args): Loaded {
  // The server's documented rule is that the last -D of a key wins; say so when it happens, as it is usually
  // the shell splitting or expanding an unquoted value.
  for (const r of repeatedDefines(args.defines)) {
    process.stderr.write(`starling: warning: ${r.key} is given ${r.defines.length} times on the command line; the last one (${showDefine(r.defines[r.defines.length - 1])}) wins. Quote values with spaces or {a..b} ranges.\n`);
  }
  return loadConfig({ file: args.file, defines: args.defines, env: process.env });
}

function serve(args: Args): void {
  const loaded = load(args);
  const log = new Logger(loaded.config.LogLevel);
  const { createServer } = require('./server') as ServerModule;
  const server = createServer(loaded, log);
  const where = server.addresses.map((a) => `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`).join(', ');
  const n = loaded.config.Workgroups;
  const io = server.io;
  log.info(
    `starling listening on ${where} (path ${loaded.config.Path}) with ${n} workgroup${n === 1 ? '' : 's'} on ${io.backend}, ` +
      `at most ${io.maxConnections} connections`,
  );
  const c = loaded.config;
  if (c.ClusterEngine === 'redis')
    log.info(
      `cluster: node ${clusterNodeName(c)}, Redis ${c.ClusterRedis.map((a) => formatRedisAddress(a, true)).join(', ')} ` +
        `(tried in this order), ClusterDeliveryMode = ${c.ClusterDeliveryMode}`,
    );
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

const wantsHelp = (argv: string[]) => argv.slice(1).some((a) => a === '--help' || a === '-h');

function main(argv: string[]): number {
  try {
    const help = argv[0] === 'help' && argv[1] ? HELP[argv[1]] : Object.hasOwn(HELP, argv[0] ?? '') && wantsHelp(argv) ? HELP[argv[0]] : undefined;
    if (help !== undefined) {
      process.stdout.write((typeof help === 'function' ? help() : help) + '\n');
      return 0;
    }
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
            if (e instanceof AddonError) {
              process.stderr.write(`starling ${args.command}: ${e.message}\n`);
              process.exit(1);
            }
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
      const command = argv[0] ?? '';
      const more = Object.hasOwn(HELP, command) ? `Run \`starling ${command} --help\` for its options and an example.` : USAGE;
      process.stderr.write(`starling: ${e.message}\n\n${more}\n`);
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
