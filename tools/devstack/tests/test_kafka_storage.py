"""The cluster id the local stack formats Kafka's storage with."""

import base64

from prequal_devstack.kafka import new_cluster_id


def test_cluster_ids_are_16_random_bytes_and_never_look_like_an_option() -> None:
    # One in 64 URL-safe base64 strings starts with "-", which the storage tool reads as an
    # option: 10,000 draws leave a chance of about 1e-68 of not seeing one if it could happen.
    ids = [new_cluster_id() for _ in range(10_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
