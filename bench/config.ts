// The value types only the benchmark tools' keys use (bench/tools.ts), on top of the server's (TYPES in
// src/config/types.ts): decimal numbers, and lists of subjects and hosts in the seeds' range syntax.
import * as net from 'node:net';
import { HOSTNAME, TYPES, type KeyBase, type KeyDef, type TypeTable, type ValueType } from '../src/config/types';

/** A key of a benchmark tool: any server type, or one of the types below. */
export type ToolKeyDef =
  | KeyDef
  | (KeyBase & { type: 'number'; min: number; max: number })
  | (KeyBase & { type: 'subjects' })
  | (KeyBase & { type: 'hosts' });

type Def<N extends ToolKeyDef['type']> = Extract<ToolKeyDef, { type: N }>;

// PROTOCOL.md subject rule.
const SUBJECT = /^(\/[\x21-\x29\x2b-\x2e\x30-\x7e]+)+$/;

/**
 * Expands the range syntax of the benchmark tools (the seeds' notation): `/p/s{1..3}/-` is `/p/s1/-`, `/p/s2/-`,
 * `/p/s3/-`; several `{a..b}` in one item multiply out; items are separated by commas or spaces. Returns
 * undefined for a malformed range or more than `limit` items.
 */
export function expandRanges(text: string, limit = 10_000_000): string[] | undefined {
  const out: string[] = [];
  for (const item of text.split(/[\s,]+/).filter((t) => t !== '')) {
    let parts = [''];
    const re = /\{(\d+)\.\.(\d+)\}/g;
    let last = 0;
    for (let m = re.exec(item); m; m = re.exec(item)) {
      const [lo, hi] = [Number(m[1]), Number(m[2])];
      if (hi < lo || parts.length * (hi - lo + 1) + out.length > limit) return undefined;
      const prefix = item.slice(last, m.index);
      const next: string[] = [];
      for (const p of parts) for (let i = lo; i <= hi; i++) next.push(p + prefix + i);
      parts = next;
      last = m.index + m[0].length;
    }
    const suffix = item.slice(last);
    if (/[{}]/.test(suffix)) return undefined;
    for (const p of parts) out.push(p + suffix);
    if (out.length > limit) return undefined;
  }
  return out;
}

const number: ValueType<number, Def<'number'>> = {
  expected: (def) => `a number between ${def.min} and ${def.max}`,
  parse: (text, def) => (/^\d+(\.\d+)?$/.test(text) && Number(text) >= def.min && Number(text) <= def.max ? Number(text) : undefined),
  accept: (value, def) => (typeof value === 'number' && value >= def.min && value <= def.max ? value : undefined),
  format: String,
  syntax: 'A decimal number, e.g. `20000` or `0.5`.',
  range: (def) => `${def.min} to ${def.max}`,
};

const subjects: ValueType<string[], Def<'subjects'>> = {
  expected: () => 'subjects such as /p/s{1..15000}/- (range syntax; commas or spaces between items)',
  parse: (text) => {
    const list = expandRanges(text);
    return list && list.length > 0 && list.every((s) => SUBJECT.test(s) && s.length <= 255) ? list : undefined;
  },
  accept: (value) =>
    Array.isArray(value) && value.length > 0 && value.every((s) => typeof s === 'string' && SUBJECT.test(s)) ? [...(value as string[])] : undefined,
  format: (list) => list.join(', '),
  syntax: 'Subjects, with `{a..b}` ranges: `/p/s{1..15000}/-` is 15,000 subjects.',
  range: () => '',
};

const hosts: ValueType<string[], Def<'hosts'>> = {
  expected: () => 'host names or addresses such as 127.0.0.{2..20} (range syntax), or nothing',
  parse: (text) => {
    const list = expandRanges(text);
    return list && list.every((h) => net.isIP(h) !== 0 || HOSTNAME.test(h)) ? list : undefined;
  },
  accept: (value) => (Array.isArray(value) && value.every((s) => typeof s === 'string') ? [...(value as string[])] : undefined),
  format: (list) => list.join(', '),
  syntax: 'Addresses or host names, with `{a..b}` ranges: `127.0.0.{2..20}`. Empty means none.',
  range: () => '',
};

/** Every type a tool key may have. */
export const TOOL_TYPES = { ...TYPES, number, subjects, hosts } as unknown as TypeTable<ToolKeyDef>;
