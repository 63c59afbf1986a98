"""TLS listeners that cap connections which have not authenticated yet.

A TLS connection costs memory (about 50 KB: OpenSSL's state, buffers, a task) before its
client has proved anything. So each listener accepts on its own, sets up TLS only once the
client's first bytes arrive (a silent connection costs a socket), and counts a connection
from accept until it authenticates (CONNACK 0 over MQTT, the first authorized request over
HTTPS), closes, or reaches AUTHENTICATION_DEADLINE. Over MAX_PENDING_PER_HOST from one
client address, or MAX_PENDING in all, a new connection is closed at once, before any TLS
byte is read. Each listener counts its own connections, so a flood on one port leaves the
other alone.
"""

import asyncio
import errno
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("localhub.admission")

MAX_PENDING_PER_HOST = 64
MAX_PENDING = 1024
TLS_HANDSHAKE_TIMEOUT = 10.0
# From accept to authentication: the handshake's time plus MQTT's 10 s for CONNECT. The
# protocols' own timeouts usually act first; this one bounds HTTPS, which has none.
AUTHENTICATION_DEADLINE = 20.0
# Connections the kernel queues for accept(). asyncio's 100 overflows in a burst, and a
# dropped SYN is retried only after a second, legitimate clients' included.
LISTEN_BACKLOG = 1024
ACCEPTS_PER_WAKEUP = 100  # as asyncio, so that a flood does not starve other work
ACCEPT_RETRY_DELAY = 1.0  # after running out of file descriptors, as asyncio does
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Pending:
    """One accepted connection that has not authenticated yet."""

    __slots__ = ("abort", "host", "protocol", "settled", "timer")

    def __init__(self, host: str):
        self.host = host
        self.settled = False  # authenticated, closed, or out of time
        self.timer: asyncio.TimerHandle | None = None  # AUTHENTICATION_DEADLINE
        self.protocol: asyncio.BaseProtocol | None = None
        # How to close it at the deadline; the listener updates it at each stage (silent,
        # in the TLS handshake, handed to the protocol).
        self.abort: Callable[[], object] | None = None


class Admission:
    """The unauthenticated connections of one listener, per client host and in all."""

    def __init__(self, per_host: int = MAX_PENDING_PER_HOST, total: int = MAX_PENDING):
        self.per_host, self.total = per_host, total
        self.by_host: Counter[str] = Counter()
        self.count = 0
        self._by_protocol: dict[asyncio.BaseProtocol, _Pending] = {}
        self._refusing: set[str] = set()  # hosts told about in the log, until they drop below

    def release(self, protocol: asyncio.BaseProtocol) -> None:
        """``protocol``'s client authenticated, or it closed: it no longer counts."""
        pending = self._by_protocol.get(protocol)
        if pending is not None:
            self.settle(pending)

    # -- for the listener --------------------------------------------------------------
    def admit(self, host: str, loop: asyncio.AbstractEventLoop) -> _Pending | None:
        """A new connection from ``host`` to count, or None if it is over a cap."""
        if self.by_host[host] >= self.per_host or self.count >= self.total:
            if host not in self._refusing:
                self._refusing.add(host)
                log.warning(
                    "refusing new connections from %s: %d from it and %d in all have not "
                    "authenticated yet (caps %d and %d)",
                    *(host, self.by_host[host], self.count, self.per_host, self.total),
                )
            return None
        self.by_host[host] += 1
        self.count += 1
        pending = _Pending(host)
        pending.timer = loop.call_later(AUTHENTICATION_DEADLINE, self._expire, pending)
        return pending

    def track(self, pending: _Pending, protocol: asyncio.BaseProtocol) -> None:
        pending.protocol = protocol
        self._by_protocol[protocol] = pending

    def settle(self, pending: _Pending) -> None:
        if pending.settled:
            return
        pending.settled = True
        pending.timer.cancel()
        self._by_protocol.pop(pending.protocol, None)
        self.count -= 1
        self.by_host[pending.host] -= 1
        if self.by_host[pending.host] <= 0:
            del self.by_host[pending.host]
        if self.by_host[pending.host] < self.per_host:
            self._refusing.discard(pending.host)

    def _expire(self, pending: _Pending) -> None:
        if pending.abort is not None:
            pending.abort()
        self.settle(pending)

    async def listen(self, protocol_factory, host: str, port: int, tls: ssl.SSLContext):
        """Serve TLS on every address of ``host``; returns a Listener (``close()`` it)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets = []
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as e:
                    raise OSError(e.errno, f"error while binding to {address}: {e.strerror}") from e
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return Listener(self, protocol_factory, tls, sockets)


class Listener:
    """Accepts on its sockets, closing connections over the caps before any TLS byte."""

    def __init__(self, admission: Admission, protocol_factory, tls, sockets):
        self.admission, self.protocol_factory, self.tls = admission, protocol_factory, tls
        self.sockets = sockets
        self._loop = asyncio.get_running_loop()
        self._silent: dict[socket.socket, _Pending] = {}  # accepted, no byte received yet
        self._handshakes: set[asyncio.Task] = set()
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        for sock in self.sockets:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        for sock in list(self._silent):
            self._drop_silent(sock)
        for task in list(self._handshakes):
            task.cancel()

    def _resume(self, sock: socket.socket) -> None:
        if sock.fileno() != -1:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if e.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error("cannot accept connections (%s); retrying in %ss", e, ACCEPT_RETRY_DELAY)
                self._loop.remove_reader(listening.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume, listening)
                return
            pending = self.admission.admit(address[0], self._loop)
            if pending is None:
                sock.close()
                continue
            sock.setblocking(False)
            self._silent[sock] = pending
            pending.abort = lambda sock=sock: self._drop_silent(sock)
            self._loop.add_reader(sock.fileno(), self._spoke, sock)

    def _drop_silent(self, sock: socket.socket) -> None:
        pending = self._silent.pop(sock, None)
        if pending is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
            self.admission.settle(pending)

    def _spoke(self, sock: socket.socket) -> None:
        """The client sent its first bytes, or closed: TLS now, or nothing at all."""
        try:
            spoke = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset
            spoke = b""
        if not spoke:
            self._drop_silent(sock)
            return
        pending = self._silent.pop(sock)
        self._loop.remove_reader(sock.fileno())
        task = self._loop.create_task(self._handshake(sock, pending))
        pending.abort = task.cancel
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket, pending: _Pending) -> None:
        def build():
            protocol = self.protocol_factory()
            self.admission.track(pending, protocol)
            return protocol

        # The transport owns the socket from here: on failure it closes it.
        try:
            transport, _protocol = await self._loop.connect_accepted_socket(
                build, sock, ssl=self.tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
            )
        except asyncio.CancelledError:
            self.admission.settle(pending)
            raise
        except Exception as e:  # the handshake failed or timed out: nothing to serve
            log.debug("TLS handshake with %s failed: %r", pending.host, e)
            self.admission.settle(pending)
            return
        pending.abort = transport.abort  # if it is still unauthenticated at the deadline
