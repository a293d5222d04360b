// Writes the configuration reference generated from schema.ts.
//   node dist/src/config/gendocs.js docs/configuration.md                   write it
//   node dist/src/config/gendocs.js --check docs/configuration.md           exit 1 if it is out of date (CI)
//   node dist/src/config/gendocs.js --check-or-write docs/configuration.md  write it only if it differs (npm prepare)
import * as fs from 'node:fs';
import { renderConfigDocs } from './config';

const USAGE = 'usage: node dist/src/config/gendocs.js [--check | --check-or-write] docs/configuration.md';

function main(args: string[]): number {
  const mode = args.length === 2 ? args[0] : 'write';
  const file = args[args.length - 1];
  if (args.length < 1 || args.length > 2 || !['write', '--check', '--check-or-write'].includes(mode) || file.startsWith('-')) {
    console.error(USAGE);
    return 2;
  }
  const wanted = renderConfigDocs();
  let current: string | undefined;
  try {
    current = fs.readFileSync(file, 'utf8');
  } catch {
    current = undefined;
  }
  if (current === wanted) return 0;
  if (mode === '--check') {
    console.error(
      `${file} is ${current === undefined ? 'missing' : 'out of date'}: it must be generated from src/config/schema.ts.\n` +
        `Run: npx tsc -p . && node dist/src/config/gendocs.js ${file}`,
    );
    return 1;
  }
  fs.writeFileSync(file, wanted);
  if (mode === '--check-or-write') console.log(`${file} updated from src/config/schema.ts`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
