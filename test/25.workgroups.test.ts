// Workgroup threads as the operating system sees them: named, one per configured workgroup, pinned when
// WorkgroupCpus says so, and gone after close().
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { describe, it } from 'node:test';
import { startServer } from './helpers';

/** CPU lists (as in /proc/<pid>/task/<tid>/status Cpus_allowed_list) of this process's threads named `name*`. */
function threads(prefix: string): { name: string; cpus: string }[] {
  const out = [];
  for (const tid of fs.readdirSync('/proc/self/task')) {
    let name: string;
    let status: string;
    try {
      name = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      status = fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    } catch {
      continue; // the thread exited while we looked
    }
    if (!name.startsWith(prefix)) continue;
    out.push({ name, cpus: /Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1] ?? '' });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

const waitFor = async (what: string, ok: () => boolean) => {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), `timed out waiting for ${what}`);
};

describe('workgroup threads', () => {
  it('runs one named thread per workgroup plus the acceptor, and stops them on close', async () => {
    const server = startServer({ Workgroups: 3 });
    await waitFor('three workgroup threads', () => threads('starling-wg').length === 3);
    assert.deepEqual(threads('starling-wg').map((t) => t.name), ['starling-wg0', 'starling-wg1', 'starling-wg2']);
    assert.equal(threads('starling-accept').length, 1);
    await server.close();
    await waitFor('the threads to exit', () => threads('starling-').length === 0);
  });

  it('pins workgroup i to the i-th CPU of WorkgroupCpus, cycling through the list', { skip: os.cpus().length < 2 && 'needs two CPUs' }, async () => {
    const server = startServer({ Workgroups: 3, WorkgroupCpus: '1,0' });
    await waitFor('three workgroup threads', () => threads('starling-wg').length === 3);
    assert.deepEqual(threads('starling-wg').map((t) => t.cpus), ['1', '0', '1']);
    await server.close();
  });

  it('leaves workgroups unpinned without WorkgroupCpus', async () => {
    const server = startServer({ Workgroups: 2 });
    await waitFor('two workgroup threads', () => threads('starling-wg').length === 2);
    const all = fs.readFileSync('/proc/self/status', 'utf8').match(/Cpus_allowed_list:\s*(\S+)/)?.[1];
    for (const t of threads('starling-wg')) assert.equal(t.cpus, all);
    await server.close();
  });
});
