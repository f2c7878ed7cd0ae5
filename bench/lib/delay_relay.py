#!/usr/bin/env python3
"""A TCP relay that adds a fixed delay each way (no netem here), for the
tunnel benchmarks: LISTEN_ADDR:PORT -> TARGET_ADDR:PORT, every chunk read on
one side is written to the other DELAY_MS later, in order. It stands for the
internet between the proxy and a tunnel endpoint.

    delay_relay.py LISTEN_ADDR PORT TARGET_ADDR PORT DELAY_MS

Prints READY once listening. A refused or failed connection to the target
closes the client's connection after the delay (as a far peer's RST would
arrive). Loopback addresses only in this project's benchmarks.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def send():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data or None))
            if not data:
                break
        await sender
    except (OSError, asyncio.CancelledError):
        sender.cancel()


async def handle(creader, cwriter, target, delay):
    try:
        ureader, uwriter = await asyncio.open_connection(*target)
    except OSError:
        await asyncio.sleep(delay)
        cwriter.close()
        return
    for w in (cwriter, uwriter):
        sock = w.get_extra_info("socket")
        if sock is not None:
            import socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(pipe(creader, uwriter, delay), pipe(ureader, cwriter, delay), return_exceptions=True)
    for w in (cwriter, uwriter):
        w.close()


async def main():
    laddr, lport, taddr, tport, ms = sys.argv[1:6]
    delay = float(ms) / 1000
    server = await asyncio.start_server(lambda r, w: handle(r, w, (taddr, int(tport)), delay), laddr, int(lport))
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
