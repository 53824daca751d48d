#!/usr/bin/env bash
# Remakes the README's pictures of `workbench report`: trains quickstart.yaml and a shortened
# sinusoid_maml.yaml, evaluates the transfer run, writes both reports, screenshots each page with
# headless Chromium (Debian's `chromium` package) and keeps the part the README shows.
# Run from the repository root: docs/pictures.sh (about 3 minutes on 2 cores).
set -euo pipefail

runs_dir=$(mktemp -d)
quickstart=$(workbench run recipes/quickstart.yaml --runs-dir "$runs_dir" 2>/dev/null)
workbench evaluate "$quickstart" >/dev/null
sinusoid=$(workbench run recipes/sinusoid_maml.yaml --set outer.iterations=10000 --set evaluation.every=1000 --runs-dir "$runs_dir" 2>/dev/null)

# picture RUN OUTPUT TOP BOTTOM: the page's rows from about TOP to about BOTTOM (crop_screenshot.py).
picture() {
    page=$(workbench report "$1" 2>/dev/null)
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,4600 \
        --screenshot="$runs_dir/page.png" "file://$(realpath "$page")" 2>/dev/null
    "$(dirname "$(command -v workbench)")/python" docs/crop_screenshot.py "$runs_dir/page.png" "$2" "$3" "$4"
}

picture "$quickstart" docs/report-transfer.png 510 1330
picture "$sinusoid" docs/report-meta.png 1350 2680
rm -r "$runs_dir"
