"""The model as data: exported in the training process, checked and run by the trusted scorer.

`finish(model)` turns the variant's model into a graph of ATen operator calls with its weights
(torch.export at the scoring shape), written in a format of our own: a JSON description of the
calls and the raw bytes of the tensors. No pickle: torch.export.load unpickles, which would run
whatever code the variant put there. The scorer parses that description with `Graph.parse`,
which accepts only:

- operators of the `aten` namespace that write into none of their arguments (a schema with no
  mutation), so nothing persists from one call to the next: the model is a pure function of
  its weights and its input, and cannot learn from the rows it is scored on;
- none that take a string other than a mode (aten::save and aten::from_file take file names) or
  that hand out uninitialised memory (which could hold what an earlier call left);
- arguments that are plain values or earlier results, one integer input, one tensor output.

Whatever the variant sends, the scorer runs only that: it cannot look at another row's tokens
without the check seeing it (trainer/plan.py), cannot remember, and cannot read anything.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

import torch

FORMAT = 1
# ATen operators that hand out uninitialised memory (which could hold what an earlier call left)
# or reach into storage. Operators with a string argument are refused too (aten::save writes a
# file, aten::from_file reads one), except these, whose string only names a mode.
_REFUSED = re.compile(r"^(.*empty.*|set_|.*storage.*|_nested.*|.*_out|_test.*)$")
_STRING_MODES = frozenset({"gelu", "div", "divide", "einsum", "pad", "scatter", "scatter_reduce", "index_reduce",
                           "searchsorted", "quantile", "nanquantile", "segment_reduce", "meshgrid", "stft",
                           "_convolution_mode", "conv1d", "conv2d", "conv3d", "_assert_async", "_assert_scalar",
                           "_functional_assert_async", "_functional_assert_scalar", "linalg_norm",
                           "linalg_matrix_norm", "linalg_cond", "linalg_eigh", "linalg_eigvalsh", "linalg_qr",
                           "linalg_svd", "linalg_svdvals", "linalg_lstsq", "_linalg_eigh", "_linalg_svd"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DTYPES = {str(t).removeprefix("torch."): t for t in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.bool, torch.complex64)}
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {str(f).removeprefix("torch."): f for f in (
    torch.contiguous_format, torch.preserve_format, torch.channels_last)}


class GraphError(Exception):
    """The exported model cannot be scored; the message says why and what to change."""


# ---------------------------------------------------------------- export (in the training process)
def export_model(model: torch.nn.Module, example: torch.Tensor) -> tuple[dict, bytes]:
    """(description, tensor bytes) of `model` called on inputs shaped like `example`."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: export what it wraps
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (example,))
    except Exception as error:  # noqa: BLE001 - torch.export raises many kinds; all mean the same here
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise GraphError(f"the model could not be exported for scoring (torch.export: {type(error).__name__}: "
                         f"{first[:200]}); keep forward(idx) free of data-dependent Python control flow") from None
    signature = exported.graph_signature
    state = {**exported.state_dict, **exported.constants}
    chunks: list[bytes] = []
    tensors: list[dict] = []
    inputs = []
    for spec in signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            inputs.append({"name": spec.arg.name, "user": True})
            continue
        tensor = state[spec.target].detach().to("cpu").contiguous()
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        tensors.append({"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape),
                        "offset": sum(map(len, chunks)), "nbytes": len(data)})
        chunks.append(data)
        inputs.append({"name": spec.arg.name, "tensor": len(tensors) - 1})
    nodes = []
    for node in exported.graph.nodes:
        if node.op == "call_function":
            nodes.append({"name": node.name, "op": _op_name(node.target), "args": _encode(node.args),
                          "kwargs": _encode(dict(node.kwargs))})
        elif node.op == "output":
            output = _encode(node.args[0])
    user_outputs = [s for s in signature.output_specs if s.kind.name == "USER_OUTPUT"]
    if len(user_outputs) != 1:
        raise GraphError(f"model(idx) must return one logits tensor, but its forward returns {len(user_outputs)} "
                         "values")
    position = signature.output_specs.index(user_outputs[0])
    description = {"format": FORMAT, "inputs": inputs, "tensors": tensors, "nodes": nodes,
                   "output": output[position]}
    return description, b"".join(chunks)


def _op_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[1]}.{target._overloadname}"
    raise GraphError(f"the model calls {target!r}, which the scorer cannot run; use torch operations only")


def _encode(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise GraphError(f"the model's graph holds a {type(value).__name__} argument, which the scorer cannot take")


# ---------------------------------------------------------------- the scorer's side
@dataclass
class _Call:
    name: str
    op: Any
    args: Any
    kwargs: Any
    release: tuple[str, ...] = ()  # results no later call needs: freed at once, so memory is reused


class Graph:
    """A checked graph: call it with token ids, get logits. Holds no state between calls."""

    def __init__(self, weights: dict[str, torch.Tensor], user_input: str, calls: list[_Call], output: Any) -> None:
        self._weights = weights
        self._user_input = user_input
        self._calls = calls
        self._output = output

    @classmethod
    def parse(cls, description: dict, data: bytes, device: torch.device) -> Graph:
        """Check a description from an untrusted process, every field of it; GraphError names the first fault."""
        if not isinstance(description, dict) or description.get("format") != FORMAT:
            raise GraphError(f"the model description is not format {FORMAT}")
        tensors = [_tensor(entry, data, device) for entry in _list(description, "tensors")]
        weights: dict[str, torch.Tensor] = {}
        user_inputs = []
        for entry in _list(description, "inputs"):
            if not isinstance(entry, dict):
                raise GraphError("an input of the model is not an object")
            name = _name(entry.get("name"))
            if entry.get("user") is True:
                user_inputs.append(name)
            elif isinstance(entry.get("tensor"), int) and 0 <= entry["tensor"] < len(tensors):
                weights[name] = tensors[entry["tensor"]]
            else:
                raise GraphError(f"input {name} names no tensor of the model")
        if len(user_inputs) != 1:
            raise GraphError(f"the model must take one input (the token ids), but takes {len(user_inputs)}")
        known = {*weights, user_inputs[0]}
        calls = []
        for entry in _list(description, "nodes"):
            if not isinstance(entry, dict):
                raise GraphError("a node of the model is not an object")
            name = _name(entry.get("name"))
            call = _Call(name, _resolve(entry.get("op")), _decode(entry.get("args", []), known, device),
                         _decode(entry.get("kwargs", {"dict": {}}), known, device))
            if name in known:
                raise GraphError(f"the model names {name} twice")
            known.add(name)
            calls.append(call)
        output = _decode(description.get("output"), known, device)
        _plan_releases(calls, keep={*weights, *_refs(output)})
        return cls(weights, user_inputs[0], calls, output)

    def __call__(self, idx: torch.Tensor) -> Any:
        values: dict[str, Any] = {**self._weights, self._user_input: idx}
        for call in self._calls:
            values[call.name] = call.op(*_bind(call.args, values), **_bind(call.kwargs, values))
            for name in call.release:
                del values[name]
        return _bind(self._output, values)


def _list(description: dict, key: str) -> list:
    value = description.get(key)
    if not isinstance(value, list):
        raise GraphError(f"the model description has no list {key!r}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise GraphError(f"{value!r} is not a name the scorer accepts")
    return value


def _tensor(entry: Any, data: bytes, device: torch.device) -> torch.Tensor:
    try:
        dtype = _DTYPES[entry["dtype"]]
        shape = [int(n) for n in entry["shape"]]
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
    except (KeyError, TypeError, ValueError):
        raise GraphError(f"a tensor of the model is described wrongly: {str(entry)[:100]}") from None
    expected = math.prod(shape) * dtype.itemsize
    if min(shape, default=0) < 0 or nbytes != expected or offset < 0 or offset + nbytes > len(data):
        raise GraphError(f"a tensor of shape {shape} and {dtype} does not fit its {nbytes} bytes at {offset}")
    flat = torch.frombuffer(bytearray(data[offset : offset + nbytes]), dtype=torch.uint8) if nbytes else \
        torch.zeros(0, dtype=torch.uint8)
    return flat.view(dtype).reshape(shape).to(device)


def _resolve(name: Any) -> Any:
    if name == "getitem":
        return operator.getitem
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) != 3 or parts[0] != "aten" or not all(_NAME.match(p) for p in parts):
        raise GraphError(f"the model calls {name!r}; the scorer runs aten operators only")
    if _REFUSED.match(parts[1]):
        raise GraphError(f"the model calls aten.{parts[1]}, which uses uninitialised memory or storage; compute "
                         "logits from the weights and the input only")
    try:
        op = getattr(getattr(torch.ops.aten, parts[1]), parts[2])
    except (AttributeError, RuntimeError):
        raise GraphError(f"the model calls {name}, which this torch does not have") from None
    if not isinstance(op, torch._ops.OpOverload):
        raise GraphError(f"{name} is not an operator")
    if parts[1] not in _STRING_MODES and any("str" in str(a.type) for a in op._schema.arguments):
        raise GraphError(f"the model calls {name}, which takes a string (a file name, text): the scorer runs "
                         "tensor operators only")
    if op._schema.is_mutable:
        raise GraphError(f"the model calls {name}, which writes into its arguments; a scored model may not change "
                         "its weights or keep state between calls (write forward without in-place updates)")
    return op


def _decode(value: Any, known: set[str], device: torch.device) -> Any:
    """Arguments as the operator takes them; node references stay `_Ref`s until the call."""
    if isinstance(value, list):
        return [_decode(v, known, device) for v in value]
    if isinstance(value, dict):
        if len(value) != 1:
            raise GraphError(f"an argument of the model is not understood: {str(value)[:100]}")
        (kind, inner), = value.items()
        if kind == "node":
            if inner not in known:
                raise GraphError(f"an argument refers to {inner!r} before it is computed")
            return _Ref(inner)
        if kind == "dict" and isinstance(inner, dict):
            return {_name(k): _decode(v, known, device) for k, v in inner.items()}
        table = {"dtype": _DTYPES, "layout": _LAYOUTS, "memory_format": _MEMORY_FORMATS}.get(kind)
        if table is not None and inner in table:
            return table[inner]
        if kind == "device" and inner in ("cpu", "cuda"):
            return device  # the scorer's own device: the model was exported on the same kind
        if kind == "float" and inner in ("inf", "-inf", "nan"):
            return float(inner)
        raise GraphError(f"an argument of the model is not understood: {str(value)[:100]}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise GraphError(f"an argument of the model is not understood: {str(value)[:100]}")


@dataclass(frozen=True)
class _Ref:
    name: str


def _refs(value: Any) -> list[str]:
    if isinstance(value, _Ref):
        return [value.name]
    if isinstance(value, list):
        return [name for v in value for name in _refs(v)]
    if isinstance(value, dict):
        return [name for v in value.values() for name in _refs(v)]
    return []


def _plan_releases(calls: list[_Call], keep: set[str]) -> None:
    """Each intermediate result is released by the last call that reads it (the weights and the output stay)."""
    last: dict[str, int] = {}
    for index, call in enumerate(calls):
        for name in (*_refs(call.args), *_refs(call.kwargs)):
            last[name] = index
    for index, call in enumerate(calls):
        call.release = tuple(sorted({n for n, i in last.items() if i == index} - keep))


def _bind(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, _Ref):
        return values[value.name]
    if isinstance(value, list):
        return [_bind(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _bind(v, values) for k, v in value.items()}
    return value
