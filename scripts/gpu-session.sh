#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (see ../shared/device/README.md). Here, first:
#   npm ci && npm run build && bash ../shared/device/pack.sh
# then call the device tool with carry [".device", "dist", "build"] and the command
#   bash .device/run.sh bash scripts/gpu-session.sh
# It writes under $OUT: info.json (the adapter), tests.log (every kernel test on the GPU),
# bench.{json,md} (npm run bench), pytorch.json (the PyTorch eager fp32 peer on the same GPU),
# summary.txt and errors.log (8 files: what the device tool brings back). Each part has its own
# time budget (540 s in all, under one call's 600 s) so one slow part cannot eat the lease.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-/tmp/gpu-session}
mkdir -p "$out"
t0=$(date +%s)
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
} > "$out/summary.txt"

timeout 30 node bin/sam2-lora.js info --json > "$out/info.json" 2>> "$out/errors.log"
echo "info rc=$?" >> "$out/summary.txt"

# Kernel correctness on the real adapter (the same tests CI runs on lavapipe).
timeout 150 npx vitest run --reporter=dot > "$out/tests.log" 2>&1
echo "tests rc=$? $(grep -E 'Tests +[0-9]' "$out/tests.log" | tail -1)" >> "$out/summary.txt"

# Our benchmark: ceilings, kernels vs naive and TF.js, end to end.
timeout 240 node bin/sam2-lora.js bench --out "$out" > "$out/bench.log" 2>&1
echo "bench rc=$?" >> "$out/summary.txt"

# The PyTorch baseline on the same GPU.
timeout 120 python3 bench/peer/pytorch_step.py --size 512 --batch 4 > "$out/pytorch.json" 2>> "$out/errors.log"
echo "pytorch rc=$?" >> "$out/summary.txt"
echo "total $(( $(date +%s) - t0 )) s" >> "$out/summary.txt"
cat "$out/summary.txt"
