"""The OpenAPI spec of the API as checked into docs/openapi.json. Regenerate it after changing
a route or schema with `python -m service.openapi`; `--check` exits 1 when the file is stale
(a test does the same)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def spec() -> dict[str, Any]:
    """The app's OpenAPI spec (built without starting the app). The version is left out so
    the checked-in file does not change with every release."""
    from .api import create_app

    document = create_app().openapi()
    document["info"]["version"] = "1"
    return document


def render(document: dict[str, Any]) -> str:
    """The spec as the checked-in text."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/openapi.json, or with --check compare it with the app's spec."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--out", type=Path, default=SPEC_PATH)
    args = parser.parse_args(argv)
    text = render(spec())
    if args.check:
        if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is stale; run `python -m service.openapi`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
