// Every fenced code block of README.md and docs/*.md runs as written (issue 14: the README's client example
// failed on Node 20, which has no global WebSocket). One test per block, named `<file>:<line> <kind>`; a
// failure says the file and the line of the opening fence.
//
// What is done with a block is decided by its fence's language and by an optional marker, an HTML comment on
// the line before the fence (blank lines between are allowed):
//
//   <!-- snippet: browser -->         the js block is browser code: it runs in headless Chromium
//   <!-- snippet: skip (reason) -->   the block is not run (a synopsis with [placeholders], ...); the reason is
//                                      required and shown as the test's skip reason. Use sparingly.
//
//   js, ts   Run, against a real Starling server this test starts (127.0.0.1, ephemeral port, Stats.LogInterval
//            5, its least, so /__starling__/stats arrives quickly; the monitor on, on a free port: it publishes them). In Node (Node 20: no global WebSocket), as an ES module
//            (ts: transpiled by typescript, not type-checked) in a temporary folder where `starling` and `ws` are
//            installed (symlinks to this checkout and its ws), as a user who ran `npm install starling ws`; it
//            must exit with 0 within TIMEOUT_MS. In the browser: added to an empty page as a script; it must log
//            (console.log) at least one line and raise no error. The only rewrites: `localhost:8800` and
//            `127.0.0.1:8800` in a client (a block without createServer) become the test server's address, and
//            `localhost:8900` / `127.0.0.1:8900` its monitor's (which serves the client SDK at /client.js); in a
//            block that creates its own server, port 8800 becomes a free port (8800 may be in use).
//   sh       Line by line (comments removed, `\` continuations joined). A line runs when it is a `starling` or
//            `npx starling` invocation (as `node dist/src/cli.js`) of a command that only reads: `config
//            --print`, `doctor`, `tune --print`, or anything with `--help`; it must exit with 0 (doctor: 0 or 1,
//            "fits" or "does not fit"). Other lines are not run and listed in the test's diagnostics: they need
//            root (sudo, systemctl), change the machine (tar, install, package), run until stopped (serve,
//            benchsub, benchpub, bench:*), or pipe into other programs. `npm install` and `npm test` are run in a
//            fresh clone by test/fresh-clone.sh (running them here would recurse).
//   json     Parsed with JSON.parse.
//   others   (none, ini, yaml, promql): files of other programs, sample output and layouts; not run.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import { chromium, type Browser } from 'playwright-core';
import { TIMEOUT_MS, describeWith, startServer } from './helpers';
import type { Server } from '../src/index';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const CHROMIUM = process.env.STARLING_CHROMIUM || '/usr/bin/chromium';
const MARKER = /^<!--\s*snippet:\s*(browser|skip\s*\((.+)\))\s*-->$/;

interface Snippet {
  file: string; // relative to the repository: README.md, docs/limits.md
  line: number; // of the opening fence
  lang: string;
  code: string;
  browser: boolean;
  skip: string | null;
}

/** Every fenced block of `file`, with its marker. A marker that is not one of the two forms is an error. */
export function extractSnippets(file: string, text: string): Snippet[] {
  const lines = text.split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```\s*([\w-]*)/.exec(lines[i]);
    if (!open) continue;
    let end = i + 1;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end])) end++;
    if (end === lines.length) throw new Error(`${file}:${i + 1}: the code block is not closed`);
    let prev = i - 1;
    while (prev >= 0 && lines[prev].trim() === '') prev--;
    let browser = false;
    let skip: string | null = null;
    if (prev >= 0 && /^<!--\s*snippet/.test(lines[prev].trim())) {
      const m = MARKER.exec(lines[prev].trim());
      if (!m) throw new Error(`${file}:${prev + 1}: unknown snippet marker ${lines[prev].trim()} (browser, or skip (reason))`);
      if (m[1] === 'browser') browser = true;
      else skip = m[2].trim();
    }
    out.push({ file, line: i + 1, lang: open[2].toLowerCase(), code: lines.slice(i + 1, end).join('\n'), browser, skip });
    i = end;
  }
  return out;
}

function allSnippets(): Snippet[] {
  const files = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
  return files.flatMap((f) => extractSnippets(f, fs.readFileSync(path.join(ROOT, f), 'utf8')));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** The documented rewrites: the address of the test's server for a client, a free port for a server. */
async function rewrite(code: string, server: Server): Promise<string> {
  if (/\bcreateServer\b/.test(code)) {
    const port = await freePort();
    return code.replace(/:8800\b/g, `:${port}`);
  }
  const port = server.addresses[0].port;
  const monitor = server.monitor?.url ? new URL(server.monitor.url).host : '127.0.0.1:8900';
  return code.replace(/\b(localhost|127\.0\.0\.1):8800\b/g, `127.0.0.1:${port}`).replace(/\b(localhost|127\.0\.0\.1):8900\b/g, monitor);
}

/** A folder where `import ... from 'starling'` and `from 'ws'` resolve as after `npm install starling ws`. */
function projectDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-snippet-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'starling'));
  fs.symlinkSync(path.join(ROOT, 'node_modules', 'ws'), path.join(dir, 'node_modules', 'ws'));
  return dir;
}

function where(s: Snippet): string {
  return `${s.file}:${s.line}`;
}

/** Runs an ES module in Node; resolves with its exit code and output (killed after TIMEOUT_MS). */
function runNode(file: string, cwd: string): Promise<{ code: number | null; signal: string | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

async function runInNode(s: Snippet, server: Server): Promise<void> {
  let code = await rewrite(s.code, server);
  if (s.lang === 'ts') {
    code = ts.transpileModule(code, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      reportDiagnostics: false,
    }).outputText;
  }
  const dir = projectDir();
  try {
    fs.writeFileSync(path.join(dir, 'snippet.mjs'), code);
    const r = await runNode('snippet.mjs', dir);
    if (r.code !== 0) {
      assert.fail(
        `${where(s)}: the ${s.lang} snippet does not run in Node ${process.version} ` +
          `(${r.signal ? `killed after ${TIMEOUT_MS} ms: it did not finish` : `exit code ${r.code}`}):\n${r.output}`,
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** One line of a sh block: the argv to run, or why it is not run. */
export function shLine(line: string): { argv: string[] } | { notRun: string } {
  const words = line.split(/\s+/).filter(Boolean);
  if (words[0] === 'npx') words.shift();
  if (words[0] !== 'starling') return { notRun: `not a starling command (${words[0]})` };
  if (/[|&;<>$`()]/.test(line) || /\[|\.\.\./.test(line)) return { notRun: 'pipes, redirections or placeholders' };
  const args = words.slice(1);
  const readOnly =
    args.includes('--help') ||
    (args[0] === 'config' && args.includes('--print')) ||
    args[0] === 'doctor' ||
    (args[0] === 'tune' && args.includes('--print') && !args.includes('--apply'));
  if (!readOnly) return { notRun: `starling ${args[0]} changes the machine or runs until stopped` };
  return { argv: args.map((a) => a.replace(/^(['"])(.*)\1$/, '$2')) };
}

function runSh(s: Snippet, t: { diagnostic(m: string): void }): number {
  const joined = s.code.replace(/\\\n/g, ' ').split('\n');
  let ran = 0;
  joined.forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    if (!line) return;
    const at = `${s.file}:${s.line + 1 + i}`;
    const what = shLine(line);
    if ('notRun' in what) {
      t.diagnostic(`${at}: not run: ${line} (${what.notRun})`);
      return;
    }
    const r = spawnSync(process.execPath, [CLI, ...what.argv], { cwd: ROOT, encoding: 'utf8', timeout: TIMEOUT_MS, env: { ...process.env, CI: undefined } });
    const ok = r.status === 0 || (what.argv[0] === 'doctor' && r.status === 1);
    if (!ok) assert.fail(`${at}: \`${line}\` exits with ${r.status ?? r.signal}:\n${r.stdout}${r.stderr}`);
    ran++;
  });
  return ran;
}

const SNIPPETS = allSnippets();
let server: Server;

before(async () => {
  server = startServer({ 'Stats.LogInterval': 5, Monitor: 'HTTP', 'MonitorHTTP.Listen': '127.0.0.1:0' });
  await server.monitor!.ready; // its address is rewritten into the snippets
});

describe('documented snippets (README.md, docs/*.md)', { timeout: 10 * TIMEOUT_MS }, () => {
  it('finds the code blocks, and the README has a Node client that needs no global WebSocket', () => {
    assert.ok(SNIPPETS.length > 20, `only ${SNIPPETS.length} code blocks found`);
    const nodeClients = SNIPPETS.filter((s) => s.file === 'README.md' && s.lang === 'js' && !s.browser && !s.skip);
    assert.ok(nodeClients.some((s) => /from 'ws'/.test(s.code)), 'README.md has no Node client using the ws package');
  });

  it('the marker and fence rules', () => {
    const md = ['<!-- snippet: skip (a synopsis) -->', '```sh', 'starling x [y]', '```', '', '<!-- snippet: browser -->', '', '```js', 'x', '```'].join('\n');
    const got = extractSnippets('t.md', md);
    assert.deepEqual(
      got.map((s) => [s.line, s.lang, s.skip, s.browser]),
      [
        [2, 'sh', 'a synopsis', false],
        [8, 'js', null, true],
      ],
    );
    assert.throws(() => extractSnippets('t.md', '<!-- snippet: skip -->\n```sh\nx\n```'), /t\.md:1: unknown snippet marker/);
    assert.throws(() => extractSnippets('t.md', '```sh\nx\n'), /t\.md:1: the code block is not closed/);
    assert.deepEqual(shLine('starling config --print --config starling.conf'), { argv: ['config', '--print', '--config', 'starling.conf'] });
    assert.ok('notRun' in shLine('sudo starling tune --apply'));
    assert.ok('notRun' in shLine('starling tune --print --role server | sudo tee x'));
    assert.ok('notRun' in shLine('starling serve --config starling.conf'));
  });

  for (const s of SNIPPETS.filter((x) => !x.browser)) {
    const name = `${where(s)} ${s.lang || 'text'}`;
    if (s.skip) {
      it(name, { skip: `marked: ${s.skip}` }, () => {});
    } else if (s.lang === 'js' || s.lang === 'ts') {
      it(`${name} in Node`, () => runInNode(s, server));
    } else if (s.lang === 'sh') {
      it(`${name}: the starling commands that only read`, (t) => {
        const ran = runSh(s, t);
        t.diagnostic(`${ran} line(s) run`);
      });
    } else if (s.lang === 'json') {
      it(name, () => {
        try {
          JSON.parse(s.code);
        } catch (e) {
          assert.fail(`${where(s)}: the json block does not parse: ${(e as Error).message}`);
        }
      });
    } else {
      it(name, { skip: 'not code to run (a file of another program, sample output or a layout)' }, () => {});
    }
  }
});

const NEEDS = { program: 'chromium', path: fs.existsSync(CHROMIUM) ? CHROMIUM : null, install: 'apt-get install chromium' };

describeWith(NEEDS, 'documented browser snippets in headless Chromium', { timeout: 10 * TIMEOUT_MS }, () => {
  let browser: Browser;
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  });
  after(async () => {
    await browser?.close();
  });

  for (const s of SNIPPETS.filter((x) => x.browser && !x.skip)) {
    it(`${where(s)} ${s.lang} in the browser`, async () => {
      assert.equal(s.lang, 'js', `${where(s)}: a browser snippet must be js`);
      const page = await browser.newPage();
      try {
        const logged: string[] = [];
        const errors: string[] = [];
        page.on('console', (m) => (m.type() === 'error' ? errors : logged).push(m.text()));
        page.on('pageerror', (e) => errors.push(e.message));
        await page.addScriptTag({ content: await rewrite(s.code, server) });
        const deadline = Date.now() + TIMEOUT_MS;
        while (logged.length === 0 && errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual(errors, [], `${where(s)}: the browser snippet raised errors`);
        assert.ok(logged.length > 0, `${where(s)}: the browser snippet logged nothing within ${TIMEOUT_MS} ms`);
      } finally {
        await page.close();
      }
    });
  }
});
