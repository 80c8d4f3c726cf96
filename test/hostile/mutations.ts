/**
 * Hostile inputs for every reader: seeded mutations of safetensors files (weights, checkpoints,
 * fixtures) and of JSON configs, of the kinds the issue-16 probe used (bit flips, truncation, forged
 * header lengths, edited and deeply nested JSON, tampered metadata, NaN weights, floods of empty
 * tensors, huge lists). Shared by the fuzz laws (laws/readers.test.ts), the corpus generator
 * (test/hostile/generate.ts) and the long fuzz run (bench/fuzz-readers.ts). Every mutation is a pure
 * function of its input and a seed, so a failing case reproduces from (kind, seed).
 */

import { rng } from '../../src/laws/numeric.ts';

export type Rand = () => number;

/** The law kit's mulberry32 (a small seeded PRNG in [0, 1)). */
export const rngOf = (seed: number): Rand => rng(seed);

const int = (r: Rand, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const pick = <A>(r: Rand, xs: readonly A[]): A => xs[Math.floor(r() * xs.length)]!;

/** Nested arrays `depth` levels deep, as JSON text. */
export const deepJson = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);

/** Values that break readers that trust their input: wrong types, huge, negative, fractional, deep. */
export const HOSTILE_VALUES: readonly unknown[] = [
  -5, -1, 0, 0.5, 1.5, 1e9, 1e18, 2 ** 53 + 2, 1e300, -1e300, 'abc', '', 'NaN', '-5', '1e999', null, true, false, [], {},
  [1e6], [-1, -1], Array.from({ length: 5000 }, (_, i) => i), { __proto__: null, a: 1 }, { constructor: 1 },
];

/** Text values for string fields (safetensors metadata is a string map). */
export const HOSTILE_STRINGS: readonly string[] = [
  '', 'abc', '-5', '1e999', 'NaN', '-0', '1.5', '9007199254740993', '[', '{', 'null', '[]', '{}', '"x"', '[1,2,3]',
  '{"__proto__":{"polluted":1}}', deepJson(100), deepJson(5000), JSON.stringify(Array.from({ length: 20000 }, (_, i) => i)),
  '\uFEFF{}', '\u0000', 'x'.repeat(100_000),
];

// ---------------------------------------------------------------------------------------------
// safetensors structure: header JSON (order kept) and data section

export interface SplitFile {
  /** [key, value] in file order (a JSON object would reorder integer-like keys). */
  readonly entries: [string, unknown][];
  readonly data: Uint8Array;
}

/** A valid file's header entries and data, or null when the file is not valid enough to split. */
export function splitFile(bytes: Uint8Array): SplitFile | null {
  if (bytes.length < 8) return null;
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true));
  if (n > bytes.length - 8) return null;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
    const root = JSON.parse(text) as Record<string, unknown>;
    if (typeof root !== 'object' || root === null || Array.isArray(root)) return null;
    // Key order: re-read the keys in text order (good enough for files our own writer made).
    const keys = Object.keys(root).sort((a, b) => text.indexOf(JSON.stringify(a)) - text.indexOf(JSON.stringify(b)));
    return { entries: keys.map((k) => [k, root[k]]), data: bytes.slice(8 + n) };
  } catch {
    return null;
  }
}

/** Header text (entries in the given order, written by hand so repeated keys survive) and data as a file. */
export function joinFile(entries: readonly [string, unknown][], data: Uint8Array, rawEntries: readonly string[] = []): Uint8Array {
  const fields = [...entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`), ...rawEntries];
  return withHeaderText(`{${fields.join(',')}}`, data);
}

export function withHeaderText(text: string, data: Uint8Array): Uint8Array {
  const header = new TextEncoder().encode(text);
  const padded = Math.ceil(header.length / 8) * 8;
  const out = new Uint8Array(8 + padded + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(header, 8);
  out.fill(0x20, 8 + header.length, 8 + padded);
  out.set(data, 8 + padded);
  return out;
}

interface TensorInfo {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const tensorEntries = (f: SplitFile) => f.entries.filter(([k]) => k !== '__metadata__') as [string, TensorInfo][];
const metadataOf = (f: SplitFile) => (f.entries.find(([k]) => k === '__metadata__')?.[1] ?? {}) as Record<string, string>;
const withMetadata = (f: SplitFile, metadata: Record<string, string>): [string, unknown][] => [
  ['__metadata__', metadata],
  ...f.entries.filter(([k]) => k !== '__metadata__'),
];

// ---------------------------------------------------------------------------------------------
// Mutations of safetensors files

export type BytesMutation = (bytes: Uint8Array, r: Rand) => Uint8Array;

/** `fixChecksum` recomputes the checkpoint checksum after edits that should be caught by later checks. */
export interface MutationContext {
  readonly fixChecksum?: (bytes: Uint8Array) => Uint8Array;
}

const headerLength = (bytes: Uint8Array) => Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true));

function flipBits(bytes: Uint8Array, r: Rand, from: number, to: number): Uint8Array {
  const out = bytes.slice();
  if (to <= from) return out;
  for (let i = int(r, 1, 8); i > 0; i--) out[int(r, from, to - 1)]! ^= 1 << int(r, 0, 7);
  return out;
}

/** Structure-preserving edits need a file that splits; others work on any bytes. */
const structural =
  (edit: (f: SplitFile, r: Rand) => Uint8Array): BytesMutation =>
  (bytes, r) => {
    const f = splitFile(bytes);
    return f === null ? flipBits(bytes, r, 0, bytes.length) : edit(f, r);
  };

export function safetensorsMutations(ctx: MutationContext = {}): Record<string, BytesMutation> {
  const fix = ctx.fixChecksum ?? ((b: Uint8Array) => b);
  return {
    bitflip: (b, r) => flipBits(b, r, 0, b.length),
    'header-bitflip': (b, r) => flipBits(b, r, 8, Math.min(b.length, 8 + headerLength(b))),
    'data-bitflip': (b, r) => flipBits(b, r, Math.min(b.length, 8 + headerLength(b)), b.length),
    truncate: (b, r) => b.slice(0, int(r, 0, Math.max(0, b.length - 1))),
    append: (b, r) => {
      const extra = Uint8Array.from({ length: int(r, 1, 64) }, () => int(r, 0, 255));
      const out = new Uint8Array(b.length + extra.length);
      out.set(b);
      out.set(extra, b.length);
      return out;
    },
    'length-prefix': (b, r) => {
      const out = b.slice();
      const n = b.length - 8;
      const v = pick(r, [0n, 1n, 2n, BigInt(Math.max(0, n - 1)), BigInt(n + 1), BigInt(2 * n), 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(int(r, 0, 2 ** 31))]);
      if (out.length >= 8) new DataView(out.buffer).setBigUint64(0, v, true);
      return out;
    },
    'header-token': structural((f, r) => {
      // Replace one value somewhere in the header with a hostile one.
      const entries = f.entries.map(([k, v]) => [k, structuredClone(v)] as [string, unknown]);
      const [, target] = pick(r, entries);
      if (typeof target === 'object' && target !== null) {
        const keys = Object.keys(target);
        if (keys.length > 0) (target as Record<string, unknown>)[pick(r, keys)] = pick(r, HOSTILE_VALUES);
      } else {
        entries[int(r, 0, entries.length - 1)]![1] = pick(r, HOSTILE_VALUES);
      }
      return joinFile(entries, f.data);
    }),
    'deep-nesting': structural((f, r) => {
      const depth = pick(r, [65, 1000, 5000, 20000]);
      const where = pick(r, ['entry', 'shape', 'metadata']);
      if (where === 'metadata') return joinFile(f.entries.filter(([k]) => k !== '__metadata__'), f.data, [`"__metadata__":{"x":${deepJson(depth)}}`]);
      if (where === 'shape' && tensorEntries(f).length > 0) {
        const [name] = pick(r, tensorEntries(f));
        return joinFile(f.entries.filter(([k]) => k !== name), f.data, [`${JSON.stringify(name)}:{"dtype":"F32","shape":${deepJson(depth)},"data_offsets":[0,0]}`]);
      }
      return joinFile(f.entries, f.data, [`"deep":${deepJson(depth)}`]);
    }),
    'zero-size-flood': structural((f, r) => {
      const n = pick(r, [100, 1000, 10000]);
      const empty = Array.from({ length: n }, (_, i) => `"empty.${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
      return joinFile(f.entries, f.data, empty);
    }),
    'duplicate-key': structural((f, r) => {
      const [k, v] = pick(r, f.entries);
      return joinFile(f.entries, f.data, [`${JSON.stringify(k)}:${JSON.stringify(v)}`]);
    }),
    'metadata-value': structural((f, r) => {
      const metadata = { ...metadataOf(f) };
      const keys = Object.keys(metadata);
      const key = keys.length > 0 && r() < 0.8 ? pick(r, keys) : pick(r, ['format', 'step', 'seed', 'key', 'config', 'optimizer', 'training', 'checksum', 'kind', 'block_layer_id']);
      metadata[key] = pick(r, HOSTILE_STRINGS);
      return fix(joinFile(withMetadata(f, metadata), f.data));
    }),
    'metadata-json-field': structural((f, r) => {
      // A field inside a JSON-valued metadata entry (config, optimizer, training, key) gets a hostile value.
      const metadata = { ...metadataOf(f) };
      const jsonKeys = Object.keys(metadata).filter((k) => {
        try {
          const v = JSON.parse(metadata[k]!) as unknown;
          return typeof v === 'object' && v !== null;
        } catch {
          return false;
        }
      });
      if (jsonKeys.length === 0) return flipBits(joinFile(f.entries, f.data), r, 8, 16);
      const key = pick(r, jsonKeys);
      const value = JSON.parse(metadata[key]!) as unknown;
      metadata[key] = JSON.stringify(mutateJsonValue(value, r));
      return fix(joinFile(withMetadata(f, metadata), f.data));
    }),
    'metadata-type': structural((f, r) => {
      const metadata: Record<string, unknown> = { ...metadataOf(f) };
      const keys = Object.keys(metadata);
      if (keys.length > 0) metadata[pick(r, keys)] = pick(r, [5, null, [], {}, true]);
      return joinFile([['__metadata__', pick(r, [metadata, metadata, null, 'x', [], 7])], ...f.entries.filter(([k]) => k !== '__metadata__')], f.data);
    }),
    nonfinite: structural((f, r) => {
      // NaN or Infinity in one tensor, with the checksum made to match: later checks must catch it.
      const tensors = tensorEntries(f).filter(([, t]) => t.dtype === 'F32' && t.data_offsets[1] > t.data_offsets[0]);
      if (tensors.length === 0) return joinFile(f.entries, f.data);
      const data = f.data.slice();
      const view = new DataView(data.buffer);
      const [, t] = pick(r, tensors);
      const count = (t.data_offsets[1] - t.data_offsets[0]) / 4;
      for (let i = int(r, 1, 3); i > 0; i--) view.setFloat32(t.data_offsets[0] + 4 * int(r, 0, count - 1), pick(r, [NaN, Infinity, -Infinity]), true);
      return fix(joinFile(f.entries, data));
    }),
    'drop-tensor': structural((f, r) => {
      const tensors = tensorEntries(f);
      if (tensors.length === 0) return joinFile(f.entries, f.data);
      const [name, t] = pick(r, tensors);
      // Keep the layout valid: the dropped tensor's bytes go, later offsets shift.
      const [b, e] = t.data_offsets;
      const data = new Uint8Array(f.data.length - (e - b));
      data.set(f.data.subarray(0, b));
      data.set(f.data.subarray(e), b);
      const entries = f.entries
        .filter(([k]) => k !== name)
        .map(([k, v]): [string, unknown] => {
          if (k === '__metadata__') return [k, v];
          const o = v as TensorInfo;
          const shift = o.data_offsets[0] >= e ? e - b : 0;
          return [k, { ...o, data_offsets: [o.data_offsets[0] - shift, o.data_offsets[1] - shift] }];
        });
      return fix(joinFile(entries, data));
    }),
    'rename-tensor': structural((f, r) => {
      const tensors = tensorEntries(f);
      if (tensors.length === 0) return joinFile(f.entries, f.data);
      const [name] = pick(r, tensors);
      const to = pick(r, [`${name}.x`, '', '__proto__', 'constructor', `optim.m.${name}`, name.replace(/\d/, '9'), 'x'.repeat(10000)]);
      return fix(joinFile(f.entries.map(([k, v]) => [k === name ? to : k, v]), f.data));
    }),
    'reshape-tensor': structural((f, r) => {
      const tensors = tensorEntries(f);
      if (tensors.length === 0) return joinFile(f.entries, f.data);
      const [name, t] = pick(r, tensors);
      const n = t.shape.reduce((a, b) => a * b, 1);
      const shape = pick(r, [[n], [1, n], [...t.shape].reverse(), [n, 0], [n + 1], [-n], [n / 2, 2]]);
      return fix(joinFile(f.entries.map(([k, v]) => [k, k === name ? { ...t, shape } : v]), f.data));
    }),
    dtype: structural((f, r) => {
      const tensors = tensorEntries(f);
      if (tensors.length === 0) return joinFile(f.entries, f.data);
      const [name, t] = pick(r, tensors);
      const dtype = pick(r, ['F16', 'BF16', 'F64', 'I32', 'U8', 'BOOL', 'f32', '', 'F32 ']);
      return joinFile(f.entries.map(([k, v]) => [k, k === name ? { ...t, dtype } : v]), f.data);
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// Mutations of JSON values and config texts

/** Every path to a value inside a JSON value (objects and arrays), the root included. */
function paths(value: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(prefix);
  if (out.length > 2000) return out;
  if (Array.isArray(value)) value.forEach((v, i) => paths(v, [...prefix, i], out));
  else if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) paths(v, [...prefix, k], out);
  return out;
}

/** A copy of `value` with the value at one random path replaced by a hostile one. */
export function mutateJsonValue(value: unknown, r: Rand): unknown {
  const all = paths(value).filter((p) => p.length > 0);
  const copy = structuredClone(value) as Record<string | number, unknown>;
  if (all.length === 0) return pick(r, HOSTILE_VALUES);
  const path = pick(r, all);
  let at: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>;
  at[path[path.length - 1]!] = pick(r, HOSTILE_VALUES);
  return copy;
}

export type TextMutation = (text: string, r: Rand) => string;

/** Config fields whose large values cost memory or time, with values the probe used. */
export const RESOURCE_EDITS: readonly [string, string, unknown][] = [
  ['MVIT', 'EMBED_DIM', 1e9],
  ['MVIT', 'MLP_RATIO', 1e9],
  ['MVIT', 'DEPTH', 1e6],
  ['MVIT', 'DEPTH', 4000],
  ['MODEL', 'NUM_CLASSES', 1e9],
  ['DATA', 'INPUT_CHANNEL_NUM', [1e6]],
  ['DATA', 'NUM_FRAMES', 1e5],
  ['MVIT', 'DIM_MUL', Array.from({ length: 100_000 }, (_, i) => [i, 2])],
  ['MVIT', 'POOL_Q_STRIDE', Array.from({ length: 3000 }, (_, i) => [i, 1, 2, 2])],
];

export function configMutations(): Record<string, TextMutation> {
  const edit = (text: string, f: (cfg: Record<string, Record<string, unknown>>) => void) => {
    try {
      const cfg = JSON.parse(text) as Record<string, Record<string, unknown>>;
      f(cfg);
      return JSON.stringify(cfg);
    } catch {
      return text;
    }
  };
  return {
    value: (t, r) => {
      try {
        return JSON.stringify(mutateJsonValue(JSON.parse(t), r));
      } catch {
        return t;
      }
    },
    resource: (t, r) =>
      edit(t, (c) => {
        const [section, field, value] = pick(r, RESOURCE_EDITS);
        c[section] = { ...(c[section] ?? {}), [field]: value };
        if (field === 'TRAIN_CROP_SIZE') c[section]!.TEST_CROP_SIZE = value;
      }),
    'crop-size': (t, r) => edit(t, (c) => (c.DATA = { ...(c.DATA ?? {}), TRAIN_CROP_SIZE: pick(r, [1e5, 4096, 0, -16]), TEST_CROP_SIZE: pick(r, [1e5, 4096, 0]) })),
    'deep-nesting': (t, r) => edit(t, (c) => (c.MVIT = { ...(c.MVIT ?? {}), [pick(r, ['DEPTH', 'REV', 'X'])]: JSON.parse(deepJson(pick(r, [65, 1000, 5000]))) })),
    'deep-text': (_t, r) => deepJson(pick(r, [65, 5000, 50000])),
    'many-keys': (t, r) => edit(t, (c) => (c.MVIT = Object.fromEntries(Array.from({ length: pick(r, [100, 5000, 50000]) }, (_, i) => [`K${i}`, i])))),
    'huge-key': (t) => edit(t, (c) => (c.MVIT = { ...(c.MVIT ?? {}), ['K'.repeat(100_000)]: 1 })),
    'unknown-section': (t, r) => edit(t, (c) => (c[pick(r, ['MVTI', 'SOLVER', '__proto__', 'constructor', ''])] = { A: 1 })),
    truncate: (t, r) => t.slice(0, int(r, 0, Math.max(0, t.length - 1))),
    garbage: (_t, r) => String.fromCharCode(...Array.from({ length: int(r, 0, 200) }, () => int(r, 0, 0xffff))),
    bom: (t) => `\uFEFF${t}`,
    'not-object': (_t, r) => pick(r, ['[]', '1', '"x"', 'null', 'true', '', ' ', '[{}]']),
  };
}

// ---------------------------------------------------------------------------------------------
// Mutations of PySlowFast YAML configs (text; PyYAML's dialect)

/** Indented mappings `depth` levels deep (YAML block style). */
export const deepYaml = (depth: number): string => Array.from({ length: depth }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n') + ' 1\n';

export function yamlMutations(): Record<string, TextMutation> {
  const lineEdit = (t: string, r: Rand, f: (line: string) => string) => {
    const lines = t.split('\n');
    const i = int(r, 0, Math.max(0, lines.length - 1));
    lines[i] = f(lines[i] ?? '');
    return lines.join('\n');
  };
  return {
    'line-value': (t, r) =>
      lineEdit(t, r, (l) => (l.includes(':') ? `${l.slice(0, l.indexOf(':') + 1)} ${pick(r, ['1e999', '-5', 'abc', '[', '{', '!!python/object:os.system', '*missing', '&a [*a]', '(1, 2', '1000000000', 'None', '[' + '1,'.repeat(10000) + '1]', '"unterminated'])}` : l)),
    'line-drop': (t, r) => lineEdit(t, r, () => ''),
    'indent-break': (t, r) => lineEdit(t, r, (l) => `\t${l}`),
    'duplicate-key': (t, r) => {
      const lines = t.split('\n').filter((l) => /^\s+\w+:/.test(l));
      return lines.length > 0 ? t.replace(/\n(\s+)(\w+):/, (m) => `${m} 1\n${pick(r, lines)}`) : t;
    },
    'deep-block': (_t, r) => deepYaml(pick(r, [100, 2000, 10000])),
    'deep-flow': (_t, r) => `MVIT: {DEPTH: ${'['.repeat(pick(r, [65, 5000, 50000]))}}`,
    'alias-bomb': () => ['a: &a [x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 12 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`)].join('\n'),
    'python-tags': () => 'MVIT: !!python/object/apply:os.system ["echo pwned"]\n',
    'base-self': () => '_BASE_: ./self.yaml\n',
    'base-missing': (_t, r) => `_BASE_: ${pick(r, ['missing.yaml', '/etc/shadow', 'https://example.com/x.yaml', '~/x.yaml', '', '../../../../../etc/passwd'])}\n`,
    truncate: (t, r) => t.slice(0, int(r, 0, Math.max(0, t.length - 1))),
    garbage: (_t, r) => String.fromCharCode(...Array.from({ length: int(r, 0, 200) }, () => int(r, 0, 0xffff))),
    'huge-list': (t) => `${t}\nDATA:\n  INPUT_CHANNEL_NUM: [${Array.from({ length: 20_000 }, () => '1').join(', ')}]\n`,
  };
}

// ---------------------------------------------------------------------------------------------
// Mutations of torch.save checkpoints (.pyth): the zip, and the pickle inside it

export interface ZipAccess {
  readonly open: (bytes: Uint8Array) => { names: string[]; read: (name: string) => Uint8Array } | null;
  readonly write: (files: readonly (readonly [string, Uint8Array])[]) => Uint8Array;
}

/** Byte mutations of the archive, and pickle mutations re-zipped (with correct CRCs) to reach the unpickler. */
export function pythMutations(zip: ZipAccess): Record<string, BytesMutation> {
  const bytesLevel = safetensorsMutations();
  const rezip =
    (edit: (pkl: Uint8Array, r: Rand) => Uint8Array): BytesMutation =>
    (bytes, r) => {
      const a = zip.open(bytes);
      if (a === null) return bytesLevel.bitflip!(bytes, r);
      return zip.write(a.names.map((n) => [n, n.endsWith('data.pkl') ? edit(a.read(n), r) : a.read(n)] as const));
    };
  // Pickle protocol 2 opcodes: MARK '(', EMPTY_LIST ']', APPEND 'a', STOP '.', BININT1 'K'.
  const nested = (depth: number) => new Uint8Array([0x80, 2, ...Array.from({ length: depth }, () => 0x5d), ...Array.from({ length: depth - 1 }, () => 0x61), 0x2e]);
  return {
    bitflip: bytesLevel.bitflip!,
    truncate: bytesLevel.truncate!,
    append: bytesLevel.append!,
    'tail-bitflip': (b, r) => flipBits(b, r, Math.max(0, b.length - 200), b.length),
    'pickle-bitflip': rezip((p, r) => flipBits(p, r, 0, p.length)),
    'pickle-truncate': rezip((p, r) => p.slice(0, int(r, 0, Math.max(0, p.length - 1)))),
    'pickle-opcodes': rezip((p, r) => {
      const out = p.slice();
      for (let i = int(r, 1, 6); i > 0; i--) out[int(r, 0, out.length - 1)] = pick(r, [0x28, 0x5d, 0x61, 0x2e, 0x4b, 0x68, 0x71, 0x52, 0x62, 0x63, 0x8c, 0x94, 0x30, 0x31, 0x32]);
      return out;
    }),
    'pickle-deep': rezip((_p, r) => nested(pick(r, [1000, 50_000]))),
  };
}
