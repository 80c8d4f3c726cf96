/**
 * Pure layer functions, `(params, x, key?, options?)`, with params as plain trees of tensors named
 * like PyTorch modules, so PySlowFast state_dict names map onto them. Layers with a structure
 * (attention, pooling, patch embedding, fusion, head) are built from their spec once:
 * `multiScaleAttention(spec)` returns the layer. Random draws (`dropout`, `dropPath`) take the key first,
 * like `random.*`.
 */
export { dropout, dropPath, type TrainFlag } from './dropout.ts';
export { linear, layerNorm, mlp, type LinearParams, type NormParams, type MlpParams, type MlpOptions } from './layers.ts';
export { attentionPool, isConvPool, type AttentionPoolParams, type AttentionPoolSpec, type PoolMode, type PoolSpec, type Vec3 } from './pooling.ts';
export { multiScaleAttention, type AttentionParams, type MultiScaleAttentionSpec } from './attention.ts';
export { patchEmbed, addPositions, type PatchEmbedParams, type PatchEmbedSpec, type PositionParams } from './patch-embed.ts';
export { twoStreamFusion, parseFusionMode, fusionHidden, type FusionMode, type FusionParams } from './fusion.ts';
export { classifierHead, type ClassifierHeadParams, type HeadActivation } from './head.ts';
