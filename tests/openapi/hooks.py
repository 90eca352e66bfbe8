"""Schemathesis hooks for tests/openapi.rs (loaded via SCHEMATHESIS_HOOKS).

- A followed log (`?follow=true`) is a stream that ends only when the client
  leaves, so generated requests ask without following; the test checks the
  stream's head itself.
- Names are random strings, so nearly every request would meet `404
  not_found`: most of them name one of the functions the test deployed
  instead, so that answers about real functions are checked too; and those
  are never deleted (the stateful phase learns their names from listings),
  which would leave nothing but 404s for the rest of the run.
"""

import os

import schemathesis
from hypothesis import strategies as st

# The functions the test deployed: a handler of its own, and a model-only
# deploy (which the Open Inference Protocol's routes serve).
FUNCTIONS = os.environ.get("NIMBUS_OPENAPI_FUNCTIONS", "digits").split(",")


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and query.get("follow") in (True, "true"):
        query = {**query, "follow": False}
    return query


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    operation = context.operation
    if not isinstance(path_parameters, dict) or "name" not in path_parameters:
        return st.just(path_parameters)
    if operation is None or deletes_function(operation):
        return st.just(path_parameters)
    return st.sampled_from([path_parameters] + [{**path_parameters, "name": name} for name in FUNCTIONS])


@schemathesis.hook
def map_case(context, case):
    # Renamed rather than filtered out: hypothesis gives up on an
    # operation whose generated cases are mostly filtered.
    name = (case.path_parameters or {}).get("name")
    if deletes_function(case.operation) and name in FUNCTIONS:
        case.path_parameters = {**case.path_parameters, "name": name + "-gone"}
    return case


def deletes_function(operation):
    return operation.method.upper() == "DELETE" and operation.path == "/v1/functions/{name}"
