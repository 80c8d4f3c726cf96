/**
 * Memory of a Rev-MViT training step versus depth, measured with the library's own accounting:
 * bytes retained for the backward pass (the pullback's residuals) and the peak of live bytes during
 * forward + backward, in 'reversible' and 'store' mode. Depth is added as reversible blocks in the
 * last stage, the way deeper Rev-MViTs grow.
 */
import * as E from 'fp-ts/lib/Either.js';
import { vjp } from '../../autodiff/tape.ts';
import { measureMemory } from '../../backend/memory.ts';
import { key } from '../../random/index.ts';
import type { Mode } from '../../reversible/index.ts';
import { mean } from '../../tensor/ops.ts';
import { normal } from '../../random/index.ts';
import { formatProblems, parseConfig, type MViTConfig, type PartialConfig } from './config.ts';
import { buildModel } from './model.ts';
import { PRESETS } from './presets.ts';

export interface MemoryRow {
  readonly depth: number;
  readonly mode: Mode;
  /** Bytes the pullback keeps for the backward pass (params excluded: they are the primals). */
  readonly retainedBytes: number;
  /** Peak live bytes over forward and backward (buffers allocated during the step). */
  readonly peakBytes: number;
}

/** A small Rev-MViT with one stage transition (layer 1) and `depth - 2` reversible blocks around it. */
export function depthConfig(depth: number, base: PartialConfig = PRESETS.REV_MVIT_MINI): MViTConfig {
  const b = base as { MVIT: Record<string, unknown> };
  const cfg = parseConfig({
    ...base,
    MVIT: {
      ...b.MVIT,
      DEPTH: depth,
      DIM_MUL: [[1, 2.0]],
      HEAD_MUL: [[1, 2.0]],
      POOL_Q_STRIDE: [[1, 1, 2, 2]],
      REV: { ...(b.MVIT.REV as object), BUFFER_LAYERS: [1] },
    },
  });
  if (E.isLeft(cfg)) throw new Error(`depthConfig(${depth}):\n${formatProblems(cfg.left)}`);
  return cfg.right;
}

export function measureDepth(cfg: MViTConfig, mode: Mode, batch: number): MemoryRow {
  const model = buildModel(cfg);
  const params = model.init(key(0));
  const [T, S] = [cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE];
  const x = normal(key(1), [batch, cfg.DATA.INPUT_CHANNEL_NUM[0], T, S, S]);
  const loss = (p: unknown) => mean(model.apply(p as never, x, key(2), { train: true, mode }));
  let retainedBytes = 0;
  const report = measureMemory(() => {
    const [, pullback] = vjp(loss, params);
    retainedBytes = pullback.residualBytes;
    return pullback();
  });
  return { depth: cfg.MVIT.DEPTH, mode, retainedBytes, peakBytes: report.peakBytes };
}

export function memoryVsDepth(depths: readonly number[], batch = 2, modes: readonly Mode[] = ['reversible', 'store']): MemoryRow[] {
  return depths.flatMap((d) => modes.map((m) => measureDepth(depthConfig(d), m, batch)));
}

const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

/** A markdown table: depth, retained and peak per mode, and the store/reversible ratios. */
export function formatMemoryTable(rows: readonly MemoryRow[]): string {
  const depths = [...new Set(rows.map((r) => r.depth))];
  const lines = [
    '| depth | retained, reversible | retained, store | ratio | peak, reversible | peak, store | ratio |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const d of depths) {
    const rev = rows.find((r) => r.depth === d && r.mode === 'reversible');
    const st = rows.find((r) => r.depth === d && r.mode === 'store');
    if (!rev || !st) continue;
    lines.push(`| ${d} | ${kib(rev.retainedBytes)} | ${kib(st.retainedBytes)} | ${(st.retainedBytes / rev.retainedBytes).toFixed(1)}x | ${kib(rev.peakBytes)} | ${kib(st.peakBytes)} | ${(st.peakBytes / rev.peakBytes).toFixed(1)}x |`);
  }
  return lines.join('\n');
}
