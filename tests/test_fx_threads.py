"""Graph-mode int8 traces with torch.fx, which patches ``nn.Module.__call__`` for the whole process while it traces:
a model running in another thread of the same server at that moment (one student's Explore measurement while
another's Advise traces static int8 of MiniLM) must run normally, not be routed into the trace."""

from __future__ import annotations

import threading

import torch
from torch import nn

from compression_core.quantize.fx_tracer import trace


class Gated(nn.Module):
    """A model whose forward, while it is traced, lets another thread run and waits for it to finish."""

    def __init__(self, started: threading.Event, finished: threading.Event):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)
        self.started, self.finished = started, finished

    def forward(self, x):
        h = self.fc1(x)
        self.started.set()  # mid-trace: fx's patches are in place now
        self.finished.wait(30)
        return self.fc2(torch.relu(h))


def _beside_a_trace(trace_gated):
    """Run ``trace_gated(Gated model)`` while another thread calls a plain model mid-trace; returns the trace's result
    after checking the other thread's output equals the same model's output before."""
    torch.manual_seed(0)
    started, finished = threading.Event(), threading.Event()
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1)).eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        expected = other(x)
    got: dict = {}

    def elsewhere():
        started.wait(30)
        try:
            with torch.no_grad():
                got["out"] = other(x)
        except Exception as e:  # what the thread saw, checked below
            got["error"] = e
        finally:
            finished.set()

    t = threading.Thread(target=elsewhere)
    t.start()
    result = trace_gated(Gated(started, finished).eval())
    t.join(30)
    assert "error" not in got, got.get("error")
    assert torch.equal(got["out"], expected)
    return result


def test_a_model_in_another_thread_runs_normally_while_one_is_traced():
    gm, _ = _beside_a_trace(lambda m: trace(m, (torch.randn(2, 4),), {}))
    assert {n.target for n in gm.graph.nodes if n.op == "call_module"} >= {"fc1", "fc2"}  # the trace itself is whole


def test_a_model_in_another_thread_runs_normally_while_prepare_fx_traces():
    """prepare_fx traces again with torch's own QuantizationTracer: guarded the same way."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx
    # (importing compression_core.quantize.fx_tracer above installed the guarded tracer)

    prepared = _beside_a_trace(lambda m: prepare_fx(m, get_default_qconfig_mapping(), (torch.randn(2, 4),)))
    assert prepared is not None
