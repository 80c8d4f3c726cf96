/**
 * The browser entry (dist/revgrad.browser.js, `npm run build:browser`): the whole public API of
 * src/index.ts plus backend selection and WebGPU set-up. In a page:
 *
 *     import * as R from './revgrad.browser.js';
 *     const chosen = await R.selectBackend('auto');   // webgpu on a hardware adapter, else webgl2, else webasm/cpu
 *     const y = R.matmul(a, b);
 *     console.log(await y.data());                     // webgpu results arrive asynchronously
 *
 * Node-only functions (file IO: readSafetensorsFile, loadWeights, ...) are present but throw when
 * called in a browser; decodeSafetensors / encodeSafetensors work on bytes everywhere.
 */
export * from './index.ts';
export { selectBackend, chooseBackend, probeWebGL2, probeWebAssemblySimd, type BackendRequest, type Selection, type SelectOptions, type Probes } from './backend/select.ts';
export { initWebGPU, isSoftwareAdapter, describeAdapter, type AdapterDescription, type WebGPUStatus } from './backend/webgpu-node.ts';
