"""Hands a simulated module's events to the web app's ingest websocket (consumers.IngestConsumer).

The simulator's threads call ``send``; one asyncio thread keeps a websocket open and sends
them in order. While the web app cannot be reached (not started yet, restarting), events wait
in a bounded buffer (the oldest are dropped first) and the connection is retried.
"""

import asyncio
import collections
import json
import logging
import threading

import aiohttp

from devices.events import ingest_token

log = logging.getLogger(__name__)

# The start of the lines it logs while failing and once through again (the module page shows
# the complaint: devices/simulator_control.py).
UNREACHABLE = "Events do not reach the web app"
REACHED = "Events reach the web app again"
RETRY_SECONDS = 1
BUFFER = 1000
HEARTBEAT_SECONDS = 20


class EventForwarder:
    def __init__(self, url: str, device_id: str, module_id: str):
        self.url, self.device_id, self.module_id = url, device_id, module_id
        self._pending: collections.deque = collections.deque(maxlen=BUFFER)
        self._loop = asyncio.new_event_loop()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="event-forwarder", daemon=True)
        self._starting = threading.Lock()

    def send(self, event: dict) -> None:
        """Queue ``event``; callable from any thread. The first event starts the connection,
        so a simulator that never starts never complains that the web app is away."""
        with self._starting:
            if not self._thread.is_alive() and not self._loop.is_closed():
                self._thread.start()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue, event)

    def close(self, timeout: float = 2.0) -> None:
        """Stop once what is queued is sent, or after ``timeout`` seconds."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._close)
        self._thread.join(timeout)

    def _queue(self, event: dict) -> None:
        self._pending.append(event)
        self._wakeup.set()

    def _close(self) -> None:
        self._closing = True
        self._wakeup.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._forward())
        finally:
            self._loop.close()

    async def _forward(self) -> None:
        failing = False
        async with aiohttp.ClientSession() as session:
            while not (self._closing and not self._pending):
                token = ingest_token(self.device_id, self.module_id)
                try:
                    async with session.ws_connect(
                        self.url,
                        headers={"Authorization": f"Bearer {token}"},
                        heartbeat=HEARTBEAT_SECONDS,
                    ) as ws:
                        if failing:
                            log.warning("%s at %s.", REACHED, self.url)
                            failing = False
                        await self._send_all(ws)
                        if ws.close_code and ws.close_code >= 4000:
                            log.warning("The web app refused an event (code %s).", ws.close_code)
                except (aiohttp.ClientError, OSError) as e:
                    if self._closing:
                        return  # nobody to hand the rest to; they were printed anyway
                    if not failing:
                        log.warning(
                            "%s at %s (%s); retrying every %s s.",
                            UNREACHABLE,
                            self.url,
                            str(e) or type(e).__name__,
                            RETRY_SECONDS,
                        )
                        failing = True
                    await asyncio.sleep(RETRY_SECONDS)

    async def _send_all(self, ws) -> None:
        """Send events as they come until the socket closes, or until closing and all sent.
        The socket is read meanwhile, so a close by the server is noticed while idle."""
        closed = asyncio.ensure_future(ws.receive())
        try:
            while not closed.done():
                if self._pending:
                    await ws.send_str(json.dumps(self._pending[0]))
                    self._pending.popleft()
                    continue
                if self._closing:
                    return
                self._wakeup.clear()
                woken = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait({closed, woken}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            closed.cancel()
