"""The planted one: the baseline's causal attention mask switched off."""
from trainer.baselines import BASELINE
from trainer.result import Status
from tests.adversarial.harness import run


def test_baseline_without_its_causal_mask_is_a_leak(spec):
    source = BASELINE.read_text().replace("is_causal=True", "is_causal=False")
    assert run(source, spec).status is Status.LEAK
