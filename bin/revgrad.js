#!/usr/bin/env node
// The `revgrad` command: load the TypeScript sources through tsx (a runtime dependency) and run the CLI.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
