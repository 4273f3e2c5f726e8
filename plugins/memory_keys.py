"""Memory keys the built-in plugins write and read: the documented hand-offs between stages.

Every value stored under these keys is JSON data or a frozen pydantic model (so ``--resume``
restores it), except where noted. Large artefacts live on disk and memory holds their paths.
"""

# INPUT: DatasetLoaderPlugin
# plugins.data.conversation_files.ConversationsFile (path, rows, sha256) of <run_dir>/data/train.jsonl,
# one conversation a line: {"messages": [{role, content}...], "tools"?, "source": {file, line or index, name?}};
# the name is that of its entry under dataset_loader.sources; read_conversations reads it
DATASET_TRAIN = "dataset.train"
DATASET_VALIDATION = "dataset.validation"  # the same for validation.jsonl; may have no rows
DATASET_STATS = "dataset.stats"  # rows, task (sft|preference|unpaired), turns, characters, formats, per-file counts
# ... and with several sources: rows per source ("sources") and the mixture spec ("mixture"), see plugins/data/sources.py
# With streaming: true only: plugins.data.stream_spec.StreamSpec (files, formats, field maps, where training rows
# start, seed, shuffle buffer); dataset.train then holds only the head rows checked at INPUT (train-head.jsonl)
DATASET_STREAM = "dataset.stream"

# PARSE: TrainingConfigPlugin
TRAINING_CONFIG = "training.config"  # the resolved training configuration (ResolvedTrainingConfig)

# THINK: data preparation
# {"train": path, "validation": path|None, "cache_key": str, "task": "sft"|"preference"|"unpaired", ...};
# the paths hold plugins.data.tokenized rows for sft, plugins.data.preference_tokenized splits otherwise
# with streaming: "train" is None, "head" the tokenized head rows, "stream" the StreamSpec and "truncation"
# the setting DO tokenizes the streamed rows with (plugins.data.preparation.streamed)
DATASET_TOKENIZED = "dataset.tokenized"
DATASET_TOKEN_STATS = "dataset.token_stats"  # tokens, trained tokens, truncated samples, packing efficiency
# ... and with several sources: the realised share of each ("mixture"), see plugins/data/mixed_encoding.py

# THINK: MemoryPlanPlugin
# the peak-memory estimate, what auto-fit changed and the settings to train with (MemoryPlan)
TRAINING_MEMORY_PLAN = "training.memory_plan"

# DO: FineTuningPlugin
TRAINING_RESULT = "training.result"  # final/best losses, steps, tokens, tokens/s, peak memory, paths

# REVIEW: EvaluationPlugin
# "task" (sft|preference|unpaired); metrics (base vs fine-tuned: loss, perplexity, BLEU... for SFT data;
# preference accuracy, margins, answer log-probabilities for preference data), samples (prompt,
# reference or chosen answer, both models' answers), PASS/FAIL, reasons; "behaviour": the behavioural
# checks (each check, both models' answers and verdicts, pass rates) or None when none were given;
# "preference": None for SFT data, else examples, measure, loss and "vs_start" (the implicit reward
# of the tuned model against its start: reward accuracy and margin, or for KTO the shares that moved)
EVALUATION_REPORT = "evaluation.report"

# OUTPUT: ModelExportPlugin, InferenceTestPlugin, report
EXPORT_PATHS = "export.paths"  # format -> path
EXPORT_REPORT = "export.report"  # verification figures per artefact
# tokens/s and peak memory per exported model vs the base; with the evaluation's behavioural checks
# (read from evaluation.report when present), each model's pass rate and agreement with the
# fine-tuned answers
INFERENCE_REPORT = "inference.report"
