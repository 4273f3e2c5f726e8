"""plugins/data/mixture.py: the scheduler reaches its target shares, deterministically, and resumes exactly;
mix_samples sizes the mixture and repeats or sub-samples each source to its share."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from plugins.data.mixture import MixtureScheduler, mix_samples


def generated_sources(seed: int = 0) -> dict[str, list[int]]:
    """Trained tokens per sample of three sources of different sizes and lengths (short, long, very long)."""
    rng = random.Random(seed)
    return {
        "short": [rng.randint(5, 40) for _ in range(600)],
        "long": [rng.randint(100, 400) for _ in range(150)],
        "huge": [rng.randint(500, 1500) for _ in range(40)],
    }


@pytest.mark.parametrize("unit", ["rows", "tokens"])
def test_the_scheduler_keeps_every_source_within_one_sample_of_its_target(unit):
    weights = {"a": 5.0, "b": 3.0, "c": 2.0}
    sizes = {"a": 30, "b": 300, "c": 120}  # trained tokens of every sample of each source
    scheduler = MixtureScheduler(weights, unit)
    for _ in range(2000):
        source = scheduler.next_source(weights)
        scheduler.record(source, 1, sizes[source])
        counts = scheduler.trained_tokens if unit == "tokens" else scheduler.rows
        done = sum(counts.values())
        units = sizes if unit == "tokens" else dict.fromkeys(sizes, 1)
        for name, weight in weights.items():
            # Above its target by at most its own sample (it was picked below it); below by at most the
            # others' samples (the gaps sum to zero).
            others = sum(units.values()) - units[name]
            assert -others <= counts[name] - weight / 10 * done <= units[name]
    realised = scheduler.realised()
    share = "share_tokens" if unit == "tokens" else "share_rows"
    for name, weight in weights.items():
        assert realised[name]["target_share"] == weight / 10
        assert realised[name][share] == pytest.approx(weight / 10, abs=0.005)


def test_the_scheduler_is_deterministic_and_skips_unavailable_and_zero_weight_sources():
    def picks(available):
        scheduler = MixtureScheduler({"a": 1.0, "off": 0.0, "b": 1.0}, "rows")
        out = []
        for _ in range(6):
            out.append(scheduler.next_source(available))
            scheduler.record(out[-1], 1, 1)
        return out

    assert picks({"a", "b", "off"}) == picks({"b", "off", "a"}) == ["a", "b", "a", "b", "a", "b"]
    assert picks({"b", "off"}) == ["b"] * 6
    with pytest.raises(ValueError, match="no source with a positive weight"):
        picks({"off"})


def test_the_scheduler_state_resumes_exactly():
    weights = {"x": 2.0, "y": 1.0}
    sizes = {"x": 7, "y": 19}
    whole, first = MixtureScheduler(weights, "tokens"), MixtureScheduler(weights, "tokens")
    sequence = []
    for step in range(300):
        name = whole.next_source(weights)
        whole.record(name, 1, sizes[name])
        sequence.append(name)
        if step < 120:
            assert first.next_source(weights) == name
            first.record(name, 1, sizes[name])
    resumed = MixtureScheduler(weights, "tokens")
    resumed.load_state_dict(first.state_dict())
    for name in sequence[120:]:
        assert resumed.next_source(weights) == name
        resumed.record(name, 1, sizes[name])
    assert resumed.state_dict() == whole.state_dict()
    with pytest.raises(ValueError, match="saved mixture state"):
        MixtureScheduler(weights, "rows").load_state_dict(first.state_dict())


@pytest.mark.parametrize(
    "weights", [{"a": -1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}, {}], ids=["negative", "all_zero", "empty"]
)
def test_the_scheduler_refuses_bad_weights(weights):
    with pytest.raises(ValueError, match="weights must be >= 0 and not all zero"):
        MixtureScheduler(weights, "rows")


@pytest.mark.parametrize("unit", ["rows", "tokens"])
def test_mix_samples_reaches_the_target_shares_on_generated_rows(unit):
    sources = generated_sources()
    weights = {"short": 1.0, "long": 1.0, "huge": 2.0}
    chosen, scheduler = mix_samples(sources, weights, unit, seed=4)
    realised = scheduler.realised()
    key = "trained_tokens" if unit == "tokens" else "rows"
    size = sum(sum(v) if unit == "tokens" else len(v) for v in sources.values())
    taken = sum(entry[key] for entry in realised.values())
    largest = max(max(v) for v in sources.values()) if unit == "tokens" else 1
    assert size <= taken < size + largest  # the mixture is as large as the sources together
    for name, weight in weights.items():
        # within one largest sample of its share of the mixture
        assert abs(realised[name][key] - weight / 4 * taken) <= largest
    assert len(chosen) == sum(entry["rows"] for entry in realised.values())


def test_mix_samples_repeats_whole_passes_before_a_third_and_subsamples_without_repeats():
    sources = {"small": [10] * 20, "big": [10] * 200}
    chosen, _ = mix_samples(sources, {"small": 1.0, "big": 1.0}, "rows", seed=0)
    counts = Counter(chosen)
    small = [counts[("small", i)] for i in range(20)]
    big = [counts[("big", i)] for i in range(200)]
    assert sum(small) == sum(big) == 110  # half of the 220 rows each
    assert set(small) <= {5, 6}  # 5.5 passes: every sample 5 or 6 times
    assert set(big) <= {0, 1} and sum(big) == 110  # a sub-sample, no sample twice


def test_mix_samples_is_deterministic_by_seed_and_leaves_out_zero_weights():
    sources = generated_sources(1)
    weights = {"short": 1.0, "long": 0.0, "huge": 1.0}
    first, _ = mix_samples(sources, weights, "tokens", seed=7)
    assert mix_samples(sources, weights, "tokens", seed=7)[0] == first
    assert mix_samples(sources, weights, "tokens", seed=8)[0] != first
    assert {name for name, _ in first} == {"short", "huge"}
    with pytest.raises(ValueError, match="'huge' has a positive weight but no samples"):
        mix_samples({**sources, "huge": []}, weights, "rows", seed=7)
