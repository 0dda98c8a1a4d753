#!/usr/bin/env bash
# BACO over two vLLM servers on a machine with a GPU (docs/remote.md): the remote checks and
# bench_remote.py with a small same-family pair. Needs the repository's .venv (scripts/install.sh)
# and the models in the hub cache or reachable; vLLM is installed into its own venv so that its
# CUDA torch does not replace the project's.
#
#   bash scripts/gpu_remote_check.sh                    # Qwen2.5-0.5B + Qwen2.5-0.5B-Instruct
#   BASE=... ALIGNED=... bash scripts/gpu_remote_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-Qwen/Qwen2.5-0.5B}
ALIGNED=${ALIGNED:-Qwen/Qwen2.5-0.5B-Instruct}
VLLM_VENV=${VLLM_VENV:-/tmp/vllm-venv}
OUT=${OUT:-benchmarks/results}
if [ ! -x "$VLLM_VENV/bin/vllm" ]; then
    python3 -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/pip" install -q vllm
fi
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
serve() {  # model port: a vLLM server on 127.0.0.1 sharing the GPU, raw log-probs, top-20
    "$VLLM_VENV/bin/vllm" serve "$1" --host 127.0.0.1 --port "$2" --max-logprobs 20 \
        --gpu-memory-utilization 0.35 --max-model-len 4096 >"/tmp/vllm-$2.log" 2>&1 &
    pids+=($!)
}
serve "$BASE" 8101
serve "$ALIGNED" 8102
for port in 8101 8102; do  # ready when /health answers (bounded: 15 minutes)
    for _ in $(seq 900); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 1
    done
    curl -sf "http://127.0.0.1:$port/health" >/dev/null || { tail -50 "/tmp/vllm-$port.log"; exit 1; }
done
export BACO_REMOTE_BASE_URL=http://127.0.0.1:8101/v1 BACO_REMOTE_ALIGNED_URL=http://127.0.0.1:8102/v1
export BACO_REMOTE_BASE_MODEL=$BASE BACO_REMOTE_ALIGNED_MODEL=$ALIGNED
.venv/bin/python -m pytest -q tests/remote/test_endpoints.py
.venv/bin/python benchmarks/bench_remote.py --base-url "$BACO_REMOTE_BASE_URL" \
    --aligned-url "$BACO_REMOTE_ALIGNED_URL" --base "$BASE" --aligned "$ALIGNED" --device cuda \
    --concurrency 1 8 32 --draft-tokens 4 16 --out "$OUT"
