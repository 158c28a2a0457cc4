"""Policies register by name; importing this package registers the built-in ones."""
from controller.policies.base import Policy, PolicyContext, make_policy, policy_names, register
from controller.policies import (faas_only, fixed, hybrid, mark, oracle, reactive, reactive_faas,  # noqa: F401
                                 static_peak)  # (registration)

__all__ = ["Policy", "PolicyContext", "make_policy", "policy_names", "register"]
