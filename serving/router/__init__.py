"""The data plane: a KServe v2 router in front of Triton instances and serverless functions.

Router (app.py) is the server; rule.py the routing rule it shares with the simulator;
fleet.py its state; metrics.py its Prometheus metrics. Run it alone with
`python -m serving.router --profile PATH --instance URL ... [--function-url URL]`.
"""
from serving.router.app import Router
from serving.router.fleet import InstanceSpec
from serving.router.settings import RouterError, RouterSettings

__all__ = ["Router", "RouterSettings", "RouterError", "InstanceSpec"]
