#!/usr/bin/env python3
"""TCP forwarding from the real node's bridge to services that listen on loopback.

    hack/forward.py LISTEN_HOST:PORT=TARGET_HOST:PORT [...]

Pods on the real node reach the host only at its bridge address; the API server and
Prometheus listen on 127.0.0.1, and there is no kube-proxy to route the `kubernetes`
Service. hack/in-cluster.sh runs this on the bridge address so that Serin's pods reach
both. Bytes are copied as they are (TLS passes through untouched). Connections are
bounded (MAX_CONNECTIONS); an idle one is kept, as watches are long-lived.
"""
import asyncio
import sys

MAX_CONNECTIONS = 256
CHUNK = 64 * 1024


async def pipe(reader, writer):
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def handler(target_host, target_port, slots):
    async def handle(reader, writer):
        if slots.locked():
            writer.close()
            return
        async with slots:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(target_host, target_port), timeout=5)
            except (OSError, asyncio.TimeoutError) as e:
                print(f"forward to {target_host}:{target_port}: {e}", file=sys.stderr, flush=True)
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


def split(address):
    host, _, port = address.rpartition(":")
    return host, int(port)


async def main(pairs):
    servers = []
    for pair in pairs:
        listen, _, target = pair.partition("=")
        (lhost, lport), (thost, tport) = split(listen), split(target)
        slots = asyncio.Semaphore(MAX_CONNECTIONS)
        servers.append(await asyncio.start_server(handler(thost, tport, slots), lhost, lport))
        print(f"forwarding {lhost}:{lport} -> {thost}:{tport}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    if len(sys.argv) < 2 or any("=" not in a for a in sys.argv[1:]):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1:]))
