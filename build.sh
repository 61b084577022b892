#!/usr/bin/env bash
# Build the ramalama.pyz zipapp: ./build.sh [OUTPUT]   (default: dist/ramalama.pyz next to this script)
#
# shiv (pinned) packs ramalama.py and vendor/ into a zipapp; the archive is then
# rewritten to drop shiv's extracting bootstrap in favour of a plain zipimport
# launcher plus a precompiled ramalama.pyc. Builds of the same commit are
# byte-identical (SOURCE_DATE_EPOCH = time of the last commit).
set -euo pipefail

SHIV_VERSION=1.0.8
PY=${PYTHON:-python3}

out=${1:-}
case $out in
    '') ;;
    /*) ;;
    *) out=$PWD/$out ;;
esac

cd "$(dirname "$0")"
out=${out:-$PWD/dist/ramalama.pyz}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
fi
export SOURCE_DATE_EPOCH
export PYTHONHASHSEED=0

if ! "$PY" -c 'import shiv, importlib.metadata as m, sys; sys.exit(m.version("shiv") != sys.argv[1])' \
        "$SHIV_VERSION" 2>/dev/null; then
    "$PY" -m pip install -q "shiv==$SHIV_VERSION"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Stage site-packages: ramalama.py and the vendored packages, with fixed modes.
stage=$tmp/site-packages
mkdir -p "$stage"
cp ramalama.py "$stage/"
cp -R vendor "$stage/"
find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$stage" -name '*.pyc' -type f -exec rm -f {} +
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +

"$PY" -m shiv --site-packages "$stage" -e ramalama:main -p '/usr/bin/env python3' \
    --reproducible -o "$tmp/shiv.pyz"

"$PY" - "$tmp/shiv.pyz" "$stage/ramalama.py" "$tmp/ramalama.pyz" <<'PYEOF'
"""Replace shiv's extracting bootstrap with a zipimport launcher."""
import os
import py_compile
import sys
import tempfile
import zipfile

src, module_py, dst = sys.argv[1:]

LAUNCHER = b'''\
# ramalama.pyz launcher. Nothing is extracted: zipimport loads the pure-Python code
# (ramalama.pyc when it matches this Python, else ramalama.py) from this archive, once
# (a plain import unmarshals it twice: find_spec asks get_filename, which loads it too).
import os
import sys

if sys.version_info < (3, 9):
    sys.stderr.write("ramalama.pyz needs Python 3.9 or newer; this is Python %s (%s)\\n"
                     % (".".join(str(n) for n in sys.version_info[:3]), sys.executable))
    sys.exit(1)
import types, zipimport  # noqa: E401,E402
packages = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site-packages")
sys.path.insert(0, packages)
ramalama = sys.modules["ramalama"] = types.ModuleType("ramalama")
ramalama.__file__, ramalama.__loader__ = os.path.join(packages, "ramalama.py"), zipimport.zipimporter(packages)
exec(ramalama.__loader__.get_code("ramalama"), ramalama.__dict__)
sys.exit(ramalama.main())
'''

with open(src, "rb") as f:
    head = f.read(256)
if not head.startswith(b"#!"):
    sys.exit("build.sh: shiv output has no shebang")
shebang = head[:head.index(b"\n") + 1]

entries = {}
with zipfile.ZipFile(src) as zin:
    date_times = {info.date_time for info in zin.infolist()}
    if len(date_times) != 1:
        sys.exit("build.sh: shiv output has mixed timestamps: %r" % sorted(date_times))
    (date_time,) = date_times
    for name in zin.namelist():
        if name.startswith("site-packages/") or name == "environment.json":
            entries[name] = zin.read(name)
        elif not (name.startswith("_bootstrap/") or name == "__main__.py"):
            sys.exit("build.sh: unexpected entry in shiv output: " + name)

# Unchecked hash-based pyc: valid whatever the zip timestamps; zipimport skips it
# (bad magic number) on other Python versions and compiles ramalama.py instead.
# Docstrings stripped (optimize=2) and stored uncompressed: half the start-up cost.
with tempfile.TemporaryDirectory() as d:
    pyc = os.path.join(d, "ramalama.pyc")
    py_compile.compile(module_py, cfile=pyc, dfile="ramalama.pyz/site-packages/ramalama.py",
                       doraise=True, optimize=2,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    with open(pyc, "rb") as f:
        entries["site-packages/ramalama.pyc"] = f.read()
entries["__main__.py"] = LAUNCHER

with open(dst, "wb") as f:
    f.write(shebang)
    with zipfile.ZipFile(f, "w") as zout:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".pyc") else zipfile.ZIP_DEFLATED
            zout.writestr(info, entries[name])
PYEOF

chmod 0755 "$tmp/ramalama.pyz"
mkdir -p "$(dirname "$out")"
mv -f "$tmp/ramalama.pyz" "$out"

if command -v sha256sum >/dev/null; then
    sha256sum "$out"
else
    shasum -a 256 "$out"
fi
