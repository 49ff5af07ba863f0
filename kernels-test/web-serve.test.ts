/**
 * `sam2-lora web --serve`'s static server: only files inside the site folder (`..` plain or
 * percent-encoded, backslashes, NUL and symlinks out refused), the right MIME types, GET and HEAD
 * only. Checked on resolveRequest and over real HTTP.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SiteServer, mimeType, resolveRequest, serveSite } from '../src/web/serve.js';

let dir: string;
let site: string;
let server: SiteServer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sam2-lora-serve-'));
  site = join(dir, 'site');
  mkdirSync(join(site, 'sub'), { recursive: true });
  writeFileSync(join(site, 'index.html'), '<!doctype html><p>hi</p>');
  writeFileSync(join(site, 'app.js'), 'console.log(1)');
  writeFileSync(join(site, 'site.json'), '{}');
  writeFileSync(join(site, 'encoder.bin'), Buffer.from([1, 2, 3, 4]));
  writeFileSync(join(site, 'sub', 'a b.txt'), 'spaced');
  writeFileSync(join(dir, 'secret.txt'), 'SECRET-CONTENT');
  symlinkSync(join(dir, 'secret.txt'), join(site, 'link.txt'));
  server = await serveSite(site, 0);
});

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

function get(path: string, method = 'GET'): Promise<{ status: number; type?: string; body: string; length?: string }> {
  return new Promise((ok, fail) => {
    // A raw path: no client-side normalisation of `..`.
    const req = request({ host: '127.0.0.1', port: server.port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => ok({ status: res.statusCode!, type: res.headers['content-type'], body,
        length: res.headers['content-length'] }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('web --serve: paths', () => {
  it('maps / to index.html and finds files, percent-decoded', () => {
    expect(resolveRequest(site, '/')).toEqual({ file: join(site, 'index.html') });
    expect(resolveRequest(site, '/sub/a%20b.txt?x=1#y')).toEqual({ file: join(site, 'sub', 'a b.txt') });
  });

  it('refuses every way out of the folder', () => {
    for (const p of ['/../secret.txt', '/sub/../../secret.txt', '/%2e%2e/secret.txt', '/%2E%2E%2Fsecret.txt',
      '/sub/..%2f..%2fsecret.txt', '/..\\secret.txt', '/sub%5c..%5c..%5csecret.txt', '/link.txt']) {
      expect(resolveRequest(site, p), p).toMatchObject({ status: 403 });
    }
    expect(resolveRequest(site, '/%00index.html')).toMatchObject({ status: 400 });
    expect(resolveRequest(site, '/%E0%A4%A')).toMatchObject({ status: 400 });
    expect(resolveRequest(site, '/missing.js')).toMatchObject({ status: 404 });
    expect(resolveRequest(site, '/sub')).toMatchObject({ status: 404 });
  });

  it('names MIME types by extension', () => {
    expect(mimeType('index.html')).toBe('text/html; charset=utf-8');
    expect(mimeType('app.js')).toBe('text/javascript; charset=utf-8');
    expect(mimeType('site.json')).toBe('application/json; charset=utf-8');
    expect(mimeType('encoder.bin')).toBe('application/octet-stream');
    expect(mimeType('shot.PNG')).toBe('image/png');
    expect(mimeType('noext')).toBe('application/octet-stream');
  });
});

describe('web --serve: over HTTP', () => {
  it('serves the site with types and lengths; HEAD has no body', async () => {
    const html = await get('/');
    expect(html).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', body: '<!doctype html><p>hi</p>' });
    expect(await get('/app.js')).toMatchObject({ status: 200, type: 'text/javascript; charset=utf-8' });
    expect(await get('/encoder.bin')).toMatchObject({ status: 200, type: 'application/octet-stream', length: '4' });
    expect(await get('/site.json', 'HEAD')).toMatchObject({ status: 200, body: '', length: '2' });
  });

  it('answers 403 outside, 404 missing, 405 for other methods', async () => {
    expect((await get('/../secret.txt')).status).toBe(403);
    expect((await get('/%2e%2e/secret.txt')).status).toBe(403);
    const link = await get('/link.txt');
    expect(link.status).toBe(403);
    expect(link.body).not.toContain('SECRET');
    expect((await get('/nope.js')).status).toBe(404);
    expect((await get('/index.html', 'POST')).status).toBe(405);
  });

  it('listens on localhost on the port it reports', () => {
    expect(server.url).toBe(`http://localhost:${server.port}/`);
    expect(server.port).toBeGreaterThan(0);
  });
});

describe('sam2-lora web: command checks', () => {
  it('--serve refuses a folder that is not a web export, and mixing --serve with --adapter', async () => {
    const { webCommand } = await import('../src/cli/web.js');
    await expect(webCommand({ serve: join(dir, 'site', 'sub') })).rejects.toThrow(/is not a web export \(no site\.json\)/);
    await expect(webCommand({ serve: site, adapter: 'x' })).rejects.toThrow(/--serve DIR serves an exported site/);
    await expect(webCommand({ adapter: 'x' })).rejects.toThrow(/give --adapter A and --out DIR/);
    await expect(webCommand({ adapter: 'x', out: 'y', weightsDtype: 'f8' })).rejects.toThrow(/--weights-dtype must be f16 or f32/);
  });
});
