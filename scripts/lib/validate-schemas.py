"""What Python's `jsonschema` says of message bodies, as a Python publisher
would check them (tests/tests/contract.rs runs it; scripts/contract installs
jsonschema). Loads docs/schema/*.schema.json (checking each pattern compiles
with Python's `re`), then prints, as a JSON array, whether each case's body
is valid:
    python3 scripts/lib/validate-schemas.py docs/schema cases.json
where cases.json is [{"kind": "customer", "body": "<the body's text>"}, ...].
"""
import json
import pathlib
import sys

from jsonschema import Draft202012Validator

schemas, cases = pathlib.Path(sys.argv[1]), json.loads(pathlib.Path(sys.argv[2]).read_text())
validators = {}
for kind in ("customer", "product", "rental"):
    schema = json.loads((schemas / f"{kind}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)  # a pattern re cannot read fails here
    validators[kind] = Draft202012Validator(schema)


def valid(case):
    try:
        body = json.loads(case["body"])
    except ValueError:
        return False
    return validators[case["kind"]].is_valid(body)


print(json.dumps([valid(case) for case in cases]))
