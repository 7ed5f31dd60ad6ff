"""Extract: MongoDB (real wire server) -> S3 (real moto server over HTTP) raw zone."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pymongo
import pytest
from bson import ObjectId
from pymongo import monitoring

from fraud_retraining.config import load_use_case
from fraud_retraining.extract import (
    arrow_type,
    column_to_arrow,
    dataset_columns,
    extract_interval,
    list_complete_partitions,
    plan_slices,
    read_partition_manifest,
    sweep_strays,
)
from fraud_retraining.layout import quarantine_partition_prefix, raw_partition_prefix

CFG = load_use_case()
F = CFG.fields
DAY1 = datetime(2026, 11, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
LATER = DAY1 + timedelta(days=30)  # "now" of the extraction in tests


def tx(i: int, when: datetime, **overrides: object) -> dict:
    doc = {
        F.id: f"tx-{i:06d}",
        F.time: when,
        F.customer: i % 50,
        F.terminal: i % 70,
        F.amount: 10.0 + i % 100,
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP = object()


def run(mongo_client, s3_client, bucket, db, start=DAY1, end=DAY2, **kwargs):
    return extract_interval(
        mongo_client,
        s3_client,
        CFG,
        start,
        end,
        bucket=bucket,
        database=db.name,
        now=kwargs.pop("now", LATER),
        **kwargs,
    )


def read_parquet(s3_client, bucket: str, key: str) -> pa.Table:
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body))


def read_dataset(s3_client, bucket: str, dataset: str, day: datetime) -> pa.Table:
    manifest = read_partition_manifest(s3_client, bucket, raw_partition_prefix(CFG, dataset, day))
    assert manifest is not None, "partition has no manifest"
    tables = [read_parquet(s3_client, bucket, part["key"]) for part in manifest["parts"]]
    return pa.concat_tables(tables)


# ------------------------------------------------------------------ pure functions


def test_arrow_type_parses_config_types() -> None:
    assert arrow_type("timestamp[ms, UTC]") == pa.timestamp("ms", tz="UTC")
    assert arrow_type("int8") == pa.int8()
    assert arrow_type("float64") == pa.float64()
    with pytest.raises(ValueError, match="unsupported"):
        arrow_type("decimal(3)")


def test_column_to_arrow_matches_pyarrow_conversion() -> None:
    cases = [
        (["a", None, "ünï", ""], pa.string()),
        ([1, None, -3], pa.int8()),
        ([1.5, None, 2.0], pa.float64()),
        ([True, None, False], pa.bool_()),
        ([1_700_000_000_000, None], pa.timestamp("ms", tz="UTC")),
        ([], pa.int64()),
    ]
    for values, typ in cases:
        built = column_to_arrow(values, typ)
        built.validate(full=True)
        assert built.equals(pa.array(values, type=typ)), typ


def test_dataset_columns_split_label_fields_from_transactions() -> None:
    assert F.label not in dataset_columns(CFG, "transactions")
    assert F.labeled_at not in dataset_columns(CFG, "transactions")
    assert dataset_columns(CFG, "labels") == [F.id, F.label, F.labeled_at, F.scenario]


def test_plan_slices_are_contiguous_and_cover_the_interval() -> None:
    slices = plan_slices(DAY1, DAY2, 3)
    assert [s["slice_index"] for s in slices] == [0, 1, 2]
    assert slices[0]["start"] == DAY1.isoformat() and slices[-1]["end"] == DAY2.isoformat()
    for left, right in itertools.pairwise(slices):
        assert left["end"] == right["start"]
    with pytest.raises(ValueError, match="reversed"):
        plan_slices(DAY2, DAY1, 2)


def test_sub_daily_interval_is_rejected(mongo_client, s3_client, s3_bucket, mongo_db) -> None:
    with pytest.raises(ValueError, match="00:00 UTC"):
        run(mongo_client, s3_client, s3_bucket, mongo_db, start=DAY1 + timedelta(hours=6))


# ------------------------------------------------------------------ integration


def test_interval_boundaries_document_at_end_belongs_to_next(
    mongo_client, s3_client, s3_bucket, mongo_db
) -> None:
    coll = mongo_db[CFG.mongo.collection]
    coll.insert_many(
        [
            tx(1, DAY1),
            tx(2, DAY1 + timedelta(hours=12)),
            tx(3, DAY2 - timedelta(milliseconds=1)),
            tx(4, DAY2),
            tx(5, DAY1 - timedelta(milliseconds=1)),
        ]
    )
    first = run(mongo_client, s3_client, s3_bucket, mongo_db)
    second = run(mongo_client, s3_client, s3_bucket, mongo_db, start=DAY2, end=DAY2 + timedelta(days=1))
    day1 = read_dataset(s3_client, s3_bucket, "transactions", DAY1)
    day2 = read_dataset(s3_client, s3_bucket, "transactions", DAY2)
    assert sorted(day1.column(F.id).to_pylist()) == ["tx-000001", "tx-000002", "tx-000003"]
    assert day2.column(F.id).to_pylist() == ["tx-000004"]
    assert first["transactions"]["rows"] == 3 and second["transactions"]["rows"] == 1
    assert day1.schema.field(F.time).type == pa.timestamp("ms", tz="UTC")
    assert F.label not in day1.column_names
    assert first["transactions"]["quarantined"] == {}


def test_rerun_is_idempotent_and_removes_stale_parts(mongo_client, s3_client, s3_bucket, mongo_db) -> None:
    coll = mongo_db[CFG.mongo.collection]
    coll.insert_many([tx(i, DAY1 + timedelta(seconds=30 * i)) for i in range(1000)])
    for index in range(2):
        run(mongo_client, s3_client, s3_bucket, mongo_db, slice_index=index, n_slices=2, batch_size=128)
    two_slices = read_dataset(s3_client, s3_bucket, "transactions", DAY1)
    prefix = raw_partition_prefix(CFG, "transactions", DAY1)
    assert read_partition_manifest(s3_client, s3_bucket, prefix)["n_slices"] == 2

    summary = run(mongo_client, s3_client, s3_bucket, mongo_db, batch_size=128)
    again = run(mongo_client, s3_client, s3_bucket, mongo_db, batch_size=128)
    one_slice = read_dataset(s3_client, s3_bucket, "transactions", DAY1)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"]]
    assert prefix + "part-00001.parquet" not in keys, "stale part of the 2-slice run must be deleted"
    assert summary["transactions"]["rows"] == again["transactions"]["rows"] == 1000
    assert one_slice.num_rows == two_slices.num_rows == 1000
    assert len(set(one_slice.column(F.id).to_pylist())) == 1000
    assert one_slice.sort_by(F.id).equals(two_slices.sort_by(F.id))
    manifest = read_partition_manifest(s3_client, s3_bucket, prefix)
    assert manifest["rows"] == 1000 and [p["key"] for p in manifest["parts"]] == [
        prefix + "part-00000.parquet"
    ]


def test_every_malformed_kind_is_quarantined_and_counted(
    mongo_client, s3_client, s3_bucket, mongo_db
) -> None:
    coll = mongo_db[CFG.mongo.collection]
    t = DAY1 + timedelta(hours=1)
    good = [tx(i, t + timedelta(seconds=i)) for i in range(20)]
    bad = [
        tx(100, t, **{F.customer: _DROP}),  # missing required field
        tx(101, t, **{F.amount: "12.50"}),  # string where a number belongs
        tx(102, t, **{F.amount: math.nan}),
        tx(103, t, **{F.amount: math.inf}),
        tx(104, t, **{F.amount: -5.0}),
        tx(105, t, **{F.terminal: "T-9"}),
        tx(107, t, **{"blob": "x" * 20_000}),  # oversized
        tx(3, t + timedelta(minutes=5)),  # duplicate id (no unique index in this fresh db)
    ]
    coll.insert_many(good + bad)
    summary = run(mongo_client, s3_client, s3_bucket, mongo_db, now=DAY1 + timedelta(hours=2))
    coll.insert_one(tx(108, DAY1 + timedelta(hours=3)))  # after "now": future relative to extraction
    future = run(mongo_client, s3_client, s3_bucket, mongo_db, now=DAY1 + timedelta(hours=2))

    counts = summary["transactions"]["quarantined"]
    assert counts == {
        f"missing_field:{F.customer}": 1,
        f"wrong_type:{F.amount}": 1,
        f"not_finite:{F.amount}": 2,
        f"negative_amount:{F.amount}": 1,
        f"wrong_type:{F.terminal}": 1,
        "oversized_document": 1,
        f"duplicate_id:{F.id}": 1,
    }
    assert summary["transactions"]["rows"] == 20
    assert future["transactions"]["quarantined"][f"future_time:{F.time}"] == 1
    q_key = summary["transactions"]["keys"][1]
    quarantined = read_parquet(s3_client, s3_bucket, q_key)
    assert quarantined.column_names == ["id", "reason", "document"]
    assert "tx-000101" in quarantined.column("id").to_pylist()
    assert all(len(d) <= 4096 for d in quarantined.column("document").to_pylist())
    # Nothing vanished: every inserted document is a row or a quarantined document.
    assert summary["transactions"]["rows"] + summary["transactions"]["quarantined_total"] == len(good) + len(
        bad
    )


def _inserted_at(when: datetime) -> ObjectId:
    """An ObjectId whose insert time is `when` (the sweep attributes strays by it)."""
    return ObjectId(ObjectId.from_datetime(when).binary[:4] + os.urandom(8))


def test_sweep_quarantines_documents_whose_time_is_not_a_date(
    mongo_client, s3_client, s3_bucket, mongo_db
) -> None:
    coll = mongo_db[CFG.mongo.collection]
    t = DAY1 + timedelta(hours=1)
    good = [tx(i, t + timedelta(seconds=i)) for i in range(5)]
    strays = [
        tx(106, t, **{F.time: "2026-11-01T03:00:00", "_id": _inserted_at(t)}),  # string time
        tx(107, t, **{F.time: _DROP, "_id": _inserted_at(t)}),  # no time at all
        tx(108, t, **{F.time: 1_730_000_000_000, "_id": _inserted_at(t)}),  # epoch number
        # A label whose labeled_at is a string: the labels dataset quarantines it.
        tx(109, t, **{F.label: 1, F.labeled_at: "yesterday", "_id": _inserted_at(t)}),
        # Inserted the next day: belongs to the next interval's sweep.
        tx(110, t, **{F.time: "late", "_id": _inserted_at(DAY2 + timedelta(hours=1))}),
    ]
    coll.insert_many(good + strays)
    extract = run(mongo_client, s3_client, s3_bucket, mongo_db)
    assert extract["transactions"]["rows"] == 6  # 5 good + tx 109 (its time is fine)
    assert extract["transactions"]["quarantined"] == {}  # the range query cannot see strays

    kwargs = {"bucket": s3_bucket, "database": mongo_db.name}
    sweep = sweep_strays(mongo_client, s3_client, CFG, DAY1, DAY2, **kwargs)
    assert sweep["transactions"]["quarantined"] == {
        f"wrong_type:{F.time}": 2,
        f"missing_field:{F.time}": 1,
    }
    assert sweep["labels"]["quarantined"] == {f"wrong_type:{F.labeled_at}": 1}
    q_key = quarantine_partition_prefix(CFG, "transactions", DAY1) + "strays.parquet"
    assert sweep["transactions"]["keys"] == [q_key]
    ids = sorted(read_parquet(s3_client, s3_bucket, q_key).column("id").to_pylist())
    assert ids == ["tx-000106", "tx-000107", "tx-000108"]
    # Nothing vanished: every document of the day is a row or quarantined somewhere.
    assert extract["transactions"]["rows"] + sweep["transactions"]["quarantined_total"] == len(good) + 4

    # The writer fixes its documents; a rerun replaces the strays part (here: removes it).
    coll.update_many({F.id: {"$in": ["tx-000106", "tx-000107", "tx-000108"]}}, {"$set": {F.time: t}})
    coll.update_one({F.id: "tx-000109"}, {"$set": {F.labeled_at: t}})
    again = sweep_strays(mongo_client, s3_client, CFG, DAY1, DAY2, **kwargs)
    assert again["transactions"]["quarantined_total"] == 0 and again["labels"]["quarantined_total"] == 0
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=q_key)
    nxt = sweep_strays(mongo_client, s3_client, CFG, DAY2, DAY2 + timedelta(days=1), **kwargs)
    assert nxt["transactions"]["quarantined"] == {f"wrong_type:{F.time}": 1}


def test_empty_interval_writes_valid_empty_partition(mongo_client, s3_client, s3_bucket, mongo_db) -> None:
    summary = run(mongo_client, s3_client, s3_bucket, mongo_db)
    for dataset in ("transactions", "labels"):
        assert summary[dataset]["empty"] is True and summary[dataset]["rows"] == 0
        table = read_dataset(s3_client, s3_bucket, dataset, DAY1)
        assert table.num_rows == 0
        assert table.column_names == dataset_columns(CFG, dataset)
    assert (
        read_partition_manifest(s3_client, s3_bucket, raw_partition_prefix(CFG, "labels", DAY1))["rows"] == 0
    )


def test_batches_never_exceed_batch_size(mongo_client, s3_client, s3_bucket, mongo_db) -> None:
    coll = mongo_db[CFG.mongo.collection]
    coll.insert_many([tx(i, DAY1 + timedelta(seconds=20 * i)) for i in range(2500)])
    seen: list[tuple[str, int]] = []
    summary = run(
        mongo_client,
        s3_client,
        s3_bucket,
        mongo_db,
        batch_size=300,
        batch_observer=lambda d, n: seen.append((d, n)),
    )
    sizes = [n for d, n in seen if d == "transactions"]
    assert max(sizes) <= 300 and sum(sizes) == 2500 and len(sizes) == math.ceil(2500 / 300)
    pf = pq.ParquetFile(
        io.BytesIO(
            s3_client.get_object(Bucket=s3_bucket, Key=summary["transactions"]["keys"][0])["Body"].read()
        )
    )
    assert max(pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)) <= 300
    assert summary["transactions"]["rows"] == 2500


def test_late_label_lands_in_the_interval_it_arrived(mongo_client, s3_client, s3_bucket, mongo_db) -> None:
    coll = mongo_db[CFG.mongo.collection]
    coll.insert_many([tx(1, DAY1 + timedelta(hours=1)), tx(2, DAY1 + timedelta(hours=2))])
    day5 = DAY1 + timedelta(days=4)
    coll.update_one(
        {F.id: "tx-000001"}, {"$set": {F.label: 1, F.labeled_at: day5 + timedelta(hours=3), F.scenario: 2}}
    )
    run(mongo_client, s3_client, s3_bucket, mongo_db)
    run(mongo_client, s3_client, s3_bucket, mongo_db, start=day5, end=day5 + timedelta(days=1))
    assert read_dataset(s3_client, s3_bucket, "labels", DAY1).num_rows == 0
    labels = read_dataset(s3_client, s3_bucket, "labels", day5).to_pylist()
    assert labels == [{F.id: "tx-000001", F.label: 1, F.labeled_at: day5 + timedelta(hours=3), F.scenario: 2}]
    txs = read_dataset(s3_client, s3_bucket, "transactions", DAY1)
    assert txs.num_rows == 2 and F.label not in txs.column_names


class _FindRecorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.read_concerns: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.read_concerns.append(dict(event.command.get("readConcern", {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_snapshot_excludes_documents_written_during_extract(
    mongo_uri, s3_client, s3_bucket, mongo_db
) -> None:
    recorder = _FindRecorder()
    mongo_client = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[recorder])
    coll = mongo_db[CFG.mongo.collection]
    labeled = {F.label: 0, F.labeled_at: DAY1 + timedelta(hours=22)}
    coll.insert_many([tx(i, DAY1 + timedelta(seconds=10 * i), **labeled) for i in range(1500)])
    fired: list[str] = []

    def write_concurrently(dataset: str, _rows: int) -> None:
        if dataset in fired:
            return
        fired.append(dataset)
        base = 10_000 if dataset == "transactions" else 20_000
        # Later in time than anything read so far, so a plain cursor would still return them.
        coll.insert_many([tx(base + i, DAY1 + timedelta(hours=20, seconds=i), **labeled) for i in range(300)])

    summary = run(
        mongo_client, s3_client, s3_bucket, mongo_db, batch_size=200, batch_observer=write_concurrently
    )
    assert fired == ["transactions", "labels"]
    assert summary["transactions"]["rows"] == 1500, "inserts during the transactions read must stay out"
    # The labels cursor opened after the first insert, so it sees those 300 but not its own concurrent 300.
    assert summary["labels"]["rows"] == 1800
    assert read_dataset(s3_client, s3_bucket, "transactions", DAY1).num_rows == 1500
    rerun = run(mongo_client, s3_client, s3_bucket, mongo_db, batch_size=200)
    assert rerun["transactions"]["rows"] == 2100 and rerun["labels"]["rows"] == 2100
    # Every read of the extract is a snapshot read (the server may also isolate plain cursors).
    assert recorder.read_concerns and all(rc.get("level") == "snapshot" for rc in recorder.read_concerns)
    mongo_client.close()


def test_only_partitions_with_a_manifest_are_listed(mongo_client, s3_client, s3_bucket, mongo_db) -> None:
    mongo_db[CFG.mongo.collection].insert_one(tx(1, DAY1))
    run(mongo_client, s3_client, s3_bucket, mongo_db, slice_index=0, n_slices=2)
    prefix = raw_partition_prefix(CFG, "transactions", DAY1)
    assert read_partition_manifest(s3_client, s3_bucket, prefix) is None, "1 of 2 slices is not complete"
    assert list_complete_partitions(s3_client, s3_bucket, f"{CFG.s3.raw_prefix}/transactions/") == []
    run(mongo_client, s3_client, s3_bucket, mongo_db, slice_index=1, n_slices=2)
    listed = list_complete_partitions(s3_client, s3_bucket, f"{CFG.s3.raw_prefix}/transactions/")
    assert [m["partition"] for m in listed] == ["dt=2026-11-01"] and listed[0]["rows"] == 1
    assert len(listed[0]["parts"]) == 2 and all(p["etag"] and p["sha256"] for p in listed[0]["parts"])


def test_operator_execute_with_airflow_connections(
    use_case_config_file, airflow_connections, mongo_client, s3_client, s3_bucket, mongo_db
) -> None:
    from fraud_retraining.operators.extract import ExtractIntervalOperator

    config_path = use_case_config_file(database=mongo_db.name, bucket=s3_bucket)
    mongo_db[CFG.mongo.collection].insert_many([tx(i, DAY1 + timedelta(minutes=i)) for i in range(50)])

    op = ExtractIntervalOperator(
        task_id="extract_from_mongo",
        use_case_config=str(config_path),
        data_interval_start=DAY1.isoformat(),
        data_interval_end=DAY2.isoformat(),
        batch_size=20,
    )
    summary = op.execute({})
    assert summary["transactions"]["rows"] == 50
    assert summary["partition"] == "dt=2026-11-01"
    assert read_dataset(s3_client, s3_bucket, "transactions", DAY1).num_rows == 50

    from fraud_retraining.operators.extract import SweepStraysOperator

    stray = tx(999, DAY1, **{F.time: "not a date", "_id": _inserted_at(DAY1 + timedelta(hours=2))})
    mongo_db[CFG.mongo.collection].insert_one(stray)
    sweep = SweepStraysOperator(
        task_id="sweep_stray_documents",
        use_case_config=str(config_path),
        data_interval_start=DAY1.isoformat(),
        data_interval_end=DAY2.isoformat(),
    ).execute({})
    assert sweep["transactions"]["quarantined"] == {f"wrong_type:{F.time}": 1}
    assert json.loads(json.dumps(sweep)) == sweep  # small JSON for XCom
