import * as R from '../src/index.ts';
import { jit } from '../src/jit/index.ts';
const f = (x: R.Tensor, w: R.Tensor, b: R.Tensor) => R.sum(R.gelu(R.add(R.matmul(x, w), b)));
const x = R.random.normal(R.random.key(1), [4, 8]);
const w = R.random.normal(R.random.key(2), [8, 3]);
const b = R.random.normal(R.random.key(3), [3]);
const g = (x: R.Tensor, w: R.Tensor, b: R.Tensor) => R.valueAndGrad((w: R.Tensor, b: R.Tensor) => f(x, w, b), [0, 1])(w, b);
for (const lowering of ['interpret', 'cpu'] as const) {
  const jf = jit(g, { lowering });
  const [v1, [gw1, gb1]] = jf(x, w, b);
  const [v2, [gw2, gb2]] = jf(x, w, b);
  const [ve, [gwe, gbe]] = g(x, w, b);
  const diff = (a: R.Tensor, b: R.Tensor) => Math.max(...Array.from(a.dataSync(), (v, i) => Math.abs(v - b.dataSync()[i])));
  console.log(lowering, diff(v1, ve), diff(gw1, gwe), diff(gb2, gbe), diff(v2, ve), jf.stats, jf.program(x, w, b).eqns.length);
}
const drop = jit((x: R.Tensor, k: R.random.Key) => R.nn.dropout(R.random.foldIn(k, 3), 0.5, x, { train: true }));
const ones = R.ones([2, 6]);
console.log(Array.from(drop(ones, R.random.key(0)).dataSync()).join(','), drop.stats);
console.log(Array.from(R.nn.dropout(R.random.foldIn(R.random.key(0), 3), 0.5, ones, { train: true }).dataSync()).join(','));
console.log(Array.from(drop(ones, R.random.key(5)).dataSync()).join(','), drop.stats);
console.log(Array.from(R.nn.dropout(R.random.foldIn(R.random.key(5), 3), 0.5, ones, { train: true }).dataSync()).join(','));
