"""State dicts saved by torch.save, read without torch and without unpickling anything.

A pickle is a program: loading one may import and call anything, so an uploaded .pt file is never unpickled
here. Its data.pkl is only parsed (pickletools.genops) and run on a tiny stack machine that knows the few
globals torch.save writes for a state dict of tensors; any other global, and any opcode that would build an
arbitrary object, is refused before anything happens. Tensors come back as FileTensors: views of the raw
storages that the zip file holds uncompressed.
"""

from __future__ import annotations

import pickletools
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from workers.compute.file_tensors import ELEMENT_TYPES, FileTensor

# torch.save names a storage by its legacy typed class; the dtypes are safetensors' names for them.
STORAGE_DTYPES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}
_ORDERED_DICT = ("collections", "OrderedDict")
_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = ("torch._utils", "_rebuild_parameter")
# Everything a plain state dict's pickle may name: torch.save of {name: tensor} (or an nn.Module's state_dict()).
ALLOWED_GLOBALS = frozenset({_ORDERED_DICT, _REBUILD_TENSOR, _REBUILD_PARAMETER,
                             *(("torch", storage) for storage in STORAGE_DTYPES)})
# The first pickle of PyTorch's format before 1.6, which was not a zip file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
# torch.save's data.pkl takes about a hundred bytes a tensor; a larger one is not a state dict worth parsing, and
# a bare pickle is only read this far (a legacy file's first pickle, the magic number, is a few bytes).
MAX_PICKLE_BYTES = 16 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip entry's local header: signature ... name and extra lengths
_SCALARS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
# Opcodes whose argument is the value to push (numbers, strings, bytes).
_LITERALS = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES",
    "BINBYTES8",
})


# What someone whose file was refused can do. Never PyTorch's own advice to load with weights_only=False: that
# turns off the one protection a pickle has, and a user of the site cannot choose how it loads files anyway.
RESAVE_ADVICE = (
    "save the weights alone, as plain tensors: torch.save(ae.state_dict(), 'ae.pt') (no module, optimizer or "
    "custom objects), or convert the SAE to SAELens's cfg.json + sae_weights.safetensors "
    "(safetensors.torch.save_file)"
)


class CheckpointError(ValueError):
    """A .pt file that is not read; the message says why, without the file's name (the caller adds it)."""


class CheckpointRefusedError(CheckpointError):
    """Loading the file with pickle would import or call something other than a state dict's few globals."""


class CheckpointUnreadableError(CheckpointError):
    """The file is truncated, corrupt, or not something torch.save writes."""


class CheckpointNotStateDictError(CheckpointError):
    """The file holds plain data, but not a mapping of names to tensors."""


@dataclass(frozen=True)
class _Global:
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class _Storage:
    dtype: str
    key: str
    elements: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def torch_state_dict_read(path: Path) -> dict[str, FileTensor]:
    """The tensors of the state dict torch.save wrote to path, by name, as views into the file."""
    if not zipfile.is_zipfile(path):
        _not_a_zip_explained(path)
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive)
            state = _state_dict(_pickle_run(_entry_bytes(archive, f"{prefix}data.pkl")))
            big_endian = _is_big_endian(archive, prefix)
            with path.open("rb") as file:
                return {name: _file_tensor(path, file, archive, prefix, tensor, big_endian)
                        for name, tensor in state.items()}
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as error:
        raise CheckpointUnreadableError(f"its zip archive is damaged: {error}") from error


def _not_a_zip_explained(path: Path) -> NoReturn:
    """Raise why a file that is not a zip archive is not read: it is truncated, legacy, or a pickle that runs code."""
    with path.open("rb") as file:
        if file.read(4) == b"PK\x03\x04":
            raise CheckpointUnreadableError("it starts as a zip archive but its end is missing, so it is truncated")
        file.seek(0)
        first = _pickle_run(file.read(MAX_PICKLE_BYTES))  # refuses a pickle that would run code
    if first == LEGACY_MAGIC_NUMBER:
        raise CheckpointUnreadableError(
            "it is in PyTorch's format from before 1.6; load it and save it again with a current torch.save"
        )
    raise CheckpointUnreadableError("it is a bare pickle, not the zip archive torch.save writes")


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """The folder torch.save puts every entry in (the file's name when it was saved), with its slash."""
    names = archive.namelist()
    prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
    if not prefix or f"{prefix}data.pkl" not in names:
        raise CheckpointUnreadableError("it is a zip archive without <folder>/data.pkl, so torch.save did not write it")
    return prefix


def _entry_bytes(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    # Stored, as torch.save writes every entry: a compressed one could inflate to any size.
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointUnreadableError(f"its {name} is compressed or over {MAX_PICKLE_BYTES:,} bytes; "
                                        "torch.save writes neither")
    return archive.read(info)


def _is_big_endian(archive: zipfile.ZipFile, prefix: str) -> bool:
    if f"{prefix}byteorder" not in archive.namelist():
        return False  # torch.save wrote no byteorder before 1.11, and then only on little-endian machines
    order = _entry_bytes(archive, f"{prefix}byteorder").strip()
    if order not in (b"little", b"big"):
        raise CheckpointUnreadableError(f"its byteorder entry says {order[:20]!r}, not little or big")
    return order == b"big"


def _state_dict(value: object) -> dict[str, _Tensor]:
    if not isinstance(value, dict):
        raise CheckpointNotStateDictError(f"it holds a {type(value).__name__}, not a dict of tensors")
    for name, tensor in value.items():
        if not isinstance(name, str) or not isinstance(tensor, _Tensor):
            raise CheckpointNotStateDictError(f"its entry {str(name)[:80]!r} is not a tensor")
    return value


def _file_tensor(path: Path, file: IO[bytes], archive: zipfile.ZipFile, prefix: str, tensor: _Tensor,
                 big_endian: bool) -> FileTensor:
    storage = tensor.storage
    info = archive.getinfo(f"{prefix}data/{storage.key}")
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointUnreadableError(f"its storage {storage.key} is compressed, which torch.save never does")
    if info.file_size != storage.elements * ELEMENT_TYPES[storage.dtype].itemsize:
        raise CheckpointUnreadableError(f"its storage {storage.key} has {info.file_size} bytes, not the "
                                        f"{storage.elements} elements of {storage.dtype} its pickle describes")
    located = FileTensor(path=path, dtype=storage.dtype, storage_start=_entry_data_start(file, info),
                         storage_elements=storage.elements, shape=tensor.shape, strides=tensor.strides,
                         offset=tensor.offset, big_endian=big_endian)
    if not located.fits_storage():
        raise CheckpointUnreadableError(f"a tensor of shape {list(tensor.shape)} reaches past its storage")
    return located


def _entry_data_start(file: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where an uncompressed zip entry's bytes begin: after its local header, whose extra field pads to alignment."""
    file.seek(info.header_offset)
    header = file.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or not header.startswith(b"PK\x03\x04"):
        raise CheckpointUnreadableError(f"the zip entry {info.filename} has no local header")
    _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    file.seek(0, 2)
    if start + info.file_size > file.tell():
        raise CheckpointUnreadableError(f"the zip entry {info.filename} is truncated")
    return int(start)


def _pickle_run(data: bytes) -> object:
    """The value the pickle builds, computed on a stack machine that only knows what a state dict needs."""
    machine = _StateDictMachine()
    try:
        for opcode, argument, _ in pickletools.genops(data):
            machine.step(opcode.name, argument)
    except (ValueError, IndexError, KeyError, TypeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointUnreadableError(f"its pickle is truncated or corrupt ({error})") from error
    return machine.result


class _StateDictMachine:
    """Just enough of pickle's virtual machine for dicts, tuples, lists, numbers and strings, and torch's tensors.

    Nothing is imported or called: a global is a name, and REDUCE builds one of three known values.
    """

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.result: object = None

    def step(self, name: str, argument: Any) -> None:
        if name in _LITERALS:
            self.stack.append(argument)
        elif name in _SCALARS:
            self.stack.append(_SCALARS[name])
        elif name in ("PROTO", "FRAME"):
            pass
        elif name == "STOP":
            self.result = self.stack.pop()
        elif not self._memo_step(name, argument) and not self._container_step(name):
            self._object_step(name, argument)

    def _memo_step(self, name: str, argument: Any) -> bool:
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[argument] = self.stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            self.stack.append(self.memo[argument])
        elif name == "MARK":
            self.marks.append(len(self.stack))
        elif name == "POP":
            self.stack.pop()
        elif name == "POP_MARK":
            self._pop_to_mark()
        elif name == "DUP":
            self.stack.append(self.stack[-1])
        else:
            return False
        return True

    def _container_step(self, name: str) -> bool:
        stack = self.stack
        if name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            count = ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3").index(name)
            items = stack[len(stack) - count :]
            del stack[len(stack) - count :]
            stack.append(tuple(items))
        elif name == "TUPLE":
            stack.append(tuple(self._pop_to_mark()))
        elif name in ("EMPTY_LIST", "LIST"):
            stack.append([] if name == "EMPTY_LIST" else self._pop_to_mark())
        elif name == "APPEND":
            item = stack.pop()
            self._top(list).append(item)
        elif name == "APPENDS":
            items = self._pop_to_mark()
            self._top(list).extend(items)
        elif name in ("EMPTY_DICT", "DICT"):
            stack.append({} if name == "EMPTY_DICT" else _pairs(self._pop_to_mark()))
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            self._top(dict)[key] = value
        elif name == "SETITEMS":
            self._top_dict_after_mark().update(_pairs(self._pop_to_mark()))
        else:
            return False
        return True

    def _object_step(self, name: str, argument: Any) -> None:
        if name == "GLOBAL":
            module, _, attribute = str(argument).partition(" ")
            self.stack.append(_global(module, attribute))
        elif name == "STACK_GLOBAL":
            attribute, module = self.stack.pop(), self.stack.pop()
            self.stack.append(_global(str(module), str(attribute)))
        elif name == "REDUCE":
            arguments, function = self.stack.pop(), self.stack.pop()
            self.stack.append(_reduce(function, arguments))
        elif name == "BINPERSID":
            self.stack.append(_storage(self.stack.pop()))
        elif name == "BUILD":
            state = self.stack.pop()
            # Only a state_dict()'s OrderedDict carries state: its _metadata (module versions), no tensors.
            if not isinstance(self.stack[-1], dict) or not isinstance(state, dict):
                raise CheckpointRefusedError("it sets the state of an object, which a state dict never needs")
        else:
            raise CheckpointRefusedError(f"it uses the pickle instruction {name}, which builds arbitrary objects")

    def _pop_to_mark(self) -> list[Any]:
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        return items

    def _top(self, kind: type[Any]) -> Any:
        if not isinstance(self.stack[-1], kind):
            raise CheckpointUnreadableError(f"its pickle adds items to a {type(self.stack[-1]).__name__}")
        return self.stack[-1]

    def _top_dict_after_mark(self) -> dict[Any, Any]:
        target = self.stack[self.marks[-1] - 1]
        if not isinstance(target, dict):
            raise CheckpointUnreadableError(f"its pickle sets items on a {type(target).__name__}")
        return target


def _pairs(items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise CheckpointUnreadableError("its pickle builds a dict from an odd number of items")
    return dict(zip(items[::2], items[1::2], strict=True))


def _global(module: str, name: str) -> _Global:
    if (module, name) not in ALLOWED_GLOBALS:
        raise CheckpointRefusedError(f"it would import {module}.{name}")
    return _Global(module, name)


def _reduce(function: object, arguments: object) -> object:
    if not isinstance(function, _Global) or not isinstance(arguments, tuple):
        raise CheckpointRefusedError("it calls something that is not one of torch.save's rebuild functions")
    key = (function.module, function.name)
    if key == _ORDERED_DICT and not arguments:
        return OrderedDict()
    if key == _REBUILD_TENSOR:
        return _tensor(arguments)
    if key == _REBUILD_PARAMETER and len(arguments) == 3 and isinstance(arguments[0], _Tensor):
        return arguments[0]  # an nn.Parameter is its tensor; requires_grad and hooks do not matter here
    raise CheckpointRefusedError(f"it would call {function} with arguments a state dict never has")


def _tensor(arguments: tuple[Any, ...]) -> _Tensor:
    """_rebuild_tensor_v2(storage, offset, shape, strides, requires_grad, hooks[, metadata]) as a description."""
    if len(arguments) not in (6, 7) or any(arguments[6:]):
        raise CheckpointNotStateDictError("a tensor carries Python attributes, which a plain tensor has not")
    storage, offset, shape, strides, _, hooks = arguments[:6]
    if not isinstance(storage, _Storage) or not _int(offset) or not _ints(shape) or not _ints(strides):
        raise CheckpointUnreadableError("a tensor's record is malformed")
    if hooks:
        raise CheckpointNotStateDictError("a tensor carries backward hooks, which a plain tensor has not")
    return _Tensor(storage=storage, offset=offset, shape=shape, strides=strides)


def _storage(persistent_id: object) -> _Storage:
    """('storage', torch.<Type>Storage, key, location, elements): where torch.save put a storage's bytes."""
    if not isinstance(persistent_id, tuple) or len(persistent_id) != 5 or persistent_id[0] != "storage":
        raise CheckpointUnreadableError("a persistent reference is not one of torch.save's storages")
    _, storage_type, key, _, elements = persistent_id
    if not isinstance(storage_type, _Global) or storage_type.name not in STORAGE_DTYPES:
        raise CheckpointUnreadableError("a storage has no known element type")
    if not isinstance(key, str) or not _int(elements):
        raise CheckpointUnreadableError("a storage's record is malformed")
    return _Storage(dtype=STORAGE_DTYPES[storage_type.name], key=key, elements=elements)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ints(value: object) -> bool:
    return isinstance(value, tuple) and all(_int(item) for item in value)
