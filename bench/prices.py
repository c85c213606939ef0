"""The price table of the cost benchmark (bench/cost.py): list prices in USD, no free tier.

AWS: us-east-1 on-demand list prices as they stood in late 2025, written down from the AWS
pricing pages (aws.amazon.com/<service>/pricing) from memory: list prices, to be checked
before they are quoted. Anthropic: standard Messages API list prices per million tokens
(anthropic.com/pricing, check there too); the Message Batches API bills 50 % of them, prompt
cache writes 1.25x (5 minutes) or 2x (1 hour) the input price and cache reads 0.1x.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "late 2025 (list prices from memory: check aws.amazon.com/pricing and anthropic.com/pricing)"
MILLION = 1_000_000
GB = 1024**3  # AWS bills storage and transfer in GiB, which its pages call GB


@dataclass(frozen=True)
class AwsPrices:
    """us-east-1, USD. Each field is the price of one unit named in its name."""

    # Lambda, arm64 (template.yaml: Architectures [arm64]); billed per ms, INIT phase included.
    lambda_gb_second: float = 0.0000133334
    lambda_request: float = 0.20 / MILLION
    # DynamoDB on-demand (PAY_PER_REQUEST): a write request unit is 1 KB written (2 in a
    # transaction); a read request unit is 4 KB read strongly consistent (0.5 eventually, 2 in
    # a transaction). Storage per GB-month, and continuous backups (PITR) per GB-month.
    dynamodb_write_unit: float = 0.625 / MILLION
    dynamodb_read_unit: float = 0.125 / MILLION
    dynamodb_gb_month: float = 0.25
    dynamodb_pitr_gb_month: float = 0.20
    # S3 Standard: PUT, COPY, POST and LIST requests; GET and all other requests (HEAD, ...);
    # DELETE and abort are free. Storage per GB-month.
    s3_put_class_request: float = 0.005 / 1000
    s3_get_class_request: float = 0.0004 / 1000
    s3_gb_month: float = 0.023
    # Data transfer out of AWS to the internet (the create bodies sent to api.anthropic.com);
    # Lambda is not in a VPC, so no NAT gateway. Data in (the results) is free.
    transfer_out_gb: float = 0.09
    # Secrets Manager: API calls, and the secret itself per month.
    secrets_api_call: float = 0.05 / 10_000
    secret_month: float = 0.40
    # EventBridge custom events (PutEvents entries) and EventBridge Scheduler invocations.
    eventbridge_event: float = 1.00 / MILLION
    scheduler_invocation: float = 1.00 / MILLION
    # CloudWatch: Logs ingestion per GB; custom metrics (EMF) per metric-month, billed by the
    # hour a metric is published; standard alarms per alarm metric-month.
    logs_ingested_gb: float = 0.50
    custom_metric_month: float = 0.30
    alarm_metric_month: float = 0.10
    # X-Ray (Tracing: Active): traces recorded.
    xray_trace: float = 5.00 / MILLION


AWS = AwsPrices()


@dataclass(frozen=True)
class ModelPrice:
    """Standard (synchronous Messages API) prices per million tokens."""

    input: float
    output: float


# Model names are matched on the longest prefix here ("claude-haiku-4-5-20251001" is Haiku 4.5).
ANTHROPIC_STANDARD: dict[str, ModelPrice] = {
    "claude-haiku-4-5": ModelPrice(1.00, 5.00),
    "claude-sonnet-4-5": ModelPrice(3.00, 15.00),
    "claude-sonnet-4": ModelPrice(3.00, 15.00),
    "claude-opus-4-5": ModelPrice(5.00, 25.00),
    "claude-opus-4-1": ModelPrice(15.00, 75.00),
}
BATCH_DISCOUNT = 0.5
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0
CACHE_READ = 0.1


def model_price(model: str) -> ModelPrice:
    """The price of a model by the longest known prefix of its name; KeyError if none."""
    matches = [name for name in ANTHROPIC_STANDARD if model == name or model.startswith(name + "-")]
    if not matches:
        raise KeyError(f"no price for model {model!r}: add it to bench/prices.py ANTHROPIC_STANDARD")
    return ANTHROPIC_STANDARD[max(matches, key=len)]
