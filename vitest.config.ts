import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // bench/ imports the library as `#src/...` (package.json "imports": dist/ at run time): the
  // sources here, as in the typecheck.
  resolve: {
    alias: [{ find: /^#src\/(.*)$/, replacement: `${fileURLToPath(new URL('./src/', import.meta.url))}$1` }],
  },
  test: {
    include: ['kernels-test/**/*.test.ts'],
    // One WebGPU device per file; lavapipe already uses every core, so run files one at a time.
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 300_000,
    hookTimeout: 120_000,
    // CI reads the JSON report for its closing `N passed, N failed` line.
    reporters: process.env.CI ? ['default', 'json'] : ['default'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
