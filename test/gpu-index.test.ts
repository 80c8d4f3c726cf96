/**
 * The GPU form of kernel index math (codegen.ts splitIndex / floorDiv) is exact even where the GPU's
 * float32 division is not. The generated statements are evaluated here in JavaScript with every value
 * rounded to float32 and the one division replaced by an adversarial one: the float32 quotient moved by
 * up to 3 ulps towards zero or away from it (WGSL allows 2.5 ulp). The plain host form, run through the
 * same bad division, does go wrong: that shows the test can fail. Values cover every n's multiples and
 * their neighbours near 2^12, 2^16, 2^20, 2^23 and the top of the range (2^24 - 8).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { floorDiv, splitIndex } from '../src/tensor/codegen.ts';

const f32 = Math.fround;
/** The float32 neighbour `k` ulps from x (k may be negative). */
function ulpStep(x: number, k: number): number {
  const b = new Float32Array([x]);
  const u = new Int32Array(b.buffer);
  u[0] += x >= 0 ? k : -k;
  return b[0];
}

/**
 * Compile generated kernel statements into a JS function of `x` returning the named variables, with
 * float32 rounding on every arithmetic result and `a / b` replaced by `div(a, b)`.
 */
function compile(statements: string, inputs: string[], outputs: string[]): (div: (a: number, b: number) => number, ...xs: number[]) => number[] {
  let src = statements.replace(/Math\.floor\(\((.+?) \+ 0\.5\) \/ (\d+)\)/g, 'Math.floor(div(f32($1 + 0.5), $2))');
  src = src.replace(/Math\.floor\(([^()]+) \/ (\d+)\)/g, 'Math.floor(div($1, $2))');
  src = src.replace(/(\w+) % (\d+)/g, '($1 - $2 * Math.trunc(div($1, $2)))');
  src = src.replace(/\((\w+) - (\w+)\) \/ (\d+)/g, 'div($1 - $2, $3)');
  assert.not.match(src, /[^/]\/ \d/, `a division escaped the rewrite:\n${src}`);
  const body = `let ${inputs.map((n, i) => `${n} = xs[${i}]`).join(', ')};\n${src.replace(/\bconst\b/g, 'let')}\nreturn [${outputs.join(', ')}];`;
  const fn = new Function('div', 'f32', 'xs', body) as (div: (a: number, b: number) => number, f: typeof f32, xs: number[]) => number[];
  return (div, ...xs) => fn(div, f32, xs);
}

const divisions = {
  exact: (a: number, b: number) => f32(a / b),
  low: (a: number, b: number) => ulpStep(f32(a / b), -3),
  high: (a: number, b: number) => ulpStep(f32(a / b), 3),
};

const sizes = [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 49, 96, 97, 196, 384, 1000, 3136, 4099, 65537, 1 << 20, 5_000_011];
/** Exact multiples and their neighbours over the whole float32-exact range, plus small values. */
function values(n: number): number[] {
  const out = new Set<number>();
  for (let x = 0; x < 300; x++) out.add(x);
  for (const top of [2 ** 12, 2 ** 16, 2 ** 20, 2 ** 23, 2 ** 24 - 8 - n, 2 ** 24 - 8]) {
    const q = Math.floor(top / n);
    for (let d = -2; d <= 2; d++) for (const e of [-1, 0, 1]) out.add((q + d) * n + e);
  }
  return [...out].filter((x) => x >= 0 && x <= 2 ** 24 - 8);
}

test('splitIndex (GPU form) gives r mod n and floor(r / n) under a division off by 3 ulps', () => {
  for (const n of sizes) {
    const run = compile(splitIndex('r', 'c', n, true), ['r'], ['c', 'r']);
    for (const x of values(n)) {
      for (const [name, div] of Object.entries(divisions)) {
        const [c, q] = run(div, x);
        if (c !== x % n || q !== Math.floor(x / n)) assert.unreachable(`n=${n}, r=${x}, ${name} division: got c=${c}, q=${q}; want ${x % n}, ${Math.floor(x / n)}`);
      }
    }
  }
});

test('floorDiv (GPU form) gives floor(x / n) for negative and positive x under a bad division', () => {
  for (const n of sizes) {
    const run = compile(floorDiv('u', n, 'q', true), ['u'], ['q']);
    for (const x of [...values(n), ...values(n).map((v) => -v)]) {
      for (const [name, div] of Object.entries(divisions)) {
        const [q] = run(div, x);
        if (q !== Math.floor(x / n)) assert.unreachable(`n=${n}, x=${x}, ${name} division: got ${q}, want ${Math.floor(x / n)}`);
      }
    }
  }
});

test('the host forms are exact with an exact division but not with a bad one (the test can fail)', () => {
  let wrong = 0;
  for (const n of sizes) {
    const split = compile(splitIndex('r', 'c', n, false), ['r'], ['c', 'r']);
    const div = compile(floorDiv('u', n, 'q', false), ['u'], ['q']);
    for (const x of values(n)) {
      const [c, q] = split(divisions.exact, x);
      assert.is(c, x % n);
      assert.is(q, Math.floor(x / n));
      assert.is(div(divisions.exact, x)[0], Math.floor(x / n));
      const [c2, q2] = split(divisions.low, x);
      if (c2 !== x % n || q2 !== Math.floor(x / n) || div(divisions.low, x)[0] !== Math.floor(x / n)) wrong++;
    }
  }
  assert.ok(wrong > 100, `the plain forms should break under a low division; broke ${wrong} times`);
});

test('the host forms are the code the kernels always had (webasm/cpu kernel sources unchanged)', () => {
  assert.is(splitIndex('r', 'c3', 7, false), 'const c3 = r % 7;\nr = (r - c3) / 7;\n');
  assert.is(splitIndex('r', 'c0', 7, false, false), 'const c0 = r % 7;\n');
  assert.is(floorDiv('co', 4, 'gi', false), 'const gi = Math.floor(co / 4);\n');
});

test.run();
