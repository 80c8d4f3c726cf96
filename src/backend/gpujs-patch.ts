/**
 * Runtime fixes for gpu.js 2.24.1's WebAssembly code generator.
 *
 * Literal-type cache bug: `WebAssemblyFunctionNode` fills `literalTypes` during its analysis walk and
 * reuses it on the emission walks, so loop counters such as `for (let i = 0; ...)` are emitted as f32
 * (f32.add, f32.lt and a trunc on every index use). Clearing the cache before each emission pass makes
 * them i32 again; measured 1.4-2x on every loop kernel with identical outputs
 * (see docs/design.md). Small enough to upstream as is.
 */
import { gpujs } from './gpujs.ts';

let applied = false;

export function applyGpuJsPatches(): void {
  if (applied) return;
  applied = true;
  const FunctionNode = gpujs().WebAssemblyFunctionNode as unknown as { prototype: Record<string, unknown> } | undefined;
  if (FunctionNode === undefined) return;
  for (const method of ['emitFunction', 'emitVectorFunction']) {
    const original = FunctionNode.prototype[method] as ((...a: unknown[]) => unknown) | undefined;
    if (typeof original !== 'function') continue;
    FunctionNode.prototype[method] = function (this: { literalTypes: object }, ...args: unknown[]) {
      this.literalTypes = {};
      return original.apply(this, args);
    };
  }
}
