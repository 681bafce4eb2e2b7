from lightsr_cli.presets import Measured, pick_presets
from lightsr_cli.registry import PRESET_MODELS, get_card


def test_rule_picks_quality_balanced_and_fast():
    table = pick_presets([
        Measured("tiny", 4, 27.7, 10), Measured("small", 4, 28.2, 30), Measured("mid", 4, 28.6, 60),
        Measured("big", 4, 28.7, 500), Measured("huge", 4, 28.9, 5000),
    ])[4]
    assert table["quality"] == "huge"
    # mid: 28.6 - 0.1*log2(60) = 28.01 beats small (27.71), big (27.80), huge (27.67), tiny (27.37)
    assert table["balanced"] == "mid"
    # >= 4x faster than mid (<= 15 ms): only tiny
    assert table["fast"] == "tiny"


def test_fast_falls_back_to_the_fastest_model():
    table = pick_presets([Measured("a", 2, 33.0, 10), Measured("b", 2, 33.1, 12)])[2]
    assert table["fast"] == "a" and table["quality"] == "b"


def test_shipped_presets_name_real_models_of_the_right_scale():
    for scale, presets in PRESET_MODELS.items():
        assert set(presets) == {"fast", "balanced", "quality"}
        for model_id in presets.values():
            assert get_card(model_id).scale == scale


def test_balanced_is_chosen_among_shippable_models():
    table = pick_presets([Measured("free", 4, 28.7, 100), Measured("unlicensed", 4, 28.8, 50, shippable=False),
                          Measured("quick", 4, 28.0, 10, shippable=False)])[4]
    assert table == {"balanced": "free", "quality": "unlicensed", "fast": "quick"}


def test_shipped_presets_are_what_the_rule_picks_from_the_stored_measurements():
    """registry.PRESET_MODELS must not drift from benchmarks/results-*.json and the rule."""
    import importlib.util
    import json
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    spec = importlib.util.spec_from_file_location("pick_presets", benchmarks / "pick_presets.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    measured = script.measured_from(json.loads((benchmarks / "results-bench-cpu-320x180.json").read_text()),
                                    json.loads((benchmarks / "results-quality.json").read_text()))
    assert pick_presets(measured) == {scale: dict(picks) for scale, picks in PRESET_MODELS.items()}
