/**
 * The entry of the one-file browser bundle (dist/revgrad.browser.js, `npm run build:browser`): the
 * package's main entry, which runs in browsers as is (its module graph has no node: built-ins). In a page:
 *
 *     import * as R from './revgrad.browser.js';
 *     const chosen = await R.selectBackend('auto');   // webgpu on a hardware adapter, else webgl2, else webasm/cpu
 *     const y = R.matmul(a, b);
 *     console.log(await y.data());                     // webgpu results arrive asynchronously
 */
export * from './index.ts';
