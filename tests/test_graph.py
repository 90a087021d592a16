"""The model as data: exported by the training process, checked and run by the scorer."""
from __future__ import annotations

import copy
import json
import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mutations.catalog import MOVES, NotApplicable
from trainer.baselines import BASELINE
from trainer.graph import Graph, GraphError, export_model

CPU = torch.device("cpu")
IDX = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(256, 16)
        self.qkv = nn.Linear(16, 48)
        self.head = nn.Linear(16, 256)

    def forward(self, idx):
        q, k, v = self.qkv(self.emb(idx)).split(16, dim=2)
        return self.head(F.gelu(F.scaled_dot_product_attention(q, k, v, is_causal=True)))


def parsed(model: nn.Module) -> tuple[Graph, dict, bytes]:
    description, data = export_model(model.eval(), IDX)
    description = json.loads(json.dumps(description))  # as it travels
    return Graph.parse(description, data, CPU), description, data


def test_the_exported_graph_computes_what_the_model_computes():
    model = Small()
    graph, _, _ = parsed(model)
    with torch.no_grad():
        assert torch.equal(graph(IDX), model(IDX))
        assert torch.equal(graph(IDX), graph(IDX))  # and holds no state between calls


@pytest.mark.parametrize("op, refusal", [
    ("aten.add_.Tensor", "writes into its arguments"),
    ("aten.from_file.default", "takes a string"),
    ("aten.save.default", "takes a string"),
    ("aten.empty.memory_format", "uninitialised memory"),
    ("prims.add.default", "aten operators only"),
    ("aten.no_such_op.default", "does not have"),
    ("os.system", "aten operators only"),
])
def test_operators_that_reach_outside_the_tensors_or_keep_state_are_refused(op, refusal):
    _, description, data = parsed(Small())
    description["nodes"][0]["op"] = op
    with pytest.raises(GraphError, match=refusal):
        Graph.parse(description, data, CPU)


@pytest.mark.parametrize("damage, refusal", [
    (lambda d: d["tensors"][0].update(offset=1 << 40), "does not fit"),
    (lambda d: d["tensors"][0].update(dtype="object"), "described wrongly"),
    (lambda d: d["nodes"][1].update(args=[{"node": "later"}]), "before it is computed"),
    (lambda d: d["nodes"][1].update(args=[{"callable": "os.system"}]), "not understood"),
    (lambda d: d["nodes"][1].update(name="__class__.__init__"), "not a name"),
    (lambda d: d.update(format=99), "not format"),
    (lambda d: d["inputs"].append({"name": "extra", "user": True}), "one input"),
])
def test_a_damaged_description_is_refused_with_the_reason(damage, refusal):
    _, description, data = parsed(Small())
    damage(description)
    with pytest.raises(GraphError, match=refusal):
        Graph.parse(description, data, CPU)


def test_a_model_that_updates_its_buffers_when_called_is_refused():
    class Remembers(Small):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("seen", torch.zeros(256))

        def forward(self, idx):
            self.seen.index_add_(0, idx.flatten(), torch.ones(idx.numel()))
            return super().forward(idx) + self.seen[idx][..., None]

    with pytest.raises(GraphError, match="writes into its arguments"):
        parsed(Remembers())


def test_data_dependent_control_flow_is_refused_with_what_to_change():
    class Branches(Small):
        def forward(self, idx):
            return super().forward(idx) * 2 if idx.sum() > 100 else super().forward(idx)

    with pytest.raises(GraphError, match="could not be exported .* data-dependent Python control flow"):
        parsed(Branches())


class _Stop(Exception):
    pass


def _model_of(source: str) -> nn.Module:
    """The model a train.py builds, taken before its training loop runs (a stand-in runtime)."""
    runtime = types.SimpleNamespace(device=CPU, vocab_size=256, seq_len=32, seed=0, dtype=torch.float32,
                                    pick=lambda cpu, cuda: cpu, progress=lambda: 0.0,
                                    keep_training=lambda: (_ for _ in ()).throw(_Stop()))
    namespace = {"__name__": "__main__"}
    trainer = sys.modules["trainer"]
    saved = sys.modules.get("trainer.runtime")
    sys.modules["trainer.runtime"], trainer.runtime = runtime, runtime
    try:
        exec(compile(source, "train.py", "exec"), namespace)
    except _Stop:
        pass
    finally:
        sys.modules["trainer.runtime"] = saved
        trainer.runtime = saved
    return namespace["model"]


@pytest.mark.parametrize("move", ["baseline", *sorted(MOVES)])
def test_the_baseline_and_every_catalog_move_export_for_scoring(move):
    try:
        source = BASELINE.read_text() if move == "baseline" else MOVES[move].apply(BASELINE.read_text())
    except NotApplicable:
        pytest.skip(f"{move} does not apply to the baseline")
    model = _model_of(source).eval()
    graph, _, _ = parsed(copy.deepcopy(model))
    with torch.no_grad():
        assert torch.allclose(graph(IDX), model(IDX), atol=1e-5)
