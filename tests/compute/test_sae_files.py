"""The upload's torch-free reading of SAE files agrees with torch: the same tensors, the same bad values, and the
same ae.pt files refused, with nothing in them ever run."""

import builtins
import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests import factories
from workers.compute import file_tensors
from workers.compute.file_tensors import FileTensor
from workers.compute.sae import ARCHITECTURES, sae_load
from workers.compute.sae_files import (
    ARCHITECTURE_TENSORS,
    CFG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    WEIGHTS_FILENAME,
    SaeFormatError,
    sae_files_check,
)
from workers.compute.torch_checkpoint import (
    CheckpointRefusedError,
    CheckpointUnreadableError,
    torch_state_dict_read,
)

ROOT = Path(__file__).resolve().parents[2]
D_IN, D_SAE = 8, 32
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def finite_edges(dtype: torch.dtype) -> torch.Tensor:
    """The dtype's most extreme finite values (largest, smallest normal, a subnormal, signed zeros): none is bad."""
    info = torch.finfo(dtype)
    return torch.tensor([info.max, -info.max, info.tiny, -info.tiny, info.tiny / 4, 0.0, -0.0], dtype=dtype)


def as_torch(tensor: FileTensor) -> torch.Tensor:
    array = np.asarray(tensor.array(), order="C")
    if tensor.dtype == "BF16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def sae_lens_dir(directory: Path, dtype: torch.dtype, spoil: dict[tuple[int, int], float] | None = None) -> Path:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=generator), "W_dec": torch.randn(D_SAE, D_IN, generator=generator),
        "b_enc": torch.randn(D_SAE, generator=generator), "b_dec": torch.randn(D_IN, generator=generator),
    }
    tensors = {name: tensor.to(dtype) for name, tensor in tensors.items()}
    edges = finite_edges(dtype)
    tensors["W_enc"][0, : len(edges)] = edges
    for (row, column), value in (spoil or {}).items():
        tensors["W_enc"][row, column] = value
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_FILENAME)
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "metadata": {"hook_name": factories.TINY_HOOK}}
    (directory / CFG_FILENAME).write_text(json.dumps(cfg))
    return directory


def check_message(directory: Path) -> str:
    with pytest.raises(SaeFormatError) as raised:
        sae_files_check(directory)
    return str(raised.value)


def test_the_checks_import_neither_torch_nor_transformers() -> None:
    code = ("import sys, workers.compute.sae_files, workers.compute.model_source, workers.compute.corpus; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'transformer_lens'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}"})
    assert result.stdout.strip() == "[]"


def test_every_architecture_that_is_checked_can_be_encoded() -> None:
    assert {name: spec.tensor_dims for name, spec in ARCHITECTURES.items()} == ARCHITECTURE_TENSORS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -float("nan")], ids=str)
def test_a_bad_value_is_found_in_every_dtype_as_torch_finds_it(tmp_path: Path, dtype: str, bad: float) -> None:
    directory = sae_lens_dir(tmp_path, DTYPES[dtype], spoil={(3, 4): bad, (7, 31): bad})
    expected = int((~torch.isfinite(sae_load(directory, dtype=DTYPES[dtype]).W_enc)).sum())
    assert expected == 2
    assert check_message(directory) == "tensor W_enc has 2 NaN or infinite values"


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_finite_values_pass(tmp_path: Path, dtype: str) -> None:
    assert sae_files_check(sae_lens_dir(tmp_path, DTYPES[dtype])).d_sae == D_SAE


def test_values_are_counted_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_tensors, "SCAN_CHUNK_ELEMENTS", 7)  # W_enc's 256 values in 37 reads
    spoil = {(row, column): float("nan") for row in range(D_IN) for column in (0, 6, 7, 13, 31)}
    message = check_message(sae_lens_dir(tmp_path, torch.bfloat16, spoil))
    assert message == f"tensor W_enc has {len(spoil)} NaN or infinite values"


def test_the_loader_reads_the_same_tensors_as_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    directory = sae_lens_dir(tmp_path, torch.bfloat16)
    stored = load_file(directory / WEIGHTS_FILENAME)
    sae = sae_load(directory, dtype=torch.bfloat16)
    for name, tensor in stored.items():
        assert torch.equal(sae.tensors[name], tensor), name


def state_dict_make() -> dict[str, torch.Tensor]:
    """Every dtype and layout a state dict may hold: views with offsets, transposes, strides, parameters, 0-d."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=generator)
    return collections.OrderedDict({
        "f32": base, "f16": base.half(), "bf16": base.bfloat16(), "f64": base.double(),
        "i64": torch.arange(7), "i32": torch.arange(5, dtype=torch.int32), "bool": base > 0,
        "offset_view": base[2:], "transposed": base.bfloat16().T, "every_other": base[:, ::2],
        "parameter": torch.nn.Parameter(torch.randn(3, generator=generator)), "scalar": torch.tensor(5),
        "empty": torch.zeros(0, 4),
    })


def test_ae_pt_is_read_as_torch_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save(state_dict_make(), path)
    expected = torch.load(path, weights_only=True)
    ours = torch_state_dict_read(path)
    assert list(ours) == list(expected)
    for name, tensor in expected.items():
        assert ours[name].dtype == {torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                                    torch.bool: "BOOL", **{v: k for k, v in DTYPES.items()}}[tensor.dtype]
        assert torch.equal(as_torch(ours[name]), tensor.detach()), name


def test_a_modules_state_dict_is_read(tmp_path: Path) -> None:
    module = torch.nn.Linear(4, 3)
    path = tmp_path / "linear.pt"
    torch.save(module.state_dict(), path)  # an OrderedDict with _metadata, which pickle sets with BUILD
    ours = torch_state_dict_read(path)
    assert torch.equal(as_torch(ours["weight"]), module.weight.detach())


def test_bad_values_of_a_strided_view_are_its_own(tmp_path: Path) -> None:
    base = torch.zeros(4, 6)
    base[:, 1::2] = float("nan")  # the columns the view skips
    base[2, 4] = float("inf")
    path = tmp_path / "strided.pt"
    torch.save({"view": base[:, ::2]}, path)
    assert torch_state_dict_read(path)["view"].nonfinite_count() == 1


def test_a_nan_in_a_bf16_ae_pt_is_found(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="AutoEncoder")
    state = torch.load(directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME, weights_only=True)
    state = {name: tensor.bfloat16() for name, tensor in state.items()}
    state["encoder.weight"][5, 1] = float("nan")
    torch.save(state, directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME)
    assert check_message(directory) == "tensor W_enc has 1 NaN or infinite values"
    assert torch.equal(sae_load(directory, dtype=torch.bfloat16).W_dec, state["decoder.weight"].T)


class RunsCode:
    """Unpickling this calls builtins.exec, as a malicious ae.pt would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class Plain:
    """An ordinary object: torch.save pickles its class by name."""


def _zip_with_code(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)


def _zip_with_code_by_protocol_4(path: Path, marker: Path) -> None:
    torch.save({"payload": RunsCode(marker)}, path, pickle_protocol=4)


def _bare_pickle_with_code(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(RunsCode(marker)))


def _a_plain_object(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(2), "config": Plain()}, path)


def _a_whole_module(path: Path, marker: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), path)


@pytest.mark.parametrize("write", [_zip_with_code, _zip_with_code_by_protocol_4, _bare_pickle_with_code,
                                   _a_plain_object, _a_whole_module])
def test_files_torch_refuses_to_load_safely_are_refused_unrun(tmp_path: Path, write: Any) -> None:
    path, marker = tmp_path / "ae.pt", tmp_path / "ran"
    write(path, marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    with pytest.raises(CheckpointRefusedError, match="would import"):
        torch_state_dict_read(path)
    assert not marker.exists()


def test_a_legacy_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ae.pt"
    torch.save({"weight": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointUnreadableError, match=r"from before 1\.6; load it and save it again"):
        torch_state_dict_read(path)


def test_compressed_entries_are_refused(tmp_path: Path) -> None:
    stored, compressed = tmp_path / "stored.pt", tmp_path / "compressed.pt"
    torch.save({"weight": torch.zeros(64)}, stored)
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    with pytest.raises(CheckpointUnreadableError, match="compressed"):
        torch_state_dict_read(compressed)


def test_a_storage_shorter_than_its_tensor_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(16)}, buffer)
    path = tmp_path / "short.pt"
    path.write_bytes(buffer.getvalue())
    with zipfile.ZipFile(path) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    storage = next(name for name in entries if "/data/" in name)
    entries[storage] = entries[storage][:32]
    with zipfile.ZipFile(path, "w") as target:
        for name, data in entries.items():
            target.writestr(name, data)
    with pytest.raises(CheckpointUnreadableError, match="has 32 bytes, not the 16 elements of F32"):
        torch_state_dict_read(path)


def test_an_unknown_architecture_names_every_one_the_encoders_support(tmp_path: Path) -> None:
    directory = sae_lens_dir(tmp_path / "sae", torch.float32)
    cfg = json.loads((directory / CFG_FILENAME).read_text())
    (directory / CFG_FILENAME).write_text(json.dumps({**cfg, "architecture": "matching_pursuit"}))
    message = check_message(directory)
    assert message.endswith(f"supported architectures: {', '.join(ARCHITECTURES)}")
    assert "gated" in ARCHITECTURES


def _state_running_code(marker: Path) -> object:
    return {"encoder.weight": torch.zeros(D_SAE, D_IN), "payload": RunsCode(marker)}


def _state_not_a_dict(marker: Path) -> object:
    return [torch.zeros(D_SAE, D_IN)]


@pytest.mark.parametrize("state", [_state_running_code, _state_not_a_dict])
def test_a_refused_ae_pt_says_how_to_save_it_again_never_to_load_it_unsafely(tmp_path: Path, state: Any) -> None:
    reference = factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path / "trainer_0", reference, dict_class="AutoEncoder")
    marker = tmp_path / "ran"
    torch.save(state(marker), directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME)
    message = check_message(directory)
    assert "torch.save(ae.state_dict(), 'ae.pt')" in message
    assert "cfg.json + sae_weights.safetensors" in message
    assert "weights_only" not in message
    assert not marker.exists()
