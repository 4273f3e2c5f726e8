"""ModelExportPlugin (OUTPUT): the trained model in the formats other tools load, each verified.

Formats: ``huggingface`` (the adapter or full model + tokenizer, as trained), ``merged`` (LoRA
merged into a 16-bit base on CPU), ``safetensors`` (merged/full weights in one 16-bit file),
``gguf`` (written with the gguf package; K-quants through llama.cpp) and ``ollama`` (a Modelfile
next to the first GGUF). Every folder gets a model card, is written to a staging folder and
renamed into place only when complete and verified against the trained model. Its tools
``merge_adapter``, ``convert_to_gguf`` and ``write_modelfile`` run the same code on folders given by
path: scripts/ call them through ``entity_training.tools.call_tool``, plugins through ``context.use_tool``.

Contradictions with the training, found when the workflow is loaded (``check_workflow``):
``merged`` of a full fine-tune is skipped (the ``huggingface`` export already holds the whole
model; it is added when missing), ``ollama`` adds ``gguf``, a QLoRA adapter is merged into the
unquantized base, and settings of formats not exported are ignored: each is announced in the plan
and in the export report. Full-weight formats of an adapter with ``merge_adapter: false`` are refused.

Raises:
    ConfigError: (exit 2, before any work) a K-quant with no llama.cpp, GGUF for an unsupported
        architecture, full-weight formats of an adapter with ``merge_adapter: false``,
        ``push_to_hub`` without a token, an output path that is a file, not enough disk space for a merge.
    PluginError: an artefact failed verification (nothing is published in its place).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from entity_training import PluginConfig, Stage, ToolPlugin, tool
from entity_training.plugin import Finding, Plugin
from plugins import memory_keys as keys
from plugins.export.formats import FULL_WEIGHT_FORMATS, formats_for, merge_refused_message

ExportFormat = Literal["huggingface", "merged", "safetensors", "gguf", "ollama"]
GGUFQuantization = Literal[
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
    "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
]  # fmt: skip
# Settings read only when their format is exported.
FORMAT_SETTINGS = {
    "gguf_quantization": "gguf",
    "gguf_pre_tokenizer": "gguf",
    "llama_cpp_dir": "gguf",
    "system_prompt": "ollama",
}
QUANTIZED_BASE = (
    "the QLoRA adapter is merged into the unquantized base model (the one evaluation scores), not into the "
    "4-bit weights it was trained against, which would round the merged adapter away"
)


def _training_setting(plugins: list[Plugin], name: str) -> Any:
    """A setting of the workflow's training plugin, read by its field name (None when no plugin has it)."""
    return next((getattr(p.config, name) for p in plugins if name in type(p.config).model_fields), None)


class ModelExportPlugin(ToolPlugin):
    name = "model_export"
    description = "Export the trained model (adapter, merged, safetensors, GGUF, Ollama), verified against it."
    supported_stages = (Stage.OUTPUT,)
    dependencies = (keys.TRAINING_RESULT,)
    optional_dependencies = (
        keys.TRAINING_CONFIG,
        keys.DATASET_TOKENIZED,
        keys.DATASET_TRAIN,
        keys.DATASET_VALIDATION,
        keys.DATASET_STATS,
        keys.EVALUATION_REPORT,
    )
    provides = (keys.EXPORT_PATHS, keys.EXPORT_REPORT)

    class ConfigModel(PluginConfig):
        export_formats: list[ExportFormat] = Field(
            default_factory=lambda: ["huggingface"],
            min_length=1,
            description="What to write: huggingface, merged, safetensors, gguf, ollama (ollama implies gguf).",
        )
        merge_adapter: bool = Field(
            True,
            description="Merge a LoRA adapter into the base for the full-weight formats (merged, safetensors, gguf).",
        )
        merge_dtype: Literal["float16", "bfloat16"] = Field(
            "float16", description="Precision of the merged and safetensors weights."
        )
        gguf_quantization: list[GGUFQuantization] = Field(
            default_factory=lambda: ["q8_0"],
            min_length=1,
            description="GGUF types to write; f32/f16/bf16/q8_0/q4_0 need nothing extra, the others need llama.cpp.",
        )
        gguf_pre_tokenizer: str | None = Field(
            None, description="Override llama.cpp's pre-tokenizer name (tokenizer.ggml.pre); detected when unset."
        )
        output_path: str | None = Field(None, description="Export folder; default: <run dir>/export.")
        model_name: str | None = Field(
            None, description="Name for files, the model card and Ollama; default: the base model's name + '-ft'."
        )
        push_to_hub: bool = Field(
            False, description="Upload the export folder to the Hugging Face Hub (token from HF_TOKEN)."
        )
        hub_model_id: str | None = Field(None, description="Hub repository as 'user/name'; required with push_to_hub.")
        hub_private: bool = Field(True, description="Create the Hub repository as private.")
        system_prompt: str | None = Field(None, description="SYSTEM line of the Ollama Modelfile.")
        llama_cpp_dir: str | None = Field(
            None,
            description="A llama.cpp build folder with llama-quantize, used for K-quants instead of llama-cpp-python.",
        )
        verify: bool = Field(True, description="Reload every artefact and compare its logits with the trained model.")
        verify_prompts: int = Field(4, ge=1, le=64, description="Number of prompts used for verification.")

        @model_validator(mode="after")
        def check_hub_id(self):
            if self.push_to_hub and not self.hub_model_id:
                raise ValueError("push_to_hub is true but hub_model_id is not set; give it as 'user/model-name'")
            return self

    # -- load-time checks ---------------------------------------------------------------------
    def check_workflow(self, plugins) -> list[Finding]:
        method = _training_setting(plugins, "training_method")
        formats, notes = formats_for(self.config.export_formats, full_model=method == "full")
        findings = [Finding(note, key="export_formats") for note in notes] + self._unused_settings(formats)
        if method in (None, "full") or not formats & FULL_WEIGHT_FORMATS:
            return findings
        if not self.config.merge_adapter:
            return [*findings, Finding(merge_refused_message(formats), key="merge_adapter", error=True)]
        if method == "qlora" or _training_setting(plugins, "load_in_4bit"):
            findings.append(
                Finding(f"{', '.join(sorted(formats & FULL_WEIGHT_FORMATS))}: {QUANTIZED_BASE}", key="export_formats")
            )
        return findings

    def _unused_settings(self, formats: set[str]) -> list[Finding]:
        return [
            Finding(f"{name} ignored: export_formats has no {fmt}; add {fmt} to write it", key=name)
            for name, fmt in FORMAT_SETTINGS.items()
            if name in self.config.model_fields_set and fmt not in formats
        ]

    # -- lifecycle ---------------------------------------------------------------------------
    async def initialize(self, context) -> None:
        """Checks that need no trained model run before the run starts (fail before training)."""
        from plugins.export.atomic import check_output_folder
        from plugins.export.hub import check_hub_ready
        from plugins.export.quantize import check_quantizer_available

        if self.config.output_path:
            check_output_folder(Path(self.config.output_path))
        if "gguf" in formats_for(self.config.export_formats)[0]:
            check_quantizer_available(list(self.config.gguf_quantization), self.config.llama_cpp_dir)
        if self.config.push_to_hub:
            check_hub_ready(self.config.hub_model_id)

    async def _execute_impl(self, context) -> str:
        await self.initialize(context)
        from plugins.data.conversation_files import validation_or_train
        from plugins.export.job import ExportJob

        job = ExportJob(
            self.config,
            context,
            result=context.recall(keys.TRAINING_RESULT),
            training_config=context.recall(keys.TRAINING_CONFIG),
            tokenized=context.recall(keys.DATASET_TOKENIZED) or {},
            # verification prompts: held-out conversations when there are some
            conversations=validation_or_train(
                context.recall(keys.DATASET_VALIDATION), context.recall(keys.DATASET_TRAIN)
            ),
            dataset_stats=context.recall(keys.DATASET_STATS) or {},
            evaluation=context.recall(keys.EVALUATION_REPORT) or {},
        )
        paths, report = await asyncio.to_thread(job.run)
        context.remember(keys.EXPORT_PATHS, paths)
        context.remember(keys.EXPORT_REPORT, report)
        context.summarize("export_path", str(job.root))
        return f"exported {', '.join(sorted(paths))} to {job.root}"

    # -- tools ---------------------------------------------------------------------------------
    @tool("merge_adapter")
    def merge_adapter(
        self,
        adapter_dir: str,
        output_dir: str,
        base_model: str | None = None,
        dtype: str = "float16",
        prompts: list[str] | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
    ) -> dict[str, Any]:
        """Merge a LoRA adapter into its base (16-bit, on CPU), verify the logits, write output_dir atomically.

        ``allow_pickle`` / ``trust_remote_code``: the same permissions as training_config's, for the base."""
        from plugins.eval.loading import load_saved_tokenizer
        from plugins.eval.prompts import chat_prompts
        from plugins.export.atomic import staged_folder
        from plugins.export.merge import check_merge_space, merge_lora

        check_merge_space(Path(adapter_dir), Path(output_dir), dtype, base_model)
        if prompts is None:
            tokenizer = load_saved_tokenizer(adapter_dir)
            prompts = [p.text for p in chat_prompts(None, tokenizer, None, 4)]
        with staged_folder(Path(output_dir)) as staging:
            result = merge_lora(
                Path(adapter_dir),
                staging,
                prompts,
                base_model=base_model,
                dtype=dtype,
                permissions={"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code},
            )
        result["path"] = str(output_dir)
        return result

    @tool("convert_to_gguf")
    def convert_to_gguf(
        self,
        model_dir: str,
        output_file: str,
        quantization: str = "q8_0",
        llama_cpp_dir: str | None = None,
        chat_template: str | None = None,
        pre_tokenizer: str | None = None,
        verify: bool = True,
        prompts: list[str] | None = None,
    ) -> dict[str, Any]:
        """Write a model folder as one GGUF file (renamed into place when verified); a LoRA adapter is merged first."""
        from plugins.eval.loading import is_adapter_folder
        from plugins.export.gguf_export import export_gguf_file
        from plugins.export.quantize import check_quantizer_available

        output = Path(output_file)
        options = {
            "llama_cpp_dir": llama_cpp_dir,
            "chat_template": chat_template,
            "pre_tokenizer": pre_tokenizer,
            "verify": verify,
            "prompts": prompts,
        }
        if not is_adapter_folder(model_dir):
            return export_gguf_file(Path(model_dir), output, quantization, **options)
        check_quantizer_available([quantization], llama_cpp_dir)  # before a possibly long merge
        output.resolve().parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="merge-", dir=output.resolve().parent) as scratch:
            merged = Path(scratch) / "merged"
            self.merge_adapter(model_dir, str(merged), prompts=prompts)
            return export_gguf_file(merged, output, quantization, **options)

    @tool("write_modelfile")
    def write_modelfile(
        self,
        gguf_file: str,
        tokenizer_dir: str,
        num_ctx: int,
        chat_template: str | None = None,
        system_prompt: str | None = None,
        sampling: dict[str, Any] | None = None,
    ) -> str:
        """Write an Ollama Modelfile next to gguf_file from the training chat template; return its path."""
        from plugins.eval.loading import load_saved_tokenizer
        from plugins.export import modelfile

        gguf = Path(gguf_file)
        modelfile.write_modelfile(
            gguf,
            load_saved_tokenizer(tokenizer_dir),
            chat_template,
            num_ctx=num_ctx,
            system_prompt=system_prompt,
            sampling=sampling,
        )
        return str(gguf.parent / "Modelfile")
