"""``python -m agent.oms.demo``: parse the options and run the warehouse demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from agent.oms.demo.warehouse import EXIT_INTERRUPTED, Options, run

SAMPLE_ORDERS = Path(__file__).resolve().parents[3] / "examples" / "orders.json"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the demo with the command line's options; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.oms.demo",
        description="A small warehouse on simulated hardware: two pick zones, a put wall and "
        "a pack station, each its own process, run by the reference OMS.",
    )
    parser.add_argument("--orders", type=int, default=12, help="orders to run (default 12)")
    parser.add_argument(
        "--speed", type=_positive, default=4.0, help="how much faster than people (default 4)"
    )
    parser.add_argument(
        "--seed", type=int, default=int(os.environ.get("DEMO_SEED", "7")), help="repeatable runs"
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="stay up after the KPIs to look at screens"
    )
    parser.add_argument("--order-file", type=Path, default=SAMPLE_ORDERS, help="JSON or CSV")
    parser.add_argument("--workdir", type=Path, help="keep node files, logs and stores here")
    parser.add_argument("--record", type=Path, help="write every event received as JSON lines")
    parser.add_argument("--kpi-json", type=Path, help="write the KPIs and order statuses here")
    parser.add_argument("--timeout", type=_positive, default=600.0, help="give up after (s)")
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    options = Options(
        orders=args.orders,
        speed=args.speed,
        seed=args.seed,
        keep_running=args.keep_running,
        order_file=args.order_file,
        workdir=args.workdir,
        record=args.record,
        kpi_json=args.kpi_json,
        timeout=args.timeout,
    )
    console = Console()
    try:
        return asyncio.run(_run(options, console))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("interrupted: every process stopped")
        return EXIT_INTERRUPTED


async def _run(options: Options, console: Console) -> int:
    """``run``, stopping everything once on SIGINT (Ctrl-C), SIGTERM or SIGHUP.

    SIGINT gets a handler of its own rather than Python's KeyboardInterrupt: a demo started
    in the background by a script inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so ``kill -INT`` would do nothing. The first signal cancels the run,
    which stops the nodes (their lights off) and then the broker; later ones must not
    cancel that clean-up half-way.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop)
    return await run(options, console)


if __name__ == "__main__":
    sys.exit(main())
