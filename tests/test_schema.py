import pytest

from tfdebias.errors import SchemaError
from tfdebias.schema import Feature, Schema


def make():
    return Schema([
        Feature("user_id", "categorical", vocab_size=11),
        Feature("item_id", "categorical", vocab_size=21),
        Feature("history", "sequence", vocab_size=21, max_len=5, vocab="item_id"),
        Feature("price", "dense"),
        Feature("pop", "proxy"),
        Feature("position", "proxy", vocab_size=4),
        Feature("visual", "vector", width=8),
        Feature("domain", "domain", vocab_size=2),
        Feature("propensity", "exposure"),
        Feature("click", "label"),
        Feature("relevance", "truth"),
    ])


def test_roles_partition_features():
    s = make()
    assert [f.name for f in s.categorical] == ["user_id", "item_id", "position", "domain"]
    assert [f.name for f in s.dense] == ["price", "pop"]
    assert s.label.name == "click"
    assert s.exposure.name == "propensity"
    assert "click" not in [f.name for f in s.inputs]
    assert "relevance" not in [f.name for f in s.inputs]
    assert s["history"].table == "item_id" and s.table_sizes["item_id"] == 21
    assert s["position"].dtype == "int64" and s["pop"].dtype == "float32"
    assert s["history"].shape == (5,) and s["visual"].shape == (8,)


def test_json_round_trip():
    s = make()
    assert Schema.from_json(s.to_json()) == s


@pytest.mark.parametrize("bad", [
    lambda: Feature("x", "nonsense"),
    lambda: Feature("x", "categorical"),
    lambda: Feature("x", "sequence", vocab_size=3),
    lambda: Schema([Feature("a", "dense"), Feature("a", "dense")]),
    lambda: Schema([Feature("a", "categorical", vocab_size=3),
                    Feature("b", "sequence", vocab_size=4, max_len=2, vocab="a")]),
    lambda: Schema.from_json("{not json"),
    lambda: make()["nope"],
])
def test_bad_schemas_raise_schema_error(bad):
    with pytest.raises(SchemaError):
        bad()


def test_check_compatible_names_the_problem():
    data = make()
    model_schema = Schema([Feature("user_id", "categorical", vocab_size=5)])
    with pytest.raises(SchemaError, match="user_id.*11 ids here.*built for 5"):
        data.check_compatible(model_schema)
    data.check_compatible(data.select(["user_id", "visual"]))
    with pytest.raises(SchemaError, match="'price' is missing"):
        model_schema.check_compatible(data.select(["price"]))
    with pytest.raises(SchemaError, match="'pop' is proxy\[\] here, model expects dense"):
        data.check_compatible(Schema([Feature("pop", "dense")]))
