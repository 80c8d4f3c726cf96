/**
 * Memory vs depth: for a config whose last stage gets `extra` more reversible blocks, the bytes the
 * backward pass retains (the pullback's residuals) and the peak live bytes of forward + backward,
 * in 'reversible' and in 'store' mode.
 */
import { vjp } from '../autodiff/tape.ts';
import { leaves } from '../autodiff/pytree.ts';
import { measureMemory } from '../backend/memory.ts';
import type { MViTConfig } from '../models/mvit/config.ts';
import { buildModel, type MViTModel } from '../models/mvit/model.ts';
import { foldIn, key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { crossEntropy } from '../train/loss.ts';
import { NUM_CLASSES as MOVING_MNIST_CLASSES } from '../data/clips.ts';
import { movingMnistBatches } from '../data/moving-mnist.ts';

export interface MemoryRow {
  readonly extra: number;
  /** MVIT.DEPTH of the measured model. */
  readonly depth: number;
  /** Number of reversible blocks (layers that are not stage transitions). */
  readonly reversibleBlocks: number;
  readonly retained: Record<Mode, number>;
  readonly peak: Record<Mode, number>;
}

/** The config with `extra` more layers at the end, i.e. in its last stage (stage boundaries are at fixed layer indices). */
export function deepen(cfg: MViTConfig, extra: number): MViTConfig {
  return { ...cfg, MVIT: { ...cfg.MVIT, DEPTH: cfg.MVIT.DEPTH + extra } };
}

const reversibleCount = (model: MViTModel): number => model.geometry.layers.filter((l) => l.kind === 'reversible').length;

export function measureMemoryRow(cfg: MViTConfig, extra: number, batch: number, seed = 0): MemoryRow {
  const c = deepen(cfg, extra);
  const model = buildModel(c);
  const root = key(seed);
  const params = model.init(foldIn(root, 0));
  const clips = movingMnistBatches(c)(foldIn(root, 1), 'train', batch);
  // Moving-MNIST has 40 classes; any other head gets its labels folded into range.
  const x = clips.x;
  const labels = c.MODEL.NUM_CLASSES === MOVING_MNIST_CLASSES ? clips.labels : clips.labels.map((l) => l % c.MODEL.NUM_CLASSES);
  const k = foldIn(root, 2);
  const retained = {} as Record<Mode, number>;
  const peak = {} as Record<Mode, number>;
  for (const mode of ['reversible', 'store'] as const) {
    const loss = (p: unknown): Tensor => crossEntropy(model.apply(p as never, x, k, { train: true, mode }), labels);
    const report = measureMemory(
      () => {
        const [out, pullback] = vjp(loss, params);
        const [g] = pullback();
        return { out, g, residual: pullback.residualBytes };
      },
      (v) => [...leaves(v.g), v.out].map((t) => t.storage),
    );
    retained[mode] = report.value.residual;
    peak[mode] = report.peakBytes;
  }
  return { extra, depth: c.MVIT.DEPTH, reversibleBlocks: reversibleCount(model), retained, peak };
}
