/**
 * Raw errno errors ("EISDIR: illegal operation on a directory, read") name neither what we tried
 * to open nor what we expected there. These helpers turn them into one line naming the path, what
 * it should have been and the cause, at each point where we open a user's file or folder.
 */
import { statSync } from 'node:fs';

const CAUSES: Record<string, string> = {
  ENOENT: 'it does not exist',
  EISDIR: 'it is a folder',
  ENOTDIR: 'a part of the path is not a folder',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ELOOP: 'too many levels of symbolic links (a link loop?)',
  EEXIST: 'it already exists',
  ENAMETOOLONG: 'the name is too long',
  EMFILE: 'too many open files',
  ENOSPC: 'no space left on the device',
  EROFS: 'the file system is read-only',
};

export class FileError extends Error {
  constructor(
    readonly path: string,
    message: string,
    readonly code?: string,
  ) {
    super(`${path}: ${message}`);
    this.name = 'FileError';
  }
}

/** "it does not exist (ENOENT)" for an errno error; any other error's message. */
export function causeOf(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code && CAUSES[code] ? `${CAUSES[code]} (${code})` : (e as Error)?.message ?? String(e);
}

/** "cannot open it as <expected>: <cause> (<CODE>)" for an errno error (any other error's message). */
export function describeOpenError(e: unknown, expected: string, verb = 'open'): string {
  return `cannot ${verb} it as ${expected}: ${causeOf(e)}`;
}

/**
 * Why `path` is not a readable folder ('not found', 'a file, not a folder', a link loop...), or
 * null when it is one.
 */
export function folderProblem(path: string): string | null {
  try {
    if (statSync(path).isDirectory()) return null;
    return 'is a file, not a folder';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'not found';
    return `cannot be opened: ${causeOf(e)}`;
  }
}

/** Wraps an errno error into a FileError naming `path` and what was expected; others pass through. */
export function fileError(path: string, e: unknown, expected: string, verb = 'open'): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (!code) return e as Error;
  return new FileError(path, describeOpenError(e, expected, verb), code);
}

/**
 * Checks that `path` is what we are about to read: `kind` 'file' or 'folder'. Throws a FileError
 * saying what it is instead (missing, a folder, a file, a link loop, unreadable).
 */
export function expectPath(path: string, kind: 'file' | 'folder', expected: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw fileError(path, e, expected);
  }
  if (kind === 'file' && st.isDirectory()) {
    throw new FileError(path, `expected ${expected}, but it is a folder`, 'EISDIR');
  }
  if (kind === 'folder' && !st.isDirectory()) {
    throw new FileError(path, `expected ${expected} (a folder), but it is a file`, 'ENOTDIR');
  }
}
