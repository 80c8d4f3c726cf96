import { readFileSync } from 'node:fs';
import * as R from './src/index.ts';
import { initWebGPU } from './src/backend/webgpu-node.ts';
import { countWebGPU } from './src/backend/webgpu-device.ts';
import { captureProgram, DeviceProgram } from './src/tensor/plan.ts';
import { parseConfig } from './src/models/mvit/config.ts';
import { buildModel } from './src/models/mvit/model.ts';
import { key, normal, split } from './src/random/index.ts';
import { logSoftmax } from './src/tensor/composite.ts';
import { flattenWithPaths, unflattenLike } from './src/autodiff/pytree.ts';
await initWebGPU();
const cfg = (parseConfig(JSON.parse(readFileSync('bench/revmvit-tiny.json','utf8'))) as any).right;
const model = buildModel(cfg);
const [k0,k1,k2] = split(key(1),3);
const B = 2;
const x = normal(k1, [B,1,8,32,32]);
const p0 = model.init(k0);
const names = flattenWithPaths(p0);
const target = R.tensor(Float32Array.from({length: B*40}, (_, i) => (i % 40 === (Math.floor(i/40)*7)%40 ? 1 : 0)), [B, 40]);
const lr = 0.01;
const stepFn = (inputs: readonly R.Tensor[], state: readonly R.Tensor[]) => {
  const [xb, tb] = inputs;
  const params = unflattenLike(p0, state as R.Tensor[]);
  const [loss, grads] = R.valueAndGrad((q: any) => {
    const logits = model.apply(q, xb, k2, { train: true, mode: 'reversible' });
    return R.mul(R.neg(R.sum(R.mul(logSoftmax(logits, -1), tb))), 1 / B);
  })(params);
  const gs = flattenWithPaths(grads).map(([, g]) => g);
  return { outputs: [loss], state: state.map((p, i) => R.sub(p, R.mul(gs[i], lr))) };
};
let t0 = performance.now();
const cap = captureProgram(stepFn, [x, target], names.map(([, t]) => t), 'tiny-sgd');
console.log('capture', (performance.now()-t0).toFixed(0), 'ms, nodes', cap.program.nodes.length, 'values', cap.program.sizes.length, 'consts', cap.program.constants.length, 'loss', cap.outputs[0].dataSync()[0]);
t0 = performance.now();
const dp = await DeviceProgram.compile(cap.program, names.map(([, t]) => t.dataSync()));
console.log('compile', (performance.now()-t0).toFixed(0), 'ms; dispatches', dp.dispatches, 'bytes', dp.deviceBytes, 'gpujs', [...dp.gpujsOps]);
const xd = x.dataSync(), td = target.dataSync();
// eager reference on webasm: 3 steps
let ps = names.map(([, t]) => t);
const ref: number[] = [];
for (let s = 0; s < 3; s++) { const r = stepFn([x, target], ps); ref.push(r.outputs[0].dataSync()[0]); ps = r.state as R.Tensor[]; }
for (let s = 0; s < 3; s++) {
  t0 = performance.now();
  const r = await countWebGPU(() => dp.run([xd, td]));
  console.log('step', s, r.value[0][0], 'ref', ref[s], (performance.now()-t0).toFixed(0), 'ms', JSON.stringify(r.counts));
}
const w = await dp.readState(0); const wr = ps[0].dataSync();
let e = 0; for (let i = 0; i < w.length; i++) e = Math.max(e, Math.abs(w[i]-wr[i])); console.log('param0 max diff after 3 steps', e);
process.exit(0);
