// The `starling` command without surprises: every command answers --help (usage, options, an example) with
// exit 0, and works so far as it can without the native addon: --help, config, doctor and tune never load it;
// serve and the benchmark tools say what to run instead of printing a stack.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { ADDON_ENV } from '../src/native';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const COMMANDS = ['serve', 'config', 'doctor', 'tune', 'benchsub', 'benchpub'] as const;
const MISSING = path.join(os.tmpdir(), 'starling-no-such-addon', 'starling.node');

/** Runs the CLI to completion (10 s at most) with `env` added to a copy of this process' environment. */
function starling(args: string[], env: Record<string, string | undefined> = {}, cli = CLI): { code: number | null; stdout: string; stderr: string } {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k];
  const r = spawnSync(process.execPath, [cli, ...args], { env: e, encoding: 'utf8', timeout: 10_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** No JavaScript stack frame in `text`. */
const assertNoStack = (text: string) => assert.doesNotMatch(text, /^\s+at .+[(:]\d+/m, `a stack trace was printed:\n${text}`);

describe('starling --help and the help of every command', () => {
  it('starling --help lists every command and how to get its help', () => {
    for (const flag of ['--help', '-h', 'help']) {
      const r = starling([flag]);
      assert.equal(r.code, 0, r.stderr);
      for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`starling ${c}\\b`), `${flag} does not list ${c}`);
      assert.match(r.stdout, /starling <command> --help/);
    }
  });

  for (const command of COMMANDS) {
    it(`starling ${command} --help prints its usage, options and an example (exit 0)`, () => {
      for (const args of [[command, '--help'], [command, '-h'], ['help', command], [command, '-DWorkgroups=2', '--help']]) {
        const r = starling(args);
        assert.equal(r.code, 0, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
        assert.equal(r.stderr, '', `${args.join(' ')} wrote to stderr`);
        assert.match(r.stdout, new RegExp(`^Usage: starling ${command}\\b`), `${args.join(' ')}:\n${r.stdout}`);
        assert.match(r.stdout, /--help/);
        assert.match(r.stdout, /\nExamples?:\n {2}(sudo )?starling \w+/, `no example in the help of ${command}`);
      }
    });
  }

  it('the benchmark tools list every key of theirs with its default', () => {
    const { BENCHSUB_KEYS, BENCHPUB_KEYS } = require('../bench/tools') as typeof import('../bench/tools');
    for (const [tool, keys] of [['benchsub', BENCHSUB_KEYS], ['benchpub', BENCHPUB_KEYS]] as const) {
      const out = starling([tool, '--help']).stdout;
      for (const d of keys.defs) assert.match(out, new RegExp(`\\n {2}${d.name.replace('.', '\\.')} +\\(`), `${tool} --help lacks ${d.name}`);
      assert.match(out, /'-DSubjects=\/p\/s\{1\.\.\d+\}'/, `${tool} --help does not show a quoted range`);
    }
  });

  it('serve --help says to turn BenchmarkMode on for local benchmarks', () => {
    assert.match(starling(['serve', '--help']).stdout, /-DBenchmarkMode=true/);
  });

  it('a bad argument names the command whose --help to read (exit 2)', () => {
    const r = starling(['serve', '--bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown argument "--bogus"/);
    assert.match(r.stderr, /starling serve --help/);
    const d = starling(['doctor', '--bogus']);
    assert.equal(d.code, 2);
    assert.match(d.stderr, /starling doctor --help/);
  });
});

describe(`without the native addon (${ADDON_ENV} names a missing file)`, () => {
  const env = { [ADDON_ENV]: MISSING };

  it('starling --help and every command --help still work', () => {
    const r = starling(['--help'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage:/);
    for (const c of COMMANDS) assert.equal(starling([c, '--help'], env).code, 0, `${c} --help needs the addon`);
  });

  it('config --print, doctor and tune --print do not need it', () => {
    const c = starling(['config', '--print', '-DWorkgroups=3'], env);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /^Workgroups += 3$/m);
    const t = starling(['tune', '--print'], env);
    assert.equal(t.code, 0, t.stderr);
    const d = starling(['doctor', '--connections', '10', '--json'], env);
    assert.ok(d.code === 0 || d.code === 1, `doctor: exit ${d.code}\n${d.stderr}`);
    assert.doesNotMatch(d.stderr, /addon/);
  });

  it('starling serve fails with exit 1 and a message naming the missing file, without a stack', () => {
    const r = starling(['serve', '-DListen=127.0.0.1:0', '-DMonitor='], env);
    assert.equal(r.code, 1, `exit ${r.code}\n${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `more than one line:\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^starling: the native addon named by ${ADDON_ENV} does not exist: ${MISSING.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    assertNoStack(r.stderr);
    assert.doesNotMatch(r.stderr, /Cannot find module/);
  });

  it('benchsub and benchpub fail the same way once their configuration is valid', () => {
    for (const tool of ['benchsub', 'benchpub']) {
      const r = starling([tool, '-DDuration=1'], env);
      assert.equal(r.code, 1, `${tool}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^starling ${tool}: the native addon named by ${ADDON_ENV} does not exist`));
      assertNoStack(r.stderr);
    }
  });
});

describe('with the addon not built (a copy of dist/ without build/)', () => {
  // The package as it is after a failed or skipped `npm install` build: dist/ and node_modules, no build/.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-unbuilt-'));
  fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(dir, 'dist', 'src'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'dist', 'bench'), path.join(dir, 'dist', 'bench'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cli = path.join(dir, 'dist', 'src', 'cli.js');
  const env = { [ADDON_ENV]: undefined };

  it('--help works, and serve says to run npm install (or npm run build) in the package folder, with exit 1', () => {
    assert.equal(starling(['--help'], env, cli).code, 0);
    assert.equal(starling(['serve', '--help'], env, cli).code, 0);
    const r = starling(['serve', '-DListen=127.0.0.1:0', '-DMonitor='], env, cli);
    assert.equal(r.code, 1, `exit ${r.code}\n${r.stderr}`);
    assert.ok(
      r.stderr.startsWith(`starling: the native addon is not built (${path.join(dir, 'build', 'Release', 'starling.node')} is missing): run \`npm install\` (or \`npm run build\`) in ${dir}; it needs g++, make and python3`),
      r.stderr,
    );
    assertNoStack(r.stderr);
  });
});
