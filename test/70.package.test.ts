// The self-contained package: built by tuning/package.sh (what `npm run package` runs) from the current build,
// unpacked into a temporary directory, and started from there with neither node nor npm on PATH; a real
// WebSocket client does a SUB/PUB round trip; SIGTERM stops it. Then install.sh installs it into a scratch root.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Client, parseMsg, within } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
const NAME = `starling-${VERSION}-${process.platform}-${process.arch}`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-package-'));
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Where the package is unpacked: <tmp>/unpacked/starling-<version>-linux-x64. */
const pkg = path.join(tmp, 'unpacked', NAME);

/** A PATH with no node and no npm: only the launcher (through a symlink) and readlink, which it uses for it. */
function barePath(): string {
  const bin = path.join(tmp, 'bare-bin');
  fs.mkdirSync(bin, { recursive: true });
  const readlink = ['/usr/bin/readlink', '/bin/readlink'].find((p) => fs.existsSync(p))!;
  fs.symlinkSync(readlink, path.join(bin, 'readlink'));
  fs.symlinkSync(path.join(pkg, 'bin', 'starling'), path.join(bin, 'starling'));
  return bin;
}

/** `-D<key>=127.0.0.1:0` for every listening address key besides Listen (e.g. the monitor's), so runs never collide. */
function freePortDefines(env: NodeJS.ProcessEnv): string[] {
  const r = spawnSync(path.join(pkg, 'bin', 'starling'), ['config', '--print'], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  return [...r.stdout.matchAll(/^(\S+\.Listen)\s*=/gm)].map((m) => `-D${m[1]}=127.0.0.1:0`);
}

describe('the self-contained package', () => {
  before(() => {
    const out = path.join(tmp, 'out');
    const r = spawnSync('sh', [path.join(ROOT, 'tuning', 'package.sh'), '--no-build', '--out', out], { encoding: 'utf8', cwd: ROOT });
    assert.equal(r.status, 0, `package.sh failed:\n${r.stdout}\n${r.stderr}`);
    const tarball = path.join(out, `${NAME}.tar.gz`);
    assert.ok(fs.existsSync(tarball), r.stdout);
    fs.mkdirSync(path.join(tmp, 'unpacked'));
    const x = spawnSync('tar', ['-xzf', tarball, '-C', path.join(tmp, 'unpacked')], { encoding: 'utf8' });
    assert.equal(x.status, 0, x.stderr);
  });

  it('holds the Node.js runtime, the built addon, the compiled JavaScript, the config, the unit and install.sh', () => {
    for (const f of [
      'bin/starling',
      'node/bin/node',
      'install.sh',
      'lib/package.json',
      'lib/dist/src/cli.js',
      'lib/dist/src/doctor.js',
      'lib/dist/bench/benchsub.js',
      'lib/dist/client/esm/index.js',
      'lib/dist/client/esm/package.json',
      'lib/dist/client/cjs/index.js',
      'lib/build/Release/starling.node',
      'lib/starling.conf',
      'lib/tuning/starling.service',
      'lib/tuning/sysctl-server.conf',
      'lib/tuning/sysctl-client.conf',
      'lib/tuning/limits.conf',
      'lib/tuning/irq-affinity.sh',
      'lib/tuning/hugepages.sh',
      'lib/docs/deploy.md',
    ]) {
      assert.ok(fs.existsSync(path.join(pkg, f)), `${f} missing from the package`);
    }
    assert.equal(fs.statSync(path.join(pkg, 'node/bin/node')).size, fs.statSync(process.execPath).size, 'node/bin/node is not a copy of the running node');
    // Production dependencies only.
    const deps = Object.keys(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).dependencies ?? {});
    for (const d of deps) assert.ok(fs.existsSync(path.join(pkg, 'lib/node_modules', d, 'package.json')), `dependency ${d} missing`);
    for (const d of ['typescript', 'playwright-core', '@types/node']) assert.ok(!fs.existsSync(path.join(pkg, 'lib/node_modules', d)), `dev dependency ${d} shipped`);
    assert.ok(!fs.existsSync(path.join(pkg, 'lib/dist/test')), 'tests shipped');
  });

  it('serves WebSocket clients from any directory with neither node nor npm on PATH, and stops on SIGTERM', async () => {
    const bin = barePath();
    const env = { PATH: bin, HOME: tmp };
    for (const tool of ['node', 'npm', 'npx']) {
      assert.equal(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env }).status !== 0, true, `${tool} is on the bare PATH`);
    }
    const cwd = fs.mkdtempSync(path.join(tmp, 'cwd-'));
    const version = spawnSync('starling', ['--version'], { env, cwd, encoding: 'utf8' });
    assert.equal(version.stdout.trim(), VERSION, version.stderr);

    const server = spawn('starling', ['serve', '-DListen=127.0.0.1:0', '-DWorkgroups=2', ...freePortDefines(env)], { env, cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(server);
    let log = '';
    server.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
    const port = await within(
      new Promise<number>((resolve, reject) => {
        server.stderr!.on('data', () => {
          const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
          if (m) resolve(Number(m[1]));
        });
        exited.then((code) => reject(new Error(`the packaged server exited with ${code}:\n${log}`)));
      }),
      'the packaged server to listen',
    );
    assert.match(log, /with 2 workgroups/);

    const client = await Client.open(`ws://127.0.0.1:${port}/`);
    await client.command('SUB /package/test');
    client.send('PUB /package/test\nfrom the package');
    const msg = parseMsg(await client.next('the published message'));
    assert.equal(msg.subject, '/package/test');
    assert.equal(msg.seq, 1);
    assert.equal(msg.payload.toString(), 'from the package');

    server.kill('SIGTERM');
    const closed = await client.closed;
    assert.equal(closed.code, 1001);
    assert.equal(await within(exited, 'the packaged server to exit'), 0, log);
    assert.match(log, /SIGTERM: closing connections with 1001 and stopping/);
    assert.match(log, /stopped/);
    children.delete(server);
  });

  it('runs doctor and tune from the package, reading its own tuning profiles', () => {
    const env = { PATH: '/nonexistent' };
    const doctor = spawnSync(path.join(pkg, 'bin', 'starling'), ['doctor', '--connections', '100'], { env, encoding: 'utf8' });
    assert.equal(doctor.status, 0, doctor.stdout + doctor.stderr);
    assert.match(doctor.stdout, /100 connections fit/);
    const tune = spawnSync(path.join(pkg, 'bin', 'starling'), ['tune', '--print'], { env, encoding: 'utf8' });
    assert.equal(tune.status, 0, tune.stderr);
    assert.ok(tune.stdout.includes(path.join(pkg, 'lib', 'tuning', 'sysctl-server.conf')), tune.stdout.split('\n')[0]);
  });

  it('installs with install.sh into a scratch root: versioned directory, symlinks, config, unit', () => {
    const root = path.join(tmp, 'root');
    const r = spawnSync(path.join(pkg, 'install.sh'), ['--root', root, '--limits'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const home = path.join(root, 'opt', `starling-${VERSION}`);
    assert.equal(fs.readlinkSync(path.join(root, 'opt', 'starling')), `starling-${VERSION}`);
    assert.equal(fs.readlinkSync(path.join(root, 'usr/local/bin/starling')), '/opt/starling/bin/starling');
    assert.equal(fs.readFileSync(path.join(root, 'etc/starling/starling.conf'), 'utf8'), fs.readFileSync(path.join(ROOT, 'starling.conf'), 'utf8'));
    assert.ok(fs.existsSync(path.join(root, 'etc/security/limits.d/60-starling.conf')));
    const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/starling.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/opt\/starling\/bin\/starling serve --config \/etc\/starling\/starling\.conf$/m);
    const limit = Number(/^LimitNOFILE=(\d+)$/m.exec(unit)![1]);
    assert.ok(limit <= Number(fs.readFileSync('/proc/sys/fs/nr_open', 'utf8')), `LimitNOFILE=${limit} above fs.nr_open`);
    const version = spawnSync(path.join(home, 'bin', 'starling'), ['--version'], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
    assert.equal(version.stdout.trim(), VERSION, version.stderr);

    // A second install keeps the operator's config and leaves this version's default beside it.
    fs.appendFileSync(path.join(root, 'etc/starling/starling.conf'), 'Workgroups = 3\n');
    const again = spawnSync(path.join(pkg, 'install.sh'), ['--root', root], { encoding: 'utf8' });
    assert.equal(again.status, 0, again.stderr);
    assert.match(fs.readFileSync(path.join(root, 'etc/starling/starling.conf'), 'utf8'), /Workgroups = 3/);
    assert.ok(fs.existsSync(path.join(root, 'etc/starling/starling.conf.dist')));
  });
});
