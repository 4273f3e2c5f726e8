"""Export building blocks: GGUF writing, quantization, Ollama Modelfiles, LoRA merging, model
cards, verification and hub upload. Each module has one job; `plugins.model_export` wires them
into the OUTPUT plugin and `scripts/` call the same code. Nothing heavy is imported here.
"""
