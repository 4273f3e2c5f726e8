"""Convert a model folder (or a LoRA adapter, merged first) to GGUF, verified in llama.cpp when available.

Examples:
  python scripts/convert_to_gguf.py runs/my-run/export/merged --output model-q8_0.gguf
  python scripts/convert_to_gguf.py runs/my-run/final-model --output model-f16.gguf --quantization f16 --modelfile --num-ctx 2048
  python scripts/convert_to_gguf.py merged/ --output model-q4_k_m.gguf --quantization q4_k_m --llama-cpp-dir ~/llama.cpp

f32, f16, bf16, q8_0 and q4_0 need only the gguf package; K-quants (q4_k_m, q5_k_m, ...) need
llama-cpp-python (pip install 'entity-training[gguf]') or --llama-cpp-dir. --modelfile also
writes an Ollama Modelfile whose TEMPLATE reproduces the model's chat template.
Exit codes: 0 ok, 2 bad input, 1 failure.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entity_training.tools import call_tool  # noqa: E402
from plugins.export.script_support import run_script  # noqa: E402

QUANTIZATIONS = [
    "f32",
    "f16",
    "bf16",
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q2_k",
    "q3_k_s",
    "q3_k_m",
    "q3_k_l",
    "q4_k_s",
    "q4_k_m",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model_dir", help="model folder with config.json and safetensors weights, or a LoRA adapter folder"
    )
    parser.add_argument("--output", required=True, help="the .gguf file to write (replaced only when verified)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="q8_0", help="GGUF tensor type")
    parser.add_argument("--llama-cpp-dir", help="llama.cpp build folder with llama-quantize (for K-quants)")
    parser.add_argument("--pre-tokenizer", help="override llama.cpp's pre-tokenizer name (detected by default)")
    parser.add_argument("--no-verify", action="store_true", help="skip running the file in llama.cpp")
    parser.add_argument("--modelfile", action="store_true", help="also write an Ollama Modelfile next to the GGUF")
    parser.add_argument(
        "--num-ctx", type=int, default=2048, help="Modelfile num_ctx (use the training sequence length)"
    )
    parser.add_argument("--system", help="Modelfile SYSTEM prompt")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> dict:
    result = call_tool(
        "model_export",
        "convert_to_gguf",
        model_dir=args.model_dir,
        output_file=args.output,
        quantization=args.quantization,
        llama_cpp_dir=args.llama_cpp_dir,
        pre_tokenizer=args.pre_tokenizer,
        verify=not args.no_verify,
    )
    if args.modelfile:
        result["modelfile"] = call_tool(
            "model_export",
            "write_modelfile",
            gguf_file=args.output,
            tokenizer_dir=args.model_dir,
            num_ctx=args.num_ctx,
            system_prompt=args.system,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_script(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
