// `starling doctor`: run against this live machine (hard RLIMIT_NOFILE 20000 here), item by item, with exit codes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { addon } from '../src/native';
import { FD_RESERVE, KERNEL_BYTES_PER_SOCKET, SERVER_BYTES_PER_CONNECTION, parseCount, parseDoctorArgs, type Report } from '../src/doctor';

const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');

function starling(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function doctorJson(...args: string[]): { code: number | null; report: Report } {
  const r = starling('doctor', '--json', ...args);
  return { code: r.code, report: JSON.parse(r.stdout) as Report };
}

const item = (r: Report, name: string) => {
  const i = r.items.find((x) => x.name === name);
  assert.ok(i, `no item ${name} in ${r.items.map((x) => x.name).join(', ')}`);
  return i;
};

/** The hard RLIMIT_NOFILE a child process gets (this machine: 20000). */
const HARD = (() => {
  const m = /Max open files\s+\S+\s+(\d+|unlimited)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
})();

/** Every item the issue lists, by the name doctor prints. */
const SERVER_ITEMS = [
  'RLIMIT_NOFILE',
  'fs.nr_open',
  'fs.file-max',
  'net.ipv4.tcp_mem',
  'net.ipv4.tcp_rmem/tcp_wmem',
  'net.ipv4.ip_local_port_range',
  'local addresses',
  'memory',
  'io_uring',
];

describe('starling doctor', () => {
  it('says 15000 connections fit the fd limit of this machine and exits 0', { skip: HARD < 15000 + FD_RESERVE && `hard limit below ${15000 + FD_RESERVE}` }, () => {
    const r = starling('doctor', '--connections', '15000');
    const { report } = doctorJson('--connections', '15000');
    assert.equal(item(report, 'RLIMIT_NOFILE').status, 'ok');
    assert.equal(r.code, report.fits ? 0 : 1, r.stdout);
    assert.equal(r.code, 0, `15000 connections should fit here:\n${r.stdout}`);
    assert.match(r.stdout, /15,000 connections fit/);
    for (const name of SERVER_ITEMS) assert.ok(r.stdout.includes(name), `the report lacks ${name}:\n${r.stdout}`);
  });

  it('says 50000 connections do not fit one server process under a hard limit of 20000, and names the fix', { skip: HARD >= 50000 + FD_RESERVE && 'hard limit allows 50000' }, () => {
    const r = starling('doctor', '--connections', '50000', '--role', 'server', '--backend', 'epoll');
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /^ {2}FAIL {2}RLIMIT_NOFILE/m);
    assert.match(r.stdout, /50,000 connections do NOT fit: RLIMIT_NOFILE/);
    // The fix: the exact limit, both ways of setting it, and what to do where it cannot be raised.
    assert.match(r.stdout, /fix: .*/);
    const flat = r.stdout.replace(/\s+/g, ' ');
    assert.ok(flat.includes(`ulimit -Hn ${50000 + FD_RESERVE}`), flat);
    assert.ok(flat.includes(`LimitNOFILE=${50000 + FD_RESERVE}`), flat);
    if (HARD === 20000) assert.ok(flat.includes(`at most 20,000 − ${FD_RESERVE} reserved = 19,744 connections`), flat);
    assert.ok(/run \d+ server processes/.test(flat) || /CAP_SYS_RESOURCE/.test(flat), flat);
    for (const name of SERVER_ITEMS) assert.ok(r.stdout.includes(name), `the report lacks ${name}`);

    const { code, report } = doctorJson('--connections', '50000', '--role', 'server', '--backend', 'epoll');
    assert.equal(code, 1);
    assert.equal(report.fits, false);
    assert.deepEqual(report.items.filter((i) => i.status === 'FAIL').map((i) => i.name), ['RLIMIT_NOFILE']);
  });

  it('puts the limit exactly at the hard limit minus the reserve', { skip: !Number.isFinite(HARD) && 'no finite hard limit' }, () => {
    const most = HARD - FD_RESERVE;
    assert.equal(item(doctorJson('--connections', String(most), '--backend', 'epoll').report, 'RLIMIT_NOFILE').status, 'ok');
    assert.equal(item(doctorJson('--connections', String(most + 1), '--backend', 'epoll').report, 'RLIMIT_NOFILE').status, 'FAIL');
  });

  it('reports every item with a status and a fix for each shortfall', () => {
    const { report } = doctorJson('--connections', '10M');
    assert.deepEqual(
      SERVER_ITEMS.filter((n) => !report.items.some((i) => i.name === n)),
      [],
    );
    for (const i of report.items) {
      assert.ok(['ok', 'FAIL', 'warn', 'info'].includes(i.status), JSON.stringify(i));
      if (i.status === 'FAIL' || i.status === 'warn') assert.ok(i.fix, `${i.name} is ${i.status} without a fix`);
    }
    // Ten million connections exceed this machine's memory at ~4.1 KB each (24 GiB here).
    assert.equal(item(report, 'memory').status, 'FAIL');
    assert.equal(report.fits, false);
    // Shortfalls of sysctls name the sysctl -w command.
    for (const name of ['fs.nr_open', 'fs.file-max', 'net.ipv4.tcp_mem']) {
      const i = item(report, name);
      if (i.status === 'FAIL') assert.match(i.fix!, new RegExp(`^sysctl -w ${name.replace(/\./g, '\\.')}=`));
    }
  });

  it("estimates memory per connection from the kernel's 3.8 KB per idle socket plus Starling's 292 B", () => {
    const { report } = doctorJson('--connections', '100000');
    const m = item(report, 'memory');
    assert.equal(KERNEL_BYTES_PER_SOCKET, 3800);
    assert.equal(SERVER_BYTES_PER_CONNECTION, 292);
    assert.ok(m.detail.includes('3.8 KB kernel per idle TCP socket + 292 B Starling'), m.detail);
    assert.ok(m.detail.includes('4,092 B per connection'), m.detail);
    assert.ok(m.detail.includes(`${Math.ceil((100000 * 4092) / 2 ** 20)} MiB for 100,000`), m.detail);
  });

  it('reports what the io_uring probe found, and the per-process bound of the epoll backend', () => {
    const { report } = doctorJson('--connections', '1000');
    const u = item(report, 'io_uring');
    assert.equal(u.status, 'info');
    assert.match(u.detail, /epoll backend/);
    assert.match(u.detail, /kernel \d+\.\d+/);
    const probe = addon.ioUring();
    assert.match(u.detail, probe.unavailable ? /cannot run here/ : /the io_uring backend runs here/);
    const disabled = fs.existsSync('/proc/sys/kernel/io_uring_disabled') ? fs.readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() : undefined;
    if (disabled !== undefined) assert.ok(u.detail.includes(`kernel.io_uring_disabled = ${disabled}`), u.detail);
    if (Number.isFinite(HARD)) assert.ok(u.detail.includes((HARD - FD_RESERVE).toLocaleString('en-US')), u.detail);
  });

  it('with io_uring, connections beyond the fd limit fit one server process (a warning with the setting, not a failure)', (t) => {
    if (addon.ioUring().unavailable || !Number.isFinite(HARD)) return t.skip(`io_uring unavailable: ${addon.ioUring().unavailable}`);
    const n = HARD * 2;
    const { code, report } = doctorJson('--connections', String(n));
    const r = item(report, 'RLIMIT_NOFILE');
    assert.equal(r.status, 'warn');
    assert.match(r.fix!, new RegExp(`IoBackend = io_uring and MaxConnections = ${n}`));
    assert.match(item(report, 'io_uring').detail, /2 rings/);
    assert.equal(item(report, 'fs.nr_open').status, 'ok', 'the server needs no descriptor per connection');
    void code;
  });

  it('checks the port range and the source addresses for a client toward a loopback server', () => {
    const { code, report } = doctorJson('--connections', '50000', '--role', 'client');
    assert.equal(report.role, 'client');
    const ports = item(report, 'net.ipv4.ip_local_port_range');
    const addrs = item(report, 'local addresses');
    assert.equal(ports.status, 'ok');
    assert.equal(addrs.status, 'ok');
    // 127.0.0.0/8 is local: the advice is how many of its addresses benchsub should use.
    assert.match(addrs.detail, /127\.0\.0\.1\/8 on lo/);
    assert.match(addrs.fix!, /LocalAddresses = 127\.0\.0\.\{2\.\.\d+\}/);
    const [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    const needed = Math.ceil(50000 / (hi - lo + 1));
    assert.ok(addrs.detail.includes(`need ${needed} source address`), addrs.detail);
    // Both ends of each connection are on this machine: twice the files.
    assert.match(item(report, 'fs.file-max').detail, /both ends are on this machine/);
    assert.equal(code, report.fits ? 0 : 1);
  });

  it('fails a client whose single address and port range cannot reach a remote server, and names both fixes', () => {
    const r = starling('doctor', '--connections', '200000', '--role', 'client', '--server', '192.0.2.250');
    const { report } = doctorJson('--connections', '200000', '--role', 'client', '--server', '192.0.2.250');
    const nonLoopback = report.items.find((i) => i.name === 'local addresses')!;
    const ports = item(report, 'net.ipv4.ip_local_port_range');
    // 200,000 connections need at least 4 source addresses even with the full 64,512-port range.
    const addresses = Object.values(os.networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal).length;
    if (addresses <= 3) {
      assert.equal(ports.status, 'FAIL');
      assert.equal(r.code, 1);
      assert.match(ports.fix!, /sysctl -w net\.ipv4\.ip_local_port_range="1024 65535"/);
      assert.equal(nonLoopback.status, 'FAIL');
      assert.match(nonLoopback.fix!, /ip addr add/);
      assert.doesNotMatch(nonLoopback.detail, /127\.0\.0\.1\/8/);
    }
    assert.ok(r.stdout.includes('toward 192.0.2.250'), r.stdout);
  });

  it('rejects bad arguments with exit code 2', () => {
    for (const args of [[], ['--connections'], ['--connections', 'many'], ['--connections', '0'], ['--connections', '10', '--role', 'router'], ['--bogus']]) {
      const r = starling('doctor', ...args);
      assert.equal(r.code, 2, `doctor ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^starling: doctor: /);
    }
  });

  it('parses counts like 15000, 15,000, 50k and 1M', () => {
    assert.equal(parseCount('15000'), 15000);
    assert.equal(parseCount('15,000'), 15000);
    assert.equal(parseCount('50k'), 50000);
    assert.equal(parseCount('1M'), 1000000);
    assert.equal(parseCount('0'), undefined);
    assert.equal(parseCount('-5'), undefined);
    assert.equal(parseCount('1.5'), undefined);
    assert.deepEqual(parseDoctorArgs(['-n', '10', '--role=client', '--server', '10.0.0.1']), { connections: 10, role: 'client', server: '10.0.0.1', json: false, backend: undefined });
    assert.equal(parseDoctorArgs(['-n', '10', '--backend', 'epoll']).backend, 'epoll');
    assert.throws(() => parseDoctorArgs(['-n', '10', '--backend', 'kqueue']), /--backend: expected epoll or io_uring/);
  });

  it('is listed in starling --help with tune', () => {
    const r = starling('--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /starling doctor --connections N \[--role server\|client\]/);
    assert.match(r.stdout, /starling tune --print \| --apply \[--role server\|client\]/);
  });
});
