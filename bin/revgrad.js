#!/usr/bin/env node
// The `revgrad` command: load the TypeScript sources through tsx (a runtime dependency) and run the CLI.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
