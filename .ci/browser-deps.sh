#!/usr/bin/env bash
# System packages for the browser and WebGPU tests (called by .ci/run before npm test):
#  - chromium: Debian's build, driven by playwright-core from test/browser.test.ts (no browser download);
#    its WebGPU and WebGL2 run on the bundled SwiftShader;
#  - Mesa's EGL/GLES and the glvnd dispatcher: Dawn (the `webgpu` npm package) runs WebGPU in Node over
#    EGL on llvmpipe (test/webgpu.test.ts); libegl-dev provides the unversioned libEGL.so Dawn dlopens.
# Idempotent; needs root and the Debian archive.
set -euo pipefail
PKGS=(chromium libegl1 libegl-dev libegl-mesa0 libgles2 libgl1-mesa-dri)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "browser-deps: all present (${PKGS[*]})"
  exit 0
fi
echo "browser-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
echo "browser-deps: done ($(/usr/bin/chromium --version 2>/dev/null | head -1))"
