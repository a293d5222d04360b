// The module graph of the TypeScript sources: no import cycles (type-only imports count too: they still tie
// two modules' designs together), and the package (src/) never depends on the benchmark kit (bench/).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');

/** Every .ts file under `dirs` (relative to ROOT) with the relative imports and re-exports it names, resolved. */
function moduleGraph(dirs: string[]): Map<string, string[]> {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  };
  for (const d of dirs) walk(path.join(ROOT, d));
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    const deps: string[] = [];
    for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+'(\.[^']+)'/gm)) {
      const target = path.resolve(path.dirname(file), m[1]);
      const resolved = [`${target}.ts`, path.join(target, 'index.ts')].find((f) => fs.existsSync(f));
      assert.ok(resolved, `${path.relative(ROOT, file)}: cannot resolve ${m[1]}`);
      deps.push(resolved);
    }
    graph.set(file, deps);
  }
  return graph;
}

/** Each cycle once, as "a.ts -> b.ts -> a.ts" (relative to ROOT). */
function cycles(graph: Map<string, string[]>): string[] {
  const found = new Set<string>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const done = new Set<string>();
  const visit = (node: string): void => {
    stack.push(node);
    onStack.add(node);
    for (const dep of graph.get(node) ?? []) {
      if (onStack.has(dep)) found.add([...stack.slice(stack.indexOf(dep)), dep].map((f) => path.relative(ROOT, f)).join(' -> '));
      else if (!done.has(dep)) visit(dep);
    }
    stack.pop();
    onStack.delete(node);
    done.add(node);
  };
  for (const node of graph.keys()) if (!done.has(node)) visit(node);
  return [...found];
}

describe('module graph', () => {
  const graph = moduleGraph(['src', 'bench', 'test']);

  it('has no import cycles, type-only imports included', () => {
    assert.ok(graph.size > 20, 'found the sources');
    assert.deepEqual(cycles(graph), []);
  });

  it('keeps src/ free of bench/ and test/', () => {
    for (const [file, deps] of graph) {
      if (!path.relative(ROOT, file).startsWith('src' + path.sep)) continue;
      for (const dep of deps) assert.match(path.relative(ROOT, dep), /^src\//, `${path.relative(ROOT, file)} imports ${path.relative(ROOT, dep)}`);
    }
  });

  it('finds a cycle when there is one', () => {
    const a = path.join(ROOT, 'a.ts');
    const b = path.join(ROOT, 'b.ts');
    assert.deepEqual(cycles(new Map([[a, [b]], [b, [a]]])), ['a.ts -> b.ts -> a.ts']);
  });
});
