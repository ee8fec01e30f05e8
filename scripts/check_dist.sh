#!/usr/bin/env bash
# Build the sdist and the wheel (the wheel from the sdist, so a file the sdist forgets fails
# here), install the wheel into a fresh virtual environment that sees the base install's
# packages only (those of .venv less the extras' and less this checkout), and check there that
# `incitescan --help` and `incitescan doctor` run and that `incitescan eval speech` stops with
# one line naming the extra it needs. Offline (no index, no build isolation); about a minute.
# Run by scripts/test.sh; usage: bash scripts/check_dist.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=$repo/.venv/bin/python
if [ $# -gt 0 ]; then
  work=$1
else
  work=$(mktemp -d /tmp/incitescan-dist.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
fail() { echo "check_dist: $*" >&2; exit 1; }

echo "==> building the sdist and the wheel into $work/dist"
"$python" -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 \
  || { tail -n 30 "$work/build.log" >&2; fail "python -m build failed (log: $work/build.log)"; }
sdist=$(ls "$work"/dist/incitescan-*.tar.gz)
wheel=$(ls "$work"/dist/incitescan-*.whl)
"$python" - "$wheel" <<'EOF' || fail "the wheel lacks package data"
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
wanted = ["pipelines/data/manifest.toml", "pipelines/data/lexicon.csv", "pipelines/py.typed",
          "service/templates/scan.html", "service/static/ui.css", "service/migrations/env.py"]
missing = [name for name in wanted if name not in names]
sys.exit(f"the wheel lacks {', '.join(missing)}" if missing else 0)
EOF

echo "==> a fresh virtual environment with the base install's packages, then the wheel"
rm -rf "$work/venv" "$work/base"
"$python" -m venv --without-pip "$work/venv"
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
new_site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$work/base"
# Every package of .venv except this checkout's editable install and the packages only the
# extras bring (jiwer; scikit-learn stays: sentence-transformers needs it), linked, so nothing
# is downloaded or copied.
for entry in "$site"/*; do
  name=$(basename "$entry")
  case "$name" in
    incitescan*|__editable__*incitescan*|jiwer*|build|build-*|pytest*|_pytest|hypothesis*|\
    jsonschema*|playwright*|mypy*|ruff*) continue ;;
  esac
  ln -s "$entry" "$work/base/$name"
done
echo "import site; site.addsitedir('$work/base')" >"$new_site/incitescan-base.pth"
"$python" -m pip --python "$work/venv/bin/python" install -q --no-deps --no-index "$wheel"

echo "==> checking the installed wheel"
cd "$work"  # nothing of the checkout may be imported from here on
unset PYTHONPATH
bin=$work/venv/bin
where=$("$bin/python" -c 'import pipelines, service; print(pipelines.__file__, service.__file__)')
case "$where" in "$new_site"/pipelines/*" $new_site"/service/*) ;; *) fail "imported $where" ;; esac
"$bin/python" -c 'import jiwer' 2>/dev/null && fail "jiwer is importable: not a base install"
"$bin/incitescan" --help >/dev/null || fail "incitescan --help failed"
"$bin/incitescan" doctor || fail "incitescan doctor found a required part missing"
set +e
"$bin/incitescan" eval speech "$work" >"$work/eval.out" 2>"$work/eval.err"
status=$?
set -e
expected="incitescan: incitescan eval speech needs the Python package jiwer, which the base install leaves out: pip install 'incitescan[eval]'"
[ "$status" -eq 2 ] && [ "$(cat "$work/eval.err")" = "$expected" ] \
  || { cat "$work/eval.err" >&2; fail "eval speech without jiwer: exit $status, not one clear line"; }
# The plain-pip-install user without Chromaprint: the scan runs, its report says what it skipped.
mkdir -p "$work/nofp"
ln -sf "$(command -v ffmpeg)" "$(command -v ffprobe)" "$work/nofp/"
PATH="$work/nofp" "$bin/incitescan" scan "$repo/samples/threat_knife.mp4" --quiet \
  --speech-model tiny.en --json "$work/report.json" 2>"$work/scan.err" \
  || { cat "$work/scan.err" >&2; fail "a scan without fpcalc failed"; }
"$bin/python" - "$work/report.json" <<'EOF' || fail "the report of a scan without fpcalc is wrong"
import json, sys
report = json.load(open(sys.argv[1]))
assert report["flagged"] and report["threat_hits"], "the risk scan did not run"
assert [s["code"] for s in report["skipped"]] == ["fpcalc_missing"], report["skipped"]
EOF
echo "check_dist: ok: $(basename "$sdist"), $(basename "$wheel") install and run"
