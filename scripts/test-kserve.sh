#!/usr/bin/env bash
# make test-kserve: the KServe Python SDK's REST inference client against `modelyard serve`.
#
# kserve 0.21 pins pandas<3 and psutil<6, which conflict with modelyard's, so the client runs from a virtual
# environment of its own (.venv-kserve, made on first use from the package index; later runs reuse it). The main
# environment (.venv) trains a tiny model once (kept in .venv-kserve/work), creates a key and serves the model on
# a free port; scripts/kserve_check.py makes every call the client supports and prints `kserve: N of N calls pass`.
# Exits non-zero if a call fails or the server does not start.
#
# Environment: PYTHON (the main environment's python, default .venv/bin/python), KSERVE_VENV (default
# .venv-kserve), KSERVE_REQUIREMENT (default kserve==0.21.*), BASE_PYTHON (makes the venv, default python3.11).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
KVENV=${KSERVE_VENV:-$ROOT/.venv-kserve}
REQUIREMENT=${KSERVE_REQUIREMENT:-kserve==0.21.*}
WORK=$KVENV/work

if ! "$KVENV/bin/python" -c "import kserve" 2>/dev/null; then
    echo "creating $KVENV with $REQUIREMENT (its pins conflict with modelyard's, so it gets its own environment)"
    "${BASE_PYTHON:-python3.11}" -m venv "$KVENV"
    printf '*\n' > "$KVENV/.gitignore"  # the whole folder stays out of git
    "$KVENV/bin/pip" install --quiet --disable-pip-version-check "$REQUIREMENT"
fi
mkdir -p "$WORK"
export MODELYARD_HOME=$WORK/home

# A tiny digits model, trained once and reused; the answers the check expects, from the model itself.
"$PY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

import modelyard
from sklearn.datasets import load_digits

work = Path(sys.argv[1])
saved = work / "run.txt"
run = Path(saved.read_text().strip()) if saved.exists() else None
if run is None or not (run / "model").is_dir():
    cfg = {"name": "digits", "seed": 0, "data": {"source": "builtin:digits"},
           "model": {"name": "mlp", "hidden_sizes": [32]}, "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
           "evaluate": {"bootstrap": 50}}
    run = modelyard.train(cfg, output=work / "runs", quiet=True).path
    saved.write_text(f"{run}\n")
model = modelyard.load(run)
x = load_digits().images[:3].astype("float32")  # (3, 8, 8)
(work / "expected.json").write_text(json.dumps({"x": x.tolist(), "probabilities": model.predict_proba(x).tolist(),
                                                 "labels": [str(v) for v in model.predict(x)]}))
EOF
RUN=$(cat "$WORK/run.txt")
KEY=$("$PY" -m modelyard keys create --name kserve-check | tail -n 1)

"$PY" -m modelyard serve "$RUN" --name digits --port 0 2> "$WORK/server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 600); do
    URL=$(grep -o 'listening on http://[^ ]*' "$WORK/server.log" | head -n 1 | cut -d' ' -f3 || true)
    if [ -n "$URL" ] && "$PY" -c "import httpx, sys; sys.exit(httpx.get('$URL/v2/health/ready').status_code != 200)" \
        2>/dev/null; then
        break
    fi
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "the server did not start:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    URL=""
    sleep 0.2
done
if [ -z "$URL" ]; then
    echo "the server was not ready within 120 s:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "serving $RUN at $URL"
"$KVENV/bin/python" "$ROOT/scripts/kserve_check.py" --url "$URL" --key "$KEY" --model digits --version 1 \
    --expected "$WORK/expected.json"
