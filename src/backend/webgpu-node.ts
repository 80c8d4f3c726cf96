/**
 * WebGPU for gpu.js: `navigator.gpu` and the adapter behind it.
 *
 * In a browser `navigator.gpu` is already there. Node has none; the optional npm package `webgpu` (Dawn's
 * Node bindings, 0.6.x) provides one. Dawn's Vulkan backend finds nothing usable on our machines, but its
 * OpenGL ES backend over EGL works both on Mesa's llvmpipe (CPU; CI) and on NVIDIA drivers, in WebGPU's
 * *compatibility* feature level (measured: /work/shared/reference/webgpu-node.md). So in Node:
 *
 *     const status = await initWebGPU();   // once, before setBackend('webgpu')
 *     if (status.ok) setBackend('webgpu');
 *
 * or let `selectBackend` (./select.ts) do both. The `webgpu` package is imported dynamically, so the
 * library loads and runs on webasm/cpu where it is not installed.
 *
 * EGL platform: Mesa without a display needs `EGL_PLATFORM=surfaceless`; NVIDIA's EGL (through glvnd)
 * works with the platform left unset. When the variable is unset we try the likely one first (unset on
 * machines with /dev/nvidiactl, surfaceless elsewhere) and the other one if no adapter answers.
 */
import { prepareNavigatorGpu } from './webgpu-device.ts';

/** What an adapter says about itself (GPUAdapterInfo's fields; empty strings where the driver is silent). */
export interface AdapterDescription {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly isFallbackAdapter: boolean;
}

export type WebGPUStatus =
  | { readonly ok: true; readonly adapter: AdapterDescription; readonly software: boolean; readonly source: 'browser' | 'dawn' }
  | { readonly ok: false; readonly reason: string };

/** Dawn backend toggles to try, in order (override with REVGRAD_DAWN_BACKEND=opengles|opengl|vulkan). */
export interface InitOptions {
  readonly dawnBackend?: 'opengles' | 'opengl' | 'vulkan';
}

const SOFTWARE = /llvmpipe|lavapipe|softpipe|swiftshader|software|basic render|warp\b/i;

/** Whether an adapter is a CPU rasteriser (Mesa llvmpipe/lavapipe, SwiftShader, Microsoft WARP). */
export function isSoftwareAdapter(d: AdapterDescription): boolean {
  return d.isFallbackAdapter || SOFTWARE.test(`${d.vendor} ${d.architecture} ${d.device} ${d.description}`);
}

/** One line for logs: "llvmpipe-llvm-15... (OpenGL version OpenGL ES 3.2 Mesa 22.3.6), software". */
export function describeAdapter(d: AdapterDescription): string {
  const name = [d.vendor, d.architecture, d.device].filter((s) => s !== '').join(' ') || 'unnamed adapter';
  return `${name}${d.description !== '' ? ` (${d.description})` : ''}, ${isSoftwareAdapter(d) ? 'software' : 'hardware'}`;
}

interface GPULike {
  requestAdapter(options?: Record<string, unknown>): Promise<AdapterLike | null>;
}
export interface AdapterLike {
  readonly info?: Partial<AdapterDescription>;
}

/** The description of a GPUAdapter (from its `info`). */
export function adapterDescription(adapter: AdapterLike): AdapterDescription {
  const i = adapter.info ?? {};
  return {
    vendor: String(i.vendor ?? ''),
    architecture: String(i.architecture ?? ''),
    device: String(i.device ?? ''),
    description: String(i.description ?? ''),
    isFallbackAdapter: i.isFallbackAdapter === true,
  };
}

const isNode = (): boolean =>
  typeof process !== 'undefined' && typeof process.versions === 'object' && typeof process.versions.node === 'string';

let initPromise: Promise<WebGPUStatus> | null = null;

/**
 * Make `navigator.gpu` available (installing Dawn's in Node) and ask it for an adapter. Idempotent: the
 * first call's answer is cached. Never throws: a missing
 * package, library or adapter gives `{ ok: false, reason }` with the reason in words.
 */
export function initWebGPU(options: InitOptions = {}): Promise<WebGPUStatus> {
  initPromise ??= probe(options).catch((e: unknown) => ({ ok: false as const, reason: `WebGPU initialisation failed: ${errorText(e)}` }));
  return initPromise;
}


const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

async function probe(options: InitOptions): Promise<WebGPUStatus> {
  const nav = (globalThis as { navigator?: { gpu?: GPULike } }).navigator;
  if (nav?.gpu !== undefined) {
    prepareNavigatorGpu();
    const adapter = await nav.gpu.requestAdapter();
    if (adapter === null) return { ok: false, reason: 'navigator.gpu is present but requestAdapter() answered null (no usable WebGPU adapter)' };
    const d = adapterDescription(adapter);
    return { ok: true, adapter: d, software: isSoftwareAdapter(d), source: isNode() ? 'dawn' : 'browser' };
  }
  if (!isNode()) return { ok: false, reason: 'this browser has no navigator.gpu (WebGPU is not available or not enabled)' };
  return probeDawn(options);
}

async function probeDawn(options: InitOptions): Promise<WebGPUStatus> {
  let mod: { create: (flags: string[]) => GPULike; globals: Record<string, unknown> };
  try {
    // A variable specifier keeps bundlers from trying to resolve the optional native package.
    const name = 'webgpu';
    mod = (await import(name)) as typeof mod;
  } catch (e) {
    return { ok: false, reason: `the optional package 'webgpu' (Dawn for Node) could not be loaded: ${errorText(e)}; install it with 'npm install webgpu@0.6.2'` };
  }
  const env = process.env;
  const backend = options.dawnBackend ?? (env.REVGRAD_DAWN_BACKEND as InitOptions['dawnBackend']) ?? 'opengles';
  const featureLevel = backend === 'vulkan' ? 'core' : 'compatibility'; // the GL backends are compatibility-only
  const platforms: (string | undefined)[] = env.EGL_PLATFORM !== undefined
    ? [env.EGL_PLATFORM]
    : (await hasNvidiaDevice()) ? [undefined, 'surfaceless'] : ['surfaceless', undefined];
  Object.assign(globalThis, mod.globals);
  const tried: string[] = [];
  for (const platform of platforms) {
    if (platform === undefined) delete env.EGL_PLATFORM;
    else env.EGL_PLATFORM = platform;
    let gpu: GPULike;
    try {
      gpu = mod.create([`backend=${backend}`]);
    } catch (e) {
      return { ok: false, reason: `Dawn could not start (backend=${backend}): ${errorText(e)}` };
    }
    const request = gpu.requestAdapter.bind(gpu);
    gpu.requestAdapter = (o: Record<string, unknown> = {}) => request({ featureLevel, ...o });
    const adapter = await gpu.requestAdapter();
    tried.push(`EGL_PLATFORM=${platform ?? '(unset)'}`);
    if (adapter !== null) {
      Object.defineProperty(globalThis, 'navigator', {
        value: { ...((globalThis as { navigator?: object }).navigator ?? {}), gpu },
        configurable: true,
        writable: true,
      });
      prepareNavigatorGpu();
      const d = adapterDescription(adapter);
      return { ok: true, adapter: d, software: isSoftwareAdapter(d), source: 'dawn' };
    }
  }
  return {
    ok: false,
    reason:
      `Dawn (backend=${backend}) found no WebGPU adapter (tried ${tried.join(', ')}). ` +
      'On Linux it needs EGL: apt-get install libegl1 libegl-dev libegl-mesa0 libgles2 libgl1-mesa-dri (Mesa) or an NVIDIA driver with glvnd',
  };
}

async function hasNvidiaDevice(): Promise<boolean> {
  try {
    const name = 'node:fs';
    const fs = (await import(name)) as typeof import('node:fs');
    return fs.existsSync('/dev/nvidiactl');
  } catch {
    return false;
  }
}
