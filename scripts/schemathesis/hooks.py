"""Schemathesis hooks for onceledger's contract run (scripts/schemathesis/run.sh).

Each hook bends generated requests around one rule of the API that JSON Schema cannot state, so the
run tests everything else; docs/CONTRACT-NOTES.md ("The OpenAPI run") lists them. A hook touches a
request only where that rule applies, so a request the schema calls invalid stays invalid.
"""

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

import schemathesis

# The server's rule for an Idempotency-Key (crates/core/src/idempotency/key.rs), the same pattern
# as the document's.
VALID_KEY = re.compile(r'^(?:[!#-~][!-~]{0,254}|"(?:[!#-\[\]-~]|\\["\\]){1,255}")$')
INT64_MAX = 2**63 - 1
# The token the run authenticates with: revoking it would turn the rest of the run into 401s.
OWN_TOKEN_ID = int(os.environ.get("ONCELEDGER_TOKEN_ID", "1"))
# The server under test, for the hooks that ask it which ids exist (run.sh exports both).
BASE_URL = os.environ.get("ONCELEDGER_URL", "")
TOKEN = os.environ.get("ONCELEDGER_TOKEN", "")


@schemathesis.hook
def before_call(context, case, kwargs):
    operation = (case.operation.method.upper(), case.operation.path)
    fresh_idempotency_key(case)
    if isinstance(case.body, (dict, list)):
        case.body = integers_as_integers(case.body)
    if operation == ("POST", "/v1/accounts"):
        unique_name(case.body, "id")
    elif operation == ("POST", "/v1/tenants"):
        unique_name(case.body, "name")
    elif operation == ("POST", "/v1/charges"):
        distinct_accounts(case.body)
        expiry_only_on_authorizations(case.body)
    elif operation == ("POST", "/v1/transfers"):
        if isinstance(case.body, dict) and isinstance(case.body.get("legs"), list):
            for leg in case.body["legs"]:
                distinct_accounts(leg)
    elif operation == ("POST", "/v1/replication/events"):
        consecutive_events(case.body)
        lifecycle_events_as_an_origin_writes_them(case.body)
    elif operation == ("POST", "/v1/tokens/{id}/revoke"):
        spare_own_token(case)
    elif operation[0] == "GET" and operation[1] in LISTS:
        existing_ids_in_list_parameters(case)
    elif operation == ("GET", "/v1/accounts/{id}/balance"):
        exactly_one_moment(case)


# Answers the ledger decides (API.md: "Outcomes decided while executing against the ledger are
# final: they are stored ... and replayed"): a schema-valid request may get them, and they are
# not the parser refusing valid data. Only these, by problem type, are kept out of the
# "schema-valid request rejected" check (ST202).
LEDGER_DECLINES = {
    "/problems/insufficient-funds",
    "/problems/currency-mismatch",
    "/problems/account-exists",
    "/problems/tenant-exists",
    "/problems/redrive-refused",
    "/problems/balance-overflow",
    "/problems/charge-state-invalid",
    "/problems/capture-exceeds-authorization",
    "/problems/refund-exceeds-charge",
}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202":
        return True
    try:
        kind = response.json().get("type")
    except Exception:
        return True
    return kind not in LEDGER_DECLINES


def integers_as_integers(value):
    """JSON Schema counts `1250.0` as an integer; the server reads integers only in integer
    notation (amounts are never floats, API.md), so such a number becomes `1250`. A number with a
    fraction stays, and stays refused."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**64:
        return int(value)
    if isinstance(value, list):
        return [integers_as_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: integers_as_integers(item) for key, item in value.items()}
    return value


def fresh_idempotency_key(case):
    """One key per generated request. The same key with another body is 422 by contract (and the
    generator reuses values); a client makes a key per logical operation. Invalid keys stay."""
    headers = case.headers
    if headers is None:
        return
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        headers["Idempotency-Key"] = f"st-{uuid.uuid4()}"


NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def unique_name(body, field):
    """A new account id or tenant name: taken ones are a stored 400 (account-exists,
    tenant-exists), decided by the ledger, which a generator reusing its examples keeps hitting."""
    if isinstance(body, dict):
        name = body.get(field)
        if isinstance(name, str) and NAME.match(name):
            body[field] = f"{name[:40]}.{uuid.uuid4().hex[:16]}"


def distinct_accounts(body):
    """A charge's source and destination must differ (400 invalid-request otherwise)."""
    if isinstance(body, dict):
        source = body.get("source")
        if isinstance(source, str) and source == body.get("destination"):
            body["destination"] = (source[:63] + "x") if not source.endswith("x") else source[:63] + "y"


def expiry_only_on_authorizations(body):
    """`expires_in` belongs to an authorization (`"capture": false`); with an immediate charge it
    is 400 invalid-request. A body that has it becomes an authorization."""
    if isinstance(body, dict) and "expires_in" in body and body.get("capture") is not False:
        body["capture"] = False


def consecutive_events(body):
    """A batch's events are consecutive, in seq order (400 invalid-request otherwise)."""
    if not isinstance(body, dict):
        return
    events = body.get("events")
    if not isinstance(events, list) or not events:
        return
    if not all(isinstance(e, dict) and type(e.get("seq")) is int for e in events):
        return
    first = events[0]["seq"]
    if first < 1:
        return
    if first + len(events) - 1 > INT64_MAX:
        first = 1
    for offset, event in enumerate(events):
        event["seq"] = first + offset


# The event kinds version 1 of the wire has; the others need a version 2 batch.
WIRE_VERSION_1_KINDS = {"account_created", "charge_succeeded"}


def lifecycle_events_as_an_origin_writes_them(body):
    """What an origin's encoder always does and the decoder checks across fields: a batch with a
    lifecycle event is version 2; a transfer leg goes between two accounts; a settlement captured
    1 to the charge's amount when `succeeded`, nothing otherwise."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        return
    for event in body["events"]:
        kinds = event.get("body") if isinstance(event, dict) else None
        if not isinstance(kinds, dict):
            continue
        if body.get("version") == 1 and any(k not in WIRE_VERSION_1_KINDS for k in kinds):
            body["version"] = 2
        transfer = kinds.get("transfer_succeeded")
        if isinstance(transfer, dict) and isinstance(transfer.get("legs"), list):
            for leg in transfer["legs"]:
                distinct_accounts(leg)
        settled = kinds.get("charge_settled")
        if isinstance(settled, dict) and isinstance(settled.get("charge"), dict):
            amount = settled["charge"].get("amount")
            if settled.get("status") != "succeeded":
                settled["amount_captured"] = 0
            elif type(amount) is int and amount >= 1:
                captured = settled.get("amount_captured")
                if type(captured) is not int or not 1 <= captured <= amount:
                    settled["amount_captured"] = amount


def spare_own_token(case):
    """Never revoke the token the run authenticates with (any spelling of its id)."""
    parameters = case.path_parameters
    if parameters is None or "id" not in parameters:
        return
    try:
        own = int(str(parameters["id"]).strip()) == OWN_TOKEN_ID
    except ValueError:
        own = False
    if own:
        parameters["id"] = OWN_TOKEN_ID + 1_000_000


# The lists (API.md, "Lists"). A cursor must name an item of its list, a filter an item of the
# caller's tenant: any other id is 400 invalid-request, a rule of the server's contents that JSON
# Schema cannot state. Filters by (operation, parameter): the list that holds what they name.
LISTS = {
    "/v1/accounts",
    "/v1/charges",
    "/v1/refunds",
    "/v1/transfers",
    "/v1/accounts/{id}/postings",
    "/v1/replication/origins/{node}/accounts/{id}/postings",
}
FILTERS = {
    ("/v1/charges", "account"): "/v1/accounts",
    ("/v1/transfers", "account"): "/v1/accounts",
    ("/v1/refunds", "charge"): "/v1/charges",
}
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def existing_ids_in_list_parameters(case):
    """A well-formed cursor or filter id becomes one that exists, asked of the server (the first
    item of the list it must name), or is dropped when that list is empty. Both cursors at once
    are 400 too: a request with two well-formed ones keeps `starting_after`. A malformed id stays,
    and so does any id when the account of a statement does not exist (that is a 404 first)."""
    query = case.query
    if not isinstance(query, dict):
        return
    path = case.operation.path
    for name in ("account", "charge"):
        source = FILTERS.get((path, name))
        if source is not None and well_formed_id(query.get(name), name == "account"):
            found = first_id(source)
            if found is not MISSING:
                replace_or_drop(query, name, found)
    cursors = [n for n in ("starting_after", "ending_before") if well_formed_id(query.get(n))]
    if len(cursors) == 2:
        del query["ending_before"]
        cursors.pop()
    for name in cursors:
        found = first_id(list_path(case))
        if found is not MISSING:
            replace_or_drop(query, name, found)


def exactly_one_moment(case):
    """`GET /v1/accounts/{id}/balance` takes exactly one of `as_of` and `as_of_seq`; the schema
    makes each optional. Two well-formed ones keep `as_of`; none gets `as_of_seq=0`."""
    if case.query is None:
        case.query = {}
    query = case.query
    if not isinstance(query, dict):
        return
    has_time, has_seq = "as_of" in query, "as_of_seq" in query
    if has_time and has_seq:
        seq, time = query["as_of_seq"], query["as_of"]
        # The coverage phase may give a query value as the text it sends.
        if isinstance(seq, str) and re.fullmatch(r"[0-9]{1,19}", seq):
            seq = int(seq)
        if type(seq) is int and 0 <= seq <= INT64_MAX and isinstance(time, str) and RFC3339.match(time):
            del query["as_of_seq"]
    elif not has_time and not has_seq:
        query["as_of_seq"] = 0


def well_formed_id(value, account=False):
    if not isinstance(value, str):
        return False
    if account:
        return ACCOUNT_ID.match(value) is not None
    return 1 <= len(value) <= 64


def replace_or_drop(query, name, found):
    if found is None:
        del query[name]
    else:
        query[name] = found


def list_path(case):
    """The case's own path with its parameters filled in (percent-encoded)."""
    path = case.operation.path
    for name, value in (case.path_parameters or {}).items():
        path = path.replace("{" + name + "}", urllib.parse.quote(str(value), safe=""))
    return path


# `first_id`'s answer when the list itself is not there (its account does not exist).
MISSING = object()


def first_id(path):
    """The id of the first item of the list at `path`, None when it is empty, MISSING when the
    list cannot be read (a 404 or a malformed path: the case's answer does not hinge on its ids)."""
    request = urllib.request.Request(
        f"{BASE_URL}{path}?limit=1", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            page = json.load(response)
    except (urllib.error.URLError, ValueError, OSError):
        return MISSING
    data = page.get("data") if isinstance(page, dict) else None
    if not isinstance(data, list):
        return MISSING
    return data[0].get("id") if data else None
