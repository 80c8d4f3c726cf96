/**
 * Backend selection (src/backend/select.ts): the 'auto' policy over fake adapter descriptions, explicit
 * requests and their fallbacks, REVGRAD_BACKEND, and one real run of selectBackend here (on this machine's
 * llvmpipe, 'auto' must not pick webgpu; 'webgpu' asked by name must, when an adapter answers).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getBackend, setBackend } from '../src/backend/backend.ts';
import { chooseBackend, selectBackend, type Probes } from '../src/backend/select.ts';
import { initWebGPU, isSoftwareAdapter, type AdapterDescription, type WebGPUStatus } from '../src/backend/webgpu-node.ts';

const adapter = (fields: Partial<AdapterDescription>): AdapterDescription => ({
  vendor: '',
  architecture: '',
  device: '',
  description: '',
  isFallbackAdapter: false,
  ...fields,
});

// Descriptions as the adapters report them (Dawn GL on Mesa and NVIDIA, Chromium's SwiftShader, browsers on GPUs).
const LLVMPIPE = adapter({ device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'OpenGL version OpenGL ES 3.2 Mesa 22.3.6' });
const SWIFTSHADER = adapter({ vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader Device (Subzero)' });
const WARP = adapter({ vendor: 'microsoft', description: 'Microsoft Basic Render Driver' });
const FALLBACK = adapter({ vendor: 'someone', description: 'a CPU adapter', isFallbackAdapter: true });
const H200 = adapter({ device: 'nvidia-h200-pcie', description: 'OpenGL version OpenGL ES 3.2 NVIDIA 580.159.04' });
const APPLE = adapter({ vendor: 'apple', architecture: 'metal-3' });
const AMD = adapter({ vendor: 'amd', architecture: 'rdna-3', description: 'AMD Radeon RX 7900 XTX' });

const ok = (a: AdapterDescription): WebGPUStatus => ({ ok: true, adapter: a, software: isSoftwareAdapter(a), source: 'dawn' });
const none: WebGPUStatus = { ok: false, reason: 'no adapter' };

function probes(webgpu: WebGPUStatus, webgl2: string | null = null, webasm = true): Probes {
  return { webgpu: async () => webgpu, webgl2: () => webgl2, webasm: () => webasm };
}

test('software adapters are recognised by any field, hardware ones are not', () => {
  for (const a of [LLVMPIPE, SWIFTSHADER, WARP, FALLBACK]) assert.ok(isSoftwareAdapter(a), JSON.stringify(a));
  for (const a of [H200, APPLE, AMD]) assert.not.ok(isSoftwareAdapter(a), JSON.stringify(a));
});

test('auto picks webgpu only for a hardware adapter', async () => {
  for (const a of [H200, APPLE, AMD]) {
    const s = await chooseBackend('auto', probes(ok(a)));
    assert.is(s.backend, 'webgpu');
    assert.equal(s.adapter, a);
  }
  for (const a of [LLVMPIPE, SWIFTSHADER, WARP, FALLBACK]) {
    const s = await chooseBackend('auto', probes(ok(a)));
    assert.is(s.backend, 'webasm', `${JSON.stringify(a)} must not win over webasm`);
    assert.match(s.reason, /software/);
    assert.not.ok(s.fellBack);
  }
  assert.is((await chooseBackend('auto', probes(ok(LLVMPIPE)), { allowSoftware: true })).backend, 'webgpu');
});

test('auto without webgpu: hardware webgl2, else webasm, else cpu', async () => {
  assert.is((await chooseBackend('auto', probes(none, 'ANGLE (NVIDIA, NVIDIA GeForce RTX 4090 Direct3D11)'))).backend, 'webgl2');
  assert.is((await chooseBackend('auto', probes(none, 'ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero)), SwiftShader driver)'))).backend, 'webasm');
  assert.is((await chooseBackend('auto', probes(ok(SWIFTSHADER), 'ANGLE (Apple, ANGLE Metal Renderer: Apple M2, Unspecified Version)'))).backend, 'webgl2');
  assert.is((await chooseBackend('auto', probes(none, null))).backend, 'webasm');
  assert.is((await chooseBackend('auto', probes(none, null, false))).backend, 'cpu');
});

test('explicit requests: honoured when they can run, else webasm with the reason', async () => {
  const gpu = await chooseBackend('webgpu', probes(ok(LLVMPIPE)));
  assert.is(gpu.backend, 'webgpu');
  assert.not.ok(gpu.fellBack);
  const missing = await chooseBackend('webgpu', probes({ ok: false, reason: "the optional package 'webgpu' could not be loaded" }));
  assert.is(missing.backend, 'webasm');
  assert.ok(missing.fellBack);
  assert.match(missing.reason, /webgpu was requested but cannot run: the optional package 'webgpu' could not be loaded; using webasm/);
  assert.is((await chooseBackend('webgl2', probes(none, null))).backend, 'webasm');
  assert.is((await chooseBackend('webgl2', probes(none, 'SwiftShader'))).backend, 'webgl2');
  assert.is((await chooseBackend('cpu', probes(none))).backend, 'cpu');
  assert.is((await chooseBackend('webasm', probes(none, null, false))).backend, 'cpu');
});

test('REVGRAD_BACKEND overrides the request; nonsense is an error naming the choices', async () => {
  const previous = getBackend();
  try {
    const s = await selectBackend('auto', { env: { REVGRAD_BACKEND: 'cpu' }, probes: probes(ok(H200)) });
    assert.is(s.backend, 'cpu');
    assert.is(getBackend(), 'cpu');
    assert.match(s.reason, /^REVGRAD_BACKEND=cpu/);
    const g = await selectBackend('webasm', { env: { REVGRAD_BACKEND: 'auto' }, probes: probes(ok(H200)) });
    assert.is(g.backend, 'webgpu');
    const f = await selectBackend('webasm', { env: { REVGRAD_BACKEND: 'webgpu' }, probes: probes(none), warn: false });
    assert.is(f.backend, 'webasm');
    assert.ok(f.fellBack);
    await selectBackend('auto', { env: { REVGRAD_BACKEND: 'cuda' }, probes: probes(none) }).then(
      () => assert.unreachable('accepted REVGRAD_BACKEND=cuda'),
      (e: Error) => assert.match(e.message, /REVGRAD_BACKEND='cuda' is not a backend; expected auto or one of webasm, cpu, webgpu, webgl2/),
    );
  } finally {
    setBackend(previous);
  }
});

test('the real probes here: auto never picks a software adapter; webgpu by name runs where Dawn answers', async () => {
  const previous = getBackend();
  try {
    const status = await initWebGPU();
    const auto = await selectBackend('auto', { env: {} });
    if (status.ok && status.software) assert.is(auto.backend, 'webasm', auto.reason);
    if (status.ok && !status.software) assert.is(auto.backend, 'webgpu', auto.reason);
    const named = await selectBackend('webgpu', { env: {}, warn: false });
    assert.is(named.backend, status.ok ? 'webgpu' : 'webasm', named.reason);
    console.log(`  select: auto -> ${auto.backend} (${auto.reason}); webgpu -> ${named.backend}`);
  } finally {
    setBackend(previous);
  }
});

test.run();
