"""`stage_to_s3`: the run's point-in-time training set, from the S3 raw zone only."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context


class StageTrainingSetOperator(BaseOperator):
    """Writes training/<run>/train|valid|test.parquet + manifest.json; returns a small summary
    whose `training_prefix` the training and gate tasks read."""

    template_fields = ("use_case_config", "as_of", "run_key", "training_window_days")

    def __init__(
        self,
        *,
        use_case_config: str | None = None,
        as_of: str = "{{ data_interval_end }}",
        run_key: str = "{{ run_id }}",
        training_window_days: int | str = 56,
        valid_days: int = 7,
        test_days: int = 7,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.use_case_config = use_case_config
        self.as_of = as_of
        self.run_key = run_key
        self.training_window_days = training_window_days
        self.valid_days = valid_days
        self.test_days = test_days

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowFailException

        from fraud_retraining.config import load_use_case
        from fraud_retraining.staging import StagingError, stage_training_set

        cfg = load_use_case(self.use_case_config or None)
        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        try:
            summary = stage_training_set(
                s3,
                cfg,
                str(self.as_of),
                str(self.run_key),
                training_window_days=int(self.training_window_days),
                valid_days=self.valid_days,
                test_days=self.test_days,
            )
        except StagingError as err:
            # Not enough data is not transient: fail now with the reason instead of retrying.
            raise AirflowFailException(str(err)) from err
        self.log.info("training set staged: %s", summary)
        return summary
