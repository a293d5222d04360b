// Test kit for the HTTP transport: an event-stream reader over a raw TCP socket (the WHATWG "event stream
// interpretation", written here independently of the server's), and raw HTTP requests (pipelined,
// chunked, hostile) with a response reader. Everything waits on events with a timeout (helpers.within).
import assert from 'node:assert/strict';
import type { Server } from '../src/index';
import { Raw, TIMEOUT_MS, type HttpResponse } from './helpers';

/** One dispatched server-sent event. */
export interface SseEvent {
  type: string;
  id: string;
  data: string;
}

/** A message decoded from an event: what a subscriber of the SSE transport learns. */
export interface SseMessage {
  subject: string;
  epoch: string;
  seq: number;
  kind: string;
  binary: boolean;
  payload: Buffer;
}

/** The WHATWG event-stream parser: fed text in pieces, yields events. */
export class SseParser {
  private pending = '';
  private data = '';
  private type = '';
  private lastId = '';
  private idSet = false;
  private sawCr = false;
  retry: number | null = null;
  readonly comments: string[] = [];

  feed(text: string): SseEvent[] {
    const events: SseEvent[] = [];
    let s = text;
    if (this.sawCr && s.startsWith('\n')) s = s.slice(1);
    this.sawCr = false;
    this.pending += s;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.pending);
      if (!m) break;
      if (m[0] === '\r' && m.index === this.pending.length - 1) this.sawCr = true;
      const line = this.pending.slice(0, m.index);
      this.pending = this.pending.slice(m.index + m[0].length);
      this.line(line, events);
    }
    return events;
  }

  private line(line: string, events: SseEvent[]): void {
    if (line === '') {
      if (this.idSet) this.idSet = false;
      if (this.data === '') {
        this.type = '';
        return;
      }
      events.push({ type: this.type || 'message', id: this.lastId, data: this.data.endsWith('\n') ? this.data.slice(0, -1) : this.data });
      this.data = '';
      this.type = '';
      return;
    }
    if (line.startsWith(':')) {
      this.comments.push(line.slice(1));
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data += value + '\n';
    else if (field === 'id' && !value.includes('\0')) {
      this.lastId = value;
      this.idSet = true;
    } else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
  }

  get lastEventId(): string {
    return this.lastId;
  }
}

/** Decodes a message event (kinds message, snapshot, history, recovered; text or -base64). */
export function sseMessage(e: SseEvent): SseMessage | null {
  const m = /^(message|snapshot|history|recovered)(-base64|-utf8-base64)?$/.exec(e.type);
  if (!m) return null;
  const at = e.id.lastIndexOf('@');
  const [epoch, seq] = e.id.slice(at + 1).split(':');
  return {
    subject: e.id.slice(0, at),
    epoch,
    seq: Number(seq),
    kind: m[1] === 'message' ? '' : m[1],
    binary: m[2] === '-base64',
    payload: m[2] ? Buffer.from(e.data, 'base64') : Buffer.from(e.data, 'utf8'),
  };
}

/** An event stream read over a raw socket. */
export class SseStream {
  readonly raw: Raw;
  readonly response: HttpResponse;
  readonly parser = new SseParser();
  private queue: SseEvent[] = [];
  private decoder = new TextDecoder('utf-8');

  private constructor(raw: Raw, response: HttpResponse) {
    this.raw = raw;
    this.response = response;
  }

  /** GET /sse<query> with `headers`; resolves once the 200 head is in (fails on another status). */
  static async open(server: Server, query: string, headers: Record<string, string> = {}): Promise<SseStream> {
    const raw = await Raw.connect(server);
    const lines = Object.entries({ Host: 'localhost', Accept: 'text/event-stream', ...headers }).map(([k, v]) => `${k}: ${v}`);
    raw.write(`GET /sse${query} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`);
    const res = await readHead(raw);
    assert.equal(res.status, 200, `expected 200 for GET /sse${query}, got ${res.statusLine} ${res.body}`);
    return new SseStream(raw, res);
  }

  /** The next event (of any type). */
  async next(what = 'a server-sent event'): Promise<SseEvent> {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      const e = this.queue.shift();
      if (e) return e;
      const bytes = await this.raw.take(what, deadline - Date.now());
      this.queue.push(...this.parser.feed(this.decoder.decode(bytes, { stream: true })));
    }
  }

  /** The next event that is a message (skipping nothing: anything else fails). */
  async nextMessage(): Promise<SseMessage> {
    const e = await this.next('a message event');
    const m = sseMessage(e);
    assert.ok(m, `expected a message event, got ${JSON.stringify(e)}`);
    return m;
  }

  close(): void {
    this.raw.destroy();
  }
}

/** Reads an HTTP response head only (an event stream's body never ends). */
export function readHead(raw: Raw): Promise<HttpResponse> {
  return raw.head();
}

/** A POST /publish request's bytes. */
export function publishRequest(subject: string, body: string | Buffer, o: { type?: string; retained?: boolean; headers?: Record<string, string> } = {}): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body) : body;
  const query = `subject=${encodeURIComponent(subject)}${o.retained ? '&retained=1' : ''}`;
  const headers: Record<string, string> = { Host: 'localhost', 'Content-Length': String(payload.length), ...(o.type ? { 'Content-Type': o.type } : {}), ...o.headers };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return Buffer.concat([Buffer.from(`POST /publish?${query} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`), payload]);
}

/** A chunked body: `pieces` as chunks, then the last chunk (and optional trailer lines). */
export function chunked(pieces: (string | Buffer)[], trailer = ''): Buffer {
  const parts: Buffer[] = [];
  for (const p of pieces) {
    const b = typeof p === 'string' ? Buffer.from(p) : p;
    parts.push(Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`0\r\n${trailer}\r\n`));
  return Buffer.concat(parts);
}

/** The JSON body of a response. */
export function json(res: HttpResponse): { ok: boolean; error?: string; detail?: string } {
  assert.match(res.headers['content-type'] ?? '', /application\/json/, `a JSON answer: ${res.statusLine}`);
  return JSON.parse(res.body);
}
