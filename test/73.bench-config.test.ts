// The benchmark tools' configuration as documented: the shipped bench/*.conf load as they are (and so does
// every commented-out line in them), a key given twice on the command line (what the shell makes of an
// unquoted range) is refused with the quoted argument to use, and a run records its command line quoted.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { benchsub } from '../bench/benchsub';
import { commandLine, quoteRanges, renderMarkdown, type RunSummary } from '../bench/report';
import { BENCHPUB_KEYS, BENCHSUB_KEYS, clientOptions, loadTool } from '../bench/tools';
import { ConfigError, loadConfig } from '../src/config/config';
import { createServer } from '../src/index';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const TOOLS = { benchsub: BENCHSUB_KEYS, benchpub: BENCHPUB_KEYS } as const;

/** The ConfigError `fn` throws. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  assert.fail('no ConfigError');
}

/** Runs `line` in bash (so that braces and spaces are expanded and split as a user's shell would). */
function bash(line: string): { code: number | null; stdout: string; stderr: string } {
  // The addon is not needed to refuse a configuration: a missing one proves the refusal comes first.
  const r = spawnSync('bash', ['-c', line], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, STARLING_ADDON: '/nonexistent/starling.node' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('shipped benchmark configuration files', () => {
  for (const tool of ['benchsub', 'benchpub'] as const) {
    const file = path.join(ROOT, 'bench', `${tool}.conf`);

    it(`bench/${tool}.conf loads without errors through the tools' config loader`, () => {
      const cfg = loadTool(TOOLS[tool], ['--config', file], {});
      assert.deepEqual((cfg.Subjects as string[]).slice(0, 2), ['/p/s1', '/p/s2']);
      assert.equal((cfg.Subjects as string[]).length, 500);
      assert.deepEqual(cfg.ServerAddresses, [{ host: '127.0.0.1', port: 8800 }]);
      if (tool === 'benchsub') {
        assert.equal(cfg.Clients, 500);
        assert.equal(cfg.OneToOne, true);
        assert.ok((cfg.Duration as number) > 0, 'benchsub.conf should end by itself');
      }
    });

    it(`every commented-out "# Key = value" line of bench/${tool}.conf is valid when uncommented`, () => {
      const lines = fs.readFileSync(file, 'utf8').split('\n');
      const commented = lines.map((l) => /^# ([A-Z][A-Za-z.]*) =(.*)$/.exec(l)).filter((m): m is RegExpExecArray => m !== null && TOOLS[tool].byName.has(m[1]));
      assert.ok(commented.length >= 4, 'expected the optional keys as commented-out lines');
      for (const m of commented) loadTool(TOOLS[tool], ['--config', file, `-D${m[1]}=${m[2].trim()}`], {});
      // And every key of the tool appears in its file, set or commented out.
      for (const d of TOOLS[tool].defs) assert.ok(lines.some((l) => new RegExp(`^(# )?${d.name} =`).test(l)), `${tool}.conf does not mention ${d.name}`);
    });

    it(`bench/${tool}.conf loads through the CLI (--config and -c)`, () => {
      for (const flag of ['--config', '-c']) {
        // Duration=0 with a missing addon: the configuration is accepted, then the addon is missing (exit 1).
        const r = bash(`node ${CLI} ${tool} ${flag} ${file}`);
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /native addon/);
        assert.doesNotMatch(r.stderr, /configuration error/);
      }
    });
  }

  it('docs/benchmarks.md names the shipped files, mentions BenchmarkMode and quotes every range on a command line', () => {
    const docs = fs.readFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), 'utf8');
    for (const m of docs.matchAll(/--config (\S+\.conf)/g)) assert.ok(fs.existsSync(path.join(ROOT, m[1])), `docs/benchmarks.md uses ${m[1]}, which does not exist`);
    assert.match(docs, /--config bench\/benchsub\.conf/);
    assert.match(docs, /-DBenchmarkMode=true/);
    for (const block of docs.matchAll(/```sh\n([\s\S]*?)```/g)) {
      for (const word of block[1].split(/\s+/)) {
        if (/\{\d+\.\.\d+\}/.test(word)) assert.match(word, /^'.*'$/, `unquoted range in docs/benchmarks.md: ${word}`);
      }
    }
  });
});

describe('TokenFile', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-tokens-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const options = (content: string | null) => {
    const file = path.join(dir, `t${Math.random()}`);
    if (content !== null) fs.writeFileSync(file, content);
    return clientOptions(loadTool(BENCHSUB_KEYS, [`-DTokenFile=${file}`], {}), false, 1);
  };

  it('gives connection i the token of line i, blank lines skipped', () => {
    assert.deepEqual(options('a.b.c\n\n  d-e_f~  \n').tokens, ['a.b.c', 'd-e_f~']);
  });
  it('refuses a missing file, an empty one and a token that is not URL-safe, naming the file', () => {
    assert.throws(() => options(null), (e: Error) => e instanceof ConfigError && /TokenFile: cannot read/.test(e.message));
    assert.throws(() => options('\n\n'), (e: Error) => e instanceof ConfigError && /holds no token/.test(e.message));
    assert.throws(() => options('ok\na b&c\n'), (e: Error) => e instanceof ConfigError && /is not URL-safe/.test(e.message));
  });
});

describe('a key given twice on the command line', () => {
  it('two -D of one key are refused, naming the key, both arguments and the quotes to use', () => {
    const e = configError(() => loadTool(BENCHSUB_KEYS, ['-DClients=10', '-DClients=20'], {}));
    assert.equal(e.errors.length, 1, e.message);
    assert.match(e.errors[0], /^-DClients=20: Clients: given twice on the command line \(first as -DClients=10, then as -DClients=20\); a key may be given once/);
    assert.match(e.errors[0], /quote it .*'-DClients=…'/);
  });

  it('an unquoted range expanded by bash is refused with the range, quoted', () => {
    const r = bash(`node ${CLI} benchsub -DClients=500 -DSubjects=/p/s{1..500}`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /-DSubjects=\/p\/s500: Subjects: given 500 times on the command line \(from -DSubjects=\/p\/s1 to -DSubjects=\/p\/s500\)/);
    assert.match(r.stderr, /quote it, as in '-DSubjects=\/p\/s\{1\.\.500\}'/);
    assert.equal(r.stderr.trim().split('\n').length, 2, 'one heading and one line for the key, not 500');
    // What the message suggests works.
    const ok = bash(`node ${CLI} benchsub -DClients=500 '-DSubjects=/p/s{1..500}'`);
    assert.equal(ok.code, 1, ok.stderr);
    assert.doesNotMatch(ok.stderr, /configuration error/);
  });

  it('rebuilds ranges with a suffix and address ranges', () => {
    const e = configError(() => loadTool(BENCHPUB_KEYS, ['-DSubjects=/p/s1/-', '-DSubjects=/p/s2/-', '-DSubjects=/p/s3/-', '-DLocalAddresses=127.0.0.2', '-DLocalAddresses=127.0.0.3'], {}));
    assert.equal(e.errors.length, 2, e.message);
    assert.match(e.errors[0], /'-DSubjects=\/p\/s\{1\.\.3\}\/-'/);
    assert.match(e.errors[1], /'-DLocalAddresses=127\.0\.0\.\{2\.\.3\}'/);
  });

  it('a value the shell split after a -D (spaces plus an expanded range) is refused, naming the key and suggesting quotes', () => {
    const e = configError(() => loadTool(BENCHSUB_KEYS, ['-DSubjects=/p/a,', '/p/s1', '/p/s2'], {}));
    assert.match(e.message, /^unexpected argument "\/p\/s1" after -DSubjects=\/p\/a,: if it belongs to the value of Subjects, .*quote the whole value/);
    assert.match(e.message, /'-DSubjects=\/p\/a, \/p\/s1'/);
    const r = bash(`node ${CLI} benchpub -DSubjects=/p/a, /p/s{1..3}`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /after -DSubjects=\/p\/a,: if it belongs to the value of Subjects/);
  });

  it('a key in the file and again on the command line is an override, not a repeat', () => {
    const cfg = loadTool(BENCHSUB_KEYS, ['--config', path.join(ROOT, 'bench', 'benchsub.conf'), '-DClients=7', '-DSubjects=/q/{1..7}'], {});
    assert.equal(cfg.Clients, 7);
    assert.equal((cfg.Subjects as string[]).length, 7);
  });

  it('a key set twice in a bench config file is refused with both lines', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-benchconf-'));
    const file = path.join(dir, 'twice.conf');
    fs.writeFileSync(file, 'Clients = 5\n# a comment\nClients = 6\n');
    const e = configError(() => loadTool(BENCHSUB_KEYS, ['--config', file], {}));
    assert.deepEqual(e.errors, [`${file}:3: Clients: set twice, first on line 1 and again on line 3`]);
    fs.rmSync(dir, { recursive: true });
  });

  it('the server keeps its documented rule (the last -D wins) but warns on the command line', () => {
    assert.equal(loadConfig({ defines: ['-DWorkgroups=1', '-DWorkgroups=2'] }).config.Workgroups, 2);
    const r = bash(`node ${CLI} config --print -DWorkgroups=1 -DWorkgroups=2`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Workgroups += 2$/m);
    assert.match(r.stderr, /warning: Workgroups is given 2 times on the command line; the last one \(-DWorkgroups=2\) wins/);
  });
});

describe("the report's command line", () => {
  it('quotes ranges and spaces so that pasting it into a shell gives the same arguments', () => {
    const argv = ['starling', 'benchsub', '-DSubjects=/p/s{1..500}', '-DServerAddresses=127.0.0.1:8800, 127.0.0.1:8801', "-DOutput=/tmp/it's", '-DClients=5'];
    const line = commandLine(argv);
    assert.equal(line, `starling benchsub '-DSubjects=/p/s{1..500}' '-DServerAddresses=127.0.0.1:8800, 127.0.0.1:8801' '-DOutput=/tmp/it'\\''s' -DClients=5`);
    const echoed = spawnSync('bash', ['-c', `printf '%s\\n' ${line}`], { encoding: 'utf8' }).stdout.trimEnd().split('\n');
    assert.deepEqual(echoed, argv);
  });

  it('quotes the ranges of a summary written before (unquoted) when rendering it', () => {
    assert.equal(quoteRanges('starling benchsub -DSubjects=/p/s{1..500} -DClients=5'), "starling benchsub '-DSubjects=/p/s{1..500}' -DClients=5");
    assert.equal(quoteRanges("starling benchsub '-DSubjects=/p/s{1..500}'"), "starling benchsub '-DSubjects=/p/s{1..500}'");
  });

  describe('a real run', () => {
    const server = createServer({ Listen: '127.0.0.1:0', Workgroups: 1, BenchmarkMode: true, LogLevel: 'warn', Monitor: '' });
    after(() => server.close());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-cmdline-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('records and reports its command line with the range quoted', async () => {
      const argv = [`-DServerAddresses=127.0.0.1:${server.addresses[0].port}`, '-DClients=2', '-DSubjects=/p/s{1..2}', '-DDuration=1', '-DReportInterval=1', `-DOutput=${dir}/run`];
      const summary: RunSummary = await benchsub(argv, {}, () => {});
      const expected = `starling benchsub -DServerAddresses=127.0.0.1:${server.addresses[0].port} -DClients=2 '-DSubjects=/p/s{1..2}' -DDuration=1 -DReportInterval=1 -DOutput=${dir}/run`;
      assert.equal(summary.command, expected);
      assert.ok(fs.readFileSync(`${dir}/run.md`, 'utf8').includes('```\n' + expected + '\n```'));
      assert.ok(renderMarkdown({ ...summary, command: summary.command.replace(/'/g, '') }, []).includes(expected));
    });
  });
});
