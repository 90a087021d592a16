"""Several optimizer steps per counted batch: four times the compute at the same tokens."""
from tests.adversarial.harness import assert_refused_or_no_gain, attack_spec, run
from trainer.baselines import BASELINE

FOUR_STEPS = """    optimizer.step()
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss_fn(x, y).backward()
        optimizer.step()
"""


def test_more_compute_per_batch_pays_or_is_flagged(spec):
    spec = attack_spec(spec, "20k")  # 10 steps of the baseline: compute, not start-up, dominates
    honest = BASELINE.read_text()
    assert honest.count("    optimizer.step()\n") == 1
    attack = honest.replace("    optimizer.step()\n", FOUR_STEPS)
    assert_refused_or_no_gain(run(attack, spec), run(honest, spec))
