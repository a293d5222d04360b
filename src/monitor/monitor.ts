// The monitor: turns the server's once-a-second counter sample into a snapshot of every indicator, and serves
// it — /stats (JSON), /metrics (Prometheus), / (the live dashboard) on its own port, a stats log line and a
// PUSH stats message on /__starling__/stats every Stats.LogInterval seconds. It adds no native read of its
// own: endpoints serve the latest snapshot; PUSH is one control-plane publish per interval.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Config } from '../config/config';
import { clusterNodeName } from '../config/schema';
import type { Logger } from '../log';
import type { ClusterStatus } from '../native';
import type { ServerStats } from '../stats';
import { HistoryRing } from './history';
import { MonitorHttp, type Route } from './http';
import { DEFAULT_INDICATORS, ProcessSampler, statsLineFields, type IndicatorSet, type IntervalStart, type Snapshot } from './indicators';
import { PrometheusExporter } from './prometheus';

/** The least time between two log lines about refused monitoring connections. */
const DROP_LOG_INTERVAL_MS = 60_000;

/** The subject PUSH stats are published on. */
export const STATS_SUBJECT = '/__starling__/stats';

/** What the monitor needs of its server. */
export interface Monitored {
  readonly config: Config;
  readonly log: Logger;
  /** The cluster link now (read once per sample). */
  readonly cluster: ClusterStatus;
  publish(subject: string, payload: string): boolean;
}

// <package root>/src/monitor/dashboard.html, from dist/src/monitor/monitor.js (like native.ts finds the addon).
const ROOT = path.join(__dirname, '..', '..', '..');
const DASHBOARD = path.join(ROOT, 'src', 'monitor', 'dashboard.html');
let dashboardHtml: string | null = null;
/** The client SDK's ES module build (npm run build:client), served at /client.js for browser pages. */
const CLIENT_MODULE = path.join(ROOT, 'dist', 'client', 'esm', 'index.js');

/**
 * The dashboard's Content-Security-Policy: everything it needs is inline, and it may only fetch from this
 * origin, so a page that tried to load a script or a font from elsewhere would fail in tests, not in the field.
 */
const DASHBOARD_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

export class Monitor {
  /**
   * Resolves once the monitoring endpoints listen on MonitorHTTP.Listen; rejects when the port cannot be
   * bound. The failure is also logged, and the server goes on serving clients without its endpoints.
   */
  readonly ready: Promise<void>;
  private readonly http: MonitorHttp;
  private readonly process = new ProcessSampler();
  private latest: Snapshot;
  private latestJson: string | null = null;
  /** The dashboard's history: the last ten minutes of samples and six hours of per-minute means (history.ts). */
  readonly history: HistoryRing;
  private historyJson: { seq: number; json: string } | null = null;
  private seq = 0;
  /** Where the current stats-log interval started, and the event-loop delays seen during it. */
  private interval: IntervalStart;
  private pushTooLarge = false;
  private closed = false;
  private lastDropLog = -Infinity;
  /** ClusterNodeName in effect, for the snapshots' `cluster` ('' with ClusterEngine = none). */
  private readonly node: string;

  constructor(
    private readonly server: Monitored,
    first: ServerStats,
    private readonly indicators: IndicatorSet = DEFAULT_INDICATORS,
  ) {
    const c = server.config;
    this.node = c.ClusterEngine === 'redis' ? clusterNodeName(c) : '';
    const now = Date.now();
    this.latest = {
      seq: 0,
      time: new Date(now).toISOString(),
      intervalSeconds: 0,
      ...indicators.indicators(first),
      process: this.process.sample(),
      cluster: { node: this.node, ...server.cluster },
    };
    this.interval = this.intervalStart(now);
    this.history = new HistoryRing(c.Workgroups);

    const routes: Record<string, Route> = {};
    if (c.Monitor.includes('HTTP')) {
      // Read once, at start: a broken install shows in the log at once, and / answers 500 rather than the
      // server refusing to start over a monitoring asset.
      let html: Buffer | Error;
      try {
        html = dashboardPage(dashboardHtml ??= fs.readFileSync(DASHBOARD, 'utf8'), indicators);
      } catch (e) {
        html = new Error(`the dashboard page cannot be read: ${(e as Error).message}`);
        server.log.error(`monitor: ${html.message}`);
      }
      routes['/'] = () => {
        if (html instanceof Error) throw html;
        return { type: 'text/html; charset=utf-8', body: html, headers: { 'Content-Security-Policy': DASHBOARD_CSP } };
      };
      routes['/stats'] = () => ({ type: 'application/json; charset=utf-8', body: this.json() });
      routes['/history'] = () => ({ type: 'application/json; charset=utf-8', body: this.historyReply() });
      // The client SDK for pages of any origin: a module script is fetched in CORS mode, so it needs the header.
      let client: Buffer | Error;
      try {
        client = fs.readFileSync(CLIENT_MODULE);
      } catch (e) {
        client = new Error(`the client SDK module cannot be read (npm run build:client): ${(e as Error).message}`);
        server.log.error(`monitor: ${client.message}`);
      }
      routes['/client.js'] = () => {
        if (client instanceof Error) throw client;
        return { type: 'text/javascript; charset=utf-8', body: client, headers: { 'Access-Control-Allow-Origin': '*' } };
      };
    }
    if (c.Monitor.includes('PROMETHEUS')) {
      const prometheus = new PrometheusExporter(require(path.join(ROOT, 'package.json')).version, indicators);
      routes['/metrics'] = async () => ({ type: prometheus.contentType, body: await prometheus.render(this.latest) });
    }

    const { host, port } = c['MonitorHTTP.Listen'][0];
    const auth = c['MonitorHTTP.Authentication'];
    this.http = new MonitorHttp({
      host,
      port,
      credentials: auth ? { username: c.MonitorUsername, password: c.MonitorPassword } : null,
      routes,
      onError: (e) => this.log('error', `monitor: ${e.stack ?? e.message}`),
      maxConnections: c['MonitorHTTP.MaxConnections'],
      onDrop: () => {
        // At most one line a minute, however many connections are refused.
        const now = Date.now();
        if (now - this.lastDropLog < DROP_LOG_INTERVAL_MS) return;
        this.lastDropLog = now;
        this.log(
          'warn',
          `monitor: ${c['MonitorHTTP.MaxConnections']} connections open on the monitoring port (MonitorHTTP.MaxConnections); closing new ones`,
        );
      },
    });
    this.ready = this.http.listening.then(
      () => {
        const where = Object.keys(routes).map((r) => (r === '/' ? 'dashboard /' : r)).join(', ');
        this.log('info', `monitor: ${this.url} (${where}${auth ? ', Basic authentication' : ''}); set Monitor empty to turn monitoring off`);
        if (!auth && !isLoopback(host))
          this.log(
            'warn',
            `monitor: MonitorHTTP.Listen ${host.includes(':') ? `[${host}]` : host}:${this.http.address?.port ?? port} ` +
              'is reachable from other machines and MonitorHTTP.Authentication is false',
          );
      },
      (e: Error) => {
        this.log('error', `${e.message}; serving without monitoring endpoints`);
        throw e;
      },
    );
    // Logged above; a caller that does not await `ready` must not get an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** The latest snapshot of every indicator (what /stats serves). */
  get snapshot(): Snapshot {
    return this.latest;
  }

  /** http://host:port/ of the endpoints once listening (a wildcard host becomes loopback); null before. */
  get url(): string | null {
    const a = this.http.address;
    if (!a) return null;
    const host = a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '[::1]' : a.host.includes(':') ? `[${a.host}]` : a.host;
    return `http://${host}:${a.port}/`;
  }

  /**
   * Called by the server with each once-a-second sample, taken at `now` (epoch ms), its rates measured over
   * `intervalSeconds`. Never throws: monitoring must not stop the sampler.
   */
  sampled(stats: ServerStats, now: number, intervalSeconds: number): void {
    if (this.closed) return;
    try {
      this.latest = {
        seq: ++this.seq,
        time: new Date(now).toISOString(),
        intervalSeconds,
        ...this.indicators.indicators(stats),
        process: this.process.sample(),
        cluster: { node: this.node, ...this.server.cluster },
      };
      this.latestJson = null;
      this.history.add(this.latest, now);
      const i = this.interval;
      i.samples++;
      i.loopMeans += this.latest.process.event_loop_delay_seconds;
      i.loopMax = Math.max(i.loopMax, this.latest.process.event_loop_delay_max_seconds);
      if (i.samples >= this.server.config['Stats.LogInterval']) {
        this.log('info', this.statsLine(now));
        this.push();
        this.interval = this.intervalStart(now);
      }
    } catch (e) {
      this.log('error', `monitor: ${(e as Error).stack ?? e}`);
    }
  }

  /** Connections open now on the monitoring port (at most MonitorHTTP.MaxConnections). */
  connections(): Promise<number> {
    return this.http.connections();
  }

  /**
   * Stops the endpoints and the event-loop delay timer; resolves once the port is closed and every open
   * monitoring connection dropped. The monitor logs nothing from the call on. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.process.stop();
    }
    return this.http.close();
  }

  /** Every log line of the monitor goes through here: none once close() was called. */
  private log(level: 'error' | 'warn' | 'info', line: string): void {
    if (!this.closed) this.server.log[level](line);
  }

  /** /history as JSON, serialised at most once per sample. */
  private historyReply(): string {
    if (this.historyJson?.seq !== this.seq) this.historyJson = { seq: this.seq, json: JSON.stringify(this.history.reply()) };
    return this.historyJson.json;
  }

  /** The latest snapshot as JSON, serialised at most once per sample. */
  private json(): string {
    return (this.latestJson ??= JSON.stringify(this.latest));
  }

  private intervalStart(at: number): IntervalStart {
    return { at, samples: 0, server: this.latest.server, cpuSeconds: this.latest.process.cpu_seconds, loopMeans: 0, loopMax: 0 };
  }

  /** One line of the indicators as key=value (statsLineFields: which, and averaged how). */
  private statsLine(now: number): string {
    return `stats ${statsLineFields(this.indicators, this.interval, now, this.latest).map(([k, v]) => `${k}=${v}`).join(' ')}`;
  }

  /** PUSH stats: the snapshot to subscribers of STATS_SUBJECT; one native crossing, nothing when nobody subscribes. */
  private push(): void {
    try {
      this.server.publish(STATS_SUBJECT, this.json());
    } catch (e) {
      if (e instanceof RangeError) {
        if (!this.pushTooLarge) this.log('warn', `monitor: PUSH stats not published on ${STATS_SUBJECT}: ${e.message}`);
        this.pushTooLarge = true;
      } else {
        this.log('warn', `monitor: PUSH stats not published on ${STATS_SUBJECT}: ${(e as Error).message}`);
      }
    }
  }
}

/**
 * The dashboard with the indicator table in it (name, scope, kind, help of each), so that the page labels and
 * lists what this server reports without a list of its own. `<` is escaped: the JSON sits in a script element.
 */
function dashboardPage(html: string, indicators: IndicatorSet): Buffer {
  const table = JSON.stringify(indicators.defs.map(({ name, scope, kind, help, source, of }) => ({ name, scope, kind, help, source, of })));
  const marker = '<script type="application/json" id="indicators"></script>';
  if (!html.includes(marker)) throw new Error('the dashboard page has no indicator table placeholder');
  return Buffer.from(html.replace(marker, () => `<script type="application/json" id="indicators">${table.replace(/</g, '\\u003c')}</script>`));
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (net.isIPv4(host) && host.startsWith('127.'));
}
