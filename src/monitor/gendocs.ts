// Writes the indicator reference of docs/monitoring.md (the part between DOCS_BEGIN and DOCS_END) from the
// addon's counters and the indicator table. Run it after the native counters change.
//   node dist/src/monitor/gendocs.js docs/monitoring.md           rewrite that part
//   node dist/src/monitor/gendocs.js --check docs/monitoring.md   exit 1 if it is out of date (CI)
import * as fs from 'node:fs';
import { DOCS_BEGIN, DOCS_END, renderIndicatorDocs } from './indicators';

const USAGE = 'usage: node dist/src/monitor/gendocs.js [--check] docs/monitoring.md';

function main(args: string[]): number {
  const check = args[0] === '--check';
  const file = args[args.length - 1];
  if (args.length !== (check ? 2 : 1) || file.startsWith('-')) {
    console.error(USAGE);
    return 2;
  }
  const text = fs.readFileSync(file, 'utf8');
  const begin = text.indexOf(DOCS_BEGIN);
  const end = text.indexOf(DOCS_END);
  if (begin < 0 || end < begin) {
    console.error(`${file}: no generated indicator section (between "${DOCS_BEGIN}" and "${DOCS_END}")`);
    return 1;
  }
  const wanted = text.slice(0, begin) + renderIndicatorDocs() + text.slice(end + DOCS_END.length);
  if (wanted === text) return 0;
  if (check) {
    console.error(`${file}: the indicator reference is out of date. Run: npx tsc -p . && node dist/src/monitor/gendocs.js ${file}`);
    return 1;
  }
  fs.writeFileSync(file, wanted);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
