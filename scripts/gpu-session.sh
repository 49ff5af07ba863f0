#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (see ../shared/device/README.md). Here, first:
#   npm ci && npm run build && bash ../shared/device/pack.sh
# then call the device tool with carry [".device", "dist", "build"] and the command
#   bash .device/run.sh bash scripts/gpu-session.sh
# Under $OUT (8 files, within what the device tool brings back): summary.txt (card, driver,
# date, the Dawn toggles, `info --json` with subgroupMatrixConfigs, test totals, each step's rc),
# session.log (every log), quick/ (quick bench: kernels + end to end at 256 px with the PyTorch
# CUDA peer), e2e-512-b4/ and e2e-1024-b1/ (end-to-end rows with the PyTorch CUDA peer side by
# side). Each part has its own time budget (510 s in all, under one call's 600 s), the quick
# bench first so a report exists even if a later part runs out of time.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-/tmp/gpu-session}
mkdir -p "$out/quick" "$out/e2e-512-b4" "$out/e2e-1024-b1"
log="$out/session.log"
sum="$out/summary.txt"
t0=$(date +%s)
step() { echo "$1 rc=$2 at $(( $(date +%s) - t0 )) s" >> "$sum"; }
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  # The toggles every adapter is opened with (src/gpu/dawn.ts): allow_unsafe_apis exposes
  # chromium-experimental-subgroup-matrix, vulkan_enable_f16_on_nvidia shader-f16 on NVIDIA.
  echo "dawn toggles: $(grep -o "enable-dawn-features=[a-z0-9_,]*" src/gpu/dawn.ts)"
  echo "--- sam2-lora info --json"
  timeout 30 node bin/sam2-lora.js info --json - 2>> "$log"
} > "$sum"
# The adapter's subgroup-matrix configurations and f16/subgroup features, one line each.
node -e '
  const s = require("fs").readFileSync(process.argv[1], "utf8");
  const j = JSON.parse(s.slice(s.indexOf("{"), s.lastIndexOf("}") + 1));
  console.log("features: " + JSON.stringify(j.features));
  console.log("subgroupMatrixConfigs: " + JSON.stringify(j.subgroupMatrixConfigs ?? []));
' "$sum" >> "$sum" 2>> "$log" || echo "info --json unreadable (see session.log)" >> "$sum"

echo "=== kernel tests on the GPU" >> "$log"
timeout 170 npx vitest run >> "$log" 2>&1
step tests $?
echo "tests: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'Tests +[0-9]' | tail -1)" >> "$sum"

echo "=== bench --quick (with the PyTorch CUDA peer)" >> "$log"
timeout 90 node bin/sam2-lora.js bench --quick --out "$out/quick" >> "$log" 2>&1
step "bench quick" $?

# End to end beside PyTorch on CUDA: 512 px batch 4 and 1024 px batch 1 (no kernel rows).
echo "=== end to end 512 px batch 4 vs PyTorch" >> "$log"
timeout 120 node bin/sam2-lora.js bench --filter '^e2e/' --no-tfjs --e2e-sizes 512 \
  --e2e-batch 4 --out "$out/e2e-512-b4" >> "$log" 2>&1
step "e2e 512 b4" $?
echo "=== end to end 1024 px batch 1 vs PyTorch" >> "$log"
timeout 120 node bin/sam2-lora.js bench --filter '^e2e/' --no-tfjs --e2e-sizes 1024 \
  --e2e-batch 1 --out "$out/e2e-1024-b1" >> "$log" 2>&1
step "e2e 1024 b1" $?
echo "total $(( $(date +%s) - t0 )) s" >> "$sum"
cat "$sum"
