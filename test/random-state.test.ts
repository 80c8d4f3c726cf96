/** The fp-ts State<Key, A> helpers thread a key exactly as splitting by hand does. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pipe } from 'fp-ts/lib/function.js';
import { draw, evalRandom, key, nextKey, normal, split, State, uniform } from '../src/random/index.ts';

test('nextKey splits the state: the value is the first child, the new state the second', () => {
  const k = key(7);
  const [sub, rest] = nextKey(k);
  assert.equal([sub, rest], split(k));
});

test('a chain of draws equals the same draws with keys split by hand', () => {
  const program = pipe(
    draw((k) => uniform(k, [3])),
    State.chain((u) => pipe(draw((k) => normal(k, [2])), State.map((n) => [u, n] as const))),
  );
  const [u, n] = evalRandom(program, key(42));
  const [k1, rest] = split(key(42));
  const [k2] = split(rest);
  assert.equal(Array.from(u.dataSync()), Array.from(uniform(k1, [3]).dataSync()));
  assert.equal(Array.from(n.dataSync()), Array.from(normal(k2, [2]).dataSync()));
});

test('evalRandom of one draw is the draw from the first child of the start key; another start key gives other values', () => {
  const program = draw((k) => uniform(k, [4]));
  const a = evalRandom(program, key(1)).dataSync();
  assert.equal(Array.from(a), Array.from(uniform(split(key(1))[0], [4]).dataSync()));
  assert.not.equal(Array.from(a), Array.from(evalRandom(program, key(2)).dataSync()));
});

test.run();
