"""A hand-made model graph, sent instead of the exported one: it reads a file (the process's own
environment here; a dataset where one is visible) while it is scored."""
from tests.adversarial.harness import attack_source, run
from trainer.result import Status

CRAFT = """
import trainer.session as session_module
real_export = session_module.export_model
def crafted(model, example):
    description, data = real_export(model, example)
    description["nodes"].insert(0, {"name": "stolen", "op": "aten.from_file.default",
                                    "args": ["/proc/self/environ"], "kwargs": {"dict": {"size": 64}}})
    return description, data
session_module.export_model = crafted
"""


def test_a_graph_that_reads_files_is_refused(spec):
    result = run(attack_source(before_finish=CRAFT), spec)
    assert result.status is Status.INVALID and "takes a string" in result.message
