/**
 * Choosing a backend: `await selectBackend('auto')` picks the fastest one that works here and makes it
 * current; `await selectBackend('webgpu')` asks for one and falls back to webasm with the reason when it
 * cannot run. The environment variable REVGRAD_BACKEND (webasm | cpu | webgpu | webgl2 | auto) overrides
 * the request in Node.
 *
 * 'auto' policy (the same in Node and in browsers):
 *  1. webgpu, when a *hardware* adapter answers. A software adapter (Mesa llvmpipe, SwiftShader, WARP)
 *     runs gpu.js kernels far slower than webasm (~1.4 vs 5-7 GFLOP/s on a 512 matmul here), so it is
 *     never picked automatically; ask for it by name (tests do).
 *  2. webgl2, in a browser whose WebGL2 renderer is hardware (same rule).
 *  3. webasm (WebAssembly SIMD), else cpu.
 *
 * `chooseBackend` is the pure decision over injected probes, so the policy is unit-tested with fake
 * adapter descriptions; `selectBackend` wires in the real probes and calls setBackend.
 */
import { BACKENDS, setBackend, type BackendName } from './backend.ts';
import { describeAdapter, initWebGPU, isSoftwareAdapter, type AdapterDescription, type WebGPUStatus } from './webgpu-node.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { wasmSimdAvailable } from './wasm-builder.ts';

export type BackendRequest = BackendName | 'auto';

export interface Probes {
  /** Set up WebGPU and describe its adapter (see initWebGPU). */
  readonly webgpu: () => Promise<WebGPUStatus>;
  /** The WebGL2 renderer string, or null where there is no WebGL2 (Node). */
  readonly webgl2: () => string | null;
  /** Whether WebAssembly with SIMD runs here. */
  readonly webasm: () => boolean;
}

export interface Selection {
  readonly backend: BackendName;
  /** Why: the adapter or renderer used, or why the request fell back. */
  readonly reason: string;
  /** True when the backend differs from an explicit request (the reason says why). */
  readonly fellBack: boolean;
  readonly adapter?: AdapterDescription;
}

export interface SelectOptions {
  /** Let 'auto' take a software WebGPU adapter or WebGL2 renderer (default false). */
  readonly allowSoftware?: boolean;
  /** Environment to read REVGRAD_BACKEND from (default process.env in Node, none in browsers). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Replace the real probes (tests). */
  readonly probes?: Partial<Probes>;
  /** Report fallbacks with console.warn (default true). */
  readonly warn?: boolean;
}

const SOFTWARE_RENDERER = /llvmpipe|lavapipe|softpipe|swiftshader|software|basic render/i;

const parseRequest = (v: string): BackendRequest | null =>
  v === 'auto' || (BACKENDS as readonly string[]).includes(v) ? (v as BackendRequest) : null;

/** The decision alone: which backend `request` resolves to with these probes. Does not change the current backend. */
export async function chooseBackend(request: BackendRequest, probes: Probes, options: SelectOptions = {}): Promise<Selection> {
  const allowSoftware = options.allowSoftware === true;
  const hostFallback = (why: string, explicit: boolean): Selection => {
    const backend: BackendName = probes.webasm() ? 'webasm' : 'cpu';
    return { backend, reason: `${why}; using ${backend}`, fellBack: explicit };
  };
  switch (request) {
    case 'cpu':
      return { backend: 'cpu', reason: 'requested', fellBack: false };
    case 'webasm':
      return probes.webasm()
        ? { backend: 'webasm', reason: 'requested', fellBack: false }
        : { backend: 'cpu', reason: 'WebAssembly SIMD is not available here; using cpu', fellBack: true };
    case 'webgpu': {
      const s = await probes.webgpu();
      if (!s.ok) return hostFallback(`webgpu was requested but cannot run: ${s.reason}`, true);
      return { backend: 'webgpu', reason: `requested; adapter ${describeAdapter(s.adapter)}`, fellBack: false, adapter: s.adapter };
    }
    case 'webgl2': {
      const renderer = probes.webgl2();
      if (renderer === null) return hostFallback('webgl2 was requested but this environment has no WebGL2 context', true);
      return { backend: 'webgl2', reason: `requested; renderer ${renderer}`, fellBack: false };
    }
    case 'auto': {
      const notes: string[] = [];
      const s = await probes.webgpu();
      if (s.ok && (allowSoftware || !isSoftwareAdapter(s.adapter))) {
        return { backend: 'webgpu', reason: `auto: WebGPU adapter ${describeAdapter(s.adapter)}`, fellBack: false, adapter: s.adapter };
      }
      notes.push(s.ok ? `WebGPU adapter ${describeAdapter(s.adapter)} (not picked automatically)` : `no WebGPU (${s.reason})`);
      const renderer = probes.webgl2();
      if (renderer !== null && (allowSoftware || !SOFTWARE_RENDERER.test(renderer))) {
        return { backend: 'webgl2', reason: `auto: ${notes.join('; ')}; WebGL2 renderer ${renderer}`, fellBack: false };
      }
      if (renderer !== null) notes.push(`WebGL2 renderer ${renderer} is software (not picked automatically)`);
      const host = hostFallback(`auto: ${notes.join('; ')}`, false);
      return host;
    }
    default:
      throw new ArgumentError('selectBackend', `unknown backend '${String(request)}'; expected auto or one of ${BACKENDS.join(', ')}`);
  }
}

/**
 * Choose a backend (see the policy above) and make it current. REVGRAD_BACKEND, when set, replaces
 * `request`. Explicit requests that cannot run fall back to webasm (or cpu) with a warning; nothing throws
 * for a missing device.
 */
export async function selectBackend(request: BackendRequest = 'auto', options: SelectOptions = {}): Promise<Selection> {
  const env = options.env ?? nodeEnv();
  let chosen = request;
  const forced = env.REVGRAD_BACKEND;
  if (forced !== undefined && forced !== '') {
    const parsed = parseRequest(forced.trim().toLowerCase());
    if (parsed === null) {
      throw new ArgumentError('selectBackend', `REVGRAD_BACKEND='${forced}' is not a backend; expected auto or one of ${BACKENDS.join(', ')}`);
    }
    chosen = parsed;
  }
  const probes: Probes = { webgpu: () => initWebGPU(), webgl2: probeWebGL2, webasm: probeWebAssemblySimd, ...options.probes };
  const selection = await chooseBackend(chosen, probes, options);
  const result = chosen !== request ? { ...selection, reason: `REVGRAD_BACKEND=${forced}: ${selection.reason}` } : selection;
  if (result.fellBack && options.warn !== false) console.warn(`revgrad: ${result.reason}`);
  setBackend(result.backend);
  return result;
}

function nodeEnv(): Readonly<Record<string, string | undefined>> {
  return typeof process !== 'undefined' && typeof process.env === 'object' ? process.env : {};
}

/** The WebGL2 renderer (unmasked where the browser allows), or null without a DOM or WebGL2. */
export function probeWebGL2(): string | null {
  const doc = (globalThis as { document?: { createElement(tag: string): unknown } }).document;
  const offscreen = (globalThis as { OffscreenCanvas?: new (w: number, h: number) => unknown }).OffscreenCanvas;
  let canvas: unknown = null;
  if (doc !== undefined) canvas = doc.createElement('canvas');
  else if (offscreen !== undefined) canvas = new offscreen(1, 1);
  if (canvas === null) return null;
  type GL = { getParameter(p: number): unknown; getExtension(name: string): Record<string, number> | null; RENDERER: number };
  const gl = (canvas as { getContext(kind: string): GL | null }).getContext('webgl2');
  if (gl === null) return null;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = info !== null ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
  return String(renderer);
}

/** WebAssembly with 128-bit SIMD: the webasm backend's probe (`wasmSimdAvailable`, one cached check for the whole library). */
export const probeWebAssemblySimd: () => boolean = wasmSimdAvailable;
