// `starling/client` as an installed package is used: from a folder whose node_modules/starling is this checkout,
// `import` gets the ES module build and `require` the CommonJS one (and `starling` itself still resolves both ways),
// and TypeScript finds the declarations under every module resolution a project may use.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-client-package-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
fs.mkdirSync(path.join(dir, 'node_modules', '@types'), { recursive: true });
fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'starling'));
fs.symlinkSync(path.join(ROOT, 'node_modules', '@types', 'node'), path.join(dir, 'node_modules', '@types', 'node'));

function run(args: string[], cwd = dir): string {
  const r = spawnSync(process.execPath, args, { cwd, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `node ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
  return r.stdout.trim();
}

describe('the starling/client package entry', { timeout: 120_000 }, () => {
  it('import gives the ES module build, require the CommonJS one; starling itself resolves both ways', () => {
    const esm = `import * as c from 'starling/client'; import { createServer } from 'starling';
      import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      console.log(typeof c.connect, typeof c.StarlingError, typeof createServer, require.resolve('starling/client'));
      const { connect } = await import('starling/client');
      console.log(connect === c.connect);`;
    const [line, same] = run(['--input-type=module', '-e', esm]).split('\n');
    assert.equal(line, `function function function ${path.join(ROOT, 'dist', 'client', 'cjs', 'index.js')}`);
    assert.equal(same, 'true');
    const cjs = `const c = require('starling/client'); const s = require('starling');
      console.log(typeof c.connect, typeof s.createServer, require.resolve('starling/client'))`;
    assert.equal(run(['-e', cjs]), `function function ${path.join(ROOT, 'dist', 'client', 'cjs', 'index.js')}`);
    const where = `console.log(import.meta.resolve('starling/client'))`;
    assert.equal(run(['--input-type=module', '-e', where]), `file://${path.join(ROOT, 'dist', 'client', 'esm', 'index.js')}`);
  });

  for (const [resolution, module, type] of [
    ['node10', 'commonjs', 'commonjs'],
    ['node16', 'node16', 'commonjs'],
    ['nodenext', 'nodenext', 'module'],
    ['bundler', 'esnext', 'module'],
  ] as const) {
    it(`TypeScript finds the declarations with moduleResolution ${resolution} (a ${type} project)`, () => {
      const project = fs.mkdtempSync(path.join(dir, 'ts-'));
      fs.symlinkSync(path.join(dir, 'node_modules'), path.join(project, 'node_modules'));
      fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ type }));
      fs.writeFileSync(
        path.join(project, 'app.ts'),
        [
          `import { connect, StarlingError, type Message, type ClientEvents } from 'starling/client';`,
          `import { createServer } from 'starling';`,
          `const client = connect({ servers: ['ws://127.0.0.1:8800/'], reconnect: { min: 100 } });`,
          `client.on('resync', (e: ClientEvents['resync']) => e.previous?.seq);`,
          `const text = (m: Message): string => (typeof m.payload === 'string' ? m.payload : String(m.payload.length));`,
          `// @ts-expect-error: history is a number`,
          `client.subscribe('/a', () => {}, { history: 'all' });`,
          `export { client, text, StarlingError, createServer };`,
        ].join('\n'),
      );
      const r = spawnSync(
        process.execPath,
        [TSC, '--noEmit', '--strict', '--moduleResolution', resolution, '--module', module, '--target', 'es2022', '--types', 'node', '--skipLibCheck', 'app.ts'],
        { cwd: project, encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(r.status, 0, `tsc (${resolution}):\n${r.stdout}${r.stderr}`);
    });
  }
});
