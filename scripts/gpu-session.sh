#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (see ../shared/device/README.md). Here, first:
#   npm ci && npm run build && bash ../shared/device/pack.sh
# then call the device tool with carry [".device", "dist", "build"] and the command
#   bash .device/run.sh bash scripts/gpu-session.sh
# Under $OUT (6 files, within what the device tool brings back): summary.txt (card, driver,
# date, `info --json`, test totals, the PyTorch peer's JSON), session.log (every log), quick/
# and full/ (bench reports: the quick one first, so a report exists even if the full bench
# runs out of time). Each part has its own time budget (540 s in all, under one call's 600 s).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-/tmp/gpu-session}
mkdir -p "$out/quick" "$out/full"
log="$out/session.log"
sum="$out/summary.txt"
t0=$(date +%s)
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  echo "--- sam2-lora info --json"
  timeout 30 node bin/sam2-lora.js info --json 2>> "$log"
} > "$sum"

echo "=== kernel tests on the GPU" >> "$log"
timeout 150 npx vitest run >> "$log" 2>&1
echo "tests rc=$? $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'Tests +[0-9]' | tail -1)" >> "$sum"

echo "=== bench --quick" >> "$log"
timeout 60 node bin/sam2-lora.js bench --quick --out "$out/quick" >> "$log" 2>&1
echo "bench quick rc=$?" >> "$sum"

echo "=== bench (full)" >> "$log"
timeout 200 node bin/sam2-lora.js bench --out "$out/full" >> "$log" 2>&1
echo "bench full rc=$?" >> "$sum"

echo "=== PyTorch peer" >> "$log"
echo "--- pytorch peer (eager fp32, 512 px, batch 4)" >> "$sum"
timeout 100 python3 bench/peer/pytorch_step.py --size 512 --batch 4 >> "$sum" 2>> "$log"
echo "pytorch rc=$?" >> "$sum"
echo "total $(( $(date +%s) - t0 )) s" >> "$sum"
cat "$sum"
