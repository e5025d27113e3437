"""The platform's assets behave as plain Airflow assets: same hash and equality, serialized as ``asset``."""

from __future__ import annotations

from airflow.sdk import Asset

from airflow_mlops import assets


def test_cached_hash_is_the_asset_hash_and_equal_assets_meet_in_sets() -> None:
    ours = assets.drift("churn")
    plain = Asset(name=ours.name, uri=ours.uri, group=ours.group)
    assert type(ours) is not Asset  # the hash-caching subclass is what is being tested
    assert hash(ours) == hash(plain) == hash(ours)  # the second call answers from the cache
    assert ours == plain and plain == ours
    assert plain in {ours} and ours in {plain}
    assert len({ours, plain, assets.drift("churn")}) == 1
    assert assets.drift("churn") != assets.trained("churn")
    assert hash(assets.drift("churn")) != hash(assets.drift("orders"))


def test_serialized_and_read_back_as_a_plain_asset() -> None:
    from airflow.serialization.serialized_objects import BaseSerialization

    ours = assets.new_window("churn") | assets.drift("churn")
    encoded = BaseSerialization.serialize(ours)
    decoded = BaseSerialization.deserialize(encoded)
    names = sorted(a.name for a in decoded.objects)
    assert names == ["churn.drift", "churn.new_window"]
    assert all(type(a).__name__ in {"Asset", "SerializedAsset"} for a in decoded.objects)
