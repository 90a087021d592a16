"""Under a FLOP budget, a model that declares fewer FLOPs per token than it costs, to be metered
cheaply (and get more tokens than its compute buys)."""
from tests.adversarial.harness import attack_source, attack_spec, run
from trainer.result import Status

UNDERSTATE = """
import trainer.session as session_module
session_module.TrainingSession._forward_flops_per_token = lambda self, model: 1638.4  # a tenth of the truth
"""


def test_understating_the_models_flops_is_over_budget(spec):
    flop_budget = attack_spec(spec, "100Mflop")  # the tiny model: 3 x 16384 FLOPs per token, ~2k tokens
    honest = run(attack_source(), flop_budget)
    assert honest.status is Status.OK and honest.tokens <= 3072, honest.message + honest.log_tail
    attack = run(attack_source(prelude=UNDERSTATE), flop_budget)
    assert attack.tokens >= 10 * 2048  # the understatement bought it ten times the data ...
    assert attack.status is Status.OVER_BUDGET and "declared" in attack.message  # ... and it does not count
