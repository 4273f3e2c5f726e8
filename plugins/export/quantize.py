"""K-quants (and other llama.cpp-only types) through llama.cpp's quantizer.

Two back ends, in order: the ``llama-cpp-python`` binding (``llama_model_quantize``, no binary
needed; the ``[gguf]`` extra installs it) or a ``llama-quantize`` binary in a user-supplied
llama.cpp folder. We never build llama.cpp ourselves.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from entity_training import ConfigError, PluginError, Problem

# name in our config -> llama.cpp ftype (enum llama_ftype) and the name llama-quantize takes
LLAMA_CPP_QUANTIZATIONS: dict[str, tuple[int, str]] = {
    "q4_1": (3, "Q4_1"),
    "q5_0": (8, "Q5_0"),
    "q5_1": (9, "Q5_1"),
    "q2_k": (10, "Q2_K"),
    "q3_k_s": (11, "Q3_K_S"),
    "q3_k_m": (12, "Q3_K_M"),
    "q3_k_l": (13, "Q3_K_L"),
    "q4_k_s": (14, "Q4_K_S"),
    "q4_k_m": (15, "Q4_K_M"),
    "q5_k_s": (16, "Q5_K_S"),
    "q5_k_m": (17, "Q5_K_M"),
    "q6_k": (18, "Q6_K"),
}
HOW_TO_GET_LLAMA_CPP = (
    "Install the optional extra (pip install 'entity-training[gguf]', which builds llama-cpp-python) "
    "or set llama_cpp_dir to a llama.cpp build folder containing llama-quantize "
    "(https://github.com/ggml-org/llama.cpp)."
)


def llama_cpp_python_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def find_llama_quantize(llama_cpp_dir: str | os.PathLike | None) -> Path | None:
    """The ``llama-quantize`` binary in a llama.cpp folder (top level, bin/ or build/bin/)."""
    if not llama_cpp_dir:
        return None
    root = Path(llama_cpp_dir).expanduser()
    for candidate in (
        root / "llama-quantize",
        root / "bin" / "llama-quantize",
        root / "build" / "bin" / "llama-quantize",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_quantizer_available(quantizations: list[str], llama_cpp_dir: str | None) -> str | None:
    """Fail before any work when a llama.cpp-only type is asked for and no llama.cpp is at hand.

    Returns the back end that will be used ("llama-cpp-python", a binary path) or None if not needed.
    """
    needed = [q for q in quantizations if q in LLAMA_CPP_QUANTIZATIONS]
    if not needed:
        return None
    if llama_cpp_dir:
        binary = find_llama_quantize(llama_cpp_dir)
        if binary is None:
            raise ConfigError(
                Problem(
                    f"llama_cpp_dir {llama_cpp_dir!r} has no executable llama-quantize (looked in the folder, "
                    "bin/ and build/bin/). Build llama.cpp there (cmake -B build && cmake --build build) or "
                    "point llama_cpp_dir at the build.",
                    path="llama_cpp_dir",
                )
            )
        return str(binary)
    if llama_cpp_python_available():
        return "llama-cpp-python"
    raise ConfigError(
        Problem(
            f"gguf_quantization {needed} needs llama.cpp's quantizer, and none is available. "
            + HOW_TO_GET_LLAMA_CPP
            + " Or choose f16, bf16, q8_0 or q4_0, which need nothing extra.",
            path="gguf_quantization",
        )
    )


def quantize_gguf(source: Path, target: Path, quantization: str, *, llama_cpp_dir: str | None = None) -> None:
    """Quantize an f16/f32 GGUF file into ``target`` with llama.cpp."""
    ftype, type_name = LLAMA_CPP_QUANTIZATIONS[quantization]
    backend = check_quantizer_available([quantization], llama_cpp_dir)
    if backend == "llama-cpp-python":
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = os.cpu_count() or 1
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
        if status != 0:
            raise PluginError(f"llama.cpp failed to quantize {source.name} to {type_name} (status {status})")
        return
    completed = subprocess.run(
        [str(backend), str(source), str(target), type_name], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout)[-1500:]
        raise PluginError(f"{backend} failed to quantize {source.name} to {type_name}:\n{tail}")
