"""Real Python clients against the test game server, driven by the Rust tests.

Usage (prints one JSON object on stdout):
    clients.py status HOST PORT           mcstatus JavaServer.status()
    clients.py ping HOST PORT             mcstatus JavaServer.ping()
    clients.py legacy HOST PORT           mcstatus LegacyServer.status() (the 1.6 ping)
    clients.py rcon HOST PORT PASSWORD COMMAND...   rcon.source.Client: login, then each command
A wrong RCON password prints {"error": "WrongPassword"} and exits 3.
"""

import json
import sys

try:
    from mcstatus import JavaServer, LegacyServer
    from rcon.source import Client
    from rcon.exceptions import WrongPassword
except ImportError as error:  # the venv of scripts/start-services.sh has them
    print(f"clients.py: {error}: install prod/tests/py/requirements.txt (scripts/start-services.sh does)", file=sys.stderr)
    sys.exit(2)


def main(argv):
    action, host, port = argv[1], argv[2], int(argv[3])
    if action == "status":
        status = JavaServer(host, port, timeout=5).status(tries=1)
        print(json.dumps({
            "online": status.players.online,
            "max": status.players.max,
            "sample": [player.name for player in (status.players.sample or [])],
            "version_name": status.version.name,
            "protocol": status.version.protocol,
            "motd": status.motd.to_plain(),
            "latency_ms": status.latency,
        }))
    elif action == "ping":
        print(json.dumps({"latency_ms": JavaServer(host, port, timeout=5).ping(tries=1)}))
    elif action == "legacy":
        status = LegacyServer(host, port, timeout=5).status(tries=1)
        print(json.dumps({
            "online": status.players.online,
            "max": status.players.max,
            "version_name": status.version.name,
            "protocol": status.version.protocol,
            "motd": status.motd.to_plain(),
        }))
    elif action == "rcon":
        password, commands = argv[4], argv[5:]
        try:
            with Client(host, port, passwd=password, timeout=5) as client:
                print(json.dumps({"answers": [client.run(command) for command in commands]}))
        except WrongPassword:
            print(json.dumps({"error": "WrongPassword"}))
            sys.exit(3)
    else:
        print(f"clients.py: unknown action {action!r}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
