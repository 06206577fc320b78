"""From a DNS answer to kernel entries: decided by the policy, written by the dataplane,
the answer's TTL capped to the entries' hold (``holds`` is the pure part)."""

from iptserver.learning.holds import HOLD_MARGIN, Routed
from iptserver.learning.learner import Learner, State

__all__ = ["HOLD_MARGIN", "Learner", "Routed", "State"]
