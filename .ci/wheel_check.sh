#!/usr/bin/env bash
# Fresh-machine check: build the wheel, install it into a new virtual environment outside the
# checkout, and run the whole pipeline on the bundled sample from an empty directory. This proves
# that sql/, feature_defs/ and the sample data ship inside the wheel.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/qcli-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 -m pip wheel --no-deps -q -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/quantcli-*.whl)
echo "built $(basename "$wheel")"
python3 - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["quantcli/_resources/sql/schema_core.sql", "quantcli/_resources/feature_defs/technical_v1.toml"]
missing = [n for n in need if n not in names]
if missing or not any(n.startswith("quantcli/_sample/") for n in names):
    sys.exit(f"wheel is missing resources: {missing or 'quantcli/_sample/'}")
print(f"wheel ships {sum(n.startswith('quantcli/_resources/') for n in names)} resource files")
PY

# The new venv reuses the already-installed third-party stack (no second 70 s resolve), but
# quantcli itself comes from the wheel: we check that below.
python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps "$wheel"

mkdir "$work/empty"
cd "$work/empty"
"$work/venv/bin/python" - <<'PY'
import quantcli, pathlib, sys
where = pathlib.Path(quantcli.__file__).resolve()
if "site-packages" not in str(where):
    sys.exit(f"quantcli imported from {where}, not from the installed wheel")
print(f"quantcli {quantcli.__version__} from {where.parent}")
PY
QCLI_HOME="$work/empty/.qcli" "$work/venv/bin/qcli" pipeline run --sample --json > "$work/pipeline.json"
python3 - "$work/pipeline.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
stages = result.get("stages", [])
bad = [s["name"] for s in stages if s.get("status") != "ok"]
if not stages or bad:
    sys.exit(f"pipeline stages not ok: {bad or 'no stages reported'}")
print("pipeline stages ok: " + ", ".join(s["name"] for s in stages))
PY
