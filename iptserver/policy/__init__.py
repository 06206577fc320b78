"""The policy core: which exit each destination takes. Pure: no I/O, no kernel."""

from iptserver.policy.core import Candidate, Decision, GeoLookup, MatchKind, Policy, Reason

__all__ = ["Candidate", "Decision", "GeoLookup", "MatchKind", "Policy", "Reason"]
