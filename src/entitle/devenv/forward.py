"""A loopback TCP forward from the host into a network namespace.

The real-node harness keeps every non-loopback address inside a network namespace of its own;
the tests and kubectl reach the apiserver in there through this forward. It binds its listening
socket in the host's namespace *first*, then moves the process into the node's namespace
(``setns`` affects sockets created afterwards only), so every outgoing connection starts inside
the node: no veth, bridge, route or iptables rule in the host's namespace.

    python -m entitle.devenv.forward NETNS_PATH LISTEN_PORT TARGET_HOST:PORT
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def serve(listener: socket.socket, host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    netns, listen_port, target = argv or sys.argv[1:]
    host, port = target.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(listen_port)))
    listener.listen(128)
    enter_netns(netns)
    print("forwarding", flush=True)
    asyncio.run(serve(listener, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
