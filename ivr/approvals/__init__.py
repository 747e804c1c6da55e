"""The human approval gate: a tool call whose policy requires it waits for an operator's decision.

``policy`` (sans-I/O) says when approval is needed; ``store`` keeps requests and decisions in Redis;
``listener`` brings decisions to the waiting call over pub/sub; ``gate`` is what the call runtime uses;
``api`` and ``cli`` are the operator's surfaces. Only the policy is imported here, so flow models can use it
without pulling in Redis.
"""

from ivr.approvals.policy import ApprovalPolicy, ConditionError

__all__ = ["ApprovalPolicy", "ConditionError"]
