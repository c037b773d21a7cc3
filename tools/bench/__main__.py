"""`python -m tools.bench`: run the scenarios, print the table, write JSON and plots."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import tools.bench
from tools.bench import BenchError, plots, report
from tools.bench.cluster import DEFAULT_POOL, ROOT
from tools.bench.run import SCENARIOS, Options, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=tools.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each load (10; 3 for a quick run)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run this scenario only (repeat for several; default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "artifacts" / "bench",
        help="for bench.json and the plots",
    )
    parser.add_argument(
        "--rate", type=float, default=500.0, help="propagation: changes/s the writer aims at (500)"
    )
    parser.add_argument(
        "--pool", type=int, default=DEFAULT_POOL,
        help=f"DB_POOL_MAX of each node and of the naive endpoint ({DEFAULT_POOL})",
    )  # fmt: skip
    parser.add_argument(
        "--nodes", type=int, default=3, help="nodes for the hot SKU and propagation (3)"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.pool < 1 or args.nodes < 1:
        parser.error("--seconds, --rate, --pool and --nodes must be positive")
    return args


async def _main(options: Options) -> dict[str, Any]:
    """SIGTERM cancels the run like Ctrl-C, which still stops what it started."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[bench] %(message)s")
    only = tuple(args.only) if args.only else SCENARIOS
    options = Options(
        seconds=args.seconds, only=only, rate=args.rate, pool=args.pool, nodes=args.nodes
    )
    try:
        results = asyncio.run(_main(options))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("bench: stopped", file=sys.stderr)
        return 130
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, args.out / "bench.json")
    drawn = plots.draw(results, args.out)
    print(report.render(results))
    print(f"\nfigures: {args.out / 'bench.json'}; plots: {', '.join(p.name for p in drawn)}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
