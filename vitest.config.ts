import { defineConfig } from 'vitest/config';

export default defineConfig({
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
