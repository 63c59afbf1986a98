"""``python -m localhub``: run an embedded IoT Hub until SIGINT or SIGTERM."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .server import LocalHub, Settings


def parse_args(argv=None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m localhub", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("var/localhub"))
    parser.add_argument("--host", default="localhost", help="address to listen on and name")
    parser.add_argument("--https-port", type=int, default=8443)
    args = parser.parse_args(argv)
    return Settings(data_dir=args.data_dir, host=args.host, https_port=args.https_port)


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await LocalHub.start(settings)
    print(f"localhub listening on https://{settings.host}:{settings.https_port} (service API)")
    print(f"  and mqtts://{settings.host}:{settings.mqtt_port} (devices and modules)")
    print(f"CA certificate: {running.ca_file.resolve()}")
    print(running.ca_file.read_text(), end="")
    print(f"Service connection string ({settings.data_dir / 'connection-string'}):")
    print(running.connection_string, flush=True)
    await stop.wait()
    print("localhub stopping", flush=True)
    await running.stop()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except OSError as e:
        print(f"localhub could not start: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
