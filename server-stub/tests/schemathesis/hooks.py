"""A check for the schemathesis run of server-stub/tests/stub/schemathesis.rs.

The OpenAPI document states every length, pattern and range the server checks, so a schema-valid
request is never refused as invalid (422), with three exceptions no JSON Schema can state:

- POST /api/v1/keys: a typed mass-deployment key that meets the schema's pattern (16 to 128
  characters) but that the server's strength estimate (zxcvbn) rates too guessable.
- POST /api/v1/keys/import: the rows of a CSV body (unit IDs, no repeats) in a `text/csv` string.
- PATCH /api/v1/keys/{id}: a usage limit for a stored key that is not a mass-deployment key (the
  kind is the stored key's, not the request's).

The run on the test-rig control listener (served there only, from its own document) has one more:

- PUT /rig/v1/faults: a route class's probabilities, each between 0 and 1, that add up to more
  than 1.

The runs' configurations let positive_data_acceptance take a 422 for those operations only,
and this check then fails every such 422 that is not the one refusal named above. Nothing here
changes a request.
"""

import json
import re

import schemathesis

# For each excepted operation, the `detail` of its one allowed refusal.
ALLOWED_REFUSALS = {
    "POST /api/v1/keys": re.compile(r"password: too guessable"),
    "POST /api/v1/keys/import": re.compile(r"body: \d+ rows? refused, nothing was created"),
    "PATCH /api/v1/keys/{id}": re.compile(r"usage_limit: only mass-deployment keys have a usage limit"),
    "PUT /rig/v1/faults": re.compile(r"body: routes\.[a-z]+: the probabilities add up to more than 1"),
}


@schemathesis.check
def only_the_unstatable_refusals_of_valid_data(ctx, response, case):
    """A 422 for schema-valid data is one of the three refusals the schema cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    allowed = ALLOWED_REFUSALS.get(f"{case.method.upper()} {case.path}")
    if allowed is None:
        # Any other operation: positive_data_acceptance itself fails the 422.
        return None
    try:
        detail = str(json.loads(response.content).get("detail", ""))
    except (ValueError, AttributeError):
        detail = ""
    if allowed.match(detail) is None:
        raise AssertionError(
            f"Valid data refused with 422 for a reason the schema should state: {detail!r}"
        )
    return None
