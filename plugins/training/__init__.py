"""Helpers of the training plugins (TrainingConfig in PARSE, FineTuning in DO).

Each module has one job: the device and its precision, the model's shape, the memory plan,
model setup per method, checkpoints, the Trainer and its callbacks, out-of-memory retries.
Nothing heavy is imported here, so ``plugins.training.memory_plan`` stays cheap to reach.
"""
