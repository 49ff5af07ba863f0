/**
 * Photos to pixels in the browser: the browser decodes the file (createImageBitmap, no colour
 * conversion, no premultiplication), a canvas hands back RGBA, alpha is dropped (as sharp's
 * removeAlpha in Node). From there the model input is the shared data/pixels.ts code. A PNG
 * decodes to the same pixels everywhere; JPEG decoders may differ by a level or two.
 */
import type { RawImage } from '../../data/pixels.js';

export async function decodePhoto(file: Blob): Promise<RawImage> {
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new Error(`cannot decode this image (${(e as Error).message})`);
  }
  const { width, height } = bmp;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('no 2D canvas to decode the photo');
  ctx.drawImage(bmp, 0, 0);
  bmp.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < data.length; i += 3, j += 4) {
    data[i] = rgba[j];
    data[i + 1] = rgba[j + 1];
    data[i + 2] = rgba[j + 2];
  }
  return { data, width, height, channels: 3 };
}
