"""Write the tiny task's data and model:
`python -m maspo_verl.sandbox.tiny --out DIR [--num-train N] [--num-val M] [--seed S]`."""

from __future__ import annotations

import argparse
import sys

from maspo_verl.sandbox.tiny import prepare_workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.sandbox.tiny", description=__doc__)
    parser.add_argument("--out", required=True, help="folder that receives data/ and model/")
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        paths = prepare_workdir(args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    except (ValueError, OSError) as error:
        print(f"maspo_verl.sandbox.tiny: {error}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
