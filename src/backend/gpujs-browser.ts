/** gpu.js for bundles (package.json's `browser` map puts this file in place of gpujs.ts): a static import. */
import * as GpuJs from 'gpu.js';

export type GpuJsModule = typeof GpuJs;

export const gpujs = (): GpuJsModule => GpuJs;
