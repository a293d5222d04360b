// The value types of configuration keys: how each is written, parsed, checked and printed, and the shape of
// a key's definition. One entry per type; schema.ts says which key has which type. Parsers return undefined
// for an invalid value and the caller reports it as "<where>: <Key>: expected <expected()>, got <value>".
// (The benchmark tools add types of their own in bench/config.ts.)
import * as net from 'node:net';
import * as path from 'node:path';

/** What every key definition has, whatever its type. */
export interface KeyBase {
  /** As written in the config file; `STARLING_<NAME>` (upper case, '.' -> '_') in the environment. */
  name: string;
  /** In config-file syntax, so that it reads as a user would write it; parsed and checked at load. */
  default: string | (() => string);
  /** Docs: the default in words, when it depends on the machine. */
  defaultDoc?: string;
  /** Docs and error hints: a valid value in config-file syntax. */
  example: string;
  /** One or two sentences: what it does, units, when to change it. */
  doc: string;
  /**
   * The value is a secret: `config --print`, error messages and sources (a `-DKey=value` argument) never show it,
   * only whether it is set and how long it is.
   */
  secret?: boolean;
}
/** One key of the server. Numeric types carry an inclusive range, enums their choices. */
export type KeyDef = KeyBase &
  (
    | { type: 'int'; min: number; max: number }
    | { type: 'size'; min: number; max: number }
    | { type: 'enum'; choices: readonly string[] }
    | { type: 'enumlist'; choices: readonly string[] }
    | { type: 'bool' }
    /** `single`: exactly one address. */
    | { type: 'listen'; single?: boolean }
    | { type: 'cpulist' }
    | { type: 'path' }
    | { type: 'string' }
    /** Printable ASCII without spaces, `min` to `max` characters, or empty. */
    | { type: 'token'; min: number; max: number }
    /** Base64 text that decodes to at least `minBytes` bytes, or empty. */
    | { type: 'base64'; minBytes: number }
    /** A file path, or empty; stored absolute (relative to the working directory). Whether it exists is checked
     * where the key is used (a cross-check), not by the type. */
    | { type: 'file' }
    /** IPv4/IPv6 addresses and CIDR networks. */
    | { type: 'addresslist' }
    /** Web origins (`scheme://host[:port]`), or `*`. */
    | { type: 'originlist' }
    /** One or more `redis://[user[:password]@]host[:port][/db]` URLs. */
    | { type: 'redislist' }
  );

/**
 * One Redis server of ClusterRedis, as `redis://[user[:password]@]host[:port][/db]` gives it (the fields of
 * RedisAddress in native/cluster/options.h). `user` and `password` are percent-decoded; `user` is '' for the
 * default user, `password` '' for no AUTH (a user never comes without a password).
 */
export type RedisAddress = { host: string; port: number; user: string; password: string; db: number };

/** A listening address. `host` as written: "0.0.0.0" for "*", IPv6 without brackets, host names unresolved. */
export type ListenAddress = { host: string; port: number };

/** The TypeScript value of each type name. */
export interface TypeValues {
  int: number;
  size: number;
  bool: boolean;
  enum: string;
  enumlist: string[];
  listen: ListenAddress[];
  cpulist: number[];
  path: string;
  string: string;
  token: string;
  base64: string;
  file: string;
  /** Canonical `"<address>/<bits>"` strings (see parseAddressList). */
  addresslist: string[];
  /** Origins as browsers send them (lower-case scheme and host), or ['*']. */
  originlist: string[];
  /** At least one; in the order written (the order they are tried in). */
  redislist: RedisAddress[];
}
export type TypeName = keyof TypeValues;

/** Size suffixes are binary: K = KiB = 1024. "KB" is refused because it is ambiguous (1000 or 1024). */
export const K = 1024;
export const M = 1024 * K;
export const G = 1024 * M;

/** Linux CPU_SETSIZE: sched_setaffinity with a default cpu_set_t cannot name a CPU past 1023. */
const MAX_CPU = 1023;

/** A value type: values V, for keys defined as D. */
export interface ValueType<V, D extends KeyBase> {
  /** Completes "expected ...". */
  expected(def: D): string;
  /** Parses config-file syntax (already trimmed). */
  parse(text: string, def: D): V | undefined;
  /** Accepts an already-typed value given through the API (strings go through parse instead). */
  accept(value: unknown, def: D): V | undefined;
  /** Config-file syntax; parse(format(v)) equals v. */
  format(value: V): string;
  /** Docs: how a value of this type is written. */
  syntax: string;
  /** Docs: the allowed range of one key, or '' when the type says it all. */
  range(def: D): string;
  /**
   * Optional: for text that parse() refuses, what is wrong with it in a few words (added to the error line after
   * "expected ..., got ..."), when more can be said than expected() does. Must not quote a secret key's value.
   */
  problem?(text: string, def: D): string | undefined;
  /**
   * Optional, for types whose values may hold a secret part (a password in a URL): `text` in config syntax, valid
   * or not, with each such part replaced by `…`. Error messages, sources (a `-DKey=value` argument) and
   * `config --print` show this instead of the text; it returns `text` itself when there is nothing to hide.
   */
  hide?(text: string): string;
  /**
   * Optional: an already-typed value given through the API as config-file text, so that an invalid one is quoted
   * (through hide()) and explained (through problem()) like text; undefined when it has no such form.
   */
  asText?(value: unknown): string | undefined;
}
/** Any value type, as the loader uses it (it pairs each key with its own type, which TypeScript cannot follow). */
export type SomeValueType = ValueType<unknown, KeyBase>;

/** The value types of a key set: one per type name its keys use. */
export type TypeTable<D extends KeyBase & { type: string }> = { [N in D['type']]: ValueType<unknown, Extract<D, { type: N }>> };

export const inRange = (n: number, def: { min: number; max: number }) =>
  Number.isSafeInteger(n) && n >= def.min && n <= def.max ? n : undefined;

/** 1048576 -> "1M"; sizes that are not a whole number of K stay in bytes. */
export function formatSize(n: number): string {
  for (const [unit, factor] of [['G', G], ['M', M], ['K', K]] as const) {
    if (n !== 0 && n % factor === 0) return `${n / factor}${unit}`;
  }
  return String(n);
}

export const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** "*:8800" | "1.2.3.4:8800" | "[::1]:8800" | "name:8800" -> ListenAddress. */
function parseHostPort(token: string): ListenAddress | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(token);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  if (m[1] !== undefined) return net.isIPv6(m[1]) ? { host: m[1], port } : undefined;
  const host = m[2] === '*' ? '0.0.0.0' : m[2];
  if (net.isIPv4(host)) return { host, port };
  // Digits and dots that are not an IPv4 address are a typo, not a host name.
  return HOSTNAME.test(host) && !/^[\d.]+$/.test(host) ? { host, port } : undefined;
}

const formatHostPort = (a: ListenAddress) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

function parseCpuList(text: string): number[] | undefined {
  if (text === '') return [];
  const cpus: number[] = [];
  for (const part of text.split(/\s*,\s*/)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return undefined;
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (first > last || last > MAX_CPU) return undefined;
    for (let cpu = first; cpu <= last; cpu++) cpus.push(cpu);
  }
  return cpus;
}

/** [0,2,3] -> "0,2-3": ascending runs of consecutive CPUs become ranges; order and repeats are kept. */
function formatCpuList(cpus: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j] + 1) j++;
    parts.push(j === i ? String(cpus[i]) : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

// A request path: '/' then printable ASCII without spaces. Backslash is refused too: it is not valid in a
// URL path, and at the end of a config line it would mean "continued on the next line".
const PATH = /^\/[\x21-\x5b\x5d-\x7e]*$/;

export const TYPES: { [N in TypeName]: ValueType<TypeValues[N], Extract<KeyDef, { type: N }>> } = {
  int: {
    expected: (def) => `an integer between ${def.min} and ${def.max}`,
    parse: (text, def) => (/^-?\d+$/.test(text) ? inRange(Number(text), def) : undefined),
    accept: (value, def) => (typeof value === 'number' ? inRange(value, def) : undefined),
    format: String,
    syntax: 'A whole number in decimal, without `+`, separators, suffix or exponent: `4`, `1000`.',
    range: (def) => `${def.min} to ${def.max}`,
  },
  size: {
    expected: (def) => `a size in bytes between ${def.min} and ${def.max} (e.g. ${def.example})`,
    parse(text, def) {
      const m = /^(\d+)(?:([KMG])(?:iB)?)?$/i.exec(text);
      if (!m) return undefined;
      const factor = m[2] === undefined ? 1 : { K, M, G }[m[2].toUpperCase() as 'K' | 'M' | 'G'];
      return inRange(Number(m[1]) * factor, def);
    },
    accept: (value, def) => (typeof value === 'number' ? inRange(value, def) : undefined),
    format: formatSize,
    syntax:
      'A number of bytes, optionally with a binary suffix: `K` or `KiB` (1024), `M` or `MiB` (1024²), `G` or `GiB` ' +
      '(1024³), in any case: `65536`, `64K`, `64KiB`, `1M`, `1G`. `KB`/`MB` are refused as ambiguous.',
    range: (def) => `${formatSize(def.min)} to ${formatSize(def.max)} (${def.min} to ${def.max} bytes)`,
  },
  bool: {
    expected: () => 'true or false',
    parse: (text) => ({ true: true, false: false })[text.toLowerCase() as 'true' | 'false'],
    accept: (value) => (typeof value === 'boolean' ? value : undefined),
    format: String,
    syntax: '`true` or `false`, in any case.',
    range: () => '',
  },
  enum: {
    expected: (def) => `one of ${def.choices.join(', ')}`,
    parse: (text, def) => def.choices.find((c) => c.toLowerCase() === text.toLowerCase()),
    accept: () => undefined,
    format: String,
    syntax: 'One of the listed words, in any case.',
    range: (def) => def.choices.map((c) => `\`${c}\``).join(', '),
  },
  enumlist: {
    expected: (def) => `a list of ${def.choices.join(', ')} separated by commas or spaces, or nothing`,
    parse: (text, def) => parseChoices(text.split(/[\s,]+/).filter((t) => t !== ''), def.choices),
    accept: (value, def) =>
      Array.isArray(value) && value.every((v) => typeof v === 'string') ? parseChoices(value as string[], def.choices) : undefined,
    format: (list) => list.join(', '),
    syntax: 'Some of the listed words, separated by commas and/or spaces, in any case; each counts once. Empty means none.',
    range: (def) => def.choices.map((c) => `\`${c}\``).join(', '),
  },
  listen: {
    expected: (def) =>
      def.single
        ? 'one host:port, port 0 to 65535 (e.g. 127.0.0.1:8900)'
        : 'a list of host:port separated by commas or spaces, port 0 to 65535 (e.g. *:8800, [::1]:8800)',
    parse(text, def) {
      const tokens = text.split(/[\s,]+/).filter((t) => t !== '');
      const addresses = tokens.map(parseHostPort);
      if (def.single && tokens.length > 1) return undefined;
      return tokens.length > 0 && addresses.every((a) => a !== undefined) ? (addresses as ListenAddress[]) : undefined;
    },
    accept(value, def) {
      if (!Array.isArray(value) || value.length === 0 || (def.single && value.length > 1)) return undefined;
      const addresses = value.map((v) =>
        typeof v === 'string'
          ? parseHostPort(v.trim())
          : typeof v === 'object' && v !== null && typeof v.host === 'string' && Number.isInteger(v.port)
            ? parseHostPort(formatHostPort(v))
            : undefined,
      );
      return addresses.every((a) => a !== undefined) ? (addresses as ListenAddress[]) : undefined;
    },
    format: (addresses) => addresses.map(formatHostPort).join(', '),
    syntax:
      'One or more `host:port`, separated by commas and/or spaces. `*` is every IPv4 interface (0.0.0.0), IPv6 ' +
      'addresses go in brackets (`[::1]:8800`), host names are resolved at startup, port 0 picks a free port.',
    range: (def) => (def.single ? 'one address, port 0 to 65535' : 'ports 0 to 65535'),
  },
  cpulist: {
    expected: () => `a CPU list such as 0,2-3 (CPUs 0 to ${MAX_CPU}), or nothing for no pinning`,
    parse: parseCpuList,
    accept: (value) =>
      Array.isArray(value) && value.every((c) => Number.isInteger(c) && c >= 0 && c <= MAX_CPU)
        ? [...(value as number[])]
        : undefined,
    format: formatCpuList,
    syntax: 'CPU numbers and ranges in Linux list syntax, separated by commas: `0,2-3` is CPUs 0, 2 and 3. Empty means none.',
    range: () => `CPUs 0 to ${MAX_CPU}`,
  },
  path: {
    expected: () => 'a path starting with "/" of printable ASCII without spaces or backslashes',
    parse: (text) => (PATH.test(text) ? text : undefined),
    accept: () => undefined,
    format: String,
    syntax: 'Starts with `/`; printable ASCII without spaces or backslashes.',
    range: () => '',
  },
  string: {
    expected: () => 'text without control characters',
    parse: (text) => (TEXT.test(text) ? text : undefined),
    accept: () => undefined,
    format: String,
    syntax: 'Any text without control characters; spaces around it are dropped. Empty means none.',
    range: () => '',
  },
  token: {
    expected: (def) => `${def.min} to ${def.max} printable ASCII characters without spaces, or nothing`,
    parse: (text, def) => (text === '' || tokenProblem(text, def) === undefined ? text : undefined),
    accept: () => undefined,
    format: String,
    syntax:
      'Printable ASCII (`!` to `~`) without spaces, not ending in `\\`, of the length the key allows. Empty means none.',
    range: (def) => `${def.min} to ${def.max} characters`,
    problem: (text, def) => tokenProblem(text, def),
  },
  base64: {
    expected: (def) => `base64 of at least ${def.minBytes} bytes (standard or URL alphabet, = padding optional), or nothing`,
    parse: (text, def) => (text === '' || base64Problem(text, def.minBytes) === undefined ? text : undefined),
    accept: () => undefined,
    format: String,
    syntax:
      'Base64 text in the standard (`+`, `/`) or the URL (`-`, `_`) alphabet, not both, with or without `=` padding. ' +
      'Empty means none.',
    range: (def) => `at least ${def.minBytes} bytes once decoded`,
    problem: (text, def) => base64Problem(text, def.minBytes),
  },
  file: {
    expected: () => 'a file path without control characters, or nothing',
    parse: (text) => (text === '' ? '' : TEXT.test(text) ? path.resolve(text) : undefined),
    accept: () => undefined,
    format: String,
    syntax:
      'A file path. A relative path is relative to the directory the server is started in (not to the config file) ' +
      'and is shown and used as the absolute path. Empty means none.',
    range: () => '',
  },
  addresslist: {
    expected: () =>
      'IPv4/IPv6 addresses and CIDR networks separated by commas or spaces (e.g. 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8), or nothing',
    parse: (text) => {
      const { list, problems } = parseAddressList(text);
      return problems.length === 0 ? list : undefined;
    },
    accept: (value) => {
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return undefined;
      const { list, problems } = parseAddressList((value as string[]).join(','));
      return problems.length === 0 ? list : undefined;
    },
    format: (list) => list.join(', '),
    syntax:
      'IPv4 and IPv6 addresses and CIDR networks (`address/bits`), separated by commas and/or spaces: ' +
      '`127.0.0.1, 10.0.0.0/8, ::1, fd00::/8`. IPv6 without brackets; an IPv4-mapped IPv6 form (`::ffff:10.0.0.0/104`) ' +
      'stands for its IPv4 network (`10.0.0.0/8`); the bits past the prefix length must be zero. Host names are not ' +
      'resolved. Empty means none.',
    range: () => '',
    problem: (text) => parseAddressList(text).problems.join('; ') || undefined,
  },
  originlist: {
    expected: () => 'web origins (scheme://host[:port]) separated by commas or spaces, or *, or nothing',
    parse: (text) => {
      const { list, problems } = parseOriginList(text);
      return problems.length === 0 ? list : undefined;
    },
    accept: (value) => {
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return undefined;
      const { list, problems } = parseOriginList((value as string[]).join(','));
      return problems.length === 0 ? list : undefined;
    },
    format: (list) => list.join(', '),
    syntax:
      'Web origins as a browser sends them in its `Origin` header — `scheme://host[:port]`, no path — separated by ' +
      'commas and/or spaces: `https://app.example.com, http://localhost:3000`. Compared exactly (case-insensitively); ' +
      '`*` alone allows every origin. Empty means none.',
    range: () => '',
    problem: (text) => parseOriginList(text).problems.join('; ') || undefined,
  },
  redislist: {
    expected: () => 'redis://[user[:password]@]host[:port][/db] URLs separated by commas or spaces (e.g. redis://10.0.0.5:6379)',
    parse: (text) => {
      const { list, problems } = parseRedisList(text);
      return problems.length === 0 && list.length > 0 ? list : undefined;
    },
    accept: (value) => {
      const text = redisListText(value);
      if (text === undefined) return undefined;
      const { list, problems } = parseRedisList(text);
      return problems.length === 0 && list.length > 0 ? list : undefined;
    },
    format: (list) => list.map((a) => formatRedisAddress(a)).join(', '),
    syntax:
      'One or more `redis://[user[:password]@]host[:port][/db]` URLs, separated by commas and/or spaces: ' +
      '`redis://10.0.0.5:6379, redis://:s3cret@10.0.0.6/2`. The port defaults to 6379 and the database to 0; the host ' +
      'is a name, an IPv4 address or an IPv6 address in brackets. In the user name and the password, characters ' +
      'other than letters, digits and `-._~!$&\'()*+;=` are percent-encoded as in any URL (`@` is `%40`, `/` `%2F`, ' +
      'a space `%20`, a comma `%2C`, `%` itself `%25`); `redis://:password@host` authenticates as the default user. ' +
      'Passwords are never shown: errors, sources and `config --print` write `…` for them.',
    range: () => 'at least one URL',
    problem: (text) => {
      const { list, problems } = parseRedisList(text);
      if (problems.length > 0) return problems.join('; ');
      return list.length === 0 ? 'no URL: list at least one Redis server' : undefined;
    },
    hide: hideRedisPasswords,
    asText: redisListText,
  },
};

// ---- Redis URLs (redislist) ----

/** Redis's registered port, the port of a URL that names none. */
export const DEFAULT_REDIS_PORT = 6379;
/** Redis keeps its database count in an int: no index reaches 2^31. (The server's own `databases`, 16 by default,
 * is the real bound; the cluster link reports a SELECT it refuses.) */
const MAX_REDIS_DB = 2 ** 31 - 1;
/** The longest DNS name (RFC 1035). */
const MAX_HOST_NAME = 253;
/** `scheme://` where a URL starts: at the start of the text or after a separator. */
const URL_START = /(^|[\s,])([A-Za-z][A-Za-z0-9+.-]*:\/\/)/g;
const HAS_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
/** What RFC 3986 allows unescaped in a user name (unreserved, sub-delims, %-escapes); a password may add ':'. */
const URL_USER = /^[A-Za-z0-9\-._~!$&'()*+;=%]*$/;
const URL_PASSWORD = /^[A-Za-z0-9\-._~!$&'()*+;=%:]*$/;

/** The messages for what Starling does not do (yet), saying what to do instead. */
export const REDIS_TLS_UNSUPPORTED =
  'TLS to Redis is not supported yet; use redis:// on a private network or a TLS tunnel (stunnel)';
export const REDIS_SENTINEL_UNSUPPORTED =
  'Sentinel is not supported; list the primary and its replicas: the node uses the first that answers as primary';

/**
 * `text` cut where each URL starts (a scheme at the start or after a separator); the pieces, joined, are `text`.
 * The first piece is what comes before the first URL ('' when the text starts with one).
 */
function splitUrls(text: string): string[] {
  const starts = [...text.matchAll(URL_START)].map((m) => m.index! + m[1].length);
  const pieces = [text.slice(0, starts[0] ?? text.length)];
  starts.forEach((start, i) => pieces.push(text.slice(start, starts[i + 1] ?? text.length)));
  return pieces;
}

/** One piece of splitUrls with what stands between `:` and the last `@` of its user info replaced by `…`. */
function hideUrlPassword(piece: string): string {
  const scheme = piece.indexOf('://');
  const start = scheme < 0 ? 0 : scheme + 3;
  const at = piece.lastIndexOf('@');
  const colon = piece.indexOf(':', start);
  return at < start || colon < 0 || colon > at ? piece : `${piece.slice(0, colon + 1)}…${piece.slice(at)}`;
}

/** `text` (Redis URLs in config syntax, valid or not) with every password replaced by `…`; hosts and users stay. */
export function hideRedisPasswords(text: string): string {
  return splitUrls(text).map(hideUrlPassword).join('');
}

/** A Redis address as a URL, the port always written (a password as `…` with `hidePassword`); parses back to it. */
export function formatRedisAddress(a: RedisAddress, hidePassword = false): string {
  const auth = a.password === '' ? '' : `${encodeURIComponent(a.user)}:${hidePassword ? '…' : encodeURIComponent(a.password)}@`;
  return `redis://${auth}${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}${a.db === 0 ? '' : `/${a.db}`}`;
}

/** An API value of ClusterRedis (a URL string, RedisAddress-like objects, or an array of them) as config text. */
function redisListText(value: unknown): string | undefined {
  const parts: string[] = [];
  for (const v of Array.isArray(value) ? value : [value]) {
    if (typeof v === 'string') parts.push(v.trim());
    else if (typeof v === 'object' && v !== null && typeof v.host === 'string') {
      const { host, port = DEFAULT_REDIS_PORT, user = '', password = '', db = 0 } = v as Partial<RedisAddress>;
      if (typeof port !== 'number' || typeof user !== 'string' || typeof password !== 'string' || typeof db !== 'number') return undefined;
      // A user without a password stays in the text, so that the parser refuses it with its reason.
      const auth = user !== '' || password !== '' ? `${encodeURIComponent(user)}${password === '' ? '' : `:${encodeURIComponent(password)}`}@` : '';
      parts.push(`redis://${auth}${host!.includes(':') ? `[${host}]` : host}:${port}${db === 0 ? '' : `/${db}`}`);
    } else return undefined;
  }
  return parts.join(', ');
}

/** Percent-decoded UTF-8, or undefined for a `%` that is not a %XX escape or escapes that are not UTF-8. */
function percentDecode(text: string): string | undefined {
  if (/%(?![0-9A-Fa-f]{2})/.test(text)) return undefined;
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** One `redis://[user[:password]@]host[:port][/db]` URL (no separators in it): the address, or what is wrong. */
export function parseRedisUrl(url: string): { address: RedisAddress } | { problem: string } {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(url);
  if (!m) return { problem: 'not a redis:// URL; write redis://host[:port][/db]' };
  const scheme = m[1].toLowerCase();
  if (scheme === 'rediss') return { problem: REDIS_TLS_UNSUPPORTED };
  if (scheme.includes('sentinel')) return { problem: REDIS_SENTINEL_UNSUPPORTED };
  if (scheme === 'unix' || scheme === 'redis+unix' || scheme === 'redis+socket')
    return { problem: 'Unix sockets are not supported; give Redis\'s TCP address: redis://127.0.0.1:6379' };
  if (scheme !== 'redis') return { problem: `an unknown scheme ${m[1]}://; write redis://host[:port][/db]` };

  // RFC 3986: the authority ends at the first '/', '?' or '#'; the user info ends at its last '@'.
  const rest = m[2];
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const tail = end < 0 ? '' : rest.slice(end);
  if (tail.includes('@')) return { problem: 'a /, ? or # in the user name or password must be percent-encoded (%2F, %3F, %23)' };
  const at = authority.lastIndexOf('@');
  let user = '';
  let password = '';
  if (at >= 0) {
    const info = authority.slice(0, at);
    if (info.includes('@')) return { problem: 'an @ in the user name or password must be percent-encoded (%40)' };
    const colon = info.indexOf(':');
    const rawUser = colon < 0 ? info : info.slice(0, colon);
    const rawPassword = colon < 0 ? '' : info.slice(colon + 1);
    if (!URL_USER.test(rawUser) || !URL_PASSWORD.test(rawPassword))
      return { problem: 'a character in the user name or password that must be percent-encoded (a space is %20, a comma %2C)' };
    const u = percentDecode(rawUser);
    const p = percentDecode(rawPassword);
    if (u === undefined || p === undefined)
      return { problem: 'a % in the user name or password that is not a %XX escape of UTF-8 (write % itself as %25)' };
    if (/[\x00-\x1f\x7f]/.test(u + p)) return { problem: 'a control character in the user name or password' };
    if (u !== '' && p === '')
      return { problem: 'a user name without a password: write redis://user:password@host, or redis://:password@host for the default user' };
    [user, password] = [u, p];
  }

  const hostPort = authority.slice(at + 1);
  let host: string;
  let portText: string | undefined;
  if (hostPort.startsWith('[')) {
    const b = /^\[([^\]]*)\](?::(.*))?$/.exec(hostPort);
    if (!b || !net.isIPv6(b[1]) || b[1].includes('%'))
      return { problem: 'not an IPv6 address in brackets (without a zone), e.g. redis://[fd00::5]:6379' };
    [host, portText] = [b[1], b[2]];
  } else {
    if (hostPort.split(':').length > 2) return { problem: 'an IPv6 address must be in brackets: redis://[fd00::5]:6379' };
    const c = hostPort.indexOf(':');
    [host, portText] = c < 0 ? [hostPort, undefined] : [hostPort.slice(0, c), hostPort.slice(c + 1)];
    if (host === '') return { problem: 'no host: write redis://host[:port][/db]' };
    const name = HOSTNAME.test(host) && !/^[\d.]+$/.test(host) && host.length <= MAX_HOST_NAME;
    if (!net.isIPv4(host) && !name) return { problem: `${host} is not a host name or an IPv4 address` };
  }
  let port = DEFAULT_REDIS_PORT;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) return { problem: 'the port must be a number from 1 to 65535' };
  }

  let db = 0;
  if (tail.includes('?')) return { problem: 'query strings (?…) are not supported: give the database as the path, redis://host:6379/2' };
  if (tail.includes('#')) return { problem: 'a fragment (#…) is not part of a Redis address' };
  if (tail !== '' && tail !== '/') {
    const d = /^\/(\d{1,10})$/.exec(tail);
    db = d ? Number(d[1]) : NaN;
    if (!(db <= MAX_REDIS_DB)) return { problem: `the path is the database number, /0 to /${MAX_REDIS_DB}` };
  }
  return { address: { host, port, user, password, db } };
}

/**
 * A ClusterRedis value in config syntax: URLs separated by commas and/or spaces -> the addresses, in order, and one
 * problem per bad entry (each quoted with its password hidden).
 */
export function parseRedisList(text: string): { list: RedisAddress[]; problems: string[] } {
  const list: RedisAddress[] = [];
  const problems: string[] = [];
  const add = (url: string) => {
    const r = parseRedisUrl(url);
    const shown = hideUrlPassword(url);
    if ('problem' in r) problems.push(`${shown}: ${r.problem}`);
    else if (list.some((a) => a.host.toLowerCase() === r.address.host.toLowerCase() && a.port === r.address.port))
      problems.push(`${shown}: ${r.address.host}:${r.address.port} is listed twice`);
    else list.push(r.address);
  };
  for (const piece of splitUrls(text)) {
    const entry = piece.replace(/^[\s,]+|[\s,]+$/g, '');
    if (entry === '') continue;
    const tokens = entry.split(/[\s,]+/);
    if (HAS_SCHEME.test(entry) && tokens.length > 1 && entry.includes('@')) {
      // Most likely a password with a space or comma in it: it must not be shown, even in parts.
      problems.push(
        `${hideUrlPassword(entry)}: a space or comma inside a URL; separate URLs with commas or spaces, and percent-encode ` +
          'a space (%20) or comma (%2C) in a user name or password',
      );
      continue;
    }
    tokens.forEach((token, i) => {
      if (i === 0 && HAS_SCHEME.test(entry)) add(token);
      else if (/sentinel/i.test(token)) problems.push(`${hideUrlPassword(token)}: ${REDIS_SENTINEL_UNSUPPORTED}`);
      else problems.push(`${hideUrlPassword(token)}: not a redis:// URL; write redis://${hideUrlPassword(token)}`);
    });
  }
  return { list, problems };
}

/** The longest origin accepted: a host name is at most 253 characters; the native response head has room for this. */
const MAX_ORIGIN = 300;
/** `scheme://host[:port]` as a browser's Origin header spells it (no path, no trailing slash). */
const ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/(\[[0-9a-f:.]+\]|[a-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?$/;

/** Splits an origin list; what is wrong with each bad entry. */
export function parseOriginList(text: string): { list: string[]; problems: string[] } {
  const list: string[] = [];
  const problems: string[] = [];
  for (const raw of text.split(/[\s,]+/).filter(Boolean)) {
    const entry = raw.toLowerCase();
    if (entry === '*') list.push('*');
    else if (entry.length > MAX_ORIGIN) problems.push(`an origin longer than ${MAX_ORIGIN} characters`);
    else if (entry.endsWith('/')) problems.push(`"${raw}": an origin has no path or trailing "/"`);
    else if (!ORIGIN.test(entry)) problems.push(`"${raw}" is not an origin (scheme://host[:port])`);
    else list.push(entry);
  }
  if (list.includes('*') && list.length > 1) problems.push('"*" allows every origin: list nothing else with it');
  return { list, problems };
}

/** Why `text` is not a token of `def`'s length (without quoting it: tokens are secrets), or undefined. */
function tokenProblem(text: string, def: { min: number; max: number }): string | undefined {
  const chars = [...text];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    if (c >= '!' && c <= '~') continue;
    const what = c === ' ' ? 'a space' : c < ' ' || c === '\x7f' ? 'a control character' : 'a non-ASCII character';
    return `${what} at character ${i + 1}`;
  }
  if (text.endsWith('\\')) return 'a backslash at the end (in a config file it would continue the line)';
  if (chars.length < def.min) return `${chars.length} characters, fewer than ${def.min}`;
  if (chars.length > def.max) return `${chars.length} characters, more than ${def.max}`;
  return undefined;
}

/**
 * The bytes of base64 text, standard or URL alphabet (not a mix), `=` padding optional but right if present; or
 * undefined. The same rules as the JWT verifier's (src/entitlement/jwt.ts), so that a secret accepted here is
 * accepted there.
 */
export function decodeBase64(text: string): Buffer | undefined {
  const standard = /^[A-Za-z0-9+/]+={0,2}$/.test(text);
  const url = /^[A-Za-z0-9_-]+={0,2}$/.test(text);
  if (!standard && !url) return undefined;
  const body = text.replace(/=+$/, '');
  if (body.length % 4 === 1) return undefined;
  if (body.length !== text.length && text.length % 4 !== 0) return undefined;
  return Buffer.from(body, url && !standard ? 'base64url' : 'base64');
}

/** Why `text` is not base64 of at least `minBytes` bytes (without quoting it: it is a secret), or undefined. */
function base64Problem(text: string, minBytes: number): string | undefined {
  const bytes = decodeBase64(text);
  if (bytes === undefined) {
    const bad = [...text].findIndex((c) => !/[A-Za-z0-9+/_=-]/.test(c));
    if (bad >= 0) return `not base64: a character outside A-Z, a-z, 0-9, +, /, -, _ and = at character ${bad + 1}`;
    if (/[+/]/.test(text) && /[_-]/.test(text)) return 'not base64: it mixes the standard (+ /) and URL (- _) alphabets';
    if (/=[^=]/.test(text) || /={3,}$/.test(text)) return 'not base64: = may only pad the end, at most twice';
    return `not base64: ${text.length} characters cannot be base64 (the padding or the length is wrong)`;
  }
  if (bytes.length < minBytes) {
    return `it decodes to ${bytes.length} bytes, fewer than ${minBytes}; generate one with: openssl rand -base64 ${Math.max(minBytes, 64)}`;
  }
  return undefined;
}

// ---- IP addresses and networks (addresslist) ----

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address. */
type IpBytes = number[];

function ipv4Bytes(text: string): IpBytes {
  return text.split('.').map(Number);
}

/** Bytes of an IPv6 address that net.isIPv6 accepted (no zone index). */
function ipv6Bytes(text: string): IpBytes {
  let s = text.toLowerCase();
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = ipv4Bytes(v4[2]);
    s = `${v4[1]}${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const double = s.indexOf('::');
  const split = (part: string) => (part === '' ? [] : part.split(':'));
  let groups: string[];
  if (double < 0) groups = s.split(':');
  else {
    const head = split(s.slice(0, double));
    const tail = split(s.slice(double + 2));
    groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  }
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

/** The address of `text` (IPv4 dotted decimal, or IPv6 without brackets or zone), or undefined. */
function parseIp(text: string): IpBytes | undefined {
  if (net.isIPv4(text)) return ipv4Bytes(text);
  if (net.isIPv6(text) && !text.includes('%')) return ipv6Bytes(text);
  return undefined;
}

/** ::ffff:a.b.c.d, the form an IPv4 client has on an IPv6 socket. */
function isMapped(b: IpBytes): boolean {
  return b.length === 16 && b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
}

/** RFC 5952 text: IPv4 dotted decimal; IPv6 in lower case, without leading zeros, the longest run of two or more
 * zero groups (the first, if two are as long) written `::`. */
export function formatIp(b: IpBytes): string {
  if (b.length === 4) return b.join('.');
  const groups = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** `b` with every bit past the first `bits` cleared. */
function networkOf(b: IpBytes, bits: number): IpBytes {
  return b.map((x, i) => {
    const keep = Math.max(0, Math.min(8, bits - 8 * i));
    return x & ((0xff << (8 - keep)) & 0xff);
  });
}

/** A network: its address (host bits zero) and prefix length. */
export interface IpNetwork {
  bytes: IpBytes;
  bits: number;
}

/**
 * One entry of an address list: `address` or `address/bits`. An IPv4-mapped IPv6 entry with a prefix of 96 bits
 * or more becomes the IPv4 network it stands for. Returns the network, or what is wrong with the entry.
 */
export function parseAddressEntry(token: string): { network: IpNetwork } | { problem: string } {
  const slash = token.indexOf('/');
  const addressText = slash < 0 ? token : token.slice(0, slash);
  const bitsText = slash < 0 ? undefined : token.slice(slash + 1);
  if (addressText.startsWith('[')) return { problem: `${token}: write IPv6 addresses without brackets` };
  if (addressText.includes('%') && net.isIPv6(addressText)) {
    return { problem: `${token}: a zone index (%...) cannot be part of an entry; write the address without it` };
  }
  let bytes = parseIp(addressText);
  if (bytes === undefined) {
    const name = HOSTNAME.test(addressText) && !/^[\d.]+$/.test(addressText);
    return { problem: `${token}: not an IPv4 or IPv6 address${name ? ' (host names are not resolved; write the address)' : ''}` };
  }
  const max = bytes.length * 8;
  let bits = max;
  if (bitsText !== undefined) {
    if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) {
      return { problem: `${token}: the prefix length of an ${max === 32 ? 'IPv4' : 'IPv6'} network is 0 to ${max}` };
    }
    bits = Number(bitsText);
  }
  if (isMapped(bytes) && bits >= 96) [bytes, bits] = [bytes.slice(12), bits - 96];
  const network = networkOf(bytes, bits);
  if (network.some((x, i) => x !== bytes![i])) {
    return { problem: `${token}: host bits set; write ${formatIp(network)}/${bits}` };
  }
  return { network: { bytes, bits } };
}

/**
 * An address list in config syntax (entries separated by commas and/or spaces) -> canonical `"<address>/<bits>"`
 * strings, each once, in the order given (a bare address is /32 or /128), and one problem per bad entry.
 */
export function parseAddressList(text: string): { list: string[]; problems: string[] } {
  const list: string[] = [];
  const problems: string[] = [];
  for (const token of text.split(/[\s,]+/).filter((t) => t !== '')) {
    const entry = parseAddressEntry(token);
    if ('problem' in entry) problems.push(entry.problem);
    else {
      const canonical = `${formatIp(entry.network.bytes)}/${entry.network.bits}`;
      if (!list.includes(canonical)) list.push(canonical);
    }
  }
  return { list, problems };
}

/**
 * A client address as Node.js reports it (`socket.remoteAddress`: `127.0.0.1`, `::1`, `::ffff:127.0.0.1`,
 * `fe80::1%eth0`) -> its bytes, IPv4-mapped IPv6 as IPv4 and a zone index dropped; undefined if it is not an address.
 */
export function parseClientAddress(address: string): IpBytes | undefined {
  if (typeof address !== 'string') return undefined;
  const zone = address.indexOf('%');
  const bytes = parseIp(zone >= 0 && net.isIPv6(address) ? address.slice(0, zone) : address);
  return bytes && isMapped(bytes) ? bytes.slice(12) : bytes;
}

/** Whether `address` (bytes as parseClientAddress gives) is inside `network`. IPv4 and IPv6 never match each other. */
export function inNetwork(address: IpBytes, network: IpNetwork): boolean {
  if (address.length !== network.bytes.length) return false;
  const masked = networkOf(address, network.bits);
  return masked.every((x, i) => x === network.bytes[i]);
}

// Text values: no control characters (a newline would end the config line), and no trailing backslash (it
// would continue the line in a config file).
const TEXT = /^(?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\\])?$/;

/** Tokens -> the matching choices in their schema spelling, each once, in the order given; undefined if one is unknown. */
function parseChoices(tokens: string[], choices: readonly string[]): string[] | undefined {
  const out: string[] = [];
  for (const token of tokens) {
    const choice = choices.find((c) => c.toLowerCase() === token.trim().toLowerCase());
    if (choice === undefined) return undefined;
    if (!out.includes(choice)) out.push(choice);
  }
  return out;
}

/** TYPES[def.type] with the key's own type (TypeScript cannot correlate the two through the union). */
export function typeOf(def: KeyDef): SomeValueType {
  return TYPES[def.type] as unknown as SomeValueType;
}
