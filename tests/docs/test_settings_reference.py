"""docs/TRAIN_EVAL.md lists every train and eval setting, and `dsc schema` types both blocks."""
from pathlib import Path

from dsc.spec.model import json_schema
from dsc.spec.runtime import EvalConfig, EvalTask, TrainConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "TRAIN_EVAL.md"


def test_every_setting_is_in_the_reference():
    text = DOC.read_text(encoding="utf-8")
    for heading, model in (("### `train`", TrainConfig), ("### `eval`", EvalConfig),
                           ("### `eval.tasks.<name>`", EvalTask)):
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        missing = [k for k in model.model_fields if f"| `{k}` |" not in section]
        assert not missing, f"{heading}: {missing}"


def test_the_schema_types_train_and_eval():
    schema = json_schema()
    train = schema["properties"]["train"]["anyOf"][0]
    assert {"max_steps", "learning_rate", "lora", "full"} <= set(train["properties"])
    assert train["additionalProperties"] is False
    tasks = schema["properties"]["eval"]["anyOf"][0]["properties"]["tasks"]
    assert tasks["additionalProperties"]["$ref"].endswith("EvalTask")


def test_two_bad_overrides_are_both_named(tmp_path):
    import pytest

    from dsc.core.errors import SpecError
    from dsc.spec.runtime import override_layer, resolve

    with pytest.raises(SpecError) as e:
        resolve(TrainConfig, [override_layer(["max_step=2", "learning_rate=fast"])], "train")
    message = str(e.value)
    assert "max_step" in message and "did you mean 'max_steps'" in message
    assert "learning_rate" in message and "more problem" not in message
