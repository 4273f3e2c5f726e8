"""One run of the model_export plugin: pre-flight checks, then each format in turn.

Blocking work (the plugin runs it in a worker thread). Each format is staged and published by
``plugins.export.atomic``; its verification figures go into the export report.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from entity_training import ConfigError, PluginError, Problem
from plugins.export.formats import FULL_WEIGHT_FORMATS, formats_for, merge_refused_message
from plugins.models.loaders import user_model_options


class ExportJob:
    """One export run: pre-flight, then each format in turn (blocking; runs in a worker thread)."""

    def __init__(
        self,
        config: Any,
        context: Any,
        *,
        result: dict[str, Any],
        training_config: Any,
        tokenized: dict[str, Any],
        conversations: list[dict[str, Any]],
        dataset_stats: dict[str, Any],
        evaluation: dict[str, Any],
    ):
        self.config = config
        self.context = context  # events and cancellation only: model_export reads memory and passes the values
        self.result = result
        self.training_config = training_config
        self.permissions = user_model_options(self.training_config)
        self.tokenized = tokenized
        self.conversations = conversations
        self.dataset_stats = dataset_stats
        self.evaluation = evaluation
        self.final_dir = Path(self.result["final_model_path"])
        self.root = Path(config.output_path) if config.output_path else Path(context.run_dir) / "export"
        self.name = config.model_name or _slug(Path(str(self.result.get("base_model", "model"))).name) + "-ft"
        self.paths: dict[str, Any] = {}
        self.report: dict[str, Any] = {"root": str(self.root), "artefacts": {}}

    def run(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from plugins.eval.loading import is_adapter_folder, load_saved_tokenizer

        self.is_adapter = is_adapter_folder(self.final_dir)
        self.formats = self._formats()
        self.tokenizer = load_saved_tokenizer(self.final_dir)
        self.chat_template = self.tokenized.get("chat_template") or self.tokenizer.chat_template
        self._preflight()
        self.prompts = self._prompts()
        if "huggingface" in self.formats:
            self._step("huggingface", self._export_huggingface)
        if self.formats & FULL_WEIGHT_FORMATS:
            with tempfile.TemporaryDirectory(dir=self._ensure_root(), prefix=".merge-") as scratch:
                full_dir = self._full_weights(Path(scratch))
                if "safetensors" in self.formats:
                    self._step("safetensors", lambda: self._export_safetensors(full_dir))
                if "gguf" in self.formats:
                    self._step("gguf", lambda: self._export_gguf(full_dir))
        if self.config.push_to_hub:
            self._step("hub", self._push)
        return self.paths, self.report

    def _formats(self) -> set[str]:
        """The formats asked for, adjusted to the trained model; each adjustment is warned and reported."""
        formats, notes = formats_for(self.config.export_formats, full_model=not self.is_adapter)
        for note in notes:
            self.context.warn(note)
        self.report["notes"] = notes
        return formats

    # -- pre-flight: everything that can fail on bad input, before writing anything ------------
    def _preflight(self) -> None:
        from plugins.export.atomic import check_output_folder
        from plugins.export.merge import check_merge_space

        check_output_folder(self.root)
        if self.is_adapter and self.formats & FULL_WEIGHT_FORMATS:
            if not self.config.merge_adapter:
                raise ConfigError(Problem(merge_refused_message(self.formats), path="merge_adapter"))
            check_merge_space(self.final_dir, self.root, self.config.merge_dtype, self._base_model())
        if "gguf" in self.formats:
            from plugins.export.architectures import gguf_architecture
            from plugins.export.gguf_vocab import build_gguf_vocab
            from plugins.models import load_model_config

            source = self._base_model() if self.is_adapter else str(self.final_dir)
            config = load_model_config(source)
            gguf_architecture(config, source=source)
            build_gguf_vocab(self.tokenizer, config.vocab_size, pre_tokenizer=self.config.gguf_pre_tokenizer)
        if "ollama" in self.formats:
            from plugins.export.chat_template import analyze_chat_template

            analyze_chat_template(self.tokenizer, self.chat_template)

    def _base_model(self) -> str:
        from plugins.eval.loading import exact_base_model

        return exact_base_model(self.final_dir, self.result.get("base_model"))

    def _merge_options(self) -> dict[str, Any]:
        return {"base_model": self._base_model(), "dtype": self.config.merge_dtype, "permissions": self.permissions}

    def _ensure_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def _prompts(self) -> list[str]:
        from plugins.eval.prompts import chat_prompts

        return [
            p.text
            for p in chat_prompts(self.conversations, self.tokenizer, self.chat_template, self.config.verify_prompts)
        ]

    def _step(self, name: str, action) -> None:
        self.context.check_cancelled()
        self.context.log(f"exporting {name}")
        started = time.perf_counter()
        action()
        self.report["artefacts"].setdefault(name, {})["seconds"] = round(time.perf_counter() - started, 2)

    # -- formats -------------------------------------------------------------------------------
    def _export_huggingface(self) -> None:
        from plugins.export.atomic import staged_folder

        target = self.root / "huggingface"
        with staged_folder(target) as staging:
            shutil.copytree(self.final_dir, staging, dirs_exist_ok=True)
            entry: dict[str, Any] = {"path": str(target), "kind": "adapter" if self.is_adapter else "full"}
            if self.config.verify:
                entry["verification"] = self._verify_hf_folder(staging)
            self._write_card(staging, "huggingface")
        self.paths["huggingface"] = str(target)
        self.report["artefacts"]["huggingface"] = entry

    def _verify_hf_folder(self, folder: Path) -> dict[str, Any]:
        """Reload the exported copy the way a user would and compare with the trained model."""
        from plugins.export.verify import build_reference, compare_hf_model

        reference = build_reference(self._load_trained(self.final_dir), self.tokenizer, self.prompts)
        comparison = compare_hf_model(self._load_trained(folder), reference)
        comparison.passed = comparison.max_abs_logit_diff <= 1e-5
        if not comparison.passed:
            raise PluginError(
                f"the exported copy in {folder} does not reproduce the trained model: {comparison.to_dict()}"
            )
        return comparison.to_dict()

    def _load_trained(self, folder: Path):
        from plugins.eval.loading import load_trained_model

        base_model = self._base_model() if self.is_adapter else None
        return load_trained_model(folder, base_model=base_model, permissions=self.permissions)

    def _full_weights(self, scratch: Path) -> Path:
        """The folder with full weights: the merged model (published if asked for) or final-model."""
        from plugins.export.atomic import staged_folder
        from plugins.export.merge import merge_lora

        if not self.is_adapter:
            return self.final_dir
        if "merged" not in self.formats:
            merge_lora(self.final_dir, scratch, self.prompts, **self._merge_options())
            return scratch
        target = self.root / "merged"
        started = time.perf_counter()
        with staged_folder(target) as staging:
            merged = merge_lora(self.final_dir, staging, self.prompts, **self._merge_options())
            self._write_card(staging, "merged")
        merged["path"] = str(target)
        merged["seconds"] = round(time.perf_counter() - started, 2)
        self.paths["merged"] = str(target)
        self.report["artefacts"]["merged"] = merged
        return target

    def _export_safetensors(self, full_dir: Path) -> None:
        import torch

        from plugins.export.atomic import staged_folder
        from plugins.export.merge import check_logits
        from plugins.export.verify import build_reference, compare_hf_model
        from plugins.models import load_causal_lm

        target = self.root / "safetensors"
        model = load_causal_lm(str(full_dir), dtype=torch.float32, device_map="cpu")
        reference = build_reference(model, self.tokenizer, self.prompts) if self.config.verify else None
        with staged_folder(target) as staging:
            model.to(getattr(torch, self.config.merge_dtype)).save_pretrained(str(staging), max_shard_size="1000GB")
            self.tokenizer.save_pretrained(str(staging))
            entry: dict[str, Any] = {"path": str(target / "model.safetensors"), "dtype": self.config.merge_dtype}
            if reference is not None:
                reloaded = load_causal_lm(str(staging), dtype=torch.float32, device_map="cpu")
                entry["verification"] = check_logits(
                    compare_hf_model(reloaded, reference), reference, self.config.merge_dtype, "the safetensors export"
                ).to_dict()
            self._write_card(staging, "safetensors")
        self.paths["safetensors"] = entry["path"]
        self.report["artefacts"]["safetensors"] = entry

    def _export_gguf(self, full_dir: Path) -> None:
        from plugins.export.atomic import staged_folder
        from plugins.export.gguf_export import export_gguf_file
        from plugins.export.quantize import llama_cpp_python_available

        target = self.root / "gguf"
        files: dict[str, str] = {}
        entries: dict[str, Any] = {}
        reference = self._reference_for(full_dir) if self.config.verify and llama_cpp_python_available() else None
        with staged_folder(target) as staging:
            for quantization in self.config.gguf_quantization:
                self.context.check_cancelled()
                file_name = f"{self.name}-{quantization}.gguf"
                entries[quantization] = export_gguf_file(
                    full_dir,
                    staging / file_name,
                    quantization,
                    llama_cpp_dir=self.config.llama_cpp_dir,
                    chat_template=self.chat_template,
                    pre_tokenizer=self.config.gguf_pre_tokenizer,
                    verify=self.config.verify,
                    prompts=self.prompts,
                    tokenizer=self.tokenizer,
                    model_name=self.name,
                    reference=reference,
                )
                entries[quantization]["path"] = str(target / file_name)
                files[quantization] = str(target / file_name)
            if "ollama" in self.formats:
                self.report["artefacts"]["ollama"] = self._write_modelfile(
                    staging, Path(files[self.config.gguf_quantization[0]]).name
                )
            self._write_card(staging, "gguf")
        self.paths["gguf"] = files
        self.report["artefacts"]["gguf"] = entries
        if "ollama" in self.formats:
            self.paths["ollama"] = str(target / "Modelfile")
            self._ollama_smoke_test(target / "Modelfile")

    def _reference_for(self, full_dir: Path):
        import torch

        from plugins.export.verify import build_reference
        from plugins.models import load_causal_lm

        model = load_causal_lm(str(full_dir), dtype=torch.float32, device_map="cpu")
        return build_reference(model, self.tokenizer, self.prompts)

    def _write_modelfile(self, folder: Path, gguf_name: str) -> dict[str, Any]:
        from plugins.export.modelfile import sampling_parameters, write_modelfile

        num_ctx = int(self.tokenized.get("max_seq_length") or 2048)
        turn_format = write_modelfile(
            folder / gguf_name,
            self.tokenizer,
            self.chat_template,
            num_ctx=num_ctx,
            system_prompt=self.config.system_prompt,
            sampling=sampling_parameters(self.evaluation.get("generation")),
        )
        return {
            "path": str(self.root / "gguf" / "Modelfile"),
            "stop": turn_format.end_of_turn_tokens,
            "num_ctx": num_ctx,
            "template_verified": True,
        }

    def _ollama_smoke_test(self, modelfile: Path) -> None:
        from plugins.export.modelfile import ollama_create

        prompt = "Hello! Who are you?"
        smoke = ollama_create(modelfile, _slug(self.name), prompt)
        self.report["artefacts"]["ollama"]["ollama_run"] = smoke or "ollama is not installed; skipped ollama create"

    def _write_card(self, folder: Path, artefact: str) -> None:
        from entity_training.memory import atomic_write_text
        from plugins.export.model_card import CardInfo, render_model_card

        info = CardInfo(
            name=self.name,
            base_model=str(self.result.get("base_model", "")),
            method=str(self.result["method"]),
            artefact=artefact,
            files=sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "README.md"),
            training_config=self.training_config.model_dump(mode="json") if self.training_config else {},
            training_result={k: v for k, v in self.result.items() if k != "log_history"},
            dataset_stats=self.dataset_stats,
            evaluation=self.evaluation,
            max_seq_length=self.tokenized.get("max_seq_length"),
            hub_model_id=self.config.hub_model_id,
        )
        atomic_write_text(folder / "README.md", render_model_card(info))

    def _push(self) -> None:
        from plugins.export.hub import push_folder

        urls = {}
        exported = [n for n in ("huggingface", "merged", "safetensors", "gguf") if n in self.paths]
        for name in exported:
            # The first artefact goes to the repository root, so its README is the Hub's model card
            # and from_pretrained("user/name") loads it; the others go in sub-folders.
            urls[name] = push_folder(
                self.root / name,
                self.config.hub_model_id,
                private=self.config.hub_private,
                path_in_repo=None if name == exported[0] else name,
            )
        self.report["artefacts"]["hub"] = {
            "repo": self.config.hub_model_id,
            "private": self.config.hub_private,
            "uploaded": sorted(urls),
        }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-") or "model"
