"""The floor for a trio relay: forwards both ways, records nothing. The benchmark
runs it beside ctirelay to show how much of the added latency is trio's own.

    python bare_trio.py LISTEN_PORT SERVER_PORT
"""
import socket
import sys

import trio
from trio.lowlevel import wait_readable, wait_writable


async def pump(src: socket.socket, dst: socket.socket) -> None:
    while True:
        try:
            data = src.recv(65536)
        except BlockingIOError:
            await wait_readable(src)
            continue
        if not data:
            dst.shutdown(socket.SHUT_WR)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[dst.send(view):]
            except BlockingIOError:
                await wait_writable(dst)


async def main(listen_port: int, server_port: int) -> None:
    async def handler(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", server_port)
        plain = [socket.socket(fileno=s.socket.fileno()) for s in (client, server)]
        for sock in plain:
            sock.setblocking(False)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, plain[0], plain[1])
                nursery.start_soon(pump, plain[1], plain[0])
        finally:
            for sock in plain:
                sock.detach()
            await client.aclose()
            await server.aclose()

    await trio.serve_tcp(handler, listen_port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
