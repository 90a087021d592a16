"""More data than the budget: batches taken past the end of the budget (the runtime's error
swallowed) or straight from its batch source, then trained on."""
from tests.adversarial.harness import assert_refused_or_no_gain, attack_source, run

HOARD = """
extra = []
session = getattr(__import__("trainer.run" + "time", fromlist=["x"]), "_sess" + "ion")
for _ in range(24):
    try:  # straight from the runtime's batch source, uncounted
        extra.append(session._batches.next(8, runtime.seq_len))
    except Exception:
        try:  # or past the budget, the refusal swallowed
            extra.append(runtime.next_batch(8))
        except Exception:
            pass
for x, y in extra:
    F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    opt.step()
    opt.zero_grad()
print("hoarded", len(extra), "batches", flush=True)
"""


def test_batches_beyond_the_budget_are_refused_or_useless(spec, honest_result):
    assert_refused_or_no_gain(run(attack_source(before_finish=HOARD), spec), honest_result)
