"""Shared by evaluation, export verification and the inference test: prompts built with the
training chat template, generation, metrics, and memory/speed measurement."""
