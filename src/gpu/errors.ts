/** Errors the GPU runtime raises; each names what failed so a user never sees a bare Dawn string. */

export class GpuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpuError';
  }
}

/** A validation or internal error Dawn reported for a kernel (wrong binding, bad shader, ...). */
export class KernelError extends GpuError {
  constructor(
    readonly kernel: string,
    readonly detail: string,
  ) {
    super(`GPU error in kernel '${kernel}': ${detail}`);
    this.name = 'KernelError';
  }
}

export class GpuOutOfMemoryError extends GpuError {
  constructor(detail: string) {
    super(`GPU out of memory: ${detail}`);
    this.name = 'GpuOutOfMemoryError';
  }
}

export class GpuLostError extends GpuError {
  constructor(reason: string) {
    super(`GPU device lost: ${reason}. Finished work is kept; restart the command to continue.`);
    this.name = 'GpuLostError';
  }
}

export class NoAdapterError extends GpuError {
  constructor(detail: string) {
    super(`no WebGPU adapter found: ${detail}`);
    this.name = 'NoAdapterError';
  }
}
