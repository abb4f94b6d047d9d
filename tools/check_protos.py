"""Fail when the committed stubs in resplit/v1 differ from a fresh generation.

Run by ``make proto-check`` (part of ``make test``, hence of CI).
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_protos import PACKAGE, ROOT, generate


def drift() -> list[str]:
    """Names of files that differ, are missing, or are extra."""
    committed = ROOT / PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PACKAGE
        fresh_names = {p.name for p in fresh.iterdir()}
        have = {p.name for p in committed.glob("*") if p.is_file()} if committed.exists() else set()
        problems = [f"missing: {n}" for n in sorted(fresh_names - have)]
        problems += [f"extra: {n}" for n in sorted(have - fresh_names)]
        problems += [
            f"differs: {n}"
            for n in sorted(fresh_names & have)
            if not filecmp.cmp(fresh / n, committed / n, shallow=False)
        ]
    return problems


def main() -> None:
    problems = drift()
    if problems:
        print("generated protobuf stubs are out of date; run `make proto` and commit:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)
    print("protobuf stubs match protos/")


if __name__ == "__main__":
    main()
