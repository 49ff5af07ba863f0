#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (see ../shared/device/README.md). Here, first:
#   npm ci && npm run build && bash ../shared/device/pack.sh
# then call the device tool with carry [".device", "dist", "build"] and the command
#   SAM2_LORA_COMMIT=<git rev-parse HEAD here> bash .device/run.sh bash scripts/gpu-session.sh
# (the machine has no git: the commit travels in the environment and lands in every report).
#
# Under $OUT: summary.txt (card, driver, date, commit, the Dawn toggles, the adapter's
# `info --json` with features and subgroupMatrixConfigs, test totals, each part's rc and time,
# the ours-vs-PyTorch rows and the f16-vs-f32 rows), session.log (every log), vitest.json,
# quick/ (quick bench: kernels + end to end at 256 px beside the PyTorch CUDA peer),
# e2e-512-b4/ and e2e-1024-b1/ (end to end beside the PyTorch CUDA peer), f16-512-b4/ (the same
# rows at --precision f16, only when the bench has that option).
#
# Time: one device call may run 600 s; run.sh's unpacking comes first (~30-60 s). Every part
# gets its own cap (tests 150 s, quick bench 100, 512 px b4 90, 1024 px b1 90, f16 60) and all
# share one deadline (DEADLINE_S, default 450 s from this script's start), in that order, so the
# call ends with margin and whatever finished is already under $OUT.
#
# GPU_SESSION_SMOKE=1 runs every part at toy sizes (one test file, one kernel row, 32 and 64 px
# end to end, the PyTorch peer once and on the CPU): a dry run of this script's plumbing on any
# machine, lavapipe included (about 3 minutes here).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-/tmp/gpu-session}
smoke=${GPU_SESSION_SMOKE:-0}
deadline=${DEADLINE_S:-450}
mkdir -p "$out"
log="$out/session.log"
sum="$out/summary.txt"
: > "$log"
t0=$(date +%s)
cli=(node bin/sam2-lora.js)
# Runs "$@" under min(cap, time left before the deadline, less 5 s); records rc and seconds.
part() {
  local name=$1 cap=$2; shift 2
  local left=$(( deadline - ($(date +%s) - t0) - 5 ))
  (( cap > left )) && cap=$left
  if (( cap < 10 )); then
    echo "$name: skipped (deadline ${deadline} s reached)" >> "$sum"
    return
  fi
  echo "=== $name (cap ${cap} s): $*" >> "$log"
  local s=$(date +%s)
  timeout -k 5 "$cap" "$@" >> "$log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - s )) s (cap $cap s)$( ((rc == 124)) && echo ', TIMED OUT')" >> "$sum"
}

{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  echo "commit ${SAM2_LORA_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  # The toggles every adapter is opened with (src/gpu/): allow_unsafe_apis exposes
  # chromium-experimental-subgroup-matrix, vulkan_enable_f16_on_nvidia shader-f16 on NVIDIA.
  echo "dawn toggles: $(grep -rho "enable-dawn-features=[a-z0-9_,]*" src/gpu | sort -u | tr '\n' ' ')"
  echo "--- sam2-lora info --json (the adapter Dawn gives us)"
} > "$sum"
timeout 60 "${cli[@]}" info --json - > "$out/info.json" 2>> "$log"
cat "$out/info.json" >> "$sum"
# One line each: features (shader-f16, subgroups, subgroup-matrix) and subgroupMatrixConfigs.
node -e '
  const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log("adapter: " + j.description + " (" + j.backend + ")" + (j.cpuFallback ? " [CPU fallback]" : ""));
  console.log("features: " + JSON.stringify(j.features));
  console.log("subgroupMatrixConfigs: " + JSON.stringify(j.subgroupMatrixConfigs ?? []));
' "$out/info.json" >> "$sum" 2>> "$log" || echo "info --json unreadable (see session.log)" >> "$sum"

# Correctness on the GPU first: the kernel, op, model and training tests (every file that
# touches the device; the CLI/process/IO/browser tests say nothing about the GPU).
if [ "$smoke" = 1 ]; then
  tests=(kernels-test/bench-report.test.ts)
else
  tests=()
  for f in activation add attention composite conv2d conv2d-gemm elementwise interpolate \
      layer-norm linear lora-linear loss matmul optim optim-fast pool reduce runtime softmax \
      tiling window hiera-ref fixtures-ops fixtures-encoder fixtures-train encoder-fidelity \
      pipeline data-parallel; do
    [ -f "kernels-test/$f.test.ts" ] && tests+=("kernels-test/$f.test.ts")
  done
  for f in kernels-test/*f16*.test.ts kernels-test/*precision*.test.ts; do
    [ -f "$f" ] && tests+=("$f")
  done
fi
part tests 150 npx vitest run --reporter=default --reporter=json \
  --outputFile.json="$out/vitest.json" "${tests[@]}"
node -e '
  const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const bad = j.testResults.flatMap((f) => f.assertionResults.filter((a) => a.status === "failed")
    .map((a) => f.name.split("/").pop() + ": " + a.fullName));
  console.log(`tests: ${j.numPassedTests} passed, ${j.numFailedTests} failed, ` +
    `${j.numPendingTests} skipped of ${j.numTotalTests} in ${j.testResults.length} files`);
  for (const b of bad) console.log("  FAILED " + b);
' "$out/vitest.json" >> "$sum" 2>> "$log" || echo "tests: no vitest.json (see session.log)" >> "$sum"

if [ "$smoke" = 1 ]; then
  quick=(--filter '^(matmul/256px-b1/s0\.qkv/fwd|e2e/.*/head/forward)' --e2e-sizes 32)
  e2e_a=(32 1); e2e_b=(64 1); peer=(--no-peer); e2e=(--quick); rows='^e2e/.*/head/'
  # (the peer runs once, beside e2e_a)
else
  quick=(); e2e_a=(512 4); e2e_b=(1024 1); peer=(); e2e=(); rows='^e2e/'
fi
dir_a="e2e-${e2e_a[0]}-b${e2e_a[1]}"; dir_b="e2e-${e2e_b[0]}-b${e2e_b[1]}"; dir_h="f16-${e2e_a[0]}-b${e2e_a[1]}"
part "bench quick" 100 "${cli[@]}" bench --quick "${quick[@]}" "${peer[@]}" --out "$out/quick"
# End to end beside PyTorch on CUDA (the bench runs the peer itself): no kernel rows.
part "e2e ${e2e_a[0]} px b${e2e_a[1]}" 90 "${cli[@]}" bench "${e2e[@]}" --filter "$rows" --no-tfjs \
  --e2e-sizes "${e2e_a[0]}" --e2e-batch "${e2e_a[1]}" --out "$out/$dir_a"
part "e2e ${e2e_b[0]} px b${e2e_b[1]}" 90 "${cli[@]}" bench "${e2e[@]}" --filter "$rows" --no-tfjs \
  --e2e-sizes "${e2e_b[0]}" --e2e-batch "${e2e_b[1]}" "${peer[@]}" --out "$out/$dir_b"

# f16 vs f32 (issue 12): the same rows at --precision f16 when the bench has the option; the
# f32 rows are $dir_a's.
if "${cli[@]}" bench --help 2>/dev/null | grep -q -- '--precision'; then
  part "e2e ${e2e_a[0]} px b${e2e_a[1]} f16" 60 "${cli[@]}" bench "${e2e[@]}" --filter "$rows" --no-tfjs \
    --no-peer --precision f16 --e2e-sizes "${e2e_a[0]}" --e2e-batch "${e2e_a[1]}" \
    --out "$out/$dir_h"
else
  echo "f16 vs f32: skipped (this build's bench has no --precision option)" >> "$sum"
fi
# The rows that matter, from the reports' JSON: ours vs PyTorch, f16 vs f32.
node -e '
  const fs = require("fs"), path = require("path");
  const read = (d) => { try { const f = fs.readdirSync(d).find((n) => n.endsWith(".json"));
    return f ? JSON.parse(fs.readFileSync(path.join(d, f), "utf8")) : null; } catch { return null; } };
  const [outDir, dirA, dirB, dirH] = process.argv.slice(1);
  const mib = (b) => (b / 2 ** 20).toFixed(0);
  console.log("--- end to end: ours vs PyTorch (ms median; ratio = PyTorch / ours, > 1: ours faster)");
  for (const d of ["quick", dirA, dirB]) {
    const r = read(path.join(outDir, d));
    if (!r) { console.log(d + ": no report"); continue; }
    console.log(d + ": " + r.device.description + ", commit " + r.commit + ", " + r.date);
    for (const e of r.e2e) {
      const run = r.peer?.runs.find((p) => p.size === e.size && p.batch === e.batch);
      const m = run?.results.find((x) => x.mode === e.mode);
      const p = m ? (e.phase === "forward" ? m.forward : m.train_step) : null;
      console.log(`  ${e.mode.padEnd(4)} ${e.phase.padEnd(10)} ${e.size} px b${e.batch}: ours ` +
        `${e.wallMedianMs.toFixed(1)} ms, peak ${mib(e.peakBytes)} MiB` + (p ? `; PyTorch ` +
        `${p.median_ms.toFixed(1)} ms (${run.device}) -> ${(p.median_ms / e.wallMedianMs).toFixed(2)}x` : ""));
    }
    for (const n of r.notes.filter((n) => /PyTorch|load average/.test(n))) console.log("  note: " + n);
  }
  const f32 = read(path.join(outDir, dirA)), f16 = read(path.join(outDir, dirH));
  if (f32 && f16) {
    console.log("--- f16 vs f32 (step wall ms median, peak pool MiB)");
    for (const e of f16.e2e) {
      const b = f32.e2e.find((x) => x.id === e.id);
      if (!b) continue;
      console.log(`  ${e.id}: f32 ${b.wallMedianMs.toFixed(1)} ms ${mib(b.peakBytes)} MiB; f16 ` +
        `${e.wallMedianMs.toFixed(1)} ms ${mib(e.peakBytes)} MiB -> ` +
        `${(b.wallMedianMs / e.wallMedianMs).toFixed(2)}x time, ${(b.peakBytes / e.peakBytes).toFixed(2)}x memory`);
    }
  }
' "$out" "$dir_a" "$dir_b" "$dir_h" >> "$sum" 2>> "$log" || echo "summary rows: failed (see session.log)" >> "$sum"
echo "total $(( $(date +%s) - t0 )) s (deadline $deadline s)" >> "$sum"
cat "$sum"
