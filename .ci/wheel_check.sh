#!/usr/bin/env bash
# Fresh-machine check: build the sdist, then the wheel from that sdist (what `python -m build`
# does, and what a downstream packager does), install the wheel into a new virtual environment
# outside the checkout, and run the whole pipeline on the bundled sample from an empty directory.
# This proves that sql/, feature_defs/, py.typed and the sample data survive the sdist and ship
# inside the wheel, and (in a venv without the system site-packages) that the declared
# dependencies are enough to run. QCLI_WHEEL_CHECK_REUSE_SITE=1 reuses the installed third-party
# stack instead of resolving it again (quicker; then only quantcli itself comes from the wheel).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/qcli-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT

# no arguments: sdist first, then the wheel built from the unpacked sdist
python3 -m build --outdir "$work/dist" "$repo" > "$work/build.log" 2>&1 || {
  tail -30 "$work/build.log"; exit 1; }
sdist=$(ls "$work"/dist/quantcli-*.tar.gz)
wheel=$(ls "$work"/dist/quantcli-*.whl)
echo "built $(basename "$sdist") -> $(basename "$wheel")"
python3 - "$sdist" <<'PY'
import sys, tarfile
names = {n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n}
need = ["sql/schema_core.sql", "feature_defs/technical_v1.toml", "quantcli/py.typed", "MANIFEST.in"]
missing = [n for n in need if n not in names]
if missing:
    sys.exit(f"sdist is missing: {missing}")
PY
python3 - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = [
    "quantcli/_resources/sql/schema_core.sql",
    "quantcli/_resources/feature_defs/technical_v1.toml",
    "quantcli/py.typed",
]
missing = [n for n in need if n not in names]
if missing or not any(n.startswith("quantcli/_sample/") for n in names):
    sys.exit(f"wheel is missing resources: {missing or 'quantcli/_sample/'}")
print(f"wheel ships {sum(n.startswith('quantcli/_resources/') for n in names)} resource files")
PY

if [ "${QCLI_WHEEL_CHECK_REUSE_SITE:-0}" = "1" ]; then
  python3 -m venv --system-site-packages "$work/venv"
  "$work/venv/bin/python" -m pip install -q --no-deps "$wheel"
else
  python3 -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install -q "$wheel"
  "$work/venv/bin/python" -m pip check
fi

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
