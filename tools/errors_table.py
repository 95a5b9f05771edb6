"""Write README.md's errors table from fedgate/transport/errors_table.py, or check it.

    python tools/errors_table.py           # rewrite the block between the markers
    python tools/errors_table.py --check   # exit 1 if README.md's block differs

The block sits between ``<!-- errors:start -->`` and ``<!-- errors:end -->``; everything
outside the markers is left as it is. tests/transport/test_errors_table.py runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from fedgate.transport.errors_table import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- errors:start -->", "<!-- errors:end -->"


def spliced(readme: str, table: str) -> str:
    """``readme`` with the block between its markers replaced by ``table``."""
    before, start, rest = readme.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md has no {START} ... {END} block")
    return f"{before}{START}\n{table}{END}{after}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args()
    current = args.readme.read_text()
    wanted = spliced(current, markdown_table())
    if not args.check:
        args.readme.write_text(wanted)
        print(f"wrote the errors table into {args.readme}")
        return 0
    if current != wanted:
        diff = difflib.unified_diff(
            current.splitlines(), wanted.splitlines(), "README.md", "rendered", lineterm=""
        )
        print("\n".join(diff), file=sys.stderr)
        print(
            "README.md's errors table is stale: run python tools/errors_table.py", file=sys.stderr
        )
        return 1
    print("README.md's errors table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
