// The monitoring HTTP listener: its own port (MonitorHTTP.Listen), HTTP Basic authentication checked before
// anything else, and three read-only routes. Handlers serve the latest once-a-second snapshot; no request
// reaches native code. It shares the process' descriptor table with the client connections, so it is bounded:
// at most MonitorHTTP.MaxConnections open connections (more are closed as they arrive), and every connection
// must send its request headers within 10 s, its whole request within 10 s, and not idle past 5 s between
// requests or 30 s in the middle of one; these are enforced within a second, not at Node's default
// 30-second sweep, so unauthenticated half-sent requests cannot pile up.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a route answers: the body, its content type and any other headers. */
export type Reply = { type: string; body: string | Buffer; headers?: Record<string, string> };
export type Route = () => Promise<Reply> | Reply;

export interface HttpOptions {
  host: string;
  port: number;
  /** Credentials every request must carry, or null for none. */
  credentials: { username: string; password: string } | null;
  routes: Record<string, Route>;
  /** Called with a handler's error (the client gets 500). */
  onError: (e: Error) => void;
  /** Most connections open at once (MonitorHTTP.MaxConnections); more are closed on arrival. */
  maxConnections: number;
  /** Called when a connection was closed on arrival because maxConnections were open. */
  onDrop?: () => void;
  /** Overrides of LIMITS (tests). */
  limits?: Partial<HttpLimits>;
}

/** How long a monitoring connection may take, in milliseconds. */
export interface HttpLimits {
  /** From the connection's start (or the previous response) to the end of the request headers. */
  headersTimeout: number;
  /** From the same point to the end of the whole request. */
  requestTimeout: number;
  /** Idle between two requests of a keep-alive connection. */
  keepAliveTimeout: number;
  /** No byte either way in the middle of a request or a response. */
  idleTimeout: number;
  /** How often the header and request deadlines are checked: the precision of the two above. */
  checkInterval: number;
}

/** A scrape is small and quick: no client needs more. */
export const LIMITS: Readonly<HttpLimits> = {
  headersTimeout: 10_000,
  requestTimeout: 10_000,
  keepAliveTimeout: 5_000,
  idleTimeout: 30_000,
  checkInterval: 1_000,
};

/** Realm shown by browsers in their login prompt. */
const REALM = 'Starling monitor';

export class MonitorHttp {
  /** Resolves once listening; rejects (with a message naming the address) if the port cannot be bound. */
  readonly listening: Promise<void>;
  private readonly server: http.Server;
  private readonly expected: { username: Buffer; password: Buffer } | null;
  private closing: Promise<void> | null = null;

  constructor(private readonly options: HttpOptions) {
    const c = options.credentials;
    this.expected = c ? { username: digest(c.username), password: digest(c.password) } : null;
    const limits = { ...LIMITS, ...options.limits };
    this.server = http.createServer(
      {
        headersTimeout: limits.headersTimeout,
        requestTimeout: limits.requestTimeout,
        keepAliveTimeout: limits.keepAliveTimeout,
        // Node checks the two deadlines above every 30 s by default: a request could then hold its socket for
        // up to 40 s instead of 10.
        connectionsCheckingInterval: limits.checkInterval,
      },
      (req, res) => this.handle(req, res),
    );
    this.server.maxConnections = options.maxConnections;
    // A socket with no traffic for this long is destroyed (a client that stopped reading a response).
    this.server.timeout = limits.idleTimeout;
    this.server.on('drop', () => options.onDrop?.());
    this.listening = new Promise((resolve, reject) => {
      this.server.once('error', (e: NodeJS.ErrnoException) => {
        const where = options.host.includes(':') ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`;
        reject(new Error(`monitor: cannot listen on ${where}: ${e.code ?? e.message}`));
      });
      this.server.listen({ host: options.host, port: options.port }, () => resolve());
    });
    // Like the server's sampler, the listener alone does not keep the process alive.
    this.server.unref();
  }

  /** The bound address (port 0 resolved); null before listening. */
  get address(): { host: string; port: number } | null {
    const a = this.server.address() as AddressInfo | null;
    return a ? { host: a.address, port: a.port } : null;
  }

  /** Connections open now on the monitoring port. */
  connections(): Promise<number> {
    return new Promise((resolve, reject) => this.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
  }

  /** Stops listening (once the listen in progress, if any, is done) and drops open connections. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.listening.then(
      () =>
        new Promise<void>((resolve) => {
          this.server.close(() => resolve());
          // Keep-alive scrapers and open dashboards would otherwise hold the close up to keepAliveTimeout.
          this.server.closeAllConnections();
        }),
      () => undefined, // never listened
    );
    return this.closing;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (this.expected && !this.authorized(req.headers.authorization)) {
      res.writeHead(401, { 'WWW-Authenticate': `Basic realm="${REALM}", charset="UTF-8"`, 'Content-Type': 'text/plain' });
      res.end('401 Unauthorized\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' });
      res.end('405 Method Not Allowed\n');
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    const route = Object.hasOwn(this.options.routes, path) ? this.options.routes[path] : undefined;
    if (!route) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('404 Not Found\n');
      return;
    }
    Promise.resolve()
      .then(route)
      .then(
        ({ type, body, headers }) => {
          res.writeHead(200, { ...headers, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
          res.end(req.method === 'HEAD' ? undefined : body);
        },
        (e: Error) => {
          this.options.onError(e);
          res.writeHead(500, { 'Content-Type': 'text/plain' });
          res.end('500 Internal Server Error\n');
        },
      );
  }

  /** Compares digests in constant time, so the answer time says nothing about how much of a guess was right. */
  private authorized(header: string | undefined): boolean {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
    if (!m || !this.expected) return false;
    const decoded = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const userOk = crypto.timingSafeEqual(digest(decoded.slice(0, colon)), this.expected.username);
    const passOk = crypto.timingSafeEqual(digest(decoded.slice(colon + 1)), this.expected.password);
    return userOk && passOk;
  }
}

const digest = (s: string): Buffer => crypto.createHash('sha256').update(s, 'utf8').digest();
