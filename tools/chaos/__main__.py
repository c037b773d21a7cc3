"""`python -m tools.chaos`: run the chaos schedule and exit non-zero on any violation."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import tools.chaos
from tools.chaos.report import Report, render
from tools.chaos.run import Options, SetupError, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description=tools.chaos.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (60)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the faults and the load (1)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent HTTP clients (6)")
    parser.add_argument("--live", type=int, default=2, help="WebSocket clients per node (2)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.workers < 1 or args.live < 0:
        parser.error("--seconds and --workers must be positive, --live not negative")
    return args


async def _main(options: Options) -> Report:
    """Run until done; SIGTERM cancels the run, which still stops what it started."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[chaos] %(message)s")
    options = Options(
        seconds=args.seconds, seed=args.seed, workers=args.workers,
        live_per_node=args.live, keep=args.keep,
    )  # fmt: skip
    try:
        report = asyncio.run(_main(options))
    except SetupError as exc:
        print(f"chaos: could not start the cluster: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print("chaos: stopped by SIGTERM", file=sys.stderr)
        return 143
    print(render(report))
    if args.json:
        report.write_json(args.json)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
