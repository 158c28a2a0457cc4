"""Serverless spill path: the Lambda handler, a local Lambda-like runtime, and the invoke client.

Importing this package is cheap on purpose (no torch): the router imports `client` and the
local provisioner imports `runtime`; only worker processes import `handler`, which loads the model.
"""
