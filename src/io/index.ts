/** Checkpoint I/O: PyTorch `.pt`, safetensors, PEFT adapters, official weights. */
export { atomicWrite, type WriteData } from './atomic.js';
export {
  CheckpointError, checkStateDict, listCheckpoint, listPickle, readCheckpoint, writeCheckpoint,
  type CheckpointEntry, type ReadOptions, type StateDict, type TensorData, type WriteOptions,
} from './pt.js';
export { PickleError, unpickle, type DType } from './pickle.js';
export { ZipError } from './zip.js';
export { SafetensorsError, readSafetensors, writeSafetensors } from './safetensors.js';
export { PEFT_PREFIX, writePeftAdapter, type PeftAdapter, type PeftLoraConfig } from './peft.js';
export {
  DownloadError, SAM2_SIZES, checkpointUrl, defaultCacheDir, resolveCheckpoint,
  verifySam2Checkpoint, type Sam2Size,
} from './download.js';
