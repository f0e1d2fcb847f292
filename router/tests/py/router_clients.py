"""mcstatus (a real client library) against the player router, driven by router/tests/.

A router routes by the hostname in the handshake, but these tests have no DNS for
their hostnames: the socket goes to 127.0.0.1 while the handshake names HOSTNAME, the
way a player's client would after resolving HOSTNAME to the router. mcstatus 14.2's
own client classes do the talking (its public JavaServer would resolve HOSTNAME).

Usage (prints one JSON object on stdout; exit 1 with {"error": ...} on a failure):
    router_clients.py status PORT HOSTNAME        status + ping (mcstatus JavaClient)
    router_clients.py legacy PORT                 mcstatus LegacyServer.status() (sends no hostname)
    router_clients.py legacy16 PORT HOSTNAME      the 1.6 ping with MC|PingHost, answer parsed by mcstatus
"""

import json
import struct
import sys
from time import perf_counter

try:
    from mcstatus import LegacyServer
    from mcstatus._net.address import Address
    from mcstatus._protocol.io.base_io import StructFormat
    from mcstatus._protocol.io.connection import TCPSocketConnection
    from mcstatus._protocol.java_client import JavaClient
    from mcstatus._protocol.legacy_client import LegacyClient
except ImportError as error:  # the venv of scripts/start-services.sh has them
    print(f"router_clients.py: {error}: install prod/tests/py/requirements.txt (scripts/start-services.sh does)", file=sys.stderr)
    sys.exit(2)

LOOPBACK = "127.0.0.1"


def status(port, hostname):
    with TCPSocketConnection((LOOPBACK, port), timeout=10) as connection:
        client = JavaClient(connection, address=Address(hostname, port), version=340)
        client.handshake()
        answer = client.read_status()
        latency_ms = client.test_ping()
    return {
        "online": answer.players.online,
        "max": answer.players.max,
        "version_name": answer.version.name,
        "protocol": answer.version.protocol,
        "motd": answer.motd.to_plain(),
        "favicon": answer.icon,
        "latency_ms": latency_ms,
    }


def legacy_answer(answer):
    return {
        "online": answer.players.online,
        "max": answer.players.max,
        "version_name": answer.version.name,
        "protocol": answer.version.protocol,
        "motd": answer.motd.to_plain(),
    }


def utf16_with_length(text):
    return struct.pack(">H", len(text)) + text.encode("utf-16-be")


def legacy16(port, hostname):
    host = utf16_with_length(hostname)
    request = (
        bytes.fromhex("fe01fa")
        + utf16_with_length("MC|PingHost")
        + struct.pack(">H", 1 + len(host) + 4)
        + bytes([78])
        + host
        + struct.pack(">i", port)
    )
    with TCPSocketConnection((LOOPBACK, port), timeout=10) as connection:
        start = perf_counter()
        connection.write(request)
        if connection.read(1) != b"\xff":
            raise OSError("Received invalid packet ID")
        length = connection.read_value(StructFormat.USHORT)
        data = connection.read(length * 2)
        answer = LegacyClient.parse_response(data, (perf_counter() - start) * 1000)
    return legacy_answer(answer)


def main(argv):
    action, port = argv[1], int(argv[2])
    try:
        if action == "status":
            result = status(port, argv[3])
        elif action == "legacy":
            result = legacy_answer(LegacyServer(LOOPBACK, port, timeout=10).status(tries=1))
        elif action == "legacy16":
            result = legacy16(port, argv[3])
        else:
            print(f"router_clients.py: unknown action {action!r}", file=sys.stderr)
            sys.exit(2)
    except OSError as error:
        print(json.dumps({"error": str(error)}))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
