/**
 * Tests that run the CLI as a child process need the compiled library (dist/): rebuilt here when
 * a source file is newer than it, so a test never runs yesterday's code.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect } from 'vitest';
import { newestMtime } from '../src/io/mtime.js';

export const REPO = resolve(import.meta.dirname, '..');
export const BIN = join(REPO, 'bin', 'sam2-lora.js');

/** Builds dist/ when `built` (a file under dist/) is missing or older than any file in src/. */
export function ensureBuilt(label: string, built: string): void {
  if (!existsSync(built) || newestMtime(join(REPO, 'src')) > statSync(built).mtimeMs) {
    console.log(`${label}: building dist/ (tsc -p tsconfig.build.json)`);
    try {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: REPO, stdio: 'pipe' });
    } catch (e) {
      // Type errors still emit; a missing output is what stops the test.
      console.log(`${label}: tsc reported errors:\n${(e as { stdout?: Buffer }).stdout}`);
    }
  }
  expect(existsSync(built), `${built} (npm run build)`).toBe(true);
}
