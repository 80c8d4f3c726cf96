/**
 * webgpu device plans in Node (Dawn over Mesa llvmpipe): the device counters, the tiled WGSL matmul,
 * every op as a plan step, a Rev-MViT AdamW step compiled for the device (DeviceTrainer) and jit(step)
 * on the webgpu backend, each replayed with at most 4 submissions and one readback per step
 * (test/plan-laws.ts; the browser test runs the same laws in Chromium).
 *
 * Skips, with the reason printed, where the optional `webgpu` package or an EGL library is missing.
 * PLAN_LAW_SAMPLES sets the generated cases per op (default 1).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeAdapter, initWebGPU } from '../src/backend/webgpu-node.ts';
import { countWebGPU } from '../src/backend/webgpu-device.ts';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import { denseConvLaw, reduceLaw, specialValuesLaw, fusedLaw, jitStepLaw, matmulLaw, planOpLaws, sharedReadLaw, stepLaw, tunedPlanLaw, type PlanLawResult } from './plan-laws.ts';

const status = await initWebGPU();
const samples = Math.max(1, Number(process.env.PLAN_LAW_SAMPLES ?? '1') || 1);
const report = (r: PlanLawResult): string => `  [plan] ${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.ms.toFixed(0)} ms): ${r.detail}`;

if (!status.ok) {
  console.log(`webgpu-plan.test.ts: SKIPPED, no WebGPU in Node: ${status.reason}`);
  test.skip('webgpu plans (no adapter)', () => {});
} else {
  console.log(`webgpu-plan.test.ts: adapter ${describeAdapter(status.adapter)}`);

  test('counters: an eager chain submits per kernel and reads back once; a repeat compiles nothing', async () => {
    const a = R.tensor([1, 2, 3, 4], [2, 2]);
    const chain = () => withBackend('webgpu', () => R.exp(R.add(R.mul(a, a), 1))).data();
    const first = await countWebGPU(chain);
    [1, 2, 3, 4].forEach((v, i) => assert.ok(Math.abs(first.value[i] / Math.exp(v * v + 1) - 1) < 1e-6, `exp(${v}² + 1) = ${first.value[i]}`));
    const again = await countWebGPU(chain);
    assert.is(again.counts.dispatches, 3);
    assert.is(again.counts.submits, 3 + 1, 'one submission per kernel, one for the readback copy');
    assert.is(again.counts.readbacks, 1);
    assert.is(again.counts.readbackBytes, 16);
    assert.is(again.counts.pipelines, 0);
    assert.ok(first.counts.pipelines >= 3, `the first run compiles its 3 kernels (${first.counts.pipelines})`);
  });

  /** A plan law as a test: its report printed, its failure the test's. */
  const lawTest = (name: string, run: () => Promise<PlanLawResult>) =>
    test(name, async () => {
      const r = await run();
      console.log(report(r));
      assert.ok(r.ok, report(r));
    });

  lawTest('tiled WGSL matmul, whole and split-K, equals float64 and the gpu.js kernel, the same bits on every tiling', () => matmulLaw(6 * samples));
  lawTest('a plan tuned on the device (every tiling timed per product, split-K included) = the untuned plan, bit for bit', () => tunedPlanLaw());
  lawTest('reductions on every path (long columns in parts and a second pass) equal float64, NaN kept by max', () => reduceLaw(4 * samples));
  lawTest('NaN and infinities through fused WGSL maps (maximum, minimum, arithmetic) as eager webasm', () => specialValuesLaw());
  lawTest('dense convolutions as im2col and the tiled matmul (forward, dx, dw) equal eager webasm', () => denseConvLaw(4 * samples));
  lawTest('fused elementwise groups (broadcasts, offsets, constants, op chains) as one WGSL kernel equal the host', () => fusedLaw(6 * samples));
  lawTest('a value a kernel reads twice (a fused group at two strides, matmul(a, a)) is bound once and gives eager\'s values', () => sharedReadLaw(4 * samples));

  test('every op as a device-plan step equals eager webasm', async () => {
    // layerNorm with weight and bias (the fused primitive the training step uses) in more cases: one
    // sample may draw the variant without them.
    const results = [...(await planOpLaws({ samples })), ...(await planOpLaws({ samples: 4, only: ['layerNorm'] }))];
    results.filter((r) => !r.ok || /gpu\.js/.test(r.detail)).forEach((r) => console.log(report(r)));
    console.log(`  [plan] ops: ${results.filter((r) => r.ok).length}/${results.length}`);
    assert.ok(results.length >= 40, `expected the ~45 OP_CASES, got ${results.length}`);
    const bad = results.filter((r) => !r.ok);
    assert.is(bad.length, 0, bad.map(report).join('\n'));
  });

  test('a Rev-MViT AdamW step compiled for the device (DeviceTrainer): <= 4 submissions, 1 readback, no new pipelines or buffers per step, = the eager library step, every op a WGSL kernel', async () => {
    const r = await stepLaw();
    console.log(report(r));
    assert.ok(r.ok, report(r));
    // A gpu.js kernel in a plan is slow (row ops recompute their statistics per element) and keeps
    // buffers of its own: a primitive the step uses needs a WGSL form (OpImpl.wgsl).
    assert.equal(r.gpujsOps, [], `ops of the step without a WGSL kernel: ${JSON.stringify(r.gpujsOps)}`);
  });

  test('with dropout and drop path: the masks drawn on the host from each step\'s key equal eager mode\'s', async () => {
    const r = await stepLaw({ dropout: true });
    console.log(report(r));
    assert.ok(r.ok, report(r));
  });

  test('jit(step) on webgpu: parameters stay on the device, <= 4 submissions and 1 readback per step, = eager webasm', async () => {
    const r = await jitStepLaw();
    console.log(report(r));
    assert.ok(r.ok, report(r));
  });
}

test.run();
