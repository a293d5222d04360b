// The configuration schema: every key Starling understands, in one table. The config-file parser, the
// environment variable names, `starling config --print` and docs/configuration.md are all derived from it.
// To add a key: add an entry here and its field to `Config` in config.ts (the compiler checks they agree).
import * as fs from 'node:fs';
import * as os from 'node:os';
import { HMAC_MIN_SECRET_BYTES } from '../entitlement/jwt';
import { G, K, M, type KeyDef, type TypeName, type TypeValues } from './types';

/** The most workgroups a server runs; also the cap of the CPU-count default. */
const MAX_WORKGROUPS = 64;
/** The largest Memory budget: 16 TiB. */
const MAX_MEMORY = 16 * 1024 * G;
/** What the runtime itself (Node, V8, the threads' arenas) needs besides the budget: an idle server's data segment is
 * ~90 MB; the rest is headroom for V8 and malloc's fragmentation under a flood. */
export const RUNTIME_RESERVE_BYTES = 160 * M;
const RUNTIME_RESERVE = RUNTIME_RESERVE_BYTES;

/**
 * The memory this process may really use: the machine's RAM, the data-segment limit (RLIMIT_DATA, as a container or
 * `prlimit --data` sets it) and the cgroup's `memory.max`, whichever is smallest. Exported for the warning at start.
 */
export function memoryCeiling(): { bytes: number; source: string } {
  let best = { bytes: os.totalmem(), source: 'the machine\'s memory' };
  const consider = (bytes: number, source: string) => {
    if (Number.isFinite(bytes) && bytes > 0 && bytes < best.bytes) best = { bytes, source };
  };
  try {
    const m = /^Max data size\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    if (m) consider(Number(m[1]), 'the data-segment limit (RLIMIT_DATA)');
  } catch {
    /* not Linux: the machine's memory */
  }
  try {
    consider(Number(fs.readFileSync('/sys/fs/cgroup/memory.max', 'utf8').trim()), 'the cgroup\'s memory.max');
  } catch {
    /* no cgroup v2 limit */
  }
  return best;
}

/** The default CacheSize is this fraction of Memory: room for seconds to minutes of history at high rates while
 * most of the budget stays for the clients' queues. */
export const CACHE_SHARE_OF_MEMORY = 8;

/** Entitlement.AllowToken: shorter tokens can be guessed by trying (16 random hex digits are 64 bits); longer ones
 * than the JWT verifier's token bound (DEFAULT_MAX_TOKEN_BYTES) would not fit the lines and URLs tokens travel in. */
const MIN_ALLOW_TOKEN = 16;
const MAX_ALLOW_TOKEN = 8192;

/** ClusterNodeName: at most Linux's HOST_NAME_MAX, so that a host name alone fits; short enough for a monitor
 * column, a log line and Redis's CLIENT LIST. */
export const MAX_NODE_NAME = 64;

/**
 * The node name in effect: ClusterNodeName, or when it is empty `<host name>:<port>` of the first Listen address
 * (`<host name>:pid<pid>` when that port is 0, so that servers on one machine differ). Characters a name may not
 * have (outside printable ASCII, spaces) become '-'; the host name is cut so that the whole is MAX_NODE_NAME
 * characters at most.
 */
export function clusterNodeName(
  c: { ClusterNodeName: string; Listen: readonly { port: number }[] },
  host = os.hostname(),
  pid = process.pid,
): string {
  if (c.ClusterNodeName !== '') return c.ClusterNodeName;
  const port = c.Listen[0]?.port ?? 0;
  const suffix = port !== 0 ? `:${port}` : `:pid${pid}`;
  const name = host.replace(/[^\x21-\x7e]/g, '-') || 'starling';
  return name.slice(0, MAX_NODE_NAME - suffix.length) + suffix;
}

/** Default Memory: half of what the ceiling leaves after the runtime's own share, in whole M, at least 64M. */
function defaultMemory(): string {
  const { bytes } = memoryCeiling();
  return String(Math.max(64 * M, Math.floor(Math.max(0, bytes - RUNTIME_RESERVE) / 2 / M) * M));
}

export const SCHEMA = [
  {
    name: 'Listen',
    type: 'listen',
    default: '*:8800',
    example: '*:8800, [::1]:8800',
    doc:
      'Addresses the WebSocket server listens on, as `host:port` separated by commas or spaces. ' +
      'Add entries to listen on IPv6 or on several ports; port 0 picks a free port (useful in tests).',
  },
  {
    name: 'Path',
    type: 'path',
    default: '/',
    example: '/starling',
    doc:
      'The HTTP request path WebSocket clients connect to (the path in `ws://host:8800/`). Not `/sse`, `/publish` or ' +
      '`/history`: those are the HTTP transport\'s (docs/http.md).',
  },
  {
    name: 'Workgroups',
    type: 'int',
    default: () => String(Math.min(MAX_WORKGROUPS, os.availableParallelism())),
    defaultDoc: 'the number of CPUs (`os.availableParallelism()`), at most 64',
    min: 1,
    max: MAX_WORKGROUPS,
    example: '4',
    doc:
      'Number of workgroups: native threads, each with its own epoll loop and its own share of the connections. ' +
      'The CPU-count default suits a dedicated server; use fewer to leave cores to other processes.',
  },
  {
    name: 'WorkgroupCpus',
    type: 'cpulist',
    default: '',
    defaultDoc: 'empty (no pinning)',
    example: '0,2-3',
    doc:
      'CPUs to pin workgroups to: workgroup i runs on the i-th listed CPU, cycling through the list when there are ' +
      'more workgroups than CPUs. Pin on a dedicated server, away from the CPUs that handle network interrupts.',
  },
  {
    name: 'BenchmarkMode',
    type: 'bool',
    default: 'false',
    example: 'true',
    doc:
      'Assign clients to workgroups round-robin instead of by a hash of the client IP address. ' +
      'Turn it on for benchmarks whose clients come from a few IP addresses and would otherwise crowd few workgroups.',
  },
  {
    name: 'BufferLimit.Send',
    type: 'size',
    default: '0',
    min: 0,
    max: 64 * M,
    example: '256K',
    doc:
      'Kernel send buffer (SO_SNDBUF) of each client socket, in bytes; 0 keeps the kernel default ' +
      '(`net.ipv4.tcp_wmem`). Lower it to save kernel memory with millions of connections, raise it for subscribers ' +
      'that take high message rates.',
  },
  {
    name: 'BufferLimit.Receive',
    type: 'size',
    default: '0',
    min: 0,
    max: 64 * M,
    example: '16K',
    doc:
      'Kernel receive buffer (SO_RCVBUF) of each client socket, in bytes; 0 keeps the kernel default ' +
      '(`net.ipv4.tcp_rmem`). Most clients only send small commands, so a small value saves kernel memory.',
  },
  {
    name: 'MaxMessageSize',
    type: 'size',
    default: '64K',
    min: 1,
    max: 64 * M,
    example: '1M',
    doc:
      'Largest PUB payload in bytes; a larger payload is answered with `ERR too-large`. A WebSocket message larger ' +
      'than this plus the longest PUB header line (and larger than the longest AUTH command, 8261 bytes, which always ' +
      'gets its answer) closes the connection with status 1009 (message too big).',
  },
  {
    name: 'MaxSubscriptionsPerConnection',
    type: 'int',
    default: '1000',
    min: 1,
    max: 1_000_000,
    example: '10000',
    doc: 'Most subjects one connection may be subscribed to at once; a SUB beyond it is answered with `ERR limit`.',
  },
  {
    name: 'MaxBacklog',
    type: 'size',
    default: '1M',
    min: 4 * K,
    max: 1 * G,
    example: '1M',
    doc:
      'Bytes of output the client\'s socket refused to take (its kernel send buffer was full), per connection. ' +
      'Output that queued only while the server itself was busy does not count. While a connection is over it, ' +
      'the server stops reading that client\'s commands; if it stays over it for `MaxBacklogTime` without its socket ' +
      'taking MaxBacklog bytes meanwhile, the client is a slow consumer and is reset (TCP RST: its full socket would ' +
      'not take a close frame, and the kernel frees what it held); growing past 4 × MaxBacklog (after half a ' +
      'second\'s grace for a burst) it is reset at once. Raise it for subscribers that take bursts on slow links. ' +
      'See docs/limits.md.',
  },
  {
    name: 'MaxBacklogTime',
    type: 'int',
    default: '2000',
    min: 0,
    max: 600_000,
    example: '5000',
    doc:
      'Milliseconds a connection may stay over `MaxBacklog` (its socket refusing more than that many bytes) before ' +
      'it is a slow consumer and is reset. A socket that takes `MaxBacklog` bytes meanwhile restarts the clock (it is ' +
      'reading, only slower than a burst came). 0 cuts it as soon as it passes `MaxBacklog`.',
  },
  {
    name: 'Memory',
    type: 'size',
    default: defaultMemory,
    defaultDoc:
      'half of what the process may use after 160M for the runtime: the smallest of the machine\'s memory, the ' +
      'data-segment limit (RLIMIT_DATA) and the cgroup\'s memory.max; in whole M, at least 64M',
    min: 64 * M,
    max: MAX_MEMORY,
    example: '8G',
    doc:
      'Server-wide budget for everything clients make the server hold: output queues (control replies included), ' +
      'partial input and per-connection state. Past it, new connections are refused and the connections with the ' +
      'largest backlogs are reset until it is an eighth under it. Kernel socket buffers are not part of it ' +
      '(see `BufferLimit.Send`, `BufferLimit.Receive` and docs/tuning.md).',
  },
  {
    name: 'CacheSize',
    type: 'size',
    default: () => String(Math.floor(Number(defaultMemory()) / CACHE_SHARE_OF_MEMORY / M) * M),
    defaultDoc: 'an eighth of `Memory` (of the `Memory` in effect, when that is set)',
    min: 0,
    max: MAX_MEMORY,
    example: '1G',
    doc:
      'Bytes of history all subjects together may keep for recovery (`SUB <subject>@<epoch>:<seq>`), history ' +
      '(`SUB <subject>#<n>`) and retained snapshots (`PUB … +retained`): the messages themselves, shared with their ' +
      'live delivery, and their server-sent-event renditions once an event stream received them. Each workgroup keeps an equal share for the subjects it is home of; over it, the oldest messages go ' +
      'first, whichever subjects they belong to, then (when no message is left) the least recently published ' +
      "subjects' snapshots. Part of `Memory`, and at most half " +
      'of it. `0` turns history, recovery and snapshots off (protocol v1 behaviour: a publish to a subject nobody ' +
      'subscribes to goes nowhere, and recovery is answered `RESYNC` unless nothing was missed).',
  },
  {
    name: 'MaxCachedMessagesPerSubject',
    type: 'int',
    default: '1000',
    min: 0,
    max: 1_000_000,
    example: '100',
    doc:
      'Most messages kept per subject for recovery and history; older ones are dropped (a client asking to recover ' +
      'from before them gets `RESYNC`). 0 keeps only retained snapshots.',
  },
  {
    name: 'CacheExpireTime',
    type: 'int',
    default: '180',
    min: 0,
    max: 30 * 24 * 3600,
    example: '600',
    doc:
      'Seconds a message stays in the history cache; `0` keeps messages until `MaxCachedMessagesPerSubject` or ' +
      '`CacheSize` pushes them out. Retained snapshots do not expire.',
  },
  {
    name: 'MaxConnections',
    type: 'int',
    default: '0',
    defaultDoc:
      '`0`: the open-file limit (RLIMIT_NOFILE) less 256 descriptors reserved for the process; with `IoBackend = ' +
      'io_uring`, that many per workgroup',
    min: 0,
    max: 10_000_000,
    example: '1000000',
    doc:
      'Most client connections held at once (WebSocket sessions and connections still in the HTTP upgrade). Past ' +
      'it, new connections are refused at once (TCP reset). 0 derives it from the open-file limit, keeping 256 ' +
      'descriptors for the process itself (the monitor port, logs, the Node.js runtime).',
  },
  {
    name: 'IoBackend',
    type: 'enum',
    choices: ['auto', 'epoll', 'io_uring'],
    default: 'epoll',
    example: 'io_uring',
    doc:
      'The kernel interface the workgroups do their network I/O through. `epoll`: readiness events and a system ' +
      'call per read and per write; every connection is a descriptor, so the open-file limit bounds the connections ' +
      '(`MaxConnections`). `io_uring`: multishot receives into shared buffers and batched sends, one system call per ' +
      'loop iteration; connections are direct descriptors of the rings, outside the process\'s fd table, so one ' +
      'process holds more connections than its open-file limit (a workgroup adds a ring per open-file-limit ' +
      'connections; set `MaxConnections`). Needs Linux 6.7 or later with io_uring allowed (`kernel.io_uring_disabled`, ' +
      'seccomp); the server refuses to start when it cannot, with the reason. `auto`: io_uring where the kernel ' +
      'allows it, else epoll with the reason logged. A paused connection holds at most 48 KiB of input under io_uring ' +
      '(each receive ends after 32 KiB on Linux 6.16 and later, and is single-shot before), so clients that flood ' +
      'without reading are held to the same bounds as with epoll (test/32.core-defects.test.ts). The default is epoll: ' +
      'io_uring takes 8–13% less CPU per message in W1, but its rings\' receive buffers (4 MiB each) cost ~170 B per ' +
      'idle connection at 15,000 connections (W3: 468 B against 302 B), and only io_uring holds more connections than ' +
      'the open-file limit. `starling doctor` says what this machine allows; docs/tuning.md has the figures.',
  },
  {
    name: 'KeepAlive',
    type: 'int',
    default: '30',
    min: 0,
    max: 3600,
    example: '60',
    doc:
      'Seconds of silence after which a connection gets a WebSocket ping (each connection between half of it and ' +
      'all of it, by an offset of its own, so that connections opened together are not all pinged in the same ' +
      'second); a connection that stays silent for another KeepAlive seconds is closed. This bounds how long a ' +
      'dead peer (unplugged, or behind a NAT that forgot it) holds its connection and its memory. 0 turns it off.',
  },
  {
    name: 'Entitlement',
    type: 'enum',
    choices: ['None', 'Basic', 'JWT', 'Custom'],
    default: 'None',
    example: 'JWT',
    doc:
      'Who may subscribe and publish what. `None`: anyone may subscribe and publish (the server warns at start when ' +
      'it listens beyond loopback). `Basic`: anyone may subscribe; publishing needs `AUTH <Entitlement.AllowToken>` ' +
      'on the connection. `JWT`: clients present a JSON Web Token (`AUTH <token>`, or `?token=` on the WebSocket URL) ' +
      'verified with `Entitlement.JWT.Secret` or `Entitlement.JWT.PublicKey`, whose `permissions` claim lists the ' +
      'subjects it may subscribe and publish to. `Custom`: the application\'s `authorize` hook given to ' +
      '`createServer()` decides (programmatic use only). In every mode, `PublishAllowFromAddressList` can restrict ' +
      'publishing further. Leave `None` only on a trusted network.',
  },
  {
    name: 'Entitlement.AllowToken',
    type: 'token',
    min: MIN_ALLOW_TOKEN,
    max: MAX_ALLOW_TOKEN,
    secret: true,
    default: '',
    defaultDoc: 'empty',
    example: 'use-openssl-rand-hex-32-not-this',
    doc:
      'The token that lets a connection publish when `Entitlement = Basic` (required then, used by no other mode): ' +
      'clients send `AUTH <token>` or put `?token=` on the WebSocket URL, so it is printable ASCII without spaces; at ' +
      'least 16 characters, because a short token can be guessed by trying. Generate it, e.g. `openssl rand -hex 32` ' +
      '(hex needs no escaping in a URL). A secret: `starling config --print` and error messages show only its length.',
  },
  {
    name: 'Entitlement.JWT.Secret',
    type: 'base64',
    minBytes: HMAC_MIN_SECRET_BYTES.HS256,
    secret: true,
    default: '',
    defaultDoc: 'empty',
    example: 'Generate+your+own+with+openssl+rand+base64+64+not+this+example',
    doc:
      'For `Entitlement = JWT` with HMAC-signed tokens (HS256, HS384, HS512): the shared secret, in base64, at least ' +
      '32 bytes once decoded (HS384 needs 48 and HS512 64; a shorter secret would weaken the hash). Generate it, e.g. ' +
      '`openssl rand -base64 64`. Set this or `Entitlement.JWT.PublicKey`, not both. Whoever has it can issue tokens: ' +
      'give it in the environment, or keep the config file readable by the server\'s user only. A secret: ' +
      '`starling config --print` and error messages show only its length.',
  },
  {
    name: 'Entitlement.JWT.PublicKey',
    type: 'file',
    default: '',
    defaultDoc: 'empty',
    example: '/etc/starling/jwt-public.pem',
    doc:
      'For `Entitlement = JWT` with RSA or ECDSA signatures: a PEM file with the issuer\'s public key (`BEGIN PUBLIC ' +
      'KEY`, `BEGIN RSA PUBLIC KEY`) or certificate: RSA of at least 2048 bits (RS256/384/512, PS256/384/512), RSA-PSS ' +
      '(PS), or EC on P-256 (ES256), P-384 (ES384) or P-521 (ES512). It is read and checked when the configuration ' +
      'loads. A private key is refused: the server must not hold the key that signs tokens (`openssl pkey -in key.pem ' +
      '-pubout` gives its public key). Set this or `Entitlement.JWT.Secret`, not both.',
  },
  {
    name: 'Entitlement.JWT.Algorithms',
    type: 'enumlist',
    choices: ['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'],
    default: '',
    defaultDoc: 'empty (every algorithm the key allows)',
    example: 'ES256',
    doc:
      'The `alg` values tokens may be signed with. Empty accepts every algorithm the key allows: with a secret, the ' +
      'HS algorithms it is long enough for; with an RSA key, RS and PS; with an EC key, the ES algorithm of its curve. ' +
      'Each listed one must suit the key. Unsigned tokens (`none`) are never accepted. Narrow it to what your issuer ' +
      'uses.',
  },
  {
    name: 'Entitlement.JWT.Audience',
    type: 'string',
    default: '',
    defaultDoc: 'empty (not checked)',
    example: 'starling',
    doc:
      'When set, a token is accepted only if its `aud` claim is this value (or an array that contains it). Set it ' +
      'when the issuer also makes tokens for other services, so that theirs are refused here.',
  },
  {
    name: 'Entitlement.JWT.Issuer',
    type: 'string',
    default: '',
    defaultDoc: 'empty (not checked)',
    example: 'https://auth.example.com/',
    doc: 'When set, a token is accepted only if its `iss` claim is this value.',
  },
  {
    name: 'Entitlement.RenewBefore',
    type: 'int',
    default: '60',
    min: 1,
    max: 86_400,
    example: '300',
    doc:
      'Seconds before a connection\'s token expires at which the server sends it `AUTH expiring <seconds>`, so that ' +
      'the client sends a fresh token with `AUTH` in time (at expiry: `AUTH expired`, and the connection is closed). ' +
      'For `Entitlement = JWT` and `Custom` (the modes whose tokens expire). Raise it when clients need longer to ' +
      'get a new token.',
  },
  {
    name: 'PublishAllowFromAddressList',
    type: 'addresslist',
    default: '',
    defaultDoc: 'empty (every address may publish)',
    example: '127.0.0.1, 10.0.0.0/8, ::1, fd00::/8',
    doc:
      'The client addresses allowed to publish: IPv4 and IPv6 addresses and CIDR networks. A publish from any other ' +
      'address is refused, whatever `Entitlement` says (with `None` too). An IPv4 client is matched by the IPv4 ' +
      'entries also when it reaches an IPv6 socket as `::ffff:a.b.c.d`. Use it to let only your back-end hosts publish.',
  },
  {
    name: 'HTTP.AllowOrigins',
    type: 'originlist',
    default: '',
    defaultDoc: 'empty (only pages served from the server\'s own origin)',
    example: 'https://app.example.com, http://localhost:3000',
    doc:
      'The web origins whose pages may use the HTTP transport (`GET /sse`, `POST /publish`) from a browser: their ' +
      'requests get `Access-Control-Allow-Origin`, and their preflights (`OPTIONS`) are answered. A request whose ' +
      '`Origin` is neither listed nor the server\'s own is refused with 403, so a page on another site cannot ' +
      'publish through a visitor\'s browser. `*` allows every origin. Requests without `Origin` (curl, back ends) are ' +
      'not affected. WebSocket clients are not affected either (entitlement tokens protect them).',
  },
  {
    name: 'HTTP.SseRetry',
    type: 'int',
    default: '2000',
    min: 100,
    max: 600000,
    example: '5000',
    doc:
      'Milliseconds an `EventSource` waits before it reconnects after its stream ends (the `retry:` field every ' +
      'event stream starts with). Raise it to spread the reconnections of many clients after a restart.',
  },
  {
    name: 'ClusterEngine',
    type: 'enum',
    choices: ['none', 'redis'],
    default: 'none',
    example: 'redis',
    doc:
      'Runs this server as one node of an active/active cluster. `none`: a server of its own. `redis`: Redis ' +
      '(`ClusterRedis`) is every subject\'s home: each publish goes through it and reaches the subscribers of every ' +
      'node, and the history and recovery of every subject are replicated into each node\'s cache, so it needs ' +
      '`CacheSize` above 0. Clients may connect to any node. While no Redis server answers, publishes are refused ' +
      'with `ERR unavailable` (the monitor shows why). See docs/cluster.md.',
  },
  {
    name: 'ClusterRedis',
    type: 'redislist',
    default: 'redis://127.0.0.1:6379',
    example: 'redis://10.0.0.5:6379, redis://10.0.0.6:6379',
    doc:
      'For `ClusterEngine = redis`: the Redis servers, as `redis://[user[:password]@]host[:port][/db]` URLs, tried in ' +
      'the order listed: the node uses the first that answers as a primary. List the primary and its replicas, so ' +
      'that the replica promoted after a failover is found. Not supported: TLS (`rediss://`; use a private network ' +
      'or a TLS tunnel such as stunnel) and Sentinel (list the servers instead). Every node of a cluster must list ' +
      'the same servers and database. With a password, keep the config file readable by the server\'s user only, ' +
      'or give the URLs in the environment; errors and `starling config --print` never show it.',
  },
  {
    name: 'ClusterDeliveryMode',
    type: 'enum',
    choices: ['Standard', 'Guaranteed'],
    default: 'Standard',
    example: 'Guaranteed',
    doc:
      'For `ClusterEngine = redis`: when a PUB with an id is acknowledged (`ACK <id>`). `Standard`: once this node ' +
      'accepted it. `Guaranteed`: once Redis stored it, at the cost of a round trip to Redis before the ACK. See ' +
      'docs/cluster.md for what each one keeps through which failure.',
  },
  {
    name: 'ClusterNodeName',
    type: 'token',
    min: 1,
    max: MAX_NODE_NAME,
    default: '',
    defaultDoc:
      'empty: `<host name>:<port>`, the machine\'s host name and the port of the first `Listen` address (with port 0, ' +
      '`<host name>:pid<process id>`), cut to 64 characters',
    example: 'eu-west-1a',
    doc:
      'For `ClusterEngine = redis`: this node\'s name, as Redis lists its connection (`CLIENT LIST`) and as the ' +
      'monitor shows it: printable ASCII without spaces, at most 64 characters. Give every node a name of its own, ' +
      'so that an operator can tell them apart; the default differs between two servers on one machine too.',
  },
  {
    name: 'LogLevel',
    type: 'enum',
    choices: ['error', 'warn', 'info', 'debug'],
    default: 'info',
    example: 'debug',
    doc: 'Least severe level of log messages that are written; `debug` is verbose.',
  },
  {
    name: 'Monitor',
    type: 'enumlist',
    choices: ['HTTP', 'PROMETHEUS'],
    default: 'HTTP, PROMETHEUS',
    example: 'PROMETHEUS',
    doc:
      'Monitoring interfaces, served on `MonitorHTTP.Listen`: `HTTP` is the live dashboard at `/` and the indicators ' +
      'as JSON at `/stats`; `PROMETHEUS` is `/metrics` in the Prometheus text format. Empty turns monitoring off: no ' +
      'port, no stats log and no PUSH stats. Indicators are read from native counters once a second and cost nothing ' +
      'on the message path. See docs/monitoring.md.',
  },
  {
    name: 'MonitorHTTP.Listen',
    type: 'listen',
    single: true,
    default: '127.0.0.1:8900',
    example: '*:8900',
    doc:
      'The one address the monitoring endpoints listen on: a port of its own (the client port is refused). The loopback ' +
      'default keeps them private to the machine; to expose them, listen on another address and turn on ' +
      '`MonitorHTTP.Authentication`.',
  },
  {
    name: 'MonitorHTTP.Authentication',
    type: 'bool',
    default: 'false',
    example: 'true',
    doc:
      'Require HTTP Basic authentication with `MonitorUsername` and `MonitorPassword` on every monitoring endpoint; ' +
      'wrong or missing credentials get 401 and no data. When true, both must be set.',
  },
  {
    name: 'MonitorHTTP.MaxConnections',
    type: 'int',
    default: '64',
    min: 1,
    max: 10_000,
    example: '256',
    doc:
      'Most connections the monitoring port holds open at once; past it, new ones are closed as they arrive. ' +
      'It keeps the monitor from using up descriptors that client connections need. Requests must send their ' +
      'headers within 10 seconds, and idle keep-alive connections are closed after 5 seconds.',
  },
  {
    name: 'MonitorUsername',
    type: 'string',
    default: '',
    defaultDoc: 'empty',
    example: 'admin',
    doc: 'User name for `MonitorHTTP.Authentication`.',
  },
  {
    name: 'MonitorPassword',
    type: 'string',
    default: '',
    defaultDoc: 'empty',
    example: 's3cret-Pa55',
    secret: true,
    doc:
      'Password for `MonitorHTTP.Authentication`. Basic authentication sends it in the clear: outside a trusted ' +
      'network, put the monitor behind a TLS proxy. Keep the config file readable by the server\'s user only. A ' +
      'secret: `starling config --print` and error messages show only its length.',
  },
  {
    name: 'Stats.LogInterval',
    type: 'int',
    default: '60',
    min: 5,
    max: 86_400,
    example: '300',
    doc:
      'Seconds between two stats log lines (one `key=value` line of the main indicators, averaged over the interval) ' +
      'and between two PUSH stats messages on `/__starling__/stats`. Needs `Monitor` to be non-empty.',
  },
] as const satisfies readonly KeyDef[];

type Def = (typeof SCHEMA)[number];
type ValueOf<D> = D extends { type: 'enum'; choices: readonly (infer C)[] }
  ? C
  : D extends { type: 'enumlist'; choices: readonly (infer C)[] }
    ? C[]
    : D extends { type: infer T extends TypeName }
      ? TypeValues[T]
      : never;

/** The configuration object as the schema describes it; `Config` in config.ts must equal it. */
export type SchemaConfig = { [D in Def as D['name']]: ValueOf<D> };

/** `STARLING_<NAME>` (or another tool's prefix): upper case, '.' -> '_'. */
export function envName(name: string, prefix = 'STARLING_'): string {
  return prefix + name.toUpperCase().replace(/\./g, '_');
}
