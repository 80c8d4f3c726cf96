/**
 * Retained and peak bytes of a Rev-MViT training step vs depth, reversible vs store.
 * Usage: node --import tsx bench/mvit-memory.ts [--json] [--batch N] [depths...]
 */
import { formatMemoryTable, memoryVsDepth } from '../src/models/mvit/memory.ts';

const args = process.argv.slice(2);
const json = args.includes('--json');
const bi = args.indexOf('--batch');
const batch = bi >= 0 ? Number(args[bi + 1]) : 2;
const depths = args.filter((a, i) => /^\d+$/.test(a) && args[i - 1] !== '--batch').map(Number);
const rows = memoryVsDepth(depths.length > 0 ? depths : [4, 8, 16, 32, 48], batch);
console.log(json ? JSON.stringify(rows, null, 2) : formatMemoryTable(rows));
