// The tuning kit: the sysctl profiles (the one source of the values), `starling tune --print | --apply`, the
// limits snippet, the systemd unit, the IRQ-affinity and huge-pages scripts, and docs/tuning.md.
// --apply is exercised only in ways that leave the machine as it was: refused as an unprivileged user, and as
// root on a scratch profile whose one real change is restored at once.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { effectiveValue, loadProfile, parseProfile, profileFile, readSysctl, ROLES, sysctlPath, TCP_MEM_MAX_SHARE, type Profile } from '../src/tune';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const TUNING = path.join(ROOT, 'tuning');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-tune-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: opts.env ?? process.env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const starling = (...args: string[]) => run(process.execPath, [CLI, ...args]);
const isRoot = process.geteuid?.() === 0;
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

const profiles: Record<string, Profile> = Object.fromEntries(ROLES.map((r) => [r, loadProfile(profileFile(r))]));

describe('the sysctl profiles', () => {
  it('give every value a reason that names its seed figure or says it is not one', () => {
    for (const role of ROLES) {
      const p = profiles[role];
      assert.ok(p.settings.length >= 8, `${role}: ${p.settings.length} settings`);
      for (const s of p.settings) {
        assert.ok(s.reason.length > 0, `${role} ${s.key}: no reason`);
        assert.match(s.reason.join(' '), /Seed|seed|Not a seed value|Skipped|skipped/, `${role} ${s.key}: no seed figure in its reason`);
      }
    }
  });

  it("hold the seeds' kernel tuning", () => {
    const value = (role: string, key: string) => profiles[role].settings.find((s) => s.key === key)?.value;
    for (const role of ROLES) {
      assert.equal(value(role, 'net.ipv4.tcp_rmem'), '1024 4096 16384');
      assert.equal(value(role, 'net.ipv4.tcp_wmem'), '1024 4096 16384');
      assert.equal(value(role, 'net.core.rmem_max'), '16384');
      assert.equal(value(role, 'net.core.wmem_max'), '16384');
      assert.equal(value(role, 'fs.nr_open'), '20000500');
      assert.equal(value(role, 'fs.file-max'), '12000500');
      assert.equal(value(role, 'net.ipv4.tcp_mem'), '10000000 10000000 10000000');
    }
    assert.equal(value('client', 'net.ipv4.ip_local_port_range'), '1024 65535');
    assert.equal(value('server', 'net.ipv4.ip_local_port_range'), undefined);
  });

  it('are valid sysctl.d files with one line per key', () => {
    assert.throws(() => parseProfile('fs.nr_open = 1\nfs.nr_open = 2\n', 'x.conf'), /x\.conf:2: fs\.nr_open set twice, first on line 1/);
    assert.throws(() => parseProfile('# c\nnot a setting\n', 'y.conf'), /y\.conf:2: expected key = value/);
    const p = parseProfile('# header\n\n# why\n# more\nnet/ipv4/tcp_mem =  1\t2   3\n', 'z.conf');
    assert.deepEqual(p.settings, [{ key: 'net.ipv4.tcp_mem', value: '1 2 3', reason: ['why', 'more'], line: 5, optional: false }]);
    assert.equal(parseProfile('-net.netfilter.nf_conntrack_max = 5\n', 'o.conf').settings[0].optional, true);
    assert.equal(sysctlPath('net.ipv4.tcp_mem'), '/proc/sys/net/ipv4/tcp_mem');
  });

  it(`cap tcp_mem at ${TCP_MEM_MAX_SHARE * 100}% of memory, the seeds' share of their 96 GB`, () => {
    const s = profiles.server.settings.find((x) => x.key === 'net.ipv4.tcp_mem')!;
    assert.deepEqual(effectiveValue(s, 96 * 2 ** 30, 4096), { value: '10000000 10000000 10000000' });
    const small = effectiveValue(s, 16 * 2 ** 30, 4096);
    const cap = Math.floor((16 * 2 ** 30 * TCP_MEM_MAX_SHARE) / 4096);
    assert.equal(small.value, `${cap} ${cap} ${cap}`);
    assert.match(small.note!, /capped at 40%/);
    const other = profiles.server.settings.find((x) => x.key === 'fs.nr_open')!;
    assert.deepEqual(effectiveValue(other, 2 ** 30, 4096), { value: '20000500' });
  });

  it('agree with the limits snippet and the systemd unit: no nofile above fs.nr_open', () => {
    const nrOpen = Number(profiles.server.settings.find((s) => s.key === 'fs.nr_open')!.value);
    const limits = fs.readFileSync(path.join(TUNING, 'limits.conf'), 'utf8');
    const nofile = [...limits.matchAll(/^\S+\s+(soft|hard)\s+nofile\s+(\d+)/gm)].map((m) => Number(m[2]));
    assert.ok(nofile.length >= 2, 'limits.conf sets no nofile');
    for (const n of nofile) assert.ok(n <= nrOpen, `limits.conf nofile ${n} > fs.nr_open ${nrOpen}`);
    const unit = fs.readFileSync(path.join(TUNING, 'starling.service'), 'utf8');
    const limit = Number(/^LimitNOFILE=(\d+)$/m.exec(unit)?.[1]);
    assert.ok(limit > 1_000_000 && limit <= nrOpen, `LimitNOFILE=${limit}`);
  });

  it('are explained key by key in docs/tuning.md', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'tuning.md'), 'utf8');
    for (const role of ROLES) for (const s of profiles[role].settings) assert.ok(doc.includes(s.key), `docs/tuning.md does not mention ${s.key}`);
    for (const f of ['irq-affinity.sh', 'hugepages.sh', 'limits.conf', 'starling doctor', 'starling tune']) assert.ok(doc.includes(f), `docs/tuning.md does not mention ${f}`);
  });
});

describe('starling tune --print', () => {
  for (const role of ROLES) {
    it(`prints the whole ${role} profile with every reason and the current value, as a sysctl.d file`, () => {
      const r = starling('tune', '--print', '--role', role);
      assert.equal(r.code, 0, r.stderr);
      const printed = parseProfile(r.stdout, 'printed');
      const profile = profiles[role];
      assert.deepEqual(printed.settings.map((s) => s.key), profile.settings.map((s) => s.key));
      for (const s of profile.settings) {
        const p = printed.settings.find((x) => x.key === s.key)!;
        assert.equal(p.value, effectiveValue(s).value, s.key);
        for (const line of s.reason) assert.ok(p.reason.includes(line), `${s.key}: reason line ${JSON.stringify(line)} missing`);
        const now = readSysctl(s.key);
        assert.ok(p.reason.some((l) => l.startsWith('Now: ') && (now === undefined || l.includes(now || '(empty)'))), `${s.key}: no current value`);
      }
      assert.match(r.stdout, new RegExp(`starling tune --apply --role ${role}`));
    });
  }

  it('defaults to the server profile and rejects bad arguments with exit code 2', () => {
    assert.equal(starling('tune', '--print').stdout.split('\n')[0], starling('tune', '--print', '--role', 'server').stdout.split('\n')[0]);
    for (const args of [[], ['--print', '--apply'], ['--print', '--role', 'router'], ['--print', '--bogus'], ['--role']]) {
      const r = starling('tune', ...args);
      assert.equal(r.code, 2, `tune ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^starling: tune: /);
    }
    const bad = path.join(tmp, 'bad.conf');
    fs.writeFileSync(bad, 'fs.nr_open\n');
    const r = starling('tune', '--print', '--profile', bad);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bad\.conf:1: expected key = value/);
  });
});

describe('starling tune --apply', () => {
  it('refuses without root, says why, and lists each setting it did not change', { skip: !(isRoot && setpriv) && 'needs root and setpriv to run as nobody' }, () => {
    const before = profiles.client.settings.map((s) => readSysctl(s.key));
    const r = run(setpriv!, ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, 'tune', '--apply', '--role', 'client']);
    assert.match(r.stderr, /refused: writing \/proc\/sys needs root, and this process runs as uid 65534/);
    const differing = profiles.client.settings.filter((s) => readSysctl(s.key) !== undefined && readSysctl(s.key) !== effectiveValue(s).value);
    assert.equal(r.code, differing.length > 0 ? 1 : 0);
    for (const s of differing) assert.ok(r.stderr.includes(`not changed  ${s.key}: now `), `${s.key} not reported:\n${r.stderr}`);
    assert.deepEqual(profiles.client.settings.map((s) => readSysctl(s.key)), before, 'a refused --apply changed the system');
  });

  it('reports each key as changed, already, skipped or failed, and the change is real', { skip: !isRoot && 'needs root' }, () => {
    // One real change (restored below), one value already in effect, one key this kernel lacks, one bad value.
    const finKey = 'net.ipv4.tcp_fin_timeout';
    const original = readSysctl(finKey)!;
    const changed = String(Number(original) === 60 ? 61 : 60);
    const same = readSysctl('net.ipv4.tcp_syncookies')!;
    const keepalive = readSysctl('net.ipv4.tcp_keepalive_time')!;
    const file = path.join(tmp, 'scratch.conf');
    fs.writeFileSync(file, [`${finKey} = ${changed}`, `net.ipv4.tcp_syncookies = ${same}`, 'net.starling.no_such_key = 1', 'net.ipv4.tcp_keepalive_time = not-a-number', ''].join('\n'));
    let r: ReturnType<typeof starling>;
    try {
      r = starling('tune', '--apply', '--profile', file);
      assert.equal(readSysctl(finKey), changed, 'the change did not take effect');
    } finally {
      fs.writeFileSync(sysctlPath(finKey), original);
    }
    assert.equal(readSysctl(finKey), original, 'could not restore tcp_fin_timeout');
    assert.equal(readSysctl('net.ipv4.tcp_keepalive_time'), keepalive);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, new RegExp(`changed  ${finKey.replace(/\./g, '\\.')}\\s+${original} -> ${changed}`));
    assert.match(r.stdout, new RegExp(`already  net\\.ipv4\\.tcp_syncookies\\s+${same}`));
    assert.match(r.stdout, /skipped  net\.starling\.no_such_key\s+not on this kernel/);
    assert.match(r.stdout, /FAILED {3}net\.ipv4\.tcp_keepalive_time\s+wanted not-a-number, still \d+: the kernel rejected the value \(EINVAL\)/);
    assert.match(r.stdout, /1 changed, 1 already set, 1 skipped, 1 failed\./);
  });
});

describe('the IRQ-affinity script', () => {
  const script = path.join(TUNING, 'irq-affinity.sh');
  const interrupts = path.join(tmp, 'interrupts');
  fs.writeFileSync(
    interrupts,
    [
      '           CPU0       CPU1       CPU2       CPU3',
      '  0:         12          0          0          0   IO-APIC   2-edge      timer',
      ' 64:          0          0          0          0  IR-PCI-MSI 524288-edge      eth1',
      ' 65:        120          0          0          0  IR-PCI-MSI 524289-edge      eth1-TxRx-0',
      ' 66:          0        130          0          0  IR-PCI-MSI 524290-edge      eth1-TxRx-1',
      ' 67:          0          0        140          0  IR-PCI-MSI 524291-edge      eth1-TxRx-2',
      ' 68:          0          0          0        150  IR-PCI-MSI 524292-edge      eth1-TxRx-3',
      ' 69:          0          0          0        150  IR-PCI-MSI 524293-edge      eth1-TxRx-4',
      ' 70:          5          0          0          0  IR-PCI-MSI 526336-edge      eth10-TxRx-0',
      '',
    ].join('\n'),
  );

  it('plans one CPU per queue, round robin over the CPUs given, and changes nothing on --dry-run', () => {
    const r = run('bash', [script, 'eth1', '--interrupts', interrupts, '--cpus', '1-3', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    const plan = [...r.stdout.matchAll(/IRQ (\d+)\s+(\S+)\s+queue (\d+)\s+-> CPU (\d+)/g)].map((m) => [m[1], m[2], m[4]]);
    assert.deepEqual(plan, [
      ['65', 'eth1-TxRx-0', '1'],
      ['66', 'eth1-TxRx-1', '2'],
      ['67', 'eth1-TxRx-2', '3'],
      ['68', 'eth1-TxRx-3', '1'],
      ['69', 'eth1-TxRx-4', '2'],
    ]);
    assert.match(r.stdout, /echo 1 > \/proc\/irq\/65\/smp_affinity_list/);
    assert.match(r.stdout, /mask 00000002/);
    assert.match(r.stdout, /dry run: nothing changed/);
  });

  it("plans this machine's real interface without root, and says when an interface has no queues", () => {
    const iface = fs.readdirSync('/sys/class/net').find((i) => fs.existsSync(`/sys/class/net/${i}/device`));
    if (iface) {
      const r = setpriv && isRoot ? run(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', script, iface, '--dry-run']) : run('bash', [script, iface, '--dry-run']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`IRQ affinity for ${iface}: \\d+ queue interrupt`));
      assert.match(r.stdout, /dry run: nothing changed/);
    }
    const lo = run('bash', [script, 'lo', '--dry-run']);
    assert.equal(lo.code, 1);
    assert.match(lo.stderr, /no queue interrupts found for lo/);
    const bad = run('bash', [script, 'eth1', '--interrupts', interrupts, '--cpus', '9']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /CPU 9 is not online/);
  });
});

describe('the huge-pages helper', () => {
  const script = path.join(TUNING, 'hugepages.sh');
  it('reports the state and plans a reservation without changing it', () => {
    const status = run('bash', [script, 'status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /transparent huge pages: \S+/);
    assert.match(status.stdout, /hugetlb pages: \d+ reserved/);
    const before = fs.readFileSync('/proc/sys/vm/nr_hugepages', 'utf8');
    const pageKb = Number(/Hugepagesize:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))![1]);
    const r = run('bash', [script, 'reserve', '4G', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(`echo ${(4 * 2 ** 20) / pageKb} > /proc/sys/vm/nr_hugepages`), r.stdout);
    assert.equal(fs.readFileSync('/proc/sys/vm/nr_hugepages', 'utf8'), before);
    assert.equal(run('bash', [script, 'reserve', '4 lots']).code, 2);
  });
});

describe('the systemd unit', () => {
  it('runs starling serve on /etc/starling/starling.conf as a dedicated user, with LimitNOFILE and a restart policy', () => {
    const unit = fs.readFileSync(path.join(TUNING, 'starling.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/opt\/starling\/bin\/starling serve --config \/etc\/starling\/starling\.conf$/m);
    assert.match(unit, /^User=starling$/m);
    assert.match(unit, /^Group=starling$/m);
    assert.match(unit, /^LimitNOFILE=\d+$/m);
    assert.match(unit, /^Restart=on-failure$/m);
    assert.match(unit, /^KillSignal=SIGTERM$/m);
    assert.match(unit, /^WantedBy=multi-user\.target$/m);
  });
});
