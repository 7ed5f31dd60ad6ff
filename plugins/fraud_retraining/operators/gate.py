"""`model_evaluation_gate`: challenger vs champion on the same holdout; record the decision.

A failed gate is a normal outcome: the task succeeds, returns passed=False with the reasons, and
the endpoint update skips. The decision is stored on the challenger's registry entry.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context

from fraud_retraining.links import ModelVersionLink, RunReportLink


class ModelEvaluationGateOperator(BaseOperator):
    operator_extra_links = (RunReportLink(), ModelVersionLink())
    template_fields = (
        "training_prefix",
        "challenger_version",
        "use_case_config",
        "floors",
        "tolerance",
        "min_train_frauds",
        "alert_budget",
    )

    def __init__(
        self,
        *,
        training_prefix: str,
        challenger_version: str,
        use_case_config: str | None = None,
        floors: dict[str, float] | str | None = None,
        tolerance: float | str = 0.01,
        min_train_frauds: int | str = 50,
        primary_metric: str = "average_precision",
        alert_budget: float | str = 0.01,
        card_precision_k: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.training_prefix = training_prefix
        self.challenger_version = challenger_version
        self.use_case_config = use_case_config
        self.floors = floors
        self.tolerance = tolerance
        self.min_train_frauds = min_train_frauds
        self.primary_metric = primary_metric
        self.alert_budget = alert_budget
        self.card_precision_k = card_precision_k

    def execute(self, context: Context) -> dict[str, Any]:
        import json
        from datetime import UTC, datetime

        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.mongo.hooks.mongo import MongoHook

        from fraud_retraining.config import load_use_case
        from fraud_retraining.evaluation import evaluate_challenger, read_holdout
        from fraud_retraining.gate import GatePolicy
        from fraud_retraining.layout import model_prefix
        from fraud_retraining.model_artifact import load_model_from_s3
        from fraud_retraining.registry import ModelRegistry

        cfg = load_use_case(self.use_case_config or None)
        floors = json.loads(self.floors) if isinstance(self.floors, str) else self.floors
        policy = GatePolicy.from_params(
            {
                "floors": floors,
                "tolerance": self.tolerance,
                "min_train_frauds": self.min_train_frauds,
                "primary_metric": self.primary_metric,
            }
        )
        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        holdout, manifest = read_holdout(s3, cfg.s3.bucket, self.training_prefix)
        with MongoHook(mongo_conn_id=cfg.mongo.conn_id) as hook:
            registry = ModelRegistry.for_use_case(cfg, hook.get_conn())
            champion_version = registry.champion_version()
            challenger = load_model_from_s3(s3, cfg.s3.bucket, model_prefix(cfg, self.challenger_version))
            champion = (
                load_model_from_s3(s3, cfg.s3.bucket, model_prefix(cfg, champion_version))
                if champion_version and champion_version != self.challenger_version
                else None
            )
            decision = evaluate_challenger(
                challenger,
                champion,
                holdout,
                manifest,
                train_frauds=int(manifest["frauds"]["train"]),
                policy=policy,
                k=self.card_precision_k,
                alert_budget=float(self.alert_budget),
            )
            result = {
                **decision.to_dict(),
                "challenger_version": self.challenger_version,
                "champion_version": champion_version if champion is not None else None,
                "holdout_rows": len(holdout),
                "decided_at": datetime.now(UTC).isoformat(),
            }
            registry.record_gate(self.challenger_version, result)
        self.log.info("gate %s: %s", "PASSED" if decision.passed else "FAILED", "; ".join(decision.reasons))
        return result
