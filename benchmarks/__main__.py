"""Run every benchmark: `python -m benchmarks` (or `make bench`), or some: `python -m benchmarks NAME...`.

One benchmark may take options after its name (`python -m benchmarks live_bench --rounds 1`);
its `main(argv)` gets them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    selected, options = argv[:split] or names, argv[split:]
    unknown = [n for n in selected if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    if options and len(selected) != 1:
        print("options go with exactly one benchmark: python -m benchmarks NAME [OPTIONS]", file=sys.stderr)
        return 2
    for name in selected:
        module = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(module, "main"):  # a helper module (live_observer)
            if argv:
                print(f"{name} is a helper module, not a benchmark", file=sys.stderr)
                return 2
            continue
        print(f"== {name} ==", flush=True)
        if options:
            module.main(options)
        else:
            module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
