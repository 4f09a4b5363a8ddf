"""Engines run on ONNX Runtime sessions bound to fixed buffers (the CUDA-graph path of ort-cuda engines)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from polygraphy.backend.onnxrt import OnnxrtRunner

from bigain_export import BiGainConfig
from bigain_export.backends.ort import make_ort_runner, make_session
from bigain_export.backends.ort_bound_runner import BoundOrtRunner
from bigain_export.engine.build import build_engine, drift_feeds, measure_drift
from bigain_export.errors import EngineError
from tiny import cpu_engine, responsive_dit

CONFIG = BiGainConfig.preset("bigain-merge")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    denoiser = responsive_dit()
    return denoiser, cpu_engine(denoiser, tmp_path_factory.mktemp("e") / "engine", CONFIG)


def test_a_bound_session_gives_what_the_plain_runner_gives_call_after_call(built):
    denoiser, engine = built
    onnx_path = engine.path / "model.onnx"
    feeds = drift_feeds(engine.spec, 3, denoiser.num_classes)
    with OnnxrtRunner(lambda: make_session(onnx_path, "ort-cpu")) as plain, \
            BoundOrtRunner(lambda: make_session(onnx_path, "ort-cpu"), device="cpu") as bound:
        outputs = []
        for feed in feeds:  # new inputs each call go through the same buffers
            want = plain.infer(feed)[engine.spec.output]
            got = bound.infer(feed)[engine.spec.output]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            outputs.append(got)
        # each kept output is still its own call's (host copies, not views of the reused buffers):
        # with views, every kept output would read as the last call's
        assert not np.allclose(outputs[0], outputs[-1])
        np.testing.assert_allclose(outputs[0], plain.infer(feeds[0])[engine.spec.output], rtol=1e-6, atol=1e-6)


def test_a_bound_session_refuses_a_feed_of_another_shape_type_or_name_in_one_line(built):
    denoiser, engine = built
    feed = drift_feeds(engine.spec, 1, denoiser.num_classes)[0]
    name = "sample"  # a wrong shape, dtype or absence of this input
    bad = {"shape": {**feed, name: np.concatenate([feed[name], feed[name]])},
           "type": {**feed, name: feed[name].astype(np.float64)},
           "name": {k: v for k, v in feed.items() if k != name}}
    with BoundOrtRunner(lambda: make_session(engine.path / "model.onnx", "ort-cpu"), device="cpu", name="b") as bound:
        for kind, wrong in bad.items():
            with pytest.raises(EngineError) as caught:
                bound.infer(wrong, check_inputs=False)  # the runner's own check, not Polygraphy's
            assert len(str(caught.value).splitlines()) == 1 and str(caught.value).startswith("b: "), kind
            assert name in str(caught.value), kind


def test_a_bound_session_refuses_a_graph_with_a_dynamic_shape_in_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    runner = BoundOrtRunner(lambda: make_session(path, "ort-cpu"), device="cpu", name="b")
    with pytest.raises(EngineError, match=r"^b: input 'x' is tensor\(float\) of shape \['batch', 3\]; a bound session "
                                          r"needs static shapes"):
        runner.activate()


@pytest.mark.parametrize("call, says", [
    (lambda e: make_ort_runner(e.path / "model.onnx", "ort-cpu", cuda_graph=True),
     "cuda_graph=True needs an 'ort-cuda' engine; this one runs on 'ort-cpu'"),
    (lambda e: make_ort_runner(e.path / "model.onnx", "ort-cuda", cuda_graph="yes"),
     "cuda_graph='yes' is not allowed; allowed: True or False"),
    (lambda e: e.runner(cuda_graph=True), "cuda_graph=True needs an 'ort-cuda' engine"),
])
def test_a_cuda_graph_is_refused_where_it_cannot_run_before_any_session(built, call, says):
    with pytest.raises(EngineError, match=says.replace("(", r"\(").replace(")", r"\)")):
        call(built[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_an_ort_cuda_engine_replays_its_cuda_graph_with_each_call_s_inputs(tmp_path):
    from bigain_export.backends.ort import cuda_available

    if not cuda_available():
        pytest.skip("onnxruntime-gpu is not installed")
    denoiser = responsive_dit()
    engine, _ = build_engine(denoiser, CONFIG, tmp_path / "engine", backend="ort-cuda", batch=2, drift_feeds_count=1)
    feeds = drift_feeds(engine.spec, 3, denoiser.num_classes)
    with engine.runner() as plain, engine.runner(cuda_graph=True) as graph:
        outputs = []
        for feed in feeds:
            want = plain.infer(feed)[engine.spec.output]
            got = graph.infer(feed)[engine.spec.output]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
            outputs.append(got)
        assert not np.allclose(outputs[0], outputs[1])
    # and the drift check through that runtime (bigain-export compare --cuda-graph)
    report = measure_drift(denoiser, CONFIG, engine, feeds=2, cuda_graph=True)
    assert report.passed, report.summary()
