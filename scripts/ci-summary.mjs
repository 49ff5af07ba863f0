// Prints the closing `N passed, N failed, N skipped` line from vitest's JSON report.
// A file that failed to load counts as one failure (vitest reports it with no tests).
import { existsSync, readFileSync } from 'node:fs';

const path = process.argv[2] ?? 'test-results/vitest.json';
if (!existsSync(path)) {
  console.log('0 passed, 1 failed');
  console.error(`ci-summary: no report at ${path}`);
  process.exit(1);
}
const r = JSON.parse(readFileSync(path, 'utf8'));
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of r.testResults ?? []) {
  const tests = file.assertionResults ?? [];
  if (tests.length === 0 && file.status === 'failed') failed++;
  for (const t of tests) {
    if (t.status === 'passed') passed++;
    else if (t.status === 'failed') failed++;
    else skipped++;
  }
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
