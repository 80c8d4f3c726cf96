/**
 * metrics.jsonl (Node: file IO): one JSON record per line, as `revgrad train` writes them and the
 * report reads them.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

export const METRICS_FILE = 'metrics.jsonl';

/** Start the file for a run: empty for a new run; for a run resumed after `step`, only the records up to it. */
export function startMetrics(path: string, resumedAt: number): void {
  if (resumedAt === 0 || !existsSync(path)) {
    writeFileSync(path, '');
    return;
  }
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => {
      if (line.trim() === '') return false;
      try {
        const r = JSON.parse(line) as { step?: unknown };
        return typeof r === 'object' && r !== null && typeof r.step === 'number' && r.step <= resumedAt;
      } catch {
        return false; // a line torn by a kill
      }
    });
  writeFileSync(path, kept.map((l) => l + '\n').join(''));
}

export const appendMetric = (path: string, record: object): void => appendFileSync(path, JSON.stringify(record) + '\n');

/** Every readable record of the file (torn lines skipped); [] when there is no file. */
export function readMetrics(path: string): Record<string, unknown>[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}
