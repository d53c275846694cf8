#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that adds network latency in front of a local server (bench/run.sh
--s3-latency-ms).

  latency_proxy.py --upstream-port PORT --latency-ms 20 [--port 0]

Every byte is forwarded unchanged (S3 SigV4 signatures cover the Host header the client sent, which
the proxy does not touch), each direction delayed by half the latency: a request-response exchange
waits latency ms longer, as over a link with that round-trip time, while a long transfer streams at
full speed after its first byte (the delay is a pipeline, not a pause per chunk). New connections
wait one more round trip, as a TCP handshake would. Order within a connection is kept.

Prints "PORT" on stdout once it accepts connections; runs until SIGTERM or SIGINT, then prints to
stderr the connections it accepted and the requests it saw (a request: the client starts sending
again after the server answered; exact for HTTP/1.1 without pipelining). Connects only to
127.0.0.1:PORT (no other address is reachable through it). Standard library only.
"""
import argparse
import asyncio
import json
import signal
import sys
import time

CHUNK = 256 * 1024  # large reads keep the proxy's own CPU small next to the client's
STATS = {"connections": 0, "requests": 0, "bytes_up": 0, "bytes_down": 0}


async def pump(reader, writer, delay_s, turn, up):
    """Copies reader to writer, each chunk written delay_s after it was read, in order. `turn`
    (shared by a connection's two directions) holds which one sent last, to count requests."""
    queue = asyncio.Queue(maxsize=64)  # bounded: a slow reader holds back its sender (16 MiB)

    async def read_side():
        try:
            while True:
                data = await reader.read(CHUNK)
                if data and turn[0] != up:
                    turn[0] = up
                    STATS["requests"] += up
                STATS["bytes_up" if up else "bytes_down"] += len(data)
                await queue.put((time.monotonic() + delay_s, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((time.monotonic(), b""))

    async def write_side():
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    await asyncio.gather(read_side(), write_side())


async def handle(client_r, client_w, upstream_port, delay_s):
    try:
        await asyncio.sleep(2 * delay_s)  # the handshake's round trip
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_w.close()
        return
    STATS["connections"] += 1
    turn = [0]
    try:
        await asyncio.gather(pump(client_r, up_w, delay_s, turn, 1),
                             pump(up_r, client_w, delay_s, turn, 0))
    finally:
        for w in (up_w, client_w):
            w.close()


async def main_async(a):
    delay_s = a.latency_ms / 2000.0
    server = await asyncio.start_server(lambda r, w: handle(r, w, a.upstream_port, delay_s),
                                        "127.0.0.1", a.port)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps(STATS), file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream-port", type=int, required=True, help="the server's port on 127.0.0.1")
    ap.add_argument("--latency-ms", type=float, required=True, help="added round-trip time")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    a = ap.parse_args()
    if a.latency_ms < 0:
        sys.exit("--latency-ms must be >= 0")
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
