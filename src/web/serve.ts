/**
 * `sam2-lora web --serve DIR`: a static file server on localhost for an exported site (WebGPU
 * needs a secure origin: http://localhost is one, and file:// pages cannot fetch their weights).
 * GET and HEAD only; paths are decoded, normalised and must stay inside DIR (symlinks included).
 */
import { createReadStream, realpathSync, statSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { extname, isAbsolute, join, normalize, relative } from 'node:path';

export const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.bin': 'application/octet-stream',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

export function mimeType(path: string): string {
  return MIME[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

const inside = (p: string, root: string) => {
  const r = relative(root, p);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
};

/**
 * The file under `root` a request path names (`/` → index.html), or why not: 400 for a path that
 * does not decode, 403 for one outside `root` (`..`, encoded or not; a symlink out), 404 for none.
 */
export function resolveRequest(
  root: string,
  urlPath: string,
): { file: string } | { status: 400 | 403 | 404; reason: string } {
  let path: string;
  try {
    path = decodeURIComponent(urlPath.split(/[?#]/)[0]);
  } catch {
    return { status: 400, reason: 'malformed path' };
  }
  if (path.includes('\0') || !path.startsWith('/')) return { status: 400, reason: 'malformed path' };
  if (path.endsWith('/')) path += 'index.html';
  const realRoot = realpathSync(root);
  // `..` segments are refused outright (not resolved), as are backslashes (a separator on Windows).
  if (path.split('/').includes('..') || path.includes('\\')) return { status: 403, reason: 'outside the site' };
  const file = normalize(join(realRoot, path));
  if (!inside(file, realRoot)) return { status: 403, reason: 'outside the site' };
  let real: string;
  try {
    real = realpathSync(file);
  } catch {
    return { status: 404, reason: 'not found' };
  }
  if (!inside(real, realRoot)) return { status: 403, reason: 'outside the site' };
  try {
    if (!statSync(real).isFile()) return { status: 404, reason: 'not a file' };
  } catch {
    return { status: 404, reason: 'not found' };
  }
  return { file: real };
}

function handle(root: string, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
    return;
  }
  const r = resolveRequest(root, req.url ?? '/');
  if (!('file' in r)) {
    res.writeHead(r.status, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${r.reason}\n`);
    return;
  }
  const size = statSync(r.file).size;
  res.writeHead(200, {
    'Content-Type': mimeType(r.file),
    'Content-Length': size,
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  createReadStream(r.file).on('error', () => res.destroy()).pipe(res);
}

export interface SiteServer {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves `root` on 127.0.0.1:`port` (0: any free port). */
export async function serveSite(root: string, port = 0): Promise<SiteServer> {
  realpathSync(root); // a missing folder fails now, not on the first request
  const server = createServer((req, res) => handle(root, req, res));
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok());
  });
  const addr = server.address();
  const actual = typeof addr === 'object' && addr ? addr.port : port;
  return {
    server,
    port: actual,
    url: `http://localhost:${actual}/`,
    close: () => new Promise<void>((ok) => {
      server.closeAllConnections();
      server.close(() => ok());
    }),
  };
}
