/**
 * TwoStreamFusion (PySlowFast reversible_mvit.py, spec 3.5): merges the two streams of a reversible
 * stack, x [..., 2C], by an elementwise op on its halves, or keeps the concatenation and adds an MLP
 * of it ("concat_linear", optionally after a LayerNorm: "ln+concat_linear").
 */
import * as E from 'fp-ts/lib/Either.js';
import type { Key } from '../random/index.ts';
import { add, chunk, div, maximum, minimum } from '../tensor/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { TrainFlag } from './dropout.ts';
import { layerNorm, mlp, type MlpParams, type NormParams } from './layers.ts';

/** The fusion's mode; `ratio` and `drop` only exist for the MLP fusions. */
export type FusionMode =
  | { readonly kind: 'add' | 'max' | 'min' | 'avg' | 'concat' }
  | { readonly kind: 'concat_linear'; readonly ratio: number; readonly drop: number; readonly ln: boolean };

const SIMPLE_FUSIONS = ['add', 'max', 'min', 'avg', 'concat'] as const;
/** Python float() literals without inf/nan: what a sane fusion ratio or dropout looks like. */
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/**
 * TwoStreamFusion's mode string (spec 3.5). Stricter than PySlowFast only where PySlowFast would
 * silently accept nonsense (e.g. "xconcat_linear"); every string PySlowFast rejects is rejected too.
 */
export function parseFusionMode(mode: string): E.Either<string, FusionMode> {
  const simple = SIMPLE_FUSIONS.find((kind) => kind === mode);
  if (simple) return E.right({ kind: simple });
  const known = `known modes: ${SIMPLE_FUSIONS.join(', ')}, concat_linear, concat_linear_<m>, concat_linear_<m>_<drop>, each optionally with the prefix "ln+"`;
  const match = /^(ln\+)?concat_linear(.*)$/.exec(mode);
  if (!match) {
    const lnMisuse = mode.startsWith('ln+') ? '; the "ln+" prefix is only understood before concat_linear' : '';
    return E.left(`unknown fusion mode ${JSON.stringify(mode)}: TwoStreamFusion raises NotImplementedError${lnMisuse} (${known})`);
  }
  const suffix = match[2]!;
  const parts = suffix === '' ? [] : suffix.startsWith('_') ? suffix.slice(1).split('_') : undefined;
  if (!parts || parts.length > 2) {
    return E.left(`fusion mode ${JSON.stringify(mode)} does not have the form concat_linear[_<m>[_<drop>]]: TwoStreamFusion raises NotImplementedError for any other number of "_"-separated parts (${known})`);
  }
  const badNumber = parts.find((p) => !DECIMAL.test(p));
  if (badNumber !== undefined) {
    // Stricter than float(), which also takes surrounding spaces, 'inf' and 'nan' (no MLP width or rate).
    return E.left(`fusion mode ${JSON.stringify(mode)}: ${JSON.stringify(badNumber)} is not a plain decimal number (such as 2, 0.5 or 1e-1)`);
  }
  const [ratio, drop] = [Number(parts[0] ?? 1), Number(parts[1] ?? 0)];
  if (!(ratio > 0)) return E.left(`fusion mode ${JSON.stringify(mode)}: the hidden-width multiplier must be > 0, got ${ratio}`);
  if (!(drop >= 0 && drop <= 1)) {
    return E.left(`fusion mode ${JSON.stringify(mode)}: the dropout must be in [0, 1] (nn.Dropout raises ValueError), got ${drop}`);
  }
  return E.right({ kind: 'concat_linear', ratio, drop, ln: match[1] !== undefined });
}

/** Hidden width of a concat_linear fusion's MLP: Python's int(dim * m). */
export const fusionHidden = (mode: Extract<FusionMode, { kind: 'concat_linear' }>, dim: number): number =>
  Math.trunc(dim * mode.ratio);

/** `fuse_fn`: the MLP of the concat_linear modes, as [LayerNorm, MLP] for "ln+" (PySlowFast's nn.Sequential). */
export interface FusionParams {
  readonly fuse_fn?: MlpParams | readonly [NormParams, MlpParams];
}

/** PySlowFast builds the "ln+" fusion's LayerNorm with nn.LayerNorm's default eps. */
const FUSION_NORM_EPS = 1e-5;

/** The fusion of `mode` on x [..., 2C]; the key goes to the MLP's dropout (concat_linear modes). */
export const twoStreamFusion =
  (mode: FusionMode) =>
  (p: FusionParams | undefined, x: Tensor, key: Key, { train }: TrainFlag): Tensor => {
    if (mode.kind === 'concat') return x;
    if (mode.kind === 'concat_linear') {
      const options = { drop: mode.drop, train };
      if (!mode.ln) return add(mlp(p!.fuse_fn as MlpParams, x, key, options), x);
      const [norm, fn] = p!.fuse_fn as readonly [NormParams, MlpParams];
      return add(mlp(fn, layerNorm(norm, x, FUSION_NORM_EPS), key, options), x);
    }
    const [a, b] = chunk(x, 2, -1);
    switch (mode.kind) {
      case 'add':
        return add(a, b);
      case 'max':
        return maximum(a, b);
      case 'min':
        return minimum(a, b);
      case 'avg':
        return div(add(a, b), 2);
    }
  };
