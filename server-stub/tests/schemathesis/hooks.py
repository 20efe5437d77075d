"""Hooks for the schemathesis run of server-stub/tests/stub/schemathesis.rs.

OpenAPI 3.1 (JSON Schema 2020-12) counts 3.0 as an integer, so schemathesis sends whole-number
floats where the document says integer. The server reads JSON with serde, which takes only integer
literals there; this hook writes such floats as integers, as every real client does.
"""

import schemathesis


def _integers(value):
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers(item) for item in value]
    return value


@schemathesis.hook
def map_body(context, body):
    return _integers(body)
