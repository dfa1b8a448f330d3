"""``[runtime] threads`` (the CPU thread count of a pipeline call, restored afterwards, and its
default rule) and ``[runtime] compile`` (regional compilation of a denoiser's ``repeated_blocks``:
each block class compiled once, the output equal to eager's)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import sfumato
from sfumato import runtime
from sfumato.runtime import RuntimeSpec, compile_denoiser, default_threads, repeated_blocks
from sfumato_test_doubles import spec_dict


@pytest.fixture
def threads():
    """Restore the process's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- threads ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [(0, "greater than or equal to 1"), (-2, "greater than or equal to 1"),
                                            ("2", "valid integer"), (1.5, "valid integer"), (True, "valid integer")])
def test_threads_must_be_a_positive_integer(value, message):
    with pytest.raises(ValidationError, match=message):
        RuntimeSpec(threads=value)


def test_a_pipeline_call_runs_on_the_runtimes_threads_and_restores_the_process_count(doubles, threads):
    seen = []
    pipe = sfumato.load_pipeline(spec_dict(runtime={"allow_untrained": True, "threads": 1}))
    pipe.denoiser.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(3)
    pipe("ab", seed=0, steps=2)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 3  # the process's own setting, untouched outside the call


def test_the_thread_context_restores_the_count_when_the_call_raises(threads):
    torch.set_num_threads(3)
    with pytest.raises(RuntimeError, match="boom"):
        with RuntimeSpec(threads=2).threads_context():
            assert torch.get_num_threads() == 2
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("cores, at_import, expected", [(2, 2, 1), (1, 1, 1), (8, 8, 7), (16, 8, 8), (64, 32, 32)])
def test_the_default_leaves_one_core_free_and_never_exceeds_torchs_default(monkeypatch, threads, cores, at_import,
                                                                           expected):
    for name in runtime.THREAD_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_THREADS_AT_IMPORT", at_import)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(cores)))
    torch.set_num_threads(at_import)  # nobody chose a count
    assert default_threads() == expected
    assert RuntimeSpec().call_threads() == expected
    assert RuntimeSpec(threads=5).call_threads() == 5


def test_the_default_keeps_a_count_the_user_chose(monkeypatch, threads):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(runtime, "_THREADS_AT_IMPORT", 8)
    for name in runtime.THREAD_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(3)  # torch.set_num_threads after import
    assert default_threads() == 3
    torch.set_num_threads(8)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the environment's count
    assert default_threads() == 8


# -- compile: options -----------------------------------------------------------------------------

def test_compile_scope_is_validated():
    assert RuntimeSpec(compile=True).compile_scope == "blocks"
    assert RuntimeSpec(compile_scope="blocks").compile is False  # the default, as to_dict writes it
    with pytest.raises(ValidationError, match="compile_scope = 'denoiser' has no effect without compile = true"):
        RuntimeSpec(compile_scope="denoiser")
    with pytest.raises(ValidationError, match="'blocks' or 'denoiser'"):
        RuntimeSpec(compile=True, compile_scope="regional")
    with pytest.raises(ValidationError, match="valid boolean"):
        RuntimeSpec(compile="blocks")


# -- compile: regional ----------------------------------------------------------------------------

TEXT_UNET = {"type": "unet", "in_channels": 4, "out_channels": 4, "block_out_channels": [16, 32],
             "attention": [True, True], "attention_heads": 2, "cross_attention_dim": 12, "norm_num_groups": 8,
             "layers_per_block": 2}
DIT = {"type": "dit", "sample_size": 8, "in_channels": 4, "patch_size": 2, "num_layers": 4,
       "num_attention_heads": 2, "attention_head_dim": 8, "num_classes": 10}


def _unet_inputs(perturb):
    model = perturb(sfumato.build("denoiser", TEXT_UNET)).eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([900.0, 100.0])
    cond = sfumato.Conditioning(tokens=torch.randn(2, 5, 12, generator=g))
    return model, (x, t, cond)


class CountingBackend:
    """A ``torch.compile`` backend that runs the traced graph as it is and counts the graphs."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return graph.forward


def test_the_unet_and_the_dit_declare_their_repeated_blocks(perturb):
    unet, _ = _unet_inputs(perturb)
    blocks = repeated_blocks(unet)
    kinds = {type(b).__name__ for b in blocks}
    assert kinds == {"ResnetBlock", "SpatialTransformer"}
    # 2 levels x (2 down + 3 up) residual blocks, the middle block's 2; a transformer after each
    # residual block but the middle block's second: every one listed once, the outermost only
    assert sum(type(b).__name__ == "ResnetBlock" for b in blocks) == 12
    assert sum(type(b).__name__ == "SpatialTransformer" for b in blocks) == 11
    dit = sfumato.build("denoiser", DIT)
    assert [type(b).__name__ for b in repeated_blocks(dit)] == ["DiTBlock"] * 4


def test_identical_blocks_share_one_compiled_graph():
    torch._dynamo.reset()
    dit = sfumato.build("denoiser", DIT).eval()
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 500.0]), sfumato.Conditioning(labels=torch.tensor([1, 2]))
    with torch.no_grad():
        eager = dit(x, t, cond)
        backend = CountingBackend()
        compile_denoiser(dit, "blocks", backend=backend)
        compiled = dit(x, t, cond)
        dit(x, t, cond)
    assert backend.graphs == 1  # four DiTBlocks, one graph: the instances share the class's code
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)


@pytest.mark.slow  # dynamo traces a whole U-Net; test_identical_blocks_share_one_compiled_graph is the fast check
def test_compile_scope_denoiser_compiles_the_whole_forward_as_one_graph(perturb):
    torch._dynamo.reset()
    unet, inputs = _unet_inputs(perturb)
    with torch.no_grad():
        eager = unet(*inputs)
        backend = CountingBackend()
        compile_denoiser(unet, "denoiser", backend=backend)
        torch.testing.assert_close(unet(*inputs), eager, rtol=0, atol=1e-6)
    assert backend.graphs == 1
    assert not any("forward" in vars(block) for block in repeated_blocks(unet))  # blocks left alone


@pytest.mark.slow  # dynamo traces a whole U-Net; test_identical_blocks_share_one_compiled_graph is the fast check
def test_regional_compilation_of_the_unet_matches_eager_with_and_without_a_model_patch(perturb):
    torch._dynamo.reset()
    unet, inputs = _unet_inputs(perturb)
    point = next(name for name, kind in unet.perturbation_points().items() if kind == "self-attention")
    identity = {point: [sfumato.PointPatch(lambda q, k, v, attend, size: v, rows=slice(1, 2))]}
    with torch.no_grad():
        eager = unet(*inputs)
        with unet.patched(identity):
            eager_patched = unet(*inputs)
        compile_denoiser(unet, "blocks", backend="aot_eager")
        torch.testing.assert_close(unet(*inputs), eager, rtol=1e-5, atol=1e-5)
        with unet.patched(identity):
            torch.testing.assert_close(unet(*inputs), eager_patched, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(unet(*inputs), eager, rtol=1e-5, atol=1e-5)  # and back without it
    assert not torch.allclose(eager_patched, eager, atol=1e-3)  # the patch changes the output


def test_runtime_compile_and_compile_scope_choose_what_is_compiled(monkeypatch):
    compiled = []
    monkeypatch.setattr(runtime, "compile_denoiser", lambda model, scope: compiled.append((type(model).__name__, scope)))
    RuntimeSpec(compile=True).compile_denoiser(sfumato.build("denoiser", DIT))
    RuntimeSpec(compile=True, compile_scope="denoiser").compile_denoiser(sfumato.build("denoiser", DIT))
    RuntimeSpec().compile_denoiser(sfumato.build("denoiser", DIT))
    assert compiled == [("DiT", "blocks"), ("DiT", "denoiser")]


@pytest.mark.slow
def test_regional_compilation_with_inductor_matches_eager(perturb):
    torch._dynamo.reset()
    unet, inputs = _unet_inputs(perturb)
    with torch.no_grad():
        eager = unet(*inputs)
        compile_denoiser(unet, "blocks")
        torch.testing.assert_close(unet(*inputs), eager, rtol=1e-4, atol=1e-4)
