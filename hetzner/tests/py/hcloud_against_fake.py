"""Hetzner's official Python client (`hcloud`) against the fake Hetzner API.

    python hcloud_against_fake.py BASE_URL TOKEN

BASE_URL is the fake's root (http://127.0.0.1:PORT); the client gets BASE_URL/v1 as
its `api_endpoint`. Exits non-zero with the failed check on stderr. Run by
hetzner/tests/python_clients.rs against a freshly started fake.
"""

import sys
import time

import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

PLATFORM = "payperplay/platform"
NODE = "payperplay/node"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def control(base, path, payload):
    response = requests.post(f"{base}/__fake/{path}", json=payload, timeout=5)
    check(response.status_code == 204, f"control {path}: {response.status_code} {response.text}")


def expect_api_error(code, call):
    try:
        call()
    except APIException as error:
        check(error.code == code, f"expected APIException {code}, got {error.code}: {error.message}")
        return error
    raise AssertionError(f"expected APIException {code}, got success")


def main():
    base, token = sys.argv[1], sys.argv[2]
    client = Client(token=token, api_endpoint=f"{base}/v1", poll_interval=0.1, poll_max_retries=100)

    # Catalog: types with per-location prices and availability, locations.
    locations = client.locations.get_all()
    names = sorted(location.name for location in locations)
    check(names == ["fsn1", "hel1", "nbg1"], f"locations: {names}")
    server_types = client.server_types.get_all()
    cpx42 = next(t for t in server_types if t.name == "cpx42")
    check(cpx42.memory == 16, f"cpx42 memory {cpx42.memory}")
    fsn1_price = next(p for p in cpx42.prices if p["location"] == "fsn1")
    check(fsn1_price["price_hourly"]["net"] == "0.0400", f"cpx42 price {fsn1_price}")
    check(client.server_types.get_by_name("cpx22").cores == 2, "cpx22 by name")

    # The platform's SSH key.
    key = client.ssh_keys.create(name="payperplay", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcloudtest payperplay")
    check(client.ssh_keys.get_by_name("payperplay").id == key.id, "ssh key by name")
    expect_api_error(
        "uniqueness_error",
        lambda: client.ssh_keys.create(name="payperplay", public_key="ssh-ed25519 AAAAother x"),
    )

    # Create three platform VMs and one foreign VM; wait for every action.
    created = []
    for index in range(3):
        response = client.servers.create(
            name=f"hc-cmd-{index}",
            server_type=ServerType(name="cpx42"),
            image=Image(name="ubuntu-24.04"),
            location=Location(name="fsn1"),
            ssh_keys=[key],
            user_data="#cloud-config\nruncmd:\n- [touch, /root/ok]\n",
            labels={PLATFORM: "hc", NODE: str(index)},
        )
        check(response.action.command == "create_server", f"action {response.action.command}")
        check(response.root_password is None, "a root password despite an SSH key")
        response.action.wait_until_finished()
        check(response.action.status == "success", f"create action {response.action.status}")
        for action in response.next_actions:
            action.wait_until_finished()
        created.append(response.server)
    foreign = client.servers.create(
        name="someone-else",
        server_type=ServerType(name="cpx22"),
        image=Image(name="ubuntu-24.04"),
        labels={"team": "other"},
    )
    foreign.action.wait_until_finished()
    check(foreign.root_password is not None, "no root password without SSH keys")

    server = client.servers.get_by_id(created[0].id)
    check(server.status == "running", f"status after the actions: {server.status}")
    check(server.public_net.ipv4.ip, "no IPv4")
    check(server.server_type.name == "cpx42", f"server type {server.server_type.name}")
    check(server.location.name == "fsn1", f"location {server.location.name}")
    check(server.labels[PLATFORM] == "hc", f"labels {server.labels}")

    # Label selectors and pages.
    ours = client.servers.get_all(label_selector=f"{PLATFORM}=hc")
    check(sorted(s.name for s in ours) == ["hc-cmd-0", "hc-cmd-1", "hc-cmd-2"], f"selector: {[s.name for s in ours]}")
    check(len(client.servers.get_all(label_selector=f"{NODE} in (0,2)")) == 2, "in (...)")
    check([s.name for s in client.servers.get_all(label_selector=f"!{PLATFORM}")] == ["someone-else"], "!key")
    check(len(client.servers.get_all(label_selector=f"{PLATFORM}!=hc")) == 1, "!=")
    first = client.servers.get_list(label_selector=PLATFORM, page=1, per_page=2)
    check(len(first.servers) == 2, f"page 1 holds {len(first.servers)}")
    pagination = first.meta.pagination
    check(pagination.next_page == 2 and pagination.last_page == 2 and pagination.total_entries == 3, f"meta {pagination}")
    second = client.servers.get_list(label_selector=PLATFORM, page=2, per_page=2)
    check(len(second.servers) == 1 and second.meta.pagination.next_page is None, "page 2")
    check(client.servers.get_by_name("hc-cmd-1").id == created[1].id, "by name")

    # Errors: an existing name, sold out, a wrong token, the rate limit.
    expect_api_error(
        "uniqueness_error",
        lambda: client.servers.create(name="hc-cmd-0", server_type=ServerType(name="cpx42"), image=Image(name="ubuntu-24.04")),
    )
    control(base, "sold_out", {"windows": [{"server_type": "cpx42", "location": "nbg1"}]})
    expect_api_error(
        "resource_unavailable",
        lambda: client.servers.create(
            name="hc-sold-out", server_type=ServerType(name="cpx42"), image=Image(name="ubuntu-24.04"), location=Location(name="nbg1")
        ),
    )
    availability = {
        entry.location.name: entry.available for entry in client.server_types.get_by_name("cpx42").locations
    }
    check(availability == {"fsn1": True, "nbg1": False, "hel1": True}, f"availability {availability}")
    control(base, "sold_out", {"windows": []})
    expect_api_error(
        "invalid_input",
        lambda: client.servers.create(name="hc-bad", server_type=ServerType(name="cpx999"), image=Image(name="ubuntu-24.04")),
    )
    wrong = Client(token="wrong-token", api_endpoint=f"{base}/v1")
    expect_api_error("unauthorized", wrong.servers.get_all)
    # One 429: the official client backs off and retries by itself.
    control(base, "failures", {"operation": "list_servers", "status": 429, "code": "rate_limit_exceeded", "message": "limit reached"})
    started = time.monotonic()
    check(len(client.servers.get_all(label_selector=f"{PLATFORM}=hc")) == 3, "list after a 429")
    check(time.monotonic() - started >= 0.5, "the client did not back off after the 429")
    # A spent budget with no retries left: the error reaches the caller.
    control(base, "rate_limit", {"remaining": 0, "refill_per_s": 0})
    impatient = Client(token=token, api_endpoint=f"{base}/v1")
    impatient._client._retry_max_retries = 0
    expect_api_error("rate_limit_exceeded", impatient.locations.get_all)
    control(base, "rate_limit", {"remaining": 3600, "refill_per_s": 1})

    # Delete everything; deleted VMs are gone.
    for server in created + [foreign.server]:
        action = client.servers.delete(server)
        action.wait_until_finished()
        check(action.status == "success", f"delete action {action.status}")
    check(client.servers.get_all() == [], "VMs left after deleting")
    expect_api_error("not_found", lambda: client.servers.get_by_id(created[0].id))
    print("hcloud against the fake: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
