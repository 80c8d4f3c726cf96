/**
 * gpu.js, loaded on first use. In Node the package (~120 CommonJS files and acorn) is required the
 * first time a kernel is built, so `import 'revgrad'` does not pay for it: most webasm work runs host
 * loops and the wasm GEMM and never needs it. Bundlers targeting browsers get gpujs-browser.ts instead
 * (package.json's `browser` map), which imports it statically.
 */
import type * as GpuJs from 'gpu.js';
import { BackendError } from '../tensor/errors.ts';

export type GpuJsModule = typeof GpuJs;

let loaded: GpuJsModule | null = null;

export function gpujs(): GpuJsModule {
  if (loaded === null) {
    // process.getBuiltinModule (Node >= 20.16) keeps `node:module` out of the static module graph.
    const builtin = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule;
    if (builtin === undefined) throw new BackendError('gpu.js: cannot load it here (no process.getBuiltinModule; Node >= 20.16 is needed, and browsers use the package\'s browser build)');
    const { createRequire } = builtin('node:module') as typeof import('node:module');
    loaded = createRequire(import.meta.url)('gpu.js') as GpuJsModule;
  }
  return loaded;
}
