/**
 * Reading and writing a PySlowFast-sized checkpoint: REV_VIT_B's 87M parameters (333 MiB) through
 * encodePyth / decodePyth + stateDictOf, against torch.save / torch.load (weights_only) on the same file
 * when /usr/bin/python3 has torch (the anchor, measured in the same run).
 *
 *   node --import tsx bench/pyth.ts
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { decodePyth, encodePyth, pyDict, stateDictOf } from '../src/io/pyth.ts';
import { paramSpecs } from '../src/models/mvit/params-spec.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';

const cfg = presetConfig('REV_VIT_B');
if (E.isLeft(cfg)) throw new Error('preset');
const named = new Map(
  paramSpecs(cfg.right).map((s) => {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = Math.sin(i);
    return [s.name, { shape: [...s.shape], data }] as const;
  }),
);
const dir = mkdtempSync(join(tmpdir(), 'revgrad-bench-pyth-'));
const path = join(dir, 'rev_vit_b.pyth');
const ms = (t: number) => performance.now() - t;
try {
  let t = performance.now();
  const bytes = encodePyth(pyDict([['epoch', -1], ['model_state', pyDict(named, true)]]));
  writeFileSync(path, bytes);
  const write = ms(t);
  t = performance.now();
  const file = decodePyth(readFileSync(path), path);
  if (E.isLeft(file)) throw file.left;
  const weights = stateDictOf(file.right);
  if (E.isLeft(weights)) throw weights.left;
  const read = ms(t);
  console.log(`REV_VIT_B, ${named.size} tensors, ${(bytes.length / 2 ** 20).toFixed(1)} MiB`);
  console.log(`revgrad  write ${write.toFixed(0)} ms   read ${read.toFixed(0)} ms (file, CRCs, float32 arrays)`);
  const py = spawnSync('/usr/bin/python3', ['-c', `
import sys, time, torch
t = time.time(); ck = torch.load(sys.argv[1], weights_only=True); r = time.time() - t
t = time.time(); torch.save(ck, sys.argv[1] + ".torch"); w = time.time() - t
print(f"{w * 1000:.0f} {r * 1000:.0f}")`, path], { encoding: 'utf8', timeout: 300_000 });
  if (py.status === 0) {
    const [tw, tr] = py.stdout.trim().split(' ').map(Number) as [number, number];
    console.log(`torch    write ${tw} ms   read ${tr} ms (torch.save, torch.load weights_only)`);
    console.log(`ratio    write ${(write / tw).toFixed(2)}x   read ${(read / tr).toFixed(2)}x torch's time`);
  } else {
    console.log('torch anchor skipped: /usr/bin/python3 has no torch');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
