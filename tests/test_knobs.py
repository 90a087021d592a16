from __future__ import annotations

import ast
import textwrap
from importlib import resources

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mutations.knobs import Distribution, Knob, extract_knobs, infer_distribution, knob_table, set_knobs
from trainer.errors import UserError

BASELINE = (resources.files("trainer") / "baselines" / "train.py").read_text()
BASELINE_NAMES = ["DEPTH", "WIDTH", "HEADS", "MLP_RATIO", "DROPOUT", "BATCH_SIZE", "LEARNING_RATE", "BETA1", "BETA2",
                  "ADAM_EPS", "WEIGHT_DECAY", "WARMUP_FRACTION", "FINAL_LR_FRACTION", "GRAD_CLIP", "INIT_STD",
                  "COMPILE", "FUSED_CE"]


def knobs_of(source: str, device: str = "cpu") -> dict[str, Knob]:
    return {k.name: k for k in extract_knobs(source, device)}


BASELINE_KNOBS = {device: knobs_of(BASELINE, device) for device in ("cpu", "cuda")}


def one_knob(source: str) -> Knob:
    knobs = extract_knobs(textwrap.dedent(source))
    assert len(knobs) == 1, knobs
    return knobs[0]


# ---------------------------------------------------------------- independent span finder (ast, not libcst)
def literal_spans(source: str, device: str) -> dict[str, tuple[int, int]]:
    """Character spans of module-level literals, found with ast: scalars, pick(device=...) and tuple elements."""
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call):
            value = next((k.value for k in value.keywords if k.arg == device), value)
        parts = ([(f"{node.targets[0].id}[{i}]", e) for i, e in enumerate(value.elts)] if isinstance(value, ast.Tuple)
                 else [(node.targets[0].id, value)])
        for name, e in parts:
            spans[name] = (starts[e.lineno - 1] + e.col_offset, starts[e.end_lineno - 1] + e.end_col_offset)
    return spans


def skeleton(source: str, device: str, names) -> str:
    """The source with the named literals cut out: what set_knobs must leave byte for byte."""
    spans = sorted(literal_spans(source, device)[n] for n in names)
    pieces, at = [], 0
    for start, end in spans:
        pieces += [source[at:start], "\0"]
        at = end
    return "".join(pieces) + source[at:]


# ---------------------------------------------------------------- the baseline
def test_baseline_knobs_on_cpu():
    knobs = knobs_of(BASELINE)
    assert list(knobs) == BASELINE_NAMES
    lines = BASELINE.splitlines()
    for knob in knobs.values():
        assert lines[knob.line - 1].startswith(f"{knob.name} = ")
    assert f"cpu={knobs['DEPTH'].default}," in lines[knobs["DEPTH"].line - 1]
    assert (knobs["DEPTH"].default, knobs["WIDTH"].default, knobs["HEADS"].default) == (4, 128, 4)
    assert knobs["LEARNING_RATE"].distribution == Distribution("log", 1e-4, 1e-2)
    assert knobs["ADAM_EPS"].distribution == Distribution("log", 1e-10, 1e-6)
    assert knobs["DEPTH"].distribution == Distribution("int", 2, 8)
    assert knobs["COMPILE"].distribution == Distribution("choice", choices=(True, False))
    assert knobs["DROPOUT"].distribution == Distribution("float", 0.0, 0.3)
    assert knobs["HEADS"].divides == "WIDTH"
    assert [k.name for k in knobs.values() if k.divides] == ["HEADS"]
    beta2 = knobs["BETA2"].distribution
    assert beta2.kind == "float" and 0.5 <= beta2.low < 0.95 < beta2.high < 1
    width = knobs["WIDTH"].distribution
    assert width.kind == "int" and width.step and 128 % width.step == 0 and width.low % width.step == 0


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_baseline_defaults_lie_inside_their_distributions(device):
    for knob in extract_knobs(BASELINE, device):
        d = knob.distribution
        if d.kind == "choice":
            assert knob.default in d.choices
        else:
            assert d.low <= knob.default <= d.high, knob
            assert (knob.default - d.low) % (d.step or 1) == 0 or d.kind != "int"


def test_baseline_on_cuda_reads_the_cuda_arguments():
    cpu, cuda = knobs_of(BASELINE, "cpu"), knobs_of(BASELINE, "cuda")
    assert (cuda["DEPTH"].default, cuda["WIDTH"].default, cuda["HEADS"].default, cuda["BATCH_SIZE"].default) == (8, 512, 8, 32)
    assert knobs_of(BASELINE, "cuda:1") == cuda
    assert cuda["LEARNING_RATE"] == cpu["LEARNING_RATE"]
    assert cuda["DEPTH"].distribution == Distribution("int", 4, 16)


def test_set_knobs_rewrites_only_the_active_devices_pick_argument():
    line = next(l for l in BASELINE.splitlines() if l.startswith("DEPTH = "))
    assert line.startswith("DEPTH = runtime.pick(cpu=4, cuda=8)")
    changed = set_knobs(BASELINE, {"DEPTH": 12}, device="cuda")
    assert "DEPTH = runtime.pick(cpu=4, cuda=12)  " in changed
    assert knobs_of(changed, "cpu")["DEPTH"].default == 4


def test_unknown_device_is_refused():
    with pytest.raises(UserError, match="cpu, mps or cuda"):
        extract_knobs(BASELINE, "auto")


# ---------------------------------------------------------------- round trip on the baseline
def values_in(d: Distribution) -> st.SearchStrategy:
    if d.kind in ("log", "float"):
        return st.floats(d.low, d.high, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    if d.kind == "int":
        step = d.step or 1
        return st.integers(0, (d.high - d.low) // step).map(lambda k: d.low + k * step)
    return st.sampled_from(d.choices)


@st.composite
def baseline_values(draw, device: str) -> dict[str, object]:
    knobs = BASELINE_KNOBS[device]
    names = draw(st.sets(st.sampled_from(list(knobs)), min_size=1))
    values = {name: draw(values_in(knobs[name].distribution)) for name in sorted(names)}
    width = values.get("WIDTH", knobs["WIDTH"].default)
    heads = knobs["HEADS"].distribution
    if width % values.get("HEADS", knobs["HEADS"].default):
        values["HEADS"] = draw(st.sampled_from([h for h in range(heads.low, heads.high + 1) if width % h == 0]))
    return values


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_set_then_extract_round_trips_and_touches_only_the_literals(device, data):
    values = data.draw(baseline_values(device))
    changed = set_knobs(BASELINE, values, device)
    after, before = knobs_of(changed, device), BASELINE_KNOBS[device]
    for name, knob in after.items():
        expected = values.get(name, before[name].default)
        assert knob.default == expected and type(knob.default) is type(expected), name
        assert knob.distribution.kind == before[name].distribution.kind
        assert knob.line == before[name].line
    assert skeleton(changed, device, values) == skeleton(BASELINE, device, values)
    spans = literal_spans(changed, device)
    for name, value in values.items():
        assert ast.literal_eval(changed[slice(*spans[name])]) == value


def test_setting_the_defaults_changes_nothing():
    defaults = {k.name: k.default for k in extract_knobs(BASELINE)}
    assert set_knobs(BASELINE, defaults) == BASELINE


def test_floats_are_written_compactly_and_keep_their_type():
    changed = set_knobs(BASELINE, {"LEARNING_RATE": 3e-3, "ADAM_EPS": 1e-05, "GRAD_CLIP": 2, "BETA2": 0.99})
    assert "\nLEARNING_RATE = 3e-3 " in changed and "\nADAM_EPS = 1e-5 " in changed
    assert "\nGRAD_CLIP = 2.0 " in changed and "\nBETA2 = 0.99 " in changed


# ---------------------------------------------------------------- refusals
def test_int_knob_refuses_a_fraction_but_takes_an_integral_float():
    with pytest.raises(UserError, match=r"DEPTH takes an int, but got 2\.5"):
        set_knobs(BASELINE, {"DEPTH": 2.5})
    assert "cpu=6," in set_knobs(BASELINE, {"DEPTH": 6.0})


def test_bool_and_choice_knobs_refuse_other_values():
    with pytest.raises(UserError, match="COMPILE=1 is not among choice"):
        set_knobs(BASELINE, {"COMPILE": 1})
    with pytest.raises(UserError, match="LEARNING_RATE takes a finite number"):
        set_knobs(BASELINE, {"LEARNING_RATE": True})


def test_unknown_name_lists_close_matches():
    with pytest.raises(UserError, match="unknown knob 'LEARNIN_RATE'; did you mean LEARNING_RATE"):
        set_knobs(BASELINE, {"LEARNIN_RATE": 1e-3})


def test_divisibility_is_checked_on_the_final_values():
    with pytest.raises(UserError, match=r"HEADS=3 must divide WIDTH=128") as error:
        set_knobs(BASELINE, {"HEADS": 3})
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"HEADS=4 must divide WIDTH=90"):
        set_knobs(BASELINE, {"WIDTH": 90})
    assert "cpu=96," in set_knobs(BASELINE, {"HEADS": 3, "WIDTH": 96})


def test_ranges_guide_but_do_not_forbid():
    assert knobs_of(set_knobs(BASELINE, {"LEARNING_RATE": 0.5}))["LEARNING_RATE"].default == 0.5


# ---------------------------------------------------------------- overrides
@pytest.mark.parametrize("line, expected", [
    ("LR = 3e-3  # knob: log[1e-4, 1e-1]", Distribution("log", 1e-4, 1e-1)),
    ("RATIO = 0.2  # knob: float[0, 0.5]", Distribution("float", 0.0, 0.5)),
    ("DEPTH = 4  # knob: int[2, 12]", Distribution("int", 2, 12)),
    ("WIDTH = 256  # model width; knob: int[64, 1024, step=64]", Distribution("int", 64, 1024, step=64)),
    ("BATCH = 32  # knob: int[8, 256, log]; powers of two do best", Distribution("int", 8, 256, log=True)),
    ("ACT = 'relu2'  # knob: choice[relu2, gelu]", Distribution("choice", choices=("relu2", "gelu"))),
    ("MIX = 1  # knob: choice[1, 2.5, True, none]", Distribution("choice", choices=(1, 2.5, True, "none"))),
    ("SEED_LIKE = 7  # knob: fixed", Distribution("fixed")),
    ("eval_interval = 50  # knob: int[10, 100]", Distribution("int", 10, 100)),
])
def test_override_forms(line, expected):
    assert one_knob(line).distribution == expected


@pytest.mark.parametrize("comment", [
    "knob: uniform[1, 2]", "knob: log[0, 1]", "knob: int[2]", "knob: int[1, 10, step=4]", "knob: int[1.5, 4]",
    "knob: int[2, 64, step=2, log]", "knob: int[1, 9, every=2]", "knob: choice[]", "knob: choice[2, 3]", "knob: fixd",
])
def test_malformed_override_names_the_line_and_the_forms(comment):
    with pytest.raises(UserError, match="line 2") as error:
        extract_knobs(f"import math\nDEPTH = 4  # {comment}\n")
    assert "int[LOW, HIGH, step=N]" in str(error.value) or "does not fit the value 4" in str(error.value)


def test_every_inferred_distribution_reads_back_from_its_comment_form():
    for device in ("cpu", "cuda"):
        for knob in extract_knobs(BASELINE, device):
            source = f"X = {knob.default!r}  # knob: {knob.distribution}\n"
            assert one_knob(source).distribution == knob.distribution


def test_string_knobs_are_fixed_unless_given_choices_and_keep_their_quotes():
    assert one_knob('PATTERN = "SSSL"\n').distribution == Distribution("fixed")
    source = 'ACT = "relu2"  # knob: choice[relu2, gelu]\n'
    assert set_knobs(source, {"ACT": "gelu"}) == 'ACT = "gelu"  # knob: choice[relu2, gelu]\n'
    with pytest.raises(UserError, match="'swish' is not among choice\\[relu2, gelu\\]"):
        set_knobs(source, {"ACT": "swish"})


# ---------------------------------------------------------------- what is and is not a knob
NOT_KNOBS = textwrap.dedent('''
    """A docstring."""
    import math
    from trainer import runtime
    HIDDEN = 2 * WIDTH
    TOTAL = 2**DEPTH
    CALLED = abs(-3)
    NOTHING = None
    LONG_NAME = "a string longer than twenty characters"
    RAW = b"bytes"
    _PRIVATE = 3
    MixedCase = 3
    A = 1; B = 2
    TWICE = 1
    TWICE = 2
    MIXED_TUPLE = (1, "a")
    BOOLS = (True, False)
    EXPR_PICK = runtime.pick(cpu=2 * WIDTH, cuda=64)
    if math.pi > 3:
        INSIDE_IF = 3

    def f():
        INSIDE_FUNCTION = 3

    class C:
        INSIDE_CLASS = 3
''')


def test_only_plain_module_level_literals_are_knobs():
    assert extract_knobs(NOT_KNOBS) == []
    assert list(knobs_of(NOT_KNOBS, "cuda")) == ["EXPR_PICK"]


def test_literal_forms():
    source = textwrap.dedent('''
        SHIFT = -0.5
        TINY = 1.5e-5
        STEPS = 1_000
        FLAG = False
        ANNOTATED: int = 12
        WRAPPED = (3)
        ADAM_BETAS = (0.8, 0.95)  # knob: float[0.5, 0.999]
    ''')
    knobs = knobs_of(source)
    assert {n: k.default for n, k in knobs.items()} == {
        "SHIFT": -0.5, "TINY": 1.5e-5, "STEPS": 1000, "FLAG": False, "ANNOTATED": 12, "WRAPPED": 3,
        "ADAM_BETAS[0]": 0.8, "ADAM_BETAS[1]": 0.95}
    assert knobs["SHIFT"].distribution == Distribution("float", -1.0, -0.25)
    assert knobs["ADAM_BETAS[1]"].distribution == Distribution("float", 0.5, 0.999)
    assert knobs["ADAM_BETAS[1]"].line == 8
    changed = set_knobs(source, {"ADAM_BETAS[1]": 0.99, "SHIFT": 0.25, "WRAPPED": 5})
    assert changed == source.replace("(0.8, 0.95)", "(0.8, 0.99)").replace("-0.5", "0.25").replace("(3)", "(5)")


def test_tuple_elements_infer_from_the_tuple_name():
    knobs = knobs_of("ADAM_BETAS = (\n    0.9,\n    0.95,\n)\n")
    assert knobs["ADAM_BETAS[0]"].distribution == Distribution("float", 0.6, 0.975)
    assert (knobs["ADAM_BETAS[0]"].line, knobs["ADAM_BETAS[1]"].line) == (2, 3)


# Written for this test in the style of a nanoGPT train.py: lowercase config literals.
NANOGPT_STYLE = textwrap.dedent('''
    """Train a small GPT on one text file."""
    import os
    import time

    # I/O
    out_dir = 'out-tiny'
    eval_interval = 250
    log_interval = 10
    eval_iters = 50
    eval_only = False
    always_save_checkpoint = True
    init_from = 'scratch'
    wandb_log = False
    wandb_project = 'tiny'
    wandb_run_name = 'run' + str(time.time())
    # data
    dataset = 'poems'
    gradient_accumulation_steps = 4
    batch_size = 24
    block_size = 256
    # model
    n_layer = 6
    n_head = 6
    n_embd = 384
    dropout = 0.2
    bias = False
    # optimizer
    learning_rate = 1e-3
    max_iters = 5000
    weight_decay = 1e-1
    beta1 = 0.9
    beta2 = 0.99
    grad_clip = 1.0
    decay_lr = True
    warmup_iters = 100
    lr_decay_iters = 5000
    min_lr = 1e-4
    # system
    backend = 'nccl'
    device = 'cuda'
    dtype = 'bfloat16'
    compile = True
    seed = 1337
    ddp_world_size = 1
    config_keys = [k for k, v in globals().items() if not k.startswith('_')]
    exec(open('configurator.py').read())
    tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
    iter_num = 0
    best_val_loss = 1e9
    running_mfu = -1.0
    t0 = time.time()
''')


def test_nanogpt_style_config_block():
    knobs = knobs_of(NANOGPT_STYLE)
    assert list(knobs) == [
        "gradient_accumulation_steps", "batch_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias",
        "learning_rate", "max_iters", "weight_decay", "beta1", "beta2", "grad_clip", "decay_lr", "warmup_iters",
        "lr_decay_iters", "min_lr"]
    kinds = {name: k.distribution.kind for name, k in knobs.items()}
    assert kinds["learning_rate"] == kinds["min_lr"] == kinds["weight_decay"] == "log"
    assert kinds["n_layer"] == kinds["n_embd"] == kinds["max_iters"] == "int"
    assert kinds["bias"] == kinds["decay_lr"] == "choice"
    assert knobs["n_embd"].distribution.step == 64
    assert knobs["beta2"].distribution.high < 1
    assert knobs["dropout"].distribution == Distribution("float", 0.0, 0.5)


# ---------------------------------------------------------------- distributions
@pytest.mark.parametrize("distribution, optuna_type", [
    (Distribution("log", 1e-4, 1e-1), optuna.distributions.FloatDistribution),
    (Distribution("float", 0.0, 0.5), optuna.distributions.FloatDistribution),
    (Distribution("int", 64, 1024, step=64), optuna.distributions.IntDistribution),
    (Distribution("int", 2, 64, log=True), optuna.distributions.IntDistribution),
    (Distribution("choice", choices=("relu2", "gelu")), optuna.distributions.CategoricalDistribution),
])
def test_to_optuna(distribution, optuna_type):
    converted = distribution.to_optuna()
    assert type(converted) is optuna_type
    if distribution.kind != "choice":
        assert (converted.low, converted.high) == (distribution.low, distribution.high)
        assert getattr(converted, "log") == (distribution.kind == "log" or distribution.log)


def test_fixed_and_impossible_distributions():
    with pytest.raises(ValueError, match="fixed"):
        Distribution("fixed").to_optuna()
    with pytest.raises(ValueError, match="log scale with a step"):
        Distribution("int", 2, 64, step=2, log=True)
    assert str(Distribution("int", 64, 1024, step=64)) == "int[64, 1024, step=64]"
    assert str(Distribution("log", 1e-4, 0.1)) == "log[1e-4, 0.1]"


def test_knob_table():
    table = knob_table(BASELINE)
    assert list(table.columns) == ["name", "default", "distribution", "line", "divides", "derived"]
    assert list(table["name"]) == BASELINE_NAMES
    row = table.set_index("name").loc["LEARNING_RATE"]
    assert (row["default"], row["distribution"]) == (1e-3, "log[1e-4, 0.01]")
    assert table.set_index("name").loc["HEADS", "divides"] == "WIDTH"


# ---------------------------------------------------------------- state and reporting are not configuration
# Written for these tests in the shape of an autoresearch-style train.py: UPPER_CASE hyperparameters, the model,
# then a module-level training loop that keeps running totals and reports MFU.
AUTORESEARCH_STYLE = textwrap.dedent('''
    import time
    import torch

    # hyperparameters
    TOTAL_BATCH_SIZE = 2**19   # tokens per optimizer step
    DEVICE_BATCH_SIZE = 32
    MATRIX_LR = 0.04
    WARMDOWN_RATIO = 0.5
    TIME_BUDGET = 300

    model = build(DEVICE_BATCH_SIZE)
    H100_BF16_PEAK_FLOPS = 989.5e12
    flops_per_token = model.flops()
    grad_accum_steps = TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * 2048)
    print(f"accumulating {grad_accum_steps} micro-batches")

    smooth_train_loss = 0
    total_training_time = 0
    step = 0
    while True:
        t0 = time.time()
        for micro_step in range(grad_accum_steps):
            loss = model(next_batch())
            loss.backward()
        lr = MATRIX_LR * schedule(total_training_time / TIME_BUDGET, WARMDOWN_RATIO)
        optimizer.step(lr)
        dt = time.time() - t0
        if step > 10:
            total_training_time += dt
        smooth_train_loss = 0.9 * smooth_train_loss + 0.1 * loss.item()
        mfu = 100 * flops_per_token * TOTAL_BATCH_SIZE / dt / H100_BF16_PEAK_FLOPS
        print(f"step {step} loss {smooth_train_loss:.3f} mfu {mfu:.1f}%")
        step += 1
        if total_training_time >= TIME_BUDGET:
            break
''')


def test_autoresearch_style_loop_state_and_reporting_constants_are_not_knobs():
    knobs = knobs_of(AUTORESEARCH_STYLE)
    # TIME_BUDGET is not one: the budget is the runtime's
    assert list(knobs) == ["TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "MATRIX_LR", "WARMDOWN_RATIO"]
    total = knobs["TOTAL_BATCH_SIZE"]
    assert total.default == 524288 and type(total.default) is int
    assert total.distribution == infer_distribution("TOTAL_BATCH_SIZE", 524288) == Distribution("int", 262144, 1048576,
                                                                                                 step=64)
    changed = set_knobs(AUTORESEARCH_STYLE, {"TOTAL_BATCH_SIZE": 262144})
    assert changed == AUTORESEARCH_STYLE.replace("2**19", "2**18")


@pytest.mark.parametrize("code", [
    "while running():\n    COUNTER += 1\n",                           # a counter
    "for batch in data:\n    if ready():\n        COUNTER = 2\n",    # re-assigned in a loop, however deep
    "for COUNTER in range(3):\n    pass\n",                           # a loop variable
    "with timer() as COUNTER:\n    pass\n",                           # bound again in a block
    "if resume:\n    COUNTER = checkpoint['counter']\n",              # which literal counts is unclear
    "def tick():\n    global COUNTER\n    COUNTER = COUNTER + 1\n",  # a function updates it
])
def test_names_bound_again_are_state_not_knobs(code):
    source = f"COUNTER = 0\nLEARNING_RATE = 1e-3\n{code}train(COUNTER, LEARNING_RATE)\n"
    assert list(knobs_of(source)) == ["LEARNING_RATE"]


def test_a_one_off_adjustment_outside_a_loop_keeps_the_knob():
    source = "gradient_accumulation_steps = 5 * 8\nif ddp:\n    gradient_accumulation_steps //= world_size\n"
    assert knobs_of(source)["gradient_accumulation_steps"].default == 40


def test_names_only_reported_are_not_knobs():
    source = textwrap.dedent('''
        import logging
        REFERENCE_THROUGHPUT = 312e12
        LABEL = "tiny"
        LEARNING_RATE = 1e-3
        SHOWN_VIA_LOGGER = 7
        utilization = tokens / REFERENCE_THROUGHPUT
        ratio = utilization * 100
        train(LEARNING_RATE)
        print(f"{LABEL}: lr {LEARNING_RATE} utilization {ratio:.1f}%")
        logging.info("%d", SHOWN_VIA_LOGGER)
    ''')
    assert list(knobs_of(source)) == ["LEARNING_RATE"]


def test_hardware_peaks_are_not_knobs_unless_a_comment_opts_them_in():
    source = "PEAK_FLOPS = 312e12\nrunning_mfu = model.estimate_mfu(PEAK_FLOPS)\n"
    assert extract_knobs(source) == []
    assert list(knobs_of(source.replace("312e12", "312e12  # knob: fixed"))) == ["PEAK_FLOPS"]


# Written for these tests in the shape of a nanoGPT-style train.py: lowercase configuration, values derived from
# others, and the loop state around a module-level training loop.
NANOGPT_LOOP = textwrap.dedent('''
    gradient_accumulation_steps = 5 * 8
    batch_size = 12
    learning_rate = 6e-4
    max_iters = 600000
    lr_decay_iters = max_iters
    warmup_iters = max_iters // 10
    eval_interval = 2000
    if ddp:
        gradient_accumulation_steps //= ddp_world_size
    tokens_per_iter = gradient_accumulation_steps * batch_size * 1024
    print(f"tokens per iteration: {tokens_per_iter:,}")
    iter_num = 0
    best_val_loss = 1e9
    if init_from == 'resume':
        iter_num = checkpoint['iter_num']
        best_val_loss = checkpoint['best_val_loss']
    raw_model = None
    local_iter_num = 0
    running_mfu = -1.0
    t0 = time.time()
    while True:
        lr = get_lr(iter_num, learning_rate, warmup_iters, lr_decay_iters)
        if iter_num % eval_interval == 0:
            best_val_loss = min(best_val_loss, evaluate())
        for micro_step in range(gradient_accumulation_steps):
            train_step(get_batch(batch_size), lr)
        running_mfu = 0.9 * running_mfu + 0.1 * estimate()
        iter_num += 1
        local_iter_num += 1
        if iter_num > max_iters:
            break
''')


def test_nanogpt_style_derived_values_follow_their_source():
    knobs = knobs_of(NANOGPT_LOOP)
    assert list(knobs) == ["gradient_accumulation_steps", "batch_size", "learning_rate", "max_iters"]
    assert knobs["gradient_accumulation_steps"].default == 40
    changed = set_knobs(NANOGPT_LOOP, {"max_iters": 5000, "gradient_accumulation_steps": 80})
    assert changed == NANOGPT_LOOP.replace("= 600000", "= 5000").replace("5 * 8", "10 * 8")
    assert "lr_decay_iters = max_iters\nwarmup_iters = max_iters // 10\n" in changed
    derived = knob_table(NANOGPT_LOOP).set_index("name")["derived"]
    assert derived["max_iters"] == "lr_decay_iters, warmup_iters"
    assert derived["batch_size"] == "tokens_per_iter" and derived["learning_rate"] == ""
    defaults = knob_table(NANOGPT_LOOP)["default"]
    assert list(defaults) == [40, 12, 6e-4, 600000] and type(defaults[0]) is int


# ---------------------------------------------------------------- arithmetic on literals
@pytest.mark.parametrize("expression, default", [
    ("2**19", 524288), ("256 * 1024", 262144), ("5 * 8", 40), ("3e-4 / 2", 1.5e-4), ("1 / 3", 1 / 3), ("100 // 3", 33),
    ("-(2 ** 3)", -8), ("(2 *\n    8 * 1024)", 16384),
])
def test_arithmetic_on_literals_is_a_knob_of_its_value(expression, default):
    knob = one_knob(f"VALUE = {expression}\n")
    assert knob.default == default and type(knob.default) is type(default)
    assert knob.distribution == infer_distribution("VALUE", default)


@pytest.mark.parametrize("expression, value, written", [
    ("2**19", 262144, "2**18"),              # a power keeps its base
    ("2 ** 19", 2**20, "2 ** 20"),
    ("2**19", 300000, "300000"),             # not a power of 2: the plain literal
    ("256 * 1024", 131072, "128 * 1024"),    # the first factor scales
    ("5 * 8", 80, "10 * 8"),
    ("5 * 8", 45, "5 * 9"),                  # else the last
    ("5 * 8", 12, "12"),                     # else the plain literal
    ("5 * 8", 0, "0"),                       # the changed number stays positive
    ("2 * 8 * 1024", 32768, "4 * 8 * 1024"),
    ("3e-4 / 2", 1e-3, "2e-3 / 2"),
    ("2**-1", 0.125, "2**-3"),
])
def test_setting_arithmetic_keeps_its_form_where_exact(expression, value, written):
    source = f"import math\nVALUE = {expression}  # a comment\nLR = 1e-3\n"
    changed = set_knobs(source, {"VALUE": value})
    assert changed == source.replace(expression, written)
    assert knobs_of(changed)["VALUE"].default == value


EXPRESSIONS = ["2**19", "256 * 1024", "5 * 8", "3e-4 / 2", "1 / 3", "100 // 3", "10 - 3", "2**-1", "-5 * 8",
               "(2 *\n    8 * 1024)", "7 + 0.5"]


@settings(max_examples=200, deadline=None)
@given(expression=st.sampled_from(EXPRESSIONS), number=st.floats(-1e7, 1e7, allow_nan=False, allow_subnormal=False))
def test_setting_arithmetic_never_writes_a_wrong_value(expression, number):
    source = f"VALUE = {expression}  # knob: fixed\nLR = 1e-3\n"
    value = int(number) if isinstance(knobs_of(source)["VALUE"].default, int) else number
    changed = set_knobs(source, {"VALUE": value})
    after = knobs_of(changed)["VALUE"].default
    assert after == value and type(after) is type(value)
    assert changed.endswith("  # knob: fixed\nLR = 1e-3\n")


def test_a_budget_is_not_a_knob_whatever_its_case():
    source = "TIME_BUDGET = 300\ntime_budget = 300\nMAX_SEQ_LEN = 2048\n"
    assert [knob.name for knob in extract_knobs(source)] == ["MAX_SEQ_LEN"]


def test_heads_divide_the_width_without_a_comment_saying_so():
    source = "n_layer = 2\nn_head = 2\nn_embd = 32\n"
    assert {knob.name: knob.divides for knob in extract_knobs(source)}["n_head"] == "n_embd"
    with pytest.raises(UserError, match="divide"):
        set_knobs(source, {"n_head": 3})
    assert set_knobs(source, {"n_head": 4}) == "n_layer = 2\nn_head = 4\nn_embd = 32\n"
