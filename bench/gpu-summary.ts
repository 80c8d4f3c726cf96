/**
 * The GPU check's summary (bench/gpu-check.sh runs it last): ours (OUT/ours.json, from gpu-check.ts)
 * beside PyTorch (OUT/torch.json: torch.matmul and bench/torch_revmvit.py on the same GPU), as ratios,
 * with the targets marked:
 *   - matmul: ours (best tiled WGSL kernel, device-resident) >= 25 % of torch fp32 at N = 4096;
 *   - step time: tiny b64 <= 3x PyTorch (per mode); REV_VIT_S b128 reversible <= 2x PyTorch reversible;
 *   - memory: our reversible step's device memory <= PyTorch reversible's peak on the same config.
 * Writes OUT/summary.json and prints a table.
 *
 *   node bench/gpu-summary.ts OUT
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface OursMatmul { kernel: string; n: number; gflops: number; transfers: boolean; maxRelErr: number }
export interface OursTrain { engine: string; name: string; batch: number; mode: string; msPerStep: number; deviceMiB: number; submitsPerStep: number; readbacksPerStep: number; untunedMsPerStep?: number }
export interface Ours { matmul?: OursMatmul[]; train?: OursTrain[]; failures?: number; adapter?: unknown }
export interface TorchMatmul { n: number; gflops: number }
/** One bench/torch_revmvit.py result: {store_ms, reversible_ms, peak_mb: {store, reversible}}. */
export interface TorchTrain { name: string; batch: number; store_ms?: number; reversible_ms?: number; peak_mb?: Record<string, number> }
export interface Torch { matmul?: TorchMatmul[]; train?: TorchTrain[] }

export interface Line {
  readonly what: string;
  readonly ours: number | null;
  readonly torch: number | null;
  /** ours / torch (time, memory) or ours / torch (throughput), as stated by `unit`. */
  readonly ratio: number | null;
  readonly unit: string;
  /** The target for this line, and whether it is met (null: no target or a number is missing). */
  readonly target?: string;
  readonly met?: boolean | null;
}

const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a === null || a === undefined || b === null || b === undefined || !(b > 0) || !Number.isFinite(a) ? null : a / b;

/** The comparison lines (pure: tested with synthetic inputs). */
export function summarize(ours: Ours, torch: Torch): Line[] {
  const lines: Line[] = [];
  const sizes = [...new Set([...(ours.matmul ?? []).map((r) => r.n), ...(torch.matmul ?? []).map((r) => r.n)])].sort((a, b) => a - b);
  for (const n of sizes) {
    const best = (ours.matmul ?? []).filter((r) => r.n === n && !r.transfers && r.maxRelErr <= 1e-4).reduce<OursMatmul | null>((b, r) => (b === null || r.gflops > b.gflops ? r : b), null);
    const t = (torch.matmul ?? []).find((r) => r.n === n)?.gflops ?? null;
    const q = ratio(best?.gflops ?? null, t);
    lines.push({
      what: `matmul N=${n} GFLOP/s (ours: ${best?.kernel ?? 'none'})`,
      ours: best?.gflops ?? null,
      torch: t,
      ratio: q,
      unit: 'of torch',
      ...(n === 4096 ? { target: '>= 0.25', met: q === null ? null : q >= 0.25 } : {}),
    });
  }
  for (const r of (ours.train ?? []).filter((x) => x.engine === 'plan')) {
    const t = (torch.train ?? []).find((x) => x.name === r.name && x.batch === r.batch);
    const tm = r.mode === 'reversible' ? t?.reversible_ms : t?.store_ms;
    const q = ratio(r.msPerStep, tm);
    let target: string | undefined;
    if (r.name === 'revmvit-tiny' && r.batch === 64) target = '<= 3';
    if (r.name === 'REV_VIT_S' && r.batch === 128 && r.mode === 'reversible') target = '<= 2';
    const limit = target === undefined ? null : Number(target.slice(3));
    lines.push({ what: `${r.name} b${r.batch} ${r.mode} step ms`, ours: r.msPerStep, torch: tm ?? null, ratio: q, unit: 'x torch', ...(target !== undefined ? { target, met: q === null ? null : q <= limit! } : {}) });
    // The same step with the cost model's tilings: what tuning bought.
    if (r.untunedMsPerStep !== undefined) lines.push({ what: `${r.name} b${r.batch} ${r.mode} step ms, untuned`, ours: r.untunedMsPerStep, torch: tm ?? null, ratio: ratio(r.untunedMsPerStep, tm), unit: 'x torch' });
    const peak = t?.peak_mb?.[r.mode];
    const qm = ratio(r.deviceMiB, peak);
    lines.push({
      what: `${r.name} b${r.batch} ${r.mode} device MiB`,
      ours: r.deviceMiB,
      torch: peak ?? null,
      ratio: qm,
      unit: 'x torch',
      ...(r.mode === 'reversible' ? { target: '<= 1', met: qm === null ? null : qm <= 1 } : {}),
    });
  }
  return lines;
}

const fmt = (v: number | null, digits = 1) => (v === null ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(digits));

export function table(lines: readonly Line[]): string {
  const rows = lines.map((l) => [l.what, fmt(l.ours), fmt(l.torch), l.ratio === null ? '-' : `${l.ratio.toFixed(2)} ${l.unit}`, l.target === undefined ? '' : `${l.target}: ${l.met === null ? 'not measured' : l.met ? 'MET' : 'MISSED'}`]);
  const head = ['', 'ours', 'torch', 'ratio', 'target'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')).join('\n');
}

function readJson<T>(file: string, dflt: T): T {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : dflt;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2] ?? 'runs/gpu-check';
  const ours = readJson<Ours>(join(out, 'ours.json'), {});
  const torch = readJson<Torch>(join(out, 'torch.json'), {});
  const lines = summarize(ours, torch);
  writeFileSync(join(out, 'summary.json'), JSON.stringify({ adapter: ours.adapter ?? null, failures: ours.failures ?? null, lines }, null, 1));
  console.log(table(lines));
}
