/**
 * What every command prints about its outputs: `--json PATH|-` means the same everywhere (a file,
 * or `-` for stdout, the human-readable text then going to stderr), and each command closes with
 * one line listing every file it wrote.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** `--json -`: the JSON is the command's stdout. */
export const jsonToStdout = (json: string | undefined): boolean => json === '-';

/**
 * Where the human-readable lines go: stderr when stdout carries the JSON (so `--json - | jq`
 * works), else stdout.
 */
export function humanLog(json: string | undefined): (...a: unknown[]) => void {
  return jsonToStdout(json) ? console.error : console.log;
}

/**
 * Writes `text` to the `--json` target: stdout for `-`, else the file (folders created).
 * Returns the file written, or null for stdout.
 */
export async function writeJsonTarget(json: string, text: string): Promise<string | null> {
  if (jsonToStdout(json)) {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    return null;
  }
  await mkdir(dirname(json), { recursive: true });
  await writeFile(json, text.endsWith('\n') ? text : `${text}\n`);
  return json;
}

/** The closing line: `wrote a, b, c` (or that nothing was written). */
export function wroteLine(files: readonly string[]): string {
  return files.length ? `wrote ${files.join(', ')}` : 'wrote no files';
}
