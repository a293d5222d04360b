// `starling doctor --connections N [--role server|client]`: reads the live system and says, item by item,
// whether N connections fit, and the exact command that fixes each shortfall. Exit code 0 = fits, 1 = does not.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import { effectiveValue, loadProfile, pageSize, profileFile, readSysctl, type Role, ROLES, type Setting } from './tune';

/**
 * Descriptors a Starling process keeps for itself below its RLIMIT_NOFILE: listeners, one epoll and eventfd
 * per workgroup, Node.js's own (~30: stdio, libuv, inspector pipes), worker IPC. The server's own cap uses the
 * same figure (native/runtime/server.cc kReservedFds: MaxConnections 0 = the open-file limit less 256), so
 * what the doctor promises is what the server takes.
 */
export const FD_RESERVE = 256;
/** Kernel memory of one idle TCP socket, measured on these machines (the seeds measured ~3.2 KB on theirs). */
export const KERNEL_BYTES_PER_SOCKET = 3800;
/** Starling's own memory per idle subscribed connection: W3 in bench/results/2026-11-22-21-37.md. */
export const SERVER_BYTES_PER_CONNECTION = 292;
/**
 * benchsub's memory per idle subscribed connection (native client engine): RSS at 15,000 minus RSS at 1,000
 * connections, / 14,000, measured here on 2026-11-22 (~0.9 KB: per-connection latency and framing state).
 */
export const CLIENT_BYTES_PER_CONNECTION = 940;
/** A connection with one message queued holds about one page of TCP memory (the seeds: 10M pages for 10M). */
const TCP_PAGES_PER_CONNECTION = 1;
/** Starling's listen() backlog (native/server.cc kListenBacklog); the kernel caps it at net.core.somaxconn. */
const LISTEN_BACKLOG = 65535;
/** benchsub's default ConnectionsPerProcess (bench/tools.ts): it forks a worker per this many connections. */
const BENCHSUB_PER_PROCESS = 18000;
/** CAP_SYS_RESOURCE: needed to raise a hard RLIMIT. */
const CAP_SYS_RESOURCE = 24;
/** The usual server port; the client profile reserves it. */
const DEFAULT_PORT = 8800;

export type ItemStatus = 'ok' | 'FAIL' | 'warn' | 'info';

/** One checked item. Only FAIL makes the connections not fit; warn is advice, info is context. */
export interface Item {
  name: string;
  status: ItemStatus;
  /** What was found and what N needs, in one or two sentences. */
  detail: string;
  /** The exact command (or setting) that fixes a FAIL or warn. */
  fix?: string;
}

export interface Report {
  connections: number;
  role: Role;
  server: string;
  fits: boolean;
  items: Item[];
}

export interface DoctorArgs {
  connections: number;
  role: Role;
  /** The server the clients connect to (client role): decides which source addresses count. */
  server: string;
  json: boolean;
  /** The server's IoBackend to check for; default: io_uring where the kernel allows it, else epoll. */
  backend?: 'epoll' | 'io_uring';
}

export class DoctorUsageError extends Error {}

/** "15000", "15,000", "50k", "1M" -> a count. */
export function parseCount(text: string): number | undefined {
  const m = /^(\d[\d_,]*)([kKmM]?)$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1].replace(/[_,]/g, '')) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1e3 : 1e6);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

export function parseDoctorArgs(argv: string[]): DoctorArgs {
  let connections: number | undefined;
  let role: Role = 'server';
  let server = '127.0.0.1';
  let json = false;
  let backend: DoctorArgs['backend'];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (name: string) => {
      if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
      if (i + 1 >= argv.length) throw new DoctorUsageError(`doctor: ${name} needs a value`);
      return argv[++i];
    };
    if (a === '--connections' || a.startsWith('--connections=') || a === '-n') {
      const v = a === '-n' ? value('-n') : value('--connections');
      connections = parseCount(v);
      if (connections === undefined) throw new DoctorUsageError(`doctor: --connections: expected a positive integer (15000, 50k, 1M), got ${JSON.stringify(v)}`);
    } else if (a === '--role' || a.startsWith('--role=')) {
      const r = value('--role');
      if (!ROLES.includes(r as Role)) throw new DoctorUsageError(`doctor: --role: expected server or client, got ${JSON.stringify(r)}`);
      role = r as Role;
    } else if (a === '--server' || a.startsWith('--server=')) {
      server = value('--server');
      if (server === '') throw new DoctorUsageError('doctor: --server: expected a host name or address');
    } else if (a === '--backend' || a.startsWith('--backend=')) {
      const b = value('--backend');
      if (b !== 'epoll' && b !== 'io_uring') throw new DoctorUsageError(`doctor: --backend: expected epoll or io_uring, got ${JSON.stringify(b)}`);
      backend = b;
    } else if (a === '--json') {
      json = true;
    } else {
      throw new DoctorUsageError(`doctor: unknown argument ${JSON.stringify(a)}`);
    }
  }
  if (connections === undefined) throw new DoctorUsageError('doctor: --connections N is required');
  return { connections, role, server, json, backend };
}

// ---------------------------------------------------------------------------------------------------------
// Reading the system

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function numbers(value: string | undefined): number[] {
  return value === undefined ? [] : value.split(' ').map(Number);
}

/** Max open files (soft, hard) of a process, from /proc/<pid>/limits; Infinity for unlimited. */
function noFile(pid: number | 'self'): { soft: number; hard: number } | undefined {
  const m = /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(read(`/proc/${pid}/limits`) ?? '');
  if (!m) return undefined;
  const n = (s: string) => (s === 'unlimited' ? Infinity : Number(s));
  return { soft: n(m[1]), hard: n(m[2]) };
}

function hasCapability(bit: number): boolean {
  const m = /CapEff:\s+([0-9a-f]+)/.exec(read('/proc/self/status') ?? '');
  return m ? (BigInt('0x' + m[1]) & (1n << BigInt(bit))) !== 0n : false;
}

function meminfo(key: string): number | undefined {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(read('/proc/meminfo') ?? '');
  return m ? Number(m[1]) * 1024 : undefined;
}

/** "8800,9000-9010" -> the ports of it inside [lo, hi]. */
function reservedInRange(list: string | undefined, lo: number, hi: number): number {
  let n = 0;
  for (const part of (list ?? '').split(/[,\s]+/)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) continue;
    const a = Math.max(lo, Number(m[1]));
    const b = Math.min(hi, Number(m[2] ?? m[1]));
    if (b >= a) n += b - a + 1;
  }
  return n;
}

/** The profile's value of `key` for `role` as tune would apply it here (undefined if the profile lacks it). */
function profileValue(role: Role, key: string): string | undefined {
  try {
    const s = loadProfile(profileFile(role)).settings.find((x: Setting) => x.key === key);
    return s ? effectiveValue(s).value : undefined;
  } catch {
    return undefined;
  }
}

const fmt = (n: number) => (Number.isFinite(n) ? n.toLocaleString('en-US') : 'unlimited');
const mib = (bytes: number) => `${fmt(Math.ceil(bytes / 2 ** 20))} MiB`;

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  if (net.isIPv6(host)) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

/** Source addresses a client can bind toward `server`: the loopback /8 counts only toward a loopback server. */
function sourceAddresses(server: string): { count: number; described: string; first?: { address: string; prefix: number; iface: string } } {
  const v6 = net.isIPv6(server);
  const family = v6 ? 'IPv6' : 'IPv4';
  const toLoopback = isLoopback(server);
  let count = 0;
  const parts: string[] = [];
  let first: { address: string; prefix: number; iface: string } | undefined;
  for (const [iface, addrs] of Object.entries(os.networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.family !== family || (v6 && a.address.startsWith('fe80:'))) continue;
      const prefix = Number(a.cidr?.split('/')[1] ?? 32);
      if (a.internal) {
        if (!toLoopback) continue;
        // Every address of the loopback prefix is local and bindable (127.0.0.2, 127.0.0.3 ...).
        const n = family === 'IPv4' ? 2 ** (32 - prefix) - 2 : 1;
        count += n;
        parts.push(`${a.cidr} on ${iface} (${fmt(n)} addresses)`);
      } else {
        count += 1;
        parts.push(`${a.address} on ${iface}`);
        first ??= { address: a.address, prefix, iface };
      }
    }
  }
  return { count, described: parts.join(', ') || 'none', first };
}

// ---------------------------------------------------------------------------------------------------------
// The checks

export function diagnose(args: DoctorArgs): Report {
  const { connections: n, role, server } = args;
  const items: Item[] = [];
  const bothEndsHere = role === 'client' && isLoopback(server);

  // Per-process descriptors. Node.js raises its soft limit to the hard limit at startup, so the hard limit binds.
  const own = noFile('self');
  const shell = noFile(process.ppid);
  const hard = own?.hard ?? NaN;
  const soft = shell?.soft ?? own?.soft ?? NaN;
  const perProcess = hard - FD_RESERVE;
  const canRaise = hasCapability(CAP_SYS_RESOURCE);
  const probed = ioUringSupport();
  // What the checks assume of the server: epoll when asked for, or when io_uring cannot run.
  const uring = args.backend === 'epoll' ? { ...probed, unavailable: probed.unavailable || 'not asked for (--backend epoll)' } : probed;
  const nrOpen = Number(readSysctl('fs.nr_open'));
  const softNote = `soft ${fmt(soft)} in the calling shell (Node.js raises its soft limit to the hard limit at start, so the hard limit is what binds)`;
  if (role === 'server' && !uring.unavailable && n + FD_RESERVE > hard) {
    items.push({
      name: 'RLIMIT_NOFILE',
      status: 'warn',
      detail:
        `hard ${fmt(hard)}, ${softNote}. With the epoll backend one server process holds at most ${fmt(hard)} − ${FD_RESERVE} reserved = ${fmt(perProcess)} connections; ` +
        `${fmt(n)} fit one process only with IoBackend = io_uring, which this kernel allows (see io_uring below).`,
      fix: `IoBackend = io_uring and MaxConnections = ${n} in the config (or raise the limit: ulimit -Hn ${n + FD_RESERVE} in the root shell that starts \`starling serve\`)`,
    });
  } else if (role === 'server') {
    const need = n + FD_RESERVE;
    const fits = need <= hard;
    const processes = Math.ceil(n / Math.max(1, perProcess));
    const raise = `ulimit -Hn ${need} && ulimit -Sn ${need} in the root shell that starts \`starling serve\`, or LimitNOFILE=${need} in starling.service (systemctl edit starling)`;
    items.push({
      name: 'RLIMIT_NOFILE',
      status: fits ? 'ok' : 'FAIL',
      detail:
        `hard ${fmt(hard)}, ${softNote}. One server process holds at most ${fmt(hard)} − ${FD_RESERVE} reserved = ${fmt(perProcess)} connections; ` +
        `${fmt(n)} need ${fmt(need)}.`,
      fix: fits
        ? undefined
        : canRaise
          ? `${raise}${need > nrOpen ? ` (after raising fs.nr_open, below)` : ''}`
          : `this process lacks CAP_SYS_RESOURCE, so the hard limit ${fmt(hard)} cannot be raised here: run ${processes} server processes of ≤ ${fmt(perProcess)} connections on separate ports; on a host where you are root: ${raise}`,
    });
  } else {
    const per = Math.min(BENCHSUB_PER_PROCESS, perProcess);
    const processes = Math.ceil(n / Math.max(1, per));
    items.push({
      name: 'RLIMIT_NOFILE',
      status: perProcess >= 1 ? 'ok' : 'FAIL',
      detail: `hard ${fmt(hard)}, ${softNote}. benchsub forks a worker per ConnectionsPerProcess connections (each with its own descriptor table): ${fmt(n)} connections at ${fmt(per)} per process = ${processes} process${processes === 1 ? '' : 'es'}.`,
      fix: perProcess >= BENCHSUB_PER_PROCESS ? undefined : `-DConnectionsPerProcess=${perProcess} for benchsub (its default ${BENCHSUB_PER_PROCESS} would exceed the hard limit)`,
    });
  }

  // fs.nr_open: the ceiling of any RLIMIT_NOFILE.
  {
    // (With io_uring the server's connections are not descriptors: only an accept burst passes through its table.)
    const need = (role === 'server' ? (uring.unavailable ? n : Math.min(n, perProcess)) : Math.min(n, BENCHSUB_PER_PROCESS, perProcess)) + FD_RESERVE;
    const fits = nrOpen >= need;
    const suggested = Math.max(need, Number(profileValue(role, 'fs.nr_open') ?? 0));
    items.push({
      name: 'fs.nr_open',
      status: fits ? 'ok' : 'FAIL',
      detail: `${fmt(nrOpen)}: the most any process's RLIMIT_NOFILE may be raised to; ${role === 'server' ? 'the server process' : 'each client process'} needs ${fmt(need)}.`,
      fix: fits ? undefined : `sysctl -w fs.nr_open=${suggested}`,
    });
  }

  // fs.file-max: every open file on the machine.
  {
    const fileMax = Number(readSysctl('fs.file-max'));
    const inUse = numbers(readSysctl('fs.file-nr'))[0] ?? 0;
    const add = bothEndsHere ? 2 * n : n;
    const need = inUse + add;
    const fits = fileMax >= need;
    const suggested = Math.max(need + Math.ceil(need / 10), Number(profileValue(role, 'fs.file-max') ?? 0));
    items.push({
      name: 'fs.file-max',
      status: fits ? 'ok' : 'FAIL',
      detail: `${fmt(fileMax)} files system-wide, ${fmt(inUse)} open now; ${fmt(n)} connections add ${fmt(add)}${bothEndsHere ? ' (both ends are on this machine)' : ''}.`,
      fix: fits ? undefined : `sysctl -w fs.file-max=${suggested}`,
    });
  }

  // net.ipv4.tcp_mem: pages of TCP buffer memory, machine-wide.
  const page = pageSize();
  {
    const [, pressure, max] = numbers(readSysctl('net.ipv4.tcp_mem'));
    const sockets = bothEndsHere ? 2 * n : n;
    const need = sockets * TCP_PAGES_PER_CONNECTION;
    const fits = max >= need;
    const profiled = profileValue(role, 'net.ipv4.tcp_mem');
    const suggested = profiled && numbers(profiled)[2] >= need ? profiled : `${need} ${need} ${need}`;
    items.push({
      name: 'net.ipv4.tcp_mem',
      status: !fits ? 'FAIL' : pressure < need ? 'warn' : 'ok',
      detail:
        `pressure ${fmt(pressure)}, max ${fmt(max)} pages of ${page / 1024} KiB (${mib(max * page)}). An idle socket holds none; one with a message queued ~1 page, ` +
        `so ${fmt(sockets)} sockets with traffic need ~${fmt(need)} pages${fits && pressure < need ? '; above "pressure" the kernel shrinks socket buffers' : ''}.`,
      fix: fits && pressure >= need ? undefined : `sysctl -w net.ipv4.tcp_mem="${suggested}"`,
    });
  }

  // Socket buffers: small defaults keep kernel memory per connection small when traffic fills them.
  const avail = meminfo('MemAvailable') ?? os.freemem();
  {
    const rmem = numbers(readSysctl('net.ipv4.tcp_rmem'));
    const wmem = numbers(readSysctl('net.ipv4.tcp_wmem'));
    const rmax = readSysctl('net.core.rmem_max');
    const wmax = readSysctl('net.core.wmem_max');
    const sockets = bothEndsHere ? 2 * n : n;
    const full = sockets * (rmem[1] + wmem[1]);
    const fits = full <= avail;
    const r = profileValue(role, 'net.ipv4.tcp_rmem') ?? '1024 4096 16384';
    const w = profileValue(role, 'net.ipv4.tcp_wmem') ?? '1024 4096 16384';
    items.push({
      name: 'net.ipv4.tcp_rmem/tcp_wmem',
      status: fits ? 'ok' : 'warn',
      detail:
        `tcp_rmem ${rmem.join(' ')}, tcp_wmem ${wmem.join(' ')} (min default max bytes), rmem_max ${rmax}, wmem_max ${wmax}. ` +
        `If every socket filled its default buffers: ${mib(full)} of ${mib(avail)} available. Seed: 1024 4096 16384.`,
      fix: fits ? undefined : `sysctl -w net.ipv4.tcp_rmem="${r}" net.ipv4.tcp_wmem="${w}"`,
    });
  }

  // Ephemeral ports and source addresses: one (source address, port) per connection to one server address:port.
  {
    const [lo, hi] = numbers(readSysctl('net.ipv4.ip_local_port_range'));
    const reservedList = readSysctl('net.ipv4.ip_local_reserved_ports');
    const ports = hi - lo + 1 - reservedInRange(reservedList, lo, hi);
    const addrs = sourceAddresses(server);
    if (role === 'server') {
      const portInRange = DEFAULT_PORT >= lo && DEFAULT_PORT <= hi && reservedInRange(reservedList, DEFAULT_PORT, DEFAULT_PORT) === 0;
      items.push({
        name: 'net.ipv4.ip_local_port_range',
        status: 'info',
        detail: `${lo}-${hi} (${fmt(ports)} ports): no limit for a server, whose connections all arrive on its listening port; it binds the clients (--role client).${portInRange ? ` Port ${DEFAULT_PORT} is inside the range: a local client could take it first (net.ipv4.ip_local_reserved_ports = ${DEFAULT_PORT} prevents that).` : ''}`,
      });
      items.push({
        name: 'local addresses',
        status: 'info',
        detail: `${addrs.described}: clients bring their own source addresses; a server needs only its Listen addresses.`,
      });
    } else {
      const capacity = ports * addrs.count;
      const fits = n <= capacity;
      const fullPorts = 65535 - 1024 + 1 - reservedInRange(reservedList, 1024, 65535);
      const widened = fullPorts * addrs.count >= n;
      const needAddrs = Math.ceil(n / ports);
      items.push({
        name: 'net.ipv4.ip_local_port_range',
        status: fits ? 'ok' : 'FAIL',
        detail: `${lo}-${hi}: ${fmt(ports)} source ports per source address toward one server address:port; ${fmt(addrs.count)} usable source address${addrs.count === 1 ? '' : 'es'} → at most ${fmt(capacity)} connections to ${server}.`,
        fix: fits ? undefined : widened ? 'sysctl -w net.ipv4.ip_local_port_range="1024 65535"' : 'sysctl -w net.ipv4.ip_local_port_range="1024 65535", and more source addresses (below)',
      });
      let fix: string | undefined;
      if (isLoopback(server)) {
        fix = `benchsub: LocalAddresses = 127.0.0.{2..${needAddrs + 1}} (the whole 127.0.0.0/8 is local; each address gives ${fmt(ports)} ports)`;
      } else if (needAddrs > addrs.count) {
        const more = needAddrs - addrs.count;
        const f = addrs.first;
        fix = f
          ? `add ${more} address${more === 1 ? '' : 'es'} that are free on ${f.iface}'s network, e.g. ip addr add <address>/${f.prefix} dev ${f.iface} (once per address), then list them in benchsub's LocalAddresses`
          : `configure ${needAddrs} addresses on the interface toward ${server} (ip addr add <address>/<prefix> dev <iface>) and list them in LocalAddresses`;
      }
      items.push({
        name: 'local addresses',
        status: needAddrs <= addrs.count ? 'ok' : 'FAIL',
        detail: `${addrs.described}. ${fmt(n)} connections at ${fmt(ports)} ports per address need ${fmt(needAddrs)} source address${needAddrs === 1 ? '' : 'es'}${isLoopback(server) ? ' (toward a loopback server)' : ` toward ${server}`}; more server addresses or ports multiply the capacity.`,
        fix,
      });
    }
  }

  // Memory: kernel per socket plus Starling's own per connection.
  {
    const own = role === 'server' ? SERVER_BYTES_PER_CONNECTION : CLIENT_BYTES_PER_CONNECTION;
    let per = KERNEL_BYTES_PER_SOCKET + own;
    let what = `${(KERNEL_BYTES_PER_SOCKET / 1000).toFixed(1)} KB kernel per idle TCP socket + ${own} B ${role === 'server' ? 'Starling' : 'benchsub'} per connection`;
    if (bothEndsHere) {
      per += KERNEL_BYTES_PER_SOCKET + SERVER_BYTES_PER_CONNECTION;
      what += ` + the server's end on this machine (${(KERNEL_BYTES_PER_SOCKET / 1000).toFixed(1)} KB + ${SERVER_BYTES_PER_CONNECTION} B)`;
    }
    const need = n * per;
    const fits = need <= avail;
    const total = os.totalmem();
    items.push({
      name: 'memory',
      status: fits ? 'ok' : 'FAIL',
      detail: `${mib(avail)} available of ${mib(total)}; ${what} = ${fmt(per)} B per connection → ${mib(need)} for ${fmt(n)} idle connections (traffic adds socket buffers, see tcp_rmem/tcp_wmem).`,
      fix: fits ? undefined : `a machine with at least ${mib(need + (total - avail))} of memory, or fewer connections per machine (${fmt(Math.floor(avail / per))} fit here)`,
    });
  }

  // Connection tracking, when a firewall has loaded it: a full table drops new connections.
  {
    const max = readSysctl('net.netfilter.nf_conntrack_max');
    if (max !== undefined) {
      const count = Number(readSysctl('net.netfilter.nf_conntrack_count') ?? 0);
      const fits = count + n <= Number(max);
      const suggested = Math.max(count + n, Number(profileValue(role, 'net.netfilter.nf_conntrack_max') ?? 0));
      items.push({
        name: 'net.netfilter.nf_conntrack_max',
        status: fits ? 'ok' : 'warn',
        detail: `${fmt(Number(max))} entries, ${fmt(count)} in use. nf_conntrack is loaded: if a firewall rule tracks these connections, a full table drops new ones.`,
        fix: fits ? undefined : `sysctl -w net.netfilter.nf_conntrack_max=${suggested}`,
      });
    }
  }

  // Accept queue for reconnect storms (server).
  if (role === 'server') {
    const somaxconn = Number(readSysctl('net.core.somaxconn'));
    const short = somaxconn < Math.min(n, LISTEN_BACKLOG);
    items.push({
      name: 'net.core.somaxconn',
      status: short ? 'warn' : 'ok',
      detail: `${fmt(somaxconn)}: Starling listens with a backlog of ${fmt(LISTEN_BACKLOG)} and the kernel caps it here; when ${fmt(n)} clients reconnect at once, a short queue turns the storm into SYN retries.`,
      fix: short ? `sysctl -w net.core.somaxconn=${LISTEN_BACKLOG} net.ipv4.tcp_max_syn_backlog=${LISTEN_BACKLOG}` : undefined,
    });
  }

  // io_uring: whether the backend runs here (the addon's own probe), and what it changes for the server.
  {
    const disabled = readSysctl('kernel.io_uring_disabled');
    const sysctl =
      disabled === undefined
        ? 'no kernel.io_uring_disabled (kernel before 6.6)'
        : disabled === '0'
          ? 'kernel.io_uring_disabled = 0 (every process may use it)'
          : disabled === '1'
            ? `kernel.io_uring_disabled = 1 (only CAP_SYS_ADMIN and the group kernel.io_uring_group = ${readSysctl('kernel.io_uring_group')})`
            : 'kernel.io_uring_disabled = 2 (nobody may use it)';
    const why = probed.unavailable;
    const rings = Math.max(1, Math.ceil(n / Math.max(1, hard)));
    items.push({
      name: 'io_uring',
      status: why && args.backend === 'io_uring' ? 'FAIL' : 'info',
      detail: why
        ? `the io_uring backend cannot run here: ${why}; ${sysctl}, kernel ${os.release()}. The epoll backend holds at most the hard limit − ${FD_RESERVE} = ${fmt(perProcess)} connections per process.`
        : `the io_uring backend runs here (kernel ${os.release()}, ${sysctl}${probed.classicBuffers ? '; classic provided buffers: this kernel\'s buffer rings refuse receives' : ''}). ` +
          `With IoBackend = io_uring connections are direct descriptors outside the fd table: one process holds MaxConnections of them, ` +
          `a workgroup adding a ring of ${fmt(hard)} as they arrive (${fmt(n)} connections: ${rings} ring${rings === 1 ? '' : 's'}); the epoll backend holds at most the hard limit − ${FD_RESERVE} = ${fmt(perProcess)} per process.`,
    });
  }

  return { connections: n, role, server, fits: items.every((i) => i.status !== 'FAIL'), items };
}

/** What the addon's probe says of io_uring in this process (tried once). Without a built addon: unknown. */
function ioUringSupport(): { unavailable: string; classicBuffers: boolean } {
  try {
    return (require('./native') as typeof import('./native')).addon.ioUring();
  } catch (e) {
    return { unavailable: `the native addon is not built (${(e as Error).message.split('\n')[0]})`, classicBuffers: false };
  }
}

/** Breaks `text` at spaces into lines of at most `columns`, continuation lines starting with `indent`. */
function wrap(text: string, indent: string, columns: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/(?<=\S) (?=\S)/)) {
    if (line !== '' && line.length + 1 + word.length > columns && line.trim() !== '') {
      out.push(line);
      line = indent + word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  out.push(line);
  return out;
}

/** Report width: the terminal's, else 120 columns. */
const columns = Math.max(80, process.stdout.columns || 120);

export function formatReport(r: Report): string {
  const width = Math.max(...r.items.map((i) => i.name.length));
  const head =
    `starling doctor: ${fmt(r.connections)} connections, role ${r.role}${r.role === 'client' ? ` toward ${r.server}` : ''} — ` +
    `${os.hostname()}, Linux ${os.release()}, ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`;
  const lines = [head, ''];
  const indent = ' '.repeat(2 + 4 + 2 + width + 2);
  for (const i of r.items) {
    lines.push(...wrap(`  ${i.status.padEnd(4)}  ${i.name.padEnd(width)}  ${i.detail}`, indent, columns));
    if (i.fix) lines.push(...wrap(`${indent}fix: ${i.fix}`, indent + '     ', columns));
  }
  const fails = r.items.filter((i) => i.status === 'FAIL');
  const warns = r.items.filter((i) => i.status === 'warn');
  lines.push('');
  lines.push(
    r.fits
      ? `${fmt(r.connections)} connections fit${warns.length ? ` (${warns.length} warning${warns.length === 1 ? '' : 's'}: ${warns.map((i) => i.name).join(', ')})` : ''}.`
      : `${fmt(r.connections)} connections do NOT fit: ${fails.map((i) => i.name).join(', ')}.`,
  );
  lines.push(`The whole profile: starling tune --print --role ${r.role} (tuning/sysctl-${r.role}.conf); what each knob does: docs/tuning.md.`);
  return lines.join('\n') + '\n';
}

/** `starling doctor`: prints the report and returns the exit code (0 = fits, 1 = does not fit). */
export function doctor(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): number {
  const args = parseDoctorArgs(argv);
  const report = diagnose(args);
  out(args.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
  return report.fits ? 0 : 1;
}
