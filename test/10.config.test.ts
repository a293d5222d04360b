// Configuration: schema types, config file, environment and -D overrides, printing and the generated docs.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  ConfigError,
  SCHEMA,
  configWarnings,
  showDefine,
  formatEffectiveConfig,
  loadConfig,
  renderConfigDocs,
  resolveConfig,
  strayArgument,
  type Config,
} from '../src/config/config';
import { clusterNodeName, memoryCeiling } from '../src/config/schema';
import { TYPES, type RedisAddress } from '../src/config/types';
import { jwtOptionsFromConfig, matchesAddressList, mayPublishFrom } from '../src/entitlement/config';
import { createJwtVerifier } from '../src/entitlement/jwt';

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
  IoBackend: 'epoll',
  KeepAlive: 30,
  Entitlement: 'None',
  'Entitlement.AllowToken': '',
  'Entitlement.JWT.Secret': '',
  'Entitlement.JWT.PublicKey': '',
  'Entitlement.JWT.Algorithms': [],
  'Entitlement.JWT.Audience': '',
  'Entitlement.JWT.Issuer': '',
  'Entitlement.RenewBefore': 60,
  PublishAllowFromAddressList: [],
  'HTTP.AllowOrigins': [],
  'HTTP.SseRetry': 2000,
  ClusterEngine: 'none',
  ClusterRedis: [{ host: '127.0.0.1', port: 6379, user: '', password: '', db: 0 }],
  ClusterDeliveryMode: 'Standard',
  ClusterNodeName: '',
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
      assert.equal(rejected('MonitorUsername', bad), `-DMonitorUsername=${bad}: MonitorUsername: expected text without control characters, got ${JSON.stringify(bad)}`);
      // MonitorPassword is a secret: neither the argument's value nor the value itself is shown.
      assert.equal(rejected('MonitorPassword', bad), '-DMonitorPassword=…: MonitorPassword: expected text without control characters, got a secret of 3 characters');
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

// ---- entitlement ----

/** Valid secrets and tokens, made up for the tests: 32 and 64 bytes of base64, a 32-character token. */
const SECRET32 = crypto.randomBytes(32);
const SECRET64 = crypto.randomBytes(64);
const TOKEN = crypto.randomBytes(16).toString('hex');

/** Writes `text` to a file in the test directory and returns its path. */
function keyFile(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}
const spki = (k: crypto.KeyObject) => k.export({ type: 'spki', format: 'pem' }).toString();
const rsa2048 = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const p256 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });

/** A JWT signed by the test itself (Node's crypto), expiring in an hour. */
function signedToken(alg: string, key: crypto.KeyObject | Buffer, claims: object = {}): string {
  const b64u = (x: string | Buffer) => Buffer.from(x).toString('base64url');
  const input = `${b64u(JSON.stringify({ alg, typ: 'JWT' }))}.${b64u(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }))}`;
  const hash = `sha${alg.slice(2)}`;
  const signature = Buffer.isBuffer(key)
    ? crypto.createHmac(hash, key).update(input).digest()
    : crypto.sign(hash, Buffer.from(input), alg.startsWith('ES') ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${input}.${b64u(signature)}`;
}

/** The errors loading `lines` as a config file gives, with the file's path as `F`. */
function fileErrors(...lines: string[]): string[] {
  const file = confFile(...lines);
  return configError(() => loadConfig({ file })).errors.map((e) => e.split(file).join('F'));
}

describe('Entitlement', () => {
  it('is None, Basic, JWT or Custom, in any case; None by default', () => {
    assert.equal(loadConfig({}).config.Entitlement, 'None');
    assert.equal(parsed('Entitlement', 'CUSTOM'), 'Custom');
    assert.equal(loadConfig({ defines: ['-DEntitlement=jwt', `-DEntitlement.JWT.Secret=${SECRET32.toString('base64')}`] }).config.Entitlement, 'JWT');
    assert.equal(resolveConfig({ Entitlement: 'Basic', 'Entitlement.AllowToken': TOKEN }).config.Entitlement, 'Basic');
    assert.deepEqual(fileErrors('# c', 'Entitlement = OAuth'), ['F:2: Entitlement: expected one of None, Basic, JWT, Custom, got "OAuth"']);
  });

  it('Basic needs Entitlement.AllowToken, naming where Entitlement was set', () => {
    assert.deepEqual(fileErrors('Listen = *:8800', 'Entitlement = Basic'), [
      'F:2: Entitlement: expected Entitlement.AllowToken to be set when Basic, got it empty; set it to a token of 16 or ' +
        'more characters, e.g. the output of openssl rand -hex 32',
    ]);
    const ok = loadConfig({ defines: ['-DEntitlement=Basic'], env: { STARLING_ENTITLEMENT_ALLOWTOKEN: TOKEN } }).config;
    assert.equal(ok['Entitlement.AllowToken'], TOKEN);
  });

  it('JWT needs exactly one of Entitlement.JWT.Secret and Entitlement.JWT.PublicKey', () => {
    assert.deepEqual(fileErrors('Entitlement = JWT'), [
      'F:1: Entitlement: expected Entitlement.JWT.Secret or Entitlement.JWT.PublicKey to be set when JWT, got both ' +
        'empty: set Secret for HMAC-signed tokens (HS256/384/512) or PublicKey for RSA/EC-signed ones',
    ]);
    const pub = keyFile('both.pem', spki(p256.publicKey));
    assert.deepEqual(
      fileErrors('Entitlement = JWT', `Entitlement.JWT.Secret = ${SECRET32.toString('base64')}`, `Entitlement.JWT.PublicKey = ${pub}`),
      [
        'F:3: Entitlement.JWT.PublicKey: expected only one of Entitlement.JWT.Secret and Entitlement.JWT.PublicKey to be ' +
          'set, got both: keep Secret for HMAC-signed tokens or PublicKey for RSA/EC-signed ones, and remove the other',
      ],
    );
  });

  it('refuses a key of another mode, saying which mode uses it', () => {
    const pub = keyFile('other-mode.pem', spki(p256.publicKey));
    assert.deepEqual(
      fileErrors(
        `Entitlement.JWT.Secret = ${SECRET32.toString('base64')}`,
        `Entitlement.JWT.PublicKey = ${pub}`,
        'Entitlement.JWT.Algorithms = ES256',
        'Entitlement.JWT.Audience = starling',
        'Entitlement.JWT.Issuer = https://auth.example.com/',
        `Entitlement.AllowToken = ${TOKEN}`,
        'Entitlement.RenewBefore = 30',
      ),
      [
        'F:6: Entitlement.AllowToken: is set but Entitlement is None (default), and only Entitlement = Basic uses it: set Entitlement = Basic, or remove Entitlement.AllowToken',
        'F:1: Entitlement.JWT.Secret: is set but Entitlement is None (default), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.Secret',
        'F:2: Entitlement.JWT.PublicKey: is set but Entitlement is None (default), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.PublicKey',
        'F:3: Entitlement.JWT.Algorithms: is set but Entitlement is None (default), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.Algorithms',
        'F:4: Entitlement.JWT.Audience: is set but Entitlement is None (default), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.Audience',
        'F:5: Entitlement.JWT.Issuer: is set but Entitlement is None (default), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.Issuer',
        'F:7: Entitlement.RenewBefore: is set but Entitlement is None (default), and only Entitlement = JWT or Custom uses it: set Entitlement = JWT, or remove Entitlement.RenewBefore',
      ],
    );
    const file = confFile('Entitlement = Basic', `Entitlement.AllowToken = ${TOKEN}`, 'Entitlement.JWT.Audience = x');
    assert.deepEqual(configError(() => loadConfig({ file })).errors, [
      `${file}:3: Entitlement.JWT.Audience: is set but Entitlement is Basic (from ${file}:1), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.Audience`,
    ]);
    assert.deepEqual(configError(() => resolveConfig({ Entitlement: 'Custom', 'Entitlement.AllowToken': TOKEN })).errors, [
      'createServer(): Entitlement.AllowToken: is set but Entitlement is Custom (from createServer()), and only Entitlement = Basic uses it: set Entitlement = Basic, or remove Entitlement.AllowToken',
    ]);
    assert.deepEqual(configError(() => loadConfig({ defines: ['-DEntitlement.JWT.Secret=' + SECRET32.toString('base64')] })).errors, [
      '-DEntitlement.JWT.Secret=…: Entitlement.JWT.Secret: is set but Entitlement is None (default), and only Entitlement = JWT uses it: set Entitlement = JWT, or remove Entitlement.JWT.Secret',
    ]);
  });

  it('lets keys of another mode stay at their defaults, and Custom use RenewBefore', () => {
    const file = confFile('Entitlement.JWT.Audience =', 'Entitlement.RenewBefore = 60', 'Entitlement.AllowToken =');
    assert.equal(loadConfig({ file }).config.Entitlement, 'None');
    assert.equal(resolveConfig({ Entitlement: 'Custom', 'Entitlement.RenewBefore': 120 }).config['Entitlement.RenewBefore'], 120);
  });
});

describe('Entitlement.AllowToken', () => {
  it('takes 16 to 8192 printable ASCII characters without spaces, or nothing', () => {
    const punctuation = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~x';
    for (const good of ['a'.repeat(16), 'a'.repeat(8192), TOKEN, punctuation]) {
      const c = loadConfig({ defines: ['-DEntitlement=Basic', `-DEntitlement.AllowToken=${good}`] }).config;
      assert.equal(c['Entitlement.AllowToken'], good);
    }
    assert.equal(parsed('Entitlement.AllowToken', ''), '');
  });

  it('refuses short, long, spaced, non-ASCII and backslash-ended tokens with file:line, without showing them', () => {
    const expected = 'expected 16 to 8192 printable ASCII characters without spaces, or nothing';
    const cases: [string, string][] = [
      ['a'.repeat(15), 'a secret of 15 characters (15 characters, fewer than 16)'],
      ['a'.repeat(8193), 'a secret of 8193 characters (8193 characters, more than 8192)'],
      ['abcdefgh ijklmnopq', 'a secret of 18 characters (a space at character 9)'],
      ['abcdefghijklmnopé', 'a secret of 17 characters (a non-ASCII character at character 17)'],
    ];
    for (const [bad, got] of cases) {
      assert.deepEqual(fileErrors('Entitlement = Basic', '#', `Entitlement.AllowToken = ${bad}`), [`F:3: Entitlement.AllowToken: ${expected}, got ${got}`]);
    }
    assert.deepEqual(configError(() => loadConfig({ env: { STARLING_ENTITLEMENT_ALLOWTOKEN: 'abcdefghijklmnop\\' } })).errors, [
      `environment STARLING_ENTITLEMENT_ALLOWTOKEN: Entitlement.AllowToken: ${expected}, got a secret of 17 characters ` +
        '(a backslash at the end (in a config file it would continue the line))',
    ]);
    assert.deepEqual(configError(() => resolveConfig({ 'Entitlement.AllowToken': 'tab\there-and-more-text' })).errors, [
      `createServer(): Entitlement.AllowToken: ${expected}, got a secret of 22 characters (a control character at character 4)`,
    ]);
    assert.deepEqual(configError(() => resolveConfig({ 'Entitlement.AllowToken': 1234567890123456 })).errors, [
      `createServer(): Entitlement.AllowToken: ${expected}, got a secret that is a number`,
    ]);
  });
});

describe('Entitlement.JWT.Secret', () => {
  it('takes base64 of at least 32 bytes, standard or URL alphabet, padded or not', () => {
    const bytes = Buffer.from(Array.from({ length: 35 }, (_, i) => 250 - i)); // + and / in base64, - and _ in base64url
    for (const good of [
      SECRET32.toString('base64'),
      SECRET64.toString('base64'),
      bytes.toString('base64'),
      bytes.toString('base64').replace(/=+$/, ''),
      bytes.toString('base64url'),
      bytes.toString('base64url') + '=',
    ]) {
      const c = loadConfig({ defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.Secret=${good}`] }).config;
      assert.equal(c['Entitlement.JWT.Secret'], good, 'kept as written');
    }
  });

  it('refuses what is not base64 or too short, with file:line and without showing it', () => {
    const expected = 'expected base64 of at least 32 bytes (standard or URL alphabet, = padding optional), or nothing';
    const short = crypto.randomBytes(31).toString('base64');
    const cases: [string, string][] = [
      [short, `a secret of 44 characters (it decodes to 31 bytes, fewer than 32; generate one with: openssl rand -base64 64)`],
      ['abc*' + SECRET32.toString('hex'), 'a secret of 68 characters (not base64: a character outside A-Z, a-z, 0-9, +, /, -, _ and = at character 4)'],
      ['ab+_' + SECRET32.toString('hex'), 'a secret of 68 characters (not base64: it mixes the standard (+ /) and URL (- _) alphabets)'],
      ['ab=c' + SECRET32.toString('hex'), 'a secret of 68 characters (not base64: = may only pad the end, at most twice)'],
      [SECRET32.toString('hex') + 'a', 'a secret of 65 characters (not base64: 65 characters cannot be base64 (the padding or the length is wrong))'],
    ];
    for (const [bad, got] of cases) {
      const errors = fileErrors('Entitlement = JWT', '', '', `Entitlement.JWT.Secret = ${bad}`);
      assert.deepEqual(errors, [`F:4: Entitlement.JWT.Secret: ${expected}, got ${got}`]);
    }
  });

  it('HS algorithms need a secret long enough for them; RS/PS/ES need a public key', () => {
    const s32 = SECRET32.toString('base64');
    assert.deepEqual(
      loadConfig({ defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.Secret=${SECRET64.toString('base64')}`, '-DEntitlement.JWT.Algorithms=hs512 HS256'] })
        .config['Entitlement.JWT.Algorithms'],
      ['HS512', 'HS256'],
    );
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.Secret = ${s32}`, 'Entitlement.JWT.Algorithms = HS256, HS384, ES256'), [
      'F:3: Entitlement.JWT.Algorithms: expected algorithms that Entitlement.JWT.Secret allows (HS256), got HS384, ES256: ' +
        'HS384 needs a secret of at least 48 bytes and Entitlement.JWT.Secret has 32 (a longer one: openssl rand -base64 48); ' +
        'ES256 needs Entitlement.JWT.PublicKey instead of a secret',
    ]);
  });
});

describe('Entitlement.JWT.PublicKey', () => {
  const jwt = (file: string, ...more: string[]) => ['-DEntitlement=JWT', `-DEntitlement.JWT.PublicKey=${file}`, ...more];

  it('takes a PEM public key file: RSA (SPKI and PKCS#1), RSA-PSS, EC P-256 and P-384', () => {
    const pss = crypto.generateKeyPairSync('rsa-pss', { modulusLength: 2048 });
    const cases: [string, string, string[]][] = [
      ['rsa.pem', spki(rsa2048.publicKey), ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']],
      ['rsa-pkcs1.pem', rsa2048.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString(), ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']],
      ['pss.pem', spki(pss.publicKey), ['PS256', 'PS384', 'PS512']],
      ['p256.pem', spki(p256.publicKey), ['ES256']],
      ['p384.pem', spki(p384.publicKey), ['ES384']],
    ];
    for (const [name, pem, algorithms] of cases) {
      const file = keyFile(name, pem);
      const c = loadConfig({ defines: jwt(file) }).config;
      assert.equal(c['Entitlement.JWT.PublicKey'], file);
      assert.deepEqual(createJwtVerifier(jwtOptionsFromConfig(c)).algorithms, algorithms, name);
    }
  });

  it('takes a certificate', { skip: spawnSync('openssl', ['version']).status !== 0 && 'openssl is not installed' }, () => {
    const key = keyFile('cert-key.pem', p256.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    const cert = path.join(tmp, 'cert.pem');
    execFileSync('openssl', ['req', '-new', '-x509', '-key', key, '-out', cert, '-days', '1', '-subj', '/CN=starling-test'], { stdio: 'pipe' });
    const c = loadConfig({ defines: jwt(cert, '-DEntitlement.JWT.Algorithms=ES256') }).config;
    assert.deepEqual(createJwtVerifier(jwtOptionsFromConfig(c)).algorithms, ['ES256']);
  });

  it('is resolved against the working directory and kept absolute', () => {
    const file = keyFile('relative.pem', spki(p256.publicKey));
    const relative = path.relative(process.cwd(), file);
    assert.equal(loadConfig({ defines: jwt(relative) }).config['Entitlement.JWT.PublicKey'], file);
  });

  it('refuses a missing file, a directory and a file that is not PEM, with file:line', () => {
    const missing = path.join(tmp, 'missing.pem');
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${missing}`), [
      `F:2: Entitlement.JWT.PublicKey: cannot read ${missing}: no such file or directory (ENOENT); give the path of a PEM public key file the server can read`,
    ]);
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${tmp}`), [
      `F:2: Entitlement.JWT.PublicKey: ${tmp} is not a file: give the path of a PEM public key file`,
    ]);
    const der = keyFile('key.der', p256.publicKey.export({ type: 'spki', format: 'der' }).toString('latin1'));
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${der}`), [
      `F:2: Entitlement.JWT.PublicKey: ${der} is not PEM (no -----BEGIN line): give a PEM public key (-----BEGIN PUBLIC KEY-----) ` +
        'or certificate; a DER key converts with: openssl pkey -pubin -inform DER -in key.der -out public.pem',
    ]);
    const broken = keyFile('broken.pem', spki(p256.publicKey).slice(0, 80));
    const [error] = fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${broken}`);
    assert.match(error, /^F:2: Entitlement\.JWT\.PublicKey: \S+broken\.pem does not parse as a PEM public key or certificate \(.+\): check that it is complete, BEGIN and END lines included$/);
  });

  it('refuses a private key in any PEM form, saying how to get the public key', () => {
    const forms = {
      'pkcs8.pem': rsa2048.privateKey.export({ type: 'pkcs8', format: 'pem' }),
      'pkcs1.pem': rsa2048.privateKey.export({ type: 'pkcs1', format: 'pem' }),
      'sec1.pem': p256.privateKey.export({ type: 'sec1', format: 'pem' }),
      'encrypted.pem': p256.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }),
      'pair.pem': spki(p256.publicKey) + p256.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    };
    for (const [name, pem] of Object.entries(forms)) {
      const file = keyFile(name, pem.toString());
      assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${file}`), [
        `F:2: Entitlement.JWT.PublicKey: ${file} holds a private key: the server must not hold the private key; give the ` +
          `public key: openssl pkey -in ${file} -pubout -out public.pem`,
      ], name);
    }
  });

  it('refuses keys the verifier cannot use: RSA under 2048 bits, Ed25519, other curves', () => {
    const cases: [string, crypto.KeyObject, string][] = [
      ['rsa1024.pem', crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey,
        'the key is a 1024-bit RSA key; RS/PS algorithms need at least 2048 bits: use a larger key'],
      ['ed25519.pem', crypto.generateKeyPairSync('ed25519').publicKey,
        'the key is a ed25519 key; use an RSA key (RS/PS algorithms) or an EC key (ES algorithms)'],
      ['k256.pem', crypto.generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey,
        'the key is an EC key on curve secp256k1; supported curves are P-256 (ES256), P-384 (ES384) and P-521 (ES512)'],
    ];
    for (const [name, key, message] of cases) {
      const file = keyFile(name, spki(key));
      assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${file}`), [`F:2: Entitlement.JWT.PublicKey: ${file}: ${message}`]);
    }
  });

  it('Algorithms must be ones the key allows: an EC key its curve\'s ES, an RSA key RS/PS, never HS', () => {
    const ec = keyFile('alg-p256.pem', spki(p256.publicKey));
    const rsa = keyFile('alg-rsa.pem', spki(rsa2048.publicKey));
    assert.deepEqual(loadConfig({ defines: jwt(rsa, '-DEntitlement.JWT.Algorithms=PS256,RS512') }).config['Entitlement.JWT.Algorithms'], ['PS256', 'RS512']);
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${ec}`, 'Entitlement.JWT.Algorithms = ES256, ES384'), [
      `F:3: Entitlement.JWT.Algorithms: expected algorithms that the key in ${ec} allows (an EC P-256 key: ES256), got ES384`,
    ]);
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.PublicKey = ${rsa}`, 'Entitlement.JWT.Algorithms = HS256 ES256'), [
      `F:3: Entitlement.JWT.Algorithms: expected algorithms that the key in ${rsa} allows (a 2048-bit RSA key: RS256, RS384, ` +
        'RS512, PS256, PS384, PS512), got HS256, ES256; HS algorithms need Entitlement.JWT.Secret instead of a public key',
    ]);
  });
});

describe('Entitlement.JWT.Algorithms, Audience, Issuer, RenewBefore', () => {
  it('Algorithms is a list of the JWS algorithms; none is not one of them', () => {
    assert.deepEqual(parsed('Entitlement.JWT.Algorithms', ''), []);
    assert.deepEqual(
      fileErrors('Entitlement.JWT.Algorithms = HS256, none'),
      ['F:1: Entitlement.JWT.Algorithms: expected a list of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ' +
        'ES256, ES384, ES512 separated by commas or spaces, or nothing, got "HS256, none"'],
    );
    assert.throws(() => resolveConfig({ 'Entitlement.JWT.Algorithms': ['EdDSA'] }), ConfigError);
  });

  it('Audience and Issuer are text, empty (not checked) by default', () => {
    const c = loadConfig({
      defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.Secret=${SECRET32.toString('base64')}`, '-DEntitlement.JWT.Audience=starling', '-DEntitlement.JWT.Issuer=https://auth.example.com/'],
    }).config;
    assert.deepEqual([c['Entitlement.JWT.Audience'], c['Entitlement.JWT.Issuer']], ['starling', 'https://auth.example.com/']);
    assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.JWT.Secret = ${SECRET32.toString('base64')}`, 'Entitlement.JWT.Issuer = a\tb'), [
      'F:3: Entitlement.JWT.Issuer: expected text without control characters, got "a\\tb"',
    ]);
  });

  it('RenewBefore is 1 to 86400 seconds, 60 by default', () => {
    const base = ['-DEntitlement=JWT', `-DEntitlement.JWT.Secret=${SECRET32.toString('base64')}`];
    assert.equal(loadConfig({ defines: [...base, '-DEntitlement.RenewBefore=1'] }).config['Entitlement.RenewBefore'], 1);
    assert.equal(loadConfig({ defines: [...base, '-DEntitlement.RenewBefore=86400'] }).config['Entitlement.RenewBefore'], 86400);
    for (const bad of ['0', '86401', '1m', '']) {
      assert.deepEqual(fileErrors('Entitlement = JWT', `Entitlement.RenewBefore = ${bad}`), [
        `F:2: Entitlement.RenewBefore: expected an integer between 1 and 86400, got ${JSON.stringify(bad)}`,
      ]);
    }
  });
});

describe('jwtOptionsFromConfig', () => {
  it('gives the secret, or the PEM text of the key file, and only the checks that are set', () => {
    const secret = SECRET64.toString('base64url');
    const c = loadConfig({ defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.Secret=${secret}`] }).config;
    assert.deepEqual(jwtOptionsFromConfig(c), { secret });
    const pem = spki(p256.publicKey);
    const file = keyFile('options.pem', pem);
    const d = loadConfig({
      defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.PublicKey=${file}`, '-DEntitlement.JWT.Algorithms=ES256', '-DEntitlement.JWT.Audience=a', '-DEntitlement.JWT.Issuer=i'],
    }).config;
    assert.deepEqual(jwtOptionsFromConfig(d), { publicKey: pem, algorithms: ['ES256'], audience: 'a', issuer: 'i' });
  });

  it('makes a verifier that accepts tokens signed with the configured key and checks aud and iss', async () => {
    const hs = loadConfig({ defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.Secret=${SECRET64.toString('base64')}`, '-DEntitlement.JWT.Audience=starling'] }).config;
    const hsVerifier = createJwtVerifier(jwtOptionsFromConfig(hs));
    assert.equal((await hsVerifier.verify(signedToken('HS512', SECRET64, { aud: 'starling' }))).ok, true);
    assert.deepEqual(await hsVerifier.verify(signedToken('HS512', SECRET64, { aud: 'other' })), { ok: false, detail: 'audience' });
    const es = loadConfig({ defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.PublicKey=${keyFile('verify.pem', spki(p256.publicKey))}`, '-DEntitlement.JWT.Issuer=me'] }).config;
    const esVerifier = createJwtVerifier(jwtOptionsFromConfig(es));
    assert.equal((await esVerifier.verify(signedToken('ES256', p256.privateKey, { iss: 'me' }))).ok, true);
    assert.deepEqual(await esVerifier.verify(signedToken('ES256', p256.privateKey)), { ok: false, detail: 'issuer (no iss claim)' });
  });

  it('throws when the key file went away after the load', () => {
    const file = keyFile('gone.pem', spki(p256.publicKey));
    const c = loadConfig({ defines: ['-DEntitlement=JWT', `-DEntitlement.JWT.PublicKey=${file}`] }).config;
    fs.rmSync(file);
    assert.throws(() => jwtOptionsFromConfig(c), { name: 'KeyFileError', message: `cannot read ${file}: no such file or directory (ENOENT); give the path of a PEM public key file the server can read` });
  });
});

describe('PublishAllowFromAddressList', () => {
  it('takes IPv4 and IPv6 addresses and CIDR networks as canonical "<address>/<bits>", each once', () => {
    assert.deepEqual(parsed('PublishAllowFromAddressList', '127.0.0.1, 10.0.0.0/8, ::1, fd00::/8'), ['127.0.0.1/32', '10.0.0.0/8', '::1/128', 'fd00::/8']);
    assert.deepEqual(parsed('PublishAllowFromAddressList', '0.0.0.0/0 ::/0,,192.168.1.0/24  10.0.0.0/8,10.0.0.0/8'), ['0.0.0.0/0', '::/0', '192.168.1.0/24', '10.0.0.0/8']);
    assert.deepEqual(parsed('PublishAllowFromAddressList', '2001:DB8:0:0:1:0:0:1, 2001:0db8:0000::/32, FD00:0:0:0:0:0:0:0/8'), ['2001:db8::1:0:0:1/128', '2001:db8::/32', 'fd00::/8']);
    assert.deepEqual(parsed('PublishAllowFromAddressList', ''), []);
    assert.deepEqual(resolveConfig({ PublishAllowFromAddressList: ['127.0.0.1', '::1/128'] }).config.PublishAllowFromAddressList, ['127.0.0.1/32', '::1/128']);
    assert.deepEqual(resolveConfig({ PublishAllowFromAddressList: [] }).config.PublishAllowFromAddressList, []);
  });

  it('takes IPv4-mapped IPv6 forms as the IPv4 address or network they stand for', () => {
    assert.deepEqual(parsed('PublishAllowFromAddressList', '::ffff:127.0.0.1, ::FFFF:10.0.0.0/104, ::ffff:0:0/96, ::ffff:c0a8:1'), ['127.0.0.1/32', '10.0.0.0/8', '0.0.0.0/0', '192.168.0.1/32']);
    assert.deepEqual(parsed('PublishAllowFromAddressList', '::/80'), ['::/80'], 'wider than the mapped range: stays IPv6');
  });

  it('applies in every Entitlement mode', () => {
    assert.deepEqual(parsed('PublishAllowFromAddressList', '10.0.0.0/8'), ['10.0.0.0/8']);
    const c = resolveConfig({ Entitlement: 'Basic', 'Entitlement.AllowToken': TOKEN, PublishAllowFromAddressList: '10.0.0.0/8' }).config;
    assert.deepEqual(c.PublishAllowFromAddressList, ['10.0.0.0/8']);
  });

  it('refuses host bits past the prefix, saying the network to write', () => {
    const expected = 'expected IPv4/IPv6 addresses and CIDR networks separated by commas or spaces (e.g. 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8), or nothing';
    assert.deepEqual(fileErrors('#', 'PublishAllowFromAddressList = 127.0.0.1, 10.1.2.3/8'), [
      `F:2: PublishAllowFromAddressList: ${expected}, got "127.0.0.1, 10.1.2.3/8" (10.1.2.3/8: host bits set; write 10.0.0.0/8)`,
    ]);
    assert.match(rejected('PublishAllowFromAddressList', 'fd00::1/8'), /\(fd00::1\/8: host bits set; write fd00::\/8\)$/);
    assert.match(rejected('PublishAllowFromAddressList', '::ffff:10.1.2.3/104'), /\(::ffff:10\.1\.2\.3\/104: host bits set; write 10\.0\.0\.0\/8\)$/);
    assert.match(rejected('PublishAllowFromAddressList', '192.168.1.1/31'), /write 192\.168\.1\.0\/31\)$/);
  });

  it('refuses bad prefix lengths, host names, brackets, zones and garbage, naming each bad entry', () => {
    const cases: [string, string][] = [
      ['10.0.0.0/33', '10.0.0.0/33: the prefix length of an IPv4 network is 0 to 32'],
      ['::/129', '::/129: the prefix length of an IPv6 network is 0 to 128'],
      ['10.0.0.0/', '10.0.0.0/: the prefix length of an IPv4 network is 0 to 32'],
      ['10.0.0.0/-1', '10.0.0.0/-1: the prefix length of an IPv4 network is 0 to 32'],
      ['localhost', 'localhost: not an IPv4 or IPv6 address (host names are not resolved; write the address)'],
      ['[::1]', '[::1]: write IPv6 addresses without brackets'],
      ['fe80::1%eth0', 'fe80::1%eth0: a zone index (%...) cannot be part of an entry; write the address without it'],
      ['1.2.3.04', '1.2.3.04: not an IPv4 or IPv6 address'],
      ['256.1.1.1', '256.1.1.1: not an IPv4 or IPv6 address'],
      ['1.2.3', '1.2.3: not an IPv4 or IPv6 address'],
      ['10.0.0.0/8/8', '10.0.0.0/8/8: the prefix length of an IPv4 network is 0 to 32'],
      ['*', '*: not an IPv4 or IPv6 address'],
    ];
    for (const [bad, problem] of cases) {
      assert.ok(rejected('PublishAllowFromAddressList', bad).endsWith(`, got ${JSON.stringify(bad)} (${problem})`), bad);
    }
    assert.match(rejected('PublishAllowFromAddressList', '1.2.3.4.5, 10.0.0.1/8, 10.0.0.0/8'), /\(1\.2\.3\.4\.5: not an IPv4 or IPv6 address; 10\.0\.0\.1\/8: host bits set; write 10\.0\.0\.0\/8\)$/);
    assert.throws(() => resolveConfig({ PublishAllowFromAddressList: [1] }), ConfigError);
  });

  it('matchesAddressList matches addresses as Node.js reports them, IPv4-mapped ones by the IPv4 entries', () => {
    const list = parsed('PublishAllowFromAddressList', '127.0.0.0/8, 10.1.0.0/16, ::1, fd00::/8');
    for (const yes of ['127.0.0.1', '127.255.255.255', '::ffff:127.0.0.1', '::FFFF:10.1.200.3', '10.1.0.0', '::1', 'fd12:3456::1', 'fd00::1%eth0']) {
      assert.equal(matchesAddressList(list, yes), true, yes);
    }
    for (const no of ['128.0.0.1', '10.2.0.1', '::ffff:10.2.0.1', '::2', 'fe00::1', '', 'garbage', '127.0.0.1:80']) {
      assert.equal(matchesAddressList(list, no), false, no);
    }
    assert.equal(matchesAddressList(['::/0'], '::ffff:1.2.3.4'), false, 'IPv6 entries do not match IPv4 clients');
    assert.equal(matchesAddressList(['0.0.0.0/0'], '::ffff:1.2.3.4'), true);
    assert.equal(matchesAddressList([], '127.0.0.1'), false);
    assert.throws(() => matchesAddressList(['10.1.2.3/8'], '10.1.2.3'), { name: 'RangeError', message: 'address list entry 10.1.2.3/8: host bits set; write 10.0.0.0/8' });
  });

  it('mayPublishFrom: an empty list lets every address publish', () => {
    assert.equal(mayPublishFrom([], '203.0.113.9'), true);
    assert.equal(mayPublishFrom(['10.0.0.0/8'], '203.0.113.9'), false);
    assert.equal(mayPublishFrom(['10.0.0.0/8'], '::ffff:10.9.9.9'), true);
  });
});

describe('secrets', () => {
  const allSecrets = {
    token: TOKEN,
    jwt: SECRET32.toString('base64'),
    password: 'pa55 w0rd-not-shown',
  };

  it('are never printed by formatEffectiveConfig: a set one is a comment with its length', () => {
    const file = confFile('Entitlement = JWT', `Entitlement.JWT.Secret = ${allSecrets.jwt}`);
    const loaded = loadConfig({ file, env: { STARLING_MONITORPASSWORD: allSecrets.password }, defines: ['-DMonitorHTTP.Authentication=true', '-DMonitorUsername=ops'] });
    const text = formatEffectiveConfig(loaded);
    for (const secret of Object.values(allSecrets)) assert.ok(!text.includes(secret), 'a secret in the output');
    assert.match(text, new RegExp(`^# from ${file.replace(/[.\\]/g, '\\$&')}:2\n# Entitlement\\.JWT\\.Secret = \\(set, 44 characters; a secret, not printed\\)$`, 'm'));
    assert.match(text, /^# from environment STARLING_MONITORPASSWORD\n# MonitorPassword = \(set, 19 characters; a secret, not printed\)$/m);
    assert.match(text, /^# default\nEntitlement\.AllowToken +=$/m, 'an empty secret is printed: there is nothing to hide');
    assert.match(text, /^# Secrets \(Entitlement\.AllowToken, Entitlement\.JWT\.Secret, MonitorPassword\) are not printed/m);

    // The output loads; with the secrets given again (here in the environment) it is the same configuration.
    const printed = path.join(tmp, 'printed-secrets.conf');
    fs.writeFileSync(printed, text);
    const again = loadConfig({ file: printed, env: { STARLING_MONITORPASSWORD: allSecrets.password, STARLING_ENTITLEMENT_JWT_SECRET: allSecrets.jwt } });
    assert.deepEqual(again.config, loaded.config);
  });

  it('given with -D, are not shown in the source, in errors, or in the hint for a stray argument', () => {
    const loaded = loadConfig({ defines: ['-DEntitlement=Basic', `-DEntitlement.AllowToken=${TOKEN}`] });
    assert.deepEqual(loaded.sources['Entitlement.AllowToken'], { kind: 'command line', where: '-DEntitlement.AllowToken=…' });
    assert.ok(!formatEffectiveConfig(loaded).includes(TOKEN));
    const err = configError(() => loadConfig({ defines: [`-DEntitlement.AllowToken=${TOKEN} x`, `-DEntitlement.AllowTokn=${TOKEN}`, `Entitlement.JWT.Secret=${TOKEN}!`] }));
    assert.deepEqual(err.errors, [
      '-DEntitlement.AllowToken=…: Entitlement.AllowToken: expected 16 to 8192 printable ASCII characters without spaces, or nothing, got a secret of 34 characters (a space at character 33)',
      '-DEntitlement.AllowTokn=…: unknown key "Entitlement.AllowTokn" (did you mean "Entitlement.AllowToken"?)',
      'Entitlement.JWT.Secret=…: Entitlement.JWT.Secret: expected base64 of at least 32 bytes (standard or URL alphabet, = padding optional), or nothing, got a secret of 33 characters (not base64: a character outside A-Z, a-z, 0-9, +, /, -, _ and = at character 33)',
    ]);
    assert.equal(
      strayArgument('w0rd', '-DMonitorPassword=pa55'),
      'unexpected argument after -DMonitorPassword=…: if it belongs to the value of MonitorPassword, the shell split the value ' +
        'at a space; quote the whole value so that it is one argument (or give STARLING_MONITORPASSWORD in the environment)',
    );
  });

  it('are not printed by starling config --print', () => {
    const out = execFileSync(
      process.execPath,
      [CLI_FOR_MEMORY, 'config', '--print', '-DEntitlement=Basic', `-DEntitlement.AllowToken=${TOKEN}`, `-DMonitorPassword=${allSecrets.password}`],
      { encoding: 'utf8' },
    );
    assert.ok(!out.includes(TOKEN) && !out.includes(allSecrets.password));
    assert.match(out, /^# from command line -DEntitlement\.AllowToken=…\n# Entitlement\.AllowToken = \(set, 32 characters; a secret, not printed\)$/m);
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

  it('every key\'s documented example is a valid value of it', () => {
    for (const def of SCHEMA) assert.notEqual(TYPES[def.type].parse(def.example, def as never), undefined, def.name);
  });

  it('the docs name every key with its environment variable', () => {
    const docs = renderConfigDocs();
    for (const def of SCHEMA) {
      assert.ok(docs.includes(`### ${def.name}\n`), def.name);
      assert.ok(docs.includes(`\`STARLING_${def.name.toUpperCase().replace(/\./g, '_')}\``), def.name);
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

describe('HTTP.AllowOrigins', () => {
  it('takes origins as browsers send them (lower-cased), or * alone, or nothing', () => {
    assert.deepEqual(parsed('HTTP.AllowOrigins', 'https://App.Example.com, http://localhost:3000  http://[::1]:8080'), [
      'https://app.example.com',
      'http://localhost:3000',
      'http://[::1]:8080',
    ]);
    assert.deepEqual(parsed('HTTP.AllowOrigins', '*'), ['*']);
    assert.deepEqual(parsed('HTTP.AllowOrigins', ''), []);
    assert.deepEqual(resolveConfig({ 'HTTP.AllowOrigins': ['https://a.example'] }).config['HTTP.AllowOrigins'], ['https://a.example']);
  });

  it('refuses paths, trailing slashes, things that are not origins and * with others, naming each bad entry', () => {
    assert.match(rejected('HTTP.AllowOrigins', 'https://a.example/app'), /"https:\/\/a\.example\/app" is not an origin \(scheme:\/\/host\[:port\]\)/);
    assert.match(rejected('HTTP.AllowOrigins', 'https://a.example/'), /an origin has no path or trailing "\/"/);
    assert.match(rejected('HTTP.AllowOrigins', 'a.example'), /"a\.example" is not an origin/);
    assert.match(rejected('HTTP.AllowOrigins', 'https://a.example:99999999'), /is not an origin/);
    assert.match(rejected('HTTP.AllowOrigins', '*, https://a.example'), /"\*" allows every origin: list nothing else with it/);
    assert.match(rejected('HTTP.AllowOrigins', `https://${'a'.repeat(400)}.example`), /longer than 300 characters/);
  });
});

describe('Path and the HTTP transport', () => {
  it('refuses a Path that would hide /sse, /publish or /history', () => {
    for (const path of ['/sse', '/publish', '/history']) assert.match(rejected('Path', path), /Path: expected a path other than the HTTP transport's/);
    assert.equal(parsed('Path', '/ws'), '/ws');
  });
});

describe('HTTP.SseRetry', () => {
  it('takes 100 to 600000 milliseconds', () => {
    assert.equal(parsed('HTTP.SseRetry', '5000'), 5000);
    assert.match(rejected('HTTP.SseRetry', '50'), /100/);
    assert.match(rejected('HTTP.SseRetry', '600001'), /600000/);
  });
});

// ---- cluster ----

/** A Redis address with the defaults of a URL that gives only the host. */
const redis = (host: string, more: Partial<RedisAddress> = {}): RedisAddress => ({ host, port: 6379, user: '', password: '', db: 0, ...more });
/** What ClusterRedis's error line says about `text`: the part in parentheses after the quoted value. */
function redisProblem(text: string): string {
  const line = rejected('ClusterRedis', text);
  const m = /, got ".*" \((.*)\)$/.exec(line);
  assert.ok(m, line);
  return m[1];
}
const TLS = 'TLS to Redis is not supported yet; use redis:// on a private network or a TLS tunnel (stunnel)';
const SENTINEL = 'Sentinel is not supported; list the primary and its replicas: the node uses the first that answers as primary';

describe('ClusterEngine, ClusterDeliveryMode, ClusterNodeName', () => {
  it('ClusterEngine is none or redis, in any case; none by default', () => {
    assert.equal(parsed('ClusterEngine', 'REDIS'), 'redis');
    assert.equal(parsed('ClusterEngine', 'None'), 'none');
    assert.equal(rejected('ClusterEngine', 'nats'), '-DClusterEngine=nats: ClusterEngine: expected one of none, redis, got "nats"');
  });

  it('ClusterDeliveryMode is Standard or Guaranteed (MigratoryData\'s names); Standard by default', () => {
    assert.equal(parsed('ClusterDeliveryMode', 'guaranteed'), 'Guaranteed');
    assert.equal(parsed('ClusterDeliveryMode', 'standard'), 'Standard');
    assert.match(rejected('ClusterDeliveryMode', 'AtLeastOnce'), /expected one of Standard, Guaranteed, got "AtLeastOnce"$/);
  });

  it('ClusterNodeName is 1 to 64 printable ASCII characters without spaces, or empty for the derived name', () => {
    assert.equal(parsed('ClusterNodeName', 'eu-west-1a:8800'), 'eu-west-1a:8800');
    assert.equal(parsed('ClusterNodeName', 'n'.repeat(64)), 'n'.repeat(64));
    assert.equal(parsed('ClusterNodeName', ''), '');
    const expected = 'expected 1 to 64 printable ASCII characters without spaces, or nothing';
    assert.equal(rejected('ClusterNodeName', 'node 1'), `-DClusterNodeName=node 1: ClusterNodeName: ${expected}, got "node 1" (a space at character 5)`);
    assert.match(rejected('ClusterNodeName', 'n'.repeat(65)), /\(65 characters, more than 64\)$/);
    assert.match(rejected('ClusterNodeName', 'nœud'), /\(a non-ASCII character at character 2\)$/);
  });

  it('derives the node name from the host name and the first Listen port, or the process id with port 0', () => {
    const listen = (port: number) => [{ port }, { port: 9000 }];
    assert.equal(clusterNodeName({ ClusterNodeName: 'given', Listen: listen(8800) }, 'host', 42), 'given');
    assert.equal(clusterNodeName({ ClusterNodeName: '', Listen: listen(8800) }, 'ws-1.example.com', 42), 'ws-1.example.com:8800');
    assert.equal(clusterNodeName({ ClusterNodeName: '', Listen: listen(0) }, 'ws-1', 4242), 'ws-1:pid4242');
    // Cut to 64 characters, the port kept; characters a name may not have become '-'.
    const long = clusterNodeName({ ClusterNodeName: '', Listen: listen(65535) }, 'h'.repeat(80), 1);
    assert.equal(long, `${'h'.repeat(58)}:65535`);
    assert.equal(long.length, 64);
    assert.equal(clusterNodeName({ ClusterNodeName: '', Listen: listen(1) }, 'my host\u00e9', 1), 'my-host-:1');
    assert.equal(clusterNodeName({ ClusterNodeName: '', Listen: listen(1) }, '', 1), 'starling:1');
    // Whatever the machine's name, the derived one is a valid ClusterNodeName.
    const here = clusterNodeName({ ClusterNodeName: '', Listen: [{ port: 0 }] });
    assert.equal(parsed('ClusterNodeName', here), here);
    assert.equal(here, `${os.hostname().replace(/[^\x21-\x7e]/g, '-').slice(0, 64 - `:pid${process.pid}`.length)}:pid${process.pid}`);
  });

  it('ClusterEngine = redis needs the history cache: CacheSize = 0 is refused, naming both keys and where they were set', () => {
    assert.deepEqual(fileErrors('ClusterEngine = redis', 'CacheSize = 0'), [
      'F:2: CacheSize: is 0 but ClusterEngine is redis (from F:1), whose history and recovery are replicated into the ' +
        'cache: set CacheSize above 0 (or remove it: the default is an eighth of Memory), or set ClusterEngine = none',
    ]);
    assert.throws(() => resolveConfig({ ClusterEngine: 'redis', CacheSize: 0 }), ConfigError);
    assert.equal(resolveConfig({ ClusterEngine: 'redis' }).config.CacheSize > 0, true, 'the default cache is on');
    assert.equal(resolveConfig({ ClusterEngine: 'redis', CacheSize: '64M' }).config.ClusterEngine, 'redis');
    assert.equal(resolveConfig({ CacheSize: 0 }).config.CacheSize, 0, 'without a cluster, no cache is fine');
  });

  it('warns (does not refuse) when cluster keys are set while ClusterEngine = none, naming where', () => {
    const loaded = loadConfig({
      env: { STARLING_CLUSTERREDIS: 'redis://:pw@10.0.0.5' },
      defines: ['-DClusterDeliveryMode=Guaranteed', '-DClusterNodeName=n1'],
    });
    assert.deepEqual(configWarnings(loaded), [
      'environment STARLING_CLUSTERREDIS: ClusterRedis: is set but ClusterEngine is none (default), so it is ignored: set ' +
        'ClusterEngine = redis to run this server as a node of a cluster, or remove ClusterRedis',
      '-DClusterDeliveryMode=Guaranteed: ClusterDeliveryMode: is set but ClusterEngine is none (default), so it is ignored: ' +
        'set ClusterEngine = redis to run this server as a node of a cluster, or remove ClusterDeliveryMode',
      '-DClusterNodeName=n1: ClusterNodeName: is set but ClusterEngine is none (default), so it is ignored: set ' +
        'ClusterEngine = redis to run this server as a node of a cluster, or remove ClusterNodeName',
    ]);
    // Set to its default, or with the engine on: nothing to say.
    assert.deepEqual(configWarnings(loadConfig({ defines: ['-DClusterRedis=redis://127.0.0.1:6379', '-DClusterDeliveryMode=Standard'] })), []);
    assert.deepEqual(configWarnings(loadConfig({ defines: ['-DClusterEngine=redis', '-DClusterRedis=redis://10.0.0.5', '-DClusterNodeName=n1'] })), []);
    assert.deepEqual(configWarnings(loadConfig({})), []);
  });
});

describe('ClusterRedis', () => {
  it('takes redis:// URLs, in order: port 6379 and database 0 unless given, IPv6 in brackets', () => {
    assert.deepEqual(parsed('ClusterRedis', 'redis://10.0.0.5'), [redis('10.0.0.5')]);
    assert.deepEqual(parsed('ClusterRedis', 'redis://10.0.0.5:7000/3'), [redis('10.0.0.5', { port: 7000, db: 3 })]);
    assert.deepEqual(parsed('ClusterRedis', 'redis://[fd00::5]:7001/'), [redis('fd00::5', { port: 7001 })]);
    assert.deepEqual(parsed('ClusterRedis', 'REDIS://Cache-1.Example.com/2147483647'), [redis('Cache-1.Example.com', { db: 2147483647 })]);
    assert.deepEqual(parsed('ClusterRedis', 'redis://a:1, redis://b:2  redis://c:3,,redis://d'), [
      redis('a', { port: 1 }),
      redis('b', { port: 2 }),
      redis('c', { port: 3 }),
      redis('d'),
    ]);
  });

  it('takes a user and a password, percent-decoded as in any URL; :password alone is the default user', () => {
    assert.deepEqual(parsed('ClusterRedis', 'redis://:s3cret@h'), [redis('h', { password: 's3cret' })]);
    assert.deepEqual(parsed('ClusterRedis', 'redis://alice:p%40ss%2Cw%20rd%3A%25%2F@h:7000/1'), [
      redis('h', { port: 7000, db: 1, user: 'alice', password: 'p@ss,w rd:%/' }),
    ]);
    assert.deepEqual(parsed('ClusterRedis', "redis://al%C3%A9:a:b!$&'()*+;=~@h"), [redis('h', { user: 'alé', password: "a:b!$&'()*+;=~" })]);
    assert.deepEqual(parsed('ClusterRedis', 'redis://@h'), [redis('h')], 'empty user info: no AUTH');
  });

  it('refuses TLS and Sentinel, saying what to do instead', () => {
    assert.equal(redisProblem('rediss://cache:6380'), `rediss://cache:6380: ${TLS}`);
    assert.equal(redisProblem('redis+sentinel://s1:26379/mymaster'), `redis+sentinel://s1:26379/mymaster: ${SENTINEL}`);
    assert.equal(redisProblem('sentinel://s1:26379'), `sentinel://s1:26379: ${SENTINEL}`);
    assert.equal(redisProblem('redis://h sentinel'), `sentinel: ${SENTINEL}`);
    assert.equal(
      rejected('ClusterRedis', 'rediss://cache:6380'),
      '-DClusterRedis=rediss://cache:6380: ClusterRedis: expected redis://[user[:password]@]host[:port][/db] URLs separated by ' +
        `commas or spaces (e.g. redis://10.0.0.5:6379), got "rediss://cache:6380" (rediss://cache:6380: ${TLS})`,
    );
  });

  it('refuses bad ports, databases, query strings, fragments, schemes and hosts, naming each bad URL', () => {
    const cases: [string, string][] = [
      ['redis://h:0', 'the port must be a number from 1 to 65535'],
      ['redis://h:65536', 'the port must be a number from 1 to 65535'],
      ['redis://h:', 'the port must be a number from 1 to 65535'],
      ['redis://h:63x', 'the port must be a number from 1 to 65535'],
      ['redis://h/2147483648', 'the path is the database number, /0 to /2147483647'],
      ['redis://h/-1', 'the path is the database number, /0 to /2147483647'],
      ['redis://h/one', 'the path is the database number, /0 to /2147483647'],
      ['redis://h/1/2', 'the path is the database number, /0 to /2147483647'],
      ['redis://h/1.5', 'the path is the database number, /0 to /2147483647'],
      ['redis://h:6379?db=2', 'query strings (?…) are not supported: give the database as the path, redis://host:6379/2'],
      ['redis://h/2?timeout=5', 'query strings (?…) are not supported: give the database as the path, redis://host:6379/2'],
      ['redis://h/2#x', 'a fragment (#…) is not part of a Redis address'],
      ['http://h:6379', 'an unknown scheme http://; write redis://host[:port][/db]'],
      ['unix:///run/redis.sock', 'Unix sockets are not supported; give Redis\'s TCP address: redis://127.0.0.1:6379'],
      ['redis://', 'no host: write redis://host[:port][/db]'],
      ['redis://:6379', 'no host: write redis://host[:port][/db]'],
      ['redis://::1:6379', 'an IPv6 address must be in brackets: redis://[fd00::5]:6379'],
      ['redis://[::1%lo]:6379', 'not an IPv6 address in brackets (without a zone), e.g. redis://[fd00::5]:6379'],
      ['redis://[10.0.0.1]', 'not an IPv6 address in brackets (without a zone), e.g. redis://[fd00::5]:6379'],
      ['redis://a_b:6379', 'a_b is not a host name or an IPv4 address'],
      ['redis://1.2.3:6379', '1.2.3 is not a host name or an IPv4 address'],
    ];
    for (const [bad, problem] of cases) assert.equal(redisProblem(bad), `${bad}: ${problem}`, bad);
    assert.equal(redisProblem('10.0.0.5:6379'), '10.0.0.5:6379: not a redis:// URL; write redis://10.0.0.5:6379');
    assert.equal(redisProblem('redis://h, redis://H:6379'), 'redis://H:6379: H:6379 is listed twice');
    assert.equal(redisProblem('redis://a:0, redis://b, http://c'), 'redis://a:0: the port must be a number from 1 to 65535; http://c: an unknown scheme http://; write redis://host[:port][/db]');
    assert.equal(rejected('ClusterRedis', ''), '-DClusterRedis=: ClusterRedis: expected redis://[user[:password]@]host[:port][/db] URLs separated by commas or spaces (e.g. redis://10.0.0.5:6379), got "" (no URL: list at least one Redis server)');
  });

  it('refuses user info that is not percent-encoded where it must be, and a user without a password', () => {
    assert.equal(redisProblem('redis://alice@h'), 'redis://alice@h: a user name without a password: write redis://user:password@host, or redis://:password@host for the default user');
    assert.equal(redisProblem('redis://alice:@h'), 'redis://alice:…@h: a user name without a password: write redis://user:password@host, or redis://:password@host for the default user');
    assert.equal(redisProblem('redis://:p@ss@h'), 'redis://:…@h: an @ in the user name or password must be percent-encoded (%40)');
    assert.equal(redisProblem('redis://:a/b@h'), 'redis://:…@h: a /, ? or # in the user name or password must be percent-encoded (%2F, %3F, %23)');
    assert.equal(redisProblem('redis://:a"b@h'), 'redis://:…@h: a character in the user name or password that must be percent-encoded (a space is %20, a comma %2C)');
    assert.equal(redisProblem('redis://:100%@h'), 'redis://:…@h: a % in the user name or password that is not a %XX escape of UTF-8 (write % itself as %25)');
    assert.equal(redisProblem('redis://:%FF@h'), 'redis://:…@h: a % in the user name or password that is not a %XX escape of UTF-8 (write % itself as %25)');
    assert.equal(redisProblem('redis://:a%0Ab@h'), 'redis://:…@h: a control character in the user name or password');
    assert.equal(
      redisProblem('redis://:two words@h'),
      'redis://:…@h: a space or comma inside a URL; separate URLs with commas or spaces, and percent-encode a space (%20) or comma (%2C) in a user name or password',
    );
  });

  it('takes typed values from the API: URL strings and address objects', () => {
    assert.deepEqual(resolveConfig({ ClusterRedis: 'redis://a, redis://b' }).config.ClusterRedis, [redis('a'), redis('b')]);
    assert.deepEqual(
      resolveConfig({ ClusterRedis: ['redis://a:7000', { host: 'fd00::5', password: 'p w@/', db: 2 }, { host: 'c', port: 7002, user: 'u', password: 'x' }] }).config.ClusterRedis,
      [redis('a', { port: 7000 }), redis('fd00::5', { password: 'p w@/', db: 2 }), redis('c', { port: 7002, user: 'u', password: 'x' })],
    );
    for (const bad of [[], [1], [{ host: 'h', port: 0 }], [{ host: 'h', port: '6379' }], [{ host: 'h', user: 'u' }], { host: 'h', db: -1 }]) {
      assert.throws(() => resolveConfig({ ClusterRedis: bad }), ConfigError, JSON.stringify(bad));
    }
  });

  it('formats addresses as URLs that parse back to them', () => {
    const list = [
      redis('a'),
      redis('fd00::5', { port: 7000, db: 9 }),
      redis('h', { user: 'al:é', password: "p@ss w,rd/%:?#'" }),
      redis('h2', { password: 'x' }),
    ];
    const text = TYPES.redislist.format(list);
    assert.equal(text.split(', ')[0], 'redis://a:6379');
    assert.equal(text.split(', ')[1], 'redis://[fd00::5]:7000/9');
    assert.equal(text.split(', ')[3], 'redis://:x@h2:6379');
    assert.deepEqual(parsed('ClusterRedis', text), list);
  });

  it('never shows a password: not in errors, sources, config --print or the hint for a stray argument', () => {
    const PW = 'Top5ecretPw';
    // An error elsewhere in the value: the line quotes the value with the password hidden, from every source.
    const bad = `redis://app:${PW}@cache-1:6379, redis://:${PW}@cache-2:0`;
    const lines = [
      rejected('ClusterRedis', bad),
      ...configError(() => loadConfig({ env: { STARLING_CLUSTERREDIS: bad } })).errors,
      ...fileErrors(`ClusterRedis = ${bad}`),
      ...configError(() => resolveConfig({ ClusterRedis: [{ host: 'h', port: 99999, password: PW }] })).errors,
    ];
    for (const line of lines) assert.ok(!line.includes(PW), line);
    assert.equal(
      lines[0],
      '-DClusterRedis=redis://app:…@cache-1:6379, redis://:…@cache-2:0: ClusterRedis: expected redis://[user[:password]@]host[:port][/db] ' +
        'URLs separated by commas or spaces (e.g. redis://10.0.0.5:6379), got "redis://app:…@cache-1:6379, redis://:…@cache-2:0" ' +
        '(redis://:…@cache-2:0: the port must be a number from 1 to 65535)',
    );
    assert.match(lines[3], /^createServer\(\): ClusterRedis: expected .*, got "redis:\/\/:…@h:99999" \(redis:\/\/:…@h:99999: the port must be a number from 1 to 65535\)$/);

    // A valid value: the source names the argument without the password, and config --print comments the line out.
    const loaded = loadConfig({ defines: ['-DClusterEngine=redis', `-DClusterRedis=redis://app:${PW}@cache-1, redis://cache-2:7000`] });
    assert.deepEqual(loaded.sources.ClusterRedis, { kind: 'command line', where: '-DClusterRedis=redis://app:…@cache-1, redis://cache-2:7000' });
    const text = formatEffectiveConfig(loaded);
    assert.ok(!text.includes(PW));
    assert.match(
      text,
      /^# from command line -DClusterRedis=redis:\/\/app:…@cache-1, redis:\/\/cache-2:7000\n# ClusterRedis = redis:\/\/app:…@cache-1:6379, redis:\/\/cache-2:7000 {3}\(passwords not printed\)$/m,
    );
    assert.match(text, /^# Nor are the passwords in ClusterRedis URLs: a value with one is a comment, each password shown as …$/m);
    // Without a password, the line is printed as usual (and loads back: see formatEffectiveConfig's round trips).
    assert.match(formatEffectiveConfig(loadConfig({ defines: ['-DClusterRedis=redis://cache-2:7000/1'] })), /^ClusterRedis +=  ?redis:\/\/cache-2:7000\/1$/m);

    assert.equal(
      strayArgument(`word@h`, `-DClusterRedis=redis://:two`),
      'unexpected argument after -DClusterRedis=…: if it belongs to the value of ClusterRedis, the shell split the value at a ' +
        'space; quote the whole value so that it is one argument (or give STARLING_CLUSTERREDIS in the environment)',
    );
    const out = execFileSync(process.execPath, [CLI_FOR_MEMORY, 'config', '--print', `-DClusterRedis=redis://:${PW}@cache-1`], { encoding: 'utf8' });
    assert.ok(!out.includes(PW));
    assert.match(out, /^# ClusterRedis = redis:\/\/:…@cache-1:6379 {3}\(passwords not printed\)$/m);

    // Nor in the CLI's warning about a key given twice (secrets neither).
    assert.equal(showDefine(`-DClusterRedis=redis://:${PW}@h`), '-DClusterRedis=redis://:…@h');
    assert.equal(showDefine(`MonitorPassword=${PW}`), 'MonitorPassword=…');
    assert.equal(showDefine('-DWorkgroups=2'), '-DWorkgroups=2');
    const twice = spawnSync(process.execPath, [CLI_FOR_MEMORY, 'config', '--print', '-DClusterRedis=redis://h', `-DClusterRedis=redis://:${PW}@h`], { encoding: 'utf8' });
    assert.equal(twice.status, 0);
    assert.ok(!twice.stderr.includes(PW) && !twice.stdout.includes(PW));
    assert.match(twice.stderr, /the last one \(-DClusterRedis=redis:\/\/:…@h\) wins/);
  });
});
