/**
 * What a well-typed Rev-MViT config can still get wrong: everything PySlowFast would only discover later
 * (an assert in __init__, a crash in forward, or a silently wrong model), checked on the geometry the
 * model will be built from. Each check returns its problems; independent checks all run.
 */
import * as E from 'fp-ts/lib/Either.js';
import { at, describe, problem, type Problem } from '../../io/decode.ts';
import { parseFusionMode } from '../../nn/fusion.ts';
import type { MViTConfig, MViTSection } from './config-types.ts';
import {
  adaptiveKvStrides,
  buildLayers,
  convOutputSize,
  finalEmbedDim,
  patchDimsOf,
  poolingSchedule,
  sameGrid,
  type LayerGeometry,
} from './geometry.ts';

/**
 * 'model': the whole MViT, as PySlowFast builds it. 'stack': only the ReversibleMViT stack, which
 * (unlike MViT) supports a cls token; the stack-only golden fixtures are built that way.
 */
export interface ParseOptions {
  readonly target?: 'model' | 'stack';
}

function modelChecks(cfg: MViTConfig, options: ParseOptions): Problem[] {
  const { DATA, MVIT } = cfg;
  const out: Problem[] = [];
  if (!MVIT.REV.ENABLE) {
    out.push(problem('MVIT.REV.ENABLE', 'must be true: this library builds the reversible model only (with false PySlowFast builds the non-reversible MViT `blocks`)'));
  }
  if (DATA.TRAIN_CROP_SIZE !== DATA.TEST_CROP_SIZE) {
    out.push(problem('DATA.TEST_CROP_SIZE', `must equal DATA.TRAIN_CROP_SIZE (${DATA.TRAIN_CROP_SIZE}), got ${DATA.TEST_CROP_SIZE}: MViT.__init__ asserts TRAIN_CROP_SIZE == TEST_CROP_SIZE (note PySlowFast's default TEST_CROP_SIZE is 256, so set both)`));
  }
  if (MVIT.CLS_EMBED_ON && options.target !== 'stack') {
    out.push(problem('MVIT.CLS_EMBED_ON', 'must be false: MViT.__init__ asserts `not cls_embed_on` when REV.ENABLE (AssertionError; the published Kinetics REV_MVIT_B_16x4_CONV.yaml hits it). The reversible stack itself supports a cls token: parse with target "stack" to build only the stack'));
  }
  if (MVIT.MODE === 'conv_unshared' && !MVIT.POOL_FIRST) {
    out.push(problem('MVIT.MODE', '"conv_unshared" requires MVIT.POOL_FIRST: MultiScaleAttention.forward asserts mode != "conv_unshared" otherwise'));
  }
  if (MVIT.USE_FIXED_SINCOS_POS) {
    out.push(problem('MVIT.USE_FIXED_SINCOS_POS', 'not supported by this port: PySlowFast adds the frozen sin-cos embedding a second time on top of the learned one (and crashes with SEP_POS_EMBED or without USE_ABS_POS)'));
  }
  if (MVIT.POOL_KV_STRIDE_ADAPTIVE !== null && MVIT.POOL_KV_STRIDE.length > 0 && !kvStridesMatchAdaptive(MVIT)) {
    out.push(problem('MVIT.POOL_KV_STRIDE', 'is ignored when MVIT.POOL_KV_STRIDE_ADAPTIVE is set: MViT.__init__ silently overwrites it with the adaptive schedule; set only one of the two'));
  }
  for (const field of ['PRE_Q_FUSION', 'RESPATH_FUSE'] as const) {
    const parsed = parseFusionMode(MVIT.REV[field]);
    if (E.isLeft(parsed)) out.push(problem(`MVIT.REV.${field}`, parsed.left));
  }
  if (!MVIT.REV.RESPATH_FUSE.includes('concat') && !MVIT.USE_MEAN_POOLING) {
    out.push(problem('MVIT.REV.RESPATH_FUSE', `${JSON.stringify(MVIT.REV.RESPATH_FUSE)} (no "concat") requires MVIT.USE_MEAN_POOLING: otherwise MViT applies norm = LayerNorm(Cf) to the [B, N, 2Cf] stack output before fusing (RuntimeError)`));
  }
  return out;
}

/** A config dumped after MViT.__init__ holds the expanded adaptive schedule in POOL_KV_STRIDE: that is consistent. */
function kvStridesMatchAdaptive(mvit: MViTSection): boolean {
  const expanded = adaptiveKvStrides(mvit.POOL_KV_STRIDE_ADAPTIVE!, poolingSchedule({ ...mvit, POOL_KV_STRIDE_ADAPTIVE: null }).strideQ);
  return expanded.length === mvit.POOL_KV_STRIDE.length && expanded.every((e, i) => sameGrid(e, mvit.POOL_KV_STRIDE[i]!));
}

function patchChecks(cfg: MViTConfig): Problem[] {
  const { DATA, MVIT } = cfg;
  const rank = MVIT.PATCH_2D ? 2 : 3;
  const lengthProblems = (['PATCH_KERNEL', 'PATCH_STRIDE', 'PATCH_PADDING'] as const)
    .filter((f) => MVIT[f].length !== rank)
    .map((f) => problem(`MVIT.${f}`, `expected ${rank} entries for a ${rank}D patch embed (PATCH_2D is ${MVIT.PATCH_2D}), got ${describe(MVIT[f])}`));
  if (lengthProblems.length > 0) return lengthProblems;
  const out: Problem[] = [];
  if (MVIT.PATCH_2D && DATA.NUM_FRAMES !== 1) {
    out.push(problem('DATA.NUM_FRAMES', `must be 1 with MVIT.PATCH_2D, got ${DATA.NUM_FRAMES}: the Conv2d patch embed yields H*W tokens but MViT sizes the pos embed and grid for NUM_FRAMES*H*W (RuntimeError at the pos-embed add)`));
  }
  // The conv must produce exactly input // stride per axis; PySlowFast asserts this in forward.
  const sizes = MVIT.PATCH_2D ? [DATA.TRAIN_CROP_SIZE, DATA.TRAIN_CROP_SIZE] : [DATA.NUM_FRAMES, DATA.TRAIN_CROP_SIZE, DATA.TRAIN_CROP_SIZE];
  const axes = MVIT.PATCH_2D ? ['H', 'W'] : ['T', 'H', 'W'];
  sizes.forEach((size, d) => {
    const [k, s, p] = [MVIT.PATCH_KERNEL[d]!, MVIT.PATCH_STRIDE[d]!, MVIT.PATCH_PADDING[d]!];
    const produced = convOutputSize(size, k, s, p);
    const expected = Math.floor(size / s);
    if (expected < 1) {
      out.push(problem(at('MVIT.PATCH_STRIDE', d), `stride ${s} exceeds the input size ${size} along ${axes[d]}: the token grid would be empty`));
    } else if (produced !== expected) {
      out.push(problem(at('MVIT.PATCH_PADDING', d), `the patch-embed conv (kernel ${k}, stride ${s}, padding ${p}) turns ${size} into ${produced} along ${axes[d]}, but MViT expects ${size} // ${s} = ${expected}: PySlowFast's forward asserts the grid (AssertionError)`));
    }
  });
  return out;
}

interface IndexedField {
  readonly path: string;
  readonly layers: readonly number[];
  /** Whether naming a layer here changes its dims or grid, so that it must be a stage transition. */
  readonly needsTransition: boolean;
}

function indexedFields(mvit: MViTSection): IndexedField[] {
  return [
    { path: 'MVIT.DIM_MUL', layers: mvit.DIM_MUL.map((e) => e[0]), needsTransition: true },
    { path: 'MVIT.HEAD_MUL', layers: mvit.HEAD_MUL.map((e) => e[0]), needsTransition: true },
    { path: 'MVIT.POOL_Q_STRIDE', layers: mvit.POOL_Q_STRIDE.map((e) => e[0]), needsTransition: true },
    { path: 'MVIT.POOL_KV_STRIDE', layers: mvit.POOL_KV_STRIDE.map((e) => e[0]), needsTransition: false },
  ];
}

/** Layer indices in range and unique; buffer layers placed where a two-stream stack can use them. */
function layerIndexChecks(mvit: MViTSection): Problem[] {
  const depth = mvit.DEPTH;
  const buffers = mvit.REV.BUFFER_LAYERS;
  const out: Problem[] = [];
  for (const field of indexedFields(mvit)) {
    field.layers.forEach((layer, j) => {
      const path = at(at(field.path, j), 0);
      if (layer >= depth) out.push(problem(path, `layer ${layer} does not exist: layer indices run from 0 to DEPTH-1 = ${depth - 1}`));
      else if (field.layers.indexOf(layer) !== j) out.push(problem(path, `layer ${layer} is listed twice: PySlowFast silently keeps the last entry`));
      else if (field.needsTransition && !buffers.includes(layer)) {
        out.push(problem(path, `layer ${layer} changes the channel dim, the heads or the token grid, so it must be a stage transition (add it to MVIT.REV.BUFFER_LAYERS): a ReversibleBlock needs F: C -> C on the same tokens, and PySlowFast would build a block whose reversible coupling fails with a shape error`));
      }
    });
  }
  buffers.forEach((layer, j) => {
    const path = at('MVIT.REV.BUFFER_LAYERS', j);
    if (layer >= depth) out.push(problem(path, `layer ${layer} does not exist: layer indices run from 0 to DEPTH-1 = ${depth - 1} (PySlowFast would silently build no transition for it)`));
    else if (buffers.indexOf(layer) !== j) out.push(problem(path, `layer ${layer} is listed twice`));
    else if (layer === 0) out.push(problem(path, 'layer 0 cannot be a stage transition: it would get the one-stream [B, N, C] patch tokens instead of the two-stream [B, N, 2C] tensor its pre-Q fusion splits (shape error)'));
    else if (layer === depth - 1) out.push(problem(path, `the last layer (${layer}) cannot be a stage transition: the stack must end two-stream ([B, N, 2Cf]) for the final norm and fusion (shape error)`));
    else if (buffers.includes(layer - 1)) out.push(problem(path, `layers ${layer - 1} and ${layer} are adjacent stage transitions: the second would get the first's one-stream output instead of a two-stream tensor (shape error)`));
  });
  return out;
}

/** Checks on the derived per-layer geometry; needs valid patch fields and layer indices. */
function layerGeometryChecks(cfg: MViTConfig): Problem[] {
  const mvit = cfg.MVIT;
  const layers = buildLayers(cfg);
  const out: Problem[] = [];
  const grid = (v: readonly number[]) => `[${v.join(', ')}]`;
  const first = layers[0];
  if (first && first.streamDim !== mvit.EMBED_DIM) {
    out.push(problem('MVIT.EMBED_DIM', `${mvit.EMBED_DIM} is not a multiple of NUM_HEADS (${first.heads}): round_width makes layer 0 expect ${first.streamDim} channels while the patch embed produces ${mvit.EMBED_DIM} (shape error in layer 0)`));
  }
  for (const layer of layers) {
    const name = `layer ${layer.index}`;
    if (layer.dimOut % layer.heads !== 0) {
      out.push(problem('MVIT.NUM_HEADS', `${name}: its output dim ${layer.dimOut} is not divisible by its ${layer.heads} heads (the q/k/v reshape into heads fails)`));
    }
    if (mvit.POOL_FIRST && layer.dimIn % layer.heads !== 0) {
      out.push(problem('MVIT.POOL_FIRST', `${name}: with POOL_FIRST the input dim ${layer.dimIn} is split into ${layer.heads} heads before pooling, but it is not divisible`));
    }
    if (layer.kind === 'reversible' && layer.dimIn !== layer.dimOut) {
      out.push(problem('MVIT.HEAD_MUL', `${name} is reversible but its attention maps ${layer.dimIn} -> ${layer.dimOut} channels (round_width with the next layer's head count as divisor): make it a stage transition or choose dims divisible by the heads`));
    }
    if (layer.poolQ && !sameGrid(layer.qThw, layer.thwOut)) {
      out.push(problem('MVIT.POOL_Q_STRIDE', `${name}: Q pooling turns the grid ${grid(layer.thwIn)} into ${grid(layer.qThw)}, but PySlowFast gives the next layer thw // stride = ${grid(layer.thwOut)} (reshape error in the next layer)`));
    } else if (layer.thwOut.some((n) => n < 1)) {
      out.push(problem('MVIT.POOL_Q_STRIDE', `${name}: the token grid ${grid(layer.thwOut)} after Q pooling is empty`));
    }
    if (mvit.REL_POS_SPATIAL && layer.thwIn[1] !== layer.thwIn[2]) {
      out.push(problem('MVIT.REL_POS_SPATIAL', `${name}: the grid ${grid(layer.thwIn)} is not square; MultiScaleAttention asserts input_size[1] == input_size[2] for spatial relative positions`));
    }
    out.push(...resPathProblems(mvit, layer));
  }
  const last = layers[layers.length - 1];
  const finalDim = finalEmbedDim(mvit);
  if (last && last.dimOut !== finalDim) {
    out.push(problem('MVIT.DIM_MUL', `the last layer outputs ${last.dimOut} channels per stream, but MViT sizes the final norm and head for round_width(EMBED_DIM, prod(DIM_MUL), divisor=NUM_HEADS) = ${finalDim} (shape error in the final norm)`));
  }
  return out;
}

/**
 * RES_PATH "max" reads F.attn.pool_q.stride, so every transition needs a Q pool. (Its grid then always
 * matches the attention's: a Q pool that yields thw // s needs s | thw, and then so does the skip pool.)
 */
function resPathProblems(mvit: MViTSection, layer: LayerGeometry): Problem[] {
  if (layer.kind !== 'transition' || mvit.REV.RES_PATH !== 'max' || layer.poolQ) return [];
  return [problem('MVIT.REV.RES_PATH', `"max" needs Q pooling at every stage transition, but layer ${layer.index} has none: StageTransitionBlock reads F.attn.pool_q.stride (AttributeError on None)`)];
}

/** The per-layer geometry is only meaningful once the patch fields describe a non-empty grid. */
function patchLayoutSound(cfg: MViTConfig): boolean {
  const { MVIT } = cfg;
  const rank = MVIT.PATCH_2D ? 2 : 3;
  const lengthsOk = [MVIT.PATCH_KERNEL, MVIT.PATCH_STRIDE, MVIT.PATCH_PADDING].every((v) => v.length === rank);
  return lengthsOk && patchDimsOf(cfg).every((n) => n >= 1);
}

/** Every problem of a well-typed config (all independent checks run). */
export function validateConfig(cfg: MViTConfig, options: ParseOptions = {}): Problem[] {
  return [
    ...modelChecks(cfg, options),
    ...patchChecks(cfg),
    ...layerIndexChecks(cfg.MVIT),
    ...(patchLayoutSound(cfg) ? layerGeometryChecks(cfg) : []),
  ];
}
