#!/usr/bin/env bash
# Debian's PyTorch for the tests that cross-check .pyth files with torch itself (test/pyth.test.ts,
# test/scale-out.test.ts: torch.load(weights_only=True) of what revgrad writes, revgrad reading what
# torch.save writes). Without it those tests are skipped with a printed reason. Measured here: about
# 1.5 min for apt-get update + install (torch 1.13 and its ~190 dependencies); the tests add ~10 s.
# Idempotent; needs root and the Debian archive.
set -euo pipefail
PKGS=(python3-torch libopenblas0-pthread)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "python-deps: all present (${PKGS[*]})"
  exit 0
fi
echo "python-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
echo "python-deps: done (torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'))"
