"""What the search keeps of a result: the one place it checks trust and isolation.

The runner records on every result whether the script measured itself (`trusted=False`:
compatibility mode, where a script prints its own score) and how it was isolated (`isolation`:
"namespaces", or "process" where the machine has none). `admit` turns a result the search may
not use into an `invalid` one that says why and what to pass instead, so an autoresearch-style
script can never print its way into a search that did not ask for compatibility mode.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from trainer.errors import UserError
from trainer import isolation
from trainer.result import EvalResult, Status


@dataclass(frozen=True)
class TrustPolicy:
    allow_untrusted: bool = False    # accept scores printed by the scripts themselves (--compat)
    require_isolation: bool = False  # refuse results not isolated in namespaces (--require-isolation)


def check_machine(policy: TrustPolicy) -> None:
    """Refuse at once, before anything runs, a policy this machine cannot meet."""
    if policy.require_isolation and not isolation.namespaces_available():
        raise UserError("--require-isolation: this machine cannot isolate variants (user, PID, mount and network "
                        "namespaces through util-linux unshare failed); run on Linux with user namespaces enabled, "
                        "or drop --require-isolation to accept the process sandbox")


def admit(result: EvalResult, policy: TrustPolicy) -> EvalResult:
    """`result` as it is when the policy accepts it, else the same result as invalid, score removed."""
    if not result.trusted and not policy.allow_untrusted:
        return _refused(result, "untrusted result refused: the script printed its own score (compatibility mode); "
                                "use the runtime (from trainer import runtime), or pass --compat to accept such scores")
    if policy.require_isolation and result.isolation != isolation.NAMESPACES:
        return _refused(result, f"result refused: it ran with isolation={result.isolation or 'unknown'}, and "
                                "--require-isolation asks for namespaces")
    return result


def _refused(result: EvalResult, message: str) -> EvalResult:
    return replace(result, status=Status.INVALID, message=message, val_bpb=None)
