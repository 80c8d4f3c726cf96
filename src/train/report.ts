/**
 * A self-contained HTML report of a training run: inline CSS and SVG charts drawn here (no scripts,
 * fonts or images from anywhere), so the file opens offline. Charts: loss and accuracy (train and
 * test), learning rate, memory vs depth (reversible vs store) and reconstruction drift per block.
 */

export interface Series {
  readonly name: string;
  readonly points: readonly (readonly [number, number])[];
  readonly color: string;
  readonly dashed?: boolean;
  /** Draw a dot at each point (sparse series such as evaluations). */
  readonly dots?: boolean;
  readonly width?: number;
}

export interface ChartSpec {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly Series[];
  readonly width?: number;
  readonly height?: number;
  readonly logY?: boolean;
  /** Format of the y tick labels. */
  readonly yFormat?: (v: number) => string;
  readonly yMin?: number;
  readonly yMax?: number;
}

export const escapeHtml = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

/** About `count` round tick values covering [lo, hi] (1, 2, 5 × 10^k steps). */
export function niceTicks(lo: number, hi: number, count = 5, integer = false): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const nice = (integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const step = integer ? Math.max(1, nice) : nice;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return ticks;
}

const defaultFormat = (v: number): string => {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0);
  return String(+v.toPrecision(4));
};

/** An SVG line chart with axes, ticks, labels and a legend. */
export function lineChart(spec: ChartSpec): string {
  const W = spec.width ?? 560;
  // Legend entries flow left to right and wrap into rows below the x label.
  const legendX0 = 64;
  const legend: { s: Series; x: number; row: number }[] = [];
  {
    let x = legendX0;
    let row = 0;
    for (const s of spec.series) {
      const w = 30 + s.name.length * 6.5;
      if (x + w > W - 8 && x > legendX0) [x, row] = [legendX0, row + 1];
      legend.push({ s, x, row });
      x += w;
    }
  }
  const legendRows = legend.length === 0 ? 0 : legend[legend.length - 1].row + 1;
  const H = (spec.height ?? 300) + Math.max(0, legendRows - 1) * 16;
  const m = { left: 64, right: 16, top: 30, bottom: 48 + 16 * legendRows };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const fy = spec.yFormat ?? defaultFormat;
  const all = spec.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!spec.logY || y > 0));
  const title = `<text x="${W / 2}" y="18" text-anchor="middle" class="title">${escapeHtml(spec.title)}</text>`;
  if (all.length === 0) {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img">${title}<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="note">no data</text></svg>`;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const tr = (y: number) => (spec.logY ? Math.log10(y) : y);
  let y0 = spec.yMin !== undefined ? tr(spec.yMin) : Math.min(...all.map((p) => tr(p[1])));
  let y1 = spec.yMax !== undefined ? tr(spec.yMax) : Math.max(...all.map((p) => tr(p[1])));
  if (spec.logY) [y0, y1] = [Math.floor(y0), Math.ceil(y1)];
  if (y0 === y1) [y0, y1] = [y0 - (spec.logY ? 1 : Math.abs(y0) * 0.1 || 1), y1 + (spec.logY ? 1 : Math.abs(y1) * 0.1 || 1)];
  if (!spec.logY && spec.yMin === undefined && spec.yMax === undefined) {
    const pad = (y1 - y0) * 0.05;
    [y0, y1] = [y0 - pad, y1 + pad];
  }
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((tr(y) - y0) / (y1 - y0)) * ph;
  const parts: string[] = [title];
  // Grid and ticks.
  const xt = niceTicks(x0, x1, 6, all.every(([x]) => Number.isInteger(x)));
  const ytRaw = spec.logY ? Array.from({ length: y1 - y0 + 1 }, (_, i) => 10 ** (y0 + i)) : niceTicks(y0, y1, 5);
  const yt = spec.logY && ytRaw.length > 8 ? ytRaw.filter((_, i) => i % Math.ceil(ytRaw.length / 8) === 0) : ytRaw;
  for (const t of xt) {
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" class="grid"/>`);
    parts.push(`<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle" class="tick">${escapeHtml(defaultFormat(t))}</text>`);
  }
  for (const t of yt) {
    const y = sy(t).toFixed(1);
    parts.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" class="tick">${escapeHtml(fy(t))}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" class="frame"/>`);
  parts.push(`<text x="${m.left + pw / 2}" y="${m.top + ph + 34}" text-anchor="middle" class="label">${escapeHtml(spec.xLabel)}</text>`);
  parts.push(
    `<text transform="translate(14 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" class="label">${escapeHtml(spec.yLabel)}${spec.logY ? ' (log)' : ''}</text>`,
  );
  // Series.
  parts.push(`<clipPath id="c${clipId}"><rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}"/></clipPath><g clip-path="url(#c${clipId})">`);
  clipId++;
  for (const s of spec.series) {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!spec.logY || y > 0));
    if (pts.length === 0) continue;
    const d = pts.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    parts.push(
      `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.8}"${s.dashed ? ' stroke-dasharray="6 4"' : ''} stroke-linejoin="round"/>`,
    );
    if (s.dots || pts.length === 1) for (const [x, y] of pts) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
  }
  parts.push('</g>');
  // Legend below the x label.
  for (const { s, x: lx, row } of legend) {
    const ly = m.top + ph + 52 + row * 16;
    parts.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 18}" y2="${ly}" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    parts.push(`<text x="${lx + 22}" y="${ly}" dominant-baseline="middle" class="legend">${escapeHtml(s.name)}</text>`);
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeHtml(spec.title)}">${parts.join('')}</svg>`;
}
let clipId = 0;

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/** Exponential moving average of a curve (for noisy per-step values). */
export function smooth(points: readonly (readonly [number, number])[], alpha = 0.1): [number, number][] {
  let s = NaN;
  return points.map(([x, y]) => {
    s = Number.isNaN(s) ? y : alpha * y + (1 - alpha) * s;
    return [x, s];
  });
}

export interface MemoryPoint {
  readonly depth: number;
  readonly reversibleBlocks: number;
  readonly retained: { readonly reversible: number; readonly store: number };
  readonly peak: { readonly reversible: number; readonly store: number };
}

export interface ReportInput {
  readonly title: string;
  /** Key facts shown in a table at the top (already formatted). */
  readonly summary: readonly (readonly [string, string])[];
  /** metrics.jsonl records. */
  readonly records: readonly Record<string, unknown>[];
  readonly memory: readonly MemoryPoint[] | null;
  /** Why the memory chart is missing, when it is. */
  readonly memoryNote?: string;
}

const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const mib = (b: number) => b / 2 ** 20;

export function renderReport(input: ReportInput): string {
  const rs = input.records;
  const trainR = rs.filter((r) => r.type === 'train');
  const evalR = rs.filter((r) => r.type === 'eval');
  const driftR = rs.filter((r) => r.type === 'drift');
  const pts = (list: readonly Record<string, unknown>[], f: string): [number, number][] => list.map((r) => [num(r.step), num(r[f])]);
  const charts: string[] = [];

  const lossRaw = pts(trainR, 'loss');
  charts.push(
    lineChart({
      title: 'Loss',
      xLabel: 'step',
      yLabel: 'cross-entropy',
      series: [
        { name: 'train (per step)', points: lossRaw, color: '#9ecae1', width: 1 },
        { name: 'train (smoothed)', points: smooth(lossRaw), color: PALETTE[0] },
        { name: 'test', points: pts(evalR.filter((r) => r.testLoss !== null), 'testLoss'), color: PALETTE[1], dots: true },
      ],
    }),
  );
  charts.push(
    lineChart({
      title: 'Accuracy',
      xLabel: 'step',
      yLabel: 'accuracy',
      yMin: 0,
      yMax: 1,
      yFormat: (v) => `${Math.round(v * 100)}%`,
      series: [
        { name: 'train (smoothed)', points: smooth(pts(trainR, 'acc')), color: PALETTE[0] },
        { name: 'test', points: pts(evalR, 'testAcc'), color: PALETTE[1], dots: true },
        { name: 'chance (1/40)', points: trainR.length > 0 ? [[num(trainR[0].step), 1 / 40], [num(trainR[trainR.length - 1].step), 1 / 40]] : [], color: '#999', dashed: true, width: 1 },
      ],
    }),
  );
  charts.push(lineChart({ title: 'Learning rate', xLabel: 'step', yLabel: 'lr', series: [{ name: 'AdamW lr (cosine, linear warmup)', points: pts(trainR, 'lr'), color: PALETTE[2] }] }));
  if (input.memory !== null && input.memory.length > 0) {
    const mem = input.memory;
    const mp = (f: (p: MemoryPoint) => number): [number, number][] => mem.map((p) => [p.reversibleBlocks, mib(f(p))]);
    charts.push(
      lineChart({
        title: 'Memory vs depth (one training step)',
        xLabel: 'reversible blocks',
        yLabel: 'MiB',
        yMin: 0,
        series: [
          { name: 'peak, reversible', points: mp((p) => p.peak.reversible), color: PALETTE[0], dots: true },
          { name: 'peak, store', points: mp((p) => p.peak.store), color: PALETTE[1], dots: true },
          { name: 'retained, reversible', points: mp((p) => p.retained.reversible), color: PALETTE[0], dashed: true, dots: true },
          { name: 'retained, store', points: mp((p) => p.retained.store), color: PALETTE[1], dashed: true, dots: true },
        ],
      }),
    );
  }
  const blocks = [...new Set(driftR.flatMap((r) => ((r.blocks as { block: number }[]) ?? []).map((b) => b.block)))].sort((a, b) => a - b);
  charts.push(
    lineChart({
      title: 'Reconstruction drift per reversible block',
      xLabel: 'step',
      yLabel: 'max |rebuilt input − input|',
      logY: true,
      yFormat: (v) => v.toExponential(0),
      series: blocks.map((b, i) => ({
        name: `layer ${b}`,
        color: PALETTE[i % PALETTE.length],
        dots: true,
        points: driftR.flatMap((r) => {
          const e = (r.blocks as { block: number; x1: number; x2: number }[]).find((x) => x.block === b);
          return e === undefined ? [] : [[num(r.step), Math.max(e.x1, e.x2)] as [number, number]];
        }),
      })),
    }),
  );

  const memTable =
    input.memory !== null && input.memory.length > 0
      ? `<table><thead><tr><th>depth</th><th>reversible blocks</th><th>retained, reversible</th><th>retained, store</th><th>peak, reversible</th><th>peak, store</th></tr></thead><tbody>${input.memory
          .map(
            (p) =>
              `<tr><td>${p.depth}</td><td>${p.reversibleBlocks}</td><td>${mib(p.retained.reversible).toFixed(2)} MiB</td><td>${mib(p.retained.store).toFixed(2)} MiB</td><td>${mib(p.peak.reversible).toFixed(2)} MiB</td><td>${mib(p.peak.store).toFixed(2)} MiB</td></tr>`,
          )
          .join('')}</tbody></table>`
      : `<p class="note">${escapeHtml(input.memoryNote ?? 'Memory vs depth was not measured.')}</p>`;

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(input.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}th{background:#f4f4f4}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts svg{border:1px solid #eee;background:#fff}
svg .title{font-size:14px;font-weight:600}svg .tick{font-size:11px;fill:#555}svg .label{font-size:12px;fill:#333}
svg .legend{font-size:11px;fill:#333}svg .grid{stroke:#eee}svg .frame{fill:none;stroke:#888}svg .note{fill:#888;font-size:13px}
.note{color:#666}
</style></head><body>
<h1>${escapeHtml(input.title)}</h1>
<table><tbody>${input.summary.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</tbody></table>
<h2>Curves</h2>
<div class="charts">${charts.join('\n')}</div>
<h2>Memory vs depth</h2>
<p class="note">Bytes the backward pass retains (the pullback's residuals) and peak live bytes of one forward + backward pass, as the model's last stage gets extra reversible blocks. In reversible mode the retained bytes stay flat with depth; in store mode they grow with every block.</p>
${memTable}
</body></html>
`;
}
