#!/usr/bin/env bash
# The GPU check for a lent NVIDIA machine (dev-only): our webgpu backend (Dawn over NVIDIA's EGL) beside
# PyTorch CUDA on the same GPU, in one run of under 10 minutes. Writes to $OUT (or runs/gpu-check) four
# files: gpu-check.log (everything printed), ours.json, torch.json and summary.json (ratios and the issue's
# targets):
#   - matmul GFLOP/s at N = 1024..8192: our tiled WGSL kernel (device-resident, every tiling) and the gpu.js
#     kernel (with transfers) beside torch.matmul fp32 (TF32 off);
#   - correctness on this GPU: device plans (test/plan-laws.ts: the compiled AdamW step = the eager step,
#     with 1 submission and 1 readback per step) and the eager backend laws and golden fixtures;
#   - the compiled AdamW training step (forward, backward, optimizer in one submission): Rev-MViT tiny
#     (bench/revmvit-tiny.json) at batch 8 and 64, REV_VIT_S at batch 32 and 128, reversible and store:
#     step time and device memory beside bench/torch_revmvit.py (step time, torch.cuda.max_memory_allocated).
#
#   bash bench/gpu-check.sh prepare    here (a machine with npm and apt), after every source change: bundles
#                                      bench/gpu-check.ts and gpu-summary.ts with our code into .node/run.tar.xz
#                                      (plus the gpu.js and webgpu packages), compresses this machine's node to
#                                      .node/node.xz, downloads glvnd's EGL (and the Vulkan loader) debs to .gl/
#                                      (.node/ and .gl/ are git-ignored; about 30 MiB together)
#   bash bench/gpu-check.sh run        on the GPU machine (nothing is fetched there), with the device tool:
#                                      run(command="bash bench/gpu-check.sh run", carry=[".node", ".gl"], timeout_s=560)
#                                      It plans for GPU_CHECK_SECONDS (default 480) and drops what does not fit,
#                                      least important last (eager laws, then the eager step, then the last
#                                      training cases); e.g. GPU_CHECK_SECONDS=300 for a shorter run.
#                                      Exits 3 with a FATAL line when the adapter is software (no GPU there).
#   bash bench/gpu-check.sh dry        here: prepare if needed, then the same run path with tiny sizes on Mesa
#                                      llvmpipe (and PyTorch on the CPU if it has no CUDA): tests the script
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}

prepare() {
  mkdir -p .node .gl
  echo "== bundling bench/gpu-check.ts and bench/gpu-summary.ts"
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/run/node_modules"
  for entry in gpu-check gpu-summary; do
    node_modules/.bin/esbuild "bench/$entry.ts" --bundle --platform=node --format=esm --target=node20 \
      --external:gpu.js --external:webgpu --external:gl \
      --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
      --outfile="$stage/run/$entry.mjs" --log-level=warning
  done
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
  if ! ls .gl/libegl1_*.deb .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    echo "== downloading glvnd's EGL dispatch and the Vulkan loader (Debian debs) to .gl/"
    (cd .gl && apt-get download libegl1 libglvnd0 libgles2 libvulkan1)
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
  local start=$SECONDS
  local total=${GPU_CHECK_SECONDS:-480}
  local W
  W=$(mktemp -d /tmp/revgrad-gpu.XXXX)
  [ -s .node/node.xz ] && [ -s .node/run.tar.xz ] || { say "FATAL: .node/ is missing: run 'bash bench/gpu-check.sh prepare' first and carry .node and .gl"; exit 2; }
  xz -dc .node/node.xz > "$W/node" && chmod +x "$W/node"
  tar -C "$W" -xJf .node/run.tar.xz
  mkdir -p "$W/gl"
  for d in .gl/*.deb; do dpkg-deb -x "$d" "$W/gl"; done
  local lib="$W/gl/usr/lib/x86_64-linux-gnu"
  ln -sf libEGL.so.1 "$lib/libEGL.so"
  ln -sf libvulkan.so.1 "$lib/libvulkan.so" 2>/dev/null || true
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # NVIDIA's EGL/Vulkan vendor files: the system's, or the driver mount's (/usr/local/nvidia) where the system has none.
  if [ ! -e /usr/share/glvnd/egl_vendor.d/10_nvidia.json ] && [ -e /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
  if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; fi
  if [ -d /usr/local/nvidia/lib64 ]; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"; fi
  say "== revgrad gpu-check $(date -u +%FT%TZ), bundle of $(cat "$W/run/SOURCE_COMMIT") (worktree changes $(cat "$W/run/SOURCE_DIRTY")), node $("$W/node" --version)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"; else say "(no nvidia-smi here)"; fi
  # The Python with PyTorch: python3 (on the GPU machine, /opt/torch/.venv), else Debian's /usr/bin/python3.
  local PY=python3
  if ! $PY -c 'import torch' 2>/dev/null && [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then PY=/usr/bin/python3; fi
  local torch_device=""
  if $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then torch_device=cuda
  elif [ -n "$dry" ] && $PY -c 'import torch' 2>/dev/null; then torch_device=cpu; fi
  : > "$W/torch-matmul.jsonl"
  : > "$W/torch-train.jsonl"

  # 1. PyTorch matmul first (fast; a number even if a later stage runs out of time).
  if [ -n "$torch_device" ]; then
    say ""
    say "== torch.matmul fp32 (TF32 off), $torch_device, N x N, device-resident"
    timeout 60 $PY - "$dry" "$torch_device" "$W/torch-matmul.jsonl" <<'PY' 2>&1 | tee -a "$log" || say "torch matmul: failed or timed out"
import sys, time, json, torch
torch.backends.cuda.matmul.allow_tf32 = False
dev = sys.argv[2]
sizes = [64, 256] if sys.argv[1] == "--dry" else [1024, 2048, 4096, 8192]
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
print(f"  torch {torch.__version__}, {torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}")
with open(sys.argv[3], "a") as f:
    for n in sizes:
        a = torch.rand(n, n, device=dev) * 2 - 1
        b = torch.rand(n, n, device=dev) * 2 - 1
        for _ in range(3): a @ b
        sync()
        reps = 20 if n <= 4096 else 10
        t0 = time.perf_counter()
        for _ in range(reps): c = a @ b
        sync()
        t = (time.perf_counter() - t0) / reps
        print(f"  torch N={n:5d}: {t*1e3:9.2f} ms {2*n**3/t/1e9:10.1f} GFLOP/s", flush=True)
        f.write(json.dumps({"n": n, "ms": t * 1e3, "gflops": 2 * n**3 / t / 1e9}) + "\n")
PY
  else
    say "(no torch with CUDA here: PyTorch numbers skipped)"
  fi

  # 2. Ours. Find a Dawn backend that gives a hardware adapter (GL ES first, then GL, then Vulkan).
  say ""
  local backend="" probe_status=0
  for be in ${REVGRAD_DAWN_BACKEND:-opengles opengl vulkan}; do
    set +e
    REVGRAD_DAWN_BACKEND=$be timeout 60 "$W/node" "$W/run/gpu-check.mjs" --probe $dry --out "$W/probe" > "$W/probe.log" 2>&1
    probe_status=$?
    set -e
    grep -v -e '^Warning: maxDynamic' "$W/probe.log" | sed "s|^|  probe backend=$be: |" | tee -a "$log"
    if [ "$probe_status" = 0 ]; then backend=$be; break; fi
  done
  local ours=0
  if [ -z "$backend" ]; then
    say "FATAL: no usable WebGPU adapter (last probe exit status $probe_status: 2 = none, 3 = software only). LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ls /usr/share/glvnd/egl_vendor.d/ /usr/local/nvidia/share/glvnd/egl_vendor.d/ 2>&1 | tee -a "$log" || true
    ours=$probe_status
  else
    export REVGRAD_DAWN_BACKEND=$backend
    # Ours gets what is left but ~100 s for the PyTorch training steps (4 cases, both modes each).
    local budget=$(( total - (SECONDS - start) - 100 ))
    [ -n "$dry" ] && budget=1200
    say "== ours (Dawn backend=$backend; $budget s)"
    set +e
    timeout "$budget" "$W/node" "$W/run/gpu-check.mjs" $dry ${GPU_CHECK_FLAGS:-} --budget-s $(( budget - 60 )) --out "$out" --cases "$W/torch-cases.json" \
      --fixtures "$ROOT/test/fixtures" --tiny-config "$ROOT/bench/revmvit-tiny.json" 2>&1 \
      | grep -v -e '^Warning: maxDynamic' | tee -a "$log"
    ours=${PIPESTATUS[0]}
    set -e
    [ "$ours" = 0 ] || say "ours: exit status $ours (1 = a check failed, 124 = out of time)"
  fi

  # 3. PyTorch training steps on the same models (configs exported by ours).
  if [ -n "$torch_device" ] && [ -s "$W/torch-cases.json" ]; then
    say ""
    say "== PyTorch AdamW step (bench/torch_revmvit.py), $torch_device fp32, median of the timed steps after 3 warm-up steps"
    $PY - "$W" <<'PY' > "$W/cases.txt"
import json, sys
cases = json.load(open(f"{sys.argv[1]}/torch-cases.json"))["cases"]
for i, c in enumerate(cases):
    path = f"{sys.argv[1]}/case{i}.json"
    json.dump(c["config"], open(path, "w"))
    print(path, c["batch"], c["name"])
PY
    while read -r cfg batch name; do
      local left=$(( total - 5 - (SECONDS - start) ))
      if [ -z "$dry" ] && [ "$left" -lt 20 ]; then say "  torch $name b$batch: skipped (out of time)"; continue; fi
      local steps=8; [ -n "$dry" ] && steps=2
      set +e
      timeout $(( left < 90 ? left : 90 )) $PY bench/torch_revmvit.py "$cfg" --batch "$batch" --device "$torch_device" --steps $steps --threads 4 </dev/null > "$W/t.out" 2>&1
      local st=$?
      set -e
      sed "s|^|  torch $name b$batch: |" "$W/t.out" | tee -a "$log"
      if [ "$st" = 0 ]; then
        $PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); d["name"]=sys.argv[2]; d["batch"]=int(sys.argv[3]); print(json.dumps(d))' "$W/t.out" "$name" "$batch" >> "$W/torch-train.jsonl"
      else
        say "  torch $name b$batch: failed or timed out (status $st)"
      fi
    done < "$W/cases.txt"
  fi
  $PY -c 'import json,sys; rd=lambda p:[json.loads(l) for l in open(p) if l.strip()]; json.dump({"matmul": rd(sys.argv[1]), "train": rd(sys.argv[2])}, open(sys.argv[3], "w"), indent=1)' \
    "$W/torch-matmul.jsonl" "$W/torch-train.jsonl" "$out/torch.json"

  # 4. Summary: ratios and targets.
  say ""
  say "== summary (ours beside torch on this machine; written to summary.json)"
  "$W/node" "$W/run/gpu-summary.mjs" "$out" 2>&1 | tee -a "$log" || say "summary failed"
  rm -rf "$W"
  say ""
  say "took $(( SECONDS - start )) s; files: $(cd "$out" && ls | tr '\n' ' ')"
  return "$ours"
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
