/** Reaching Redis before queue work, so a wrong URL is one clear error instead of endless retries. */
import { Redis } from 'ioredis';
import { QueueError, connectionFromUrl, safeUrl } from './schema.js';

/** Connects once (5 s), pings, disconnects; throws a QueueError naming the URL and the cause. */
export async function checkReachable(url: string): Promise<void> {
  connectionFromUrl(url);
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  // The socket's error (ECONNREFUSED, ENOTFOUND, ...) says more than connect()'s rejection
  // ("Connection is closed.").
  let cause = '';
  client.on('error', (e: Error) => {
    cause ||= e.message;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (e) {
    throw new QueueError(`cannot reach Redis at ${safeUrl(url)}: ${cause || (e as Error).message || e}`);
  } finally {
    client.disconnect();
  }
}
