// Loading the configuration (MigratoryData style): defaults < config file < STARLING_* environment < -DKey=value.
// Every value, from any source, is checked against schema.ts; all problems of one load are reported together in
// one ConfigError, each line as "<where>: <Key>: expected <what>, got <value>".
import * as fs from 'node:fs';
import * as util from 'node:util';
import { checkJwtConfig } from '../entitlement/config';
import { SCHEMA, envName, type SchemaConfig } from './schema';
import { M, TYPES, typeOf, type KeyBase, type KeyDef, type ListenAddress, type RedisAddress, type SomeValueType, type TypeTable } from './types';

export type { KeyBase, KeyDef, ListenAddress, RedisAddress, TypeTable, ValueType } from './types';
export { SCHEMA, envName } from './schema';

export interface Config {
  Listen: ListenAddress[];
  Path: string;
  Workgroups: number;
  WorkgroupCpus: number[];
  BenchmarkMode: boolean;
  'BufferLimit.Send': number;
  'BufferLimit.Receive': number;
  MaxMessageSize: number;
  MaxSubscriptionsPerConnection: number;
  MaxBacklog: number;
  /** Milliseconds. */
  MaxBacklogTime: number;
  /** Bytes. */
  Memory: number;
  /** Bytes; 0: no history cache. */
  CacheSize: number;
  MaxCachedMessagesPerSubject: number;
  /** Seconds; 0: no expiry. */
  CacheExpireTime: number;
  /** 0: the open-file limit less 256. */
  MaxConnections: number;
  IoBackend: 'auto' | 'epoll' | 'io_uring';
  /** Seconds; 0: off. */
  KeepAlive: number;
  Entitlement: 'None' | 'Basic' | 'JWT' | 'Custom';
  /** '' or 16 to 8192 printable ASCII characters without spaces. A secret. */
  'Entitlement.AllowToken': string;
  /** '' or base64 (as written) of at least 32 bytes. A secret. */
  'Entitlement.JWT.Secret': string;
  /** '' or the absolute path of a PEM public key or certificate file (read by jwtOptionsFromConfig). */
  'Entitlement.JWT.PublicKey': string;
  /** Empty: every algorithm the key allows. */
  'Entitlement.JWT.Algorithms': JwtAlgorithm[];
  /** '': not checked. */
  'Entitlement.JWT.Audience': string;
  /** '': not checked. */
  'Entitlement.JWT.Issuer': string;
  /** Seconds before expiry that `AUTH expiring` is sent. */
  'Entitlement.RenewBefore': number;
  /** Canonical "<address>/<bits>" (IPv4-mapped forms as IPv4); empty: every address may publish. */
  PublishAllowFromAddressList: string[];
  /** Origins as browsers send them (lower case), or ['*']; empty: none but the server's own. */
  'HTTP.AllowOrigins': string[];
  /** Milliseconds. */
  'HTTP.SseRetry': number;
  /** none: a server of its own; redis: a node of a cluster whose engine is ClusterRedis. */
  ClusterEngine: 'none' | 'redis';
  /** At least one, in the order they are tried; user and password percent-decoded (a password is a secret). */
  ClusterRedis: RedisAddress[];
  ClusterDeliveryMode: 'Standard' | 'Guaranteed';
  /** '' (derived at start: clusterNodeName in schema.ts) or 1 to 64 printable ASCII characters without spaces. */
  ClusterNodeName: string;
  LogLevel: 'error' | 'warn' | 'info' | 'debug';
  Monitor: ('HTTP' | 'PROMETHEUS')[];
  /** Exactly one address. */
  'MonitorHTTP.Listen': ListenAddress[];
  'MonitorHTTP.Authentication': boolean;
  'MonitorHTTP.MaxConnections': number;
  MonitorUsername: string;
  MonitorPassword: string;
  'Stats.LogInterval': number;
}

export type JwtAlgorithm =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512'
  | 'ES256' | 'ES384' | 'ES512';

// Compile-time check that Config and the schema describe the same keys with the same types.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Assert<T extends true> = T;
export type ConfigMatchesSchema = Assert<Equal<Config, SchemaConfig>>;

export type SourceKind = 'default' | 'file' | 'environment' | 'command line' | 'api';
/** where: "starling.conf:12", "STARLING_WORKGROUPS", "-DWorkgroups=4", "createServer()" or "default". */
export type Source = { kind: SourceKind; where: string };
export interface Loaded {
  config: Config;
  sources: Record<keyof Config, Source>;
}

/** All problems found in one load; `errors` has one line per problem, `message` joins them with "\n". */
export class ConfigError extends Error {
  readonly errors: string[];
  constructor(errors: string[]) {
    super(errors.join('\n'));
    this.name = 'ConfigError';
    this.errors = errors;
  }
}

/** The environment variable that names the config file; the only STARLING_* variable that is not a key. */
export const CONFIG_ENV = 'STARLING_CONFIG';
/** Not a key either: the path of another build of the addon (src/native.ts). */
const ADDON_ENV = 'STARLING_ADDON';

type Key = keyof Config;

/**
 * A rule between keys, checked once every value is loaded: returns error lines in the usual format, each
 * labelled with where the offending value came from.
 */
export type CrossCheck = (values: ReadonlyMap<string, { value: unknown; source: Source }>) => string[];

/** A key definition of any key set: the server's (KeyDef) or a benchmark tool's, with types of its own. */
type AnyKeyDef = KeyBase & { type: string };

/**
 * A set of keys with its environment prefix and its value types: the server's, or a benchmark tool's
 * (bench/tools.ts, whose types add to TYPES in bench/config.ts).
 */
export class KeySet<D extends AnyKeyDef = KeyDef> {
  readonly byName: Map<string, D>;
  readonly byEnv: Map<string, D>;
  constructor(
    readonly defs: readonly D[],
    readonly envPrefix: string,
    readonly checks: readonly CrossCheck[] = [],
    private readonly types: TypeTable<D> = TYPES as unknown as TypeTable<D>,
  ) {
    this.byName = new Map(defs.map((d) => [d.name, d]));
    this.byEnv = new Map(defs.map((d) => [envName(d.name, envPrefix), d]));
    for (const d of defs) if (!Object.hasOwn(this.types, d.type)) throw new Error(`${d.name}: no value type ${d.type}`);
  }

  /** The value type of one of the keys. */
  typeOf(def: D): SomeValueType {
    return (this.types as Record<string, unknown>)[def.type] as SomeValueType;
  }
}

/** MonitorHTTP.Authentication = true needs both credentials: an open monitor by mistake is worse than no start. */
const monitorCredentials: CrossCheck = (values) => {
  const auth = values.get('MonitorHTTP.Authentication')!;
  if (auth.value !== true) return [];
  const missing = ['MonitorUsername', 'MonitorPassword'].filter((k) => values.get(k)!.value === '');
  if (missing.length === 0) return [];
  return [
    `${sourceLabel(auth.source)}: MonitorHTTP.Authentication: expected MonitorUsername and MonitorPassword to be set ` +
      `when true, got ${missing.join(' and ')} empty`,
  ];
};

/** The monitor has a port of its own: the same port as a client listener (on an overlapping address) cannot work. */
const monitorPort: CrossCheck = (values) => {
  if ((values.get('Monitor')!.value as string[]).length === 0) return [];
  const monitor = values.get('MonitorHTTP.Listen')!;
  const m = (monitor.value as ListenAddress[])[0];
  const wildcard = (host: string) => host === '0.0.0.0' || host === '::';
  const clash = (values.get('Listen')!.value as ListenAddress[]).some(
    (a) => m.port !== 0 && a.port === m.port && (a.host === m.host || wildcard(a.host) || wildcard(m.host)),
  );
  return clash
    ? [`${sourceLabel(monitor.source)}: MonitorHTTP.Listen: expected a port other than the client port (Listen), got ${m.port}`]
    : [];
};

/** The HTTP transport's paths share the port with WebSocket clients: Path must not hide one of them. */
const pathOfHttpTransport: CrossCheck = (values) => {
  const path = values.get('Path')!;
  const taken = ['/sse', '/publish', '/history'];
  return taken.includes(path.value as string)
    ? [`${sourceLabel(path.source)}: Path: expected a path other than the HTTP transport's (${taken.join(', ')}; docs/http.md), got ${path.value}`]
    : [];
};

/** The history cache lives inside the Memory budget: a CacheSize set above half of it would leave too little for the
 * clients' queues (the default adapts instead, see server.ts). */
const cacheWithinMemory: CrossCheck = (values) => {
  const cache = values.get('CacheSize')!;
  const memory = values.get('Memory')!;
  if (cache.source.kind === 'default' || (cache.value as number) <= (memory.value as number) / 2) return [];
  return [
    `${sourceLabel(cache.source)}: CacheSize: expected at most half of Memory (${Math.floor((memory.value as number) / 2 / M)}M), ` +
      `got ${Math.round((cache.value as number) / M)}M; lower CacheSize or raise Memory`,
  ];
};

/** ClusterEngine = redis replicates every subject's history into the cache (recovery and history are served from
 * it): without a cache, a node could neither recover a client nor fill a gap. */
const clusterNeedsCache: CrossCheck = (values) => {
  const engine = values.get('ClusterEngine')!;
  const cache = values.get('CacheSize')!;
  if (engine.value !== 'redis' || cache.value !== 0) return [];
  return [
    `${sourceLabel(cache.source)}: CacheSize: is 0 but ClusterEngine is redis (${describeSource(engine.source)}), whose ` +
      'history and recovery are replicated into the cache: set CacheSize above 0 (or remove it: the default is an ' +
      'eighth of Memory), or set ClusterEngine = none',
  ];
};

/** The keys only ClusterEngine = redis uses (the compiler checks that every Cluster* key but the engine is listed). */
const CLUSTER_KEYS: { readonly [K in Exclude<Extract<Key, `Cluster${string}`>, 'ClusterEngine'>]: true } = {
  ClusterRedis: true,
  ClusterDeliveryMode: true,
  ClusterNodeName: true,
};

/**
 * What deserves a warning but not a refusal to start, one line each in the format of errors: a cluster key set to
 * other than its default while ClusterEngine = none (ignored: a config shared between a cluster and a single
 * server may well have them). The server logs them at start (log.warn).
 */
export function configWarnings(loaded: Loaded): string[] {
  const engine = loaded.config.ClusterEngine;
  if (engine !== 'none') return [];
  const warnings: string[] = [];
  for (const key of Object.keys(CLUSTER_KEYS) as (keyof typeof CLUSTER_KEYS)[]) {
    const def = SERVER_KEYS.byName.get(key)!;
    const defaultText = typeof def.default === 'function' ? def.default() : def.default;
    if (util.isDeepStrictEqual(loaded.config[key], typeOf(def).parse(defaultText, def))) continue;
    warnings.push(
      `${sourceLabel(loaded.sources[key])}: ${key}: is set but ClusterEngine is none (${describeSource(loaded.sources.ClusterEngine)}), ` +
        `so it is ignored: set ClusterEngine = redis to run this server as a node of a cluster, or remove ${key}`,
    );
  }
  return warnings;
}

type EntitlementMode = Config['Entitlement'];

/** The Entitlement modes that use each Entitlement.* key (the compiler checks that every such key is listed). */
const ENTITLEMENT_KEY_MODES: { readonly [K in Extract<Key, `Entitlement.${string}`>]: readonly EntitlementMode[] } = {
  'Entitlement.AllowToken': ['Basic'],
  'Entitlement.JWT.Secret': ['JWT'],
  'Entitlement.JWT.PublicKey': ['JWT'],
  'Entitlement.JWT.Algorithms': ['JWT'],
  'Entitlement.JWT.Audience': ['JWT'],
  'Entitlement.JWT.Issuer': ['JWT'],
  // The modes whose tokens expire (Basic's token does not).
  'Entitlement.RenewBefore': ['JWT', 'Custom'],
};

/**
 * An Entitlement.* key set to other than its default while Entitlement is a mode that does not use it: most likely
 * Entitlement itself was forgotten (a JWT secret configured, and the server open to everyone), so it stops the start.
 */
const entitlementKeysOfOtherModes: CrossCheck = (values) => {
  const entitlement = values.get('Entitlement')!;
  const mode = entitlement.value as EntitlementMode;
  const errors: string[] = [];
  for (const [key, modes] of Object.entries(ENTITLEMENT_KEY_MODES) as [Key, readonly EntitlementMode[]][]) {
    if (modes.includes(mode)) continue;
    const { value, source } = values.get(key)!;
    const def = SERVER_KEYS.byName.get(key)!;
    const defaultText = typeof def.default === 'function' ? def.default() : def.default;
    if (util.isDeepStrictEqual(value, typeOf(def).parse(defaultText, def))) continue;
    errors.push(
      `${sourceLabel(source)}: ${key}: is set but Entitlement is ${mode} (${describeSource(entitlement.source)}), and only ` +
        `Entitlement = ${modes.join(' or ')} uses it: set Entitlement = ${modes[0]}, or remove ${key}`,
    );
  }
  return errors;
};

/** Entitlement = Basic needs its token: without one, nobody could publish. */
const basicToken: CrossCheck = (values) => {
  const entitlement = values.get('Entitlement')!;
  if (entitlement.value !== 'Basic' || values.get('Entitlement.AllowToken')!.value !== '') return [];
  return [
    `${sourceLabel(entitlement.source)}: Entitlement: expected Entitlement.AllowToken to be set when Basic, got it empty; ` +
      'set it to a token of 16 or more characters, e.g. the output of openssl rand -hex 32',
  ];
};

/** Entitlement = JWT: a key to verify with, the key file usable, the algorithms fit for the key (entitlement/config.ts). */
const jwtKey: CrossCheck = (values) => {
  const entitlement = values.get('Entitlement')!;
  if (entitlement.value !== 'JWT') return [];
  const c = Object.fromEntries([...values].map(([k, v]) => [k, v.value])) as unknown as Config;
  return checkJwtConfig(c).map(({ key, problem }) => `${sourceLabel(values.get(key)!.source)}: ${key}: ${problem}`);
};

const SERVER_KEYS = new KeySet(SCHEMA, 'STARLING_', [
  monitorCredentials,
  monitorPort,
  pathOfHttpTransport,
  cacheWithinMemory,
  entitlementKeysOfOtherModes,
  basicToken,
  jwtKey,
  clusterNeedsCache,
]);

/** Collects the values of one load, later sources overriding earlier ones, and every error on the way. */
class Loader<D extends AnyKeyDef> {
  readonly values = new Map<Key, { value: unknown; source: Source }>();
  readonly errors: string[] = [];

  constructor(readonly keys: KeySet<D>) {
    for (const def of keys.defs) {
      const text = typeof def.default === 'function' ? def.default() : def.default;
      const value = keys.typeOf(def).parse(text, def);
      if (value === undefined) throw new Error(`schema.ts: ${def.name}: default ${JSON.stringify(text)} is invalid`);
      this.values.set(def.name as Key, { value, source: { kind: 'default', where: 'default' } });
    }
  }

  /** Checks `raw` (a string in config-file syntax or, from the API, a typed value) and records it. */
  set(def: D, raw: unknown, source: Source, label: string): void {
    const type = this.keys.typeOf(def);
    const value = typeof raw === 'string' ? type.parse(raw.trim(), def) : type.accept(raw, def);
    if (value === undefined) {
      const text = typeof raw === 'string' ? raw.trim() : type.asText?.(raw);
      // A secret is described, never quoted (nor is the argument that gave it: see loadKeys); a value with a secret
      // part (a password in a URL) is quoted without it.
      const got = def.secret
        ? text !== undefined
          ? `a secret of ${[...text].length} characters`
          : `a secret that is ${kindOf(raw)}`
        : text !== undefined
          ? JSON.stringify(type.hide ? type.hide(text) : text)
          : util.inspect(raw, { breakLength: Infinity });
      const problem = text !== undefined ? type.problem?.(text, def) : undefined;
      this.errors.push(`${label}: ${def.name}: expected ${type.expected(def)}, got ${got}${problem ? ` (${problem})` : ''}`);
    } else {
      this.values.set(def.name as Key, { value, source });
    }
  }

  unknown(label: string, what: string, name: string, candidates: Iterable<string>): void {
    const suggestion = suggest(name, candidates);
    this.errors.push(`${label}: unknown ${what} "${name}"${suggestion ? ` (did you mean "${suggestion}"?)` : ''}`);
  }

  finish(): { config: Record<string, unknown>; sources: Record<string, Source> } {
    // Rules between keys only make sense once every value is valid.
    if (this.errors.length === 0) for (const check of this.keys.checks) this.errors.push(...check(this.values));
    if (this.errors.length > 0) throw new ConfigError(this.errors);
    const config: Record<string, unknown> = {};
    const sources: Record<string, Source> = {};
    for (const [key, { value, source }] of this.values) {
      config[key] = value;
      sources[key] = source;
    }
    return { config, sources };
  }
}

/**
 * Loads defaults, then `file` (or the file named by STARLING_CONFIG), then STARLING_* variables of `env`
 * (default: none; the CLI passes process.env), then `defines` ("-DKey=value", the prefix is optional; the last
 * one of a key wins). Throws ConfigError listing every problem found.
 */
export function loadConfig(opts: { file?: string; defines?: string[]; env?: NodeJS.ProcessEnv } = {}): Loaded {
  const file = opts.file ?? (opts.env?.[CONFIG_ENV] || undefined);
  return loadKeys(SERVER_KEYS, { ...opts, file }) as unknown as Loaded;
}

/** loadConfig for any key set: defaults, then the file, then `<prefix>*` variables of env, then defines. */
export function loadKeys<D extends AnyKeyDef>(
  keys: KeySet<D>,
  opts: { file?: string; defines?: string[]; env?: NodeJS.ProcessEnv; repeatedDefines?: 'last-wins' | 'refuse' },
): { config: Record<string, unknown>; sources: Record<string, Source> } {
  const env = opts.env ?? {};
  const loader = new Loader(keys);
  if (opts.file !== undefined) readFile(loader, opts.file);

  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith(keys.envPrefix) || name === CONFIG_ENV || name === ADDON_ENV) continue;
    const def = keys.byEnv.get(name);
    if (def) loader.set(def, env[name] ?? '', { kind: 'environment', where: name }, `environment ${name}`);
    else loader.unknown('environment', 'variable', name, keys.byEnv.keys());
  }

  for (const define of opts.defines ?? []) {
    const text = define.startsWith('-D') ? define.slice(2) : define;
    const eq = text.indexOf('=');
    const key = text.slice(0, eq).trim();
    const def = keys.byName.get(key);
    // A secret's argument is named without its value, here and wherever its source is shown; so is an unknown
    // key's whose nearest key is a secret (a misspelt secret key).
    const near = def ?? keys.byName.get(suggest(key, keys.byName.keys()) ?? '');
    const label = near?.secret ? hideValue(define) : near ? hidePart(define, keys.typeOf(near)) : define;
    if (eq < 0 || key === '') loader.errors.push(`${define}: expected -DKey=value, got ${JSON.stringify(define)}`);
    else if (!def) loader.unknown(label, 'key', key, keys.byName.keys());
    else loader.set(def, text.slice(eq + 1), { kind: 'command line', where: label }, label);
  }
  if (opts.repeatedDefines === 'refuse') loader.errors.push(...repeatedDefines(opts.defines ?? []).map(describeRepeat));
  return loader.finish();
}

/**
 * Builds a configuration from defaults and `values` (keys as in the config file; undefined values are skipped).
 * A value may be a string in config-file syntax or already typed: number, boolean, ListenAddress[] or
 * "host:port" strings, number[]. Errors name "createServer()".
 */
export function resolveConfig(values: Record<string, unknown>): Loaded {
  const where = 'createServer()';
  const loader = new Loader(SERVER_KEYS);
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) continue;
    const def = SERVER_KEYS.byName.get(key);
    if (def) loader.set(def, value, { kind: 'api', where }, where);
    else loader.unknown(where, 'key', key, SERVER_KEYS.byName.keys());
  }
  return loader.finish() as unknown as Loaded;
}

/**
 * Config-file syntax: `Key = Value` lines; a line whose first non-blank character is '#' is a comment ('#'
 * elsewhere is part of the value); blank lines are ignored; a line ending in '\' continues on the next line
 * (joined with one space; errors name the first line). A key may be set only once per file.
 */
function readFile<D extends AnyKeyDef>(loader: Loader<D>, file: string): void {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    loader.errors.push(`${file}: cannot read the config file: ${osReason(err)}`);
    return;
  }
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const firstLine = new Map<string, number>();
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i];
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      line = line.replace(/\s*\\\s*$/, '') + ' ' + lines[++i].trim();
    }
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;

    const label = `${file}:${lineNo}`;
    const eq = trimmed.indexOf('=');
    const key = trimmed.slice(0, eq).trim();
    const def = loader.keys.byName.get(key);
    if (eq < 0 || key === '') {
      loader.errors.push(`${label}: expected Key = Value, got ${JSON.stringify(trimmed)}`);
    } else if (!def) {
      loader.unknown(label, 'key', key, loader.keys.byName.keys());
    } else if (firstLine.has(key)) {
      loader.errors.push(`${label}: ${key}: set twice, first on line ${firstLine.get(key)} and again on line ${lineNo}`);
    } else {
      firstLine.set(key, lineNo);
      loader.set(def, trimmed.slice(eq + 1), { kind: 'file', where: label }, label);
    }
  }
}

/** "ENOENT: no such file or directory, open 'x'" -> "no such file or directory (ENOENT)". */
function osReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!e.code || !e.syscall) return String(e.message ?? err);
  const start = e.message.startsWith(`${e.code}: `) ? e.code.length + 2 : 0;
  const end = e.message.lastIndexOf(`, ${e.syscall}`);
  return `${e.message.slice(start, end > start ? end : undefined)} (${e.code})`;
}

/** The candidate that matches `name` ignoring case, else the nearest within edit distance 3. */
function suggest(name: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = 4;
  for (const candidate of candidates) {
    if (candidate.toLowerCase() === name.toLowerCase()) return candidate;
    const d = levenshtein(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/** "a number", "an array", "null": what an API value is, without showing it. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** "-DKey=value" -> "-DKey=…": the argument of a secret, without the secret. */
function hideValue(define: string): string {
  const eq = define.indexOf('=');
  return eq < 0 ? define : `${define.slice(0, eq + 1)}…`;
}

/**
 * A server key's `-DKey=value` argument as it may be shown (in a warning, say): a secret's value as `…`, the
 * passwords in a value that may hold some (ClusterRedis) as `…`, any other argument as given.
 */
export function showDefine(define: string): string {
  const text = define.startsWith('-D') ? define.slice(2) : define;
  const def = SERVER_KEYS.byName.get(text.slice(0, text.indexOf('=')).trim()) as KeyDef | undefined;
  return !def ? define : def.secret ? hideValue(define) : hidePart(define, typeOf(def));
}

/** "-DKey=value" with the secret parts of the value hidden, for a key whose type has them (ValueType.hide). */
function hidePart(define: string, type: SomeValueType): string {
  const eq = define.indexOf('=');
  return eq < 0 || !type.hide ? define : define.slice(0, eq + 1) + type.hide(define.slice(eq + 1));
}

/** The label error lines use for a source: "starling.conf:12", "environment STARLING_X", "-DKey=v", "createServer()". */
function sourceLabel(source: Source): string {
  return source.kind === 'environment' ? `environment ${source.where}` : source.where;
}

function describeSource(source: Source): string {
  switch (source.kind) {
    case 'default':
      return 'default';
    case 'file':
      return `from ${source.where}`;
    case 'environment':
      return `from environment ${source.where}`;
    case 'command line':
      return `from command line ${source.where}`;
    case 'api':
      return `from ${source.where}`;
  }
}

/**
 * For `starling config --print`: every key with its effective value, `=` aligned, each preceded by a comment
 * saying where the value came from. The output is itself a valid config file with the same values, except that a
 * secret that is set (MonitorPassword, Entitlement.AllowToken, Entitlement.JWT.Secret) is not printed: its line is a
 * comment that gives its length.
 */
export function formatEffectiveConfig(loaded: Loaded): string {
  const width = Math.max(...SCHEMA.map((d) => d.name.length));
  const secrets = SCHEMA.filter((d) => 'secret' in d && d.secret).map((d) => d.name);
  const withPasswords = SCHEMA.filter((d) => typeOf(d).hide).map((d) => d.name);
  const lines = [
    '# Starling effective configuration: every key, its value, and where the value came from.',
    "# (Comments stand on their own line: a '#' after a value would be part of the value.)",
    `# Secrets (${secrets.join(', ')}) are not printed: a set one is a comment with its length.`,
    `# Nor are the passwords in ${withPasswords.join(', ')} URLs: a value with one is a comment, each password shown as …`,
  ];
  for (const def of SCHEMA) {
    const type = typeOf(def);
    const value = type.format(loaded.config[def.name]);
    const hidden = type.hide?.(value) ?? value;
    lines.push('', `# ${describeSource(loaded.sources[def.name]).replace(/[\r\n]+/g, ' ')}`);
    if ('secret' in def && def.secret && value !== '') {
      lines.push(`# ${def.name} = (set, ${[...value].length} characters; a secret, not printed)`);
    } else if (hidden !== value) {
      lines.push(`# ${def.name} = ${hidden}   (passwords not printed)`);
    } else {
      lines.push(`${def.name.padEnd(width)} = ${value}`.trimEnd());
    }
  }
  return lines.join('\n') + '\n';
}

const INTRO = `# Configuration

<!-- Generated from src/config/schema.ts by \`node dist/src/config/gendocs.js docs/configuration.md\`; do not edit. -->

Starling reads its configuration from a file (\`starling serve --config starling.conf\`, or the file named by the
\`${CONFIG_ENV}\` environment variable), from \`STARLING_*\` environment variables and from \`-DKey=value\`
command-line arguments. \`starling config --print\` shows the effective value of every key and where it came from.

## File syntax

\`\`\`
# A line whose first non-blank character is '#' is a comment.
Listen = *:8800, [::1]:8800
MaxBacklog=4M
WorkgroupCpus = 0, \\
                2-3
\`\`\`

- One \`Key = Value\` per line; spaces around \`=\` are optional and the value is trimmed.
- Keys are case-sensitive and may be set only once per file.
- There are no comments after a value: a \`#\` inside a value is part of the value.
- A line ending in \`\\\` continues on the next line; the two are joined with one space.
- Blank lines are ignored.

## Precedence

default < config file < environment < command line. The environment variable of a key is \`STARLING_\` followed by
the key in upper case with \`.\` replaced by \`_\` (\`BufferLimit.Send\` is \`STARLING_BUFFERLIMIT_SEND\`); an unknown
\`STARLING_*\` variable is an error. On the command line, \`-DKey=value\` sets a key, as in \`-DWorkgroups=4\`; the
last one of a key wins. Every problem in every source is reported at once, each with the file and line, variable
or argument it came from.

## Value types
`;

/** Markdown reference of every key: type, default, range, doc, environment variable, example. */
export function renderConfigDocs(): string {
  const out = [INTRO];
  out.push('| Type | Syntax |', '|---|---|');
  for (const [name, type] of Object.entries(TYPES)) {
    if (SCHEMA.some((d) => d.type === name)) out.push(`| ${name} | ${type.syntax} |`);
  }
  out.push('', '## Keys', '', '| Key | Type | Default | Environment variable |', '|---|---|---|---|');
  for (const def of SCHEMA) {
    out.push(`| [\`${def.name}\`](#${anchor(def.name)}) | ${def.type} | ${defaultDoc(def)} | \`${envName(def.name)}\` |`);
  }
  for (const def of SCHEMA) {
    const range = typeOf(def).range(def);
    out.push('', `### ${def.name}`, '', def.doc, '');
    out.push(`- Type: ${def.type}`);
    out.push(`- Default: ${defaultDoc(def)}`);
    if (range) out.push(`- Range: ${range}`);
    out.push(`- Environment: \`${envName(def.name)}\``);
    out.push(`- Example: \`${def.name} = ${def.example}\` or \`-D${def.name}=${def.example.replace(/ /g, '')}\``);
  }
  return out.join('\n') + '\n';
}

function defaultDoc(def: KeyDef): string {
  if (def.defaultDoc) return def.defaultDoc;
  return typeof def.default === 'string' ? `\`${def.default}\`` : '';
}

/** GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped. */
function anchor(heading: string): string {
  return heading.toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-');
}

// ---------------------------------------------------------------------------------------------------------
// A key given twice on the command line. In a file that is an error (readFile); on the command line it is what
// the shell makes of an unquoted range (`-DSubjects=/p/s{1..500}` is 500 arguments, `-DSubjects=/p/s1` to
// `-DSubjects=/p/s500`) or of a value with spaces, so it gets an explanation and the quoted form to use.

/** A key given more than once in `defines`, with every argument that gave it, in order. */
export interface RepeatedDefine {
  key: string;
  defines: string[];
}

/** The keys that `defines` ("-DKey=value" or "Key=value") give more than once. */
export function repeatedDefines(defines: readonly string[]): RepeatedDefine[] {
  const byKey = new Map<string, string[]>();
  for (const define of defines) {
    const text = define.startsWith('-D') ? define.slice(2) : define;
    const eq = text.indexOf('=');
    const key = text.slice(0, eq).trim();
    if (eq < 0 || key === '') continue;
    byKey.set(key, [...(byKey.get(key) ?? []), define]);
  }
  return [...byKey].filter(([, list]) => list.length > 1).map(([key, list]) => ({ key, defines: list }));
}

/**
 * One error line for a repeated key: where it was given (first and last), that only one is allowed, and the
 * quoted argument to use instead; for the arguments of an expanded `{a..b}` range, that range.
 */
export function describeRepeat(r: RepeatedDefine): string {
  const n = r.defines.length;
  const values = r.defines.map((d) => d.slice(d.indexOf('=') + 1).trim());
  const where = n === 2 ? `first as ${r.defines[0]}, then as ${r.defines[1]}` : `from ${r.defines[0]} to ${r.defines[n - 1]}`;
  const range = asRange(values);
  const hint = range
    ? `the shell expanded an unquoted range into ${n} arguments: quote it, as in '-D${r.key}=${range}'`
    : `give it once; if the shell split or expanded the value (spaces, an unquoted {a..b} range), quote it so that it is one argument: '-D${r.key}=…'`;
  return `${r.defines[n - 1]}: ${r.key}: given ${n === 2 ? 'twice' : `${n} times`} on the command line (${where}); a key may be given once: ${hint}`;
}

/** `/p/s1` … `/p/s500` → `/p/s{1..500}`, if the values are consecutive integers between a common prefix and suffix. */
function asRange(values: string[]): string | undefined {
  if (values.length < 2) return undefined;
  let pre = 0;
  while (pre < values[0].length && values.every((v) => v[pre] === values[0][pre])) pre++;
  while (pre > 0 && /\d/.test(values[0][pre - 1])) pre--;
  let suf = 0;
  const minLen = Math.min(...values.map((v) => v.length));
  while (suf < minLen - pre && values.every((v) => v[v.length - 1 - suf] === values[0][values[0].length - 1 - suf])) suf++;
  while (suf > 0 && /\d/.test(values[0][values[0].length - suf])) suf--;
  const middles = values.map((v) => v.slice(pre, v.length - suf));
  if (!middles.every((m) => /^\d+$/.test(m))) return undefined;
  const nums = middles.map(Number);
  if (!nums.every((x, i) => i === 0 || x === nums[i - 1] + 1)) return undefined;
  return `${values[0].slice(0, pre)}{${nums[0]}..${nums[nums.length - 1]}}${values[0].slice(values[0].length - suf)}`;
}

/**
 * The error line for an argument that is neither an option nor -DKey=value. Right after a -D it is most likely
 * the rest of that value, split by the shell at a space or produced by an unquoted range: say so, with quotes.
 */
export function strayArgument(arg: string, previousDefine?: string): string {
  if (previousDefine === undefined || arg.startsWith('-')) return `unknown argument ${JSON.stringify(arg)}`;
  const text = previousDefine.slice(2);
  const key = text.slice(0, text.indexOf('=')).trim();
  const def = SERVER_KEYS.byName.get(key) as KeyDef | undefined;
  if (def && (def.secret || typeOf(def).hide)) {
    // Most likely the rest of a secret, or of a URL with a password in it: neither part is shown.
    return (
      `unexpected argument after ${hideValue(previousDefine)}: if it belongs to the value of ${key}, the shell split the ` +
      `value at a space; quote the whole value so that it is one argument (or give ${envName(key)} in the environment)`
    );
  }
  return (
    `unexpected argument ${JSON.stringify(arg)} after ${previousDefine}: ${key ? `if it belongs to the value of ${key}, ` : ''}` +
    `the shell split the value at a space or expanded an unquoted {a..b} range; quote the whole value so that it is one ` +
    `argument, as in '${previousDefine} ${arg}'`
  );
}
