#!/usr/bin/env bash
# The GPU check for a lent NVIDIA machine (dev-only): our webgpu backend (Dawn over NVIDIA's EGL) beside
# PyTorch CUDA on the same GPU. Prints, and writes to $OUT (or runs/gpu-check):
#   - correctness of every primitive, the reversible laws and golden fixtures on this GPU (vs webasm);
#   - matmul GFLOP/s at N = 1024, 2048, 4096, 8192: ours (both GPU kernels) and torch.matmul fp32 (TF32 off);
#   - AdamW training-step time on synthetic data: Rev-MViT tiny (bench/revmvit-tiny.json) at batch 8 and 64,
#     REV_VIT_S at batch 32, ours reversible and store beside PyTorch (bench/torch_revmvit.py) store/reversible.
#
#   bash bench/gpu-check.sh prepare    here, once per source change: bundles bench/gpu-check.ts with our code
#                                      into .node/run.tar.xz (plus the gpu.js and webgpu packages), compresses
#                                      this machine's node to .node/node.xz, downloads glvnd's EGL debs to .gl/
#                                      (.node/ and .gl/ are git-ignored; about 45 MiB together)
#   bash bench/gpu-check.sh run        on the GPU machine (nothing is fetched there), with the device tool:
#                                      run(command="bash bench/gpu-check.sh run", carry=[".node", ".gl"], timeout_s=590)
#   bash bench/gpu-check.sh dry        here: prepare if needed, then the same run path with tiny sizes on
#                                      Mesa llvmpipe (no GPU, no torch needed): tests the whole script
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}

prepare() {
  mkdir -p .node .gl
  echo "== bundling bench/gpu-check.ts"
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/run/node_modules"
  node_modules/.bin/esbuild bench/gpu-check.ts --bundle --platform=node --format=esm --target=node20 \
    --external:gpu.js --external:webgpu --external:gl \
    --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
    --outfile="$stage/run/gpu-check.mjs" --log-level=warning
  # Runtime packages the bundle leaves external: gpu.js (its src only), its deps, and webgpu for linux-x64.
  mkdir -p "$stage/run/node_modules/gpu.js" "$stage/run/node_modules/webgpu/dist"
  cp -r node_modules/gpu.js/package.json node_modules/gpu.js/src "$stage/run/node_modules/gpu.js/"
  cp -r node_modules/acorn node_modules/gpu-mock.js "$stage/run/node_modules/"
  cp node_modules/webgpu/package.json node_modules/webgpu/index.js "$stage/run/node_modules/webgpu/"
  cp -r node_modules/webgpu/dist/linux-x64 "$stage/run/node_modules/webgpu/dist/"
  git rev-parse HEAD > "$stage/run/SOURCE_COMMIT"
  (git status --porcelain src test bench laws | sha1sum | cut -c1-12) > "$stage/run/SOURCE_DIRTY"
  tar -C "$stage" -cf - run | xz -T2 -6 > .node/run.tar.xz
  rm -rf "$stage"
  if [ ! -s .node/node.xz ] || [ "$(cat .node/node.version 2>/dev/null)" != "$(node --version)" ]; then
    echo "== compressing node $(node --version) (this machine's binary; glibc-linked, runs on Ubuntu 24.04)"
    xz -T2 -6 -c "$(command -v node)" > .node/node.xz
    node --version > .node/node.version
  fi
  if ! ls .gl/libegl1_*.deb >/dev/null 2>&1; then
    echo "== downloading glvnd's EGL dispatch debs (Debian) to .gl/"
    (cd .gl && apt-get download libegl1 libglvnd0 libgles2)
  fi
  du -sh .node .gl
}

run() {
  local dry=""
  [ "${1:-}" = "--dry" ] && dry="--dry"
  local out=${OUT:-$ROOT/runs/gpu-check}
  mkdir -p "$out"
  local log="$out/gpu-check.log"
  : > "$log"
  say() { echo "$@" | tee -a "$log"; }
  local W
  W=$(mktemp -d /tmp/revgrad-gpu.XXXX)
  [ -s .node/node.xz ] && [ -s .node/run.tar.xz ] || { say "FATAL: .node/ is missing: run 'bash bench/gpu-check.sh prepare' first and carry .node and .gl"; exit 2; }
  xz -dc .node/node.xz > "$W/node" && chmod +x "$W/node"
  tar -C "$W" -xJf .node/run.tar.xz
  mkdir -p "$W/gl"
  for d in .gl/*.deb; do dpkg-deb -x "$d" "$W/gl"; done
  local lib="$W/gl/usr/lib/x86_64-linux-gnu"
  ln -sf libEGL.so.1 "$lib/libEGL.so"
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "== revgrad gpu-check $(date -u +%FT%TZ), bundle of $(cat "$W/run/SOURCE_COMMIT") (worktree changes $(cat "$W/run/SOURCE_DIRTY")), node $("$W/node" --version)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"; fi
  local have_torch=0
  if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then have_torch=1; fi

  # 1. PyTorch matmul first (fast; a number even if a later stage runs out of time).
  if [ $have_torch = 1 ]; then
    say ""
    say "== torch.matmul fp32 (TF32 off), CUDA, N x N, device-resident (no transfers)"
    timeout 120 python3 - "$dry" <<'PY' 2>&1 | tee -a "$log" || say "torch matmul: failed or timed out"
import sys, time, json, torch
torch.backends.cuda.matmul.allow_tf32 = False
sizes = [64, 128] if sys.argv[1] == "--dry" else [1024, 2048, 4096, 8192]
print(f"  torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
for n in sizes:
    a = torch.rand(n, n, device="cuda") * 2 - 1
    b = torch.rand(n, n, device="cuda") * 2 - 1
    for _ in range(3): a @ b
    torch.cuda.synchronize()
    reps = 20 if n <= 4096 else 10
    t0 = time.perf_counter()
    for _ in range(reps): c = a @ b
    torch.cuda.synchronize()
    t = (time.perf_counter() - t0) / reps
    # with the host round trip ours pays: upload a and b, read c back
    ah, bh = a.cpu(), b.cpu()
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    for _ in range(3):
        c = (ah.cuda() @ bh.cuda()).cpu()
    t_rt = (time.perf_counter() - t1) / 3
    print(f"  torch N={n:5d}: {t*1e3:9.2f} ms {2*n**3/t/1e9:10.1f} GFLOP/s   with upload+readback: {t_rt*1e3:8.2f} ms {2*n**3/t_rt/1e9:9.1f} GFLOP/s")
PY
  else
    say "(no torch with CUDA here: PyTorch numbers skipped)"
  fi

  # 2. Ours: correctness, matmul, training steps; also exports the model configs for PyTorch.
  say ""
  local budget=420
  [ -n "$dry" ] && budget=900
  set +e
  timeout "$budget" "$W/node" "$W/run/gpu-check.mjs" $dry ${GPU_CHECK_FLAGS:-} --out "$out" --fixtures "$ROOT/test/fixtures" --tiny-config "$ROOT/bench/revmvit-tiny.json" 2>&1 \
    | grep -v -e '^Warning: maxDynamic' | tee -a "$log"
  local ours=${PIPESTATUS[0]}
  set -e
  [ "$ours" = 0 ] || say "ours: exit status $ours (124 = out of time)"

  # 3. PyTorch training steps on the same models (configs exported by step 2).
  if [ $have_torch = 1 ] && [ -s "$out/torch-cases.json" ]; then
    say ""
    say "== PyTorch AdamW step (bench/torch_revmvit.py), CUDA fp32, median of 10 after 3 warm-up steps"
    python3 - "$out" <<'PY' | while read -r cfg batch name; do
import json, sys
cases = json.load(open(f"{sys.argv[1]}/torch-cases.json"))["cases"]
for i, c in enumerate(cases):
    path = f"{sys.argv[1]}/case{i}.json"
    json.dump(c["config"], open(path, "w"))
    print(path, c["batch"], c["name"])
PY
      timeout 120 python3 bench/torch_revmvit.py "$cfg" --batch "$batch" --device cuda --steps 10 </dev/null 2>&1 \
        | sed "s|^|  torch $name b$batch: |" | tee -a "$log" || say "  torch $name b$batch: failed or timed out"
    done
  fi
  rm -rf "$W"
  say ""
  say "log: $log"
}

case "$MODE" in
  prepare) prepare ;;
  run) shift || true; run "${1:-}" ;;
  dry)
    [ -s .node/run.tar.xz ] || prepare
    run --dry
    ;;
  *) echo "usage: bash bench/gpu-check.sh prepare | run | dry" >&2; exit 2 ;;
esac
