// Configuration: schema types, config file, environment and -D overrides, printing and the generated docs.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  ConfigError,
  SCHEMA,
  formatEffectiveConfig,
  loadConfig,
  renderConfigDocs,
  resolveConfig,
  type Config,
} from '../src/config/config';
import { memoryCeiling } from '../src/config/schema';

const ROOT = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-config-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let fileCount = 0;
/** Writes `lines` to a fresh config file and returns its path. */
function confFile(...lines: string[]): string {
  const file = path.join(tmp, `${++fileCount}.conf`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

/** The ConfigError that `fn` throws. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

/** The value `text` gives `key` (set through -D, parsed like the file). */
function parsed<K extends keyof Config>(key: K, text: string): Config[K] {
  return loadConfig({ defines: [`-D${key}=${text}`] }).config[key];
}
/** The error line `text` gives `key`. */
function rejected(key: keyof Config, text: string): string {
  const err = configError(() => loadConfig({ defines: [`-D${key}=${text}`] }));
  assert.equal(err.errors.length, 1);
  return err.errors[0];
}

const DEFAULTS: Config = {
  Listen: [{ host: '0.0.0.0', port: 8800 }],
  Path: '/',
  Workgroups: Math.min(64, os.availableParallelism()),
  WorkgroupCpus: [],
  BenchmarkMode: false,
  'BufferLimit.Send': 0,
  'BufferLimit.Receive': 0,
  MaxMessageSize: 65536,
  MaxSubscriptionsPerConnection: 1000,
  MaxBacklog: 1048576,
  MaxBacklogTime: 2000,
  Memory: Math.max(64 * 1048576, Math.floor(Math.max(0, memoryCeiling().bytes - 160 * 1048576) / 2 / 1048576) * 1048576),
  CacheSize: Math.floor(Math.max(64 * 1048576, Math.floor(Math.max(0, memoryCeiling().bytes - 160 * 1048576) / 2 / 1048576) * 1048576) / 8 / 1048576) * 1048576,
  MaxCachedMessagesPerSubject: 1000,
  CacheExpireTime: 180,
  MaxConnections: 0,
  KeepAlive: 30,
  LogLevel: 'info',
  Monitor: ['HTTP', 'PROMETHEUS'],
  'MonitorHTTP.Listen': [{ host: '127.0.0.1', port: 8900 }],
  'MonitorHTTP.Authentication': false,
  'MonitorHTTP.MaxConnections': 64,
  MonitorUsername: '',
  MonitorPassword: '',
  'Stats.LogInterval': 60,
};

const CLI_FOR_MEMORY = path.join(__dirname, '..', 'src', 'cli.js');

describe('defaults', () => {
  it('gives every key its documented default when nothing is configured', () => {
    const { config, sources } = loadConfig({});
    assert.deepEqual(config, DEFAULTS);
    for (const def of SCHEMA) assert.deepEqual(sources[def.name], { kind: 'default', where: 'default' });
  });

  it('gives the same defaults through resolveConfig({})', () => {
    assert.deepEqual(resolveConfig({}).config, DEFAULTS);
  });

  it('ignores process.env unless the environment is passed', () => {
    process.env.STARLING_WORKGROUPS = 'not a number';
    try {
      assert.equal(loadConfig({}).config.Workgroups, DEFAULTS.Workgroups);
    } finally {
      delete process.env.STARLING_WORKGROUPS;
    }
  });
});

describe('value types', () => {
  it('int accepts plain integers within its range', () => {
    assert.equal(parsed('Workgroups', '1'), 1);
    assert.equal(parsed('Workgroups', '64'), 64);
    assert.equal(parsed('MaxSubscriptionsPerConnection', '1000000'), 1000000);
  });

  it('int refuses fractions, signs, exponents, hex, suffixes and empty values', () => {
    for (const bad of ['4.5', '+4', '1e1', '0x10', '4K', '1_000', '', 'abc']) {
      assert.equal(
        rejected('Workgroups', bad),
        `-DWorkgroups=${bad}: Workgroups: expected an integer between 1 and 64, got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('int refuses values out of range', () => {
    assert.match(rejected('Workgroups', '0'), /expected an integer between 1 and 64, got "0"$/);
    assert.match(rejected('Workgroups', '65'), /got "65"$/);
    assert.match(rejected('Workgroups', '-1'), /got "-1"$/);
    assert.match(rejected('MaxSubscriptionsPerConnection', '1000001'), /between 1 and 1000000/);
  });

  it('size accepts bytes and binary K, KiB, M, MiB, G, GiB suffixes in any case', () => {
    const cases: [string, number][] = [
      ['65536', 65536],
      ['64K', 65536],
      ['64KiB', 65536],
      ['64k', 65536],
      ['1M', 1048576],
      ['1MiB', 1048576],
      ['1mib', 1048576],
      ['1G', 1073741824],
      ['1GiB', 1073741824],
    ];
    for (const [text, bytes] of cases) assert.equal(parsed('MaxBacklog', text), bytes, text);
  });

  it('size refuses ambiguous or malformed sizes', () => {
    for (const bad of ['64KB', '1MB', '1.5M', '-1K', '64 K', 'K', '1T', 'lots', '']) {
      assert.equal(
        rejected('MaxBacklog', bad),
        `-DMaxBacklog=${bad}: MaxBacklog: expected a size in bytes between 4096 and 1073741824 (e.g. 1M), ` +
          `got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('size checks its range inclusively', () => {
    assert.equal(parsed('MaxBacklog', '4K'), 4096);
    assert.equal(parsed('MaxBacklog', '1G'), 1073741824);
    assert.match(rejected('MaxBacklog', '4095'), /got "4095"$/);
    assert.match(rejected('MaxBacklog', '1025M'), /got "1025M"$/);
    assert.equal(parsed('BufferLimit.Send', '0'), 0);
    assert.equal(parsed('BufferLimit.Receive', '64M'), 64 * 1048576);
    assert.match(rejected('BufferLimit.Send', '65M'), /between 0 and 67108864/);
    assert.match(rejected('MaxMessageSize', '0'), /between 1 and 67108864/);
  });

  it('bool accepts true and false in any case and nothing else', () => {
    assert.equal(parsed('BenchmarkMode', 'true'), true);
    assert.equal(parsed('BenchmarkMode', 'FALSE'), false);
    assert.equal(parsed('BenchmarkMode', 'True'), true);
    for (const bad of ['yes', '1', 'on', '']) {
      assert.equal(rejected('BenchmarkMode', bad), `-DBenchmarkMode=${bad}: BenchmarkMode: expected true or false, got ${JSON.stringify(bad)}`);
    }
  });

  it('enum accepts its choices and normalises their case', () => {
    assert.equal(parsed('LogLevel', 'debug'), 'debug');
    assert.equal(parsed('LogLevel', 'WARN'), 'warn');
    assert.equal(rejected('LogLevel', 'verbose'), '-DLogLevel=verbose: LogLevel: expected one of error, warn, info, debug, got "verbose"');
  });

  it('listen accepts *, IPv4, bracketed IPv6 and host names, separated by commas and/or spaces', () => {
    assert.deepEqual(parsed('Listen', '*:8800'), [{ host: '0.0.0.0', port: 8800 }]);
    assert.deepEqual(parsed('Listen', '0.0.0.0:8800, 127.0.0.1:0 [::1]:8801,,localhost:65535'), [
      { host: '0.0.0.0', port: 8800 },
      { host: '127.0.0.1', port: 0 },
      { host: '::1', port: 8801 },
      { host: 'localhost', port: 65535 },
    ]);
    assert.deepEqual(parsed('Listen', '[::]:8800'), [{ host: '::', port: 8800 }]);
    assert.deepEqual(parsed('Listen', 'ws-1.example.com:80'), [{ host: 'ws-1.example.com', port: 80 }]);
  });

  it('listen refuses missing or bad ports and hosts, unbracketed IPv6 and empty lists', () => {
    for (const bad of ['localhost', ':8800', '*:', '*:65536', '*:-1', '::1:8800', '[::1]', '[localhost]:80', '1.2.3:80', 'a_b:80', '*:8800, nohost', '']) {
      assert.equal(
        rejected('Listen', bad),
        `-DListen=${bad}: Listen: expected a list of host:port separated by commas or spaces, port 0 to 65535 ` +
          `(e.g. *:8800, [::1]:8800), got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('cpulist accepts Linux CPU lists and empty for no pinning', () => {
    assert.deepEqual(parsed('WorkgroupCpus', '0,2-3'), [0, 2, 3]);
    assert.deepEqual(parsed('WorkgroupCpus', '3, 1'), [3, 1]);
    assert.deepEqual(parsed('WorkgroupCpus', '5'), [5]);
    assert.deepEqual(parsed('WorkgroupCpus', ''), []);
  });

  it('cpulist refuses reversed ranges, CPUs past 1023 and malformed lists', () => {
    for (const bad of ['3-1', '1024', '0-1024', 'a', '1,,2', '-1', '1-', '0 2']) {
      assert.equal(
        rejected('WorkgroupCpus', bad),
        `-DWorkgroupCpus=${bad}: WorkgroupCpus: expected a CPU list such as 0,2-3 (CPUs 0 to 1023), or nothing ` +
          `for no pinning, got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('path accepts printable ASCII starting with /', () => {
    assert.equal(parsed('Path', '/'), '/');
    assert.equal(parsed('Path', '/feed/v1?x=1'), '/feed/v1?x=1');
  });

  it('path refuses relative paths, spaces, backslashes and non-ASCII', () => {
    for (const bad of ['feed', '/a b', '/a\\b', '/é', '']) {
      assert.equal(
        rejected('Path', bad),
        `-DPath=${bad}: Path: expected a path starting with "/" of printable ASCII without spaces or backslashes, ` +
          `got ${JSON.stringify(bad)}`,
      );
    }
  });
});

describe('resource limits', () => {
  it('MaxBacklogTime is milliseconds from 0 to 10 minutes', () => {
    assert.equal(parsed('MaxBacklogTime', '0'), 0);
    assert.equal(parsed('MaxBacklogTime', '600000'), 600_000);
    assert.equal(rejected('MaxBacklogTime', '600001'), '-DMaxBacklogTime=600001: MaxBacklogTime: expected an integer between 0 and 600000, got "600001"');
  });

  it('Memory defaults to half of what the data-segment limit leaves after 160M for the runtime', () => {
    const out = execFileSync('prlimit', ['--data=402653184', '--', process.execPath, CLI_FOR_MEMORY, 'config', '--print'], { encoding: 'utf8' });
    assert.match(out, /^Memory\s+= 112M/m, 'RLIMIT_DATA 384M: (384M - 160M) / 2');
  });

  it('Memory is a size of at least 64M', () => {
    assert.equal(parsed('Memory', '64M'), 64 * 1048576);
    assert.equal(parsed('Memory', '12G'), 12 * 1073741824);
    assert.match(rejected('Memory', '63M'), /^-DMemory=63M: Memory: expected a size in bytes between 67108864 and \d+ \(e\.g\. 8G\), got "63M"$/);
  });

  it('MaxConnections is 0 (derived from the open-file limit) to 10 million; KeepAlive 0 (off) to an hour', () => {
    assert.equal(parsed('MaxConnections', '0'), 0);
    assert.equal(parsed('MaxConnections', '10000000'), 10_000_000);
    assert.match(rejected('MaxConnections', '10000001'), /expected an integer between 0 and 10000000/);
    assert.equal(parsed('KeepAlive', '0'), 0);
    assert.equal(parsed('KeepAlive', '3600'), 3600);
    assert.match(rejected('KeepAlive', '3601'), /expected an integer between 0 and 3600/);
  });

  it('MonitorHTTP.MaxConnections is 1 to 10000', () => {
    assert.equal(parsed('MonitorHTTP.MaxConnections', '1'), 1);
    assert.match(rejected('MonitorHTTP.MaxConnections', '0'), /expected an integer between 1 and 10000/);
  });
});

describe('monitoring keys', () => {
  it('enumlist accepts the choices in any case, separated by commas or spaces, each once; empty is none', () => {
    assert.deepEqual(parsed('Monitor', 'HTTP, PROMETHEUS'), ['HTTP', 'PROMETHEUS']);
    assert.deepEqual(parsed('Monitor', 'prometheus http'), ['PROMETHEUS', 'HTTP']);
    assert.deepEqual(parsed('Monitor', 'Http,http'), ['HTTP']);
    assert.deepEqual(parsed('Monitor', ''), []);
    assert.deepEqual(resolveConfig({ Monitor: ['prometheus'] }).config.Monitor, ['PROMETHEUS']);
    assert.deepEqual(resolveConfig({ Monitor: [] }).config.Monitor, []);
  });

  it('enumlist refuses unknown words', () => {
    for (const bad of ['JMX', 'HTTP, JMX', 'HTTP;PROMETHEUS']) {
      assert.equal(
        rejected('Monitor', bad),
        `-DMonitor=${bad}: Monitor: expected a list of HTTP, PROMETHEUS separated by commas or spaces, or nothing, got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('MonitorHTTP.Listen takes exactly one address', () => {
    assert.deepEqual(parsed('MonitorHTTP.Listen', '*:8900'), [{ host: '0.0.0.0', port: 8900 }]);
    assert.deepEqual(parsed('MonitorHTTP.Listen', '[::1]:0'), [{ host: '::1', port: 0 }]);
    for (const bad of ['127.0.0.1:8900, 127.0.0.2:8900', '', 'localhost']) {
      assert.equal(
        rejected('MonitorHTTP.Listen', bad),
        `-DMonitorHTTP.Listen=${bad}: MonitorHTTP.Listen: expected one host:port, port 0 to 65535 (e.g. 127.0.0.1:8900), got ${JSON.stringify(bad)}`,
      );
    }
    assert.throws(() => resolveConfig({ 'MonitorHTTP.Listen': ['127.0.0.1:1', '127.0.0.1:2'] }), ConfigError);
  });

  it('string takes any text without control characters', () => {
    assert.equal(parsed('MonitorPassword', 'p#ss w:rd é'), 'p#ss w:rd é');
    assert.equal(parsed('MonitorUsername', ''), '');
    assert.equal(resolveConfig({ MonitorPassword: 'a\\b' }).config.MonitorPassword, 'a\\b');
    for (const bad of ['a\tb', 'a\u0000b']) {
      assert.equal(rejected('MonitorPassword', bad), `-DMonitorPassword=${bad}: MonitorPassword: expected text without control characters, got ${JSON.stringify(bad)}`);
    }
    assert.throws(() => resolveConfig({ MonitorPassword: 'line\nbreak' }), ConfigError);
    assert.equal(resolveConfig({ MonitorPassword: ' padded ' }).config.MonitorPassword, 'padded', 'trimmed like the file');
    assert.throws(() => resolveConfig({ MonitorPassword: 'ends in \\' }), ConfigError);
    assert.throws(() => resolveConfig({ MonitorPassword: 42 }), ConfigError);
  });

  it('Stats.LogInterval is at least 5 seconds', () => {
    assert.equal(parsed('Stats.LogInterval', '5'), 5);
    assert.match(rejected('Stats.LogInterval', '4'), /expected an integer between 5 and 86400, got "4"$/);
  });

  it('MonitorHTTP.Authentication = true needs both credentials, naming where it was set', () => {
    const file = confFile('MonitorHTTP.Authentication = true', 'MonitorUsername = ops');
    assert.deepEqual(configError(() => loadConfig({ file })).errors, [
      `${file}:1: MonitorHTTP.Authentication: expected MonitorUsername and MonitorPassword to be set when true, got MonitorPassword empty`,
    ]);
    assert.deepEqual(configError(() => loadConfig({ env: { STARLING_MONITORHTTP_AUTHENTICATION: 'true' } })).errors, [
      'environment STARLING_MONITORHTTP_AUTHENTICATION: MonitorHTTP.Authentication: expected MonitorUsername and MonitorPassword ' +
        'to be set when true, got MonitorUsername and MonitorPassword empty',
    ]);
    const ok = loadConfig({ file, defines: ['-DMonitorPassword=secret'] }).config;
    assert.deepEqual([ok['MonitorHTTP.Authentication'], ok.MonitorUsername, ok.MonitorPassword], [true, 'ops', 'secret']);
  });

  it('MonitorHTTP.Listen may not share the client port unless monitoring is off', () => {
    assert.deepEqual(configError(() => loadConfig({ defines: ['-DMonitorHTTP.Listen=127.0.0.1:8800'] })).errors, [
      '-DMonitorHTTP.Listen=127.0.0.1:8800: MonitorHTTP.Listen: expected a port other than the client port (Listen), got 8800',
    ]);
    assert.throws(() => resolveConfig({ Listen: '127.0.0.1:9000', 'MonitorHTTP.Listen': '*:9000' }), ConfigError);
    // Different addresses, port 0 (any free port), or monitoring off: no clash.
    assert.equal(resolveConfig({ Listen: '127.0.0.1:9000', 'MonitorHTTP.Listen': '127.0.0.2:9000' }).config.Monitor.length, 2);
    assert.equal(resolveConfig({ Listen: '127.0.0.1:0', 'MonitorHTTP.Listen': '127.0.0.1:0' }).config.Monitor.length, 2);
    assert.deepEqual(resolveConfig({ Monitor: '', 'MonitorHTTP.Listen': '127.0.0.1:8800' }).config.Monitor, []);
  });

  it('reports other errors without the credentials rule, which needs valid values to judge', () => {
    const err = configError(() => loadConfig({ defines: ['-DMonitorHTTP.Authentication=true', '-DWorkgroups=0'] }));
    assert.deepEqual(err.errors, ['-DWorkgroups=0: Workgroups: expected an integer between 1 and 64, got "0"']);
  });
});

describe('config file', () => {
  it('reads Key = Value lines with optional whitespace, comments and blank lines', () => {
    const file = confFile(
      '# a comment',
      '   # an indented comment',
      '',
      'Listen=127.0.0.1:9000',
      '  Workgroups   =   3  ',
      'Path = /a#b',
      '\t',
    );
    const { config, sources } = loadConfig({ file });
    assert.deepEqual(config.Listen, [{ host: '127.0.0.1', port: 9000 }]);
    assert.equal(config.Workgroups, 3);
    assert.equal(config.Path, '/a#b', 'a # inside a value is part of the value');
    assert.deepEqual(sources.Workgroups, { kind: 'file', where: `${file}:5` });
    assert.deepEqual(sources.LogLevel, { kind: 'default', where: 'default' });
  });

  it('accepts CRLF line endings and a byte-order mark', () => {
    const file = path.join(tmp, 'crlf.conf');
    fs.writeFileSync(file, '\uFEFFWorkgroups = 2\r\nLogLevel = warn\r\n');
    const { config } = loadConfig({ file });
    assert.equal(config.Workgroups, 2);
    assert.equal(config.LogLevel, 'warn');
  });

  it('joins a line ending in a backslash with the next one, with one space', () => {
    const file = confFile('Listen = *:8800, \\', '         [::1]:8801 \\', '   127.0.0.1:8802', 'Workgroups = 2');
    const { config, sources } = loadConfig({ file });
    assert.deepEqual(config.Listen, [
      { host: '0.0.0.0', port: 8800 },
      { host: '::1', port: 8801 },
      { host: '127.0.0.1', port: 8802 },
    ]);
    assert.equal(sources.Listen.where, `${file}:1`);
    assert.deepEqual(sources.Workgroups, { kind: 'file', where: `${file}:4` });
  });

  it('reports an error in a continued line at its first line', () => {
    const file = confFile('# header', 'WorkgroupCpus = 0,\\', '  x');
    assert.equal(
      configError(() => loadConfig({ file })).message,
      `${file}:2: WorkgroupCpus: expected a CPU list such as 0,2-3 (CPUs 0 to 1023), or nothing for no pinning, got "0, x"`,
    );
  });

  it('reports an unknown key with the nearest known key', () => {
    const file = confFile('# c', '', 'Workgroup = 4');
    assert.equal(configError(() => loadConfig({ file })).message, `${file}:3: unknown key "Workgroup" (did you mean "Workgroups"?)`);
  });

  it('suggests the key that differs only in case, however far', () => {
    const file = confFile('maxsubscriptionsperconnection = 5', 'BUFFERLIMIT.SEND = 1K');
    assert.deepEqual(configError(() => loadConfig({ file })).errors, [
      `${file}:1: unknown key "maxsubscriptionsperconnection" (did you mean "MaxSubscriptionsPerConnection"?)`,
      `${file}:2: unknown key "BUFFERLIMIT.SEND" (did you mean "BufferLimit.Send"?)`,
    ]);
  });

  it('suggests nothing for an unknown key far from every known key', () => {
    const file = confFile('Colourful = yes');
    assert.equal(configError(() => loadConfig({ file })).message, `${file}:1: unknown key "Colourful"`);
  });

  it('reports a bad value with file, line, key, what was expected and what was given', () => {
    const file = confFile(...Array(11).fill('#'), 'MaxBacklog = lots');
    assert.equal(
      configError(() => loadConfig({ file })).message,
      `${file}:12: MaxBacklog: expected a size in bytes between 4096 and 1073741824 (e.g. 1M), got "lots"`,
    );
  });

  it('reports a value out of range', () => {
    const file = confFile('Workgroups = 65');
    assert.equal(configError(() => loadConfig({ file })).message, `${file}:1: Workgroups: expected an integer between 1 and 64, got "65"`);
  });

  it('reports a key set twice, naming both lines', () => {
    const file = confFile('Workgroups = 2', 'LogLevel = warn', 'Workgroups = 3');
    assert.equal(
      configError(() => loadConfig({ file })).message,
      `${file}:3: Workgroups: set twice, first on line 1 and again on line 3`,
    );
  });

  it('reports a line without =', () => {
    const file = confFile('Workgroups 4', '= 4');
    assert.deepEqual(configError(() => loadConfig({ file })).errors, [
      `${file}:1: expected Key = Value, got "Workgroups 4"`,
      `${file}:2: expected Key = Value, got "= 4"`,
    ]);
  });

  it('reports a missing file with its path and the OS reason', () => {
    const file = path.join(tmp, 'missing.conf');
    assert.equal(
      configError(() => loadConfig({ file })).message,
      `${file}: cannot read the config file: no such file or directory (ENOENT)`,
    );
  });

  it('reports an unreadable file with its path and the OS reason', () => {
    assert.equal(
      configError(() => loadConfig({ file: tmp })).message,
      `${tmp}: cannot read the config file: illegal operation on a directory (EISDIR)`,
    );
  });

  it('collects every error of a file into one ConfigError', () => {
    const file = confFile('Workgroups = many', 'Workgroup = 2', 'LogLevel = loud', 'Path = /ok', 'nonsense');
    const err = configError(() => loadConfig({ file }));
    assert.equal(err.name, 'ConfigError');
    assert.deepEqual(err.errors, [
      `${file}:1: Workgroups: expected an integer between 1 and 64, got "many"`,
      `${file}:2: unknown key "Workgroup" (did you mean "Workgroups"?)`,
      `${file}:3: LogLevel: expected one of error, warn, info, debug, got "loud"`,
      `${file}:5: expected Key = Value, got "nonsense"`,
    ]);
    assert.equal(err.message, err.errors.join('\n'));
  });

  it('reads the file named by STARLING_CONFIG when no file is given', () => {
    const file = confFile('Workgroups = 3');
    assert.equal(loadConfig({ env: { STARLING_CONFIG: file } }).config.Workgroups, 3);
    const other = confFile('Workgroups = 4');
    assert.equal(loadConfig({ file: other, env: { STARLING_CONFIG: file } }).config.Workgroups, 4);
  });
});

describe('environment and -D overrides', () => {
  it('applies default < file < environment < -D', () => {
    const file = confFile('Workgroups = 2', 'MaxBacklog = 2M', 'LogLevel = warn');
    const { config, sources } = loadConfig({
      file,
      env: { STARLING_MAXBACKLOG: '3M', STARLING_WORKGROUPS: '3', PATH: '/usr/bin' },
      defines: ['-DWorkgroups=4'],
    });
    assert.equal(config.Workgroups, 4);
    assert.equal(config.MaxBacklog, 3 * 1048576);
    assert.equal(config.LogLevel, 'warn');
    assert.equal(config.Path, '/');
    assert.deepEqual(sources.Workgroups, { kind: 'command line', where: '-DWorkgroups=4' });
    assert.deepEqual(sources.MaxBacklog, { kind: 'environment', where: 'STARLING_MAXBACKLOG' });
    assert.deepEqual(sources.LogLevel, { kind: 'file', where: `${file}:3` });
    assert.deepEqual(sources.Path, { kind: 'default', where: 'default' });
  });

  it('names the environment variable of a dotted key with _ for .', () => {
    const { config, sources } = loadConfig({ env: { STARLING_BUFFERLIMIT_SEND: '256K', STARLING_BUFFERLIMIT_RECEIVE: '16K' } });
    assert.equal(config['BufferLimit.Send'], 262144);
    assert.equal(config['BufferLimit.Receive'], 16384);
    assert.deepEqual(sources['BufferLimit.Send'], { kind: 'environment', where: 'STARLING_BUFFERLIMIT_SEND' });
  });

  it('lets the last -D of a key win and accepts Key=value without the -D prefix', () => {
    const { config, sources } = loadConfig({ defines: ['-DWorkgroups=2', 'Workgroups = 5', '-DBufferLimit.Send=1K'] });
    assert.equal(config.Workgroups, 5);
    assert.equal(sources.Workgroups.where, 'Workgroups = 5');
    assert.equal(config['BufferLimit.Send'], 1024);
  });

  it('names the -D argument in its errors', () => {
    assert.deepEqual(configError(() => loadConfig({ defines: ['-DWorkgroups=abc', '-DWorkgrups=2', '-DLogLevel'] })).errors, [
      '-DWorkgroups=abc: Workgroups: expected an integer between 1 and 64, got "abc"',
      '-DWorkgrups=2: unknown key "Workgrups" (did you mean "Workgroups"?)',
      '-DLogLevel: expected -DKey=value, got "-DLogLevel"',
    ]);
  });

  it('names the environment variable in its errors', () => {
    assert.equal(
      configError(() => loadConfig({ env: { STARLING_MAXBACKLOG: '1K' } })).message,
      'environment STARLING_MAXBACKLOG: MaxBacklog: expected a size in bytes between 4096 and 1073741824 (e.g. 1M), got "1K"',
    );
  });

  it('reports an unknown STARLING_ variable with a suggestion, but not STARLING_CONFIG or other variables', () => {
    const file = confFile('LogLevel = info');
    const err = configError(() =>
      loadConfig({ env: { STARLING_WORKGROUP: '2', STARLING_COLOURFUL: '1', STARLING_CONFIG: file, HOME: '/root' } }),
    );
    assert.deepEqual(err.errors, [
      'environment: unknown variable "STARLING_COLOURFUL"',
      'environment: unknown variable "STARLING_WORKGROUP" (did you mean "STARLING_WORKGROUPS"?)',
    ]);
  });

  it('collects the errors of file, environment and -D into one ConfigError', () => {
    const file = confFile('Workgroups = x');
    const err = configError(() => loadConfig({ file, env: { STARLING_PATH: 'relative' }, defines: ['-DLogLevel=loud'] }));
    assert.equal(err.errors.length, 3);
    assert.match(err.errors[0], new RegExp(`^${file.replace(/[.\\]/g, '\\$&')}:1: Workgroups:`));
    assert.match(err.errors[1], /^environment STARLING_PATH: Path:/);
    assert.match(err.errors[2], /^-DLogLevel=loud: LogLevel:/);
  });
});

describe('resolveConfig', () => {
  it('accepts typed values and strings in file syntax', () => {
    const { config, sources } = resolveConfig({
      Listen: ['*:0', { host: '::1', port: 8801 }],
      Workgroups: 2,
      WorkgroupCpus: [1, 0],
      BenchmarkMode: true,
      'BufferLimit.Send': '128K',
      MaxBacklog: 8192,
      LogLevel: 'debug',
      Path: undefined,
    });
    assert.deepEqual(config.Listen, [
      { host: '0.0.0.0', port: 0 },
      { host: '::1', port: 8801 },
    ]);
    assert.equal(config.Workgroups, 2);
    assert.deepEqual(config.WorkgroupCpus, [1, 0]);
    assert.equal(config.BenchmarkMode, true);
    assert.equal(config['BufferLimit.Send'], 131072);
    assert.equal(config.MaxBacklog, 8192);
    assert.equal(config.Path, '/', 'an undefined value keeps the default');
    assert.deepEqual(sources.Workgroups, { kind: 'api', where: 'createServer()' });
    assert.deepEqual(sources.Path, { kind: 'default', where: 'default' });
  });

  it('validates like the file and names createServer() in its errors', () => {
    const err = configError(() =>
      resolveConfig({ Workgroups: 0, MaxBacklog: 1.5, BenchmarkMode: 'yes', Path: 5, Listen: [], workgroupcpus: [0] }),
    );
    assert.deepEqual(err.errors, [
      'createServer(): Workgroups: expected an integer between 1 and 64, got 0',
      'createServer(): MaxBacklog: expected a size in bytes between 4096 and 1073741824 (e.g. 1M), got 1.5',
      'createServer(): BenchmarkMode: expected true or false, got "yes"',
      'createServer(): Path: expected a path starting with "/" of printable ASCII without spaces or backslashes, got 5',
      'createServer(): Listen: expected a list of host:port separated by commas or spaces, port 0 to 65535 (e.g. *:8800, [::1]:8800), got []',
      'createServer(): unknown key "workgroupcpus" (did you mean "WorkgroupCpus"?)',
    ]);
  });

  it('refuses listen objects with a bad host or port and CPU lists with bad numbers', () => {
    assert.throws(() => resolveConfig({ Listen: [{ host: 'a b', port: 1 }] }), ConfigError);
    assert.throws(() => resolveConfig({ Listen: [{ host: 'localhost', port: 70000 }] }), ConfigError);
    assert.throws(() => resolveConfig({ WorkgroupCpus: [-1] }), ConfigError);
    assert.throws(() => resolveConfig({ WorkgroupCpus: [0.5] }), ConfigError);
  });
});

describe('formatEffectiveConfig', () => {
  it('prints every key with its source, = aligned, as a config file that loads to the same config', () => {
    const file = confFile('Listen = *:8800, [::1]:0, localhost:9000', 'Path = /feed?v=1#x', 'MaxBacklog = 1000000');
    const loaded = loadConfig({
      file,
      env: { STARLING_WORKGROUPCPUS: '0,2-3,3,7', STARLING_BUFFERLIMIT_SEND: '256K' },
      defines: ['-DBenchmarkMode=TRUE', '-DLogLevel=debug', '-DMaxMessageSize=64M'],
    });
    const text = formatEffectiveConfig(loaded);
    for (const def of SCHEMA) assert.match(text, new RegExp(`^${def.name.replace('.', '\\.')} +=`, 'm'));
    const columns = new Set(text.split('\n').filter((l) => /^\w/.test(l)).map((l) => l.indexOf('=')));
    assert.equal(columns.size, 1, 'every = in the same column');
    assert.match(text, new RegExp(`^# from ${file.replace(/[.\\]/g, '\\$&')}:1\nListen +=`, 'm'));
    assert.match(text, /^# from environment STARLING_WORKGROUPCPUS\nWorkgroupCpus +=/m);
    assert.match(text, /^# from command line -DLogLevel=debug\nLogLevel +=/m);
    assert.match(text, /^# default\nMaxSubscriptionsPerConnection +=/m);

    const printed = path.join(tmp, 'printed.conf');
    fs.writeFileSync(printed, text);
    assert.deepEqual(loadConfig({ file: printed }).config, loaded.config);
  });

  it('round-trips the defaults and API values', () => {
    for (const loaded of [loadConfig({}), resolveConfig({ WorkgroupCpus: [], Listen: '127.0.0.1:0', 'BufferLimit.Receive': 1000 })]) {
      const printed = path.join(tmp, 'printed.conf');
      fs.writeFileSync(printed, formatEffectiveConfig(loaded));
      assert.deepEqual(loadConfig({ file: printed }).config, loaded.config);
    }
  });
});

describe('bundled files', () => {
  it('starling.conf at the repository root parses to the defaults', () => {
    const { config, sources } = loadConfig({ file: path.join(ROOT, 'starling.conf') });
    assert.deepEqual(config, DEFAULTS);
    assert.equal(sources.Listen.kind, 'file');
  });

  it('docs/configuration.md is the output of renderConfigDocs()', () => {
    const docs = fs.readFileSync(path.resolve(__dirname, '../../docs/configuration.md'), 'utf8');
    assert.equal(docs, renderConfigDocs(), 'regenerate with: node dist/src/config/gendocs.js docs/configuration.md');
  });

  it('the docs name every key with its environment variable', () => {
    const docs = renderConfigDocs();
    for (const def of SCHEMA) {
      assert.ok(docs.includes(`### ${def.name}\n`), def.name);
      assert.ok(docs.includes(`\`STARLING_${def.name.toUpperCase().replace('.', '_')}\``), def.name);
    }
  });

  it('gendocs --check fails with a clear message on a stale file and passes on a fresh one', () => {
    const script = path.join(ROOT, 'dist/src/config/gendocs.js');
    const stale = path.join(tmp, 'configuration.md');
    fs.writeFileSync(stale, '# old\n');
    assert.throws(
      () => execFileSync(process.execPath, [script, '--check', stale], { stdio: 'pipe' }),
      (err: { status: number; stderr: Buffer }) =>
        err.status === 1 && err.stderr.toString().includes(`${stale} is out of date`),
    );
    execFileSync(process.execPath, [script, stale], { stdio: 'pipe' });
    execFileSync(process.execPath, [script, '--check', stale], { stdio: 'pipe' });
    assert.equal(fs.readFileSync(stale, 'utf8'), renderConfigDocs());
  });
});
