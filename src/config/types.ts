// The value types of configuration keys: how each is written, parsed, checked and printed, and the shape of
// a key's definition. One entry per type; schema.ts says which key has which type. Parsers return undefined
// for an invalid value and the caller reports it as "<where>: <Key>: expected <expected()>, got <value>".
// (The benchmark tools add types of their own in bench/config.ts.)
import * as net from 'node:net';

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
  );

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
};

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
