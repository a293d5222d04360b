// `starling tune`: prints or applies the kernel profile of tuning/sysctl-<role>.conf. Those files are the one
// place the values live (docs/tuning.md explains them, `starling doctor` suggests them as fixes); this module
// parses them and reads and writes the live values through /proc/sys.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type Role = 'server' | 'client';
export const ROLES: readonly Role[] = ['server', 'client'];

/** One `key = value` line of a profile with the comment block directly above it (its reason). */
export interface Setting {
  key: string;
  /** As written in the file, whitespace normalised to single spaces. */
  value: string;
  /** The comment lines directly above the key, without their '#'. */
  reason: string[];
  /** 1-based line of the key in the file. */
  line: number;
  /** Written `-key = value`: sysctl.d's "ignore if it cannot be set" (e.g. a module that is not loaded). */
  optional: boolean;
}

export interface Profile {
  file: string;
  settings: Setting[];
}

/**
 * Of a profile's tcp_mem (in pages), at most this share of the machine's memory is applied. The seeds set
 * 10,000,000 pages (38 GiB) on a 96 GB server, ~40%; the same pages on a smaller machine would let TCP
 * buffers take more than all of its memory before the kernel pushes back.
 */
export const TCP_MEM_MAX_SHARE = 0.4;
/** Sysctls whose values are counts of memory pages, capped by TCP_MEM_MAX_SHARE. */
const PAGE_VALUED = new Set(['net.ipv4.tcp_mem', 'net.ipv4.udp_mem']);

/** tuning/ of this installation: <root>/tuning, whether run from a checkout (dist/src) or a package (lib/dist/src). */
export const TUNING_DIR = path.join(__dirname, '..', '..', 'tuning');

export function profileFile(role: Role): string {
  return path.join(TUNING_DIR, `sysctl-${role}.conf`);
}

/** Thrown for a malformed profile; the message names the file and line. */
export class ProfileError extends Error {
  override name = 'ProfileError';
}

/**
 * Parses sysctl.d(5) syntax: `key = value` lines ('-key = value': failure to set it is not an error), '#' or
 * ';' comment lines, blank lines. A key's reason is the comment block that ends on the line directly above it.
 * A key may appear only once.
 */
export function parseProfile(text: string, file: string): Profile {
  const settings: Setting[] = [];
  const seen = new Map<string, number>();
  let comments: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') {
      comments = [];
      continue;
    }
    if (line.startsWith('#') || line.startsWith(';')) {
      comments.push(line.replace(/^[#;] ?/, ''));
      continue;
    }
    const m = /^(-?)([A-Za-z0-9_.\-/]+)\s*=\s*(.*)$/.exec(line);
    if (!m || m[3].trim() === '') throw new ProfileError(`${file}:${i + 1}: expected key = value, got ${JSON.stringify(line)}`);
    const key = m[2].replace(/\//g, '.');
    if (seen.has(key)) throw new ProfileError(`${file}:${i + 1}: ${key} set twice, first on line ${seen.get(key)}`);
    seen.set(key, i + 1);
    settings.push({ key, value: normalize(m[3]), reason: comments, line: i + 1, optional: m[1] === '-' });
    comments = [];
  }
  return { file, settings };
}

export function loadProfile(file: string): Profile {
  return parseProfile(fs.readFileSync(file, 'utf8'), file);
}

/** Sysctl values compare as whitespace-separated words: /proc/sys/net/ipv4/tcp_mem reads "a\tb\tc". */
export function normalize(value: string): string {
  return value.trim().split(/\s+/).join(' ');
}

/** net.ipv4.tcp_mem -> /proc/sys/net/ipv4/tcp_mem */
export function sysctlPath(key: string): string {
  return path.join('/proc/sys', ...key.split('.'));
}

/** The live value, normalised; undefined if this kernel has no such key (or it cannot be read). */
export function readSysctl(key: string): string | undefined {
  try {
    return normalize(fs.readFileSync(sysctlPath(key), 'utf8'));
  } catch {
    return undefined;
  }
}

/** Memory page size: KernelPageSize of this process's first mapping (4096 on x86-64). */
export function pageSize(): number {
  try {
    const smaps = fs.readFileSync('/proc/self/smaps', 'utf8');
    const m = /KernelPageSize:\s+(\d+) kB/.exec(smaps);
    if (m) return Number(m[1]) * 1024;
  } catch {
    // fall through
  }
  return 4096;
}

/**
 * The value a setting gets on this machine: the profile's, except that page-valued keys (tcp_mem) are capped
 * at TCP_MEM_MAX_SHARE of memory. `note` says why the value differs from the file.
 */
export function effectiveValue(s: Setting, memTotalBytes = os.totalmem(), page = pageSize()): { value: string; note?: string } {
  if (!PAGE_VALUED.has(s.key)) return { value: s.value };
  const cap = Math.floor((memTotalBytes * TCP_MEM_MAX_SHARE) / page);
  const pages = s.value.split(' ').map(Number);
  if (pages.some((p) => !Number.isFinite(p)) || pages.every((p) => p <= cap)) return { value: s.value };
  const gib = (n: number) => ((n * page) / 2 ** 30).toFixed(1);
  return {
    value: pages.map((p) => Math.min(p, cap)).join(' '),
    note: `capped at ${TCP_MEM_MAX_SHARE * 100}% of this machine's ${gib(memTotalBytes / page)} GiB; the profile's ${s.value} pages are ${gib(Math.max(...pages))} GiB`,
  };
}

/** The profile as a sysctl.d file for this machine, each key with its reason and its current value. */
export function formatProfile(profile: Profile, role: Role | undefined): string {
  const out = [
    `# Starling sysctl profile${role ? ` for a ${role}` : ''}, from ${profile.file}`,
    `# for ${os.hostname()} (Linux ${os.release()}, ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB), ${new Date().toISOString().slice(0, 10)}.`,
    `# Apply now:   starling tune --apply${role ? ` --role ${role}` : ''}`,
    `# Keep it:     starling tune --print${role ? ` --role ${role}` : ''} > /etc/sysctl.d/60-starling${role === 'client' ? '-client' : ''}.conf && sysctl --system`,
    '# The per-process descriptor limit is not a sysctl: see tuning/limits.conf and LimitNOFILE in tuning/starling.service.',
  ];
  for (const s of profile.settings) {
    const { value, note } = effectiveValue(s);
    const now = readSysctl(s.key);
    out.push('');
    for (const r of s.reason) out.push(r === '' ? '#' : `# ${r}`);
    if (note) out.push(`# On this machine: ${note}.`);
    out.push(`# Now: ${now === undefined ? 'not present on this kernel (skipped)' : now === value ? `${now} (already)` : now || '(empty)'}`);
    out.push(`${s.optional ? '-' : ''}${s.key} = ${value}`);
  }
  return out.join('\n') + '\n';
}

export type Status = 'changed' | 'already' | 'failed' | 'skipped';
export interface Outcome {
  key: string;
  wanted: string;
  before?: string;
  after?: string;
  status: Status;
  /** failed / skipped: why; changed: a note (e.g. capped). */
  reason?: string;
}

/** Writes one value through /proc/sys and reads it back. */
function writeSysctl(key: string, wanted: string): Outcome {
  const before = readSysctl(key);
  if (before === undefined) {
    return { key, wanted, status: 'skipped', reason: `not on this kernel: no ${sysctlPath(key)} (module not loaded, or another kernel)` };
  }
  if (before === wanted) return { key, wanted, before, after: before, status: 'already' };
  try {
    fs.writeFileSync(sysctlPath(key), wanted);
  } catch (err) {
    return { key, wanted, before, after: before, status: 'failed', reason: writeError(err as NodeJS.ErrnoException) };
  }
  const after = readSysctl(key);
  if (after !== wanted) return { key, wanted, before, after, status: 'failed', reason: `the kernel kept ${JSON.stringify(after)}` };
  return { key, wanted, before, after, status: 'changed' };
}

function writeError(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${e.code}): needs root with CAP_SYS_ADMIN; in a container or a non-initial network namespace the host owns this setting`;
    case 'EINVAL':
      return 'the kernel rejected the value (EINVAL)';
    case 'EROFS':
      return '/proc/sys is mounted read-only here (EROFS): set it on the host';
    default:
      return `${e.code ?? 'error'}: ${e.message}`;
  }
}

/** Applies every setting in file order (page-valued ones capped, see effectiveValue). */
export function applyProfile(profile: Profile): Outcome[] {
  return profile.settings.map((s) => {
    const { value, note } = effectiveValue(s);
    const o = writeSysctl(s.key, value);
    if (note && o.status !== 'failed') o.reason = note;
    return o;
  });
}

export function formatOutcomes(outcomes: Outcome[]): string {
  const width = Math.max(...outcomes.map((o) => o.key.length));
  const lines = outcomes.map((o) => {
    const key = o.key.padEnd(width);
    switch (o.status) {
      case 'changed':
        return `  changed  ${key}  ${o.before || '(empty)'} -> ${o.after}${o.reason ? `  (${o.reason})` : ''}`;
      case 'already':
        return `  already  ${key}  ${o.after}${o.reason ? `  (${o.reason})` : ''}`;
      case 'skipped':
        return `  skipped  ${key}  ${o.reason}`;
      case 'failed':
        return `  FAILED   ${key}  wanted ${o.wanted}, still ${o.after || '(empty)'}: ${o.reason}`;
    }
  });
  const count = (s: Status) => outcomes.filter((o) => o.status === s).length;
  lines.push(
    '',
    `${count('changed')} changed, ${count('already')} already set, ${count('skipped')} skipped, ${count('failed')} failed.` +
      (count('changed') > 0 ? ' Live values only: they last until reboot (see --print to keep them).' : ''),
  );
  return lines.join('\n') + '\n';
}

/** Raised for bad command-line arguments; the CLI prints it with the usage. */
export class TuneUsageError extends Error {}

export interface TuneArgs {
  mode: 'print' | 'apply';
  role: Role;
  /** --profile FILE: a profile other than tuning/sysctl-<role>.conf. */
  file?: string;
}

export function parseTuneArgs(argv: string[]): TuneArgs {
  let mode: TuneArgs['mode'] | undefined;
  let role: Role = 'server';
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (name: string) => {
      if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
      if (i + 1 >= argv.length) throw new TuneUsageError(`tune: ${name} needs a value`);
      return argv[++i];
    };
    if (a === '--print' || a === '--apply') {
      if (mode && mode !== a.slice(2)) throw new TuneUsageError('tune: give either --print or --apply, not both');
      mode = a.slice(2) as TuneArgs['mode'];
    } else if (a === '--role' || a.startsWith('--role=')) {
      const r = value('--role');
      if (!ROLES.includes(r as Role)) throw new TuneUsageError(`tune: --role: expected server or client, got ${JSON.stringify(r)}`);
      role = r as Role;
    } else if (a === '--profile' || a.startsWith('--profile=')) {
      file = value('--profile');
    } else {
      throw new TuneUsageError(`tune: unknown argument ${JSON.stringify(a)}`);
    }
  }
  if (!mode) throw new TuneUsageError('tune: give --print or --apply');
  return { mode, role, file };
}

/** `starling tune`: returns the exit code (0 = the profile is in effect, 1 = some setting was not applied). */
export function tune(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s), err: (s: string) => void = (s) => process.stderr.write(s)): number {
  const args = parseTuneArgs(argv);
  const profile = loadProfile(args.file ?? profileFile(args.role));
  const role = args.file ? undefined : args.role;
  if (args.mode === 'print') {
    out(formatProfile(profile, role));
    return 0;
  }
  const euid = process.geteuid?.() ?? -1;
  if (euid !== 0) {
    const pending = profile.settings
      .map((s) => ({ key: s.key, now: readSysctl(s.key), wanted: effectiveValue(s).value }))
      .filter((p) => p.now !== undefined && p.now !== p.wanted);
    const lines = [
      `starling tune --apply: refused: writing /proc/sys needs root, and this process runs as uid ${euid}.`,
      `Run it as root (sudo starling tune --apply --role ${args.role}), or install the profile: starling tune --print --role ${args.role}.`,
      pending.length === 0 ? 'Nothing to change anyway: every setting of the profile is already in effect.' : `Not changed (${pending.length}):`,
      ...pending.map((p) => `  not changed  ${p.key}: now ${p.now || '(empty)'}, profile ${p.wanted}`),
    ];
    err(lines.join('\n') + '\n');
    return pending.length === 0 ? 0 : 1;
  }
  const outcomes = applyProfile(profile);
  out(`starling tune --apply: ${profile.file}\n` + formatOutcomes(outcomes));
  return outcomes.some((o) => o.status === 'failed') ? 1 : 0;
}
