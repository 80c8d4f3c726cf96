/**
 * The zip container of PyTorch checkpoints (torch.save since 1.6), read and written on plain bytes.
 *
 * Reading parses the central directory itself, checking every offset and size against the file
 * before anything is allocated from it, and verifies each entry's CRC-32 when the entry is read.
 * torch writes entries stored (uncompressed); deflated entries (a checkpoint re-zipped by another
 * tool) are inflated by fflate into a buffer of the declared size, after checking that size against
 * deflate's maximum ratio. ZIP64 records (files over 4 GiB) are understood; encryption and other
 * compression methods are refused. Entries are read lazily: a tool that needs only the model's
 * storages never touches the optimizer's.
 *
 * Writing produces what torch's writer (miniz) produces: stored entries whose data starts on a
 * 64-byte boundary (padding in the local header's extra field), fixed timestamps, no ZIP64.
 */
import { inflateSync } from 'fflate';
import { RevgradError } from '../tensor/errors.ts';

export type ZipErrorCode = 'zip' | 'truncated' | 'crc' | 'limit';

export class ZipError extends RevgradError {
  override name = 'ZipError';
  constructor(
    readonly code: ZipErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ZipEntry {
  readonly name: string;
  /** 0 stored, 8 deflate. */
  readonly method: number;
  readonly crc32: number;
  readonly compressedSize: number;
  readonly size: number;
  /** Offset of the entry's data in the file (after its local header). */
  readonly dataOffset: number;
}

export interface ZipArchive {
  /** Entries in central-directory order. */
  readonly entries: ReadonlyMap<string, ZipEntry>;
  /** The entry's bytes, CRC-checked; stored entries are views into the file's bytes, not copies. */
  read(name: string): Uint8Array;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** Deflate cannot expand data by more than about 1032:1, so a larger declared size is a lie. */
const MAX_DEFLATE_RATIO = 1032;
/** Above this a single entry cannot be one typed array in every JavaScript engine. */
const MAX_ENTRY_BYTES = 2 ** 31 - 1;

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, as zip uses it)

/** Slicing-by-8 tables: TABLES[k][b] is the CRC of byte b followed by k zero bytes (8 bytes per step). */
const CRC_TABLES = (() => {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    tables[0]![n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) tables[k]![n] = (tables[k - 1]![n]! >>> 8) ^ tables[0]![tables[k - 1]![n]! & 0xff]!;
  }
  return tables;
})();

/**
 * Node's native zlib.crc32 (Node >= 20.15) is 2-3x faster on big storages; browsers use the tables.
 * process.getBuiltinModule keeps node:zlib out of the static module graph (the package's main entry
 * must bundle for browsers).
 */
const nativeCrc32: ((bytes: Uint8Array) => number) | null = (() => {
  try {
    const builtin = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule;
    const zlib = builtin?.('node:zlib') as { crc32?: (bytes: Uint8Array) => number } | undefined;
    if (zlib === undefined) return null;
    return typeof zlib.crc32 === 'function' ? zlib.crc32 : null;
  } catch {
    return null;
  }
})();

export function crc32(bytes: Uint8Array): number {
  return nativeCrc32 !== null ? nativeCrc32(bytes) >>> 0 : crc32Tables(bytes);
}

/** CRC-32 with slicing-by-8 tables (exported for the test that compares it with the native one). */
export function crc32Tables(bytes: Uint8Array): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = 0xffffffff;
  let i = 0;
  const n8 = bytes.length - (bytes.length % 8);
  for (; i < n8; i += 8) {
    const lo = (c ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))) >>> 0;
    c =
      t7[lo & 0xff]! ^ t6[(lo >>> 8) & 0xff]! ^ t5[(lo >>> 16) & 0xff]! ^ t4[lo >>> 24]! ^
      t3[bytes[i + 4]!]! ^ t2[bytes[i + 5]!]! ^ t1[bytes[i + 6]!]! ^ t0[bytes[i + 7]!]!;
  }
  for (; i < bytes.length; i++) c = t0[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Little-endian reads that fail (instead of returning garbage) past the end of the bytes. */
class Reader {
  private readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    private readonly where: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(offset: number, n: number, what: string): void {
    if (!(offset >= 0 && offset + n <= this.bytes.length)) {
      throw new ZipError('truncated', `${this.where}: ${what} at byte ${offset} runs past the end of the ${this.bytes.length}-byte file`);
    }
  }
  u16(offset: number, what: string): number {
    this.need(offset, 2, what);
    return this.view.getUint16(offset, true);
  }
  u32(offset: number, what: string): number {
    this.need(offset, 4, what);
    return this.view.getUint32(offset, true);
  }
  /** A u64 that must fit a safe integer (it is an offset or a size inside this file). */
  u64(offset: number, what: string): number {
    this.need(offset, 8, what);
    const v = this.view.getBigUint64(offset, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError('zip', `${this.where}: ${what} ${v} is not a plausible offset or size`);
    return Number(v);
  }
  slice(offset: number, n: number, what: string): Uint8Array {
    this.need(offset, n, what);
    return this.bytes.subarray(offset, offset + n);
  }
}

function findEndOfCentralDirectory(r: Reader, where: string): number {
  const bytes = r.bytes;
  const last = bytes.length - EOCD_SIZE;
  const first = Math.max(0, last - MAX_COMMENT);
  for (let i = last; i >= first; i--) {
    // The comment length must reach exactly to the end of the file, so a signature inside a comment does not match.
    if (bytes[i] === 0x50 && bytes[i + 1] === 0x4b && bytes[i + 2] === 0x05 && bytes[i + 3] === 0x06 && i + EOCD_SIZE + r.u16(i + 20, 'comment length') === bytes.length) {
      return i;
    }
  }
  throw new ZipError(bytes.length < EOCD_SIZE ? 'truncated' : 'zip', `${where}: no zip end-of-central-directory record (the file is cut short or is not a zip archive)`);
}

interface Directory {
  readonly count: number;
  readonly offset: number;
  readonly size: number;
}

function centralDirectory(r: Reader, eocd: number, where: string): Directory {
  const disk = r.u16(eocd + 4, 'disk number');
  const cdDisk = r.u16(eocd + 6, 'central directory disk');
  if (disk !== 0 || cdDisk !== 0) throw new ZipError('zip', `${where}: multi-disk zip archives are not supported`);
  let count = r.u16(eocd + 10, 'entry count');
  let size = r.u32(eocd + 12, 'central directory size');
  let offset = r.u32(eocd + 16, 'central directory offset');
  if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
    const locator = eocd - 20;
    if (locator < 0 || r.u32(locator, 'ZIP64 locator') !== SIG_ZIP64_LOCATOR) {
      throw new ZipError('zip', `${where}: the end record asks for ZIP64 but there is no ZIP64 locator`);
    }
    const record = r.u64(locator + 8, 'ZIP64 end record offset');
    if (r.u32(record, 'ZIP64 end record') !== SIG_ZIP64_EOCD) throw new ZipError('zip', `${where}: bad ZIP64 end record signature at byte ${record}`);
    count = r.u64(record + 32, 'ZIP64 entry count');
    size = r.u64(record + 40, 'ZIP64 central directory size');
    offset = r.u64(record + 48, 'ZIP64 central directory offset');
  }
  if (offset + size > eocd) {
    throw new ZipError('truncated', `${where}: central directory [${offset}, ${offset + size}) overlaps the end record at ${eocd}`);
  }
  // Each central entry takes at least 46 bytes: a count beyond that is a lie that would make us loop.
  if (count * 46 > size) throw new ZipError('zip', `${where}: ${count} entries cannot fit a ${size}-byte central directory`);
  return { count, offset, size };
}

/** ZIP64 extended information (extra field 0x0001): the 64-bit values of the fields set to 0xFFFFFFFF. */
function zip64Values(r: Reader, extraStart: number, extraLength: number, wanted: readonly boolean[], where: string): number[] {
  const out: number[] = [];
  let p = extraStart;
  const end = extraStart + extraLength;
  while (p + 4 <= end) {
    const id = r.u16(p, 'extra field id');
    const length = r.u16(p + 2, 'extra field length');
    if (p + 4 + length > end) break;
    if (id === 0x0001) {
      let q = p + 4;
      for (const w of wanted) {
        if (!w) continue;
        if (q + 8 > p + 4 + length) throw new ZipError('zip', `${where}: ZIP64 extra field too short`);
        out.push(r.u64(q, 'ZIP64 value'));
        q += 8;
      }
      return out;
    }
    p += 4 + length;
  }
  throw new ZipError('zip', `${where}: sizes say ZIP64 but the entry has no ZIP64 extra field`);
}

const decodeName = (bytes: Uint8Array): string => new TextDecoder('utf-8', { fatal: false }).decode(bytes);

/**
 * Parses a zip archive's directory. Throws a `ZipError` for anything malformed; never allocates from
 * an unchecked size. `where` names the file in messages.
 */
export function openZip(bytes: Uint8Array, where = 'zip'): ZipArchive {
  const r = new Reader(bytes, where);
  const eocd = findEndOfCentralDirectory(r, where);
  const dir = centralDirectory(r, eocd, where);
  const entries = new Map<string, ZipEntry>();
  let p = dir.offset;
  for (let i = 0; i < dir.count; i++) {
    if (r.u32(p, 'central directory entry') !== SIG_CENTRAL) throw new ZipError('zip', `${where}: bad central directory entry ${i} at byte ${p}`);
    const flags = r.u16(p + 8, 'flags');
    const method = r.u16(p + 10, 'compression method');
    const crc = r.u32(p + 16, 'CRC-32');
    let compressedSize = r.u32(p + 20, 'compressed size');
    let size = r.u32(p + 24, 'size');
    const nameLength = r.u16(p + 28, 'name length');
    const extraLength = r.u16(p + 30, 'extra length');
    const commentLength = r.u16(p + 32, 'comment length');
    let localOffset = r.u32(p + 42, 'local header offset');
    const name = decodeName(r.slice(p + 46, nameLength, 'entry name'));
    const here = `${where}: entry '${name}'`;
    const wanted = [size === 0xffffffff, compressedSize === 0xffffffff, localOffset === 0xffffffff];
    if (wanted.some(Boolean)) {
      const values = zip64Values(r, p + 46 + nameLength, extraLength, wanted, here);
      if (wanted[0]) size = values.shift()!;
      if (wanted[1]) compressedSize = values.shift()!;
      if (wanted[2]) localOffset = values.shift()!;
    }
    p += 46 + nameLength + extraLength + commentLength;
    if (p > dir.offset + dir.size) throw new ZipError('zip', `${here} runs past the central directory`);
    if (flags & 1) throw new ZipError('zip', `${here} is encrypted`);
    if (method !== 0 && method !== 8) throw new ZipError('zip', `${here} uses compression method ${method}; only stored (0) and deflate (8) are supported`);
    if (method === 0 && compressedSize !== size) throw new ZipError('zip', `${here} is stored but its sizes differ (${compressedSize} vs ${size})`);
    if (size > MAX_ENTRY_BYTES) throw new ZipError('limit', `${here} is ${size} bytes, over the ${MAX_ENTRY_BYTES}-byte limit of one entry`);
    if (method === 8 && size > compressedSize * MAX_DEFLATE_RATIO + 1024) {
      throw new ZipError('zip', `${here} claims ${size} bytes from ${compressedSize} deflated bytes, more than deflate can produce`);
    }
    if (r.u32(localOffset, 'local header') !== SIG_LOCAL) throw new ZipError('zip', `${here}: no local header at byte ${localOffset}`);
    const dataOffset = localOffset + 30 + r.u16(localOffset + 26, 'local name length') + r.u16(localOffset + 28, 'local extra length');
    if (dataOffset + compressedSize > dir.offset) {
      throw new ZipError('truncated', `${here}: data [${dataOffset}, ${dataOffset + compressedSize}) runs into the central directory at ${dir.offset}`);
    }
    if (entries.has(name)) throw new ZipError('zip', `${here} appears twice`);
    entries.set(name, { name, method, crc32: crc, compressedSize, size, dataOffset });
  }
  return {
    entries,
    read(name) {
      const e = entries.get(name);
      if (e === undefined) throw new ZipError('zip', `${where}: no entry '${name}'`);
      const raw = bytes.subarray(e.dataOffset, e.dataOffset + e.compressedSize);
      let data: Uint8Array;
      if (e.method === 0) data = raw;
      else {
        try {
          data = inflateSync(raw, { out: new Uint8Array(e.size) });
        } catch (cause) {
          throw new ZipError('zip', `${where}: entry '${name}' does not inflate: ${(cause as Error).message}`);
        }
        if (data.length !== e.size) throw new ZipError('zip', `${where}: entry '${name}' inflates to ${data.length} bytes, expected ${e.size}`);
      }
      const actual = crc32(data);
      if (actual !== e.crc32) {
        throw new ZipError('crc', `${where}: entry '${name}' is corrupt (CRC-32 ${hex(actual)}, expected ${hex(e.crc32)})`);
      }
      return data;
    },
  };
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

// ---------------------------------------------------------------------------------------------
// Writing

/** torch's writer aligns every entry's data to this many bytes, so storages can be memory-mapped. */
const ALIGNMENT = 64;
/** DOS date 1980-01-01, time 00:00: fixed, so equal inputs give equal files. */
const DOS_DATE = 0x0021;
const DOS_TIME = 0;

/** A zip of stored entries, in the given order, each entry's data 64-byte aligned. */
export function writeZip(files: readonly (readonly [name: string, data: Uint8Array])[]): Uint8Array {
  const encoder = new TextEncoder();
  const layout: { name: Uint8Array; data: Uint8Array; crc: number; offset: number; padding: number }[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const nameBytes = encoder.encode(name);
    const headerEnd = offset + 30 + nameBytes.length;
    // An extra field needs at least its 4-byte header, so pad to the boundary after that.
    let padding = (ALIGNMENT - ((headerEnd + 4) % ALIGNMENT)) % ALIGNMENT;
    padding = headerEnd % ALIGNMENT === 0 ? 0 : padding + 4;
    layout.push({ name: nameBytes, data, crc: crc32(data), offset, padding });
    offset = headerEnd + padding + data.length;
  }
  const centralOffset = offset;
  const centralSize = layout.reduce((s, e) => s + 46 + e.name.length, 0);
  const total = centralOffset + centralSize + EOCD_SIZE;
  if (total > 0xfffffffe || layout.length >= 0xffff) {
    throw new ZipError('limit', `zip: ${layout.length} entries in ${total} bytes need ZIP64, which this writer does not produce (limit 4 GiB, 65534 entries)`);
  }
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  for (const e of layout) {
    let p = e.offset;
    v.setUint32(p, SIG_LOCAL, true);
    v.setUint16(p + 4, 20, true); // version needed
    v.setUint16(p + 6, 0x0800, true); // UTF-8 names
    v.setUint16(p + 8, 0, true); // stored
    v.setUint16(p + 10, DOS_TIME, true);
    v.setUint16(p + 12, DOS_DATE, true);
    v.setUint32(p + 14, e.crc, true);
    v.setUint32(p + 18, e.data.length, true);
    v.setUint32(p + 22, e.data.length, true);
    v.setUint16(p + 26, e.name.length, true);
    v.setUint16(p + 28, e.padding, true);
    out.set(e.name, p + 30);
    p += 30 + e.name.length;
    if (e.padding > 0) {
      // miniz's padding field: id 'FB', then filler bytes.
      v.setUint16(p, 0x4246, true);
      v.setUint16(p + 2, e.padding - 4, true);
      out.fill(0x5a, p + 4, p + e.padding);
    }
    out.set(e.data, p + e.padding);
  }
  let p = centralOffset;
  for (const e of layout) {
    v.setUint32(p, SIG_CENTRAL, true);
    v.setUint16(p + 4, 20, true); // version made by
    v.setUint16(p + 6, 20, true); // version needed
    v.setUint16(p + 8, 0x0800, true);
    v.setUint16(p + 10, 0, true);
    v.setUint16(p + 12, DOS_TIME, true);
    v.setUint16(p + 14, DOS_DATE, true);
    v.setUint32(p + 16, e.crc, true);
    v.setUint32(p + 20, e.data.length, true);
    v.setUint32(p + 24, e.data.length, true);
    v.setUint16(p + 28, e.name.length, true);
    // extra, comment, disk, internal and external attributes: 0
    v.setUint32(p + 42, e.offset, true);
    out.set(e.name, p + 46);
    p += 46 + e.name.length;
  }
  v.setUint32(p, SIG_EOCD, true);
  v.setUint16(p + 8, layout.length, true);
  v.setUint16(p + 10, layout.length, true);
  v.setUint32(p + 12, centralSize, true);
  v.setUint32(p + 16, centralOffset, true);
  return out;
}
