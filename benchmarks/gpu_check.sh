#!/usr/bin/env bash
# The GPU check of issue 17 (point 6), in one go, on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu_check.sh          # from the repository root; 4-8 minutes
#
# 1. An environment: $PYTHON if it already has torch with CUDA, else a venv (.venv-gpu)
#    with torch from PyPI (its Linux wheels are the CUDA build) and optbench[dev].
# 2. What the machine has: nvidia-smi, torch's view of the GPUs.
# 3. The tests that need CUDA (tests/unit/test_gpu_workers.py: the step loop under
#    torch.cuda.set_sync_debug_mode("error"), and the placement tests), with CI=true.
# 4. The lecture job on CUDA: in this process (`optbench run`, OPTBENCH_DEVICE=cuda), then
#    through the service on the embedded default (SQLite, filesystem queue) with
#    `optbench worker --gpus auto`: every run trained, each with its GPU recorded.
# 5. benchmarks/compare.py on the small workloads (digits, mnist1d; --epochs, default 20)
#    with the worker on the GPUs, when PostgreSQL and Redis are there (started, or
#    installed with apt-get when possible): (b) on the GPU and the service's ratio to it.
# 6. benchmarks/bench_sweep.py --quick (the tuning sweep, short settings).
#
# It prints a summary at the end: per workload, (b) on CUDA in samples/s and c/b on CUDA
# (the service's samples/s over (b)'s on the GPU; the issue's goal is >= 5x through
# fusion). Logs and JSON go to $OUT (default: a temporary folder), named at the end.
# Each step has its own time limit (STEP_SECONDS, default 240 s) and a failed step does
# not stop the others; the exit status is 1 if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d /tmp/optbench-gpu-check.XXXXXX)}"
mkdir -p "$OUT"
EPOCHS="${EPOCHS:-20}"
STEP_SECONDS="${STEP_SECONDS:-240}"
PYTHON="${PYTHON:-python3}"
began=$(date +%s)
failed=()

step() { echo; echo "=== $1 ($(($(date +%s) - began)) s in)"; }
run_step() {  # name, command...: time-limited, logged to $OUT/<name>.log, failures noted
  local name=$1; shift
  if timeout "$STEP_SECONDS" "$@" > >(tee "$OUT/$name.log") 2>&1; then
    return 0
  fi
  failed+=("$name"); echo "--- $name FAILED (log: $OUT/$name.log)"; return 1
}

step "1. environment"
has_cuda_torch() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
if has_cuda_torch "$PYTHON" && "$PYTHON" -c "import services, optuna" 2>/dev/null; then
  echo "using $PYTHON: it has torch with CUDA and optbench"
else
  if [ ! -x .venv-gpu/bin/python ]; then
    "$PYTHON" -m venv .venv-gpu || { echo "cannot create a venv with $PYTHON"; exit 1; }
  fi
  PYTHON=.venv-gpu/bin/python
  if ! has_cuda_torch "$PYTHON"; then
    # PyPI's torch for Linux x86_64 is the CUDA build (it brings the CUDA runtime).
    timeout 420 "$PYTHON" -m pip install -q "torch>=2.5" || echo "pip install torch failed"
  fi
  timeout 300 "$PYTHON" -m pip install -q -e ".[dev]" || echo "pip install optbench failed"
fi
BIN="$(dirname "$PYTHON")"
OPTBENCH="$BIN/optbench"
[ -x "$OPTBENCH" ] || OPTBENCH="$PYTHON -m services.cli"

step "2. the machine"
nvidia-smi -L || echo "nvidia-smi not found"
"$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
EOF
if ! has_cuda_torch "$PYTHON"; then
  echo "no CUDA device usable from $PYTHON: nothing to check here"; exit 1
fi

step "3. tests that need CUDA"
run_step tests env CI=true "$PYTHON" -m pytest -q -rs -p no:cacheprovider \
  tests/unit/test_gpu_workers.py

step "4. the lecture job on CUDA"
home="$(mktemp -d /tmp/optbench-gpu-home.XXXXXX)"
"$PYTHON" - "$home/lecture.json" <<'EOF'
import json, sys
from services.spec import LECTURE_SPEC
json.dump(LECTURE_SPEC, open(sys.argv[1], "w"))
EOF
run_step lecture_in_process env OPTBENCH_HOME="$home/in-process" OPTBENCH_DEVICE=cuda \
  bash -c "time $OPTBENCH run '$home/lecture.json'"
# The service: API and a GPU worker on the embedded default; the job over HTTP.
export OPTBENCH_HOME="$home/service" OPTBENCH_API_URL="http://127.0.0.1:8765"
$OPTBENCH migrate >"$OUT/migrate.log" 2>&1
$OPTBENCH api --port 8765 >"$OUT/api.log" 2>&1 & api=$!
$OPTBENCH worker --gpus auto >"$OUT/worker.log" 2>&1 & worker=$!
up() { "$PYTHON" -c "import urllib.request as u; u.urlopen('$OPTBENCH_API_URL/healthz', timeout=2)" 2>/dev/null; }
for _ in $(seq 60); do up && break; sleep 1; done
if run_step lecture_service bash -c "time $OPTBENCH submit --json --watch '$home/lecture.json'"; then
  "$PYTHON" - "$OUT/lecture_service.log" <<'EOF' | tee "$OUT/devices.log" || failed+=(devices)
import json, re, sys, urllib.request, os
text = open(sys.argv[1]).read()
job = re.search(r'"job_id":\s*"([0-9a-f-]+)"', text) or re.search(r"([0-9a-f]{8}-[0-9a-f-]{27})", text)
url = os.environ["OPTBENCH_API_URL"]
body = json.load(urllib.request.urlopen(f"{url}/v1/jobs/{job.group(1)}"))
devices = [(run["label"], run["device"]) for run in body["runs"]]
print("job", body["status"], "on", body["device"], "; runs:", ", ".join(f"{l} {d}" for l, d in devices))
assert body["status"] == "succeeded", body["status"]
assert all(d and d.startswith("cuda:") for _, d in devices), devices
EOF
fi
kill "$worker" "$api" 2>/dev/null; wait "$worker" "$api" 2>/dev/null
grep -h "GPUs\|part\b.*GPU\|one part per GPU" "$OUT/worker.log" | head -5
unset OPTBENCH_HOME OPTBENCH_API_URL

step "5. compare.py on the small workloads"
database_url="${OPTBENCH_TEST_POSTGRES:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}"
redis_url="${OPTBENCH_TEST_REDIS:-redis://127.0.0.1:6379/15}"
servers_up() { "$PYTHON" -c "from benchmarks.compare import require_servers; require_servers('$database_url', '$redis_url')" >/dev/null 2>&1; }
if ! servers_up && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "PostgreSQL/Redis not reachable: installing and starting them"
  (command -v pg_ctlcluster >/dev/null && command -v redis-server >/dev/null) ||
    timeout 180 apt-get install -y -q postgresql redis-server >"$OUT/apt.log" 2>&1 ||
    { timeout 60 apt-get update -q >/dev/null 2>&1 && timeout 180 apt-get install -y -q postgresql redis-server >"$OUT/apt.log" 2>&1; }
  (redis-server --daemonize yes >/dev/null 2>&1 || service redis-server start) >/dev/null 2>&1
  service postgresql start >/dev/null 2>&1
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'optbench'\"" >/dev/null 2>&1 &&
    database_url="postgresql+psycopg://postgres:optbench@127.0.0.1:5432/postgres"
fi
if servers_up; then
  run_step compare "$PYTHON" benchmarks/compare.py --workloads digits,mnist1d --epochs "$EPOCHS" \
    --database-url "$database_url" --redis-url "$redis_url" --worker-args "--gpus auto" \
    --json "$OUT/compare.json"
else
  echo "compare.py skipped: PostgreSQL ($database_url) or Redis ($redis_url) not reachable"
  failed+=(compare)
fi

step "6. the tuning sweep, short"
run_step sweep "$PYTHON" -m benchmarks.bench_sweep --quick --json "$OUT/sweep.json"

step "summary ($(($(date +%s) - began)) s)"
if [ -f "$OUT/compare.json" ]; then
  "$PYTHON" - "$OUT/compare.json" <<'EOF'
import json, sys
output = json.load(open(sys.argv[1]))
rate = lambda r: r["samples"] / r["seconds"]
print(f"machine: {output['machine']}; torch {output['torch']}; CUDA matmul peak "
      f"{output.get('cuda_matmul_gflops', float('nan')):.0f} GFLOP/s")
for name, r in output["workloads"].items():
    if "b_cuda" not in r:
        print(f"{name}: (b) did not run on CUDA"); continue
    print(f"{name}: (b) on CUDA {rate(r['b_cuda']):,.0f} samples/s in {r['b_cuda']['seconds']:.2f} s; "
          f"the service (c) {rate(r['c']):,.0f} samples/s in {r['c']['seconds']:.2f} s: "
          f"c/b on CUDA {rate(r['c']) / rate(r['b_cuda']):.2f} (goal >= 5); "
          f"on this CPU c/b {rate(r['c']) / rate(r['b']):.2f}")
EOF
fi
grep -h "passed\|failed\|skipped" "$OUT/tests.log" 2>/dev/null | tail -1
grep -h "^job " "$OUT/devices.log" 2>/dev/null
echo "logs and JSON: $OUT"
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all steps passed"
