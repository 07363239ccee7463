#!/usr/bin/env bash
# Install the wheel kit into a target folder without any index: install_kit.sh PYTHON WHEELS_DIR SITE_DIR
# With pip: --no-index --no-deps --target. Without pip: a wheel is a zip laid out for site-packages
# (none in the kit has a .data folder), so it is unzipped and byte-compiled as an install would be.
set -eu
PY="$1"; WHEELS="$2"; SITE="$3"
rm -rf "$SITE"
if "$PY" -m pip --version > /dev/null 2>&1; then
  exec "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
fi
echo "no pip in $PY: unzipping the wheels"
exec "$PY" - "$SITE" "$WHEELS"/*.whl <<'EOF'
import compileall, sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
compileall.compile_dir(sys.argv[1], quiet=1, workers=0)
EOF
