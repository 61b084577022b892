#!/usr/bin/env bash
# Build the ramalama.pyz zipapp: ./build.sh [OUTPUT]   (default: dist/ramalama.pyz next to this script)
#
# shiv (pinned) packs ramalama.py and vendor/ into a zipapp; the archive is then
# rewritten to drop shiv's extracting bootstrap in favour of a plain zipimport
# launcher plus ramalama.py compiled by every CPython 3.9+ this machine has (pyenv's,
# the system's, $PYTHON): one ramalama.<cache_tag>.pyc each, which the launcher picks
# by sys.implementation.cache_tag. Builds of the same commit on the same machine are
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

# Compiled code for each CPython 3.9+ found, one per cache tag (3.11.2 and 3.11.7 share one).
# Unchecked hash-based pycs: valid whatever the zip timestamps. Docstrings stripped (optimize=2).
mkdir -p "$tmp/pyc"
pythons=("$PY" /usr/bin/python3 /usr/local/bin/python3)
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for p in "$pyenv_root"/versions/3.*/bin/python3; do pythons+=("$p"); done
for p in "${pythons[@]}"; do
    command -v "$p" >/dev/null 2>&1 || continue
    "$p" - "$stage/ramalama.py" "$tmp/pyc" <<'PYEOF' 2>/dev/null || true
import os, py_compile, sys
if sys.version_info >= (3, 9) and sys.implementation.name == "cpython":
    out = os.path.join(sys.argv[2], "ramalama.%s.pyc" % sys.implementation.cache_tag)
    if not os.path.exists(out):
        py_compile.compile(sys.argv[1], cfile=out, dfile="ramalama.pyz/site-packages/ramalama.py", doraise=True,
                           optimize=2, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
PYEOF
done

"$PY" - "$tmp/shiv.pyz" "$tmp/pyc" "$tmp/ramalama.pyz" <<'PYEOF'
"""Replace shiv's extracting bootstrap with a zipimport launcher."""
import os
import sys
import zipfile

src, pyc_dir, dst = sys.argv[1:]

LAUNCHER = b'''\
# ramalama.pyz launcher. Nothing is extracted: the code is read from this archive once, the
# ramalama.<cache_tag>.pyc compiled for this Python when there is one whose magic number
# matches, else ramalama.py compiled now.
import os
import sys

if sys.version_info < (3, 9):
    sys.stderr.write("ramalama.pyz needs Python 3.9 or newer; this is Python %s (%s)\\n"
                     % (".".join(str(n) for n in sys.version_info[:3]), sys.executable))
    sys.exit(1)
import marshal, types, zipimport  # noqa: E401,E402
from _frozen_importlib_external import MAGIC_NUMBER  # noqa: E402 - frozen: costs nothing
packages = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site-packages")
sys.path.insert(0, packages)
ramalama = sys.modules["ramalama"] = types.ModuleType("ramalama")
ramalama.__file__, ramalama.__loader__ = os.path.join(packages, "ramalama.py"), zipimport.zipimporter(packages)
ramalama.__cached__ = os.path.join(packages, "ramalama.%s.pyc" % sys.implementation.cache_tag)
try:
    data = ramalama.__loader__.get_data(ramalama.__cached__)
    if data[:4] != MAGIC_NUMBER:
        raise OSError("compiled by another Python")
    code = marshal.loads(memoryview(data)[16:])
except OSError:
    ramalama.__cached__ = None
    code = compile(ramalama.__loader__.get_data(ramalama.__file__), ramalama.__file__, "exec", optimize=2)
exec(code, ramalama.__dict__)
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

# The pycs and the launcher are stored uncompressed (storing the pycs halved the start-up cost):
# a start inflates nothing.
for name in sorted(os.listdir(pyc_dir)):
    with open(os.path.join(pyc_dir, name), "rb") as f:
        entries["site-packages/" + name] = f.read()
if not entries.keys() & {"site-packages/ramalama.%s.pyc" % sys.implementation.cache_tag}:
    sys.exit("build.sh: no compiled code for the building Python")
entries["__main__.py"] = LAUNCHER

with open(dst, "wb") as f:
    f.write(shebang)
    with zipfile.ZipFile(f, "w") as zout:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            stored = name.endswith(".pyc") or name == "__main__.py"
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
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
