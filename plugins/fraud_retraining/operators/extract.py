"""`extract_from_mongo`: one data interval (or one time slice of it) from MongoDB to the S3 raw zone.

Scale-out by dynamic task mapping, one Parquet part per slice:

    ExtractIntervalOperator.partial(task_id="extract_from_mongo", n_slices=4).expand(slice_index=[0, 1, 2, 3])

`SweepStraysOperator` runs once per interval beside the slices: it quarantines documents whose
time is not a date (which no date-range query of a slice can see).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context


class ExtractIntervalOperator(BaseOperator):
    """Stream [data_interval_start, data_interval_end) into raw/transactions and raw/labels.

    Returns the library's small JSON summary (rows, bytes, keys, quarantined by reason, seconds).
    """

    template_fields = (
        "use_case_config",
        "data_interval_start",
        "data_interval_end",
        "slice_index",
        "n_slices",
    )

    def __init__(
        self,
        *,
        use_case_config: str | None = None,
        data_interval_start: str = "{{ data_interval_start }}",
        data_interval_end: str = "{{ data_interval_end }}",
        slice_index: int = 0,
        n_slices: int = 1,
        batch_size: int = 5000,
        max_document_bytes: int = 16 * 1024,
        compression: str = "zstd",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.use_case_config = use_case_config
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.slice_index = slice_index
        self.n_slices = n_slices
        self.batch_size = batch_size
        self.max_document_bytes = max_document_bytes
        self.compression = compression

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.mongo.hooks.mongo import MongoHook

        from fraud_retraining.config import load_use_case
        from fraud_retraining.extract import extract_interval

        cfg = load_use_case(self.use_case_config)
        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        with MongoHook(mongo_conn_id=cfg.mongo.conn_id) as hook:
            summary = extract_interval(
                hook.get_conn(),
                s3,
                cfg,
                str(self.data_interval_start),
                str(self.data_interval_end),
                slice_index=int(self.slice_index),
                n_slices=int(self.n_slices),
                batch_size=int(self.batch_size),
                max_document_bytes=int(self.max_document_bytes),
                compression=self.compression,
            )
        for dataset in ("transactions", "labels"):
            part = summary[dataset]
            if part["quarantined_total"]:
                self.log.warning("%s: quarantined %s", dataset, part["quarantined"])
            if part["empty"]:
                self.log.info("%s: empty interval, wrote an empty partition", dataset)
        self.log.info("extract summary: %s", summary)
        return summary


class SweepStraysOperator(BaseOperator):
    """Quarantine the interval's documents whose time or labeled_at is not a BSON date.

    Returns {"transactions"|"labels": {quarantined, quarantined_total, keys}, "seconds": ...}.
    """

    template_fields = ("use_case_config", "data_interval_start", "data_interval_end")

    def __init__(
        self,
        *,
        use_case_config: str | None = None,
        data_interval_start: str = "{{ data_interval_start }}",
        data_interval_end: str = "{{ data_interval_end }}",
        batch_size: int = 5000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.use_case_config = use_case_config
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.batch_size = batch_size

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.mongo.hooks.mongo import MongoHook

        from fraud_retraining.config import load_use_case
        from fraud_retraining.extract import sweep_strays

        cfg = load_use_case(self.use_case_config)
        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        with MongoHook(mongo_conn_id=cfg.mongo.conn_id) as hook:
            summary = sweep_strays(
                hook.get_conn(),
                s3,
                cfg,
                str(self.data_interval_start),
                str(self.data_interval_end),
                batch_size=int(self.batch_size),
            )
        for dataset in ("transactions", "labels"):
            if summary[dataset]["quarantined_total"]:
                self.log.warning("%s: quarantined strays %s", dataset, summary[dataset]["quarantined"])
        return summary
