/**
 * Training progress: a cli-progress bar (step, loss, accuracy, clips/s, ETA) on a terminal, plain
 * lines when stdout is not a TTY (logs, CI, pipes).
 */
import cliProgress from 'cli-progress';
import type { LoopRecord, NonFiniteRecord } from '../train/loop.ts';
import { formatBytes, formatDuration } from './common.ts';

export interface Progress {
  onRecord(r: LoopRecord): void;
  /** A message that must not be torn by the bar. */
  log(line: string): void;
  stop(): void;
}

/** Mean of the last `n` values pushed. */
class Window {
  private values: number[] = [];
  constructor(private readonly n: number) {}
  push(v: number) {
    this.values.push(v);
    if (this.values.length > this.n) this.values.shift();
  }
  get mean(): number {
    return this.values.length === 0 ? NaN : this.values.reduce((a, b) => a + b, 0) / this.values.length;
  }
}

export function createProgress(total: number, start: number, opts: { tty?: boolean; out?: NodeJS.WriteStream; quiet?: boolean } = {}): Progress {
  const out = opts.out ?? process.stdout;
  const tty = opts.tty ?? out.isTTY === true;
  const loss = new Window(20);
  const acc = new Window(20);
  const ms = new Window(10);
  let testAcc = '-';
  let peak = 0;
  let batch = 1;
  const fmtPct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : '-');
  const payload = () => ({
    loss: Number.isFinite(loss.mean) ? loss.mean.toFixed(3) : '-',
    acc: fmtPct(acc.mean),
    test: testAcc,
    cps: Number.isFinite(ms.mean) ? ((1000 * batch) / ms.mean).toFixed(1) : '-',
  });
  /** The running statistics both displays show, updated from every train and eval record. */
  const absorb = (r: LoopRecord) => {
    if (r.type === 'train') {
      loss.push(r.loss);
      acc.push(r.acc);
      ms.push(r.stepMs);
      batch = (r.clipsPerSec * r.stepMs) / 1000;
      peak = Math.max(peak, r.peakBytes);
    } else if (r.type === 'eval') {
      testAcc = fmtPct(r.testAcc);
    }
  };

  if (tty && !opts.quiet) {
    const bar = new cliProgress.SingleBar(
      {
        format: 'step {value}/{total} {bar} loss {loss} | acc {acc} | test {test} | {cps} clips/s | ETA {eta_formatted}',
        barsize: 24,
        hideCursor: true,
        etaBuffer: 20,
        stream: out,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, start, payload());
    return {
      onRecord(r) {
        absorb(r);
        if (r.type === 'train') bar.update(r.step, payload());
        else if (r.type === 'eval') bar.update(payload());
        else if (r.type === 'nonfinite') this.log(nonFiniteLine(r));
      },
      log(line) {
        // Clear the bar's line, print, and let the bar redraw below.
        out.write('\r\x1b[K' + line + '\n');
        bar.render();
      },
      stop: () => bar.stop(),
    };
  }

  const every = Math.max(1, Math.round(total / 25));
  const write = (line: string) => {
    if (!opts.quiet) out.write(line + '\n');
  };
  return {
    onRecord(r) {
      absorb(r);
      if (r.type === 'train') {
        if (r.step % every === 0 || r.step === total || r.step === start + 1) {
          const p = payload();
          const eta = ((total - r.step) * ms.mean) / 1000;
          write(`step ${r.step}/${total}  loss ${p.loss}  acc ${p.acc}  lr ${r.lr.toExponential(2)}  ${p.cps} clips/s  peak ${formatBytes(peak)}  ETA ${formatDuration(eta)}`);
        }
      } else if (r.type === 'eval') {
        write(`eval at step ${r.step}: test accuracy ${testAcc} on ${r.clips} clips${r.testLoss === null ? '' : `, test loss ${r.testLoss.toFixed(3)}`}`);
      } else if (r.type === 'nonfinite') {
        write(nonFiniteLine(r));
      } else if (r.type === 'drift') {
        write(`drift at step ${r.step}: max reconstruction error ${r.max.toExponential(2)} over ${r.blocks.length} blocks`);
      }
    },
    log: write,
    stop() {},
  };
}

/** One line for a step that was not applied. */
export function nonFiniteLine(r: NonFiniteRecord): string {
  const what =
    r.what === 'parameters'
      ? `parameter ${r.tensors[0]?.name ?? '?'} is not finite`
      : r.what === 'loss'
        ? `the loss is ${r.loss}`
        : `the gradient norm is ${r.gradNorm}${r.firstInBackward !== null ? ` (first non-finite gradient in the backward pass: ${r.firstInBackward})` : ''}`;
  return `step ${r.step}: ${what}; the step was not applied${r.action === 'skipped' ? ' (skipped, --on-nan skip)' : ''}`;
}
