/**
 * The browser side of test/browser.test.ts: the backend laws (test/backend-laws.ts) in a page, on a
 * backend chosen by the test. Exposed as window.revgradLaws; results are plain JSON.
 */
import * as E from 'fp-ts/lib/Either.js';
import { getBackend, setBackend } from '../../src/backend/backend.ts';
import { chooseBackend, probeWebAssemblySimd, probeWebGL2, selectBackend } from '../../src/backend/select.ts';
import { initWebGPU } from '../../src/backend/webgpu-node.ts';
import { decodeSafetensors } from '../../src/io/safetensors.ts';
import { parseConfig } from '../../src/models/mvit/config.ts';
import { buildModel } from '../../src/models/mvit/model.ts';
import * as R from '../../src/index.ts';
import { fixtureLaw, higherOrderLaws, opLaws, reversibleLaws, type LawResult } from '../backend-laws.ts';
import { denseConvLaw, reduceLaw, specialValuesLaw, fusedLaw, jitStepLaw, matmulLaw, planOpLaws, sharedReadLaw, stepLaw, tunedPlanLaw, type PlanLawResult } from '../plan-laws.ts';

type Backend = 'webgpu' | 'webgl2';

async function environment() {
  const webgpu = await initWebGPU();
  const auto = await chooseBackend('auto', { webgpu: async () => webgpu, webgl2: probeWebGL2, webasm: probeWebAssemblySimd });
  const autoSoftware = await chooseBackend('auto', { webgpu: async () => webgpu, webgl2: probeWebGL2, webasm: probeWebAssemblySimd }, { allowSoftware: true });
  return { webgpu, webgl2: probeWebGL2(), webasmSimd: probeWebAssemblySimd(), auto, autoSoftware };
}

/** A quick end-to-end check on `backend`: values equal webasm's and webgpu results arrive as Promises. */
async function smoke(backend: Backend) {
  const sel = await selectBackend(backend, { warn: false });
  if (sel.backend !== backend) return { ok: false, detail: `selectBackend('${backend}') gave ${sel.backend}: ${sel.reason}` };
  const a = R.tensor(Float32Array.from({ length: 12 }, (_, i) => i / 7), [3, 4]);
  const b = R.tensor(Float32Array.from({ length: 8 }, (_, i) => 1 - i / 5), [4, 2]);
  const y = R.softmax(R.matmul(a, b), -1);
  const pending = y.storage.host === null;
  const got = await y.data();
  setBackend('webasm');
  const want = R.softmax(R.matmul(a, b), -1).dataSync();
  const err = Math.max(...got.map((v, i) => Math.abs(v - want[i])));
  return { ok: err < 1e-6, detail: `softmax(matmul) max |diff| vs webasm ${err.toExponential(2)}; result ${pending ? 'pending (async)' : 'synchronous'}` };
}

async function run(backend: Backend, opts: { samples?: number; fixture?: string } = {}): Promise<{ results: LawResult[]; ms: number; smoke: { ok: boolean; detail: string } }> {
  const t0 = performance.now();
  const previous = getBackend();
  try {
    const smokeResult = await smoke(backend);
    setBackend('webasm');
    const results = [...(await opLaws(backend, { samples: opts.samples ?? 2 })), ...(await reversibleLaws(backend)), ...(await higherOrderLaws(backend))];
    if (opts.fixture !== undefined) {
      const bytes = new Uint8Array(await (await fetch(`/fixtures/${opts.fixture}.safetensors`)).arrayBuffer());
      results.push(await fixtureLaw(backend, opts.fixture, bytes, { decodeSafetensors: decodeSafetensors as never, parseConfig: parseConfig as never, buildModel }));
    }
    return { results, ms: performance.now() - t0, smoke: smokeResult };
  } finally {
    setBackend(previous);
  }
}

// Imported for its side effect in tests that check the bundle loads without Node.
void E;

/** The device-plan laws (test/plan-laws.ts) on this page's WebGPU adapter. */
async function plan(opts: { samples?: number } = {}): Promise<{ results: PlanLawResult[]; ms: number }> {
  const t0 = performance.now();
  const previous = getBackend();
  try {
    await selectBackend('webgpu', { warn: false });
    setBackend('webasm');
    const n = opts.samples ?? 1;
    const results = [await matmulLaw(3 * n), await tunedPlanLaw(), await denseConvLaw(2 * n), await reduceLaw(n), await specialValuesLaw(), await fusedLaw(3 * n), await sharedReadLaw(2 * n), ...(await planOpLaws({ samples: n })), await stepLaw(), await jitStepLaw()];
    return { results, ms: performance.now() - t0 };
  } finally {
    setBackend(previous);
  }
}

(globalThis as Record<string, unknown>).revgradLaws = { environment, run, plan };
document.body.dataset.ready = '1';
