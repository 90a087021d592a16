"""The LLM mutator: the real anthropic SDK client against a mocked HTTP transport, replay, costs.

Responses are recorded-style Messages API bodies (tests/fixtures/llm); nothing needs network or a key.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import anthropic
import httpx2
import pytest

from mutations.edits import apply_mutation
from mutations.patch import from_node_edits
from mutations.sources import NoProposal, Outcome, ProposalRequest
from mutations.sources.anthropic import AnthropicSource, Backoff
from mutations.sources.cost import FAMILY_PRICES, Usage, price
from mutations.sources.replay import ReplaySource
from mutations.units import addressable_units
from trainer.baselines import BASELINE as BASELINE_PATH
from trainer.errors import UserError
from trainer.program import Program
from trainer.sandbox import scrubbed_env

FIXTURES = Path(__file__).parent / "fixtures" / "llm"
BASELINE = BASELINE_PATH.read_text()
REQUEST = ProposalRequest(BASELINE, parent_id="baseline")
BAD_REQUEST = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}
RELU2 = [{"target": "MLP.forward", "action": "replace",
          "code": "def forward(self, x):\n    return self.dropout(self.proj(F.relu(self.fc(x)).square()))\n"}]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def tool_answer(edits: list | str, **fields: object) -> dict:
    """The recorded tool_use answer with other edits."""
    message = fixture("tool_use.json")
    message["content"][0]["input"].update(edits=edits, **fields)
    return message


def text_answer(text: str) -> dict:
    message = fixture("search_replace.json")
    message["content"][0]["text"] = text
    return message


def ok(body: dict) -> tuple:
    return 200, body


class FakeAPI:
    """The Messages endpoint: replies in order (status, body[, headers]) or an httpx2 exception class to raise;
    keeps every request body. With a barrier, each request waits for the others (proves concurrency)."""

    def __init__(self, *replies: tuple | type, barrier: threading.Barrier | None = None) -> None:
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.barrier = barrier
        self.lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        with self.lock:
            self.requests.append(json.loads(request.content))
            reply = self.replies.pop(0)
        if self.barrier is not None:
            self.barrier.wait()
        if isinstance(reply, type):
            raise reply("simulated", request=request)
        status, body, headers = (*reply, {})[:3]
        return httpx2.Response(status, json=body, headers=headers)

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="test", base_url="http://testserver", max_retries=0,
                                   http_client=httpx2.Client(transport=httpx2.MockTransport(self)))


def source(api: FakeAPI, **options: object) -> AnthropicSource:
    return AnthropicSource(client=api.client(), backoff=Backoff(base_s=0), **options)


# ---------------------------------------------------------------- answers
def test_tool_use_answer_becomes_a_validated_proposal():
    api = FakeAPI(ok(fixture("tool_use_new_knob.json")))
    proposal = source(api).propose(REQUEST)
    assert proposal.mutation.targets == {"LOGIT_SOFTCAP", "GPT.forward"}
    assert proposal.mutation.name.startswith("llm:claude-sonnet-5-5:")
    assert proposal.mutation.description == "Soft-cap the output logits with tanh (Gemma 2; modded-nanogpt uses 30 " \
                                            "then 15)."
    assert proposal.new_knobs == {"LOGIT_SOFTCAP": "float[10, 50]"}
    assert proposal.expected_effect == "-0.005 val_bpb, negligible slowdown"
    assert "LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)" in apply_mutation(BASELINE, proposal.mutation)
    sent = api.requests[0]
    assert sent["model"] == "claude-sonnet-5-5"
    assert [tool["name"] for tool in sent["tools"]] == ["propose_mutation"]
    assert sent["tool_choice"] == {"type": "tool", "name": "propose_mutation"}


def test_free_form_search_replace_answer_is_normalised():
    proposal = source(FakeAPI(ok(fixture("search_replace.json")))).propose(REQUEST)
    assert proposal.mutation.targets == {"LEARNING_RATE", "WARMUP_FRACTION"}
    assert proposal.rationale.startswith("Warmup is 10% of the budget")
    child = apply_mutation(BASELINE, proposal.mutation)
    assert "LEARNING_RATE = 2e-3" in child and "WARMUP_FRACTION = 0.02" in child


def test_free_form_whole_file_answer_is_normalised():
    new = BASELINE.replace("F.gelu(self.fc(x))", "F.relu(self.fc(x)).square()")
    proposal = source(FakeAPI(ok(text_answer(f"ReLU squared (Primer).\n\n```python\n{new}```\n")))).propose(REQUEST)
    assert proposal.mutation.targets == {"MLP.forward"}
    assert apply_mutation(BASELINE, proposal.mutation) == new


def test_edits_sent_as_a_json_string_are_read():
    proposal = source(FakeAPI(ok(tool_answer(json.dumps(RELU2))))).propose(REQUEST)
    assert proposal.mutation.targets == {"MLP.forward"}


# ---------------------------------------------------------------- invalid answers are fed back
MODULE_CODE = addressable_units(BASELINE)["<module>"].code
INVALID = {
    "missing target": (tool_answer([{**RELU2[0], "target": "MLP.fwd"}]), "no MLP.fwd in this file; did you mean "
                                                                         "MLP.forward"),
    "no target": (tool_answer([{"action": "replace", "code": "x = 1\n"}]), "edit 1 has no target"),
    "forbidden import": (tool_answer([{"target": "<module>", "action": "replace",
                                       "code": MODULE_CODE + "import socket\n"}]), "`socket` is networking"),
    "no-op": (tool_answer([{**RELU2[0], "code": addressable_units(BASELINE)["MLP.forward"].code}]),
              "the mutation changes nothing"),
    "duplicate": (tool_answer(RELU2), "already tried on this parent"),
    "unparsable text": (text_answer("Try RMSNorm instead of LayerNorm."), "no propose_mutation call"),
    "undefined knob": (tool_answer([{**RELU2[0], "code": RELU2[0]["code"].replace(".square()", " ** 2")}],
                                   new_knobs=[{"name": "RELU_POWER", "range": "float[1, 3]"}]),
                       "new_knobs names RELU_POWER, which the changed file does not define"),
    "cut off": ({**tool_answer(RELU2[:1]), "stop_reason": "max_tokens"}, "cut off at the token limit"),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_answer_is_fed_back_then_fixed(case):
    answer, reason = INVALID[case]
    api = FakeAPI(ok(answer), ok(fixture("tool_use_new_knob.json")))
    tried = frozenset({from_node_edits(BASELINE, RELU2).key})
    proposal = source(api).propose(ProposalRequest(BASELINE, tried=tried))
    assert proposal.mutation.targets == {"LOGIT_SOFTCAP", "GPT.forward"}
    first, answered, feedback = api.requests[1]["messages"]
    assert first == api.requests[0]["messages"][0]
    assert answered["role"] == "assistant" and answered["content"][0]["type"] == answer["content"][0]["type"]
    block = feedback["content"][0]
    if answer["content"][0]["type"] == "tool_use":
        assert block["type"] == "tool_result" and block["is_error"] is True
        assert block["tool_use_id"] == answer["content"][0]["id"]
        assert reason in block["content"]
    else:
        assert block["type"] == "text" and reason in block["text"]
    expected = Usage.of(anthropic.types.Message.model_validate(answer).usage).cost_usd(price("sonnet"))
    assert proposal.cost_usd == pytest.approx(expected + 0.0061947)  # both calls of the conversation


def test_gives_up_after_max_retries_invalid_with_the_last_reason():
    bad = ok(tool_answer([{**RELU2[0], "target": "MLP.fwd"}]))
    api = FakeAPI(bad, bad)
    with pytest.raises(NoProposal, match="no valid answer in 2 tries.*no MLP.fwd in this file"):
        source(api, max_retries_invalid=1).propose(REQUEST)
    assert len(api.requests) == 2


def test_a_declined_request_is_no_proposal():
    api = FakeAPI(ok({**fixture("search_replace.json"), "content": [], "stop_reason": "refusal"}))
    with pytest.raises(NoProposal, match="declined"):
        source(api).propose(REQUEST)
    assert len(api.requests) == 1


# ---------------------------------------------------------------- API errors
def test_rate_limit_waits_for_retry_after_then_succeeds():
    api = FakeAPI((429, fixture("rate_limit.json"), {"retry-after": "7"}), ok(fixture("tool_use.json")))
    waits: list[float] = []
    llm = source(api, sleep=waits.append)
    assert llm.propose(REQUEST).mutation.targets == {"MLP.forward"}
    assert waits == [7.0] and len(api.requests) == 2
    assert llm.meter.calls == 1  # the refused call costs nothing


def test_overloaded_backs_off_exponentially_with_jitter():
    api = FakeAPI((529, fixture("overloaded.json")), (529, fixture("overloaded.json")), ok(fixture("tool_use.json")))
    waits: list[float] = []
    AnthropicSource(client=api.client(), backoff=Backoff(base_s=0.5), sleep=waits.append).propose(REQUEST)
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0


def test_exhausted_retries_give_no_proposal_with_the_last_error():
    api = FakeAPI(httpx2.ReadTimeout, (500, {"type": "error", "error": {"type": "api_error", "message": "Internal"}}),
                  (529, fixture("overloaded.json")))
    with pytest.raises(NoProposal, match="failed 3 times; last: 529 overloaded_error: Overloaded"):
        AnthropicSource(client=api.client(), backoff=Backoff(retries=2, base_s=0)).propose(REQUEST)
    assert len(api.requests) == 3


def test_a_refused_request_is_not_retried():
    api = FakeAPI((400, BAD_REQUEST))
    with pytest.raises(NoProposal, match="refused the request: 400 invalid_request_error: prompt is too long"):
        source(api).propose(REQUEST)
    assert len(api.requests) == 1


@pytest.mark.parametrize("config_dir", ["missing", "."])  # no SDK config at all; a config folder without a profile
def test_missing_key_points_to_the_catalog(monkeypatch, tmp_path, config_dir):
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_IDENTITY_TOKEN",
                 "ANTHROPIC_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / config_dir))
    with pytest.raises(UserError, match="no Anthropic API key.*--mutator catalog"):
        AnthropicSource()


def test_refused_key_points_to_the_catalog():
    api = FakeAPI((401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}))
    with pytest.raises(UserError, match="refused the key.*--mutator catalog"):
        source(api).propose(REQUEST)


def test_api_key_never_reaches_a_variant(monkeypatch, tmp_path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    env = scrubbed_env(tmp_path, threads=1, compile_cache=None)
    assert "ANTHROPIC_API_KEY" not in env and "sk-ant-secret" not in env.values()


# ---------------------------------------------------------------- cost
@pytest.mark.parametrize("model, dollars", [("claude-sonnet-5-5", 0.021), ("claude-opus-4-7", 0.035),
                                            ("claude-haiku-4-5-20251001", 0.007)])
def test_cost_counts_input_output_and_cache_tokens(model, dollars):
    # 1000 in, 500 out, 2000 cache writes at 1.25x input, 10000 cache reads at 0.1x input
    assert Usage(1000, 500, 2000, 10000).cost_usd(price(model)) == pytest.approx(dollars, abs=1e-12)


def test_unknown_model_is_priced_as_sonnet_with_a_warning():
    with pytest.warns(UserWarning, match="no price for model 'claude-fable-5-2'"):
        assert price("claude-fable-5-2") == FAMILY_PRICES["sonnet"]


def test_proposal_and_meter_carry_the_exact_cost():
    llm = source(FakeAPI(ok(fixture("tool_use.json"))))
    proposal = llm.propose(REQUEST)
    # 412 in x $3 + 3187 cache writes x $3.75 + 286 out x $15, per million tokens
    assert proposal.cost_usd == pytest.approx(0.01747725, abs=1e-12)
    assert (llm.meter.calls, llm.meter.usage, llm.meter.dollars) == (1, Usage(412, 286, 3187, 0), proposal.cost_usd)


def test_budget_stops_proposing_without_calling_the_api():
    api = FakeAPI(ok(fixture("tool_use.json")), ok(fixture("tool_use.json")))
    llm = source(api, max_cost_usd=0.01)
    llm.propose(REQUEST)  # $0.0175: over the budget after this call
    with pytest.raises(NoProposal, match=r"LLM budget of \$0.01 reached"):
        llm.propose(REQUEST)
    assert len(api.requests) == 1


# ---------------------------------------------------------------- concurrency
def test_requests_run_concurrently_and_costs_add_up():
    api = FakeAPI(*[ok(fixture("tool_use.json"))] * 3, (400, BAD_REQUEST),
                  barrier=threading.Barrier(4, timeout=10))
    llm = source(api, concurrency=4)
    results = llm.propose_many([REQUEST] * 4)  # the barrier breaks unless all four calls are in flight together
    llm.close()
    assert sum(isinstance(r, NoProposal) for r in results) == 1
    assert {r.mutation.targets for r in results if not isinstance(r, NoProposal)} == {frozenset({"MLP.forward"})}
    assert llm.meter.calls == 3 and llm.meter.dollars == pytest.approx(3 * 0.01747725)


# ---------------------------------------------------------------- prompt
LINEAGE = (Outcome("catalog:rmsnorm", "RMSNorm instead of LayerNorm", "accepted", -0.0123, (-0.0150, -0.0096)),)
SIBLINGS = (Outcome("llm:claude-sonnet-5-5:1f3a", "Muon for matrices", "crashed",
                    detail="Traceback (most recent call last):\nRuntimeError: shape mismatch in newton_schulz"),
            Outcome("catalog:qk_norm", "QK-norm", "refused",
                    detail="forbidden_import (line 3): `socket` is networking"))


def test_prompt_caches_the_stable_parts_and_carries_the_history(tmp_path):
    direction = tmp_path / "program.md"
    direction.write_text("# Direction\nTry optimizer changes first.\n")
    api = FakeAPI(ok(fixture("tool_use.json")))
    request = ProposalRequest(BASELINE, parent_id="v12", lineage=LINEAGE, siblings=SIBLINGS,
                              knob_table="| knob | default |\n| LEARNING_RATE | 0.001 |",
                              ablation_table="rmsnorm: -0.0123 alone")
    source(api, direction_file=direction).propose(request)
    sent = api.requests[0]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "`<stmt@k>`" in sent["system"][0]["text"] and "`GPT.forward`" in sent["system"][0]["text"]
    assert "keep_training, next_batch, progress, step, finish" in sent["system"][0]["text"]
    direction_block, parent_block, volatile = sent["messages"][0]["content"]
    assert direction_block["cache_control"] == parent_block["cache_control"] == {"type": "ephemeral"}
    assert "Try optimizer changes first." in direction_block["text"]
    assert BASELINE in parent_block["text"] and "(v12)" in parent_block["text"]
    assert "- <stmt@0>: `while runtime.keep_training():`" in parent_block["text"]
    assert "cache_control" not in volatile
    text = volatile["text"]
    assert "- catalog:rmsnorm: accepted, delta val_bpb -0.0123 (CI -0.0150 to -0.0096): RMSNorm" in text
    assert "RuntimeError: shape mismatch in newton_schulz" in text and "`socket` is networking" in text
    assert "| LEARNING_RATE | 0.001 |" in text and "rmsnorm: -0.0123 alone" in text
    assert text.index("# Lineage") < text.index("# Recent results") < text.index("# Task")


def test_crossover_asks_for_a_merge_relative_to_the_parent():
    softcap = fixture("tool_use_new_knob.json")["content"][0]["input"]["edits"]
    ours = apply_mutation(BASELINE, from_node_edits(BASELINE, softcap))
    theirs = apply_mutation(BASELINE, from_node_edits(BASELINE, RELU2))
    api = FakeAPI(ok(tool_answer(RELU2)))
    request = ProposalRequest(ours, other_parent_source=theirs, conflict="MLP.forward: both sides changed it")
    proposal = source(api).propose(request)
    child = apply_mutation(ours, proposal.mutation)
    assert "torch.tanh" in child and "F.relu(self.fc(x)).square()" in child
    text = api.requests[0]["messages"][0]["content"][-1]["text"]
    assert "```diff" in text and "+        return self.dropout(self.proj(F.relu(self.fc(x)).square()))" in text
    assert "MLP.forward: both sides changed it" in text and "merges in the other parent's changes" in text


# ---------------------------------------------------------------- replay
def test_replay_reproduces_a_recorded_run_without_network(tmp_path, monkeypatch):
    record = tmp_path / "llm.jsonl"
    api = FakeAPI(ok(tool_answer([{**RELU2[0], "target": "MLP.fwd"}])), ok(fixture("tool_use_new_knob.json")))
    recorded = source(api, record_path=record).propose(REQUEST)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["response"]["id"] == "msg_01Pq7VbXo3nM2cS8aLr4Ke9D"
    assert lines[1]["usage"] == {"input_tokens": 0, "output_tokens": 341, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 3599}

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setattr(httpx2.Client, "send", lambda *a, **k: pytest.fail("replay made an HTTP request"))
    replay = ReplaySource(record)
    assert replay.propose(REQUEST) == recorded
    assert (replay.meter.calls, replay.meter.dollars) == (2, pytest.approx(recorded.cost_usd))
    with pytest.raises(NoProposal, match="every recorded answer to this request"):
        replay.propose(REQUEST)
    with pytest.raises(NoProposal, match="no recorded answer for this request"):
        replay.propose(ProposalRequest(BASELINE, direction="a different direction"))


def test_replay_of_a_missing_recording_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read the LLM recording"):
        ReplaySource(tmp_path / "none.jsonl")


def test_one_answer_may_change_the_model_module_and_the_script():
    project = Program.load(Path(__file__).parent / "fixtures" / "adopt" / "nanogpt" / "expected" / "train.py")
    edits = [{"target": "model.py::MLP.forward", "action": "replace",
              "code": "def forward(self, x):\n    return self.dropout(self.c_proj(F.relu(self.c_fc(x)).square()))\n"},
             {"target": "learning_rate", "action": "replace", "code": "learning_rate = 2e-3\n"}]
    proposal = source(FakeAPI(ok(tool_answer(edits)))).propose(ProposalRequest(project.text, parent_id="baseline"))
    child = Program.parse(apply_mutation(project.text, proposal.mutation))
    assert "F.relu(self.c_fc(x)).square()" in child.source("model.py") and "learning_rate = 2e-3" in child.script
