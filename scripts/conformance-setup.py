"""Prepares a schemathesis run against a running huikan server loaded with `--demo`.

    conformance-setup.py BASE OUT_DIR SPEC

Logs in as the demo's users, reads ids of real objects (campaigns, households, submissions,
photos) so that generated requests reach stored content as well as absent ids, and writes
OUT_DIR/schemathesis.toml: each operation is sent with the token of a role that may use it
(field staff for the phone's operations, a reviewer for review and the console, an auditor for
the audit log, an admin for the rest), the revoke operation with a token of its own.
It runs on the venv's Python (PyYAML comes with schemathesis).
"""

import base64
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request

import yaml  # PyYAML, which schemathesis depends on

BASE, OUT, SPEC = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance-hooks.py")
DEMO_PASSWORD = "demo-password"


def call(method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path}: {e.code} {e.read()[:500]!r}")


def login(username, password=DEMO_PASSWORD):
    body = {"username": username, "password": password}
    return call("POST", "/v1/auth/token", body=body)["token"]


admin = login("demo-admin")
reviewer = login("demo-reviewer")
auditor = login("demo-auditor")
field = login("demo-field-a")
# A user of its own for POST /v1/auth/revoke, whose calls revoke its token and nobody else's.
call(
    "POST",
    "/v1/users",
    admin,
    {"username": "conformance-revoker", "password": "conformance-pw-1", "role": "field_staff", "scope": ["410327101"]},
)
revoker = login("conformance-revoker", "conformance-pw-1")

campaigns = [c["campaign_id"] for c in call("GET", "/v1/campaigns", admin)["items"]]
households = [h["household_id"] for h in call("GET", "/v1/households?limit=1000", reviewer)["items"]]
submissions = [s["submission_id"] for s in call("GET", "/v1/sync/submissions?limit=1000", field)["items"]]
photos = []
for submission in submissions:
    for photo in call("GET", f"/v1/submissions/{submission}", reviewer).get("photos", []):
        if photo["sha256"] not in photos:
            photos.append(photo["sha256"])
for name, ids in [("campaigns", campaigns), ("households", households), ("submissions", submissions), ("photos", photos)]:
    if not ids:
        sys.exit(f"the demo has no {name}")
print(
    f"demo data: {len(campaigns)} campaigns, {len(households)} households, "
    f"{len(submissions)} submissions of demo-field-a, {len(photos)} photos",
    file=sys.stderr,
)


def toml_list(values):
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


basic = base64.b64encode(f"demo-field-a:{DEMO_PASSWORD}".encode()).decode()
# The console's session: a token of its own (POST /console/logout may revoke it), and the CSRF
# token its forms carry, derived from it as the server does.
console = login("demo-reviewer")
csrf = hashlib.sha256(f"huikan console csrf {console}".encode()).hexdigest()[:32]


def authorization(method, path):
    """The Authorization header for an operation: the token of a role that may use it."""
    if path.startswith("/console"):
        return None  # the session cookie, below
    if path == "/v1/auth/revoke":
        return f"Bearer {revoker}"
    if path.startswith("/v1/openrosa/") and "/key/" not in path:
        return f"Basic {basic}"
    if re.match(r"^/v1/(sync/|submissions$|uploads/|openrosa/)", path):
        return f"Bearer {field}"
    if path.startswith("/v1/blobs/"):
        return f"Bearer {reviewer}" if method == "GET" else f"Bearer {field}"
    if re.match(r"^/v1/(review/|households|reports/|submissions/)", path):
        return f"Bearer {reviewer}"
    if path.startswith("/v1/audit/"):
        return f"Bearer {auditor}"
    return f"Bearer {admin}"


# Schema-valid requests the protocol still refuses for what no schema can say, by operation:
# the statuses positive_data_acceptance accepts besides its defaults.
SEMANTIC_REFUSALS = {
    # A cursor the server did not issue (400 invalid_query).
    **{(m, p): [400] for m, p in [
        ("GET", "/v1/sync/registry"), ("GET", "/v1/sync/submissions"), ("GET", "/v1/households"),
        ("GET", "/v1/review/queue"), ("GET", "/v1/audit/log"), ("GET", "/v1/audit/checkpoints"),
    ]},
    # Bytes that do not hash to their name (400), over the configured size (413), not an image (415).
    ("PUT", "/v1/blobs/{sha256}"): [400, 413, 415],
    # Upload-Metadata without a base64 sha256 (400), Upload-Length over Tus-Max-Size (413).
    ("POST", "/v1/uploads/"): [400, 413],
    # ends_at not after starts_at, or a time zone the tz database does not know.
    ("PUT", "/v1/campaigns/{campaign_id}"): [400],
    # Photos not uploaded yet (422 missing_blobs); a blank form_version or household_id (400:
    # their length and character limits are not in openapi.yaml yet).
    ("POST", "/v1/submissions"): [400, 422],
    # A registry file whose content is not a registry.
    ("POST", "/v1/registry/imports"): [400, 413, 415],
    # An instance whose XML is not one of this server's forms.
    ("POST", "/v1/openrosa/submission"): [400, 413, 415],
    ("POST", "/v1/openrosa/key/{token}/submission"): [400, 413, 415],
}
# tus answers a missing or unsupported Tus-Resumable with 412 (tus 1.0.0), not a 400.
TUS_OPERATIONS = {("POST", "/v1/uploads/"), ("HEAD", "/v1/uploads/{upload_id}"),
                  ("PATCH", "/v1/uploads/{upload_id}"), ("DELETE", "/v1/uploads/{upload_id}")}
# schemathesis's defaults, which these extend (a 5xx is not_a_server_error's to report).
POSITIVE = ["2xx", "3xx", 401, 403, 404, 409, 429, "5xx"]
NEGATIVE = [400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429, "5xx"]
MISSING_HEADER = [400, 401, 403, 406, 415, 422]

lines = [
    "# Written by scripts/conformance-setup.py for one run; not kept.",
    f"hooks = {json.dumps(HOOKS)}",
    # Sequences of calls (the stateful phase) with valid data only: negative data is the coverage
    # and fuzzing phases' part, and there a removed Authorization header would come back from the
    # headers set below, making the mutation moot.
    "[phases.stateful]",
    'generation.mode = "positive"',
    "",
    "[auth.openapi.consoleSession]",
    f'api_key = "{console}"',
    "",
    "[parameters]",
    # Real ids half the time, generated ones (mostly absent, often invalid) the rest.
    '"path.campaign_id" = { dictionary = "campaigns", probability = 0.5 }',
    '"query.campaign" = { dictionary = "campaigns", probability = 0.5 }',
    '"path.household_id" = { dictionary = "households", probability = 0.5 }',
    '"path.submission_id" = { dictionary = "submissions", probability = 0.5 }',
    '"path.sha256" = { dictionary = "photos", probability = 0.5 }',
    '"path.form_id" = { dictionary = "forms", probability = 0.5 }',
    '"path.filename" = { dictionary = "media", probability = 0.5 }',
    '"path.token" = { dictionary = "tokens", probability = 0.5 }',
    '"body.csrf" = { dictionary = "csrf", probability = 0.7 }',
    "",
    "[dictionaries]",
    f"campaigns = {{ values = {toml_list(campaigns)} }}",
    f"households = {{ values = {toml_list(households)} }}",
    f"submissions = {{ values = {toml_list(submissions)} }}",
    f"photos = {{ values = {toml_list(photos)} }}",
    f"forms = {{ values = {toml_list(['huikan-' + c for c in campaigns])} }}",
    f"media = {{ values = {toml_list(['households.csv', 'villages.csv'])} }}",
    f"tokens = {{ values = {toml_list([field])} }}",
    f"csrf = {{ values = {toml_list([csrf])} }}",
]
with open(SPEC) as f:
    spec = yaml.safe_load(f)
for path, item in spec["paths"].items():
    for method in ["get", "put", "post", "delete", "options", "head", "patch"]:
        if method not in item:
            continue
        key = (method.upper(), path)
        settings = []
        auth = authorization(*key)
        if auth:
            settings.append(f"headers = {{ Authorization = {json.dumps(auth)} }}")
        # Every operation names its expected statuses, defaults or not: schemathesis 4.32.5 lets
        # one operation's check settings reach operations that have none of their own.
        positive, negative, missing = POSITIVE + SEMANTIC_REFUSALS.get(key, []), NEGATIVE, MISSING_HEADER
        if key in TUS_OPERATIONS:
            negative, missing = negative + [412], missing + [412]
        if path.startswith("/console") and item[method].get("security") != []:
            # Without a session (or with another's form), a browser is sent to the login.
            negative = negative + [303]
        settings.append(f"checks.positive_data_acceptance.expected-statuses = {toml_list(positive)}")
        settings.append(f"checks.negative_data_rejection.expected-statuses = {toml_list(negative)}")
        settings.append(f"checks.missing_required_header.expected-statuses = {toml_list(missing)}")
        # The operation's name, "METHOD /path", selects exactly that one (include-path and
        # include-method would each select on their own).
        lines += ["", "[[operations]]", f"include-name = {json.dumps(f'{key[0]} {path}')}"]
        lines += settings
with open(f"{OUT}/schemathesis.toml", "w") as f:
    f.write("\n".join(lines) + "\n")
