#!/usr/bin/env bash
# Formatting is mechanical (STYLE.md point 8): every C++ file of the repository must be unchanged by
# the checked-in .clang-format. Prints the files that drift and fails if there are any.
set -euo pipefail
src=$1
cd "$src"
fmt=$(command -v clang-format || command -v clang-format-14 || true)
if [ -z "$fmt" ]; then echo "clang-format not installed (scripts/setup-deps.sh installs it)"; exit 1; fi
drift=()
while IFS= read -r -d '' f; do
  if ! "$fmt" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then drift+=("$f"); fi
done < <(git ls-files -z -- '*.cpp' '*.h' 2>/dev/null || find sdk host plugins tests examples bench -name '*.cpp' -o -name '*.h' -print0)
if [ ${#drift[@]} -gt 0 ]; then
  echo "clang-format drift in ${#drift[@]} file(s) (run: clang-format -i FILE):"
  printf '  %s\n' "${drift[@]}"
  exit 1
fi
echo "format check: all files formatted"
