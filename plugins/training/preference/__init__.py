"""Preference training (the preference_training plugin): the losses on sequence log-probabilities,
the batches of pairs or labelled completions, and the Trainer that puts them together."""
