"""Validates the fake Hetzner API's answers against the official API description.

    python validate_fake_against_spec.py BASE_URL TOKEN SPEC_JSON

Sends requests to every endpoint the fake serves, successes and errors alike, records
each request/response pair, and validates every request body against the operation's
`requestBody` schema and every response body against the schema the description gives
for its status (`200`, `201`, or the `4xx` / `5xx` error schema), with a JSON Schema
2020-12 validator (OpenAPI 3.1 schemas are JSON Schema). Also checks that every answer
carries the `RateLimit-*` headers. Exits non-zero listing each mismatch.
"""

import json
import sys

import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:hetzner-cloud-spec"


def pointer(*parts):
    return "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in parts)


class Recorder:
    def __init__(self, base, token, spec):
        self.base = base
        self.spec = spec
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
        self.pairs = 0
        self.operations = set()
        self.statuses = set()
        self.failures = []

    def validator(self, path_in_spec):
        return Draft202012Validator({"$ref": f"{SPEC_URI}#/{path_in_spec}"}, registry=self.registry)

    def call(self, method, template, path, expect_status, body=None, params=None, raw_body=None, session=None):
        session = session or self.session
        url = f"{self.base}/v1{path}"
        if raw_body is not None:
            response = session.request(method, url, data=raw_body, headers={"Content-Type": "application/json"}, timeout=10)
        else:
            response = session.request(method, url, json=body, params=params, timeout=10)
        label = f"{method} {path} -> {response.status_code}"
        operation = self.spec["paths"][template][method.lower()]
        self.pairs += 1
        self.operations.add(f"{method} {template}")
        self.statuses.add(f"{method} {template} {response.status_code}")
        if response.status_code != expect_status:
            self.failures.append(f"{label}: expected {expect_status}; body {response.text[:300]}")
        for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
            if header not in response.headers:
                self.failures.append(f"{label}: no {header} header")
        if body is not None and "requestBody" in operation:
            schema_path = pointer("paths", template, method.lower(), "requestBody", "content", "application/json", "schema")
            for error in self.validator(schema_path).iter_errors(body):
                self.failures.append(f"{label}: our request body breaks the description at {list(error.path)}: {error.message}")
        status = str(response.status_code)
        responses = operation["responses"]
        key = status if status in responses else f"{status[0]}xx"
        if key not in responses:
            self.failures.append(f"{label}: the description has no response {status} or {key}")
            return response
        content = responses[key].get("content")
        if content is None:
            if response.content:
                self.failures.append(f"{label}: the description promises no body, got {response.text[:100]}")
            return response
        try:
            document = response.json()
        except ValueError:
            self.failures.append(f"{label}: body is not JSON: {response.text[:200]}")
            return response
        schema_path = pointer("paths", template, method.lower(), "responses", key, "content", "application/json", "schema")
        for error in self.validator(schema_path).iter_errors(document):
            self.failures.append(f"{label}: breaks the description at {list(error.absolute_path)}: {error.message[:300]}")
        return response


def control(base, path, payload):
    response = requests.post(f"{base}/__fake/{path}", json=payload, timeout=5)
    if response.status_code != 204:
        raise SystemExit(f"control {path}: {response.status_code} {response.text}")


def main():
    base, token, spec_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    r = Recorder(base, token, spec)

    # Catalog.
    r.call("GET", "/locations", "/locations", 200)
    r.call("GET", "/locations", "/locations", 200, params={"name": "fsn1", "page": 1, "per_page": 1})
    r.call("GET", "/locations/{id}", "/locations/1", 200)
    r.call("GET", "/locations/{id}", "/locations/999", 404)
    r.call("GET", "/server_types", "/server_types", 200)
    r.call("GET", "/server_types", "/server_types", 200, params={"page": 2, "per_page": 2})
    r.call("GET", "/server_types/{id}", "/server_types/1", 200)
    r.call("GET", "/server_types/{id}", "/server_types/999", 404)

    # SSH keys.
    key_body = {"name": "payperplay", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIspec payperplay", "labels": {"payperplay/platform": "spec"}}
    r.call("POST", "/ssh_keys", "/ssh_keys", 201, body=key_body)
    r.call("POST", "/ssh_keys", "/ssh_keys", 409, body=key_body)
    r.call("POST", "/ssh_keys", "/ssh_keys", 422, body={"name": "broken", "public_key": "not a key"})
    r.call("GET", "/ssh_keys", "/ssh_keys", 200)
    r.call("GET", "/ssh_keys", "/ssh_keys", 200, params={"name": "payperplay", "label_selector": "payperplay/platform=spec"})

    # Servers: create (with and without SSH keys), get, list with filters and pages.
    server_ids = []
    for index in range(3):
        body = {
            "name": f"spec-cmd-{index}",
            "server_type": "cpx22",
            "location": "fsn1",
            "image": "ubuntu-24.04",
            "ssh_keys": ["payperplay"],
            "user_data": "#cloud-config\n",
            "labels": {"payperplay/platform": "spec", "payperplay/node": str(index)},
            "start_after_create": True,
        }
        response = r.call("POST", "/servers", "/servers", 201, body=body)
        server_ids.append(response.json()["server"]["id"])
    created = r.call("POST", "/servers", "/servers", 201, body={"name": "no-keys", "server_type": "cpx32", "image": "ubuntu-24.04"})
    server_ids.append(created.json()["server"]["id"])
    action_id = created.json()["action"]["id"]
    r.call("GET", "/actions/{id}", f"/actions/{action_id}", 200)
    r.call("GET", "/actions/{id}", "/actions/999999", 404)
    r.call("GET", "/actions", "/actions", 200, params={"id": [action_id, created.json()["next_actions"][0]["id"]]})
    r.call("GET", "/actions", "/actions", 422)
    r.call("GET", "/servers/{id}", f"/servers/{server_ids[0]}", 200)
    r.call("GET", "/servers/{id}", "/servers/999999", 404)
    r.call("GET", "/servers", "/servers", 200)
    r.call("GET", "/servers", "/servers", 200, params={"label_selector": "payperplay/platform=spec", "page": 1, "per_page": 2})
    r.call("GET", "/servers", "/servers", 200, params={"label_selector": "payperplay/node in (0,1),!absent", "page": 2, "per_page": 1})
    r.call("GET", "/servers", "/servers", 200, params={"name": "spec-cmd-1", "status": ["running", "initializing"]})
    r.call("GET", "/servers", "/servers", 422, params={"label_selector": "k in (a"})

    # Error answers the platform must understand.
    r.call("POST", "/servers", "/servers", 409, body={"name": "spec-cmd-0", "server_type": "cpx22", "image": "ubuntu-24.04"})
    r.call("POST", "/servers", "/servers", 422, body={"name": "x", "server_type": "cpx999", "image": "ubuntu-24.04"})
    r.call("POST", "/servers", "/servers", 422, body={"name": "x", "server_type": "cpx22", "image": "ubuntu-24.04", "location": "mars1"})
    r.call("POST", "/servers", "/servers", 400, raw_body=b"{not json")
    control(base, "sold_out", {"windows": [{"server_type": "cpx42", "location": "hel1"}]})
    r.call("POST", "/servers", "/servers", 412, body={"name": "sold", "server_type": "cpx42", "location": "hel1", "image": "ubuntu-24.04"})
    control(base, "sold_out", {"windows": []})
    control(base, "failures", {"operation": "create_server", "status": 503, "code": "unavailable", "message": "try later"})
    r.call("POST", "/servers", "/servers", 503, body={"name": "later", "server_type": "cpx22", "image": "ubuntu-24.04"})
    control(base, "failures", {"operation": "get_server", "status": 423, "code": "locked", "message": "an action is running"})
    r.call("GET", "/servers/{id}", f"/servers/{server_ids[0]}", 423)
    wrong = requests.Session()
    wrong.headers["Authorization"] = "Bearer wrong"
    r.call("GET", "/servers", "/servers", 401, session=wrong)
    control(base, "rate_limit", {"remaining": 0, "refill_per_s": 0})
    r.call("GET", "/servers", "/servers", 429)
    control(base, "rate_limit", {"remaining": 3600, "refill_per_s": 1})

    # Delete, and delete again (404).
    for server_id in server_ids:
        response = r.call("DELETE", "/servers/{id}", f"/servers/{server_id}", 200)
        r.call("GET", "/actions/{id}", f"/actions/{response.json()['action']['id']}", 200)
    r.call("DELETE", "/servers/{id}", f"/servers/{server_ids[0]}", 404)

    print(f"validated {r.pairs} request/response pairs over {len(r.operations)} operations "
          f"({len(r.statuses)} operation/status combinations) against the official API description")
    for entry in sorted(r.statuses):
        print(f"  {entry}")
    if r.failures:
        print(f"{len(r.failures)} mismatches:", file=sys.stderr)
        for failure in r.failures:
            print(f"  {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
